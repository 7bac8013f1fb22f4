"""Optimizers (SGD, Adam, AdamW), gradient clipping, learning-rate schedule, EMA.

The update equations are exactly PyTorch's, so a reader who knows
``torch.optim`` is never surprised:

- SGD with momentum:  buf = momentum * buf + g (buf = g on the first step);
  p -= lr * buf  (or lr * (g + momentum * buf) with nesterov).
- Adam (Kingma and Ba 2015): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
  p -= lr * (m / (1 - b1^k)) / (sqrt(v / (1 - b2^k)) + eps): epsilon is added
  *after* the bias correction. weight_decay adds wd * p to g (L2).
- AdamW (Loshchilov and Hutter 2019): p *= 1 - lr * wd first (decoupled
  decay), then the Adam step without decay.

Speed: an optimizer gathers all its parameters into one flat buffer and
makes each ``Parameter.data`` a view into it. A step is then a handful of
in-place array operations on one long vector instead of a Python loop over
parameters, in cache-sized chunks that allocate only chunk-sized temporaries.
"""

from __future__ import annotations

import math

from . import backend as B
from .backend import xp


CHUNK = 1 << 18  # elements per cache-sized pass of an optimizer step on the CPU


def _check_params(params, who):
    params = list(params)
    if not params:
        raise ValueError(f"{who}: got an empty parameter list (did you pass model.parameters()?)")
    seen = set()
    for p in params:
        if not getattr(p, "requires_grad", False):
            raise ValueError(f"{who}: every parameter must be a Tensor with requires_grad=True, got {p!r}")
        if id(p) in seen:
            raise ValueError(f"{who}: a parameter appears twice in the list")
        seen.add(id(p))
    dtypes = {str(p.dtype) for p in params}
    if len(dtypes) > 1:
        raise ValueError(f"{who}: parameters must share one dtype, got {sorted(dtypes)}")
    return params


