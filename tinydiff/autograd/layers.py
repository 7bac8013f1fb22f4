"""Fused layers: one graph node (and one VJP written as the formula) instead of several."""

from __future__ import annotations

import math

from ..backend import xp
from .tensor import needs_grad, op, record, unwrap


# -- fused layers (one node instead of several, for speed) ----------------------


@op
def linear(x, weight, bias=None):
    """x @ weight^T + bias for x of shape (N, in), weight (out, in), bias (out,).

    One node instead of matmul, transpose and add: d/dx = g W,
    d/dW = g^T x, d/db = sum of g over the batch.
    """
    x_data, w_data = unwrap(x), unwrap(weight)
    out = x_data @ w_data.T  # (N, out)
    if bias is not None:
        out += unwrap(bias)  # in place: out is this op's own fresh array

    def vjp(g):
        grad_x = g @ w_data if needs_grad(x) else None
        grad_w = g.T @ x_data if needs_grad(weight) else None
        grad_b = xp.sum(g, axis=0) if needs_grad(bias) else None
        return (grad_x, grad_w, grad_b)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return record(out, parents, vjp, "linear")


@op
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise each row over its last axis, then scale and shift (Ba et al. 2016).

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance
    as in PyTorch. VJP of the normalisation, with xhat the normalised input
    and n the row length: dx = (g' - mean(g') - xhat * mean(g' * xhat)) / std,
    where g' = g * weight.
    """
    x_data = unwrap(x)
    mu = xp.mean(x_data, axis=-1, keepdims=True)
    centered = x_data - mu
    var = xp.mean(centered * centered, axis=-1, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = centered * inv_std
    out = x_hat
    if weight is not None:
        out = out * unwrap(weight)
    if bias is not None:
        out = out + unwrap(bias)

    def vjp(g):
        grad_weight = xp.sum(g * x_hat, axis=tuple(range(g.ndim - 1))) if needs_grad(weight) else None
        grad_bias = xp.sum(g, axis=tuple(range(g.ndim - 1))) if needs_grad(bias) else None
        grad_x = None
        if needs_grad(x):
            g_hat = g * unwrap(weight) if weight is not None else g
            grad_x = inv_std * (
                g_hat
                - xp.mean(g_hat, axis=-1, keepdims=True)
                - x_hat * xp.mean(g_hat * x_hat, axis=-1, keepdims=True)
            )
        return (grad_x, grad_weight, grad_bias)

    parents = (x,) + tuple(p for p in (weight, bias) if p is not None)
    if weight is None and bias is not None:
        raise ValueError("layer_norm: a bias without a weight is not supported")
    return record(out, parents, vjp, "layer_norm")


@op
def mse(prediction, target, weights=None):
    """Mean squared error, mean over every element; optional per-example weights.

    With weights w of shape (N,): mean_i w_i * mean_j (p_ij - y_ij)^2, the
    weighted form of Eq. 12 / Eq. 14. One node: the VJP is
    2 w_i (p_ij - y_ij) / (N * D) for the prediction and its negative for the target.
    """
    p_data, y_data = unwrap(prediction), unwrap(target)
    diff = p_data - y_data
    n = diff.shape[0]
    per_row = math.prod(diff.shape[1:])
    if weights is None:
        out = xp.mean(diff * diff)
        scale = None
    else:
        w = unwrap(weights)
        scale = xp.reshape(w, (n,) + (1,) * (diff.ndim - 1))
        out = xp.sum(xp.mean(diff * diff, axis=tuple(range(1, diff.ndim))) * w) / n

    def vjp(g):
        grad = diff * (g * (2.0 / (n * per_row)))
        if scale is not None:
            grad = grad * scale
        return (grad if needs_grad(prediction) else None, -grad if needs_grad(target) else None, None)

    parents = (prediction, target) if weights is None else (prediction, target, weights)
    return record(out, parents, vjp, "mse")

