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

MODELS = ("mlp", "resmlp", "unet")
ACTIVATION_NAMES = ("gelu", "silu", "relu", "tanh", "softplus")


def _field(default, help, choices=None, cli=True, metavar=None):
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "cli": cli,
                                                        "metavar": metavar})


# The defaults that depend on the kind of data: a None in TrainConfig means "take it from here".
# 2D sets: the cosine schedule, v-prediction, 40,000 steps at a peak rate of 3e-3. Against the paper's linear
# schedule and eps at 20,000 steps and 1e-3, the spiral's sliced Wasserstein distance went from 1.49 to 1.04
# times the real-against-real floor and its precision from 0.72 to 0.92 (real data 0.95). At equal steps the
# schedule and target together gave 1.20 and 0.85, a wider (256) or deeper (4) MLP less; at 40,000 steps the
# rate took the checkerboard's precision from 0.88 to 0.90, where a larger batch, a slower EMA, more data or
# a decay to zero did not (README, "2D sets at their defaults"; examples/spiral_before_after.py).
POINT_DEFAULTS = dict(model="mlp", width=128, depth=3, batch_size=256, lr=3e-3, activation="gelu",
                      schedule="cosine", prediction="v", steps=40_000)
IMAGE_DEFAULTS = dict(model="resmlp", width=1024, depth=2, batch_size=128, lr=1e-3, activation="silu",
                      schedule="cosine", prediction="x0", steps=15_000)
# CIFAR-10 trains the paper's setting (Sec. 4, Appendix B): the U-Net, batch 128, Adam at 2e-4, the linear
# schedule, eps-prediction, 800k steps. (The paper also warms up over 5000 steps and keeps an EMA of 0.9999:
# pass --warmup 5000 --ema 0.9999.)
CIFAR10_DEFAULTS = dict(IMAGE_DEFAULTS, model="unet", batch_size=128, lr=2e-4, schedule="linear", prediction="eps",
                        steps=800_000)
# The U-Net's size (model "unet"): small for 28 x 28 images, the paper's for CIFAR-10 (nn.UNet.PAPER_CIFAR10).
# "lowest" puts attention at the U-Net's lowest resolution (7 x 7 for 28 x 28 images).
# group_channels: the fewest channels in a GroupNorm group (nn.unet.norm_groups); at the paper's widths
# (128 to 512 channels) 1, 2 and 4 all give its 32 groups.
UNET_DEFAULTS = dict(channels=16, channel_mult="1,2,2", res_blocks=1, attention_resolutions="lowest", dropout=0.0,
                     group_channels=4)
UNET_PAPER_DEFAULTS = dict(channels=128, channel_mult="1,2,2,2", res_blocks=2, attention_resolutions="16",
                           dropout=0.1, group_channels=4)
UNET_FIELDS = tuple(UNET_DEFAULTS)
# Latent diffusion (latent_dim > 0): the denoiser's data are latent_dim numbers of unit variance, not pixels, so
# a residual MLP of width 256 does (a twelfth of the pixel model's sampling cost); x0-prediction stays the best
# target on the codes too (measured on MNIST, README.md "Latent diffusion and int8 inference").
LATENT_DEFAULTS = dict(IMAGE_DEFAULTS, width=256, steps=20_000)


def parse_ints(name, text):
    """A comma-separated list of positive integers ("1,2,2") as a tuple; ValueError naming the field."""
    try:
        values = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise ValueError(f"{name} must be a comma-separated list of positive integers such as 1,2,2, got {text!r}")
    return values


