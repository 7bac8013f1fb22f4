"""The DDPM U-Net (Ho et al. 2020, Sec. 4 and Appendix B): ResBlock, AttentionBlock, UNet.

The paper's denoiser for images is a U-Net on the PixelCNN++ backbone: at
each resolution, Wide-ResNet blocks with group normalization, the timestep
embedding added inside every block, self-attention at 16 x 16, and a 3x3
convolution of stride 2 down to the next resolution; then back up with
nearest-neighbour upsampling, every block taking the matching block's output
of the way down as a skip connection (concatenated channels). The blocks and
their order follow the paper's code (diffusion_tf/models/unet.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .. import autograd as A
from .. import backend as B
from ..autograd import Tensor, is_grad_enabled
from ..checks import check_int
from .conv import Conv2d, Downsample, Dropout, GroupNorm, Upsample
from .denoisers import Denoiser
from .layers import ClassConditioning, Linear, TimestepEmbedding, rng_or_default
from .module import Module


def norm_groups(channels, num_groups=32, group_channels=4):
    """The groups of a GroupNorm over ``channels``: the paper's 32, fewer where a group would hold < group_channels.

    gcd(num_groups, channels // group_channels), then its gcd with channels
    so that it divides them: 32 for the paper's 128 to 512 channels (as in
    its code), 4 groups of 4 for a small U-Net's 16, 8 of 4 for 32. Why not
    32 groups, or gcd(32, channels), at small widths: a group of one channel
    is normalised over its positions alone, which removes any constant added
    to that channel, and the timestep's projection (with the class embedding)
    is exactly such a constant per channel (ResBlock), so a U-Net whose
    groups are single channels cannot see t. ``group_channels=1`` is
    gcd(32, channels), the rule tinydiff used before (checkpoints made with
    it still load with it).
    """
    groups = math.gcd(num_groups, max(1, channels // group_channels))
    return math.gcd(groups, channels)


class ResBlock(Module):
    """x + conv(dropout(SiLU(GroupNorm(conv(SiLU(GroupNorm(x))) + proj(SiLU(temb)))))), Appendix B.

    The Wide-ResNet block of the paper's code: the timestep embedding temb,
    projected to the block's channels, is added to every position between the
    two convolutions; the second convolution starts at zero. When the
    channels change, the skip connection is a 1x1 convolution ("nin").
    """

    @staticmethod
    def parameter_count(in_channels, out_channels, temb_dim):
        count = (GroupNorm.parameter_count(in_channels) + Conv2d.parameter_count(in_channels, out_channels, 3)
                 + temb_dim * out_channels + out_channels
                 + GroupNorm.parameter_count(out_channels) + Conv2d.parameter_count(out_channels, out_channels, 3))
        if in_channels != out_channels:
            count += Conv2d.parameter_count(in_channels, out_channels, 1)
        return count

    def __init__(self, in_channels, out_channels, temb_dim, dropout=0.0, num_groups=32, group_channels=4, rng=None):
        self.norm1 = GroupNorm(norm_groups(in_channels, num_groups, group_channels), in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, rng=rng)
        self.temb_proj = Linear(temb_dim, out_channels, rng=rng)
        self.norm2 = GroupNorm(norm_groups(out_channels, num_groups, group_channels), out_channels)
        self.dropout = Dropout(dropout)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, zero_init=True)
        self.nin_shortcut = Conv2d(in_channels, out_channels, 1, rng=rng) if in_channels != out_channels else None

    def forward(self, x, temb, rng=None):
        h = self.conv1(A.silu(self.norm1(x)))  # (N, C_out, H, W)
        h = h + A.reshape(self.temb_proj(A.silu(temb)), (temb.shape[0], -1, 1, 1))  # temb at every position
        h = self.conv2(self.dropout(A.silu(self.norm2(h)), rng))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return skip + h


class AttentionBlock(Module):
    """x + proj_out(softmax(Q K^T / sqrt(C)) V) over the H W positions, Appendix B ("self-attention at 16 x 16").

    Q, K and V are 1x1 convolutions of GroupNorm(x): every position asks
    every other position of the same image, with C-dimensional queries and
    keys (one head). The output projection starts at zero.
    """

    @staticmethod
    def parameter_count(channels):
        return GroupNorm.parameter_count(channels) + 4 * Conv2d.parameter_count(channels, channels, 1)

    def __init__(self, channels, num_groups=32, group_channels=4, rng=None):
        self.norm = GroupNorm(norm_groups(channels, num_groups, group_channels), channels)
        self.q = Conv2d(channels, channels, 1, rng=rng)
        self.k = Conv2d(channels, channels, 1, rng=rng)
        self.v = Conv2d(channels, channels, 1, rng=rng)
        self.proj_out = Conv2d(channels, channels, 1, zero_init=True)

    def queries_keys_values(self, x):
        """Q, K, V of x as (N, H W, C): one row per position."""
        n, c, h, w = x.shape
        z = self.norm(x)
        return [A.transpose(A.reshape(conv(z), (n, c, h * w)), (0, 2, 1)) for conv in (self.q, self.k, self.v)]

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.queries_keys_values(x)  # (N, HW, C) each
        attended = A.scaled_dot_product_attention(q, k, v)  # (N, HW, C)
        return x + self.proj_out(A.reshape(A.transpose(attended, (0, 2, 1)), (n, c, h, w)))

    def attention_map(self, x):
        """softmax(Q K^T / sqrt(C)) as a backend array (N, H W, H W): row p says where position p looks."""
        q, k, _ = self.queries_keys_values(x)
        return A.attention_weights(q, k)


class LevelPlan(NamedTuple):
    """One resolution of the U-Net: its blocks' (in, out) channels, attention or not, and its size."""

    blocks: tuple
    attention: bool
    resolution: int
    resample: bool  # a Downsample after it (on the way down), an Upsample (on the way up)


