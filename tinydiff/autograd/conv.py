"""Convolution and nearest-neighbour upsampling on NCHW arrays, each with its VJP.

Both are written with array operations the array API standard has (slices,
stack, reshape, matmul), so numpy, cupy and array_api_strict all run them.
"""

from __future__ import annotations

from ..backend import xp
from .tensor import matrix_transpose, needs_grad, op, record, unwrap


def _pair(value, name):
    """An int or a pair of ints as a pair (PyTorch's stride=2 means (2, 2))."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


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


class _FlatPadded:
    """The zero-padded input with each image's rows laid end to end: x_p as (N, C, rows * W_f).

    W_f is the padded width W_p, rounded up to a multiple of the stride s_w
    with zero columns. In this layout the pixel x_p[c, y s_h + i, x s_w + j]
    that kernel tap (i, j) reads for output position (y, x) sits at flat index

        (y s_h + i) W_f + x s_w + j  =  (i W_f + j) + s_w (y R + x),   R = s_h W_f / s_w,

    so for every output position at once, tap (i, j) reads one slice of the
    flat rows: start i W_f + j, step s_w, length H_out R (``tap``). Output
    position (y, x) is column y R + x of that slice. A valid position never
    reads past its own row, since (W_out - 1) s_w + kW - 1 <= W_p - 1, and
    W_out <= R; the R - W_out columns after each output row's valid ones read
    the right padding, the next row or (s_h > 1) rows no output uses. They
    are computed and cut off (``output``) or, in the backward pass, given a
    zero gradient (``columns``). Extra zero rows below the image keep the
    last tap's slice inside the array.
    """

    def __init__(self, x_shape, w_shape, stride, padding, out_hw):
        (self.n, self.c, self.h, self.w), (_, _, self.kh, self.kw) = x_shape, w_shape
        (self.sh, self.sw), (self.ph, self.pw), (self.ho, self.wo) = stride, padding, out_hw
        self.row = -(-(self.w + 2 * self.pw) // self.sw) * self.sw  # W_f: W_p rounded up to a multiple of s_w
        self.per_row = self.sh * self.row // self.sw  # R: a tap's columns per output row, W_out of them valid
        self.length = self.ho * self.per_row  # H_out R columns per tap
        last = (self.kh - 1) * self.row + (self.kw - 1) + self.sw * (self.length - 1)  # the last index a tap reads
        self.rows = max(self.h + 2 * self.ph, last // self.row + 1)

    def pad(self, x):
        """x (N, C, H, W) -> (N, C, rows * W_f): zero padding, then each image's rows end to end."""
        padded = xp.zeros((self.n, self.c, self.rows, self.row), dtype=x.dtype)
        padded[:, :, self.ph:self.ph + self.h, self.pw:self.pw + self.w] = x
        return xp.reshape(padded, (self.n, self.c, self.rows * self.row))

    def unpad(self, flat):
        """The adjoint's last step: (N, C, rows * W_f) -> the (N, C, H, W) interior."""
        grid = xp.reshape(flat, (self.n, self.c, self.rows, self.row))
        return grid[:, :, self.ph:self.ph + self.h, self.pw:self.pw + self.w]

    def tap(self, i, j):
        """The slice of the flat rows that kernel tap (i, j) reads at every output position."""
        start = i * self.row + j
        return slice(start, start + self.sw * (self.length - 1) + 1, self.sw)

    def output(self, columns):
        """(N, C_out, H_out R) -> (N, C_out, H_out, W_out): the valid columns of each output row."""
        return xp.reshape(columns, (columns.shape[0], columns.shape[1], self.ho, self.per_row))[:, :, :, :self.wo]

    def columns(self, g):
        """The inverse of ``output`` for a gradient: (N, C_out, H_out, W_out) -> (N, C_out, H_out R), zeros past W_out."""
        grid = xp.zeros((g.shape[0], g.shape[1], self.ho, self.per_row), dtype=g.dtype)
        grid[:, :, :, :self.wo] = g
        return xp.reshape(grid, (g.shape[0], g.shape[1], self.length))


