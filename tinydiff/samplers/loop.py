"""What every sampler shares: the model call, the seeds, the checks, the progress bar, the trajectory.

    predict        the model's output at one step for every row, in chunks of batch_size rows
    SamplingLoop   the per-call seed, x_T and the noise of each step keyed by (seed, step),
                   the progress bar and the recorded trajectory
    check_finite   SamplingError when a result holds NaN or inf

The samplers themselves (ancestral.py, solvers.py, guidance.py) are the
papers' algorithms written around these.
"""

from __future__ import annotations

import math
import numbers

from .. import backend as B
from ..autograd import unwrap
from ..backend import xp
from ..checks import check_int


def model_output(output):
    """A model's output as a backend array (a Tensor's data, or the array itself)."""
    return B.asarray(unwrap(output))


def check_shape(shape):
    """``shape`` as a tuple of positive ints (an int n means (n,)); ValueError otherwise."""
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints like (N, D), got {shape!r}") from None
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints like (N, D), got {shape!r}")
    return shape


def predict(model, x, t, batch_size, model_kwargs):
    """The model's output at step t for every row of x, in chunks of batch_size rows.

    Every row of a step shares t. A model that says so (``accepts_scalar_t``,
    as tinydiff's denoisers do) gets the one int and computes its timestep
    conditioning once per step; any other callable gets the (N,) array.
    """
    n = x.shape[0]
    if getattr(model, "accepts_scalar_t", False):
        t_all = None
    else:
        t_all = xp.full((n,), t, dtype=xp.int64)  # (N,)
    kwargs = model_kwargs or {}
    if batch_size is None or batch_size >= n:
        return model_output(model(x, t if t_all is None else t_all, **kwargs))
    parts = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        # Per-row keyword arrays (class labels, masks) are cut like x.
        chunk_kwargs = {
            k: (v[start:stop, ...] if B.is_array(v) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in kwargs.items()
        }
        t_chunk = t if t_all is None else t_all[start:stop]
        parts.append(model_output(model(x[start:stop, ...], t_chunk, **chunk_kwargs)))
    return xp.concat(parts, axis=0)


class SamplingError(RuntimeError):
    """A sampler produced NaN or inf: a diverged model, a huge guidance weight, an impossible parameterisation."""


def base_seed(rng):
    """The one draw a sampler takes from ``rng``: every noise array derives from it."""
    if not hasattr(rng, "next_seed"):
        raise ValueError(f"rng must be a generator from tinydiff.backend.default_rng(seed), got {rng!r} "
                         "(the samples of a seed are reproducible: pass default_rng(0) for seed 0)")
    return rng.next_seed()


def check_model_shape(model, shape):
    """Refuse a sample shape the model cannot denoise (when the model says its data_dim)."""
    data_dim = getattr(model, "data_dim", None)
    if data_dim is not None and math.prod(shape[1:]) != data_dim:
        raise ValueError(f"shape {shape} does not fit the model, which denoises vectors of {data_dim} numbers: "
                         f"use shape (N, {data_dim})")


def check_finite(x, who):
    """``x`` if every value is finite; otherwise SamplingError saying how many are not, and why that happens."""
    bad = int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(x)), xp.int64)))  # one synchronisation per call
    if bad:
        raise SamplingError(
            f"{who}: {bad} of {math.prod(x.shape)} sample values are NaN or inf (a model that diverged in "
            "training, a guidance weight too large for it, or a step the parameterisation cannot take)"
        )
    return x


class SamplingLoop:
    """What the samplers share: the seeds, the progress bar, the trajectory.

    ``steps`` is the list of 0-indexed steps the sampler visits (one entry
    per iteration of ``iterable``, which yields (i, t)).
    """

    def __init__(self, diffusion, shape, rng, steps, dtype, progress, return_trajectory, every, batch_size, desc):
        self.shape = check_shape(shape)
        check_int("batch_size", batch_size, minimum=1, allow_none=True)
        check_int("every", every, minimum=1, allow_none=True)
        self.dtype = B.default_dtype() if dtype is None else dtype
        self.base = base_seed(rng)
        self.desc = desc
        self.T = diffusion.T
        self.steps = steps
        self.batch_size = batch_size
        self.record = return_trajectory
        self.every = every if every is not None else max(1, len(steps) // 10)
        self.trajectory = {"t": [], "x": [], "x0": []}
        iterable = list(enumerate(steps))
        if progress:
            from tqdm.auto import tqdm

            iterable = tqdm(iterable, desc=desc, total=len(steps))
        self.iterable = iterable

    def noise(self, key):
        """The standard normal array keyed (base, key): key T for x_T, key t for step t."""
        return B.default_rng((self.base, int(key))).normal(self.shape, dtype=self.dtype)

    def keep(self, i, t, x, x0):
        if self.record and (i % self.every == 0 or i == len(self.steps) - 1):
            self.trajectory["t"].append(int(t))
            self.trajectory["x"].append(x)
            self.trajectory["x0"].append(x0)

    def result(self, x):
        check_finite(x, self.desc)
        return (x, self.trajectory) if self.record else x
