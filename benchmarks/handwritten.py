r"""The two default denoisers of tinydiff.nn written by hand in plain NumPy.

This is the yardstick for benchmarks/engine.py: the same networks as
``tinydiff.nn.MLPDenoiser()`` and ``tinydiff.nn.ResMLPDenoiser()`` with their
default sizes, a forward pass, a backward pass derived by hand and Adam with
PyTorch's update (Kingma and Ba 2015, epsilon after bias correction). It is
what a careful NumPy programmer writes without an autograd engine, held to
the same rule as the engine (STYLE.md, "Fast without hiding the maths"):
every line that implements a formula reads as the paper writes it. There
are no ``out=`` kernels, no in-place rewrites of the algebra; float32
throughout. What is left of speed is structure the engine may have too:

- one flat float32 vector holds all parameters and another all gradients
  (``FlatParameters``); each layer's weight gradient g^T x is assigned into
  its slice of the gradient vector, where Adam reads it;
- Adam's five formulas run on one cache-sized slice of the flat vectors at a
  time (``FlatAdam``). On 6.4M parameters, the residual MLP's count (Intel
  Xeon, 2 shared cores), a step took 20 ms in slices of 2^14 or 2^16, 31 ms
  in slices of 2^18 and 75 ms over the whole vector at once (chunk=None):

      python -m timeit -n 10 -r 7 -s "import sys; sys.path.insert(0, 'benchmarks'); \
          import numpy as np, handwritten as h; \
          a = h.FlatAdam(h.FlatParameters([('w', np.ones(6_400_000, np.float32))]), chunk=1 << 16)" "a.step()"

- the backward pass keeps the forward's values it needs (the tanh of GELU,
  the sigmoid of SiLU, LayerNorm's x_hat and 1/std) instead of recomputing.

Nothing here is tinydiff; the models take their initial weights as a dict of
arrays named as in tinydiff's ``state_dict()`` so both start equal.

    model = HandMLP(state_dict)                  # or HandResMLP(state_dict)
    adam = FlatAdam(model.params, lr=1e-3)
    loss = model.loss_and_grad(x_t, t, noise)    # fills model.params.grad
    adam.step()

Shapes: x_t and noise (N, D) float32, t (N,) int64, 0-indexed.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32
GELU_C = math.sqrt(2.0 / math.pi)  # GELU, tanh form
GELU_K = 0.044715
CHUNK = 1 << 16  # elements of one Adam slice: 256 KB of float32 per array (p, g, m, v and the temporaries)


class FlatParameters:
    """All parameters in one flat float32 vector, and the gradient in another.

    ``value[name]`` and ``grad[name]`` are views of the flat vectors with the
    parameter's shape: a gradient assigned into ``grad[name][...]`` is where
    the optimizer reads it.
    """

    def __init__(self, named_arrays):
        named_arrays = [(name, np.asarray(a, dtype=F32)) for name, a in named_arrays]
        total = sum(a.size for _, a in named_arrays)
        self.data = np.empty(total, dtype=F32)
        self.flat_grad = np.zeros(total, dtype=F32)
        self.value, self.grad = {}, {}
        offset = 0
        for name, array in named_arrays:
            stop = offset + array.size
            self.data[offset:stop] = array.reshape(-1)
            self.value[name] = self.data[offset:stop].reshape(array.shape)
            self.grad[name] = self.flat_grad[offset:stop].reshape(array.shape)
            offset = stop

    @property
    def size(self):
        return self.data.size


class FlatAdam:
    """Adam (Kingma and Ba 2015, Algorithm 1) with PyTorch's update, on a FlatParameters.

    The formulas run on one slice of ``chunk`` elements of p, g, m and v at a
    time, so each slice's temporaries stay in cache (measured: module
    docstring); ``chunk=None`` runs them over the whole vector at once.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, chunk=CHUNK):
        self.params = params
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.step_count = 0
        n = params.size
        self.exp_avg = np.zeros(n, dtype=F32)  # m
        self.exp_avg_sq = np.zeros(n, dtype=F32)  # v
        chunk = n if chunk is None else chunk
        # The slices are made once: slicing in every step would cost more than the maths.
        self._slices = [
            (params.data[start:start + chunk], params.flat_grad[start:start + chunk],
             self.exp_avg[start:start + chunk], self.exp_avg_sq[start:start + chunk])
            for start in range(0, n, chunk)
        ]

    def step(self):
        self.step_count += 1
        k, beta1, beta2, lr, eps = self.step_count, self.beta1, self.beta2, self.lr, self.eps
        for p, g, m, v in self._slices:
            m[...] = beta1 * m + (1 - beta1) * g  # biased first moment
            v[...] = beta2 * v + (1 - beta2) * g**2  # biased second moment
            m_hat = m / (1 - beta1**k)  # bias-corrected
            v_hat = v / (1 - beta2**k)
            p[...] = p - lr * m_hat / (np.sqrt(v_hat) + eps)


