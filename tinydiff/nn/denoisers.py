"""The denoisers eps_theta(x_t, t): an MLP for 2-D data, a residual MLP for images; a plain MLP.

The denoisers are generic networks called as ``model(x, t)`` with a batch x
of shape (N, D) and timesteps t, 0-indexed (code t = paper t - 1): an (N,)
integer array, or one int for every row (a sampler's step). They know
nothing else about diffusion.
"""

from __future__ import annotations

from .. import autograd as A
from ..autograd import Tensor
from ..steps import timestep_rows
from .layers import ClassConditioning, LayerNorm, Linear, TimestepEmbedding, activation, rng_or_default
from .module import Module


def _check_extra(extra, n, dim):
    if extra is None:
        raise ValueError(f"this denoiser was built with extra_dim={dim}: call it as model(x, t, extra=...)")
    if tuple(extra.shape) != (n, dim):
        raise ValueError(f"extra must have shape (N, extra_dim) = ({n}, {dim}), got {tuple(extra.shape)}")
    return extra


def _as_tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)



class Denoiser(Module):
    """What the denoisers share: how t becomes an embedding, and the one-int-t contract.

    ``t`` is an (N,) integer array or one int for every row. The samplers
    pass the int to a model whose ``accepts_scalar_t`` is True; the
    embedding (and all conditioning computed from it) is then one row,
    broadcast over the batch, instead of N equal rows. A subclass whose
    forward needs an array sets ``accepts_scalar_t = False``.
    """

    accepts_scalar_t = True

    def check_labels(self, y):
        """Refuse labels given to a model trained without them (they would be silently ignored)."""
        if y is not None and getattr(self, "classes", None) is None:
            raise ValueError(f"{type(self).__name__} was built without num_classes, so it takes no labels y; "
                             "train with conditional=True (--conditional) to condition on a class")

    def embed_timesteps(self, t, n):
        """The sinusoidal embedding of t: (N, emb_dim), or (1, emb_dim) for one int t (steps.timestep_rows)."""
        return Tensor(self.embed_t(timestep_rows(t, n)))


class MLPDenoiser(Denoiser):
    """The 2-D default denoiser: [x, emb(t)] -> (Linear, act) x depth -> Linear.

    eps_theta(x_t, t) of Eq. 11 for low-dimensional data: the sinusoidal
    timestep embedding is concatenated with x and passed through ``depth``
    hidden layers of ``width`` units. Defaults: embedding 128, 3 hidden
    layers of 128, GELU. With num_classes, a class embedding is added to the
    timestep embedding (classifier-free guidance).
    """

    @staticmethod
    def parameter_count(data_dim=2, width=128, depth=3, emb_dim=128, num_classes=None, extra_dim=None):
        """The number of parameters __init__ makes, computed without making them (to check sizes first)."""
        first = data_dim + emb_dim + (extra_dim or 0)
        hidden = first * width + width + (depth - 1) * (width * width + width)
        classes = (num_classes + 1) * emb_dim if num_classes else 0
        return hidden + width * data_dim + data_dim + classes

    def __init__(self, data_dim=2, width=128, depth=3, emb_dim=128, activation_name="gelu",
                 num_classes=None, extra_dim=None, num_timesteps=1000, rng=None):
        if depth < 1:
            raise ValueError(f"MLPDenoiser: depth must be >= 1, got {depth}")
        rng = rng_or_default(rng)
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

    def forward(self, x, t, y=None, extra=None):
        x = _as_tensor(x)
        n = x.shape[0]
        emb = self.embed_timesteps(t, n)  # (N, emb_dim), or (1, emb_dim) for one int t
        self.check_labels(y)
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


class ResMLPDenoiser(Denoiser):
    """The image default denoiser: a residual MLP on flattened images.

    x -> Linear(D, width) -> blocks x ResidualBlock(width) -> LayerNorm -> act
    -> Linear(width, D). The timestep embedding goes through a small MLP to a
    conditioning vector fed into every block. MNIST defaults: width 1024,
    2 blocks, SiLU, LayerNorm in the blocks.
    """

    @staticmethod
    def parameter_count(data_dim=784, width=1024, blocks=2, emb_dim=128, cond_dim=256, norm=True,
                        num_classes=None, extra_dim=None):
        """The number of parameters __init__ makes, computed without making them (to check sizes first)."""
        norms = 2 * width if norm else 0
        time = emb_dim * cond_dim + cond_dim + cond_dim * cond_dim + cond_dim
        classes = (num_classes + 1) * cond_dim if num_classes else 0
        block = norms + 2 * (width * width + width) + cond_dim * width + width
        inputs = data_dim * width + width + (extra_dim or 0) * width
        return time + classes + inputs + blocks * block + norms + width * data_dim + data_dim

    def __init__(self, data_dim=784, width=1024, blocks=2, emb_dim=128, cond_dim=256,
                 activation_name="silu", norm=True, num_classes=None, extra_dim=None, num_timesteps=1000,
                 rng=None):
        if blocks < 1:
            raise ValueError(f"ResMLPDenoiser: blocks must be >= 1, got {blocks}")
        rng = rng_or_default(rng)
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

    def forward(self, x, t, y=None, extra=None):
        # With one int t the conditioning is one row, broadcast in the blocks.
        cond = self.time_out(self.act(self.time_in(self.embed_timesteps(t, x.shape[0]))))
        self.check_labels(y)
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
        rng = rng_or_default(rng)
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


