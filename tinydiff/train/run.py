"""A run: the model, diffusion, optimizer, EMA and generator that a configuration names.

``new_run`` builds one from a TrainConfig, ``load_run`` from a checkpoint.
The model's parameters live in one ``optim.ParameterVector`` (the speed
measure of optim.py) that the optimizer and the EMA both update.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .. import backend as B
from .. import data as data_module
from .. import nn, optim
from ..autograd import no_grad
from ..backend import xp
from ..checks import check_fits_in_memory
from ..diffusion import GaussianDiffusion
from ..schedules import make_schedule
from .checkpoint import CheckpointError, arrays_under, read_checkpoint
from .config import TrainConfig, attention_resolutions, parse_ints
from .latent import load_stage, new_stage


def _require_resolved(config, who):
    missing = config.unresolved_fields()
    if missing:
        raise ValueError(f"{who}: the configuration still has {', '.join(missing)} = None; "
                         "pass config.resolved() (it fills the defaults for the kind of data)")


def read_betas_file(path, T):
    """The T betas of a custom schedule from a text file (one per line, or any whitespace) or a .npy file."""
    try:
        if str(path).endswith(".npy"):
            betas = np.load(path, allow_pickle=False)
        else:
            betas = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except (OSError, ValueError) as error:
        raise ValueError(f"betas_file {path}: cannot read T numbers from it ({error})") from None
    betas = np.asarray(betas, dtype=np.float64).reshape(-1)
    if betas.shape[0] != T:
        raise ValueError(f"betas_file {path} holds {betas.shape[0]} betas, and T is {T}; pass T = {betas.shape[0]}")
    return [float(b) for b in betas]


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    """The schedule and diffusion a resolved configuration names."""
    _require_resolved(config, "build_diffusion")
    options = {"betas": config.custom_betas} if config.schedule == "custom" else {}
    schedule = make_schedule(config.schedule, config.T, zero_terminal_snr=config.zero_terminal_snr, **options)
    return GaussianDiffusion(schedule, prediction_type=config.prediction, loss_weighting=config.loss_weighting)


def image_layout(data_dim: int, image_shape=None) -> tuple[int, int]:
    """(channels, size) of square images: from image_shape, (H, W) or (C, H, W), else guessed from data_dim.

    The guess, for callers that know only data_dim: one channel if data_dim
    is a square (784 = 28 x 28), else three (3072 = 3 x 32 x 32).
    """
    if image_shape is None:
        channels = 1 if math.isqrt(data_dim) ** 2 == data_dim else 3
        image_shape = (channels, math.isqrt(data_dim // channels), math.isqrt(data_dim // channels))
    shape = tuple(image_shape) if len(image_shape) == 3 else (1,) + tuple(image_shape)
    if shape[1] != shape[2] or math.prod(shape) != data_dim:
        raise ValueError(f"the U-Net needs square images of {data_dim} numbers, got image shape {tuple(image_shape)}")
    return shape[0], shape[1]


def unet_arguments(config: TrainConfig, data_dim: int, num_classes=None, image_shape=None) -> dict:
    """The nn.UNet arguments a resolved configuration with model "unet" names (without dropout and rng)."""
    channels, size = image_layout(data_dim, image_shape)
    ch_mult = parse_ints("channel_mult", config.channel_mult)
    return dict(in_channels=channels, ch=config.channels, ch_mult=ch_mult, num_res_blocks=config.res_blocks,
                attn_resolutions=attention_resolutions(config.attention_resolutions, size, len(ch_mult)),
                image_size=size, num_classes=num_classes if config.conditional else None,
                extra_channels=channels if config.superres else 0)  # the upsampled low-resolution image


def build_model(config: TrainConfig, data_dim: int, num_classes: int | None = None, image_shape=None) -> nn.Module:
    """The denoiser a resolved configuration names, initialised from its seed.

    image_shape, (H, W) or (C, H, W), tells the U-Net the images' layout
    (see image_layout); the MLPs need only data_dim.
    """
    _require_resolved(config, "build_model")
    rng = B.default_rng((config.seed, 1))  # its own stream: the model does not shift the data draws
    if config.model == "unet":
        return nn.UNet(**unet_arguments(config, data_dim, num_classes, image_shape), dropout=config.dropout,
                       group_channels=config.group_channels,
                       num_timesteps=config.T, rng=rng)
    common = dict(data_dim=data_dim, width=config.width, emb_dim=config.emb_dim, activation_name=config.activation,
                  num_classes=num_classes if config.conditional else None,
                  extra_dim=data_dim if config.superres else None,  # the upsampled low-resolution image
                  num_timesteps=config.T, rng=rng)
    if config.model == "mlp":
        return nn.MLPDenoiser(depth=config.depth, **common)
    return nn.ResMLPDenoiser(blocks=config.depth, **common)


def parameter_count(config: TrainConfig, data_dim: int, num_classes: int | None = None, image_shape=None) -> int:
    """How many parameters build_model would make, computed without making them."""
    _require_resolved(config, "parameter_count")
    if config.model == "unet":
        return nn.UNet.parameter_count(**unet_arguments(config, data_dim, num_classes, image_shape))
    common = dict(emb_dim=config.emb_dim, num_classes=num_classes if config.conditional else None,
                  extra_dim=data_dim if config.superres else None)
    if config.model == "mlp":
        return nn.MLPDenoiser.parameter_count(data_dim, config.width, config.depth, **common)
    return nn.ResMLPDenoiser.parameter_count(data_dim, config.width, config.depth, **common)


def check_size(config: TrainConfig, data_dim: int, num_classes: int | None = None, image_shape=None) -> int:
    """Refuse a run that cannot fit in this machine's memory, before anything is allocated; returns bytes.

    A rough count in float32 words: weights, gradients, the ParameterVector's
    gradient, Adam's two moments and the EMA (6 per parameter); a step's
    activations and their gradients (about 8 per hidden unit per example;
    for the U-Net, about 40 per block and pixel of a channel, the 3x3
    convolutions' columns included); the schedule's float64 tables.
    """
    hidden = config.width * (2 * config.depth + 4) + 3 * data_dim + config.emb_dim
    if config.model == "unet":
        arguments = unet_arguments(config, data_dim, num_classes, image_shape)
        down, up = nn.unet_plan(*(arguments[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                                                         "image_size")))
        hidden = 5 * sum(len(plan.blocks) * plan.blocks[-1][1] * plan.resolution**2 for plan in down + up)
    words = 6 * parameter_count(config, data_dim, num_classes, image_shape) + 8 * config.batch_size * hidden
    return check_fits_in_memory(4 * words + 8 * 30 * config.T, "this run",
                                "lower --width, --depth, --batch-size or --T")


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
    latent: object = None  # latent diffusion's first stage (train.latent.LatentStage); None in pixel space

    @property
    def parameters(self) -> optim.ParameterVector:
        """The model's parameters, stored in one vector (what the optimizer updates)."""
        return self.optimizer.params

    @property
    def pixel_shape(self) -> tuple | None:
        """The shape of the images this run draws: image_shape, or its autoencoder's in a latent run."""
        return self.latent.image_shape if self.latent is not None else self.image_shape


def _optimizers(config, model):
    parameters = optim.ParameterVector(model.parameters())
    optimizer = optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    ema = optim.EMA(parameters, decay=config.ema) if config.ema > 0 else None
    return optimizer, ema


def new_run(config: TrainConfig, dataset=None) -> tuple[Run, object]:
    """Build model, diffusion, optimizer, EMA and generator for a fresh run; returns (run, dataset)."""
    config.validate()
    if dataset is None:
        if config.n_data and config.data not in data_module.IMAGE_DATASETS:  # 2D points are drawn in float64
            check_fits_in_memory(3 * 8 * 2 * config.n_data, f"drawing {config.n_data:,} points", "lower --n-data")
        dataset = load_data(config)
    config = config.resolved(dataset.image_shape is not None)
    if config.betas_file and config.custom_betas is None:  # the betas go into the run: a checkpoint needs no file
        config = dataclasses.replace(config, schedule="custom", custom_betas=read_betas_file(config.betas_file, config.T))
    if config.superres and (dataset.image_shape is None or len(dataset.image_shape) != 2):
        raise ValueError(f"superres needs grey-scale image data, and {config.data!r} is "
                         f"{'a 2D set' if dataset.image_shape is None else 'in colour'}")
    if config.conditional and dataset.labels is None:
        raise ValueError(
            f"conditional training needs labels, and data set {config.data!r} has none; "
            f"use one of: eightgaussians, digits, mnist, fashion-mnist"
        )
    stage = new_stage(config, dataset)  # latent diffusion's autoencoder; None in pixel space
    data_dim, image_shape = (config.latent_dim, None) if stage else (dataset.dim, dataset.image_shape)  # the denoiser's
    check_size(config, data_dim, dataset.num_classes, image_shape)
    model = build_model(config, data_dim, dataset.num_classes, image_shape)
    optimizer, ema = _optimizers(config, model)
    run = Run(config, model, build_diffusion(config), optimizer, ema, B.default_rng(config.seed), 0, data_dim,
              dataset.num_classes, image_shape, stage)
    return run, dataset


def load_run(path) -> Run:
    """Rebuild a Run (model, optimizer, EMA, generator, step) from a checkpoint."""
    header, arrays = read_checkpoint(path)
    config = _checked_header(path, header, arrays)
    try:
        model = build_model(config, header["data_dim"], header["num_classes"], header["image_shape"])
        model.load_state_dict(arrays_under(arrays, "model"))
        if hasattr(model, "dropout_calls"):  # the U-Net's dropout masks continue where they stopped
            model.dropout_calls = int(header["step"])
        optimizer, ema = _optimizers(config, model)
        optimizer.load_state_dict({**arrays_under(arrays, "optimizer"), **header["optimizer"]})
        if ema is not None:
            ema.decay = header["ema"]["decay"]
            ema.load_state_dict({"shadow": arrays["ema/shadow"], "updates": header["ema"]["updates"]})
        rng = B.default_rng(config.seed)
        rng.set_state(header["rng_state"])
        image_shape = tuple(header["image_shape"]) if header["image_shape"] else None
        return Run(config, model, build_diffusion(config), optimizer, ema, rng, int(header["step"]),
                   header["data_dim"], header["num_classes"], image_shape, load_stage(path, config, header, arrays))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: checkpoint contents do not fit together ({error})") from None


def _field_error(path, field, expected, value):
    return CheckpointError(f"{path}: header field {field!r} must be {expected}, got {value!r:.80}")


def _is_count(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def config_from_header(fields: dict) -> TrainConfig:
    """The validated TrainConfig a checkpoint header's "config" names, written by this or an earlier version.

    A U-Net saved before group_channels existed was built with the rule
    gcd(32, channels) for its GroupNorm groups (nn.unet.norm_groups with
    group_channels=1): it loads as it was trained.
    """
    if fields.get("model") == "unet" and "group_channels" not in fields:
        fields = dict(fields, group_channels=1)
    return TrainConfig(**fields).validate()


def _checked_header(path, header, arrays) -> TrainConfig:
    """The run's configuration, after checking every header field and the weights' total size.

    Done before any model is built, so a crafted header cannot make tinydiff
    allocate more than the file itself holds.
    """
    if not isinstance(header.get("config"), dict):
        raise _field_error(path, "config", "a JSON object", header.get("config"))
    try:
        config = config_from_header(header["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: header field 'config' is not a valid configuration ({error})") from None
    if config.unresolved_fields():
        raise _field_error(path, "config", "a resolved configuration", config.unresolved_fields())
    for field, minimum in (("step", 0), ("data_dim", 1)):
        if not _is_count(header.get(field), minimum):
            raise _field_error(path, field, f"an integer >= {minimum}", header.get(field))
    classes, shape = header.get("num_classes"), header.get("image_shape")
    if classes is not None and not _is_count(classes, 1):
        raise _field_error(path, "num_classes", "null or an integer >= 1", classes)
    if shape is not None and not (isinstance(shape, list) and len(shape) in (2, 3) and all(_is_count(v, 1) for v in shape)
                                  and math.prod(shape) == header["data_dim"]):
        raise _field_error(path, "image_shape", f"null, [height, width] or [channels, height, width] holding "
                           f"{header['data_dim']} numbers", shape)
    for field in ("rng_state", "optimizer"):
        if not isinstance(header.get(field), dict):
            raise _field_error(path, field, "a JSON object", header.get(field))
    if not (header.get("ema") is None or isinstance(header.get("ema"), dict)):
        raise _field_error(path, "ema", "null or a JSON object", header.get("ema"))
    try:
        expected = parameter_count(config, header["data_dim"], classes, shape)
    except ValueError as error:  # a U-Net that cannot be built for these images
        raise CheckpointError(f"{path}: header field 'config' does not fit the images ({error})") from None
    held = sum(int(a.size) for a in arrays_under(arrays, "model").values())
    if held != expected:
        raise CheckpointError(f"{path}: the header describes a model of {expected:,} parameters, "
                              f"but the file holds {held:,} (a corrupt or mismatched checkpoint)")
    return config


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
            kwargs = {"extra": data_module.low_resolution(x0_batch, run.image_shape, run.config.superres)} \
                if run.config.superres else None
            loss = run.diffusion.training_loss(run.model, x0_batch, rng, t=t, model_kwargs=kwargs)
            centres.append((low + high - 1) / 2)
            losses.append(loss.item())
    return np.array(centres), np.array(losses)