# -- the formulas --------------------------------------------------------------


def _frequencies(emb_dim, max_period=10000.0):
    """w_i = max_period^(-i / half), computed in float32 as tinydiff does."""
    half = emb_dim // 2
    return np.exp(np.arange(half, dtype=F32) * F32(-math.log(max_period) / half))


def timestep_embedding(t, frequencies):
    """[sin(t w), cos(t w)] for integer timesteps t (N,): (N, 2 * half), float32."""
    angles = t.astype(F32)[:, None] * frequencies  # (N, half)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def gelu(a):
    """GELU, tanh form: 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))). Returns (GELU(a), the tanh)."""
    tanh = np.tanh(GELU_C * (a + GELU_K * a * a * a))  # a * a * a: NumPy's a**3 is a slow general power
    return 0.5 * a * (1 + tanh), tanh


def gelu_grad(a, tanh):
    """d GELU / da = 0.5 (1 + T) + 0.5 a (1 - T^2) sqrt(2/pi) (1 + 3 * 0.044715 a^2), T the forward's tanh."""
    return 0.5 * (1 + tanh) + 0.5 * a * (1 - tanh**2) * GELU_C * (1 + 3 * GELU_K * a**2)


def sigmoid(x):
    """1 / (1 + exp(-x)), written as (1 + tanh(x / 2)) / 2: the same function, and exp(-x) cannot overflow."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def silu(x):
    """SiLU: x sigmoid(x). Returns (SiLU(x), the sigmoid)."""
    s = sigmoid(x)
    return x * s, s


def silu_grad(x, s):
    """d SiLU / dx = s (1 + x (1 - s)), s the forward's sigmoid."""
    return s * (1 + x * (1 - s))


def mse_and_grad(out, noise):
    """loss = mean((out - noise)^2) and its gradient d loss / d out = 2 (out - noise) / size."""
    diff = out - noise
    return np.mean(diff**2), 2 * diff / diff.size


def layer_norm(h, weight, bias, eps=1e-5):
    """LayerNorm over each row: x_hat = (h - mean) / sqrt(var + eps), out = x_hat weight + bias.

    Returns (out, (x_hat, inv_std)), what the backward pass needs."""
    centered = h - h.mean(axis=1, keepdims=True)
    inv_std = 1 / np.sqrt((centered**2).mean(axis=1, keepdims=True) + eps)  # (N, 1)
    x_hat = centered * inv_std
    return x_hat * weight + bias, (x_hat, inv_std)


def layer_norm_input_grad(g, weight, x_hat, inv_std):
    """d loss / dh = inv_std (g' - mean(g') - x_hat mean(g' x_hat)), g' = g weight, means over each row."""
    g_hat = g * weight
    return inv_std * (g_hat - g_hat.mean(axis=1, keepdims=True)
                      - x_hat * (g_hat * x_hat).mean(axis=1, keepdims=True))


# -- what both networks share ----------------------------------------------------


