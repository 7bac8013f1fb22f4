"""The two default denoisers of tinydiff.nn written by hand in plain NumPy.

This is the yardstick for benchmarks/engine.py: the same networks as
``tinydiff.nn.MLPDenoiser()`` and ``tinydiff.nn.ResMLPDenoiser()`` with their
default sizes, with a forward pass, a backward pass derived by hand and Adam
with PyTorch's update, written the way a careful NumPy programmer would for
speed: float32 throughout, every activation and temporary preallocated once
per batch size and written with ``out=``, gradients written by the matmuls
straight into one flat gradient vector (no gathering), and Adam on the flat
vector in cache-sized chunks (all of the update runs on a chunk while it is
in cache, instead of a dozen passes over the whole vector in memory).

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


class FlatParameters:
    """All parameters in one flat float32 vector, and the gradient in another.

    ``value[name]`` and ``grad[name]`` are views of the flat vectors with the
    parameter's shape, so a matmul with ``out=grad[name]`` writes the
    gradient where the optimizer reads it.
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
    """Adam with PyTorch's equations on a FlatParameters, in cache-sized chunks.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^k.
    The ~13 elementwise operations run on one chunk of p, g, m, v and a work
    array while it is in cache, then on the next: one trip to memory per
    array instead of one per operation. ``chunk=None`` runs each operation
    over the whole vector at once. On a 6.4M-parameter vector (the residual
    MLP) on an AMD EPYC with 1 MB L2 per core, chunks of 2^18 took 10.6 ms a
    step, 2^16 13 ms, 2^12 27 ms, and the whole vector at once 23 ms.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, chunk=262144):
        self.params = params
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.step_count = 0
        n = params.size
        self.exp_avg = np.zeros(n, dtype=F32)
        self.exp_avg_sq = np.zeros(n, dtype=F32)
        chunk = n if chunk is None else chunk
        self._work = np.empty(min(chunk, n), dtype=F32)
        # The chunk views are made once: slicing in the step would cost more than the math.
        self._chunks = []
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            self._chunks.append((
                params.data[start:stop], params.flat_grad[start:stop],
                self.exp_avg[start:stop], self.exp_avg_sq[start:stop], self._work[: stop - start],
            ))

    def step(self):
        self.step_count += 1
        k = self.step_count
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1.0 - b1**k)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - b2**k)
        one_minus_b1, one_minus_b2, eps = 1.0 - b1, 1.0 - b2, self.eps
        multiply, sqrt, divide = np.multiply, np.sqrt, np.divide
        for p, g, m, v, w in self._chunks:
            m *= b1
            multiply(g, one_minus_b1, out=w)
            m += w
            v *= b2
            multiply(g, g, out=w)
            w *= one_minus_b2
            v += w
            sqrt(v, out=w)
            w *= inv_sqrt_bc2
            w += eps
            divide(m, w, out=w)
            w *= step_size
            p -= w


# -- helpers -----------------------------------------------------------------


def _frequencies(emb_dim, max_period=10000.0):
    """w_i = max_period^(-i / half), computed in float32 as tinydiff does."""
    half = emb_dim // 2
    return np.exp(np.arange(half, dtype=F32) * F32(-math.log(max_period) / half))


def _timestep_embedding(t, frequencies, t_buffer, angles, out):
    """Write [sin(t w), cos(t w)] into out (N, 2 * half), which may be a column block."""
    half = frequencies.shape[0]
    t_buffer[:, 0] = t  # int64 -> float32 cast, (N, 1)
    np.multiply(t_buffer, frequencies, out=angles)  # (N, half)
    np.sin(angles, out=out[:, :half])
    np.cos(angles, out=out[:, half:])


def _sigmoid(x, out):
    """1 / (1 + exp(-x)) as (1 + tanh(x / 2)) / 2: one transcendental, never overflows."""
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out += 1.0
    out *= 0.5
    return out


def _silu_grad_inplace(g, x, s, work):
    """g *= d silu(x) / dx = s (1 + x (1 - s)), s = sigmoid(x)."""
    np.subtract(1.0, s, out=work)
    work *= x
    work += 1.0
    work *= s
    g *= work


def _mse_grad(out, noise, diff):
    """Loss mean((out - noise)^2); leaves d loss / d out in diff."""
    np.subtract(out, noise, out=diff)
    flat = diff.reshape(-1)
    loss = np.dot(flat, flat) / F32(flat.size)
    diff *= 2.0 / diff.size
    return loss


class _LayerNorm:
    """Buffers and the hand-derived forward and backward of one LayerNorm (eps 1e-5)."""

    def __init__(self, n, width, eps=1e-5):
        self.eps = eps
        self.x_hat = np.empty((n, width), F32)
        self.inv_std = np.empty((n, 1), F32)
        self.row = np.empty((n, 1), F32)
        self.tmp = np.empty((n, width), F32)

    def forward(self, h, weight, bias, out):
        x_hat, inv_std = self.x_hat, self.inv_std
        np.mean(h, axis=1, keepdims=True, out=self.row)
        np.subtract(h, self.row, out=x_hat)
        np.multiply(x_hat, x_hat, out=self.tmp)
        np.mean(self.tmp, axis=1, keepdims=True, out=inv_std)
        inv_std += self.eps
        np.sqrt(inv_std, out=inv_std)
        np.divide(1.0, inv_std, out=inv_std)
        x_hat *= inv_std
        np.multiply(x_hat, weight, out=out)
        out += bias
        return out

    def backward(self, g, weight, grad_weight, grad_bias, out):
        """dx = inv_std (g' - mean(g') - x_hat mean(g' x_hat)), g' = g * weight."""
        x_hat, tmp, row = self.x_hat, self.tmp, self.row
        np.multiply(g, x_hat, out=tmp)
        np.sum(tmp, axis=0, out=grad_weight)
        np.sum(g, axis=0, out=grad_bias)
        np.multiply(g, weight, out=out)  # g'
        np.multiply(out, x_hat, out=tmp)
        np.mean(tmp, axis=1, keepdims=True, out=row)
        np.multiply(x_hat, row, out=tmp)  # x_hat mean(g' x_hat)
        np.mean(out, axis=1, keepdims=True, out=row)
        out -= row
        out -= tmp
        out *= self.inv_std
        return out


# -- the 2-D MLP denoiser ------------------------------------------------------


class HandMLP:
    """[x, emb(t)] -> (Linear, GELU-tanh) x depth -> Linear, as tinydiff.nn.MLPDenoiser."""

    def __init__(self, state, data_dim=2, width=128, depth=3, emb_dim=128):
        self.data_dim, self.width, self.depth, self.emb_dim = data_dim, width, depth, emb_dim
        names = [f"hidden.{i}.{kind}" for i in range(depth) for kind in ("weight", "bias")]
        names += ["out.weight", "out.bias"]
        self.params = FlatParameters([(name, state[name]) for name in names])
        self.frequencies = _frequencies(emb_dim)
        self._buffers = {}

    def _workspace(self, n):
        ws = self._buffers.get(n)
        if ws is None:
            width, depth = self.width, self.depth
            ws = {
                "t": np.empty((n, 1), F32),
                "angles": np.empty((n, self.emb_dim // 2), F32),
                "h0": np.empty((n, self.data_dim + self.emb_dim), F32),
                "pre": [np.empty((n, width), F32) for _ in range(depth)],
                "tanh": [np.empty((n, width), F32) for _ in range(depth)],
                "post": [np.empty((n, width), F32) for _ in range(depth)],
                "out": np.empty((n, self.data_dim), F32),
                "diff": np.empty((n, self.data_dim), F32),
                "grad_h": [np.empty((n, width), F32) for _ in range(2)],
                "d": np.empty((n, width), F32),
                "s": np.empty((n, width), F32),
            }
            self._buffers[n] = ws
        return ws

    def forward(self, x, t):
        """eps_theta(x, t): (N, data_dim). Keeps what backward needs in the workspace."""
        ws = self._workspace(x.shape[0])
        D = self.data_dim
        h = ws["h0"]
        h[:, :D] = x
        _timestep_embedding(t, self.frequencies, ws["t"], ws["angles"], h[:, D:])
        return self._layers(ws, h)

    def forward_one_t(self, x, t):
        """eps_theta(x, t) for one int t shared by every row, as tinydiff's samplers call
        MLPDenoiser: the first layer's product split by columns,
        [x, emb] W^T + b = x W_x^T + (emb W_emb^T + b), the second term one row."""
        ws = self._workspace(x.shape[0])
        value, D, half = self.params.value, self.data_dim, self.emb_dim // 2
        emb = np.empty((1, self.emb_dim), F32)
        _timestep_embedding(np.array([t]), self.frequencies, np.empty((1, 1), F32), np.empty((1, half), F32), emb)
        weight = value["hidden.0.weight"]
        row = emb @ weight[:, D:].T
        row += value["hidden.0.bias"]  # (1, width)
        first = ws["pre"][0]
        np.matmul(x, weight[:, :D].T, out=first)
        first += row
        return self._layers(ws, None, first_pre=first)

    def _layers(self, ws, h, first_pre=None):
        value = self.params.value
        for i in range(self.depth):
            a, th, post = ws["pre"][i], ws["tanh"][i], ws["post"][i]
            if i > 0 or first_pre is None:
                np.matmul(h, value[f"hidden.{i}.weight"].T, out=a)
                a += value[f"hidden.{i}.bias"]
            # GELU: 0.5 a (1 + tanh(C (a + K a^3))), the inner term as C a (1 + K a^2)
            np.multiply(a, a, out=post)
            post *= GELU_K
            post += 1.0
            post *= a
            post *= GELU_C
            np.tanh(post, out=th)
            np.add(th, 1.0, out=post)
            post *= a
            post *= 0.5
            h = post
        out = ws["out"]
        np.matmul(h, value["out.weight"].T, out=out)
        out += value["out.bias"]
        return out

    def loss_and_grad(self, x, t, noise):
        """MSE(eps_theta(x, t), noise); fills self.params.grad. Returns the loss."""
        out = self.forward(x, t)
        ws = self._workspace(x.shape[0])
        value, grad = self.params.value, self.params.grad
        g = ws["diff"]
        loss = _mse_grad(out, noise, g)
        last = ws["post"][-1]
        np.matmul(g.T, last, out=grad["out.weight"])
        np.sum(g, axis=0, out=grad["out.bias"])
        g_h = ws["grad_h"][0]
        np.matmul(g, value["out.weight"], out=g_h)
        d, s = ws["d"], ws["s"]
        for i in reversed(range(self.depth)):
            a, th = ws["pre"][i], ws["tanh"][i]
            # GELU': 0.5 (1 + T + a (1 - T^2) C (1 + 3 K a^2)), T the forward tanh
            np.multiply(a, a, out=d)
            d *= 3.0 * GELU_K * GELU_C
            d += GELU_C
            d *= a
            np.multiply(th, th, out=s)
            np.subtract(1.0, s, out=s)
            d *= s
            d += th
            d += 1.0
            d *= 0.5
            g_h *= d  # now the gradient of the pre-activation
            inp = ws["h0"] if i == 0 else ws["post"][i - 1]
            np.matmul(g_h.T, inp, out=grad[f"hidden.{i}.weight"])
            np.sum(g_h, axis=0, out=grad[f"hidden.{i}.bias"])
            if i > 0:
                first, second = ws["grad_h"]
                g_next = second if g_h is first else first  # ping-pong between two buffers
                np.matmul(g_h, value[f"hidden.{i}.weight"], out=g_next)
                g_h = g_next
        return loss


# -- the residual MLP denoiser --------------------------------------------------


class HandResMLP:
    """The residual MLP of tinydiff.nn.ResMLPDenoiser (SiLU, LayerNorm in the blocks).

    cond = silu(time_out(silu(time_in(emb(t)))))
    h = inp(x); per block: h += fc2(silu(fc1(silu(LN(h))) + cond_proj(cond)))
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
        self._buffers = {}

    def _workspace(self, n):
        ws = self._buffers.get(n)
        if ws is None:
            W, C, L = self.width, self.cond_dim, self.blocks

            def e(*shape):
                return np.empty(shape, F32)

            ws = {
                "t": e(n, 1), "angles": e(n, self.emb_dim // 2), "emb": e(n, self.emb_dim),
                "c1": e(n, C), "s1": e(n, C), "a1": e(n, C),
                "c2": e(n, C), "s2": e(n, C), "cond": e(n, C),
                "h": [e(n, W) for _ in range(L + 1)],
                "ln": [_LayerNorm(n, W) for _ in range(L + 1)],
                "z": [e(n, W) for _ in range(L + 1)],  # LN outputs (last: norm_out)
                "sz": [e(n, W) for _ in range(L + 1)],
                "za": [e(n, W) for _ in range(L + 1)],
                "u": [e(n, W) for _ in range(L)],
                "su": [e(n, W) for _ in range(L)],
                "ua": [e(n, W) for _ in range(L)],
                "proj": e(n, W),
                "out": e(n, self.data_dim), "diff": e(n, self.data_dim),
                "g_h": e(n, W), "g_a": e(n, W), "g_b": e(n, W), "work": e(n, W),
                "g_cond": e(n, C), "g_c": e(n, C), "work_c": e(n, C), "tmp_c": e(n, C),
            }
            self._buffers[n] = ws
        return ws

    def forward(self, x, t):
        ws = self._workspace(x.shape[0])
        value = self.params.value
        emb = ws["emb"]
        _timestep_embedding(t, self.frequencies, ws["t"], ws["angles"], emb)
        c1, s1, a1, c2, s2, cond = (ws[k] for k in ("c1", "s1", "a1", "c2", "s2", "cond"))
        np.matmul(emb, value["time_in.weight"].T, out=c1)
        c1 += value["time_in.bias"]
        np.multiply(c1, _sigmoid(c1, s1), out=a1)
        np.matmul(a1, value["time_out.weight"].T, out=c2)
        c2 += value["time_out.bias"]
        np.multiply(c2, _sigmoid(c2, s2), out=cond)  # (N, cond_dim)
        h = ws["h"][0]
        np.matmul(x, value["inp.weight"].T, out=h)
        h += value["inp.bias"]
        proj = ws["proj"]
        for i in range(self.blocks):
            p = f"blocks.{i}."
            z, sz, za = ws["z"][i], ws["sz"][i], ws["za"][i]
            u, su, ua = ws["u"][i], ws["su"][i], ws["ua"][i]
            ws["ln"][i].forward(h, value[p + "norm.weight"], value[p + "norm.bias"], z)
            np.multiply(z, _sigmoid(z, sz), out=za)
            np.matmul(za, value[p + "fc1.weight"].T, out=u)
            u += value[p + "fc1.bias"]
            np.matmul(cond, value[p + "cond.weight"].T, out=proj)
            u += proj
            u += value[p + "cond.bias"]
            np.multiply(u, _sigmoid(u, su), out=ua)
            h_next = ws["h"][i + 1]
            np.matmul(ua, value[p + "fc2.weight"].T, out=h_next)
            h_next += value[p + "fc2.bias"]
            h_next += h  # the residual connection
            h = h_next
        L = self.blocks
        z, sz, za = ws["z"][L], ws["sz"][L], ws["za"][L]
        ws["ln"][L].forward(h, value["norm_out.weight"], value["norm_out.bias"], z)
        np.multiply(z, _sigmoid(z, sz), out=za)
        out = ws["out"]
        np.matmul(za, value["out.weight"].T, out=out)
        out += value["out.bias"]
        return out

    def loss_and_grad(self, x, t, noise):
        """MSE(eps_theta(x, t), noise); fills self.params.grad. Returns the loss."""
        out = self.forward(x, t)
        ws = self._workspace(x.shape[0])
        value, grad = self.params.value, self.params.grad
        L = self.blocks
        g = ws["diff"]
        loss = _mse_grad(out, noise, g)
        np.matmul(g.T, ws["za"][L], out=grad["out.weight"])
        np.sum(g, axis=0, out=grad["out.bias"])
        g_a, work = ws["g_a"], ws["work"]
        np.matmul(g, value["out.weight"], out=g_a)
        _silu_grad_inplace(g_a, ws["z"][L], ws["sz"][L], work)
        g_h = ws["g_h"]
        ws["ln"][L].backward(g_a, value["norm_out.weight"], grad["norm_out.weight"],
                             grad["norm_out.bias"], g_h)
        g_cond, g_b = ws["g_cond"], ws["g_b"]
        for i in reversed(range(L)):
            p = f"blocks.{i}."
            # h_{i+1} = h_i + fc2(ua): fc2 sees g_h, and g_h flows on to h_i unchanged
            np.matmul(g_h.T, ws["ua"][i], out=grad[p + "fc2.weight"])
            np.sum(g_h, axis=0, out=grad[p + "fc2.bias"])
            np.matmul(g_h, value[p + "fc2.weight"], out=g_a)
            _silu_grad_inplace(g_a, ws["u"][i], ws["su"][i], work)  # g_a = dL/du
            np.matmul(g_a.T, ws["za"][i], out=grad[p + "fc1.weight"])
            np.sum(g_a, axis=0, out=grad[p + "fc1.bias"])
            np.matmul(g_a.T, ws["cond"], out=grad[p + "cond.weight"])
            grad[p + "cond.bias"][...] = grad[p + "fc1.bias"]
            if i == L - 1:
                np.matmul(g_a, value[p + "cond.weight"], out=g_cond)
            else:
                np.matmul(g_a, value[p + "cond.weight"], out=ws["tmp_c"])
                g_cond += ws["tmp_c"]
            np.matmul(g_a, value[p + "fc1.weight"], out=g_b)
            _silu_grad_inplace(g_b, ws["z"][i], ws["sz"][i], work)  # dL/d LN output
            ws["ln"][i].backward(g_b, value[p + "norm.weight"], grad[p + "norm.weight"],
                                 grad[p + "norm.bias"], work)
            g_h += work
        # h_0 = inp(x); the time MLP gets the gradient of cond summed over the blocks
        np.matmul(g_h.T, x, out=grad["inp.weight"])
        np.sum(g_h, axis=0, out=grad["inp.bias"])
        g_c = g_cond
        _silu_grad_inplace(g_c, ws["c2"], ws["s2"], ws["work_c"])
        np.matmul(g_c.T, ws["a1"], out=grad["time_out.weight"])
        np.sum(g_c, axis=0, out=grad["time_out.bias"])
        g_a1 = ws["g_c"]
        np.matmul(g_c, value["time_out.weight"], out=g_a1)
        _silu_grad_inplace(g_a1, ws["c1"], ws["s1"], ws["work_c"])
        np.matmul(g_a1.T, ws["emb"], out=grad["time_in.weight"])
        np.sum(g_a1, axis=0, out=grad["time_in.bias"])
        return loss
