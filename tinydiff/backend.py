"""The array namespace: the one place that knows which array library runs.

Everything in the core (autograd, nn, optim, schedules, diffusion, samplers)
does its arithmetic through ``xp``, a thin proxy to the current namespace:

    from tinydiff.backend import xp
    y = xp.exp(x)

Three namespaces are supported:

- ``"numpy"`` (the default): plain NumPy on the CPU.
- ``"cupy"``: the same code on an NVIDIA GPU through CuPy.
- ``"array_api_strict"``: a namespace that refuses anything outside the
  array API standard. The tests run the core under it to prove, without a
  GPU, that the core calls nothing NumPy-only (and so will run on CuPy).

Switch with ``set_backend(name)`` or the environment variable
``TINYDIFF_BACKEND`` (read once, at import). Arrays made under one backend
must not be mixed with another: switch before building a model.

Random numbers come from ``default_rng(seed)``, a generator that draws
normal, uniform and integer arrays directly in the current namespace, so
noise never crosses from host to device inside a training or sampling loop.
``to_numpy(x)`` is the one way to bring an array back to the host.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy as _np

BACKENDS = ("numpy", "cupy", "array_api_strict")

# float32 for training and sampling; gradient checks and equation tests ask
# for float64 explicitly.
DEFAULT_DTYPE = "float32"

_current_name = "numpy"
_current_module = _np


class BackendError(RuntimeError):
    """A backend was asked for that cannot run here (not installed, no GPU)."""


def _load(name):
    if name == "numpy":
        return _np
    if name == "array_api_strict":
        try:
            return importlib.import_module("array_api_strict")
        except ImportError as error:
            raise BackendError(
                "backend 'array_api_strict' is not installed: "
                "pip install array-api-strict (or pip install -e '.[test]')"
            ) from error
    if name == "cupy":
        try:
            cupy = importlib.import_module("cupy")
        except ImportError as error:
            raise BackendError(
                "backend 'cupy' is not installed: pip install -e '.[gpu]' "
                "installs cupy-cuda12x; see README.md for the wheel that "
                "matches your CUDA version"
            ) from error
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as error:  # the CUDA driver itself is missing
            raise BackendError(
                f"backend 'cupy' is installed but CUDA is not usable here ({error}); "
                "use set_backend('numpy') or TINYDIFF_BACKEND=numpy"
            ) from error
        if count < 1:
            raise BackendError(
                "backend 'cupy' found no GPU; use set_backend('numpy') "
                "or TINYDIFF_BACKEND=numpy"
            )
        return cupy
    raise ValueError(
        f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}"
    )


def set_backend(name: str) -> None:
    """Make ``name`` ("numpy", "cupy" or "array_api_strict") the array namespace."""
    global _current_name, _current_module, ENV_ERROR
    module = _load(name)
    _current_name, _current_module = name, module
    ENV_ERROR = None  # a backend was chosen: a bad TINYDIFF_BACKEND no longer matters
    xp.__dict__.clear()  # forget the names looked up in the previous namespace


def get_backend() -> str:
    """The name of the current backend."""
    return _current_name


@contextlib.contextmanager
def using(name: str):
    """Run a block under another backend, then switch back (used by tests)."""
    previous = _current_name
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _load("cupy")
    except BackendError:
        return False
    return True


class _Namespace:
    """Forwards attribute look-ups to the current array namespace.

    ``from tinydiff.backend import xp`` binds this proxy once; every
    ``xp.exp`` then finds the namespace chosen by the latest set_backend.
    """

    def __getattr__(self, name):
        # Called only for names not yet in this object's __dict__: look the name up
        # once and keep it there, so the next xp.exp is a plain attribute read
        # (a training step of the 2-D model makes about 40 of them).
        # set_backend empties the cache.
        if ENV_ERROR:
            raise BackendError(ENV_ERROR)
        try:
            value = getattr(_current_module, name)
        except AttributeError:
            # Older CuPy releases lack a few array-API names: map them.
            if name not in _ALIASES:
                raise
            value = _ALIASES[name](_current_module)
        self.__dict__[name] = value
        return value

    def __repr__(self):
        return f"<array namespace {_current_name}>"


_ALIASES = {
    "astype": lambda m: (lambda x, dtype, copy=True: x.astype(dtype, copy=copy)),
    "permute_dims": lambda m: m.transpose,
    "concat": lambda m: m.concatenate,
    "pow": lambda m: m.power,
    "vecdot": lambda m: (lambda a, b, axis=-1: m.dot(a, b) if a.ndim == b.ndim == 1 else m.sum(a * b, axis=axis)),
    "matrix_transpose": lambda m: (lambda x: m.swapaxes(x, -1, -2)),
    "unstack": lambda m: (lambda x, axis=0: tuple(m.moveaxis(x, axis, 0))),
    "cumulative_sum": lambda m: (lambda x, axis=None, dtype=None: m.cumsum(x, axis=axis, dtype=dtype)),
    "cumulative_prod": lambda m: (lambda x, axis=None, dtype=None: m.cumprod(x, axis=axis, dtype=dtype)),
}

xp = _Namespace()


def scatter_add_rows(n_rows, indices, rows):
    """A (n_rows, ...) array of zeros with ``rows[k]`` added into row ``indices[k]``.

    Repeated indices add up (``out[idx] += rows`` would keep only one). NumPy
    and CuPy have ``add.at``; the array API standard has no scatter, so on
    other namespaces this is a one-hot matrix product.
    """
    module = _current_module
    out_shape = (n_rows,) + tuple(rows.shape[1:])
    if _current_name in ("numpy", "cupy"):
        out = module.zeros(out_shape, dtype=rows.dtype)
        module.add.at(out, indices, rows)
        return out
    one_hot = module.astype(
        module.reshape(indices, (-1, 1)) == module.arange(n_rows, dtype=indices.dtype), rows.dtype
    )  # (K, n_rows)
    flat = module.reshape(rows, (rows.shape[0], -1))
    return module.reshape(one_hot.T @ flat, out_shape)


def default_dtype():
    """The default floating dtype of the current namespace (float32)."""
    return getattr(_current_module, DEFAULT_DTYPE)


def float64():
    """The float64 dtype of the current namespace: schedule tables, exact computations, gradient checks."""
    return _current_module.float64


def dtype(name: str):
    """A dtype of the current namespace by name: dtype("float64")."""
    return getattr(_current_module, name)


def is_array(value) -> bool:
    """True for an array of the current namespace."""
    if _current_name == "numpy":
        return isinstance(value, _np.ndarray)
    return type(value).__module__.split(".")[0] == _current_module.__name__.split(".")[0]


def asarray(value, dtype=None):
    """An array in the current namespace; Python and NumPy floats become float32.

    Integer and boolean input keeps its kind. A host NumPy array is moved to
    the device when the backend is CuPy.
    """
    if dtype is None and not is_array(value):
        kind = _np.asarray(value).dtype.kind
        if kind == "f":
            dtype = default_dtype()
    if isinstance(value, _np.ndarray) and _current_name == "array_api_strict":
        value = value.tolist() if value.ndim == 0 else value
    return _current_module.asarray(value, dtype=dtype)


def asarray_of_numbers(value, who="data"):
    """``asarray(value)`` for numbers (bool, int, float); TypeError naming ``who`` for None, text, objects."""
    if value is None:
        raise TypeError(f"{who} must be a number, a list of numbers or an array, got None")
    try:
        host = _np.asarray(value)
    except (TypeError, ValueError) as error:  # ragged lists, say
        raise TypeError(f"{who} must be a number, a list of numbers or an array ({error})") from None
    if host.dtype.kind not in "biuf":
        shown = f"{type(value).__name__} {value!r:.60}" if host.dtype.kind in "US" else f"an array of {host.dtype}"
        raise TypeError(f"{who} must be numbers (bool, int or float), got {shown}")
    return asarray(value)


def to_numpy(value) -> _np.ndarray:
    """Bring an array (or Tensor, or Python number) to the host as NumPy."""
    if type(value).__name__ in ("Tensor", "Parameter"):
        value = value.data  # (not hasattr "data": CuPy arrays have a .data pointer too)
    if isinstance(value, _np.ndarray):
        return value
    if type(value).__module__.startswith("cupy"):
        return value.get()
    if type(value).__module__.startswith("array_api_strict"):
        return _np.asarray(value._array)
    return _np.asarray(value)


_KEEPING_FREED_MEMORY = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse (True when it agreed).

    The engine allocates every activation and gradient afresh on each step.
    By default glibc serves large arrays with fresh mmaps and hands freed
    memory back to the system, so the next step page-faults all of it in
    again: thousands of faults a step, up to half the time of a small
    model's step. A fixed mmap threshold keeps large arrays on the heap and
    a top pad stops the heap from shrinking. The training loop calls this;
    it changes the whole process, so it is not done at import. A no-op
    outside glibc (macOS, Windows) and on other backends.
    """
    global _KEEPING_FREED_MEMORY
    if _KEEPING_FREED_MEMORY or _current_name == "cupy":
        return _KEEPING_FREED_MEMORY
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_top_pad, m_mmap_threshold = -2, -3  # glibc's malloc.h
    _KEEPING_FREED_MEMORY = mallopt(m_mmap_threshold, 256 << 20) == 1 and mallopt(m_top_pad, 64 << 20) == 1
    return _KEEPING_FREED_MEMORY


