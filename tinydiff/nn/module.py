"""Module and Parameter: PyTorch's interfaces for models written as plain Python.

``Module`` finds its parameters by walking its attributes (Parameters,
sub-Modules, and lists of Modules), so a model is plain Python:

    class Net(Module):
        def __init__(self):
            self.hidden = Linear(2, 64)
            self.out = Linear(64, 2)
"""

from __future__ import annotations

from .. import backend as B
from ..autograd import Tensor


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
        """Set training mode, as in PyTorch (only Dropout behaves differently: it drops in training mode)."""
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
            # Write into the existing array: it may be a view into an optim.ParameterVector.
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


