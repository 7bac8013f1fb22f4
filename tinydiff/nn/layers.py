"""Layers: Linear, LayerNorm, Embedding, activations, the timestep and class embeddings, cross-entropy."""

from __future__ import annotations

import math

from .. import autograd as A
from .. import backend as B
from ..autograd import Tensor, unwrap
from ..backend import xp
from .module import Module, Parameter


def rng_or_default(rng):
    """``rng``, or a generator seeded 0 when None (layers initialise reproducibly by default)."""
    return B.default_rng(0) if rng is None else rng


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features).

    PyTorch's default initialisation: W and b uniform on
    [-1/sqrt(in_features), 1/sqrt(in_features)] (Kaiming-uniform with a = sqrt(5)).
    ``zero_init`` starts W and b at zero (used for the last layer of a
    residual denoiser, so it starts as the identity).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, zero_init=False):
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear: in_features and out_features must be >= 1, got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        rng = rng_or_default(rng)
        bound = 1.0 / math.sqrt(in_features)
        if zero_init:
            self.weight = Parameter(xp.zeros((out_features, in_features), dtype=B.default_dtype()))
            self.bias = Parameter(xp.zeros((out_features,), dtype=B.default_dtype())) if bias else None
        else:
            self.weight = Parameter(rng.uniform((out_features, in_features), -bound, bound))
            self.bias = Parameter(rng.uniform((out_features,), -bound, bound)) if bias else None

    def forward(self, x):
        return A.linear(x, self.weight, self.bias)


class LayerNorm(Module):
    """Normalise over the last axis, then a learned scale and shift (Ba et al. 2016)."""

    def __init__(self, features, eps=1e-5):
        self.eps = eps
        self.weight = Parameter(xp.ones((features,), dtype=B.default_dtype()))
        self.bias = Parameter(xp.zeros((features,), dtype=B.default_dtype()))

    def forward(self, x):
        return A.layer_norm(x, self.weight, self.bias, self.eps)


class Embedding(Module):
    """A table of learned vectors looked up by integer index (class embeddings)."""

    def __init__(self, num_embeddings, dim, rng=None):
        self.weight = Parameter(rng_or_default(rng).normal((num_embeddings, dim)))

    def forward(self, indices):
        return A.take_rows(self.weight, indices)


ACTIVATIONS = {
    "gelu": A.gelu,
    "silu": A.silu,
    "relu": A.relu,
    "tanh": A.tanh,
    "softplus": A.softplus,
}


def activation(name):
    """The activation function called ``name`` (gelu, silu, relu, tanh, softplus)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}") from None


def timestep_embedding(t, dim, max_period=10000.0):
    """The sinusoidal position embedding of Vaswani et al. 2017 that DDPM uses for t (Sec. 4).

    emb[:, i] = sin(t * w_i) and emb[:, half + i] = cos(t * w_i) with
    w_i = max_period^(-i / half): wavelengths from 2 pi to max_period * 2 pi,
    so nearby timesteps get similar vectors and distant ones different.
    t: integer array (N,), 0-indexed. Returns a float32 array (N, dim).
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"timestep_embedding: dim must be an even number >= 2, got {dim}")
    half = dim // 2
    dtype = B.default_dtype()
    frequencies = xp.exp(xp.arange(half, dtype=dtype) * (-math.log(max_period) / half))
    angles = xp.reshape(xp.astype(t, dtype), (-1, 1)) * frequencies  # (N, half)
    return xp.concat([xp.sin(angles), xp.cos(angles)], axis=1)


class TimestepEmbedding:
    """timestep_embedding(t, dim) looked up in a table built once for t = 0..T-1.

    The sinusoids depend on t alone, so computing them for every row of
    every batch repeats work: a sampler asks for the same t in all 10,000
    rows of a step. A row gather from the (T, dim) table costs a fraction
    of the sines and cosines. Not a parameter: nothing is learned or saved.
    Timesteps outside 0..num_timesteps-1, float t, and the GPU (where
    sines cost nothing and a range check would be a sync) compute directly.
    """

    def __init__(self, dim, num_timesteps=1000):
        self.dim, self.num_timesteps = dim, num_timesteps
        self.table = None

    def __call__(self, t):
        if t.dtype not in (xp.int64, xp.int32) or B.get_backend() == "cupy":
            # On a GPU the sinusoids cost nothing, and a range check would be a sync.
            return timestep_embedding(t, self.dim)
        if self.table is None:
            self.table = timestep_embedding(xp.arange(self.num_timesteps, dtype=xp.int64), self.dim)  # (T, dim)
        if int(xp.min(t)) < 0 or int(xp.max(t)) >= self.num_timesteps:
            return timestep_embedding(t, self.dim)  # outside the table: compute them
        return xp.take(self.table, t, axis=0)  # (N, dim)



class ClassConditioning(Module):
    """A class embedding with a learned null class, added to the timestep embedding.

    Ho and Salimans 2022 (classifier-free guidance): one network learns both
    eps(x, c) and eps(x, null). The null class is index ``num_classes``;
    y = None means "no label" (the null class for every example). Dropping
    labels to the null class while training is the training loop's job
    (``drop_labels``), so the model holds no random state.
    """

    def __init__(self, num_classes, dim, rng=None):
        self.num_classes = num_classes
        self.table = Embedding(num_classes + 1, dim, rng=rng)

    def forward(self, y, n):
        if y is None:
            y = xp.full((n,), self.num_classes, dtype=xp.int64)
        else:
            y = xp.reshape(xp.astype(B.asarray(unwrap(y)), xp.int64), (-1,))  # (one label for all rows: (1,))
            # Labels 0..num_classes-1, and num_classes for "no label". (Not checked on a GPU: a sync per call.)
            if B.get_backend() != "cupy" and y.shape[0] and (int(xp.min(y)) < 0 or int(xp.max(y)) > self.num_classes):
                raise ValueError(f"class labels must be in 0..{self.num_classes - 1} (or {self.num_classes}, "
                                 f"the null class), got values from {int(xp.min(y))} to {int(xp.max(y))}")
        return self.table(y)



def cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer labels under softmax(logits).

    -mean_i log softmax(logits_i)[labels_i], written as a sum against a
    one-hot matrix so the gradient flows through log_softmax.
    """
    logits = logits if isinstance(logits, Tensor) else Tensor(logits)
    n, classes = logits.shape
    labels = B.asarray(unwrap(labels))
    one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.arange(classes, dtype=labels.dtype), logits.dtype)
    return -(A.log_softmax(logits, axis=1) * one_hot).sum() * (1.0 / n)

