"""Image layers with PyTorch's interfaces: Conv2d, GroupNorm, Dropout, Downsample, Upsample.

Every one works on NCHW tensors (N images, C channels, H rows, W columns).
"""

from __future__ import annotations

import math

from .. import autograd as A
from .. import backend as B
from ..backend import xp
from ..checks import check_int
from .layers import rng_or_default
from .module import Module, Parameter


class Conv2d(Module):
    """torch.nn.Conv2d: weight (C_out, C_in, kH, kW), bias (C_out,); autograd.conv2d.

    PyTorch's default initialisation: weight and bias uniform on
    [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = C_in kH kW (Kaiming-uniform
    with a = sqrt(5)). ``zero_init`` starts both at zero, as the DDPM code
    does for the last convolution of each residual block and of the U-Net
    (init_scale=0), so each block starts as the identity.
    """

    @staticmethod
    def parameter_count(in_channels, out_channels, kernel_size, bias=True):
        return out_channels * in_channels * kernel_size * kernel_size + (out_channels if bias else 0)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, rng=None,
                 zero_init=False):
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size)):
            check_int(f"Conv2d: {name}", value, minimum=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        if zero_init:
            self.weight = Parameter(xp.zeros(shape, dtype=B.default_dtype()))
            self.bias = Parameter(xp.zeros((out_channels,), dtype=B.default_dtype())) if bias else None
            return
        rng = rng_or_default(rng)
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.weight = Parameter(rng.uniform(shape, -bound, bound))
        self.bias = Parameter(rng.uniform((out_channels,), -bound, bound)) if bias else None

    def forward(self, x):
        return A.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class GroupNorm(Module):
    """torch.nn.GroupNorm(num_groups, num_channels): weight ones, bias zeros; autograd.group_norm."""

    @staticmethod
    def parameter_count(num_channels):
        return 2 * num_channels

    def __init__(self, num_groups, num_channels, eps=1e-5):
        if check_int("GroupNorm: num_channels", num_channels, minimum=1) % check_int(
                "GroupNorm: num_groups", num_groups, minimum=1):
            raise ValueError(f"GroupNorm: num_groups ({num_groups}) must divide num_channels ({num_channels})")
        self.num_groups, self.eps = num_groups, eps
        self.weight = Parameter(xp.ones((num_channels,), dtype=B.default_dtype()))
        self.bias = Parameter(xp.zeros((num_channels,), dtype=B.default_dtype()))

    def forward(self, x):
        return A.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class Dropout(Module):
    """torch.nn.Dropout(p), with the random generator passed in: ``dropout(x, rng)``.

    Drops while the module is in training mode and a generator is given
    (autograd.dropout); otherwise it is the identity. The generator is the
    caller's, so the model holds no hidden random state.
    """

    def __init__(self, p=0.5):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x, rng=None):
        return A.dropout(x, self.p, training=self.training and rng is not None, rng=rng)


class Downsample(Module):
    """Halve the resolution with a 3x3 convolution of stride 2 (the DDPM code, resamp_with_conv=True).

    Padding 1 on every side, as PyTorch ports of the DDPM U-Net do (the
    TensorFlow original pads "SAME": 0 before and 1 after); the same weights
    and count. H must be even, so that Upsample gives the size back.
    """

    @staticmethod
    def parameter_count(channels):
        return Conv2d.parameter_count(channels, channels, 3)

    def __init__(self, channels, rng=None):
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=1, rng=rng)

    def forward(self, x):
        return self.conv(x)  # (N, C, H/2, W/2)


class Upsample(Module):
    """Double the resolution: nearest-neighbour 2x, then a 3x3 convolution (the DDPM code)."""

    @staticmethod
    def parameter_count(channels):
        return Conv2d.parameter_count(channels, channels, 3)

    def __init__(self, channels, rng=None):
        self.conv = Conv2d(channels, channels, 3, padding=1, rng=rng)

    def forward(self, x):
        return self.conv(A.upsample_nearest(x, 2))  # (N, C, 2H, 2W)
