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

    tensor.py       Tensor, record (how an op joins the graph), backward, no_grad, unbroadcast
    elementwise.py  + - * / ** @, exp, log, sqrt, sin, cos, tanh, sigmoid, relu, gelu, silu, softplus
    reductions.py   sum, mean, max, logsumexp, softmax, log_softmax
    shape.py        reshape, transpose, indexing, take_rows, concatenate, stack
    layers.py       fused layers: linear, layer_norm, mse
    conv.py         conv2d (one matmul per kernel tap), upsample_nearest, on NCHW arrays
    normalization.py  group_norm, dropout
    attention.py    scaled_dot_product_attention
"""

from .attention import attention_weights, scaled_dot_product_attention
from .conv import conv2d, upsample_nearest
from .elementwise import (
    add, cos, div, exp, gelu, log, matmul, mul, neg, power, relu, sigmoid, silu, sin, softplus, sqrt,
    stable_sigmoid, sub, tanh,
)
from .layers import layer_norm, linear, mse
from .normalization import dropout, group_norm
from .reductions import log_softmax, logsumexp, max, mean, softmax, sum
from .shape import concatenate, getitem, reshape, stack, take_rows, transpose
from .tensor import OPS, Tensor, is_grad_enabled, matrix_transpose, needs_grad, no_grad, op, record, unbroadcast, unwrap

__all__ = [
    "attention_weights", "conv2d", "dropout", "group_norm", "scaled_dot_product_attention", "upsample_nearest",
    "OPS", "Tensor", "add", "concatenate", "cos", "div", "exp", "gelu", "getitem", "is_grad_enabled", "layer_norm",
    "linear", "log", "log_softmax", "logsumexp", "matmul", "matrix_transpose", "max", "mean", "mse", "mul",
    "needs_grad", "neg", "no_grad", "op", "power", "record", "relu", "reshape", "sigmoid", "silu", "sin", "softmax",
    "softplus", "sqrt", "stable_sigmoid", "stack", "sub", "sum", "take_rows", "tanh", "transpose", "unbroadcast",
    "unwrap",
]