def _check_positive(name, value, who, allow_zero=False):
    if not (value > 0 or (allow_zero and value == 0)) or math.isnan(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: {name} must be {bound}, got {value}")


class Optimizer:
    """Owns the parameters' storage as one flat vector; subclasses define ``_update``."""

    def __init__(self, params, lr):
        who = type(self).__name__
        self.params = _check_params(params, who)
        _check_positive("lr", lr, who)
        self.lr = lr
        self.step_count = 0
        self._slices = []
        offset = 0
        for p in self.params:
            self._slices.append((offset, offset + p.size))
            offset += p.size
        dtype = self.params[0].dtype
        self.flat = xp.zeros((offset,), dtype=dtype)  # every parameter lives here
        for p, (start, stop) in zip(self.params, self._slices):
            self.flat[start:stop] = xp.reshape(p.data, (-1,))
            p.data = xp.reshape(self.flat[start:stop], p.shape)  # a view, not a copy
        self._views = [p.data for p in self.params]  # to notice a parameter re-homed elsewhere
        self.flat_grad = xp.zeros_like(self.flat)
        self._gathered = False  # flat_grad already holds this step's (clipped) gradient
        self._work = xp.zeros_like(self.flat)
        # Slices for cache-sized passes on the CPU; one slice on a GPU.
        chunk = offset if B.get_backend() == "cupy" else CHUNK
        self._chunks = [(start, min(start + chunk, offset)) for start in range(0, offset, max(chunk, 1))]

    def zero_grad(self):
        """Forget the gradients of the last backward pass."""
        self._gathered = False
        for p in self.params:
            p.grad = None

    def _gather_grads(self):
        """Copy every p.grad into the flat gradient (zeros where a grad is None)."""
        for i, (p, (start, stop)) in enumerate(zip(self.params, self._slices)):
            if p.data is not self._views[i]:
                raise RuntimeError(
                    f"{type(self).__name__}: parameter {i} (shape {p.shape}) no longer lives in this optimizer's "
                    "buffer: another optimizer was built on it, or its .data was replaced. Build one optimizer "
                    "per set of parameters, and change weights in place (p.data[...] = value)"
                )
            if p.grad is None:
                self.flat_grad[start:stop] = 0.0
            else:
                self.flat_grad[start:stop] = xp.reshape(p.grad, (-1,))
        return self.flat_grad

    def step(self):
        """One update of every parameter from its current .grad."""
        self.step_count += 1
        g = self.flat_grad if self._gathered else self._gather_grads()
        self._gathered = False
        self._update(g)

    def clip_grad_norm(self, max_norm):
        """clip_grad_norm for this optimizer's parameters, on the flat gradient.

        The same update as ``clip_grad_norm(params, max_norm)`` followed by
        step(), in two passes over one vector (a dot product, a scaling)
        instead of a reduction and a new array per parameter. The clipped
        gradient is the flat one that step() then uses; p.grad is left as it was.
        """
        _check_positive("max_norm", max_norm, "clip_grad_norm")
        g = self._gather_grads()
        self._gathered = True
        norm = xp.sqrt(xp.vecdot(g, g))
        g *= xp.minimum(max_norm / (norm + 1e-6), 1.0)
        return norm

    def _update(self, g):  # pragma: no cover - abstract
        raise NotImplementedError

    # State dicts: hyperparameters as numbers, buffers as arrays.
    def _buffers(self):
        return {}

    def state_dict(self):
        state = {"step_count": self.step_count, "lr": self.lr}
        state.update({name: buf for name, buf in self._buffers().items()})
        return state

    def load_state_dict(self, state):
        who = type(self).__name__
        buffers = self._buffers()
        missing = [name for name in ["step_count", "lr", *buffers] if name not in state]
        if missing:
            raise ValueError(f"{who}.load_state_dict: missing entries {missing}")
        for name, buf in buffers.items():
            value = state[name]
            if tuple(value.shape) != tuple(buf.shape):
                raise ValueError(
                    f"{who}.load_state_dict: {name} has shape {tuple(value.shape)}, "
                    f"expected {tuple(buf.shape)} (a different model?)"
                )
            buf[...] = B.asarray(value, dtype=buf.dtype)
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form)."""

    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        _check_positive("momentum", momentum, "SGD", allow_zero=True)
        _check_positive("weight_decay", weight_decay, "SGD", allow_zero=True)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay
        self.momentum_buffer = xp.zeros_like(self.flat)

    def _buffers(self):
        return {"momentum_buffer": self.momentum_buffer}

    def _update(self, g):
        work = self._work
        if self.weight_decay:
            work[...] = self.flat
            work *= self.weight_decay
            g += work  # g = g + wd * p
        if self.momentum:
            buf = self.momentum_buffer
            if self.step_count == 1:
                buf[...] = g
            else:
                buf *= self.momentum
                buf += g
            if self.nesterov:
                work[...] = buf
                work *= self.momentum
                g += work
            else:
                g = buf
        work[...] = g
        work *= self.lr
        self.flat -= work


class Adam(Optimizer):
    """Adam with PyTorch's update (bias correction, then epsilon); L2 weight decay."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        who = type(self).__name__
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"{who}: betas must lie in [0, 1), got {betas}")
        _check_positive("eps", eps, who, allow_zero=True)
        _check_positive("weight_decay", weight_decay, who, allow_zero=True)
        self.beta1, self.beta2, self.eps, self.weight_decay = beta1, beta2, eps, weight_decay
        self.exp_avg = xp.zeros_like(self.flat)  # m, the first moment
        self.exp_avg_sq = xp.zeros_like(self.flat)  # v, the second moment

    def _buffers(self):
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def _update(self, g):
        k = self.step_count
        step_size = self.lr / (1.0 - self.beta1**k)  # lr / bc1
        sqrt_bias_correction2 = math.sqrt(1.0 - self.beta2**k)  # sqrt(bc2)

        # In chunks that fit in cache: a dozen passes over a chunk in cache
        # beat a dozen passes over a 25 MB vector in main memory (2x on MNIST).
        for start, stop in self._chunks:
            self._update_chunk(g[start:stop], self.exp_avg[start:stop], self.exp_avg_sq[start:stop],
                               self.flat[start:stop], self._work[start:stop], step_size, sqrt_bias_correction2)

    def _update_chunk(self, g, m, v, p, work, step_size, sqrt_bias_correction2):
        if self.weight_decay and self.decoupled:
            p *= 1.0 - self.lr * self.weight_decay  # AdamW: decay the weights themselves
        if self.weight_decay and not self.decoupled:
            B.into(work, xp.multiply, p, self.weight_decay)
            g += work  # Adam: the L2 penalty goes into the gradient
        # m = b1 m + (1 - b1) g, written as b1 (m - g) + g: three passes, no copy
        m -= g
        m *= self.beta1
        m += g
        # v = b2 v + (1 - b2) g^2, the same way
        B.into(work, xp.multiply, g, g)
        v -= work
        v *= self.beta2
        v += work
        # PyTorch: p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps). Multiplying
        # the denominator through by sqrt(bc2) gives the same number in two
        # fewer passes: p -= (lr / bc1) sqrt(bc2) m / (sqrt(v) + eps sqrt(bc2)).
        B.into(work, xp.sqrt, v)
        work += self.eps * sqrt_bias_correction2
        B.into(work, xp.divide, m, work)
        work *= step_size * sqrt_bias_correction2
        p -= work


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019), PyTorch's default 0.01."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm(params, max_norm):
    """Scale all gradients so their joint L2 norm is at most max_norm (as PyTorch).

    Returns the norm before clipping as a 0-d backend array (converting it to
    a float would force a GPU synchronisation on every step).
    """
    _check_positive("max_norm", max_norm, "clip_grad_norm")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return B.asarray(0.0)
    total = xp.sqrt(sum(xp.sum(g * g) for g in grads))
    scale = xp.minimum(max_norm / (total + 1e-6), 1.0)
    for p in params:
        if p.grad is not None:
            p.grad = p.grad * scale  # out of place: grads may be shared views
    return total


