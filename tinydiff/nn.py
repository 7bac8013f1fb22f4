"""Neural-network building blocks and the two denoisers, with PyTorch's interfaces.

``Module`` finds its parameters by walking its attributes (Parameters,
sub-Modules, and lists of Modules), so a model is plain Python:

    class Net(Module):
        def __init__(self):
            self.hidden = Linear(2, 64)
            self.out = Linear(64, 2)

The denoisers eps_theta(x_t, t) of the paper are generic networks called as
``model(x, t)`` with a batch x of shape (N, D) and integer timesteps t of
shape (N,), 0-indexed (code t = paper t - 1), or one int for every row (a
sampler's step). They know nothing else about diffusion.
"""

from __future__ import annotations

import math

from . import autograd as A
from . import backend as B
from .autograd import Tensor
from .backend import xp
from .steps import timestep_rows

# ---------------------------------------------------------------------------
# Module and Parameter
# ---------------------------------------------------------------------------


class Parameter(Tensor):
    """A Tensor that a Module owns and an optimizer updates (requires_grad=True)."""

    __slots__ = ()

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class: parameters, train/eval mode, state dicts, as in PyTorch."""

    training = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def named_children(self):
        """(name, module) for each direct sub-module, lists flattened as name.0, name.1."""
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix=""):
        """(dotted name, Parameter) for every parameter, in definition order."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        """All parameters as a list (what an optimizer takes)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def train(self, mode=True):
        """Set training mode (kept for PyTorch familiarity; no layer here behaves differently)."""
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Forget the gradients of the last backward pass."""
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """{dotted name: array} of every parameter (the arrays, not copies)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state):
        """Copy arrays into the parameters; refuse missing, extra or mis-shaped entries."""
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        extra = sorted(set(state) - set(own))
        wrong = sorted(
            f"{name} (expected {own[name].shape}, got {tuple(state[name].shape)})"
            for name in set(own) & set(state)
            if tuple(state[name].shape) != own[name].shape
        )
        problems = []
        if missing:
            problems.append("missing: " + ", ".join(missing))
        if extra:
            problems.append("unexpected: " + ", ".join(extra))
        if wrong:
            problems.append("wrong shape: " + ", ".join(wrong))
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        for name, p in own.items():
            value = B.asarray(state[name], dtype=p.dtype)
            # Write into the existing array: an optimizer may hold views of it.
            p.data[...] = value
        return self


