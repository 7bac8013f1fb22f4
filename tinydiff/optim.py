"""Optimizers (SGD, Adam, AdamW), gradient clipping, learning-rate schedule, EMA.

Each update is written as its paper writes it, with PyTorch's conventions
so a reader who knows ``torch.optim`` is never surprised:

- SGD with momentum:  b = momentum * b + g (b = g on the first step);
  p = p - lr * b  (or lr * (g + momentum * b) with nesterov).
- Adam (Kingma and Ba 2015, Algorithm 1), epsilon added *after* the bias
  correction as PyTorch does; weight_decay adds wd * p to g (L2).
- AdamW (Loshchilov and Hutter 2019, Algorithm 2): p = p * (1 - lr * wd)
  first (decoupled decay), then the Adam step without decay.
- EMA: shadow = decay * shadow + (1 - decay) * p.

An optimizer takes a list of parameters (the update then runs once per
parameter) or a ``ParameterVector``: all parameters of a model stored in one
flat vector. With the vector, the same update lines run over cache-sized
slices of it: a dozen passes over a slice that stays in cache beat a dozen
passes over a 25 MB vector in main memory. The training loop makes the
vector in one visible call; nothing else needs to know about it.
"""

from __future__ import annotations

import contextlib
import math

from . import backend as B
from .backend import xp

CHUNK = 1 << 16  # elements in one cache-sized slice of a ParameterVector (256 KB of float32)


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


class ParameterVector:
    """The parameters of a model stored in one flat vector (a speed measure, nothing more).

        parameters = optim.ParameterVector(model.parameters())
        optimizer = optim.Adam(parameters, lr=1e-3)

    ``data`` is the vector; every ``Parameter.data`` becomes a view into it,
    so the model computes exactly as before. ``gather_grads()`` copies each
    ``p.grad`` into the vector ``grad`` (zeros where a parameter got none).
    Optimizers and the EMA then update the vector in cache-sized ``slices``.
    Write new weights into a parameter in place (``p.data[...] = value``):
    rebinding ``p.data`` would take it out of the vector, which
    ``gather_grads`` notices and refuses.
    """

    def __init__(self, params, chunk=None):
        self.params = _check_params(params, "ParameterVector")
        self.offsets, total = [], 0
        for p in self.params:
            self.offsets.append((total, total + p.size))
            total += p.size
        self.data = xp.zeros((total,), dtype=self.params[0].dtype)
        for p, (start, stop) in zip(self.params, self.offsets):
            self.data[start:stop] = xp.reshape(p.data, (-1,))
            p.data = xp.reshape(self.data[start:stop], p.shape)  # a view, not a copy
        self._views = [p.data for p in self.params]
        self.grad = xp.zeros_like(self.data)
        chunk = CHUNK if chunk is None else chunk
        if B.get_backend() == "cupy":
            chunk = total  # on a GPU one launch per operation beats cache-sized slices
        self.slices = [slice(start, min(start + chunk, total)) for start in range(0, total, chunk)]

    def __iter__(self):
        return iter(self.params)

    def __len__(self):
        return len(self.params)

    @property
    def size(self):
        return self.data.shape[0]

    def gather_grads(self):
        """Copy every p.grad into ``self.grad`` (zeros for a parameter without one); returns it."""
        for i, (p, (start, stop)) in enumerate(zip(self.params, self.offsets)):
            if p.data is not self._views[i]:
                raise RuntimeError(
                    f"ParameterVector: parameter {i} (shape {p.shape}) no longer lives in this vector: another "
                    "ParameterVector was built on it, or its .data was replaced. Build one vector per model, "
                    "and change weights in place (p.data[...] = value)"
                )
            self.grad[start:stop] = 0.0 if p.grad is None else xp.reshape(p.grad, (-1,))
        return self.grad


