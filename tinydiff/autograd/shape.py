"""Shape ops: reshape, transpose, indexing, row gathers, concatenate, stack, each with its VJP."""

from __future__ import annotations

from .. import backend as B
from ..backend import xp
from .tensor import Tensor, op, record, unwrap


# -- shape -----------------------------------------------------------------


@op
def reshape(a, shape):
    """The same elements in a new shape; the gradient is reshaped back."""
    a_data = unwrap(a)
    old = tuple(a_data.shape)
    return record(xp.reshape(a_data, tuple(shape)), (a,), lambda g: (xp.reshape(g, old),), "reshape")


@op
def transpose(a, axes=None):
    """Permute axes (reverse them by default); the gradient uses the inverse permutation."""
    a_data = unwrap(a)
    axes = tuple(reversed(range(a_data.ndim))) if axes is None else tuple(ax % a_data.ndim for ax in axes)
    inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
    return record(xp.permute_dims(a_data, axes), (a,), lambda g: (xp.permute_dims(g, inverse),), "transpose")


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
    a_data = unwrap(a)

    def vjp(g):
        full = xp.zeros_like(a_data)
        full[index] = g
        return (full,)

    return record(a_data[index], (a,), vjp, "getitem")


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
    a_data = unwrap(a)
    flat = xp.reshape(indices, (-1,))
    out = xp.take(a_data, flat, axis=0)
    out = xp.reshape(out, tuple(indices.shape) + tuple(a_data.shape[1:]))

    def vjp(g):
        g_rows = xp.reshape(g, (flat.shape[0],) + tuple(a_data.shape[1:]))
        return (B.scatter_add_rows(a_data.shape[0], flat, g_rows),)

    return record(out, (a,), vjp, "take_rows")


@op
def concatenate(tensors, axis=0):
    """Join along an existing axis; the gradient is cut back into pieces."""
    datas = [unwrap(t) for t in tensors]
    axis = axis % datas[0].ndim
    sizes = [d.shape[axis] for d in datas]

    def vjp(g):
        pieces, start = [], 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size), Ellipsis)
            pieces.append(g[index])
            start += size
        return tuple(pieces)

    return record(xp.concat(datas, axis=axis), tuple(tensors), vjp, "concatenate")


@op
def stack(tensors, axis=0):
    """Join along a new axis; the gradient is unstacked."""
    datas = [unwrap(t) for t in tensors]

    def vjp(g):
        return tuple(xp.unstack(g, axis=axis))

    return record(xp.stack(datas, axis=axis), tuple(tensors), vjp, "stack")