class Sequential(Module):
    """Modules applied one after another."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


def _rng(rng):
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
        rng = _rng(rng)
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
        self.weight = Parameter(_rng(rng).normal((num_embeddings, dim)))

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


def _check_extra(extra, n, dim):
    if extra is None:
        raise ValueError(f"this denoiser was built with extra_dim={dim}: call it as model(x, t, extra=...)")
    if tuple(extra.shape) != (n, dim):
        raise ValueError(f"extra must have shape (N, extra_dim) = ({n}, {dim}), got {tuple(extra.shape)}")
    return extra


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


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
            y = xp.astype(y.data if isinstance(y, Tensor) else B.asarray(y), xp.int64)
        return self.table(y)


class MLPDenoiser(Module):
    """The 2-D default denoiser: [x, emb(t)] -> (Linear, act) x depth -> Linear.

    eps_theta(x_t, t) of Eq. 11 for low-dimensional data: the sinusoidal
    timestep embedding is concatenated with x and passed through ``depth``
    hidden layers of ``width`` units. Defaults: embedding 128, 3 hidden
    layers of 128, GELU. With num_classes, a class embedding is added to the
    timestep embedding (classifier-free guidance).

    ``t`` is an (N,) integer array or one int for every row; the samplers
    pass the int (``accepts_scalar_t``). A subclass whose forward needs an
    array should set ``accepts_scalar_t = False``.
    """

    def __init__(self, data_dim=2, width=128, depth=3, emb_dim=128, activation_name="gelu",
                 num_classes=None, extra_dim=None, num_timesteps=1000, rng=None):
        if depth < 1:
            raise ValueError(f"MLPDenoiser: depth must be >= 1, got {depth}")
        rng = _rng(rng)
        self.data_dim, self.emb_dim = data_dim, emb_dim
        self.embed_t = TimestepEmbedding(emb_dim, num_timesteps)
        self.act = activation(activation_name)
        self.activation_name = activation_name
        self.extra_dim = extra_dim  # an extra input concatenated to x (a low-resolution image, say)
        first = data_dim + emb_dim + (extra_dim or 0)
        self.hidden = [Linear(first if i == 0 else width, width, rng=rng) for i in range(depth)]
        self.out = Linear(width, data_dim, rng=rng)
        self.num_classes = num_classes
        self.classes = ClassConditioning(num_classes, emb_dim, rng=rng) if num_classes else None

    accepts_scalar_t = True  # a sampler may pass one int t for the whole batch (see steps.timestep_rows)

    def forward(self, x, t, y=None, extra=None):
        x = _as_tensor(x)
        n = x.shape[0]
        emb = Tensor(self.embed_t(timestep_rows(t, n)))  # (N, emb_dim), or (1, emb_dim) for one int t
        if self.classes is not None:
            emb = emb + self.classes(y, emb.shape[0] if y is None else n)
        extra = _as_tensor(_check_extra(extra, n, self.extra_dim)) if self.extra_dim else None
        first = self.hidden[0]
        if emb.shape[0] == n:
            inputs = [x, emb] if extra is None else [x, emb, extra]
            h = first(A.concatenate(inputs, axis=1))  # (N, D + emb_dim [+ extra_dim])
        else:
            # One embedding row for the whole batch (a sampler's step). The first
            # layer's product splits by its input columns:
            #   [x, emb, extra] W^T + b = x W_x^T + (emb W_emb^T + b) + extra W_extra^T,
            # and the middle term is one row, computed once and added as the bias
            # (at N = 10,000 this skips a third of the sampler's matrix work).
            d, e = self.data_dim, self.emb_dim
            row_bias = A.linear(emb, first.weight[:, d:d + e], first.bias)  # (1, width)
            h = A.linear(x, first.weight[:, :d], A.reshape(row_bias, (-1,)))
            if extra is not None:
                h = h + A.linear(extra, first.weight[:, d + e:])
        h = self.act(h)
        for layer in self.hidden[1:]:
            h = self.act(layer(h))
        return self.out(h)


class ResidualBlock(Module):
    """h + Linear(act(Linear(act(LayerNorm(h))) + proj(cond))).

    The conditioning vector (timestep, and class if any) enters every block
    through its own projection, so each block knows the noise level.
    """

    def __init__(self, width, cond_dim, activation_name="silu", norm=True, rng=None):
        self.act = activation(activation_name)
        self.norm = LayerNorm(width) if norm else None
        self.fc1 = Linear(width, width, rng=rng)
        self.cond = Linear(cond_dim, width, rng=rng)
        self.fc2 = Linear(width, width, rng=rng)

    def forward(self, h, cond):
        z = self.norm(h) if self.norm is not None else h
        z = self.fc1(self.act(z)) + self.cond(cond)
        return h + self.fc2(self.act(z))


class ResMLPDenoiser(Module):
    """The image default denoiser: a residual MLP on flattened images.

    x -> Linear(D, width) -> blocks x ResidualBlock(width) -> LayerNorm -> act
    -> Linear(width, D). The timestep embedding goes through a small MLP to a
    conditioning vector fed into every block. MNIST defaults: width 1024,
    2 blocks, SiLU, LayerNorm in the blocks.

    ``t`` is an (N,) integer array or one int for every row; the samplers
    pass the int (``accepts_scalar_t``). A subclass whose forward needs an
    array should set ``accepts_scalar_t = False``.
    """

    def __init__(self, data_dim=784, width=1024, blocks=2, emb_dim=128, cond_dim=256,
                 activation_name="silu", norm=True, num_classes=None, extra_dim=None, num_timesteps=1000,
                 rng=None):
        if blocks < 1:
            raise ValueError(f"ResMLPDenoiser: blocks must be >= 1, got {blocks}")
        rng = _rng(rng)
        self.data_dim, self.emb_dim = data_dim, emb_dim
        self.embed_t = TimestepEmbedding(emb_dim, num_timesteps)
        self.act = activation(activation_name)
        self.time_in = Linear(emb_dim, cond_dim, rng=rng)
        self.time_out = Linear(cond_dim, cond_dim, rng=rng)
        self.num_classes = num_classes
        self.classes = ClassConditioning(num_classes, cond_dim, rng=rng) if num_classes else None
        self.inp = Linear(data_dim, width, rng=rng)
        self.extra_dim = extra_dim  # e.g. the upsampled low-resolution image of super-resolution
        self.extra_in = Linear(extra_dim, width, bias=False, rng=rng) if extra_dim else None
        self.blocks = [ResidualBlock(width, cond_dim, activation_name, norm, rng=rng) for _ in range(blocks)]
        self.norm_out = LayerNorm(width) if norm else None
        self.out = Linear(width, data_dim, rng=rng)

    accepts_scalar_t = True  # a sampler may pass one int t for the whole batch (see steps.timestep_rows)

    def forward(self, x, t, y=None, extra=None):
        # With one int t the conditioning is one row, broadcast in the blocks.
        cond = self.time_out(self.act(self.time_in(Tensor(self.embed_t(timestep_rows(t, x.shape[0]))))))
        if self.classes is not None:
            cond = cond + self.classes(y, cond.shape[0] if y is None else x.shape[0])
        cond = self.act(cond)  # (N, cond_dim), or (1, cond_dim)
        h = self.inp(x)  # (N, width)
        if self.extra_in is not None:  # [x, extra] @ W^T, written as two products
            h = h + self.extra_in(_check_extra(extra, x.shape[0], self.extra_dim))
        for block in self.blocks:
            h = block(h, cond)
        if self.norm_out is not None:
            h = self.norm_out(h)
        return self.out(self.act(h))  # (N, D)


class MLP(Module):
    """A plain multilayer perceptron: (Linear, act) for each hidden size, then Linear.

    Used as the MNIST classifier that measures conditional samples; any
    vector-to-vector network.
    """

    def __init__(self, in_features, hidden_sizes, out_features, activation_name="relu", rng=None):
        rng = _rng(rng)
        self.act = activation(activation_name)
        self.activation_name = activation_name
        sizes = [in_features, *hidden_sizes]
        self.hidden = [Linear(a, b, rng=rng) for a, b in zip(sizes[:-1], sizes[1:])]
        self.out = Linear(sizes[-1], out_features, rng=rng)

    def forward(self, x):
        h = x
        for layer in self.hidden:
            h = self.act(layer(h))
        return self.out(h)


def cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer labels under softmax(logits).

    -mean_i log softmax(logits_i)[labels_i], written as a sum against a
    one-hot matrix so the gradient flows through log_softmax.
    """
    logits = _as_tensor(logits)
    n, classes = logits.shape
    labels = labels.data if isinstance(labels, Tensor) else B.asarray(labels)
    one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.arange(classes, dtype=labels.dtype), logits.dtype)
    return -(A.log_softmax(logits, axis=1) * one_hot).sum() * (1.0 / n)