def _flat(value):
    """A flat array as it is; a list of arrays as one flat vector (state dicts store each buffer flat)."""
    if B.is_array(value):
        return value
    return xp.concat([xp.reshape(a, (-1,)) for a in value])


def _copy(array):
    return xp.astype(array, array.dtype, copy=True)


class Optimizer:
    """Base class: the parameters, their state, zero_grad, state dicts; subclasses write ``update``.

    ``update(p, g, *state)`` is the paper's update for one piece of storage:
    one parameter, or one slice of a ParameterVector. It writes the new
    values into ``p`` and the state arrays with ``x[...] = formula``.
    """

    state_names = ()

    def __init__(self, params, lr):
        who = type(self).__name__
        if isinstance(params, ParameterVector):
            self.params = params
        else:
            self.params = _check_params(params, who)
        _check_positive("lr", lr, who)
        self.lr = lr
        self.step_count = 0
        self.state = {name: self._zeros() for name in self.state_names}

    def _zeros(self):
        if isinstance(self.params, ParameterVector):
            return xp.zeros_like(self.params.data)
        return [xp.zeros_like(p.data) for p in self.params]

    def _pieces(self):
        """(p, g, *state) for each piece of storage the update runs on."""
        states = [self.state[name] for name in self.state_names]
        if isinstance(self.params, ParameterVector):
            grad = self.params.gather_grads()
            for piece in self.params.slices:
                yield (self.params.data[piece], grad[piece], *(s[piece] for s in states))
        else:
            for i, p in enumerate(self.params):
                if p.grad is not None:  # as PyTorch: a parameter without a gradient is left alone
                    yield (p.data, p.grad, *(s[i] for s in states))

    def zero_grad(self):
        """Forget the gradients of the last backward pass."""
        for p in self.params:
            p.grad = None

    def step(self):
        """One update of every parameter from its current .grad."""
        self.step_count += 1
        for piece in self._pieces():
            self.update(*piece)

    def update(self, p, g, *state):  # pragma: no cover - abstract
        raise NotImplementedError

    # State dicts: hyperparameters as numbers, each buffer as one flat array.
    def state_dict(self):
        state = {"step_count": self.step_count, "lr": self.lr}
        state.update({name: _flat(value) for name, value in self.state.items()})
        return state

    def load_state_dict(self, state):
        who = type(self).__name__
        missing = [name for name in ["step_count", "lr", *self.state_names] if name not in state]
        if missing:
            raise ValueError(f"{who}.load_state_dict: missing entries {missing}")
        for name in self.state_names:
            _load_flat(self.state[name], state[name], f"{who}.load_state_dict: {name}")
        self.step_count = int(state["step_count"])
        self.lr = float(state["lr"])
        return self


