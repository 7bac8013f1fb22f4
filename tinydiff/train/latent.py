"""Latent diffusion (Rombach et al. 2022): a run in two stages, kept in one checkpoint.

    config = TrainConfig(data="mnist", latent_dim=32)      # train --data mnist --latent-dim 32
    result = train(config, "runs/latent")                   # stage 1, then stage 2

Stage 1 trains an ``nn.Autoencoder`` on the images for ``ae_steps`` steps:
the squared reconstruction error, plus ``ae_kl`` times the KL term when the
latent is variational (Rombach et al.'s KL-reg, Sec. 3.1). Its scale factor

    s = 1 / std(z),  z = mu(x) over the whole training set     (Rombach et al. Sec. 4.3.2)

is then computed once and kept with its weights. Stage 2 is the ordinary
loop of Algorithm 1 on the codes s mu(x) of the training set, encoded once:
the denoiser's data are latent_dim numbers of unit variance. A sample is a
code z drawn by any sampler, decoded to an image x = D(z / s) and clipped to
the images' range [-1, 1]. The decoder's error is a floor: no sample can be
closer to the data than the training images' own reconstructions D(E(x)).

The run's checkpoint.npz holds both stages: the autoencoder's weights, its
Adam moments, its step and scale factor are "autoencoder/..." arrays and an
"autoencoder" entry of the header, beside the denoiser's. One generator
(the run's) draws for both stages, so a run stopped in either stage resumes
exactly. A pixel-space run has ``run.latent is None`` and its checkpoint is
what it always was.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time

import numpy as np

from .. import backend as B
from .. import nn, optim
from ..autograd import no_grad
from ..backend import xp
from ..checks import check_fits_in_memory
from .checkpoint import CheckpointError, arrays_under, save_checkpoint
from .folder import LossLog

AE_LOSSES = "autoencoder-losses.csv"  # stage 1's loss log, beside stage 2's losses.csv
ENCODE_CHUNK = 4096  # rows encoded or decoded at a time (bounds the activations' memory)


@dataclasses.dataclass
class LatentStage:
    """Stage 1 of a latent run: the autoencoder (with its scale factor), its optimizer, its step."""

    autoencoder: nn.Autoencoder
    optimizer: optim.Adam
    image_shape: tuple  # (H, W) of the images it encodes
    step: int = 0

    def header(self) -> dict:
        """The checkpoint header's "autoencoder" entry."""
        return {"step": self.step, "image_shape": list(self.image_shape), "scale_factor": self.autoencoder.scale_factor,
                "optimizer": {"step_count": self.optimizer.step_count, "lr": self.optimizer.lr}}

    def arrays(self) -> dict:
        """The checkpoint's "autoencoder/weights/..." and "autoencoder/optimizer/..." arrays."""
        arrays = {"autoencoder/weights/" + name: value for name, value in self.autoencoder.state_dict().items()}
        for name, value in self.optimizer.state_dict().items():
            if name not in ("step_count", "lr"):
                arrays["autoencoder/optimizer/" + name] = value
        return arrays

    def mean_codes(self, x):
        """mu(x), unscaled, of host or backend images x (N, H*W): a backend array (N, latent_dim)."""
        return _in_chunks(lambda rows: self.autoencoder.encode(rows)[0], x)

    def encode(self, x):
        """The diffusion model's data s mu(x) of images x (N, H*W): a backend array (N, latent_dim)."""
        return _in_chunks(self.autoencoder.to_latent, x)

    def decode(self, z) -> np.ndarray:
        """Images D(z / s) of codes z (N, latent_dim), clipped to the data's range [-1, 1]: host (N, H*W)."""
        return np.clip(B.to_numpy(_in_chunks(self.autoencoder.from_latent, z)), -1, 1)

    def reconstruct(self, x) -> np.ndarray:
        """D(mu(x)) of images x, clipped to [-1, 1] (host): the closest a latent sample can come to x."""
        return self.decode(self.encode(x))


def _in_chunks(function, x):
    """function(rows) of every ENCODE_CHUNK rows of x, without a graph, joined: a backend array."""
    x = B.asarray(x, dtype=B.default_dtype())
    with no_grad():
        return xp.concat([function(x[i:i + ENCODE_CHUNK]).data for i in range(0, x.shape[0], ENCODE_CHUNK)], axis=0)