def warmup_cosine(step, base_lr, warmup_steps=0, total_steps=None, min_lr=0.0):
    """Learning rate at ``step`` (0-indexed): linear warmup, then cosine decay to min_lr.

    warmup: lr = base_lr * (step + 1) / warmup_steps for step < warmup_steps;
    then lr = min_lr + (base_lr - min_lr) (1 + cos(pi p)) / 2 with p the
    fraction of the decay phase done. Without total_steps the rate stays at
    base_lr after warmup.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if total_steps is None or total_steps <= warmup_steps:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class EMA:
    """An exponential moving average of the parameters (DDPM Sec. 4 uses decay 0.9999).

    shadow = d * shadow + (1 - d) * params after every optimizer step. With
    warmup, d = min(decay, (1 + k) / (10 + k)) at update k, so the average
    is not dominated by the random initial weights in short runs.
    ``average_parameters()`` swaps the averaged weights in for sampling.
    """

    def __init__(self, params, decay=0.999, warmup=True, source=None):
        self.params = _check_params(params, "EMA")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self._slices, offset = [], 0
        for p in self.params:
            self._slices.append((offset, offset + p.size))
            offset += p.size
        self.shadow = xp.zeros((offset,), dtype=self.params[0].dtype)
        self._gather(self.shadow)
        self._work = xp.zeros_like(self.shadow)
        # source: a flat array that already holds the parameters in this order
        # (an optimizer's .flat), read directly instead of gathered each update.
        if source is not None and tuple(source.shape) != (offset,):
            raise ValueError(f"EMA: source must be a flat array of {offset} elements, got shape {tuple(source.shape)}")
        self.source = source
        chunk = offset if B.get_backend() == "cupy" else CHUNK
        self._chunks = [(start, min(start + chunk, offset)) for start in range(0, offset, max(chunk, 1))]

    def _gather(self, out):
        for p, (start, stop) in zip(self.params, self._slices):
            out[start:stop] = xp.reshape(p.data, (-1,))
        return out

    def current_decay(self):
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self):
        """Fold the current parameters into the average: shadow += (1 - d) (params - shadow)."""
        d = self.current_decay()
        self.updates += 1
        params = self.source if self.source is not None else self._gather(self._work)
        for start, stop in self._chunks:  # cache-sized passes, as in Adam
            shadow, work = self.shadow[start:stop], self._work[start:stop]
            if params is not self._work:
                work[...] = params[start:stop]
            work -= shadow
            work *= 1.0 - d
            shadow += work

    def copy_to(self, params=None):
        """Overwrite the parameters with the averaged values."""
        for p, (start, stop) in zip(params or self.params, self._slices):
            p.data[...] = xp.reshape(self.shadow[start:stop], p.shape)

    def average_parameters(self):
        """Context manager: the averaged weights inside, the trained ones restored after."""
        ema = self

        class _Swap:
            def __enter__(self):
                self.saved = ema._gather(xp.zeros_like(ema.shadow))
                ema.copy_to()
                return ema

            def __exit__(self, *exc):
                for p, (start, stop) in zip(ema.params, ema._slices):
                    p.data[...] = xp.reshape(self.saved[start:stop], p.shape)
                return False

        return _Swap()

    def state_dict(self):
        return {"shadow": self.shadow, "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state):
        for name in ("shadow", "updates"):
            if name not in state:
                raise ValueError(f"EMA.load_state_dict: missing entry {name!r}")
        if tuple(state["shadow"].shape) != tuple(self.shadow.shape):
            raise ValueError(
                f"EMA.load_state_dict: shadow has shape {tuple(state['shadow'].shape)}, "
                f"expected {tuple(self.shadow.shape)}"
            )
        self.shadow[...] = B.asarray(state["shadow"], dtype=self.shadow.dtype)
        self.updates = int(state["updates"])
        if "decay" in state:
            self.decay = float(state["decay"])
        return self