def _load_flat(target, value, what):
    """Copy a flat array into a flat buffer, or into a list of arrays in order."""
    arrays = [target] if B.is_array(target) else target
    total = sum(math.prod(a.shape) for a in arrays)
    if tuple(value.shape) != (total,):
        raise ValueError(f"{what} has shape {tuple(value.shape)}, expected ({total},) (a different model?)")
    value = B.asarray(value, dtype=arrays[0].dtype)
    start = 0
    for a in arrays:
        stop = start + math.prod(a.shape)
        a[...] = xp.reshape(value[start:stop], a.shape)
        start = stop


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (PyTorch's form)."""

    state_names = ("momentum_buffer",)

    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        _check_positive("momentum", momentum, "SGD", allow_zero=True)
        _check_positive("weight_decay", weight_decay, "SGD", allow_zero=True)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def update(self, p, g, b):
        if self.weight_decay:
            g = g + self.weight_decay * p  # L2 penalty
        if self.momentum:
            b[...] = g if self.step_count == 1 else self.momentum * b + g
            g = g + self.momentum * b if self.nesterov else b
        p[...] = p - self.lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015) with PyTorch's update: bias correction, then epsilon; L2 weight decay."""

    state_names = ("exp_avg", "exp_avg_sq")  # m and v, PyTorch's names (checkpoints keep them)
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

    def update(self, p, g, m, v):
        """Kingma and Ba 2015, Algorithm 1, at step k = step_count."""
        k, beta1, beta2, lr = self.step_count, self.beta1, self.beta2, self.lr
        if self.weight_decay and self.decoupled:
            p[...] = p * (1 - lr * self.weight_decay)  # AdamW: decay the weights themselves
        elif self.weight_decay:
            g = g + self.weight_decay * p  # Adam: the L2 penalty goes into the gradient
        m[...] = beta1 * m + (1 - beta1) * g  # biased first moment
        v[...] = beta2 * v + (1 - beta2) * g**2  # biased second moment
        m_hat = m / (1 - beta1**k)  # bias-corrected
        v_hat = v / (1 - beta2**k)
        p[...] = p - lr * m_hat / (xp.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter 2019), PyTorch's default 0.01."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm(params, max_norm):
    """Scale all gradients so their joint L2 norm is at most max_norm (as PyTorch).

    g = g * min(1, max_norm / (norm + 1e-6)) for every p.grad, out of place
    (a gradient array may be shared). Returns the norm before clipping as a
    0-d backend array (a float would force a GPU synchronisation every step).
    """
    _check_positive("max_norm", max_norm, "clip_grad_norm")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return B.asarray(0.0)
    norm = xp.sqrt(sum(xp.vecdot(xp.reshape(g, (-1,)), xp.reshape(g, (-1,))) for g in grads))
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for p in params:
        if p.grad is not None:
            p.grad = p.grad * scale
    return norm


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

    shadow = decay * shadow + (1 - decay) * p after every optimizer step.
    With warmup the decay at update k is min(decay, (1 + k) / (10 + k)), so
    the average is not dominated by the random initial weights in short
    runs. ``params`` is a list of parameters or a ParameterVector (then the
    shadow is one vector, updated in the vector's slices).
    ``average_parameters()`` swaps the averaged weights in for sampling.
    """

    def __init__(self, params, decay=0.999, warmup=True):
        self.params = params if isinstance(params, ParameterVector) else _check_params(params, "EMA")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.shadow = self._copy_of_parameters()

    def _copy_of_parameters(self):
        if isinstance(self.params, ParameterVector):
            return _copy(self.params.data)
        return [_copy(p.data) for p in self.params]

    def _pairs(self):
        """(shadow, p) for each piece of storage."""
        if isinstance(self.params, ParameterVector):
            for piece in self.params.slices:
                yield self.shadow[piece], self.params.data[piece]
        else:
            yield from zip(self.shadow, (p.data for p in self.params))

    def current_decay(self):
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self):
        """Fold the current parameters into the average."""
        decay = self.current_decay()
        self.updates += 1
        for shadow, p in self._pairs():
            shadow[...] = decay * shadow + (1 - decay) * p

    def copy_to(self):
        """Overwrite the parameters with the averaged values."""
        for shadow, p in self._pairs():
            p[...] = shadow

    @contextlib.contextmanager
    def average_parameters(self):
        """The averaged weights inside the block, the trained ones restored after."""
        trained = self._copy_of_parameters()
        self.copy_to()
        try:
            yield self
        finally:
            _load_flat(self._storage(), _flat(trained), "EMA.average_parameters")

    def _storage(self):
        if isinstance(self.params, ParameterVector):
            return self.params.data
        return [p.data for p in self.params]

    def state_dict(self):
        return {"shadow": _flat(self.shadow), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state):
        for name in ("shadow", "updates"):
            if name not in state:
                raise ValueError(f"EMA.load_state_dict: missing entry {name!r}")
        _load_flat(self.shadow, state["shadow"], "EMA.load_state_dict: shadow")
        self.updates = int(state["updates"])
        if "decay" in state:
            self.decay = float(state["decay"])
        return self