@op
def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution with PyTorch's arguments and semantics (torch.nn.functional.conv2d).

    x (N, C_in, H, W), weight (C_out, C_in, kH, kW), bias (C_out,) or None;
    stride and padding an int or a pair; zero padding. Like every deep
    learning library it computes the cross-correlation

        out[n, o, y, x] = b[o] + sum_{i, j} sum_c W[o, c, i, j] x_p[n, c, y s + i, x s + j],

    with x_p the zero-padded input; out has shape (N, C_out, H_out, W_out),
    H_out = (H + 2 p - kH) // s + 1.

    How: one matrix product per kernel tap. For a fixed tap (i, j) the inner
    sum over c is the matrix W[:, :, i, j] (C_out, C_in) times the input
    shifted by (i, j); with each padded image's rows laid end to end
    (``_FlatPadded``) that shifted input is a plain slice of the flat rows,
    a view, not a copy. So

        out = b + output( sum_{i, j} W[:, :, i, j] @ X_flat[:, :, tap(i, j)] ),

    and the VJP is the product rule of each term, with G = columns(g) the
    output's gradient in the same columns (zeros in those cut off):

        d W[:, :, i, j] = sum_n G_n @ X_flat_n[:, tap(i, j)]^T,
        d X_flat[:, :, tap(i, j)] += W[:, :, i, j]^T @ G.

    Why this form: only slicing, reshape and matmul, all in the array API
    standard, so the same lines run on NumPy, CuPy and array_api_strict, and
    the work is kH kW BLAS (or cuBLAS) products. Unlike im2col, which
    copies every input pixel kH kW times into a matrix of columns, nothing
    is gathered. Its price is the R - W_out columns past each output row,
    computed and thrown away: 2 of 30 at 28 x 28 with padding 1, about half
    at stride 2 (used only to downsample). Against im2col: the backward
    pass 1.3-1.7x faster (benchmarks/README.md, "conv.py").
    """
    x_data, w_data = unwrap(x), unwrap(weight)
    stride, padding, out_hw = _geometry(x_data.shape, w_data.shape, stride, padding)
    flat = _FlatPadded(tuple(x_data.shape), tuple(w_data.shape), stride, padding, out_hw)
    taps = [(i, j) for i in range(flat.kh) for j in range(flat.kw)]
    x_flat = flat.pad(x_data)  # (N, C_in, rows W_f)

    out_columns = sum(w_data[:, :, i, j] @ x_flat[:, :, flat.tap(i, j)] for i, j in taps)  # (N, C_out, H_out R)
    out = flat.output(out_columns)
    if bias is not None:
        out = out + xp.reshape(unwrap(bias), (-1, 1, 1))
    else:
        out = xp.astype(out, out.dtype, copy=True)  # contiguous, like every other op's result

    def vjp(g):
        g_columns = flat.columns(g)  # (N, C_out, H_out R), zeros in the columns thrown away
        grad_x = grad_w = grad_b = None
        if needs_grad(x):
            grad_x_flat = xp.zeros(tuple(x_flat.shape), dtype=g.dtype)
            for i, j in taps:
                grad_x_flat[:, :, flat.tap(i, j)] += matrix_transpose(w_data[:, :, i, j]) @ g_columns
            grad_x = xp.astype(flat.unpad(grad_x_flat), g.dtype, copy=True)  # its own array, not a view
        if needs_grad(weight):
            per_tap = [xp.sum(g_columns @ matrix_transpose(x_flat[:, :, flat.tap(i, j)]), axis=0) for i, j in taps]
            grad_w = xp.reshape(xp.stack(per_tap, axis=-1), tuple(w_data.shape))  # (C_out, C_in, kH kW) -> W's shape
        if needs_grad(bias):
            grad_b = xp.sum(g, axis=(0, 2, 3))
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
