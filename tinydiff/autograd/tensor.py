"""The Tensor, the graph it records, and backward.

A ``Tensor`` wraps one backend array. Each op (ops_*.py) computes its output
and, beside it, its vector-Jacobian product, and hands both to ``record``.
``Tensor.backward`` sorts the graph (iteratively, so a chain of 10,000
operations is fine), walks it from the loss back to the leaves, adds up the
gradients of a node used several times, passes each through
``unbroadcast``, and frees the graph when done.
"""

from __future__ import annotations

import contextlib
import math

from .. import backend as B
from ..backend import xp

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


def _numeric_array(value):
    """A backend array from numbers, nested lists or a NumPy array; TypeError for anything else."""
    return B.asarray_of_numbers(value, who="Tensor: data")


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
        elif not B.is_array(data) or getattr(data.dtype, "kind", "f") not in "biuf":  # (object arrays too)
            data = _numeric_array(data)
        if requires_grad and "float" not in str(data.dtype):  # (array_api_strict names it array_api_strict.float32)
            raise TypeError(
                f"Tensor: only floating-point tensors can require gradients, got dtype {data.dtype} "
                "(as in PyTorch); convert first, e.g. Tensor(x.astype('float32'), requires_grad=True)"
            )
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
        return ops.add(self, other)

    def __radd__(self, other):
        return ops.add(other, self)

    def __sub__(self, other):
        return ops.sub(self, other)

    def __rsub__(self, other):
        return ops.sub(other, self)

    def __mul__(self, other):
        return ops.mul(self, other)

    def __rmul__(self, other):
        return ops.mul(other, self)

    def __truediv__(self, other):
        return ops.div(self, other)

    def __rtruediv__(self, other):
        return ops.div(other, self)

    def __pow__(self, exponent):
        return ops.power(self, exponent)

    def __neg__(self):
        return ops.neg(self)

    def __matmul__(self, other):
        return ops.matmul(self, other)

    def __rmatmul__(self, other):
        return ops.matmul(other, self)

    def __getitem__(self, index):
        return ops.getitem(self, index)

    def exp(self):
        return ops.exp(self)

    def log(self):
        return ops.log(self)

    def sqrt(self):
        return ops.sqrt(self)

    def tanh(self):
        return ops.tanh(self)

    def sigmoid(self):
        return ops.sigmoid(self)

    def relu(self):
        return ops.relu(self)

    def gelu(self):
        return ops.gelu(self)

    def silu(self):
        return ops.silu(self)

    def softplus(self):
        return ops.softplus(self)

    def sin(self):
        return ops.sin(self)

    def cos(self):
        return ops.cos(self)

    def sum(self, axis=None, keepdims=False):
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return ops.max(self, axis=axis, keepdims=keepdims)

    def logsumexp(self, axis=None, keepdims=False):
        return ops.logsumexp(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return ops.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return ops.transpose(self, axes or None)

    def softmax(self, axis=-1):
        return ops.softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return ops.log_softmax(self, axis=axis)


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


def record(data, parents, vjp, name):
    """Wrap an op's output in a Tensor; record the graph (its parents and VJP) only when some input needs gradients.

    Every op ends with it: ``return record(out, (a, b), vjp, "name")``.
    """
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


def needs_grad(value):
    """True for a Tensor that gradients flow to (an op computes only the VJPs that are needed)."""
    return isinstance(value, Tensor) and value.requires_grad


def matrix_transpose(a):
    """Swap the last two axes (the matrix transpose of a batch)."""
    return a.T if a.ndim == 2 else xp.matrix_transpose(a)



from .. import autograd as ops  # noqa: E402  (the Tensor's operators call the ops defined after it)