def build_autoencoder(config, data_dim) -> nn.Autoencoder:
    """The autoencoder a latent configuration names, initialised from its own stream of the seed."""
    return nn.Autoencoder(data_dim, config.latent_dim, config.ae_width, config.ae_depth, variational=config.ae_kl > 0,
                          rng=B.default_rng((config.seed, 3)))  # not the denoiser's stream (seed, 1)


def _optimizer(config, autoencoder):
    return optim.Adam(optim.ParameterVector(autoencoder.parameters()), lr=config.ae_lr)


def new_stage(config, dataset) -> LatentStage | None:
    """A fresh stage 1 for a latent configuration (None when latent_dim is 0: a pixel-space run)."""
    if not config.latent_dim:
        return None
    if dataset.image_shape is None:
        raise ValueError(f"latent_dim needs image data, and {config.data!r} is a 2D set")
    parameters = nn.Autoencoder.parameter_count(dataset.dim, config.latent_dim, config.ae_width, config.ae_depth)
    check_fits_in_memory(4 * (6 * parameters + 8 * config.batch_size * config.ae_width * (2 * config.ae_depth + 2)),
                         "the autoencoder", "lower --ae-width, --ae-depth or --batch-size")
    autoencoder = build_autoencoder(config, dataset.dim)
    return LatentStage(autoencoder, _optimizer(config, autoencoder), tuple(dataset.image_shape))


def _entry_error(path, field, expected, value):
    return CheckpointError(f"{path}: header field 'autoencoder' {field} must be {expected}, got {value!r:.80}")


def load_stage(path, config, header, arrays) -> LatentStage | None:
    """The stage 1 of a checkpoint, its header entry checked and its size against the file's before it is built."""
    entry = header.get("autoencoder")
    if not config.latent_dim:
        if entry is not None:
            raise CheckpointError(f"{path}: a pixel-space run (latent_dim 0) with an autoencoder in it")
        return None
    if not isinstance(entry, dict):
        raise CheckpointError(f"{path}: a latent run (latent_dim {config.latent_dim}) needs the header field "
                              "'autoencoder' (the first stage), and this one has none")
    shape, scale, step = entry.get("image_shape"), entry.get("scale_factor"), entry.get("step")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v >= 1 for v in shape)):
        raise _entry_error(path, "image_shape", "[height, width]", shape)
    if not (scale is None or (isinstance(scale, float) and math.isfinite(scale) and scale > 0)):
        raise _entry_error(path, "scale_factor", "null or a positive number", scale)
    if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
        raise _entry_error(path, "step", "an integer >= 0", step)
    if not isinstance(entry.get("optimizer"), dict):
        raise _entry_error(path, "optimizer", "a JSON object", entry.get("optimizer"))
    if header.get("data_dim") != config.latent_dim or header.get("image_shape") is not None:
        raise CheckpointError(f"{path}: a latent run's denoiser works on latent_dim = {config.latent_dim} numbers "
                              f"(image_shape null), and the header says data_dim {header.get('data_dim')!r}, "
                              f"image_shape {header.get('image_shape')!r}")
    data_dim = shape[0] * shape[1]
    weights = arrays_under(arrays, "autoencoder/weights")
    expected = nn.Autoencoder.parameter_count(data_dim, config.latent_dim, config.ae_width, config.ae_depth,
                                              config.ae_kl > 0)
    held = sum(int(a.size) for a in weights.values())
    if held != expected:
        raise CheckpointError(f"{path}: the header describes an autoencoder of {expected:,} parameters, "
                              f"but the file holds {held:,} (a corrupt or mismatched checkpoint)")
    autoencoder = build_autoencoder(config, data_dim)
    autoencoder.load_state_dict(weights)
    autoencoder.scale_factor = scale
    optimizer = _optimizer(config, autoencoder)
    optimizer.load_state_dict({**arrays_under(arrays, "autoencoder/optimizer"), **entry["optimizer"]})
    return LatentStage(autoencoder, optimizer, tuple(shape), step)


# ---------------------------------------------------------------- stage 1: training the autoencoder