def attention_resolutions(text, image_size, levels):
    """The resolutions of the attention_resolutions field: a list, "none", or "lowest" (image_size / 2^(levels-1))."""
    if text == "none":
        return ()
    if text == "lowest":
        return (image_size // 2 ** (levels - 1),)
    return parse_ints("attention_resolutions", text)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a run; saved in every checkpoint as JSON.

    A value of None for model, width, depth, batch_size, lr, activation,
    schedule, prediction or steps means "the default for this kind of data"
    (``resolved``): the 2-D MLP, the cosine schedule and v-prediction for
    point sets (measured: see POINT_DEFAULTS); the residual MLP, the cosine schedule and
    x0-prediction for images (x0-prediction is what makes an MLP draw clean
    digits in minutes: see README.md); the paper's U-Net and setting for
    cifar10. With model "unet", None for its options (channels, channel_mult,
    res_blocks, attention_resolutions, dropout) means the small U-Net
    (UNET_DEFAULTS), or the paper's for cifar10.
    """

    data: str = _field("moons", "data set", choices=data_module.DATASETS)
    n_data: int | None = _field(None, "points drawn for a 2D set; a subset size for images")
    data_dir: str | None = _field(None, "folder with MNIST-format files (or $TINYDIFF_DATA)")
    conditional: bool = _field(False, "train with labels (classifier-free guidance)")
    superres: int = _field(0, "condition on the image downsampled by this factor (super-resolution); 0: off")
    label_dropout: float = _field(0.1, "probability of replacing a label by the null class")
    steps: int | None = _field(None, "training steps; default 40000 for 2D sets (about a minute), 15000 for images")
    batch_size: int | None = _field(None, "examples per step; default 256 for 2D sets, 128 for images")
    lr: float | None = _field(None, "peak learning rate (default 3e-3 for 2D sets, 1e-3 for images)")
    warmup: int = _field(100, "steps of linear learning-rate warmup")
    cosine: bool = _field(True, "decay the learning rate to min_lr_ratio * lr along a cosine")
    min_lr_ratio: float = _field(0.1, "the cosine decay's final rate, as a fraction of lr")
    grad_clip: float = _field(1.0, "clip the gradient's norm to this; 0 disables clipping")
    weight_decay: float = _field(0.0, "Adam's L2 weight decay")
    ema: float = _field(0.999, "decay of the EMA of the weights used for sampling; 0 disables it")
    T: int = _field(1000, "diffusion steps")
    schedule: str | None = _field(None, "beta schedule; default cosine (custom reads --betas-file)",
                                  choices=SCHEDULES)
    zero_terminal_snr: bool = _field(False, "rescale the schedule to zero terminal SNR (Lin et al. 2023); "
                                     "needs --prediction v or x0")
    betas_file: str | None = _field(None, "a text or .npy file of T betas in (0, 1): the custom schedule",
                                    metavar="FILE")
    custom_betas: list | None = _field(None, "the betas read from betas_file, kept with the run", cli=False)
    prediction: str | None = _field(None, "what the network predicts; default v for 2D sets, x0 for images",
                                    choices=PREDICTION_TYPES)
    loss_weighting: str = _field("simple", "weight of each step's loss", choices=LOSS_WEIGHTINGS)
    model: str | None = _field(None, "denoiser; default mlp for 2D sets, resmlp for images, unet for cifar10",
                                 choices=MODELS)
    width: int | None = _field(None, "hidden units; default 128 (mlp), 1024 (resmlp); not used by unet")
    depth: int | None = _field(None, "hidden layers (mlp) or residual blocks (resmlp); not used by unet")
    channels: int | None = _field(None, "unet: channels at full resolution (ch); default 16, 128 for cifar10 (the "
                                  "paper); also the size of its timestep embedding")
    channel_mult: str | None = _field(None, "unet: channel multiplier of each resolution; default 1,2,2, 1,2,2,2 for "
                                      "cifar10", metavar="M,M,...")
    res_blocks: int | None = _field(None, "unet: residual blocks per resolution; default 1, 2 for cifar10")
    attention_resolutions: str | None = _field(None, "unet: resolutions with self-attention: a list, none, or lowest; "
                                               "default lowest (7 for 28x28), 16 for cifar10", metavar="R,R,...")
    dropout: float | None = _field(None, "unet: dropout in the residual blocks; default 0, 0.1 for cifar10")
    group_channels: int | None = _field(None, "unet: the fewest channels in a GroupNorm group (default 4; with 1, "
                                        "widths of 32 channels or fewer get one-channel groups, which normalise "
                                        "the timestep away)")
    emb_dim: int = _field(128, "size of the sinusoidal timestep embedding (even) of the MLPs (the U-Net's is "
                          "--channels)")
    activation: str | None = _field(None, "default gelu for 2D sets, silu for images", choices=ACTIVATION_NAMES)
    seed: int = _field(0, "seed of the data, the initial weights and every draw of training")
    checkpoint_every: int = _field(1000, "steps between checkpoints")
    log_every: int = _field(50, "steps between rows of losses.csv and progress updates")
    latent_dim: int = _field(0, "latent diffusion: first train an autoencoder to codes of this many numbers, then "
                             "diffuse the codes (images only); 0: diffuse the pixels")
    ae_steps: int = _field(10_000, "latent diffusion: training steps of the autoencoder (stage 1)")
    ae_width: int = _field(512, "latent diffusion: hidden units of the autoencoder's encoder and decoder")
    ae_depth: int = _field(2, "latent diffusion: hidden layers of the encoder and of the decoder")
    ae_kl: float = _field(1e-4, "latent diffusion: weight of the KL term (a VAE, as Rombach et al.); 0: a plain "
                          "autoencoder")
    ae_lr: float = _field(1e-3, "latent diffusion: the autoencoder's peak learning rate")

    def resolved(self, image_data: bool | None = None) -> "TrainConfig":
        """A copy with every None replaced by the default for this kind of data.

        image_data defaults to what the data set's name says.
        """
        if image_data is None:
            image_data = self.data in data_module.IMAGE_DATASETS
        defaults = IMAGE_DEFAULTS if image_data else POINT_DEFAULTS
        if self.data == "cifar10":
            defaults = CIFAR10_DEFAULTS
        if self.latent_dim:
            defaults = LATENT_DEFAULTS
        values = dataclasses.asdict(self)
        for key, value in defaults.items():
            if values[key] is None:
                values[key] = value
        if values["model"] == "unet":
            for key, value in (UNET_PAPER_DEFAULTS if self.data == "cifar10" else UNET_DEFAULTS).items():
                if values[key] is None:
                    values[key] = value
        return TrainConfig(**values)

    def unresolved_fields(self) -> list:
        """The fields still None that ``resolved`` would fill."""
        keys = list(POINT_DEFAULTS) + (list(UNET_FIELDS) if self.model == "unet" else [])
        return [key for key in keys if getattr(self, key) is None]

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
        _check_unet_options(self)
        _check_latent_options(self)
        return self


def _check_latent_options(config):
    """latent_dim >= 0 and the autoencoder's settings; a latent run diffuses codes, not a low-resolution image."""
    for key, minimum in (("latent_dim", 0), ("ae_steps", 1), ("ae_width", 1), ("ae_depth", 1)):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{key} must be an integer >= {minimum}, got {value!r}")
    if not (isinstance(config.ae_kl, (int, float)) and config.ae_kl >= 0 and math.isfinite(config.ae_kl)):
        raise ValueError(f"ae_kl must be a number >= 0, got {config.ae_kl!r}")
    if not (isinstance(config.ae_lr, (int, float)) and config.ae_lr > 0 and math.isfinite(config.ae_lr)):
        raise ValueError(f"ae_lr must be a positive number, got {config.ae_lr!r}")
    if config.latent_dim and config.superres:
        raise ValueError("latent_dim and superres do not combine: a latent run diffuses codes, not pixels")
    if config.latent_dim and config.model == "unet":
        raise ValueError("latent_dim needs an MLP denoiser (model mlp or resmlp): the codes are vectors, not images")


def _check_unet_options(config):
    """The U-Net's options: well formed, and given only to a U-Net."""
    given = [key for key in UNET_FIELDS if getattr(config, key) is not None]
    model = config.model or (CIFAR10_DEFAULTS["model"] if config.data == "cifar10" else None)
    if given and model != "unet":
        raise ValueError(f"{given[0]} is an option of the U-Net: it needs model unet, got model {model!r}")
    if config.channels is not None and (not isinstance(config.channels, int) or isinstance(config.channels, bool)
                                        or config.channels < 2 or config.channels % 2):
        raise ValueError(f"channels must be an even integer >= 2, got {config.channels!r}")
    if config.channel_mult is not None:
        parse_ints("channel_mult", config.channel_mult)
    if config.attention_resolutions not in (None, "none", "lowest"):
        parse_ints("attention_resolutions", config.attention_resolutions)
    if config.res_blocks is not None and (not isinstance(config.res_blocks, int) or config.res_blocks < 1):
        raise ValueError(f"res_blocks must be a positive integer, got {config.res_blocks!r}")
    if config.dropout is not None and not (isinstance(config.dropout, (int, float)) and 0 <= config.dropout < 1):
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
    if config.group_channels is not None and (not isinstance(config.group_channels, int)
                                              or isinstance(config.group_channels, bool) or config.group_channels < 1):
        raise ValueError(f"group_channels must be a positive integer, got {config.group_channels!r}")


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
