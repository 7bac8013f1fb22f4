"""The training loop of Algorithm 1, checkpoints that never lose work, and resume.

    config = TrainConfig(data="moons", steps=5000)
    result = train(config, out_dir="runs/moons")

Each step draws a batch x_0, timesteps t and noise eps from one seeded
generator, takes the loss of ``GaussianDiffusion.training_loss`` and an Adam
step (optional warmup and cosine decay, gradient clipping, EMA).

Nothing is lost:
- a checkpoint (model, EMA, optimizer, step, generator state, the whole
  configuration) is written every ``checkpoint_every`` steps and at the end,
  as an .npz with a JSON header, to a temporary file that is then renamed
  over the old one, so a crash never leaves half a file;
- ``resume=True`` continues exactly: N steps straight and N/2 + N/2 with a
  stop between give the same parameters, bit for bit on NumPy;
- a NaN or infinite loss stops with a message naming the step and the last
  good checkpoint; Ctrl-C saves a checkpoint and returns cleanly.

Checkpoints are loaded with allow_pickle=False: a file from elsewhere can
hold only arrays and JSON.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import tempfile
import time

import numpy as np

from . import backend as B
from . import data as data_module
from . import nn, optim
from .autograd import no_grad
from .backend import xp
from .diffusion import GaussianDiffusion
from .schedules import make_schedule

CHECKPOINT_FORMAT = "tinydiff-checkpoint"
CHECKPOINT_VERSION = 1
MODELS = ("mlp", "resmlp")


class TrainingError(RuntimeError):
    """Training stopped: a NaN loss, or a resume that does not fit."""


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, or not a tinydiff checkpoint."""


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint as JSON.

    A value of None for model, width, depth, batch_size, lr, activation,
    schedule or prediction means "the default for this kind of data" (see
    ``resolved``): the 2-D MLP, the linear schedule and eps-prediction of
    the paper for point sets; the residual MLP, the cosine schedule and
    x0-prediction for images (x0-prediction is what makes an MLP draw clean
    digits in minutes: see README.md).
    """

    data: str = "moons"
    n_data: int | None = None  # points drawn for a 2-D set; a subset size for images
    data_dir: str | None = None
    conditional: bool = False  # train with labels (classifier-free guidance)
    superres: int = 0  # > 0: condition on the image downsampled by this factor (super-resolution)
    label_dropout: float = 0.1  # p of replacing a label by the null class
    steps: int | None = None  # 20,000 for point sets (under a minute), 15,000 for images
    batch_size: int | None = None
    lr: float | None = None
    warmup: int = 100
    cosine: bool = True  # decay the rate to min_lr_ratio * lr along a cosine
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    weight_decay: float = 0.0
    ema: float = 0.999  # 0 disables the EMA
    T: int = 1000
    schedule: str | None = None  # linear for point sets, cosine for images
    prediction: str | None = None  # eps (the paper's) for point sets, x0 for images
    loss_weighting: str = "simple"
    model: str | None = None
    width: int | None = None
    depth: int | None = None  # hidden layers (mlp) or residual blocks (resmlp)
    emb_dim: int = 128
    activation: str | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50

    def resolved(self, image_data: bool) -> "TrainConfig":
        """A copy with every None replaced by the default for this kind of data."""
        image_defaults = dict(model="resmlp", width=1024, depth=2, batch_size=128, lr=1e-3, activation="silu",
                              schedule="cosine", prediction="x0", steps=15_000)
        point_defaults = dict(model="mlp", width=128, depth=3, batch_size=256, lr=1e-3, activation="gelu",
                              schedule="linear", prediction="eps", steps=20_000)
        defaults = image_defaults if image_data else point_defaults
        values = dataclasses.asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        return TrainConfig(**values)

    def validate(self):
        """Raise ValueError naming the first bad field."""
        if self.data not in data_module.DATASETS:
            raise ValueError(f"data must be one of {', '.join(data_module.DATASETS)}, got {self.data!r}")
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        positive_ints = ["T", "emb_dim", "checkpoint_every", "log_every"]
        positive_ints += [k for k in ("steps", "batch_size", "width", "depth", "n_data") if getattr(self, k) is not None]
        for key in positive_ints:
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        for key in ("warmup", "seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {value!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must be in [0, 1) (0 disables it), got {self.ema!r}")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables it), got {self.grad_clip!r}")
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even, got {self.emb_dim}")
        if not isinstance(self.superres, int) or self.superres < 0 or self.superres == 1:
            raise ValueError(f"superres must be 0 (off) or a downsampling factor >= 2, got {self.superres!r}")
        return self


# ---------------------------------------------------------------------------
# Building a run from its configuration
# ---------------------------------------------------------------------------


def _resolve(config: TrainConfig) -> TrainConfig:
    """Fill the data-dependent defaults from the name of the data set."""
    return config.resolved(config.data in data_module.IMAGE_DATASETS)


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    """The schedule and diffusion a configuration names."""
    config = _resolve(config)
    schedule = make_schedule(config.schedule, config.T)
    return GaussianDiffusion(schedule, prediction_type=config.prediction, loss_weighting=config.loss_weighting)


def build_model(config: TrainConfig, data_dim: int, num_classes: int | None = None) -> nn.Module:
    """The denoiser a configuration names, initialised from its seed."""
    config = _resolve(config)
    rng = B.default_rng((config.seed, 1))  # its own stream: the model does not shift the data draws
    classes = num_classes if config.conditional else None
    extra = data_dim if config.superres else None  # the upsampled low-resolution image
    if config.model == "mlp":
        return nn.MLPDenoiser(data_dim=data_dim, width=config.width, depth=config.depth, emb_dim=config.emb_dim,
                              activation_name=config.activation, num_classes=classes, extra_dim=extra,
                              num_timesteps=config.T, rng=rng)
    return nn.ResMLPDenoiser(data_dim=data_dim, width=config.width, blocks=config.depth, emb_dim=config.emb_dim,
                             activation_name=config.activation, num_classes=classes, extra_dim=extra,
                             num_timesteps=config.T, rng=rng)


def low_resolution(x, image_shape, factor):
    """Flattened images x (N, H*W) average-pooled by ``factor``, then blown back up to (N, H*W).

    The conditioning input of super-resolution: the same number of pixels as
    x, each the mean of its factor x factor block (nearest-neighbour upsampling
    of the low-resolution image).
    """
    h, w = image_shape
    if h % factor or w % factor:
        raise ValueError(f"superres factor {factor} must divide the image size {h}x{w}")
    n = x.shape[0]
    blocks = xp.reshape(x, (n, h // factor, factor, w // factor, factor))
    means = xp.mean(blocks, axis=(2, 4), keepdims=True)  # (N, h/f, 1, w/f, 1)
    return xp.reshape(xp.broadcast_to(means, tuple(blocks.shape)), (n, h * w))


def load_data(config: TrainConfig):
    """The data set of a configuration (host arrays)."""
    return data_module.load(config.data, n=config.n_data, seed=config.seed, data_dir=config.data_dir)


@dataclasses.dataclass
class Run:
    """A model with everything needed to train, sample or evaluate it."""

    config: TrainConfig
    model: nn.Module
    diffusion: GaussianDiffusion
    optimizer: optim.Optimizer
    ema: optim.EMA | None
    rng: B.Generator
    step: int = 0
    data_dim: int = 2
    num_classes: int | None = None
    image_shape: tuple | None = None


def new_run(config: TrainConfig, dataset=None) -> tuple[Run, object]:
    """Build model, diffusion, optimizer, EMA and generator for a fresh run."""
    config.validate()
    if dataset is None:
        dataset = load_data(config)
    config = config.resolved(dataset.image_shape is not None)
    if config.superres and dataset.image_shape is None:
        raise ValueError(f"superres needs image data, and {config.data!r} is a 2D set")
    if config.conditional and dataset.labels is None:
        raise ValueError(
            f"conditional training needs labels, and data set {config.data!r} has none; "
            f"use one of: eightgaussians, digits, mnist, fashion-mnist"
        )
    model = build_model(config, dataset.dim, dataset.num_classes)
    diffusion = build_diffusion(config)
    optimizer = optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = optim.EMA(model.parameters(), decay=config.ema, source=optimizer.flat) if config.ema > 0 else None
    run = Run(config, model, diffusion, optimizer, ema, B.default_rng(config.seed), 0, dataset.dim,
              dataset.num_classes, dataset.image_shape)
    return run, dataset


# ---------------------------------------------------------------------------
# Checkpoints: .npz with a JSON header, written atomically, no pickle
# ---------------------------------------------------------------------------


def _json_array(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def write_npz_atomic(path, header: dict, arrays: dict) -> str:
    """Write arrays and a JSON header to ``path`` as .npz, atomically.

    The file is written to a temporary name in the same folder, flushed to
    disk, then renamed over ``path``: a crash leaves the old file or the new
    one, never half of one. Any model's weights can be saved this way.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {"header": _json_array(header)}
    payload.update({name: B.to_numpy(value) for name, value in arrays.items()})
    handle, temporary = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return path