def unet_plan(ch, ch_mult, num_res_blocks, attn_resolutions, image_size):
    """The U-Net's levels as data, (down, up), following the paper's code; UNet builds and counts from it.

    Down: at each level num_res_blocks blocks to ch * mult channels. Every
    block's output (and conv_in's, and each Downsample's) is kept as a skip;
    up: num_res_blocks + 1 blocks per level, each taking one skip, in reverse.
    """
    down, skips, channels, resolution = [], [ch], ch, image_size
    for level, mult in enumerate(ch_mult):
        blocks = []
        for _ in range(num_res_blocks):
            blocks.append((channels, ch * mult))
            channels = ch * mult
            skips.append(channels)
        last = level == len(ch_mult) - 1
        down.append(LevelPlan(tuple(blocks), resolution in attn_resolutions, resolution, not last))
        if not last:
            skips.append(channels)
            resolution //= 2
    up = []
    for level in reversed(range(len(ch_mult))):
        blocks = []
        for _ in range(num_res_blocks + 1):
            blocks.append((channels + skips.pop(), ch * ch_mult[level]))
            channels = ch * ch_mult[level]
        up.append(LevelPlan(tuple(blocks), resolution in attn_resolutions, resolution, level != 0))
        resolution *= 2
    return down, up


class Level(Module):
    """One resolution's residual blocks, each followed by attention where the plan says, then a resampling."""

    def __init__(self, plan, temb_dim, dropout, groups, resample, rng):
        self.block = [ResBlock(i, o, temb_dim, dropout, *groups, rng=rng) for i, o in plan.blocks]
        self.attn = [AttentionBlock(o, *groups, rng=rng) for _, o in plan.blocks] if plan.attention else []
        self.resample = resample

    @staticmethod
    def parameter_count(plan, temb_dim):
        count = sum(ResBlock.parameter_count(i, o, temb_dim) for i, o in plan.blocks)
        if plan.attention:
            count += sum(AttentionBlock.parameter_count(o) for _, o in plan.blocks)
        resample = Conv2d.parameter_count(plan.blocks[-1][1], plan.blocks[-1][1], 3)  # Downsample or Upsample
        return count + (resample if plan.resample else 0)


