"""The U-Net's operations: conv2d, group_norm, upsample_nearest, scaled_dot_product_attention, dropout.

Each is checked against an independent computation written with loops or
plain NumPy (a direct loop for the convolution), and by gradient checks in
float64 over a grid of shapes. ``OP_CASES`` holds those gradient-check
grids; tests/test_autograd.py runs them with every other op of OPS.
"""

import numpy as np
import pytest

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff.autograd import Tensor
from tinydiff.gradcheck import gradcheck
from conftest import as_f64, host


def rand(shape, seed=0, low=-1.0, high=1.0):
    return as_f64(np.random.default_rng(seed).uniform(low, high, size=shape))


def conv2d_by_loops(x, w, b=None, stride=(1, 1), padding=(0, 0)):
    """The definition, one output element at a time: out[n,o,y,x] = b[o] + sum W[o,c,i,j] x_p[n,c,y s+i,x s+j]."""
    n, c, h, width = x.shape
    c_out, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    padded = np.zeros((n, c, h + 2 * ph, width + 2 * pw))
    padded[:, :, ph:ph + h, pw:pw + width] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c_out, ho, wo))
    for i in range(n):
        for o in range(c_out):
            for y in range(ho):
                for z in range(wo):
                    patch = padded[i, :, y * sh:y * sh + kh, z * sw:z * sw + kw]
                    out[i, o, y, z] = np.sum(patch * w[o]) + (b[o] if b is not None else 0.0)
    return out


# (x shape, weight shape, stride, padding, bias)
CONV_GRID = [
    ((2, 3, 5, 4), (2, 3, 3, 3), 1, 0, True),
    ((1, 2, 5, 5), (3, 2, 3, 3), 1, 1, True),
    ((2, 2, 6, 6), (2, 2, 3, 3), 2, 1, False),
    ((1, 3, 4, 3), (2, 3, 1, 1), 1, 0, True),
    ((1, 1, 6, 5), (2, 1, 2, 3), (2, 1), (1, 0), True),
    ((1, 2, 3, 3), (1, 2, 3, 3), 1, 2, False),
    ((1, 1, 5, 7), (1, 1, 2, 2), (1, 3), (0, 1), True),  # s_w > s_h, and W_p not a multiple of s_w
    ((1, 2, 7, 5), (2, 2, 3, 3), 3, 1, True),
]


def _pair(v):
    return (v, v) if isinstance(v, int) else v


@pytest.mark.parametrize("x_shape,w_shape,stride,padding,bias", CONV_GRID)
def test_conv2d_matches_the_loop_definition(backend, x_shape, w_shape, stride, padding, bias):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=x_shape), rng.normal(size=w_shape)
    b = rng.normal(size=w_shape[0]) if bias else None
    out = A.conv2d(as_f64(x), as_f64(w), as_f64(b) if bias else None, stride=stride, padding=padding)
    expected = conv2d_by_loops(x, w, b, _pair(stride), _pair(padding))
    assert out.shape == expected.shape
    assert np.allclose(host(out), expected, atol=1e-12)


def test_conv2d_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="channels"):
        A.conv2d(np.zeros((1, 2, 4, 4)), np.zeros((3, 1, 3, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        A.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ValueError, match="stride"):
        A.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), stride=(1, 2, 3))


def group_norm_by_hand(x, groups, weight, bias, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    normalised = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)).reshape(x.shape)
    return normalised * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)


def test_group_norm_matches_numpy_and_its_extremes(backend):
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(2, 6, 3, 4)) * 3 + 1, rng.normal(size=6), rng.normal(size=6)
    for groups in (1, 2, 3, 6):
        out = A.group_norm(as_f64(x), groups, as_f64(w), as_f64(b))
        assert np.allclose(host(out), group_norm_by_hand(x, groups, w, b), atol=1e-12)
    # G = 1 is LayerNorm over (C, H, W); G = C is InstanceNorm (Wu and He 2018, Fig. 2)
    by_layer_norm = A.layer_norm(as_f64(x.reshape(2, -1))).numpy().reshape(x.shape)
    assert np.allclose(host(A.group_norm(as_f64(x), 1)), by_layer_norm, atol=1e-12)
    with pytest.raises(ValueError, match="divide"):
        A.group_norm(as_f64(x), 4)


def test_upsample_nearest_repeats_each_pixel(backend):
    x = np.arange(2 * 3 * 2 * 3, dtype=np.float64).reshape(2, 3, 2, 3)
    out = host(A.upsample_nearest(as_f64(x), 2))
    assert np.array_equal(out, x.repeat(2, axis=2).repeat(2, axis=3))
    assert np.array_equal(host(A.upsample_nearest(as_f64(x), 3)), x.repeat(3, axis=2).repeat(3, axis=3))


def test_attention_matches_softmax_by_hand(backend):
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 6, 4)), rng.normal(size=(2, 6, 3))
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(4)
    p = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
    out = A.scaled_dot_product_attention(as_f64(q), as_f64(k), as_f64(v))
    assert np.allclose(host(out), p @ v, atol=1e-12)
    assert np.allclose(host(A.attention_weights(as_f64(q), as_f64(k))), p, atol=1e-12)


