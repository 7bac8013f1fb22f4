# %% [markdown]
# # Lesson 00: gradients, by hand and by machine
#
# Training a diffusion model (Algorithm 1 of Ho et al. 2020) is gradient
# descent on a loss, so tinydiff starts with the tool that computes gradients:
# reverse-mode automatic differentiation. This lesson derives a gradient by
# the chain rule by hand, gets the same numbers from `tinydiff.autograd`,
# and then checks the engine the way its tests do, with central differences
# (`tinydiff.gradcheck`).
#
# Run: `python lessons/00_autograd.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff import gradcheck as G
from tinydiff.autograd import Tensor

lesson = _lesson.Lesson("00_autograd", "gradients: the chain rule by hand, the engine, gradcheck")
f64 = B.dtype("float64")

# %% [markdown]
# ## Step 1: the chain rule by hand
#
# One neuron and a squared error: $z = w x + b$, $y = \tanh z$,
# $L = (y - y^*)^2$. The chain rule multiplies the local derivatives from the
# loss back to each input:
#
# $\partial L / \partial w = 2 (y - y^*) \cdot (1 - \tanh^2 z) \cdot x$,
# $\partial L / \partial b = 2 (y - y^*) \cdot (1 - \tanh^2 z)$,
# $\partial L / \partial x = 2 (y - y^*) \cdot (1 - \tanh^2 z) \cdot w$.
#
# A finite difference $(L(w + h) - L(w - h)) / 2h$ checks each one.

# %%
lesson.step(
    "the chain rule by hand",
    paper=["z = w x + b,  y = tanh(z),  L = (y - y*)^2",
           "dL/dw = dL/dy * dy/dz * dz/dw = 2 (y - y*) (1 - tanh(z)^2) x"],
    code="plain Python floats (math.tanh): no library yet",
)
w, b, x, target = 0.7, -0.3, 1.5, 0.2


def neuron_loss(w, b, x):
    return (math.tanh(w * x + b) - target) ** 2


z = w * x + b
y = math.tanh(z)
dL_dy = 2.0 * (y - target)  # outermost first: the loss
dy_dz = 1.0 - y * y  # tanh' = 1 - tanh^2
by_hand = {"w": dL_dy * dy_dz * x, "b": dL_dy * dy_dz, "x": dL_dy * dy_dz * w}
lesson.value("z, y, L", f"{z:.6f}, {y:.6f}, {neuron_loss(w, b, x):.6f}")
h = 1e-6
numeric = {
    "w": (neuron_loss(w + h, b, x) - neuron_loss(w - h, b, x)) / (2 * h),
    "b": (neuron_loss(w, b + h, x) - neuron_loss(w, b - h, x)) / (2 * h),
    "x": (neuron_loss(w, b, x + h) - neuron_loss(w, b, x - h)) / (2 * h),
}
for name in ("w", "b", "x"):
    lesson.check_close(f"dL/d{name} by hand", by_hand[name], numeric[name], rtol=1e-6,
                       against="central difference")

# %% [markdown]
# ## Step 2: the same numbers from the engine
#
# `Tensor` records each operation and, next to it, its vector-Jacobian
# product (the local derivative times the gradient arriving from above).
# `backward()` sorts the graph and applies them from the loss back: exactly
# the multiplication of Step 1, done by the machine. A value used twice
# (`u = a * a`) gets the sum of both paths, `2 a`.

# %%
lesson.step(
    "the engine does the same multiplications",
    paper="reverse mode: gradient of each node = sum over its uses of (gradient above) x (local derivative)",
    code="tinydiff.autograd.Tensor.backward (the op table tinydiff.autograd.OPS)",
)
tw = Tensor(B.asarray([w], dtype=f64), requires_grad=True)
tb = Tensor(B.asarray([b], dtype=f64), requires_grad=True)
tx = Tensor(B.asarray([x], dtype=f64), requires_grad=True)
loss = ((tw * tx + tb).tanh() - target) ** 2
loss = loss.sum()
loss.backward()
lesson.value("loss from the engine", loss.item())
for name, tensor in (("w", tw), ("b", tb), ("x", tx)):
    lesson.check_close(f"engine dL/d{name}", tensor.grad, by_hand[name], rtol=1e-12, against="by hand")

a = Tensor(B.asarray([3.0], dtype=f64), requires_grad=True)
(a * a).sum().backward()  # d(a^2)/da = 2a: both uses of a add up
lesson.check_close("d(a * a)/da at a = 3 (a used twice)", a.grad, 6.0, rtol=1e-12, against="2a =")
lesson.value("ops in the table", f"{len(A.OPS)}: " + ", ".join(sorted(A.OPS)[:12]) + ", ...")

