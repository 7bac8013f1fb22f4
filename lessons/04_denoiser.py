# %% [markdown]
# # Lesson 04: the denoiser network
#
# The reverse process needs one function, $\epsilon_\theta(x_t, t)$: given a
# noisy point and its step, predict the noise in it (Ho et al. 2020,
# Eq. 11). The paper uses a U-Net for images; for 2D points and small
# images an MLP is enough. Two things matter:
#
# - the network must know $t$, because the same $x_t$ means something very
#   different at $t = 10$ and at $t = 900$. DDPM feeds $t$ through the
#   sinusoidal position embedding of the Transformer (Sec. 4);
# - it is an ordinary network: linear layers and activations, trained by
#   the gradients of lesson 00.
#
# Run: `python lessons/04_denoiser.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import gradcheck as G
from tinydiff import nn, viz
from tinydiff.autograd import Tensor
from tinydiff.backend import xp

lesson = _lesson.Lesson("04_denoiser", "the denoiser: timestep embedding and the MLP")
f64 = B.dtype("float64")

# %% [markdown]
# ## Step 1: the sinusoidal timestep embedding
#
# $\mathrm{emb}(t)_i = \sin(t\,\omega_i)$ and $\mathrm{emb}(t)_{h+i} = \cos(t\,\omega_i)$
# for $i < h = \mathrm{dim}/2$, with frequencies $\omega_i = 10000^{-i/h}$:
# wavelengths from $2\pi$ to $10000 \cdot 2\pi$. Every $(\sin, \cos)$ pair
# has length 1, so every embedding has norm $\sqrt{h}$; nearby steps get
# similar vectors, distant ones different.

# %%
lesson.step(
    "the timestep embedding",
    paper=["emb(t)[i] = sin(t w_i), emb(t)[h + i] = cos(t w_i), w_i = 10000^(-i/h), h = dim/2",
           "(Vaswani et al. 2017 position embedding; DDPM Sec. 4)"],
    code="tinydiff.nn.timestep_embedding(t, dim)",
)
dim = 64
t = np.arange(0, 1000)
emb = B.to_numpy(nn.timestep_embedding(B.asarray(t), dim)).astype(np.float64)  # (1000, 64)
half = dim // 2
omega = 10000.0 ** (-np.arange(half) / half)
by_hand = np.concatenate([np.sin(t[:, None] * omega), np.cos(t[:, None] * omega)], axis=1)
lesson.value("embedding shape", str(emb.shape))
# float32 angles up to t w = 999 carry a rounding error of about 999 * 6e-8.
lesson.check_close("emb(t) for t = 0..999", emb, by_hand, atol=2e-4, against="sin/cos typed out")
lesson.check_close("norm of every emb(t)", np.linalg.norm(emb, axis=1), math.sqrt(half), rtol=1e-5,
                   against="sqrt(dim/2) =")


