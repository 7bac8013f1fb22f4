"""The configuration of a training run: plain data, resolved once, saved in every checkpoint.

Each field carries its command-line help (and choices where it has them) in
its metadata, so ``python -m tinydiff train --help`` is generated from this
one class and defaults live in one place (nanoGPT's "configuration as plain
data").
"""

from __future__ import annotations

import dataclasses
import math

from .. import data as data_module
from ..diffusion import LOSS_WEIGHTINGS, PREDICTION_TYPES
from ..schedules import SCHEDULES

MODELS = ("mlp", "resmlp")
ACTIVATION_NAMES = ("gelu", "silu", "relu", "tanh", "softplus")


def _field(default, help, choices=None, cli=True, metavar=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "cli": cli,
                                                        "metavar": metavar})


# The defaults that depend on the kind of data: a None in TrainConfig means "take it from here".
POINT_DEFAULTS = dict(model="mlp", width=128, depth=3, batch_size=256, lr=1e-3, activation="gelu",
                      schedule="linear", prediction="eps", steps=20_000)
IMAGE_DEFAULTS = dict(model="resmlp", width=1024, depth=2, batch_size=128, lr=1e-3, activation="silu",
                      schedule="cosine", prediction="x0", steps=15_000)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint as JSON.

    A value of None for model, width, depth, batch_size, lr, activation,
    schedule, prediction or steps means "the default for this kind of data"
    (``resolved``): the 2-D MLP, the linear schedule and eps-prediction of
    the paper for point sets; the residual MLP, the cosine schedule and
    x0-prediction for images (x0-prediction is what makes an MLP draw clean
    digits in minutes: see README.md).
    """

    data: str = _field("moons", "data set", choices=data_module.DATASETS)
    n_data: int | None = _field(None, "points drawn for a 2D set; a subset size for images")
    data_dir: str | None = _field(None, "folder with MNIST-format files (or $TINYDIFF_DATA)")
    conditional: bool = _field(False, "train with labels (classifier-free guidance)")
    superres: int = _field(0, "condition on the image downsampled by this factor (super-resolution); 0: off")
    label_dropout: float = _field(0.1, "probability of replacing a label by the null class")
    steps: int | None = _field(None, "training steps; default 20000 for 2D sets (under a minute), 15000 for images")
    batch_size: int | None = _field(None, "examples per step; default 256 for 2D sets, 128 for images")
    lr: float | None = _field(None, "peak learning rate (default 1e-3)")
    warmup: int = _field(100, "steps of linear learning-rate warmup")
    cosine: bool = _field(True, "decay the learning rate to min_lr_ratio * lr along a cosine")
    min_lr_ratio: float = _field(0.1, "the cosine decay's final rate, as a fraction of lr")
    grad_clip: float = _field(1.0, "clip the gradient's norm to this; 0 disables clipping")
    weight_decay: float = _field(0.0, "Adam's L2 weight decay")
    ema: float = _field(0.999, "decay of the EMA of the weights used for sampling; 0 disables it")
    T: int = _field(1000, "diffusion steps")
    schedule: str | None = _field(None, "beta schedule; default linear for 2D sets, cosine for images; custom "
                                  "reads --betas-file", choices=SCHEDULES)
    zero_terminal_snr: bool = _field(False, "rescale the schedule to zero terminal SNR (Lin et al. 2023); "
                                     "needs --prediction v or x0")
    betas_file: str | None = _field(None, "a text or .npy file of T betas in (0, 1): the custom schedule",
                                    metavar="FILE")
    custom_betas: list | None = _field(None, "the betas read from betas_file, kept with the run", cli=False)
    prediction: str | None = _field(None, "what the network predicts; default eps for 2D sets, x0 for images",
                                    choices=PREDICTION_TYPES)
    loss_weighting: str = _field("simple", "weight of each step's loss", choices=LOSS_WEIGHTINGS)
    model: str | None = _field(None, "denoiser; default mlp for 2D sets, resmlp for images", choices=MODELS)
    width: int | None = _field(None, "hidden units; default 128 (mlp), 1024 (resmlp)")
    depth: int | None = _field(None, "hidden layers (mlp) or residual blocks (resmlp)")
    emb_dim: int = _field(128, "size of the sinusoidal timestep embedding (even)")
    activation: str | None = _field(None, "default gelu for 2D sets, silu for images", choices=ACTIVATION_NAMES)
    seed: int = _field(0, "seed of the data, the initial weights and every draw of training")
    checkpoint_every: int = _field(1000, "steps between checkpoints")
    log_every: int = _field(50, "steps between rows of losses.csv and progress updates")

    def resolved(self, image_data: bool | None = None) -> "TrainConfig":
        """A copy with every None replaced by the default for this kind of data.

        image_data defaults to what the data set's name says.
        """
        if image_data is None:
            image_data = self.data in data_module.IMAGE_DATASETS
        defaults = IMAGE_DEFAULTS if image_data else POINT_DEFAULTS
        values = dataclasses.asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        return TrainConfig(**values)

    def unresolved_fields(self) -> list:
        """The fields still None that ``resolved`` would fill."""
        return [key for key in POINT_DEFAULTS if getattr(self, key) is None]

    def validate(self):
        """Raise ValueError naming the first bad field; returns self."""
        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            value = getattr(self, field.name)
            if choices and value is not None and value not in choices:
                raise ValueError(f"{field.name} must be one of {', '.join(map(str, choices))}, got {value!r}")
        _check_counts(self)
        _check_fractions(self)
        if (self.schedule == "custom") != bool(self.betas_file or self.custom_betas) and self.schedule is not None:
            raise ValueError("schedule custom needs betas_file (a file of T betas), and betas_file needs schedule "
                             f"custom or none; got schedule {self.schedule!r}, betas_file {self.betas_file!r}")
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even, got {self.emb_dim}")
        if not isinstance(self.superres, int) or self.superres < 0 or self.superres == 1:
            raise ValueError(f"superres must be 0 (off) or a downsampling factor >= 2, got {self.superres!r}")
        return self


def _check_counts(config):
    positive = ["T", "emb_dim", "checkpoint_every", "log_every"]
    positive += [k for k in ("steps", "batch_size", "width", "depth", "n_data") if getattr(config, k) is not None]
    for key in positive:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    for key in ("warmup", "seed"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be an integer >= 0, got {value!r}")


def _check_fractions(config):
    if config.lr is not None and not (config.lr > 0 and math.isfinite(config.lr)):
        raise ValueError(f"lr must be a positive number, got {config.lr!r}")
    for key, low, high, note in (("ema", 0, 1, "in [0, 1) (0 disables it)"),
                                 ("label_dropout", 0, 1, "in [0, 1)")):
        value = getattr(config, key)
        if not low <= value < high:
            raise ValueError(f"{key} must be {note}, got {value!r}")
    if not 0 <= config.min_lr_ratio <= 1:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {config.min_lr_ratio!r}")
    for key in ("grad_clip", "weight_decay"):
        value = getattr(config, key)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{key} must be a number >= 0, got {value!r}")
