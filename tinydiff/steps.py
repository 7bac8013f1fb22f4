"""What a timestep argument means, decided in one place (Annotated Diffusion's ``extract`` idea).

Everything that takes a step ``t`` (the denoisers, the diffusion's
coefficient look-ups) passes it through ``timestep_rows`` first. ``t`` is
either

- an integer array of shape (N,), one 0-indexed step per row of the batch
  (training: Algorithm 1 draws a t for every example), or
- one int (Python or NumPy) shared by every row (a sampler's step).

``timestep_rows`` turns both into an int64 array of row steps: (N,) for the
array, (1,) for the int. Whatever is computed from it, an embedding or a
schedule coefficient, then has one row per example or one row in all, and
broadcasts against the batch the same way. One int therefore costs one
look-up instead of N, which is what makes a sampler's step cheap.
"""

from __future__ import annotations

import numbers

from . import backend as B
from .backend import xp


def timestep_rows(t, n=None, T=None):
    """The steps of a batch of ``n`` rows as an int64 array of shape (n,) or, for one int t, (1,).

    An array of another length than n (when n is given) is refused, and so
    is an int outside 0..T-1 (when T is given). An array is not
    range-checked: on a GPU that would be a synchronisation per call.
    """
    if hasattr(t, "requires_grad") and hasattr(t, "data"):  # a Tensor: its array
        t = t.data
    if isinstance(t, numbers.Integral) and not isinstance(t, bool):
        if T is not None and not 0 <= t < T:
            raise ValueError(f"t must be in 0..{T - 1} (0-indexed: paper t - 1), got {t}")
        return xp.full((1,), int(t), dtype=xp.int64)
    if B.is_array(t) and t.ndim == 0:
        return xp.reshape(t, (1,))
    if not B.is_array(t) or t.ndim != 1:
        raise ValueError(f"t must be an int or an integer array of shape (N,), got {t!r}")
    if n is not None and t.shape[0] not in (1, n):
        raise ValueError(f"t has {t.shape[0]} steps for {n} rows of x: give one per row, or one int for all")
    return t


def timesteps_per_row(t, n, T=None):
    """``timestep_rows`` stretched to shape (n,): one step for every row, also for one int t.

    For code that needs each row's own step (a per-row loss weight, the
    exact mixture denoiser); the denoisers and coefficient look-ups take
    the short form instead.
    """
    return xp.broadcast_to(timestep_rows(t, n, T), (n,))