def synchronize() -> None:
    """Wait for the GPU to finish (a no-op on the CPU); benchmarks call it."""
    if _current_name == "cupy":
        _current_module.cuda.Stream.null.synchronize()


class Generator:
    """A seeded random generator that draws arrays in the current namespace.

    On NumPy and array_api_strict the numbers come from NumPy's PCG64, so
    the same seed gives the same arrays bit for bit on both; the state can be
    saved in a checkpoint (``state`` / ``set_state``). On CuPy they are drawn
    on the GPU by CuPy's own generator, so no noise crosses from the host in
    an inner loop; those numbers differ from NumPy's for the same seed.

    ``seed`` may be an int or a tuple of ints (a seed and a stream key, say
    ``(seed, step)``), as NumPy's SeedSequence accepts.
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._host = _np.random.Generator(_np.random.PCG64(_np.random.SeedSequence(seed)))
        self._backend = _current_name
        self._device = None
        if _current_name == "cupy":
            # Derive the device seed from the host stream: deterministic in seed.
            device_seed = int(self._host.integers(0, 2**63 - 1))
            self._device = _current_module.random.default_rng(device_seed)

    def _finish(self, host_array, dtype):
        if _current_name == "numpy":
            return host_array
        return asarray(host_array, dtype=dtype)

    def normal(self, shape, dtype=None):
        """Standard normal draws of the given shape (default float32)."""
        dtype = default_dtype() if dtype is None else dtype
        if self._device is not None:
            return self._device.standard_normal(size=shape, dtype=dtype)
        host_dtype = _np.float32 if "32" in str(dtype) else _np.float64
        return self._finish(self._host.standard_normal(size=shape, dtype=host_dtype), dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype=None):
        """Uniform draws on [low, high) of the given shape (default float32)."""
        dtype = default_dtype() if dtype is None else dtype
        if self._device is not None:
            return self._device.random(size=shape, dtype=dtype) * (high - low) + low
        host_dtype = _np.float32 if "32" in str(dtype) else _np.float64
        sample = self._host.random(size=shape, dtype=host_dtype)
        sample = sample * host_dtype(high - low) + host_dtype(low)
        return self._finish(sample, dtype)

    def integers(self, low, high, shape):
        """Integers in [low, high) as an int64 array of the given shape."""
        if self._device is not None:
            return self._device.integers(low, high, size=shape, dtype=_current_module.int64)
        return self._finish(self._host.integers(low, high, size=shape, dtype=_np.int64), None)

    def permutation(self, n):
        """A random permutation of range(n) as a host NumPy array (for data order)."""
        return self._host.permutation(n)

    def next_seed(self) -> int:
        """A fresh Python int drawn from this generator, to seed a child stream."""
        return int(self._host.integers(0, 2**63 - 1))

    def state(self) -> dict:
        """The generator state as JSON-ready data (for checkpoints)."""
        state = {"backend": self._backend, "host": self._host.bit_generator.state}
        if self._device is not None:
            # CuPy exposes no portable state: resume re-seeds the device from the host.
            state["device"] = None
        return state

    def set_state(self, state: dict) -> None:
        """Restore a state from ``state()``."""
        self._host.bit_generator.state = state["host"]
        if self._device is not None:
            self._device = _current_module.random.default_rng(self.next_seed())


def default_rng(seed=None) -> Generator:
    """A seeded generator drawing arrays in the current namespace (see Generator)."""
    return Generator(seed)


# TINYDIFF_BACKEND is read once, here. A bad value does not break the import
# (the command line then says so in one line, exit 2); the first array
# operation raises BackendError instead, unless set_backend chose one since.
ENV_ERROR = None
_env_backend = os.environ.get("TINYDIFF_BACKEND")
if _env_backend:
    try:
        set_backend(_env_backend.strip().lower())
    except (ValueError, BackendError) as _error:
        ENV_ERROR = f"TINYDIFF_BACKEND={_env_backend!r} cannot be used: {_error}"
