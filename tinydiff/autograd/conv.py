"""Convolution and nearest-neighbour upsampling on NCHW arrays, each with its VJP.

Both are written with array operations the array API standard has (slices,
stack, reshape, matmul), so numpy, cupy and array_api_strict all run them.
"""

from __future__ import annotations

from .. import backend as B
from ..backend import xp
from .tensor import matrix_transpose, needs_grad, op, record, unwrap


def _pair(value, name):
    """An int or a pair of ints as a pair (PyTorch's stride=2 means (2, 2))."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


def _taps(kernel, stride, out_size):
    """For each kernel tap i, the slice of the padded input it reads at every output position.

    Output position y reads input row y * stride + i (cross-correlation), so
    tap i sees rows i, i + stride, ..., i + stride * (out_size - 1).
    """
    return [slice(i, i + stride * (out_size - 1) + 1, stride) for i in range(kernel)]


def _columns(padded, rows, cols):
    """im2col: (N, C, H_p, W_p) -> (N, C * kH * kW, H_out * W_out).

    Column (c, i, j) holds channel c of the input shifted by kernel tap
    (i, j): one strided slice per tap, gathered by one stack.
    """
    n, c = padded.shape[:2]
    shifted = [padded[:, :, r, s] for r in rows for s in cols]  # kH * kW slices, each (N, C, H_out, W_out)
    stacked = xp.stack(shifted, axis=2) if len(shifted) > 1 else xp.expand_dims(shifted[0], axis=2)
    return xp.reshape(stacked, (n, c * len(shifted), -1))  # (N, C * kH * kW, H_out * W_out)


def _add_columns_back(grad_columns, padded_shape, rows, cols, out_hw):
    """col2im, the adjoint of _columns: every tap's slice of gradient is added back where it was read.

    Overlapping taps (stride < kernel) read the same input pixel several
    times; their gradients add up, one slice at a time.
    """
    n, c = padded_shape[:2]
    taps = len(rows) * len(cols)
    per_tap = xp.reshape(grad_columns, (n, c, taps) + out_hw)  # (N, C, kH * kW, H_out, W_out)
    grad = xp.zeros(padded_shape, dtype=grad_columns.dtype)
    k = 0
    for r in rows:
        for s in cols:
            grad[:, :, r, s] += per_tap[:, :, k, ...]
            k += 1
    return grad


def _pad(x, padding):
    """Zero padding of the last two axes: (N, C, H, W) -> (N, C, H + 2 p_h, W + 2 p_w)."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def _geometry(x_shape, w_shape, stride, padding):
    """((s_h, s_w), (p_h, p_w), (H_out, W_out)) of a convolution; ValueError for shapes that do not fit."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d: x must be (N, C_in, H, W) and weight (C_out, C_in, kH, kW), "
                         f"got shapes {tuple(x_shape)} and {tuple(w_shape)}")
    (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
    _, c_in, h, w = x_shape
    _, w_c_in, kh, kw = w_shape
    if w_c_in != c_in:
        raise ValueError(f"conv2d: x has {c_in} channels, and weight expects {w_c_in}")
    ho, wo = (h + 2 * ph - kh) // max(sh, 1) + 1, (w + 2 * pw - kw) // max(sw, 1) + 1
    if ho < 1 or wo < 1 or sh < 1 or sw < 1 or ph < 0 or pw < 0:
        raise ValueError(f"conv2d: a {kh}x{kw} kernel with stride {stride} and padding {padding} does not fit "
                         f"a {h}x{w} input")
    return (sh, sw), (ph, pw), (ho, wo)


# The batch is convolved a few images at a time, so that each slice's columns (below) stay in a core's cache.
CACHE_BYTES = 2**21


def batch_slices(n, bytes_per_image):
    """Slices of a batch of n whose columns take about CACHE_BYTES each; the whole batch on a GPU."""
    if B.get_backend() == "cupy":  # a GPU wants one large product, not many small ones
        return [slice(0, n)]
    size = max(1, CACHE_BYTES // max(1, bytes_per_image))
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@op
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution with PyTorch's arguments and semantics (torch.nn.functional.conv2d).

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None;
    stride and padding an int or a pair; zero padding. Like every deep
    learning library it computes the cross-correlation

        out[n, o, y, x] = b[o] + sum_{c, i, j} W[o, c, i, j] * x_p[n, c, y s + i, x s + j],

    with x_p the zero-padded input, of shape (N, C_out, H_out, W_out),
    H_out = (H + 2 p - kH) // s + 1.

    How: im2col. Each of the kH * kW kernel taps (i, j) reads a strided slice
    of x_p; the slices are stacked into a matrix of columns X_col
    (N, C_in kH kW, H_out W_out), and the sum above becomes one matrix
    product out = W_mat @ X_col with W_mat = W reshaped to (C_out, C_in kH kW).
    The VJP is the product rule of that matmul, d W_mat = sum_n g_n X_col_n^T
    and d X_col = W_mat^T g, with d X_col added back slice by slice into the
    padded input's gradient (col2im) and the padding cut off.

    Why this form: only slicing, stack, reshape and matmul, all in the array
    API standard, so the same lines run on NumPy, CuPy and array_api_strict,
    and the heavy work is a BLAS (or cuBLAS) matrix product. Its cost is
    memory: X_col holds every input pixel kH * kW times (9x for a 3x3 kernel
    at stride 1): 58 MB for a 3x3 convolution of 64 images of 32 channels at
    28 x 28. So on the CPU the batch goes through a few images at a time
    (``batch_slices``), each slice's columns (about 2 MB) built, multiplied
    and dropped while still in cache, and the backward pass builds them again
    from x instead of keeping them: only x is kept. Measured on the 2 shared
    cores (least CPU time, one BLAS thread; the machine busy, then quiet),
    forward and backward of a 3x3 convolution at batch 64, whole batch ->
    slices: 16 -> 16 channels at 28 x 28, 45 -> 35 and 29 -> 26 ms; 48 -> 16
    channels, 164 -> 89 and 124 -> 66 ms (``python benchmarks/conv.py
    --slices``); a whole training step of the MNIST U-Net, 1.22 -> 0.93 and
    0.93 -> 0.78 s. On a GPU it is one product.
    """
    x_data, w_data = unwrap(x), unwrap(weight)
    (sh, sw), (ph, pw), (ho, wo) = _geometry(x_data.shape, w_data.shape, stride, padding)
    n, c_in, h, w = x_data.shape
    c_out, _, kh, kw = w_data.shape
    rows, cols = _taps(kh, sh, ho), _taps(kw, sw, wo)
    w_matrix = xp.reshape(w_data, (c_out, c_in * kh * kw))
    slices = batch_slices(n, c_in * kh * kw * ho * wo * 4)

    def columns(part):  # X_col of the images in the slice part: (n_part, C_in kH kW, H_out W_out)
        return _columns(_pad(x_data[part, ...], (ph, pw)), rows, cols)

    out = xp.empty((n, c_out, ho * wo), dtype=x_data.dtype)
    for part in slices:
        out[part, ...] = w_matrix @ columns(part)  # (n_part, C_out, H_out W_out)
    if bias is not None:
        out += xp.reshape(unwrap(bias), (c_out, 1))  # in place: out is this op's own fresh array
    out = xp.reshape(out, (n, c_out, ho, wo))

    def vjp(g):
        g_rows = xp.reshape(g, (n, c_out, ho * wo))  # (N, C_out, H_out W_out)
        grad_w_matrix = grad_x = None
        if needs_grad(x):
            grad_x = xp.empty(tuple(x_data.shape), dtype=g.dtype)
        for part in slices:
            if needs_grad(weight):  # d W_mat = sum_n g_n X_col_n^T
                grad_part = xp.sum(g_rows[part, ...] @ matrix_transpose(columns(part)), axis=0)
                grad_w_matrix = grad_part if grad_w_matrix is None else grad_w_matrix + grad_part
            if needs_grad(x):  # d X_col = W_mat^T g, added back where each tap read it
                grad_columns = matrix_transpose(w_matrix) @ g_rows[part, ...]
                shape = (grad_columns.shape[0], c_in, h + 2 * ph, w + 2 * pw)
                grad_x[part, ...] = _add_columns_back(grad_columns, shape, rows, cols, (ho, wo))[:, :, ph:ph + h,
                                                                                                 pw:pw + w]
        grad_w = None if grad_w_matrix is None else xp.reshape(grad_w_matrix, tuple(w_data.shape))
        grad_b = xp.sum(g, axis=(0, 2, 3)) if needs_grad(bias) else None
        return (grad_x, grad_w, grad_b)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return record(out, parents, vjp, "conv2d")


@op
def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor (F.interpolate, mode="nearest").

    out[n, c, y, x] = x[n, c, y // f, x // f]: every pixel becomes an f x f
    block, written as a broadcast of a length-1 axis after each spatial axis.
    The VJP sums the gradient over each block.
    """
    x_data = unwrap(x)
    f = scale_factor
    if not isinstance(f, int) or isinstance(f, bool) or f < 1 or x_data.ndim != 4:
        raise ValueError(f"upsample_nearest: needs (N, C, H, W) and an integer factor >= 1, got shape "
                         f"{tuple(x_data.shape)} and factor {f!r}")
    n, c, h, w = x_data.shape
    blocks = xp.broadcast_to(xp.reshape(x_data, (n, c, h, 1, w, 1)), (n, c, h, f, w, f))
    out = xp.reshape(blocks, (n, c, h * f, w * f))

    def vjp(g):
        return (xp.sum(xp.reshape(g, (n, c, h, f, w, f)), axis=(3, 5)),)

    return record(out, (x,), vjp, "upsample_nearest")