def autoencoder_learning_rate(config, step: int) -> float:
    """Stage 1's rate: warmup (at most a tenth of ae_steps), then the cosine decay of stage 2, over ae_steps."""
    warmup = min(config.warmup, config.ae_steps // 10)
    return optim.warmup_cosine(step, config.ae_lr, warmup, config.ae_steps if config.cosine else None,
                               config.min_lr_ratio * config.ae_lr)


def autoencoder_step(run, x):
    """One step of stage 1 on the images x (B, D): mean (x - D(z))^2 + ae_kl KL; returns the loss (0-d array).

    A variational autoencoder draws eps ~ N(0, I) for z = mu + sigma eps from
    run.rng, the generator stage 2 goes on with.
    """
    stage, config = run.latent, run.config
    stage.optimizer.lr = autoencoder_learning_rate(config, stage.step)
    noise = run.rng.normal((x.shape[0], config.latent_dim)) if stage.autoencoder.variational else None
    loss, _, _ = stage.autoencoder.loss(x, noise, config.ae_kl)
    stage.optimizer.zero_grad()
    loss.backward()
    if config.grad_clip:
        optim.clip_grad_norm(stage.optimizer.params, config.grad_clip)
    stage.optimizer.step()
    stage.step += 1
    return loss.data


def _training_error(message):
    from .loop import TrainingError  # (loop.py imports this module: the error is looked up when raised)

    return TrainingError(message)


def save_stage(run, checkpoint):
    """Write the run's checkpoint (both stages) if the autoencoder's weights are finite; TrainingError if not."""
    if not bool(xp.all(xp.isfinite(run.latent.optimizer.params.data))):
        raise _training_error(f"the autoencoder's weights at its step {run.latent.step} are not finite, so they were "
                              "not saved; lower --ae-lr and resume")
    try:
        save_checkpoint(run, checkpoint)
    except OSError as error:  # the old checkpoint is intact
        raise _training_error(f"could not write {checkpoint} at the autoencoder's step {run.latent.step} "
                              f"({error.strerror or error})") from None


class _StageLog:
    """Stage 1's loss log (autoencoder-losses.csv), its NaN stop and its checkpoints."""

    def __init__(self, run, out_dir, progress):
        self.run, self.rows = run, []
        self.checkpoint = os.path.join(out_dir, "checkpoint.npz")
        self.file = LossLog(os.path.join(out_dir, AE_LOSSES), run.latent.step)
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.config.ae_steps, initial=run.latent.step, desc="autoencoder", unit="step",
                            dynamic_ncols=True)

    def record(self, loss, lr):
        self.rows.append((self.run.latent.step, loss, lr))
        if len(self.rows) >= self.run.config.log_every:
            self.flush()
        if self.bar is not None:
            self.bar.update(1)

    def flush(self):
        if not self.rows:
            return
        values = B.to_numpy(xp.stack([loss for _, loss, _ in self.rows]))
        rows = [(step, float(value), lr) for (step, _, lr), value in zip(self.rows, values)]
        self.rows.clear()
        bad = [step for step, value, _ in rows if not math.isfinite(value)]
        if bad:
            raise _training_error(f"the autoencoder's loss became non-finite at its step {bad[0]} (stage 1); the last "
                                  f"good checkpoint is {self.checkpoint}. Lower --ae-lr or keep gradient clipping on")
        self.file.append(rows)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{rows[-1][1]:.4f}")

    def save(self):
        """Flush, then write the run's checkpoint (save_stage)."""
        self.flush()
        save_stage(self.run, self.checkpoint)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train_autoencoder(run, dataset, out_dir, signals=None, deadline=None, progress=False) -> bool:
    """Stage 1: autoencoder_step on batches drawn with replacement, until ae_steps; True when done.

    Checkpoints every checkpoint_every steps and when it stops: at ae_steps,
    at ``deadline`` (a time.perf_counter() value), or on a signal
    (``signals.received``, the training loop's Ctrl-C and SIGTERM flag).
    """
    stage, config = run.latent, run.config
    x = B.asarray(dataset.x, dtype=B.default_dtype())
    book = _StageLog(run, out_dir, progress)
    try:
        while stage.step < config.ae_steps and (signals is None or signals.received is None):
            if deadline is not None and time.perf_counter() > deadline:
                break
            index = run.rng.integers(0, x.shape[0], (config.batch_size,))
            book.record(autoencoder_step(run, xp.take(x, index, axis=0)), stage.optimizer.lr)
            if stage.step % config.checkpoint_every == 0:
                book.save()
        book.save()
    finally:
        book.close()
    return stage.step >= config.ae_steps


