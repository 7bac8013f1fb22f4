"""Check analytical gradients against central differences, as PyTorch's gradcheck does.

For a function ``fn(*inputs) -> Tensor`` the Jacobian is built twice:

- numerically, column by column: nudge one input element by +eps and -eps
  and take (f(x + eps) - f(x - eps)) / (2 eps);
- analytically, row by row: one backward pass per output element with a
  one-hot output gradient.

Every element must satisfy |analytical - numerical| <= atol + rtol * |numerical|.
Work in float64: in float32 the rounding error of a difference quotient with
eps = 1e-6 is larger than the gradient of most test functions.

The bookkeeping (which element to nudge, the comparison) happens on the host;
the function itself runs in the current backend.
"""

from __future__ import annotations

import numpy as np

from . import backend as B
from .autograd import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytical gradient disagrees with the numerical one."""


def _evaluate(fn, inputs):
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    return out


def numerical_jacobian(fn, inputs, index, eps):
    """d output / d inputs[index] by central differences, shape (out_size, in_size)."""
    base = B.to_numpy(inputs[index].data).astype(np.float64)
    columns = []
    for k in range(base.size):
        values = []
        for sign in (1.0, -1.0):
            nudged = base.copy().reshape(-1)
            nudged[k] += sign * eps
            trial = list(inputs)
            trial[index] = Tensor(B.asarray(nudged.reshape(base.shape), dtype=B.dtype("float64")))
            values.append(B.to_numpy(_evaluate(fn, trial).data).astype(np.float64).reshape(-1))
        columns.append((values[0] - values[1]) / (2.0 * eps))
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def analytical_jacobian(fn, inputs, index):
    """d output / d inputs[index] by one backward pass per output element."""
    probe = _evaluate(fn, inputs)
    out_size = probe.size
    rows = []
    for k in range(out_size):
        leaves = [Tensor(x.data, requires_grad=True) for x in inputs]
        out = _evaluate(fn, leaves)
        one_hot = np.zeros(out_size)
        one_hot[k] = 1.0
        grad_out = B.asarray(one_hot.reshape(out.shape), dtype=out.dtype)
        if not out.requires_grad:
            rows.append(np.zeros(leaves[index].size))
            continue
        out.backward(grad_out)
        grad = leaves[index].grad
        if grad is None:
            rows.append(np.zeros(leaves[index].size))
        else:
            if tuple(grad.shape) != leaves[index].shape:
                raise GradcheckError(
                    f"gradcheck: gradient of input {index} has shape {tuple(grad.shape)}, "
                    f"expected the input's shape {leaves[index].shape}"
                )
            rows.append(B.to_numpy(grad).astype(np.float64).reshape(-1))
    return np.stack(rows, axis=0)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """True when fn's backward matches central differences; else raise GradcheckError.

    inputs: a sequence of Tensors (or arrays), each checked in turn. They
    must be float64 (the check refuses float32: its rounding error swamps
    the difference quotient). The error names the input, the worst element
    and both values.
    """
    inputs = [x if isinstance(x, Tensor) else Tensor(B.asarray(x)) for x in inputs]
    for i, x in enumerate(inputs):
        if "float64" not in str(x.dtype):
            raise ValueError(
                f"gradcheck: input {i} has dtype {x.dtype}; use float64 "
                "(B.asarray(values, dtype=B.dtype('float64')))"
            )
    for i in range(len(inputs)):
        numerical = numerical_jacobian(fn, inputs, i, eps)
        analytical = analytical_jacobian(fn, inputs, i)
        if numerical.shape != analytical.shape:
            raise GradcheckError(
                f"gradcheck: Jacobian shapes differ for input {i}: analytical "
                f"{analytical.shape}, numerical {numerical.shape}"
            )
        for name, jacobian in (("analytical", analytical), ("numerical", numerical)):
            if not np.all(np.isfinite(jacobian)):
                raise GradcheckError(f"gradcheck: the {name} gradient of input {i} is not finite "
                                     f"({int(np.sum(~np.isfinite(jacobian)))} entries are NaN or inf)")
        excess = np.abs(analytical - numerical) - (atol + rtol * np.abs(numerical))
        if excess.size and excess.max() > 0:
            out_k, in_k = np.unravel_index(int(np.argmax(excess)), excess.shape)
            in_index = np.unravel_index(in_k, inputs[i].shape) if inputs[i].shape else ()
            raise GradcheckError(
                f"gradcheck failed for input {i} at element {tuple(int(j) for j in in_index)} "
                f"(output element {int(out_k)}): analytical {analytical[out_k, in_k]:.8g}, "
                f"numerical {numerical[out_k, in_k]:.8g} "
                f"(allowed |difference| {atol + rtol * abs(numerical[out_k, in_k]):.3g})"
            )
    return True