class _HandNetwork:
    """Linear and LayerNorm layers over a FlatParameters, the loss and its gradient.

    A subclass defines ``forward`` (which keeps what ``backward`` needs in
    ``self.saved``) and ``backward(g)`` from g = d loss / d output.
    """

    params: FlatParameters

    def linear(self, x, name):
        """x W^T + b of layer ``name``."""
        return x @ self.params.value[name + ".weight"].T + self.params.value[name + ".bias"]

    def linear_backward(self, g, x, name, input_grad=True):
        """Layer ``name`` took x and gave y with d loss / dy = g: d loss / dW = g^T x and d loss / db =
        sum over rows of g go into the gradient vector; returns d loss / dx = g W (None if not input_grad)."""
        self.params.grad[name + ".weight"][...] = g.T @ x
        self.params.grad[name + ".bias"][...] = g.sum(axis=0)
        return g @ self.params.value[name + ".weight"] if input_grad else None

    def layer_norm(self, h, name):
        """LayerNorm ``name`` of h; returns (out, what layer_norm_backward needs)."""
        return layer_norm(h, self.params.value[name + ".weight"], self.params.value[name + ".bias"])

    def layer_norm_backward(self, g, name, saved):
        """d loss / d weight = sum over rows of g x_hat, d loss / d bias = sum of g into the gradient vector;
        returns d loss / dh."""
        x_hat, inv_std = saved
        self.params.grad[name + ".weight"][...] = (g * x_hat).sum(axis=0)
        self.params.grad[name + ".bias"][...] = g.sum(axis=0)
        return layer_norm_input_grad(g, self.params.value[name + ".weight"], x_hat, inv_std)

    def loss_and_grad(self, x, t, noise):
        """MSE(eps_theta(x, t), noise); fills self.params.grad. Returns the loss."""
        loss, g = mse_and_grad(self.forward(x, t), noise)
        self.backward(g)
        return loss


# -- the 2-D MLP denoiser ------------------------------------------------------


class HandMLP(_HandNetwork):
    """[x, emb(t)] -> (Linear, GELU-tanh) x depth -> Linear, as tinydiff.nn.MLPDenoiser."""

    def __init__(self, state, data_dim=2, width=128, depth=3, emb_dim=128):
        self.data_dim, self.width, self.depth, self.emb_dim = data_dim, width, depth, emb_dim
        names = [f"hidden.{i}.{kind}" for i in range(depth) for kind in ("weight", "bias")]
        names += ["out.weight", "out.bias"]
        self.params = FlatParameters([(name, state[name]) for name in names])
        self.frequencies = _frequencies(emb_dim)
        self.saved = None

    def forward(self, x, t):
        """eps_theta(x, t): (N, data_dim). Keeps what backward needs in self.saved."""
        h = np.concatenate([x, timestep_embedding(t, self.frequencies)], axis=1)  # (N, data_dim + emb_dim)
        return self._layers(h, self.linear(h, "hidden.0"))

    def forward_one_t(self, x, t):
        """eps_theta(x, t) for one int t shared by every row, as tinydiff's samplers call
        MLPDenoiser: the first layer's product split by columns,
        [x, emb] W^T + b = x W_x^T + (emb W_emb^T + b), the second term one row."""
        weight, bias, D = self.params.value["hidden.0.weight"], self.params.value["hidden.0.bias"], self.data_dim
        emb = timestep_embedding(np.array([t]), self.frequencies)  # (1, emb_dim)
        return self._layers(None, x @ weight[:, :D].T + (emb @ weight[:, D:].T + bias))

    def _layers(self, h, a):
        """The network on from the first layer's output a = [x, emb] W_0^T + b_0 (h = [x, emb] or None)."""
        inputs, pre, tanhs = [], [], []
        for i in range(self.depth):
            if i > 0:
                a = self.linear(h, f"hidden.{i}")
            inputs.append(h)
            pre.append(a)
            h, tanh = gelu(a)
            tanhs.append(tanh)
        self.saved = {"inputs": inputs, "pre": pre, "tanh": tanhs, "last": h}
        return self.linear(h, "out")

    def backward(self, g):
        s = self.saved
        g_h = self.linear_backward(g, s["last"], "out")
        for i in reversed(range(self.depth)):
            g_a = g_h * gelu_grad(s["pre"][i], s["tanh"][i])  # the gradient of the pre-activation
            g_h = self.linear_backward(g_a, s["inputs"][i], f"hidden.{i}", input_grad=i > 0)


