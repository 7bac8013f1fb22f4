"""Group normalization (Wu and He 2018) and dropout (Srivastava et al. 2014), each with its VJP."""

from __future__ import annotations

import math

from ..backend import xp
from .tensor import needs_grad, op, record, unwrap


@op
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization with PyTorch's semantics (torch.nn.functional.group_norm).

    x (N, C, *): the C channels are split into num_groups groups of C / G
    consecutive channels; each group of each example is normalised over its
    channels and all positions, then every channel is scaled and shifted:

        y = (x - mean_g) / sqrt(var_g + eps) * weight[c] + bias[c],

    with the biased variance, as in PyTorch. The VJP is layer_norm's, per
    group: with x_hat the normalised input and g' = g * weight,
    dx = (g' - mean_g(g') - x_hat * mean_g(g' * x_hat)) / sqrt(var_g + eps).
    """
    x_data = unwrap(x)
    n, c = x_data.shape[:2]
    if not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: num_groups must divide the {c} channels, got {num_groups!r}")
    shape = tuple(x_data.shape)
    groups = xp.reshape(x_data, (n, num_groups, -1))  # (N, G, C/G * positions)
    mu = xp.mean(groups, axis=-1, keepdims=True)
    centered = groups - mu
    var = xp.mean(centered * centered, axis=-1, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = xp.reshape(centered * inv_std, shape)
    per_channel = (1, c) + (1,) * (len(shape) - 2)  # weight and bias broadcast over N and the positions
    out = x_hat
    if weight is not None:
        out = out * xp.reshape(unwrap(weight), per_channel)
    if bias is not None:
        out = out + xp.reshape(unwrap(bias), per_channel)
    others = (0,) + tuple(range(2, len(shape)))

    def vjp(g):
        grad_weight = xp.sum(g * x_hat, axis=others) if needs_grad(weight) else None
        grad_bias = xp.sum(g, axis=others) if needs_grad(bias) else None
        grad_x = None
        if needs_grad(x):
            g_hat = xp.reshape(g * xp.reshape(unwrap(weight), per_channel) if weight is not None else g,
                               (n, num_groups, -1))
            x_hat_groups = xp.reshape(x_hat, (n, num_groups, -1))
            grad_x = xp.reshape(inv_std * (
                g_hat
                - xp.mean(g_hat, axis=-1, keepdims=True)
                - x_hat_groups * xp.mean(g_hat * x_hat_groups, axis=-1, keepdims=True)
            ), shape)
        return (grad_x, grad_weight, grad_bias)

    if weight is None and bias is not None:
        raise ValueError("group_norm: a bias without a weight is not supported")
    parents = (x,) + tuple(p for p in (weight, bias) if p is not None)
    return record(out, parents, vjp, "group_norm")


@op
def dropout(x, p=0.5, training=True, rng=None):
    """Dropout with PyTorch's semantics (torch.nn.functional.dropout): inverted dropout.

    In training, each element is kept with probability 1 - p and scaled by
    1 / (1 - p), so the expected output is x: out = x * mask, with mask
    m = [u >= p] / (1 - p) for u ~ Uniform[0, 1) drawn from ``rng`` (a
    tinydiff generator: the model holds no hidden random state). The VJP is
    g * mask. Not training, or p = 0, it is the identity (x itself).
    """
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0 and math.isfinite(p)):
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if not training or p == 0:
        return x
    if rng is None:
        raise ValueError("dropout: training with p > 0 needs rng, a generator from tinydiff.backend.default_rng")
    x_data = unwrap(x)
    keep = rng.uniform(tuple(x_data.shape), dtype=x_data.dtype) >= p
    mask = xp.astype(keep, x_data.dtype) * (1.0 / (1.0 - p) if p < 1 else 0.0)  # [u >= p] / (1 - p)
    return record(x_data * mask, (x,), lambda g: (g * mask,), "dropout")
