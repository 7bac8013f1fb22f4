"""A run: the model, diffusion, optimizer, EMA and generator that a configuration names.

``new_run`` builds one from a TrainConfig, ``load_run`` from a checkpoint.
The model's parameters live in one ``optim.ParameterVector`` (the speed
measure of optim.py) that the optimizer and the EMA both update.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import backend as B
from .. import data as data_module
from .. import nn, optim
from ..autograd import no_grad
from ..backend import xp
from ..diffusion import GaussianDiffusion
from ..schedules import make_schedule
from .checkpoint import CheckpointError, arrays_under, read_checkpoint
from .config import TrainConfig


def _require_resolved(config, who):
    missing = config.unresolved_fields()
    if missing:
        raise ValueError(f"{who}: the configuration still has {', '.join(missing)} = None; "
                         "pass config.resolved() (it fills the defaults for the kind of data)")


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    """The schedule and diffusion a resolved configuration names."""
    _require_resolved(config, "build_diffusion")
    schedule = make_schedule(config.schedule, config.T)
    return GaussianDiffusion(schedule, prediction_type=config.prediction, loss_weighting=config.loss_weighting)


def build_model(config: TrainConfig, data_dim: int, num_classes: int | None = None) -> nn.Module:
    """The denoiser a resolved configuration names, initialised from its seed."""
    _require_resolved(config, "build_model")
    rng = B.default_rng((config.seed, 1))  # its own stream: the model does not shift the data draws
    common = dict(data_dim=data_dim, width=config.width, emb_dim=config.emb_dim, activation_name=config.activation,
                  num_classes=num_classes if config.conditional else None,
                  extra_dim=data_dim if config.superres else None,  # the upsampled low-resolution image
                  num_timesteps=config.T, rng=rng)
    if config.model == "mlp":
        return nn.MLPDenoiser(depth=config.depth, **common)
    return nn.ResMLPDenoiser(blocks=config.depth, **common)


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

    @property
    def parameters(self) -> optim.ParameterVector:
        """The model's parameters, stored in one vector (what the optimizer updates)."""
        return self.optimizer.params


def _optimizers(config, model):
    parameters = optim.ParameterVector(model.parameters())
    optimizer = optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    ema = optim.EMA(parameters, decay=config.ema) if config.ema > 0 else None
    return optimizer, ema


def new_run(config: TrainConfig, dataset=None) -> tuple[Run, object]:
    """Build model, diffusion, optimizer, EMA and generator for a fresh run; returns (run, dataset)."""
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
    optimizer, ema = _optimizers(config, model)
    run = Run(config, model, build_diffusion(config), optimizer, ema, B.default_rng(config.seed), 0, dataset.dim,
              dataset.num_classes, dataset.image_shape)
    return run, dataset


def load_run(path) -> Run:
    """Rebuild a Run (model, optimizer, EMA, generator, step) from a checkpoint."""
    header, arrays = read_checkpoint(path)
    try:
        config = TrainConfig(**header["config"])
        model = build_model(config, header["data_dim"], header["num_classes"])
        model.load_state_dict(arrays_under(arrays, "model"))
        optimizer, ema = _optimizers(config, model)
        optimizer.load_state_dict({**arrays_under(arrays, "optimizer"), **header["optimizer"]})
        if ema is not None:
            ema.decay = header["ema"]["decay"]
            ema.load_state_dict({"shadow": arrays["ema/shadow"], "updates": header["ema"]["updates"]})
        rng = B.default_rng(config.seed)
        rng.set_state(header["rng_state"])
        image_shape = tuple(header["image_shape"]) if header["image_shape"] else None
        return Run(config, model, build_diffusion(config), optimizer, ema, rng, int(header["step"]),
                   header["data_dim"], header["num_classes"], image_shape)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: checkpoint contents do not fit together ({error})") from None


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