# -- the residual MLP denoiser --------------------------------------------------


class HandResMLP(_HandNetwork):
    """The residual MLP of tinydiff.nn.ResMLPDenoiser (SiLU, LayerNorm in the blocks).

    cond = silu(time_out(silu(time_in(emb(t)))))
    h = inp(x); per block: h = h + fc2(silu(fc1(silu(LN(h))) + cond_proj(cond)))
    out = out(silu(LN_out(h)))
    """

    def __init__(self, state, data_dim=784, width=1024, blocks=2, emb_dim=128, cond_dim=256):
        self.data_dim, self.width, self.blocks = data_dim, width, blocks
        self.emb_dim, self.cond_dim = emb_dim, cond_dim
        names = ["time_in.weight", "time_in.bias", "time_out.weight", "time_out.bias",
                 "inp.weight", "inp.bias"]
        for i in range(blocks):
            for layer in ("norm", "fc1", "cond", "fc2"):
                names += [f"blocks.{i}.{layer}.weight", f"blocks.{i}.{layer}.bias"]
        names += ["norm_out.weight", "norm_out.bias", "out.weight", "out.bias"]
        self.params = FlatParameters([(name, state[name]) for name in names])
        self.frequencies = _frequencies(emb_dim)
        self.saved = None

    def forward(self, x, t):
        """eps_theta(x, t): (N, data_dim). Keeps what backward needs in self.saved."""
        s = {"x": x, "emb": timestep_embedding(t, self.frequencies)}
        s["c1"] = self.linear(s["emb"], "time_in")
        s["a1"], s["s1"] = silu(s["c1"])
        s["c2"] = self.linear(s["a1"], "time_out")
        s["cond"], s["s2"] = silu(s["c2"])  # (N, cond_dim)
        cond = s["cond"]
        h = self.linear(x, "inp")
        s["blocks"] = []
        for i in range(self.blocks):
            p, b = f"blocks.{i}.", {}
            b["z"], b["ln"] = self.layer_norm(h, p + "norm")
            b["za"], b["sz"] = silu(b["z"])
            b["u"] = self.linear(b["za"], p + "fc1") + self.linear(cond, p + "cond")
            b["ua"], b["su"] = silu(b["u"])
            h = h + self.linear(b["ua"], p + "fc2")  # the residual connection
            s["blocks"].append(b)
        s["z"], s["ln"] = self.layer_norm(h, "norm_out")
        s["za"], s["sz"] = silu(s["z"])
        self.saved = s
        return self.linear(s["za"], "out")

    def backward(self, g):
        s = self.saved
        g_z = self.linear_backward(g, s["za"], "out") * silu_grad(s["z"], s["sz"])
        g_h = self.layer_norm_backward(g_z, "norm_out", s["ln"])
        g_cond = 0
        for i in reversed(range(self.blocks)):
            p, b = f"blocks.{i}.", s["blocks"][i]
            # h_{i+1} = h_i + fc2(ua): fc2 sees g_h, and g_h flows on to h_i unchanged
            g_u = self.linear_backward(g_h, b["ua"], p + "fc2") * silu_grad(b["u"], b["su"])
            g_cond = g_cond + self.linear_backward(g_u, s["cond"], p + "cond")  # cond feeds every block
            g_z = self.linear_backward(g_u, b["za"], p + "fc1") * silu_grad(b["z"], b["sz"])
            g_h = g_h + self.layer_norm_backward(g_z, p + "norm", b["ln"])
        self.linear_backward(g_h, s["x"], "inp", input_grad=False)  # h_0 = inp(x)
        g_a1 = self.linear_backward(g_cond * silu_grad(s["c2"], s["s2"]), s["a1"], "time_out")
        self.linear_backward(g_a1 * silu_grad(s["c1"], s["s1"]), s["emb"], "time_in", input_grad=False)