def _check_architecture(in_channels, ch, ch_mult, num_res_blocks, attn_resolutions, image_size, dropout):
    check_int("UNet: in_channels", in_channels, minimum=1)
    check_int("UNet: num_res_blocks", num_res_blocks, minimum=1)
    if check_int("UNet: ch", ch, minimum=2) % 2:
        raise ValueError(f"UNet: ch must be even (it is the size of the sinusoidal timestep embedding), got {ch}")
    if not ch_mult or not all(isinstance(m, int) and m >= 1 for m in ch_mult):
        raise ValueError(f"UNet: ch_mult must be a non-empty sequence of positive integers, got {ch_mult!r}")
    levels = len(ch_mult)
    if check_int("UNet: image_size", image_size, minimum=1) % 2 ** (levels - 1):
        raise ValueError(f"UNet: image_size {image_size} must be divisible by 2^{levels - 1} = {2 ** (levels - 1)} "
                         f"to be halved {levels - 1} times and doubled back ({levels} resolutions, ch_mult "
                         f"{tuple(ch_mult)}); use fewer resolutions")
    resolutions = [image_size // 2**i for i in range(levels)]
    stray = [r for r in attn_resolutions if r not in resolutions]
    if stray:
        raise ValueError(f"UNet: attn_resolutions {tuple(attn_resolutions)} must be among the resolutions "
                         f"{', '.join(map(str, resolutions))} of a {image_size}x{image_size} image")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"UNet: dropout must be in [0, 1), got {dropout!r}")


