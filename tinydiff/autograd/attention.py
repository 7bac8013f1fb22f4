"""Scaled dot-product attention (Vaswani et al. 2017, Eq. 1), forward and VJP side by side."""

from __future__ import annotations

import math

from ..backend import xp
from .tensor import matrix_transpose, needs_grad, op, record, unwrap


@op
def scaled_dot_product_attention(query, key, value, scale=None):
    """softmax(Q K^T * scale) V, PyTorch's torch.nn.functional.scaled_dot_product_attention.

    query (..., L, E), key (..., S, E), value (..., S, E_v); scale defaults
    to 1 / sqrt(E) (Vaswani et al. 2017, Eq. 1). Returns (..., L, E_v): row l
    is the average of the values, weighted by how well query l matches each
    key. One node; with P = softmax(Q K^T * scale) the VJP is

        dV = P^T g,   dP = g V^T,   dS = P * (dP - sum_s(dP * P)),
        dQ = dS K * scale,   dK = dS^T Q * scale.

    P (..., L, S) is kept for the backward pass: 256 x 256 numbers per image
    for self-attention at 16 x 16.
    """
    q, k, v = unwrap(query), unwrap(key), unwrap(value)
    if q.ndim < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: needs query (..., L, E), key (..., S, E) and value "
                         f"(..., S, E_v), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    weights = attention_weights(q, k, scale)  # P (..., L, S), each row sums to 1
    out = weights @ v  # (..., L, E_v)

    def vjp(g):
        grad_v = matrix_transpose(weights) @ g if needs_grad(value) else None
        grad_q = grad_k = None
        if needs_grad(query) or needs_grad(key):
            grad_weights = g @ matrix_transpose(v)
            grad_scores = weights * (grad_weights - xp.sum(grad_weights * weights, axis=-1, keepdims=True))
            grad_q = (grad_scores @ k) * scale if needs_grad(query) else None
            grad_k = (matrix_transpose(grad_scores) @ q) * scale if needs_grad(key) else None
        return (grad_q, grad_k, grad_v)

    return record(out, (query, key, value), vjp, "scaled_dot_product_attention")


def attention_weights(query, key, scale=None):
    """The matrix P = softmax(Q K^T * scale) of scaled_dot_product_attention, (..., L, S), without a graph.

    For looking at what each position attends to (lesson 13).
    """
    q, k = unwrap(query), unwrap(key)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ matrix_transpose(k)) * scale  # (..., L, S)
    exps = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
    return exps / xp.sum(exps, axis=-1, keepdims=True)