def cosine(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


near, far = cosine(emb[500], emb[501]), cosine(emb[500], emb[100])
lesson.value("cosine similarity t=500 with 501, with 100", f"{near:.4f}, {far:.4f}")
lesson.check_less("similarity to a distant step", far, "similarity to the next step", near)

# %% [markdown]
# ## Step 2: the MLP denoiser
#
# $[x, \mathrm{emb}(t)] \to (\mathrm{Linear}, \mathrm{GELU}) \times \mathrm{depth} \to \mathrm{Linear}$,
# output the shape of $x$. Its parameters can be counted by hand: the first
# layer takes $D + E$ inputs, the hidden ones $W$, the last returns $D$.

# %%
lesson.step(
    "the MLP and its parameters",
    paper="eps_theta(x_t, t) = Linear(act(... act(Linear([x_t, emb(t)])) ...)), output of x_t's shape",
    code="tinydiff.nn.MLPDenoiser(data_dim, width, depth, emb_dim)",
)
D, W, depth, E = 2, lesson.pick(64, 128), 3, lesson.pick(32, 128)
model = nn.MLPDenoiser(data_dim=D, width=W, depth=depth, emb_dim=E, rng=lesson.rng(1))
count = (D + E) * W + W + (depth - 1) * (W * W + W) + W * D + D
for name, p in model.named_parameters():
    lesson.value(f"parameter {name}", str(p.shape))
lesson.check(model.num_parameters() == count, "the parameter count matches the count by hand",
             f"{model.num_parameters()} = (D+E)W + W + (depth-1)(W^2+W) + WD + D = {count}")
N = 16
rng = lesson.rng(2)
x = rng.normal((N, D))
steps = rng.integers(0, 1000, (N,))
out = model(x, steps)  # (N, D)
lesson.check(out.shape == (N, D), "the output has x's shape", f"{out.shape}")

# %% [markdown]
# ## Step 3: the network uses t, and rows are independent
#
# The same $x$ at different $t$ must give different predictions. And each
# row of a batch is its own example: row $i$ of a batch equals the network
# applied to row $i$ alone, so a batch may mix different $t$ (Algorithm 1
# draws one $t$ per example).

# %%
lesson.step(
    "t matters; a batch is N independent examples",
    paper="Algorithm 1 draws t ~ Uniform{1..T} per example: one batch mixes many t",
    code="tinydiff.nn.MLPDenoiser.forward(x, t) with t an int64 array (N,)",
)
same_x = xp.concat([x[0:1]] * 3, axis=0)  # (3, D): one point three times
three = B.to_numpy(model(same_x, B.asarray([10, 500, 900])))
spread = float(np.abs(three[0] - three[2]).max())
lesson.check(spread > 1e-3, "one x at t = 10 and t = 900 gives different outputs", f"max gap {spread:.4f}")
row = B.to_numpy(model(x[5:6], steps[5:6]))
lesson.check_close("row 5 alone", row, B.to_numpy(out)[5:6], atol=1e-6, against="row 5 of the batch")

# %% [markdown]
# ## Step 4: the engine differentiates the whole network
#
# Training needs the gradient of the loss with respect to every weight.
# A float64 copy of a small denoiser passes the gradient check of lesson 00
# with respect to its input and to a weight matrix (swapped in as an input).

# %%
lesson.step(
    "gradcheck through the denoiser",
    paper="d loss / d theta by reverse mode equals central differences",
    code="tinydiff.gradcheck.gradcheck on tinydiff.nn.MLPDenoiser (float64 copy)",
)
small = nn.MLPDenoiser(data_dim=2, width=8, depth=2, emb_dim=4, rng=lesson.rng(3))
for p in small.parameters():
    p.data = xp.astype(p.data, f64)  # gradient checks need float64
x64 = lesson.rng(4).normal((3, 2), dtype=f64)
t3 = B.asarray([0, 10, 500])
lesson.check(G.gradcheck(lambda v: small(v, t3), [x64]), "gradcheck passes for d eps_theta / d x_t")
weight = small.hidden[1].weight


def with_weight(w):
    small.hidden[1].weight = w  # swap the matrix in as the checked input
    try:
        return small(x64, t3)
    finally:
        small.hidden[1].weight = weight


lesson.check(G.gradcheck(with_weight, [Tensor(weight.data)]),
             "gradcheck passes for d eps_theta / d W (second hidden layer)")
loss = (small(x64, t3) ** 2).mean()
loss.backward()
lesson.check(all(p.grad is not None and float(xp.max(xp.abs(p.grad))) > 0 for p in small.parameters()),
             "every parameter receives a gradient from one backward pass")

# %% [markdown]
# ## Step 5: a sampler's step, one $t$ for every row
#
# Algorithm 2 evaluates $\epsilon_\theta(x_t, t)$ for all $N$ samples at the
# same $t$. The first layer's product splits by its input columns,
# $[x, \mathrm{emb}(t)]\,W^\top + b = x\,W_x^\top + (\mathrm{emb}(t)\,W_{\mathrm{emb}}^\top + b)$,
# and the bracket is then one row, computed once per step and added as a
# bias. So the denoisers also accept one Python int for `t`, and the
# samplers pass it (`accepts_scalar_t`); at the default sizes (2 + 128
# inputs, 10,000 points) this skips a third of a sampling step's
# multiply-adds. Any other callable still gets the $(N,)$ array.

# %%
lesson.step(
    "one int t for the whole batch",
    paper="Algorithm 2: every row of a step shares t",
    code="nn.MLPDenoiser.forward(x, t) with t an int; samplers.predict",
)
x_batch = lesson.rng(7).normal((6, 2), dtype=f64)
lesson.check_close("model(x, 250) against model(x, full((N,), 250))", small(x_batch, 250).data,
                   small(x_batch, B.asarray([250] * 6)).data, rtol=1e-12, atol=1e-14,
                   against="the per-row embedding")
lesson.check(small(x_batch, 250).shape == (6, 2), "one int t still gives one output row per input row")

# %% [markdown]
# ## Step 6: the image denoiser
#
# For images flattened to $D = H W$ (8x8 digits, 28x28 MNIST) tinydiff uses a
# residual MLP: the timestep embedding passes through a small MLP to a
# conditioning vector added inside every residual block. Same call,
# `model(x, t)`, same output shape.

# %%
lesson.step(
    "the residual MLP for images",
    paper="eps_theta(x_t, t) for flattened images; t enters every block",
    code="tinydiff.nn.ResMLPDenoiser(data_dim, width, blocks, emb_dim, cond_dim)",
)
D, W, blocks, E, C = 64, lesson.pick(64, 256), 2, 32, 64
image_model = nn.ResMLPDenoiser(data_dim=D, width=W, blocks=blocks, emb_dim=E, cond_dim=C, rng=lesson.rng(5))
per_block = 2 * W + (W * W + W) + (C * W + W) + (W * W + W)  # LayerNorm, fc1, cond, fc2
count = (E * C + C) + (C * C + C) + (D * W + W) + blocks * per_block + 2 * W + (W * D + D)
lesson.check(image_model.num_parameters() == count, "the residual MLP's parameter count matches the count by hand",
             f"{image_model.num_parameters()} = {count}")
images = lesson.rng(6).normal((4, D))
lesson.check(image_model(images, B.asarray([0, 1, 2, 3])).shape == (4, D), "it maps (N, 64) to (N, 64)")

# The picture: emb(t) of every 4th step as a column (-1 black, +1 white); sin rows on top, cos below.
lesson.saved(viz.image_grid(emb[::4].T[None], lesson.path("timestep_embedding.png"), nrow=1,
                            title="emb(t), t = 0..996 across: 32 sin rows, then 32 cos rows"))

lesson.done()