def read_npz(path, expected_format=CHECKPOINT_FORMAT, expected_version=CHECKPOINT_VERSION) -> tuple[dict, dict]:
    """(header, arrays) of a file written by write_npz_atomic; CheckpointError for anything else.

    Loaded with allow_pickle=False: a file from elsewhere can hold only
    arrays and JSON. A folder is taken to mean the checkpoint.npz inside it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        candidate = os.path.join(path, "checkpoint.npz")
        if not os.path.exists(candidate):
            raise CheckpointError(f"{path} is a folder without checkpoint.npz in it")
        path = candidate
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise CheckpointError(f"{path} is not an .npz archive (corrupt or truncated, or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise CheckpointError(f"{path} holds pickled objects; refusing to load it (only arrays are allowed)") from None
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({error})") from None
    except Exception as error:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (corrupt or truncated: {error})") from None
    if "header" not in arrays or arrays["header"].dtype != np.uint8:
        raise CheckpointError(f"{path} is an .npz file but not a tinydiff checkpoint (no JSON header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the checkpoint header is not valid JSON ({error})") from None
    if header.get("format") != expected_format:
        raise CheckpointError(f"{path} is not a {expected_format} file (format {header.get('format')!r})")
    if header.get("version") != expected_version:
        raise CheckpointError(f"{path} has version {header.get('version')}, this tinydiff reads {expected_version}")
    return header, arrays


def save_checkpoint(run: Run, path) -> str:
    """Write a run (model, optimizer, EMA, step, generator, config) to ``path`` atomically."""
    header = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": dataclasses.asdict(run.config),
        "step": run.step,
        "rng_state": run.rng.state(),
        "optimizer": {"step_count": run.optimizer.step_count, "lr": run.optimizer.lr},
        "ema": None if run.ema is None else {"updates": run.ema.updates, "decay": run.ema.decay},
        "data_dim": run.data_dim,
        "num_classes": run.num_classes,
        "image_shape": list(run.image_shape) if run.image_shape else None,
        "backend": B.get_backend(),
    }
    arrays = {"model/" + name: value for name, value in run.model.state_dict().items()}
    for name, value in run.optimizer.state_dict().items():
        if name not in ("step_count", "lr"):
            arrays["optimizer/" + name] = value
    if run.ema is not None:
        arrays["ema/shadow"] = run.ema.shadow
    return write_npz_atomic(path, header, arrays)


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, arrays) of a training checkpoint; CheckpointError for anything else."""
    return read_npz(path)