# %% [markdown]
# ## Step 3: whole arrays and broadcasting
#
# A denoiser works on batches. For a linear layer $Y = X W^\top + b$ and
# $L = \frac{1}{N}\sum (Y - Y^*)^2$, the matrix chain rule gives
# $G = \partial L/\partial Y = \frac{2}{N}(Y - Y^*)$,
# $\partial L/\partial W = G^\top X$, $\partial L/\partial X = G W$, and,
# because $b$ was broadcast over the $N$ rows, $\partial L/\partial b$ is the
# sum of $G$ over rows (the engine's `unbroadcast`).

# %%
lesson.step(
    "matrices: the linear layer and broadcasting",
    paper=["Y = X W^T + b,  G = dL/dY",
           "dL/dW = G^T X,  dL/dX = G W,  dL/db = sum over rows of G (b was broadcast)"],
    code="tinydiff.autograd.linear; tinydiff.autograd.unbroadcast (called by Tensor.backward)",
)
rng = np.random.default_rng(lesson.seed)
n, d_in, d_out = lesson.pick(16, 64), 5, 3
X = rng.normal(size=(n, d_in))
W = rng.normal(size=(d_out, d_in))
bias = rng.normal(size=(d_out,))
Y_star = rng.normal(size=(n, d_out))
tX = Tensor(B.asarray(X, dtype=f64), requires_grad=True)
tW = Tensor(B.asarray(W, dtype=f64), requires_grad=True)
tbias = Tensor(B.asarray(bias, dtype=f64), requires_grad=True)
out = A.linear(tX, tW, tbias)  # (N, d_out)
mse = ((out - B.asarray(Y_star, dtype=f64)) ** 2).sum() / n
mse.backward()
G_hand = 2.0 / n * (X @ W.T + bias - Y_star)  # (N, d_out)
lesson.value("shapes X, W, b, Y", f"{X.shape}, {W.shape}, {bias.shape}, {G_hand.shape}")
lesson.check_close("dL/dW", tW.grad, G_hand.T @ X, rtol=1e-10, atol=1e-12, against="G^T X")
lesson.check_close("dL/dX", tX.grad, G_hand @ W, rtol=1e-10, atol=1e-12, against="G W")
lesson.check_close("dL/db", tbias.grad, G_hand.sum(axis=0), rtol=1e-10, atol=1e-12,
                   against="the row sum of G")

# %% [markdown]
# ## Step 4: gradcheck, and a gradient check that catches a bug
#
# For anything bigger than a neuron, nobody derives gradients by hand: the
# engine is trusted because every primitive passes a gradient check. The
# numerical Jacobian comes from central differences in float64, the
# analytical one from one backward pass per output element, and every
# element must satisfy $|a - n| \le 10^{-5} + 10^{-3}|n|$ (PyTorch's rule).
#
# A new primitive is its forward and its VJP side by side. Below, softsign
# $s(u) = u / (1 + |u|)$ with $s'(u) = 1/(1 + |u|)^2$, once right and once
# with a plausible slip ($1/(1 + |u|)$), which gradcheck must refuse.

# %%
lesson.step(
    "gradcheck: central differences against backward",
    paper="|analytical - numerical| <= atol + rtol |numerical|, numerical = (f(x + eps) - f(x - eps)) / (2 eps)",
    code="tinydiff.gradcheck.gradcheck (float64, eps 1e-6, atol 1e-5, rtol 1e-3)",
)
x_small = Tensor(B.asarray(rng.normal(size=(4, 3)), dtype=f64))
w_small = Tensor(B.asarray(rng.normal(size=(3, 2)), dtype=f64))


def composite(x, w):
    # A small network: matmul, softplus, a log-sum-exp over classes, a mean.
    return (x @ w).softplus().logsumexp(axis=1).mean()


lesson.check(G.gradcheck(composite, [x_small, w_small]),
             "gradcheck passes for mean(logsumexp(softplus(x @ w)))")


def softsign(u, derivative):
    data = u.data
    out = data / (1.0 + B.xp.abs(data))
    # The VJP: gradient from above times the local derivative.
    return A.record(out, (u,), lambda g: (g * derivative(data),), "softsign")


def right(d):
    return 1.0 / (1.0 + B.xp.abs(d)) ** 2


def wrong(d):
    return 1.0 / (1.0 + B.xp.abs(d))  # the slip: forgot the square


u = Tensor(B.asarray(rng.normal(size=(5,)) + 0.5, dtype=f64))
lesson.check(G.gradcheck(lambda v: softsign(v, right), [u]), "gradcheck passes for softsign with s' = 1/(1+|u|)^2")
error = lesson.check_raises(G.GradcheckError, lambda: G.gradcheck(lambda v: softsign(v, wrong), [u]),
                            "gradcheck refuses softsign with the wrong derivative 1/(1+|u|)")
lesson.value("gradcheck's message", str(error)[:200])
lesson.say("""The message names the input, the worst element and both values, so a wrong
VJP is found by its element, not by a training run that quietly does not learn.""")

# %%
lesson.done()
