"""Elementwise ops: arithmetic, matmul, transcendental functions and activations, each with its VJP."""

from __future__ import annotations

import math

from .. import backend as B
from ..backend import xp
from .tensor import Tensor, matrix_transpose, needs_grad, op, record, unwrap


# -- elementwise binary ----------------------------------------------------


@op
def add(a, b):
    """a + b."""
    return record(unwrap(a) + unwrap(b), (a, b), lambda g: (g, g), "add")


@op
def sub(a, b):
    """a - b."""
    return record(unwrap(a) - unwrap(b), (a, b), lambda g: (g, -g), "sub")


@op
def mul(a, b):
    """a * b; d/da = b, d/db = a."""
    a_data, b_data = unwrap(a), unwrap(b)

    def vjp(g):
        return (g * b_data if needs_grad(a) else None, g * a_data if needs_grad(b) else None)

    return record(a_data * b_data, (a, b), vjp, "mul")


@op
def div(a, b):
    """a / b; d/da = 1/b, d/db = -a/b^2."""
    a_data, b_data = unwrap(a), unwrap(b)
    out = a_data / b_data

    def vjp(g):
        grad_a = g / b_data
        return (grad_a if needs_grad(a) else None, -grad_a * out if needs_grad(b) else None)

    return record(out, (a, b), vjp, "div")


@op
def power(a, exponent):
    """a ** p for a number p; d/da = p a^(p-1)."""
    if isinstance(exponent, Tensor) or B.is_array(exponent):
        raise TypeError("power: the exponent must be a Python number (write exp(p * log(a)))")
    a_data = unwrap(a)
    if exponent == 2:
        out = a_data * a_data
        return record(out, (a,), lambda g: (g * (2.0 * a_data),), "power")
    out = a_data ** exponent
    return record(out, (a,), lambda g: (g * (exponent * a_data ** (exponent - 1)),), "power")


@op
def neg(a):
    """-a."""
    return record(-unwrap(a), (a,), lambda g: (-g,), "neg")


@op
def matmul(a, b):
    """a @ b for 2-D and batched (..., n, k) @ (..., k, m) arrays.

    d/da = g @ b^T, d/db = a^T @ g (summed over broadcast batch axes by
    unbroadcast).
    """
    a_data, b_data = unwrap(a), unwrap(b)
    if a_data.ndim < 2 or b_data.ndim < 2:
        raise ValueError(
            f"matmul needs 2-D or batched operands, got shapes {tuple(a_data.shape)} and "
            f"{tuple(b_data.shape)}; reshape vectors to (1, n) or (n, 1)"
        )

    def vjp(g):
        return (g @ matrix_transpose(b_data) if needs_grad(a) else None, matrix_transpose(a_data) @ g if needs_grad(b) else None)

    return record(a_data @ b_data, (a, b), vjp, "matmul")


# -- elementwise unary -----------------------------------------------------


@op
def exp(a):
    """exp(a); the derivative is the output itself."""
    out = xp.exp(unwrap(a))
    return record(out, (a,), lambda g: (g * out,), "exp")


@op
def log(a):
    """log(a); d/da = 1/a."""
    a_data = unwrap(a)
    return record(xp.log(a_data), (a,), lambda g: (g / a_data,), "log")


@op
def sqrt(a):
    """sqrt(a); d/da = 1 / (2 sqrt(a))."""
    out = xp.sqrt(unwrap(a))
    return record(out, (a,), lambda g: (g / (2.0 * out),), "sqrt")


@op
def sin(a):
    """sin(a); d/da = cos(a)."""
    a_data = unwrap(a)
    return record(xp.sin(a_data), (a,), lambda g: (g * xp.cos(a_data),), "sin")


@op
def cos(a):
    """cos(a); d/da = -sin(a)."""
    a_data = unwrap(a)
    return record(xp.cos(a_data), (a,), lambda g: (-g * xp.sin(a_data),), "cos")


@op
def tanh(a):
    """tanh(a); d/da = 1 - tanh^2."""
    out = xp.tanh(unwrap(a))
    return record(out, (a,), lambda g: (g * (1.0 - out * out),), "tanh")


def stable_sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), written as (1 + tanh(x / 2)) / 2.

    The two are the same function; the tanh form cannot overflow for any x
    (exp(-x) does for x below about -88 in float32) and needs one
    transcendental.
    """
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


@op
def sigmoid(a):
    """sigmoid(a) = 1 / (1 + exp(-a)); d/da = s (1 - s)."""
    s = stable_sigmoid(unwrap(a))
    return record(s, (a,), lambda g: (g * s * (1.0 - s),), "sigmoid")


@op
def relu(a):
    """max(a, 0); the derivative is 1 where a > 0 (0 at the kink)."""
    a_data = unwrap(a)
    positive = a_data > 0
    out = xp.where(positive, a_data, 0.0)
    return record(out, (a,), lambda g: (xp.where(positive, g, 0.0),), "relu")


def _floatunwrap(value):
    """The array behind value, as the default float dtype if it holds integers or booleans."""
    x = unwrap(value)
    if x.dtype not in (xp.float32, xp.float64):
        x = xp.astype(x, B.default_dtype())
    return x


_GELU_C = math.sqrt(2.0 / math.pi)


@op
def gelu(a):
    """GELU in its tanh form (Hendrycks and Gimpel 2016): 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))).

    d/da = 0.5 (1 + t) + 0.5 a (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 a^2), with t the tanh.
    The tanh form is used because erf is not in the array API standard; it
    differs from the erf form by under 1e-3.
    """
    x = _floatunwrap(a)
    t = xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))
    out = 0.5 * x * (1.0 + t)

    def vjp(g):
        return (g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * 0.044715 * x * x)),)

    return record(out, (a,), vjp, "gelu")


@op
def silu(a):
    """SiLU (swish): a * sigmoid(a); d/da = s (1 + a (1 - s)) with s = sigmoid(a)."""
    x = _floatunwrap(a)
    s = stable_sigmoid(x)
    out = x * s

    def vjp(g):
        return (g * s * (1.0 + x * (1.0 - s)),)

    return record(out, (a,), vjp, "silu")


@op
def softplus(a):
    """log(1 + exp(a)) as max(a, 0) + log1p(exp(-|a|)), which never overflows."""
    x = unwrap(a)
    out = xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))
    return record(out, (a,), lambda g: (g * stable_sigmoid(x),), "softplus")