def test_dropout_train_and_eval(backend):
    x = as_f64(np.ones((200, 50)))
    assert A.dropout(x, 0.3, training=False) is x  # eval: the identity
    out = host(A.dropout(x, 0.3, training=True, rng=B.default_rng(0)))
    kept = out != 0
    assert np.allclose(out[kept], 1 / 0.7)  # kept elements scaled by 1 / (1 - p)
    assert abs(kept.mean() - 0.7) < 0.02 and abs(out.mean() - 1.0) < 0.03  # E[out] = x
    same = host(A.dropout(x, 0.3, training=True, rng=B.default_rng(0)))
    assert np.array_equal(out, same)  # the mask comes from the generator alone
    assert np.all(host(A.dropout(x, 1.0, training=True, rng=B.default_rng(0))) == 0)
    with pytest.raises(ValueError, match="rng"):
        A.dropout(x, 0.3, training=True)
    with pytest.raises(ValueError, match="probability"):
        A.dropout(x, 1.5)


def test_float32_stays_float32(backend):
    f32 = B.dtype("float32")

    def leaf(shape, seed):
        return Tensor(B.asarray(np.random.default_rng(seed).normal(size=shape), dtype=f32), requires_grad=True)

    x, w, b = leaf((2, 4, 6, 6), 0), leaf((4, 4, 3, 3), 1), leaf((4,), 2)
    outputs = [A.conv2d(x, w, b, padding=1), A.group_norm(x, 2, b, b), A.upsample_nearest(x),
               A.scaled_dot_product_attention(leaf((2, 5, 3), 3), leaf((2, 5, 3), 4), leaf((2, 5, 3), 5)),
               A.dropout(x, 0.5, rng=B.default_rng(0))]
    for out in outputs:
        assert out.dtype == f32
        out.sum().backward()
    assert x.grad.dtype == f32 and w.grad.dtype == f32 and b.grad.dtype == f32


# -- gradient checks over a grid of shapes (run by tests/test_autograd.py for every op of OPS) -----------


def _conv_cases():
    cases = []
    for i, (xs, ws, stride, padding, bias) in enumerate(CONV_GRID):
        arrays = [rand(xs, i), rand(ws, i + 10)] + ([rand((ws[0],), i + 20)] if bias else [])

        def fn(*t, stride=stride, padding=padding):
            return A.conv2d(*t, stride=stride, padding=padding)

        cases.append((fn, arrays))
    return cases


def _group_norm_cases():
    scale = as_f64(np.arange(1.0, 25.0).reshape(1, 6, 2, 2))  # weight the outputs so the sum is not constant
    return [
        (lambda x, w, b: A.group_norm(x, 2, w, b), [rand((2, 6, 2, 2), 1), rand((6,), 2), rand((6,), 3)]),
        (lambda x: A.group_norm(x, 3) * scale, [rand((1, 6, 2, 2), 4)]),
        (lambda x, w, b: A.group_norm(x, 1, w, b), [rand((2, 3, 5), 5), rand((3,), 6), rand((3,), 7)]),
    ]


def _attention_cases():
    return [
        (A.scaled_dot_product_attention, [rand((2, 3, 4), 1), rand((2, 5, 4), 2), rand((2, 5, 2), 3)]),
        (lambda q, k, v: A.scaled_dot_product_attention(q, k, v, scale=0.7),
         [rand((4, 3), 4), rand((4, 3), 5), rand((4, 3), 6)]),
    ]


def _dropout_cases():
    def fixed_mask(p):
        return lambda x: A.dropout(x, p, training=True, rng=B.default_rng(7))  # one mask for every call

    return [(fixed_mask(0.4), [rand((3, 4), 1)]), (fixed_mask(0.1), [rand((2, 2, 3), 2)])]


OP_CASES = {
    "conv2d": _conv_cases,
    "group_norm": _group_norm_cases,
    "upsample_nearest": lambda: [(lambda x: A.upsample_nearest(x, 2), [rand((2, 2, 2, 3), 1)]),
                                 (lambda x: A.upsample_nearest(x, 3), [rand((1, 1, 2, 2), 2)])],
    "scaled_dot_product_attention": _attention_cases,
    "dropout": _dropout_cases,
}


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_gradcheck_grid(name):
    """The same grids as tests/test_autograd.py, on NumPy alone (so this file stands by itself)."""
    for fn, arrays in OP_CASES[name]():
        assert gradcheck(fn, [Tensor(a) for a in arrays])


def test_conv2d_gradcheck_catches_a_gradient_lost_in_the_backward_pass(monkeypatch):
    """Drop the gradient of one input pixel as the padded gradient is cut back to the image: the check must fail."""
    from tinydiff.autograd import conv

    original = conv._FlatPadded.unpad

    def lossy(self, flat):
        grad = np.array(original(self, flat))
        grad[:, 0, 1, 1] = 0.0  # channel 0, pixel (1, 1): read by all nine taps
        return grad

    x, w = Tensor(rand((1, 1, 4, 4), 1)), Tensor(rand((1, 1, 3, 3), 2))
    assert gradcheck(lambda a, b: A.conv2d(a, b, padding=1), [x, w])
    monkeypatch.setattr(conv._FlatPadded, "unpad", lossy)
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(lambda a, b: A.conv2d(a, b, padding=1), [x, w])


def test_the_benchmark_s_hand_written_convolution_agrees_with_conv2d():
    """benchmarks/conv.py times conv2d against a convolution written by hand in NumPy: the two compute the same."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "conv.py"
    spec = importlib.util.spec_from_file_location("conv_benchmark_under_test", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.check(2, 3, 4, 6, {"tinydiff": bench.tinydiff_conv})
    wrong = {"off": lambda *a: (lambda r: (r[0] * 1.01,) + r[1:])(bench.hand_conv(*a))}
    assert not bench.check(2, 3, 4, 6, wrong)  # the check can fail