def fit_scale_factor(stage, x) -> float:
    """s = 1 / std(mu(x)) over the images x, sets it on the autoencoder and returns it (Rombach et al. Sec. 4.3.2).

    sigma^2 = 1/(N d) sum (z - mean z)^2 over every number of every code, so
    that the codes s z have unit variance, the scale the noise schedule assumes.
    """
    z = B.to_numpy(stage.mean_codes(x)).astype(np.float64)  # (N, latent_dim)
    stage.autoencoder.scale_factor = float(1.0 / z.std())
    return stage.autoencoder.scale_factor


def reconstruction_error(stage, x) -> float:
    """Mean squared error per pixel of D(mu(x)) against images x (host): the autoencoder's floor."""
    x = np.asarray(B.to_numpy(x), dtype=np.float64)
    return float(np.mean((stage.reconstruct(x) - x) ** 2))


def first_stage(run, dataset, out_dir, signals=None, max_seconds=None, progress=False, log=print, communicator=None):
    """Stage 1 of a latent run (or what is left of it), then stage 2's data: (codes, seconds left).

    The codes are the data set with x = s mu(x) (labels kept; image_shape
    None: vectors). They are None when stage 1 stopped early, at a signal
    or after max_seconds (its checkpoint is saved; a resume goes on from
    it). The seconds left are what stage 1 left of max_seconds (None: no limit).
    """
    if communicator is not None:
        raise ValueError("latent diffusion (latent_dim > 0) trains in one process; run it without MPI")
    stage, deadline = run.latent, None if max_seconds is None else time.perf_counter() + max_seconds
    if stage.step < run.config.ae_steps:
        log(f"stage 1: the autoencoder ({stage.autoencoder.num_parameters():,} parameters, latent_dim "
            f"{run.config.latent_dim}), from step {stage.step} of {run.config.ae_steps}")
        if not train_autoencoder(run, dataset, out_dir, signals, deadline, progress):
            reason = "time limit reached" if signals is None or signals.received is None \
                else f"stopped by {signal.Signals(signals.received).name}"
            log(f"{reason} in stage 1 at the autoencoder's step {stage.step}: saved "
                f"{os.path.join(out_dir, 'checkpoint.npz')}; continue with --resume")
            return None, 0.0
    if stage.autoencoder.scale_factor is None:
        scale = fit_scale_factor(stage, dataset.x)
        error = reconstruction_error(stage, dataset.x[:10_000])
        log(f"stage 1 done: reconstruction error {error:.4f} (MSE per pixel), scale factor {scale:.4f}")
        save_stage(run, os.path.join(out_dir, "checkpoint.npz"))  # the scale factor goes in with the weights
    codes = dataclasses.replace(dataset, x=B.to_numpy(stage.encode(dataset.x)), image_shape=None, levels=None,
                                name=f"{dataset.name} codes")
    return codes, None if deadline is None else max(deadline - time.perf_counter(), 1e-9)


def autoencoder_steps_for_budget(config, seconds, dataset, probe_steps=40) -> int:
    """How many steps of stage 1 fit in ``seconds`` on this machine, timed on ``probe_steps`` steps (the
    second half: the first pay for warm-up). The probe's generator is its own: nothing of a run moves."""
    from .run import Run  # (run.py imports this module)

    config = config.resolved(True)
    stage = new_stage(config, dataset)
    probe = Run(config, None, None, None, None, B.default_rng((config.seed, 4)), latent=stage)
    x = B.asarray(dataset.x[:4096], dtype=B.default_dtype())
    half = max(1, probe_steps // 2)
    for k in range(2 * half):
        if k == half:
            start = time.perf_counter()
        autoencoder_step(probe, xp.take(x, probe.rng.integers(0, x.shape[0], (config.batch_size,)), axis=0))
    return max(1, int(seconds / ((time.perf_counter() - start) / half)))