class UNet(Denoiser):
    """The DDPM denoiser eps_theta(x_t, t) for images (Ho et al. 2020, Sec. 4, Appendix B).

    UNet(in_channels, ch, ch_mult, num_res_blocks, attn_resolutions, dropout,
    image_size): ch * ch_mult[i] channels at resolution image_size / 2^i,
    num_res_blocks residual blocks per resolution on the way down (one more
    on the way up), self-attention at the resolutions in attn_resolutions and
    in the middle. The timestep embedding is the sinusoidal one with ch
    dimensions, then Linear(ch, 4 ch), SiLU, Linear(4 ch, 4 ch) (Sec. 4);
    every residual block adds its own projection of it. ``ddpm_cifar10()`` is
    the paper's 35.7M-parameter CIFAR-10 model; the defaults are a small
    U-Net for 28 x 28 images (MNIST). num_classes adds a class embedding to
    the timestep embedding (classifier-free guidance); extra_channels takes
    an extra input image as channels beside x (super-resolution).

    Called like the MLP denoisers, ``model(x, t, y=None, extra=None)``: x is
    flattened, (N, C H W), as tinydiff's data sets are, or (N, C, H, W); the
    output has x's shape. Dropout is active only while a graph is being built
    in training mode (a training step): sampling and evaluation run under
    no_grad and see the whole network, as model.eval() would give. Its masks
    come from a generator keyed on (dropout_seed, dropout_calls), the number
    of training forward passes so far, so a resumed run (which sets
    dropout_calls to its step) draws the same masks as an uninterrupted one.
    """

    PAPER_CIFAR10 = dict(in_channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                         dropout=0.1, image_size=32)

    @classmethod
    def ddpm_cifar10(cls, **kwargs):
        """The paper's CIFAR-10 U-Net (Appendix B): ch 128, multipliers (1, 2, 2, 2), two blocks per resolution,
        attention at 16 x 16, dropout 0.1; 35.7 million parameters."""
        return cls(**{**cls.PAPER_CIFAR10, **kwargs})

    @staticmethod
    def parameter_count(in_channels=1, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,),
                        image_size=28, num_classes=None, extra_channels=0):
        """The number of parameters __init__ makes, computed from the same plan without making them."""
        ch_mult, attn_resolutions = tuple(ch_mult), tuple(attn_resolutions)
        _check_architecture(in_channels, ch, ch_mult, num_res_blocks, attn_resolutions, image_size, 0.0)
        down, up = unet_plan(ch, ch_mult, num_res_blocks, attn_resolutions, image_size)
        temb_dim, middle = 4 * ch, ch * ch_mult[-1]
        count = ch * temb_dim + temb_dim + temb_dim * temb_dim + temb_dim  # the two dense layers of temb
        count += (num_classes + 1) * temb_dim if num_classes else 0
        count += Conv2d.parameter_count(in_channels + extra_channels, ch, 3)
        count += sum(Level.parameter_count(plan, temb_dim) for plan in down + up)
        count += 2 * ResBlock.parameter_count(middle, middle, temb_dim) + AttentionBlock.parameter_count(middle)
        return count + GroupNorm.parameter_count(ch) + Conv2d.parameter_count(ch, in_channels, 3)

    def __init__(self, in_channels=1, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,),
                 dropout=0.0, image_size=28, num_classes=None, extra_channels=0, num_groups=32,
                 group_channels=4, num_timesteps=1000, rng=None):
        ch_mult, attn_resolutions = tuple(ch_mult), tuple(attn_resolutions)
        _check_architecture(in_channels, ch, ch_mult, num_res_blocks, attn_resolutions, image_size, dropout)
        rng = rng_or_default(rng)
        self.in_channels, self.image_size, self.extra_channels = in_channels, image_size, extra_channels
        self.ch = ch  # channels at the top resolution
        self.data_dim = in_channels * image_size * image_size  # the samplers check shapes against it
        self.extra_dim = extra_channels * image_size * image_size or None
        self.dropout = dropout
        temb_dim, middle = 4 * ch, ch * ch_mult[-1]
        self.embed_t = TimestepEmbedding(ch, num_timesteps)
        self.temb_dense = [Linear(ch, temb_dim, rng=rng), Linear(temb_dim, temb_dim, rng=rng)]
        self.num_classes = num_classes
        self.classes = ClassConditioning(num_classes, temb_dim, rng=rng) if num_classes else None
        self.conv_in = Conv2d(in_channels + extra_channels, ch, 3, padding=1, rng=rng)
        down, up = unet_plan(ch, ch_mult, num_res_blocks, attn_resolutions, image_size)
        groups = (num_groups, group_channels)  # every GroupNorm's groups: norm_groups(channels, *groups)
        self.down = [Level(plan, temb_dim, dropout, groups, Downsample(plan.blocks[-1][1], rng=rng)
                           if plan.resample else None, rng) for plan in down]
        self.mid_block1 = ResBlock(middle, middle, temb_dim, dropout, *groups, rng=rng)
        self.mid_attn = AttentionBlock(middle, *groups, rng=rng)
        self.mid_block2 = ResBlock(middle, middle, temb_dim, dropout, *groups, rng=rng)
        self.up = [Level(plan, temb_dim, dropout, groups, Upsample(plan.blocks[-1][1], rng=rng)
                         if plan.resample else None, rng) for plan in up]
        self.norm_out = GroupNorm(norm_groups(ch, *groups), ch)
        self.conv_out = Conv2d(ch, in_channels, 3, padding=1, zero_init=True)
        self.dropout_seed, self.dropout_calls = rng.next_seed(), 0

    def _dropout_rng(self):
        """The generator of this forward pass's dropout masks; None when nothing is dropped."""
        if not (self.training and self.dropout > 0 and is_grad_enabled()):
            return None
        rng = B.default_rng((self.dropout_seed, self.dropout_calls))
        self.dropout_calls += 1
        return rng

    def _images(self, x, channels, what):
        """x as (N, channels, S, S): reshaped from (N, channels S S), or checked as it is."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        s = self.image_size
        if x.ndim == 2 and x.shape[1] == channels * s * s:
            return A.reshape(x, (x.shape[0], channels, s, s))
        if x.shape[1:] != (channels, s, s):
            raise ValueError(f"UNet: {what} must have shape (N, {channels * s * s}) or (N, {channels}, {s}, {s}), "
                             f"got {x.shape}")
        return x

    def timestep_features(self, t, y, n):
        """temb: the sinusoidal embedding of t through two dense layers (+ the class embedding): (N or 1, 4 ch)."""
        temb = self.temb_dense[1](A.silu(self.temb_dense[0](self.embed_timesteps(t, n))))
        self.check_labels(y)
        if self.classes is not None:
            temb = temb + self.classes(y, temb.shape[0] if y is None else n)
        return temb

    # Sampling on the CPU: at 2,000 rows a top-resolution feature map of the MNIST U-Net is 100 MB, and a
    # convolution that streams it through memory once per kernel tap ran 2.2x slower per image than at 64
    # rows, whose maps stay in cache. So, with no graph to record, the rows go through a slice at a time,
    # each slice's maps about MAP_BYTES (167 rows for MNIST, 16 for the paper's CIFAR-10 model). A GPU wants
    # one large call instead.
    MAP_BYTES = 2**23

    def inference_rows(self):
        """The rows of one pass without a graph: a cache-sized slice on the CPU, unlimited (None) on a GPU."""
        if B.get_backend() == "cupy":
            return None
        return max(1, self.MAP_BYTES // (4 * self.ch * self.image_size**2))

    def rows_per_call(self, n):
        """How many of n rows one pass takes: all of them when training or on a GPU, else a cache-sized slice."""
        rows = None if is_grad_enabled() else self.inference_rows()
        return n if rows is None else min(n, rows)

    def forward(self, x, t, y=None, extra=None):
        n = x.shape[0]
        h = self._images(x, self.in_channels, "x")  # (N, C, S, S)
        if self.extra_channels:
            if extra is None:
                raise ValueError(f"this UNet was built with extra_channels={self.extra_channels}: call it as "
                                 "model(x, t, extra=...)")
            h = A.concatenate([h, self._images(extra, self.extra_channels, "extra")], axis=1)
        temb = self.timestep_features(t, y, n)  # (N or 1, 4 ch): t and y checked here, once
        rows = self.rows_per_call(n)
        parts = [self.trunk(h[start:start + rows, ...], temb if temb.shape[0] == 1 else temb[start:start + rows, ...])
                 for start in range(0, n, rows)]
        out = parts[0] if len(parts) == 1 else A.concatenate(parts, axis=0)
        return A.reshape(out, (n, self.data_dim)) if len(x.shape) == 2 else out

    def trunk(self, h, temb):
        """The U-Net proper on input images h (N, C, S, S) and their timestep features temb: (N, C_out, S, S)."""
        rng = self._dropout_rng()
        hs = [self.conv_in(h)]  # the skips, kept on the way down
        for level in self.down:
            for i, block in enumerate(level.block):
                h = block(hs[-1], temb, rng)
                hs.append(level.attn[i](h) if level.attn else h)
            if level.resample is not None:
                hs.append(level.resample(hs[-1]))  # (N, C, S/2, S/2)
        h = self.mid_block2(self.mid_attn(self.mid_block1(hs[-1], temb, rng)), temb, rng)
        for level in self.up:
            for i, block in enumerate(level.block):
                h = block(A.concatenate([h, hs.pop()], axis=1), temb, rng)  # the skip joins as channels
                h = level.attn[i](h) if level.attn else h
            if level.resample is not None:
                h = level.resample(h)  # (N, C, 2S, 2S)
        return self.conv_out(A.silu(self.norm_out(h)))  # (N, C, S, S)
