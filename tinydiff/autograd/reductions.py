"""Reductions (sum, mean, max, logsumexp) and softmax, each with its VJP."""

from __future__ import annotations

import math

from ..backend import xp
from .tensor import op, record, unwrap


# -- reductions ------------------------------------------------------------


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(ax % ndim for ax in axis))


def _expand_reduced(g, shape, axes, keepdims):
    """Put back the reduced axes (length 1) so g broadcasts against the input."""
    if not keepdims:
        full = list(shape)
        for ax in axes:
            full[ax] = 1
        g = xp.reshape(g, tuple(full))
    return g


@op
def sum(a, axis=None, keepdims=False):
    """Sum over axes; the gradient spreads g back to every summed element."""
    a_data = unwrap(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)

    def vjp(g):
        return (xp.broadcast_to(_expand_reduced(g, shape, axes, keepdims), shape),)

    return record(xp.sum(a_data, axis=axes, keepdims=keepdims), (a,), vjp, "sum")


@op
def mean(a, axis=None, keepdims=False):
    """Mean over axes; the gradient is g / n spread over the n elements."""
    a_data = unwrap(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    count = math.prod(shape[ax] for ax in axes)

    def vjp(g):
        return (xp.broadcast_to(_expand_reduced(g, shape, axes, keepdims) / count, shape),)

    return record(xp.mean(a_data, axis=axes, keepdims=keepdims), (a,), vjp, "mean")


@op
def max(a, axis=None, keepdims=False):
    """Maximum over axes; ties share the gradient equally."""
    a_data = unwrap(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    out_keep = xp.max(a_data, axis=axes, keepdims=True)

    def vjp(g):
        mask = xp.astype(a_data == out_keep, a_data.dtype)
        count = xp.sum(mask, axis=axes, keepdims=True)
        return (_expand_reduced(g, shape, axes, keepdims) * mask / count,)

    out = out_keep if keepdims else xp.reshape(out_keep, tuple(n for i, n in enumerate(shape) if i not in axes))
    return record(out, (a,), vjp, "max")


@op
def logsumexp(a, axis=None, keepdims=False):
    """log(sum(exp(a))) shifted by the maximum so it never overflows.

    The gradient is softmax(a) * g.
    """
    a_data = unwrap(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    shift = xp.max(a_data, axis=axes, keepdims=True)
    exps = xp.exp(a_data - shift)
    total = xp.sum(exps, axis=axes, keepdims=True)
    out_keep = xp.log(total) + shift

    def vjp(g):
        return (_expand_reduced(g, shape, axes, keepdims) * (exps / total),)

    out = out_keep if keepdims else xp.reshape(out_keep, tuple(n for i, n in enumerate(shape) if i not in axes))
    return record(out, (a,), vjp, "logsumexp")


@op
def softmax(a, axis=-1):
    """exp(a) / sum(exp(a)) along an axis; VJP: s * (g - sum(g * s))."""
    a_data = unwrap(a)
    exps = xp.exp(a_data - xp.max(a_data, axis=axis, keepdims=True))
    out = exps / xp.sum(exps, axis=axis, keepdims=True)

    def vjp(g):
        return (out * (g - xp.sum(g * out, axis=axis, keepdims=True)),)

    return record(out, (a,), vjp, "softmax")


@op
def log_softmax(a, axis=-1):
    """a - logsumexp(a) along an axis; VJP: g - softmax * sum(g)."""
    a_data = unwrap(a)
    shifted = a_data - xp.max(a_data, axis=axis, keepdims=True)
    out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))

    def vjp(g):
        return (g - xp.exp(out) * xp.sum(g, axis=axis, keepdims=True),)

    return record(out, (a,), vjp, "log_softmax")


