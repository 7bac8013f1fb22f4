"""Reverse-mode automatic differentiation on whole arrays.

A ``Tensor`` wraps one backend array. Every operation below computes its
output and, right beside it, its vector-Jacobian product (VJP): given the
gradient ``g`` of the loss with respect to the output, the gradients with
respect to each input. ``Tensor.backward`` sorts the graph (iteratively, so
a chain of 10,000 operations is fine), walks it from the loss back to the
leaves, adds up the gradients of a node used several times, and frees the
graph when done.

Broadcasting: every binary operation may broadcast its inputs. The VJP then
returns a gradient of the *output's* shape, and one central function,
``unbroadcast``, sums it back to each input's shape inside ``backward``.

The op table ``OPS`` lists every primitive by name; the tests check that
each one has a gradient check.
"""

from __future__ import annotations

import contextlib
import math

from . import backend as B
from .backend import xp

# ---------------------------------------------------------------------------
# Grad mode
# ---------------------------------------------------------------------------

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Build no graph inside the block (sampling, evaluation, EMA updates)."""
    global _grad_enabled
    previous = _grad_enabled
    _grad_enabled = False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


# ---------------------------------------------------------------------------
# The Tensor
# ---------------------------------------------------------------------------


class Tensor:
    """An array that remembers how it was made, so gradients can flow back.

    data           the backend array (numpy, cupy or array_api_strict)
    grad           the gradient of the last backward pass, or None; filled
                   on leaves (and on nodes that called ``retain_grad``)
    requires_grad  whether gradients flow to this tensor
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_vjp", "op", "_retain")
    # Let NumPy hand `ndarray * Tensor` back to Tensor.__rmul__.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        if isinstance(data, Tensor):
            data = data.data
        elif not B.is_array(data):
            data = B.asarray(data)
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._vjp = None
        self.op = None
        self._retain = False

    # -- plain facts ------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return math.prod(self.data.shape)

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self.op}" if self.op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad}{op})"

    def numpy(self):
        """The data as a host NumPy array."""
        return B.to_numpy(self.data)

    def item(self) -> float:
        """The value of a one-element tensor as a Python number."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return float(B.to_numpy(self.data).reshape(-1)[0])

    def detach(self) -> "Tensor":
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def retain_grad(self) -> "Tensor":
        """Keep this (non-leaf) tensor's gradient after backward, for inspection."""
        self._retain = True
        return self

    # -- backward -----------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Fill ``.grad`` of every leaf that led to this tensor.

        grad defaults to 1 for a one-element tensor (a loss). Gradients of a
        leaf used several times add up, and add to a ``.grad`` left from an
        earlier backward (call ``zero_grad`` between steps, as in PyTorch).
        The graph is freed afterwards unless retain_graph=True.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward() on a tensor that does not require grad: no input "
                "of it had requires_grad=True (or it was built under no_grad)"
            )
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a one-element tensor, got shape "
                    f"{self.shape}; pass grad= of the same shape"
                )
            grad = xp.ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        order = _topological_order(self)
        grads = {id(self): grad}
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._vjp is None or node._retain:  # a leaf, or asked to keep it
                node.grad = g if node.grad is None else node.grad + g
            if node._vjp is None:
                continue
            parent_grads = node._vjp(g)
            for parent, parent_grad in zip(node._parents, parent_grads):
                if parent_grad is None or not parent.requires_grad:
                    continue
                if parent_grad.shape != parent.data.shape:  # (shapes are tuples in every namespace)
                    parent_grad = unbroadcast(parent_grad, parent.data.shape)
                    assert tuple(parent_grad.shape) == parent.shape, (node.op, parent.shape)
                key = id(parent)
                previous = grads.get(key)
                # Out of place on purpose: a VJP may hand the same array to two parents.
                grads[key] = parent_grad if previous is None else previous + parent_grad
        if not retain_graph:
            for node in order:
                if node._vjp is not None:
                    node._parents, node._vjp = (), _freed

    # -- operators (defined as functions below) --------------------------------
    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(other, self)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(other, self)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __pow__(self, exponent):
        return power(self, exponent)

    def __neg__(self):
        return neg(self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __getitem__(self, index):
        return getitem(self, index)

    def exp(self):
        return exp(self)

    def log(self):
        return log(self)

    def sqrt(self):
        return sqrt(self)

    def tanh(self):
        return tanh(self)

    def sigmoid(self):
        return sigmoid(self)

    def relu(self):
        return relu(self)

    def gelu(self):
        return gelu(self)

    def silu(self):
        return silu(self)

    def softplus(self):
        return softplus(self)

    def sin(self):
        return sin(self)

    def cos(self):
        return cos(self)

    def sum(self, axis=None, keepdims=False):
        return sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return max(self, axis=axis, keepdims=keepdims)

    def logsumexp(self, axis=None, keepdims=False):
        return logsumexp(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    def softmax(self, axis=-1):
        return softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return log_softmax(self, axis=axis)


def _freed(g):
    raise RuntimeError(
        "backward through a graph a second time: the first backward freed it; "
        "pass retain_graph=True to the first call to keep it"
    )


def _topological_order(root):
    """Nodes that require grad, each after all of its inputs (iterative DFS)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def unbroadcast(grad, shape):
    """Sum a gradient of a broadcast result back to the input's ``shape``.

    Broadcasting prepends axes and stretches axes of length 1; the gradient
    of a stretched input is the sum over the stretched directions.
    """
    shape = tuple(shape)
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = xp.sum(grad, axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = xp.sum(grad, axis=stretched, keepdims=True)
    return grad


# ---------------------------------------------------------------------------
# The op table: forward and vector-Jacobian product side by side
# ---------------------------------------------------------------------------

OPS = {}


def op(function):
    """Register a primitive in OPS (the tests require a gradient check for each)."""
    OPS[function.__name__] = function
    return function


def unwrap(value):
    """The array behind a Tensor; arrays and numbers pass through (the one unwrapping helper)."""
    return value.data if isinstance(value, Tensor) else value


_data = unwrap  # the ops' short name for it


def _result(data, parents, vjp, name):
    """Wrap an output; record the graph only when some input needs gradients."""
    out = Tensor.__new__(Tensor)
    out.data, out.grad, out.op, out._retain = data, None, name, False
    if _grad_enabled:
        for p in parents:  # (a loop, not any(...): this runs for every operation)
            if isinstance(p, Tensor) and p.requires_grad:
                out.requires_grad = True
                out._parents = tuple(p if isinstance(p, Tensor) else _CONSTANT for p in parents)
                out._vjp = vjp
                return out
    out.requires_grad, out._parents, out._vjp = False, (), None
    return out


_CONSTANT = Tensor.__new__(Tensor)  # stands in for a number or array input
_CONSTANT.requires_grad, _CONSTANT._parents, _CONSTANT._vjp = False, (), None
_CONSTANT.data, _CONSTANT.grad, _CONSTANT.op, _CONSTANT._retain = None, None, "constant", False


def _needs(value):
    return isinstance(value, Tensor) and value.requires_grad


def _mT(a):
    """Swap the last two axes (the matrix transpose of a batch)."""
    return a.T if a.ndim == 2 else xp.matrix_transpose(a)


# -- elementwise binary ----------------------------------------------------


@op
def add(a, b):
    """a + b."""
    return _result(_data(a) + _data(b), (a, b), lambda g: (g, g), "add")


@op
def sub(a, b):
    """a - b."""
    return _result(_data(a) - _data(b), (a, b), lambda g: (g, -g), "sub")


@op
def mul(a, b):
    """a * b; d/da = b, d/db = a."""
    a_data, b_data = _data(a), _data(b)

    def vjp(g):
        return (g * b_data if _needs(a) else None, g * a_data if _needs(b) else None)

    return _result(a_data * b_data, (a, b), vjp, "mul")


@op
def div(a, b):
    """a / b; d/da = 1/b, d/db = -a/b^2."""
    a_data, b_data = _data(a), _data(b)
    out = a_data / b_data

    def vjp(g):
        grad_a = g / b_data
        return (grad_a if _needs(a) else None, -grad_a * out if _needs(b) else None)

    return _result(out, (a, b), vjp, "div")


@op
def power(a, exponent):
    """a ** p for a number p; d/da = p a^(p-1)."""
    if isinstance(exponent, Tensor) or B.is_array(exponent):
        raise TypeError("power: the exponent must be a Python number (write exp(p * log(a)))")
    a_data = _data(a)
    if exponent == 2:
        out = a_data * a_data
        return _result(out, (a,), lambda g: (g * (2.0 * a_data),), "power")
    out = a_data ** exponent
    return _result(out, (a,), lambda g: (g * (exponent * a_data ** (exponent - 1)),), "power")


@op
def neg(a):
    """-a."""
    return _result(-_data(a), (a,), lambda g: (-g,), "neg")


@op
def matmul(a, b):
    """a @ b for 2-D and batched (..., n, k) @ (..., k, m) arrays.

    d/da = g @ b^T, d/db = a^T @ g (summed over broadcast batch axes by
    unbroadcast).
    """
    a_data, b_data = _data(a), _data(b)
    if a_data.ndim < 2 or b_data.ndim < 2:
        raise ValueError(
            f"matmul needs 2-D or batched operands, got shapes {tuple(a_data.shape)} and "
            f"{tuple(b_data.shape)}; reshape vectors to (1, n) or (n, 1)"
        )

    def vjp(g):
        return (g @ _mT(b_data) if _needs(a) else None, _mT(a_data) @ g if _needs(b) else None)

    return _result(a_data @ b_data, (a, b), vjp, "matmul")


# -- elementwise unary -----------------------------------------------------


@op
def exp(a):
    """exp(a); the derivative is the output itself."""
    out = xp.exp(_data(a))
    return _result(out, (a,), lambda g: (g * out,), "exp")


@op
def log(a):
    """log(a); d/da = 1/a."""
    a_data = _data(a)
    return _result(xp.log(a_data), (a,), lambda g: (g / a_data,), "log")


@op
def sqrt(a):
    """sqrt(a); d/da = 1 / (2 sqrt(a))."""
    out = xp.sqrt(_data(a))
    return _result(out, (a,), lambda g: (g / (2.0 * out),), "sqrt")


@op
def sin(a):
    """sin(a); d/da = cos(a)."""
    a_data = _data(a)
    return _result(xp.sin(a_data), (a,), lambda g: (g * xp.cos(a_data),), "sin")


@op
def cos(a):
    """cos(a); d/da = -sin(a)."""
    a_data = _data(a)
    return _result(xp.cos(a_data), (a,), lambda g: (-g * xp.sin(a_data),), "cos")


@op
def tanh(a):
    """tanh(a); d/da = 1 - tanh^2."""
    out = xp.tanh(_data(a))
    return _result(out, (a,), lambda g: (g * (1.0 - out * out),), "tanh")


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
    s = stable_sigmoid(_data(a))
    return _result(s, (a,), lambda g: (g * s * (1.0 - s),), "sigmoid")


@op
def relu(a):
    """max(a, 0); the derivative is 1 where a > 0 (0 at the kink)."""
    a_data = _data(a)
    positive = a_data > 0
    out = xp.where(positive, a_data, 0.0)
    return _result(out, (a,), lambda g: (xp.where(positive, g, 0.0),), "relu")


def _float_data(value):
    """The array behind value, as the default float dtype if it holds integers or booleans."""
    x = _data(value)
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
    x = _float_data(a)
    t = xp.tanh(_GELU_C * (x + 0.044715 * x * x * x))
    out = 0.5 * x * (1.0 + t)

    def vjp(g):
        return (g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * 0.044715 * x * x)),)

    return _result(out, (a,), vjp, "gelu")


@op
def silu(a):
    """SiLU (swish): a * sigmoid(a); d/da = s (1 + a (1 - s)) with s = sigmoid(a)."""
    x = _float_data(a)
    s = stable_sigmoid(x)
    out = x * s

    def vjp(g):
        return (g * s * (1.0 + x * (1.0 - s)),)

    return _result(out, (a,), vjp, "silu")


@op
def softplus(a):
    """log(1 + exp(a)) as max(a, 0) + log1p(exp(-|a|)), which never overflows."""
    x = _data(a)
    out = xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))
    return _result(out, (a,), lambda g: (g * stable_sigmoid(x),), "softplus")


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
    a_data = _data(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)

    def vjp(g):
        return (xp.broadcast_to(_expand_reduced(g, shape, axes, keepdims), shape),)

    return _result(xp.sum(a_data, axis=axes, keepdims=keepdims), (a,), vjp, "sum")


@op
def mean(a, axis=None, keepdims=False):
    """Mean over axes; the gradient is g / n spread over the n elements."""
    a_data = _data(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    count = math.prod(shape[ax] for ax in axes)

    def vjp(g):
        return (xp.broadcast_to(_expand_reduced(g, shape, axes, keepdims) / count, shape),)

    return _result(xp.mean(a_data, axis=axes, keepdims=keepdims), (a,), vjp, "mean")


@op
def max(a, axis=None, keepdims=False):
    """Maximum over axes; ties share the gradient equally."""
    a_data = _data(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    out_keep = xp.max(a_data, axis=axes, keepdims=True)

    def vjp(g):
        mask = xp.astype(a_data == out_keep, a_data.dtype)
        count = xp.sum(mask, axis=axes, keepdims=True)
        return (_expand_reduced(g, shape, axes, keepdims) * mask / count,)

    out = out_keep if keepdims else xp.reshape(out_keep, tuple(n for i, n in enumerate(shape) if i not in axes))
    return _result(out, (a,), vjp, "max")


@op
def logsumexp(a, axis=None, keepdims=False):
    """log(sum(exp(a))) shifted by the maximum so it never overflows.

    The gradient is softmax(a) * g.
    """
    a_data = _data(a)
    axes = _axes(axis, a_data.ndim)
    shape = tuple(a_data.shape)
    shift = xp.max(a_data, axis=axes, keepdims=True)
    exps = xp.exp(a_data - shift)
    total = xp.sum(exps, axis=axes, keepdims=True)
    out_keep = xp.log(total) + shift

    def vjp(g):
        return (_expand_reduced(g, shape, axes, keepdims) * (exps / total),)

    out = out_keep if keepdims else xp.reshape(out_keep, tuple(n for i, n in enumerate(shape) if i not in axes))
    return _result(out, (a,), vjp, "logsumexp")


@op
def softmax(a, axis=-1):
    """exp(a) / sum(exp(a)) along an axis; VJP: s * (g - sum(g * s))."""
    a_data = _data(a)
    exps = xp.exp(a_data - xp.max(a_data, axis=axis, keepdims=True))
    out = exps / xp.sum(exps, axis=axis, keepdims=True)

    def vjp(g):
        return (out * (g - xp.sum(g * out, axis=axis, keepdims=True)),)

    return _result(out, (a,), vjp, "softmax")


@op
def log_softmax(a, axis=-1):
    """a - logsumexp(a) along an axis; VJP: g - softmax * sum(g)."""
    a_data = _data(a)
    shifted = a_data - xp.max(a_data, axis=axis, keepdims=True)
    out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))

    def vjp(g):
        return (g - xp.exp(out) * xp.sum(g, axis=axis, keepdims=True),)

    return _result(out, (a,), vjp, "log_softmax")


# -- shape -----------------------------------------------------------------


@op
def reshape(a, shape):
    """The same elements in a new shape; the gradient is reshaped back."""
    a_data = _data(a)
    old = tuple(a_data.shape)
    return _result(xp.reshape(a_data, tuple(shape)), (a,), lambda g: (xp.reshape(g, old),), "reshape")


@op
def transpose(a, axes=None):
    """Permute axes (reverse them by default); the gradient uses the inverse permutation."""
    a_data = _data(a)
    axes = tuple(reversed(range(a_data.ndim))) if axes is None else tuple(ax % a_data.ndim for ax in axes)
    inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
    return _result(xp.permute_dims(a_data, axes), (a,), lambda g: (xp.permute_dims(g, inverse),), "transpose")


@op
def getitem(a, index):
    """a[index] with basic slicing; the gradient lands back in the selected places.

    An integer array index picks rows (see ``take_rows``, which adds up the
    gradient of repeated rows).
    """
    if isinstance(index, Tensor):
        index = index.data
    if isinstance(index, list):
        index = B.asarray(index)  # a list of row numbers: rows, with repeats adding up
    if isinstance(index, tuple) and any(isinstance(i, (list, Tensor)) or B.is_array(i) for i in index):
        raise TypeError(
            "indexing a Tensor with arrays in several axes is not supported (repeated entries would lose "
            "gradient); pick rows with an integer array (take_rows) and slice the rest"
        )
    if B.is_array(index) and not _is_bool(index):
        return take_rows(a, index)
    a_data = _data(a)

    def vjp(g):
        full = xp.zeros_like(a_data)
        full[index] = g
        return (full,)

    return _result(a_data[index], (a,), vjp, "getitem")


def _is_bool(array):
    return array.dtype == xp.bool


@op
def take_rows(a, indices):
    """Rows of a picked by an integer array (an embedding lookup).

    The gradient adds g into the picked rows; a row picked twice receives
    both contributions (``a[idx] += g`` would drop one: scatter-add instead).
    """
    if isinstance(indices, Tensor):
        indices = indices.data
    a_data = _data(a)
    flat = xp.reshape(indices, (-1,))
    out = xp.take(a_data, flat, axis=0)
    out = xp.reshape(out, tuple(indices.shape) + tuple(a_data.shape[1:]))

    def vjp(g):
        g_rows = xp.reshape(g, (flat.shape[0],) + tuple(a_data.shape[1:]))
        return (B.scatter_add_rows(a_data.shape[0], flat, g_rows),)

    return _result(out, (a,), vjp, "take_rows")


@op
def concatenate(tensors, axis=0):
    """Join along an existing axis; the gradient is cut back into pieces."""
    datas = [_data(t) for t in tensors]
    axis = axis % datas[0].ndim
    sizes = [d.shape[axis] for d in datas]

    def vjp(g):
        pieces, start = [], 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size), Ellipsis)
            pieces.append(g[index])
            start += size
        return tuple(pieces)

    return _result(xp.concat(datas, axis=axis), tuple(tensors), vjp, "concatenate")


@op
def stack(tensors, axis=0):
    """Join along a new axis; the gradient is unstacked."""
    datas = [_data(t) for t in tensors]

    def vjp(g):
        return tuple(xp.unstack(g, axis=axis))

    return _result(xp.stack(datas, axis=axis), tuple(tensors), vjp, "stack")


# -- fused layers (one node instead of several, for speed) ----------------------


@op
def linear(x, weight, bias=None):
    """x @ weight^T + bias for x of shape (N, in), weight (out, in), bias (out,).

    One node instead of matmul, transpose and add: d/dx = g W,
    d/dW = g^T x, d/db = sum of g over the batch.
    """
    x_data, w_data = _data(x), _data(weight)
    out = x_data @ w_data.T  # (N, out)
    if bias is not None:
        out += _data(bias)  # in place: out is this op's own fresh array

    def vjp(g):
        grad_x = g @ w_data if _needs(x) else None
        grad_w = g.T @ x_data if _needs(weight) else None
        grad_b = xp.sum(g, axis=0) if _needs(bias) else None
        return (grad_x, grad_w, grad_b)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return _result(out, parents, vjp, "linear")


@op
def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise each row over its last axis, then scale and shift (Ba et al. 2016).

    y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance
    as in PyTorch. VJP of the normalisation, with xhat the normalised input
    and n the row length: dx = (g' - mean(g') - xhat * mean(g' * xhat)) / std,
    where g' = g * weight.
    """
    x_data = _data(x)
    mu = xp.mean(x_data, axis=-1, keepdims=True)
    centered = x_data - mu
    var = xp.mean(centered * centered, axis=-1, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = centered * inv_std
    out = x_hat
    if weight is not None:
        out = out * _data(weight)
    if bias is not None:
        out = out + _data(bias)

    def vjp(g):
        grad_weight = xp.sum(g * x_hat, axis=tuple(range(g.ndim - 1))) if _needs(weight) else None
        grad_bias = xp.sum(g, axis=tuple(range(g.ndim - 1))) if _needs(bias) else None
        grad_x = None
        if _needs(x):
            g_hat = g * _data(weight) if weight is not None else g
            grad_x = inv_std * (
                g_hat
                - xp.mean(g_hat, axis=-1, keepdims=True)
                - x_hat * xp.mean(g_hat * x_hat, axis=-1, keepdims=True)
            )
        return (grad_x, grad_weight, grad_bias)

    parents = (x,) + tuple(p for p in (weight, bias) if p is not None)
    if weight is None and bias is not None:
        raise ValueError("layer_norm: a bias without a weight is not supported")
    return _result(out, parents, vjp, "layer_norm")


@op
def mse(prediction, target, weights=None):
    """Mean squared error, mean over every element; optional per-example weights.

    With weights w of shape (N,): mean_i w_i * mean_j (p_ij - y_ij)^2, the
    weighted form of Eq. 12 / Eq. 14. One node: the VJP is
    2 w_i (p_ij - y_ij) / (N * D) for the prediction and its negative for the target.
    """
    p_data, y_data = _data(prediction), _data(target)
    diff = p_data - y_data
    n = diff.shape[0]
    per_row = math.prod(diff.shape[1:])
    if weights is None:
        out = xp.mean(diff * diff)
        scale = None
    else:
        w = _data(weights)
        scale = xp.reshape(w, (n,) + (1,) * (diff.ndim - 1))
        out = xp.sum(xp.mean(diff * diff, axis=tuple(range(1, diff.ndim))) * w) / n

    def vjp(g):
        grad = diff * (g * (2.0 / (n * per_row)))
        if scale is not None:
            grad = grad * scale
        return (grad if _needs(prediction) else None, -grad if _needs(target) else None, None)

    parents = (prediction, target) if weights is None else (prediction, target, weights)
    return _result(out, parents, vjp, "mse")