def load_run(path) -> Run:
    """Rebuild a Run (model, optimizer, EMA, generator, step) from a checkpoint."""
    header, arrays = read_checkpoint(path)
    try:
        config = TrainConfig(**header["config"])
        model = build_model(config, header["data_dim"], header["num_classes"])
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        diffusion = build_diffusion(config)
        optimizer = optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        opt_state = {k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")}
        opt_state.update(header["optimizer"])
        optimizer.load_state_dict(opt_state)
        ema = None
        if header["ema"] is not None:
            ema = optim.EMA(model.parameters(), decay=header["ema"]["decay"], source=optimizer.flat)
            ema.load_state_dict({"shadow": arrays["ema/shadow"], "updates": header["ema"]["updates"]})
        rng = B.default_rng(config.seed)
        rng.set_state(header["rng_state"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: checkpoint contents do not fit together ({error})") from None
    image_shape = tuple(header["image_shape"]) if header["image_shape"] else None
    return Run(config, model, diffusion, optimizer, ema, rng, int(header["step"]), header["data_dim"],
               header["num_classes"], image_shape)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    run: Run
    checkpoint: str
    losses: list  # (step, loss) of this call
    stopped_early: bool = False
    seconds: float = 0.0


class _LossLog:
    """losses.csv in the run folder: step, loss, lr. On resume, rows past the checkpoint are dropped."""

    def __init__(self, path, resume_step):
        self.path = path
        rows = []
        if resume_step > 0 and os.path.exists(path):
            with open(path, newline="") as file:
                rows = [r for r in csv.reader(file) if r and r[0] != "step" and int(r[0]) <= resume_step]
        with open(path, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["step", "loss", "lr"])
            writer.writerows(rows)

    def append(self, rows):
        with open(self.path, "a", newline="") as file:
            csv.writer(file).writerows(rows)


def read_losses(run_dir):
    """(steps, losses) arrays from a run folder's losses.csv."""
    path = os.path.join(run_dir, "losses.csv")
    steps, losses = [], []
    with open(path, newline="") as file:
        for row in csv.reader(file):
            if row and row[0] != "step":
                steps.append(int(row[0]))
                losses.append(float(row[1]))
    return np.array(steps), np.array(losses)


def train(config: TrainConfig, out_dir, *, resume=False, progress=True, dataset=None, stop_at=None,
          max_seconds=None, log=print) -> TrainResult:
    """Train by Algorithm 1 into ``out_dir`` (checkpoint.npz, losses.csv, config.json).

    resume=True continues from out_dir/checkpoint.npz with its saved
    configuration (``config`` then only supplies data_dir). stop_at ends this
    call at that step (a checkpoint is written) without changing the
    configured total, as a Ctrl-C would; max_seconds does the same after that
    much wall-clock time (the learning-rate schedule still follows config.steps).
    """
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = os.path.join(out_dir, "checkpoint.npz")
    if resume:
        run = load_run(checkpoint)
        if config.data_dir and not run.config.data_dir:
            run.config.data_dir = config.data_dir
        if config.steps is not None and config.steps != run.config.steps:
            if config.steps < run.step:
                raise ValueError(f"steps={config.steps} is behind the checkpoint, which is at step {run.step}")
            log(f"extending the run from {run.config.steps} to {config.steps} steps (the cosine decay stretches)")
            run.config.steps = config.steps
        dataset = dataset if dataset is not None else load_data(run.config)
        log(f"resuming from {checkpoint} at step {run.step} of {run.config.steps}")
    else:
        run, dataset = new_run(config, dataset)
    config = run.config
    with open(os.path.join(out_dir, "config.json"), "w") as file:
        json.dump(dataclasses.asdict(config), file, indent=2)

    B.keep_freed_memory()  # no page faults re-reading freed memory every step
    data_x = B.asarray(dataset.x, dtype=B.default_dtype())  # on the device once, float32: batches never cross
    labels = B.asarray(dataset.labels) if config.conditional else None
    n_data = dataset.x.shape[0]
    loss_log = _LossLog(os.path.join(out_dir, "losses.csv"), run.step)
    end = config.steps if stop_at is None else min(config.steps, stop_at)
    # float(loss) on every step is free on the CPU; on a GPU it is a sync, so check at each flush.
    check_every = config.log_every if B.get_backend() == "cupy" else 1

    interrupted = {"flag": False}
    previous_handler = None
    try:
        previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.update(flag=True))
    except ValueError:  # not the main thread: Ctrl-C handling stays with the caller
        previous_handler = None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True)
    pending, all_losses = [], []
    start_time = time.perf_counter()
    stopped_early = False
    last_saved = run.step if resume else None

    def flush():
        if not pending:
            return
        values = B.to_numpy(xp.stack([loss for _, loss, _ in pending]))
        rows = [(step, float(v), lr) for (step, _, lr), v in zip(pending, values)]
        pending.clear()
        for step, value, _ in rows:
            if not math.isfinite(value):
                where = f"the last good checkpoint is {checkpoint} (step {last_saved})" if last_saved is not None \
                    else "no checkpoint was written yet"
                raise TrainingError(
                    f"loss became {value} at step {step}; {where}. Lower --lr (now {config.lr}), "
                    f"keep --grad-clip on, or check the data for NaNs"
                )
        loss_log.append(rows)
        all_losses.extend((s, v) for s, v, _ in rows)
        if bar is not None:
            bar.set_postfix(loss=f"{rows[-1][1]:.4f}", lr=f"{rows[-1][2]:.2e}")

    try:
        while run.step < end:
            if interrupted["flag"] or (max_seconds and time.perf_counter() - start_time > max_seconds):
                stopped_early = True
                break
            step = run.step
            lr = config.lr
            if config.cosine or config.warmup:
                lr = optim.warmup_cosine(step, config.lr, config.warmup,
                                         config.steps if config.cosine else None, config.min_lr_ratio * config.lr)
            run.optimizer.lr = lr
            index = run.rng.integers(0, n_data, (config.batch_size,))
            x0 = xp.take(data_x, index, axis=0)  # (B, D)
            model_kwargs = {}
            if labels is not None:
                y = nn.drop_labels(xp.take(labels, index, axis=0), run.num_classes, config.label_dropout, run.rng)
                model_kwargs["y"] = y
            if config.superres:
                model_kwargs["extra"] = low_resolution(x0, run.image_shape, config.superres)
            loss = run.diffusion.training_loss(run.model, x0, run.rng, model_kwargs=model_kwargs)
            run.optimizer.zero_grad()
            loss.backward()
            if config.grad_clip:
                run.optimizer.clip_grad_norm(config.grad_clip)
            run.optimizer.step()
            if run.ema is not None:
                run.ema.update()
            run.step += 1
            pending.append((run.step, loss.data, lr))
            if check_every == 1 and not math.isfinite(float(loss.data)):
                flush()  # raises TrainingError naming this step
            if len(pending) >= config.log_every:
                flush()
            if bar is not None:
                bar.update(1)
            if run.step % config.checkpoint_every == 0:
                flush()
                save_checkpoint(run, checkpoint)
                last_saved = run.step
        flush()
        save_checkpoint(run, checkpoint)
    finally:
        if bar is not None:
            bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
    seconds = time.perf_counter() - start_time
    if stopped_early:
        reason = "interrupted" if interrupted["flag"] else "time limit reached"
        log(f"{reason} at step {run.step}: saved {checkpoint}; continue with --resume")
    return TrainResult(run, checkpoint, all_losses, stopped_early, seconds)


def steps_for_budget(config: TrainConfig, seconds: float, dataset=None, probe_steps=40, margin=0.97) -> int:
    """How many steps of ``config`` fit in ``seconds`` on this machine, from a short timed run.

    So a time-budgeted run can plan its cosine decay to end when the budget
    does. The probe trains ``probe_steps`` steps in a scratch folder (its
    first steps include warm-up, so the estimate errs low); ``seconds``
    counts the probe's own time too.
    """
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        probe = train(dataclasses.replace(config, steps=probe_steps, checkpoint_every=10 * probe_steps), scratch,
                      progress=False, dataset=dataset, log=lambda *_: None)
    rate = probe_steps / max(probe.seconds, 1e-9)
    left = seconds - (time.perf_counter() - start)
    return max(probe_steps, int(margin * rate * left))


# ---------------------------------------------------------------------------
# Using a trained run
# ---------------------------------------------------------------------------


def use_ema_weights(run: Run) -> Run:
    """Copy the EMA average into the model (for sampling); a no-op without EMA.

    This overwrites the trained weights: save or resume from the checkpoint
    on disk, not from a run after this call.
    """
    if run.ema is not None:
        run.ema.copy_to()
    return run


def loss_by_timestep(run: Run, x0, buckets=10, per_bucket=512, seed=0):
    """Mean training loss in equal timestep buckets: where the model still errs.

    Returns (bucket_centres, losses) as host arrays. x0 is a host or backend
    array of data; each bucket uses ``per_bucket`` examples drawn from it.
    """
    rng = B.default_rng(seed)
    data_x = B.asarray(x0)
    edges = np.linspace(0, run.diffusion.T, buckets + 1).astype(int)
    centres, losses = [], []
    with no_grad():
        for low, high in zip(edges[:-1], edges[1:]):
            index = rng.integers(0, data_x.shape[0], (per_bucket,))
            t = rng.integers(int(low), int(high), (per_bucket,))
            x0_batch = xp.take(data_x, index, axis=0)
            kwargs = {"extra": low_resolution(x0_batch, run.image_shape, run.config.superres)} \
                if run.config.superres else None
            loss = run.diffusion.training_loss(run.model, x0_batch, rng, t=t, model_kwargs=kwargs)
            centres.append((low + high - 1) / 2)
            losses.append(loss.item())
    return np.array(centres), np.array(losses)
