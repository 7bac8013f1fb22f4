"""Samplers: ancestral DDPM (Algorithm 2), DDIM (Song et al. 2020, Eq. 12), guidance.

Both take any callable ``model(x_t, t)`` that returns a prediction of the
diffusion's prediction_type (eps, x0 or v) as a Tensor or a backend array,
with x_t an (N, ...) array and t an int64 array (N,) of 0-indexed steps
(code t = paper t - 1: the loop runs t = T-1 .. 0 for the paper's T .. 1).
All rows of a step share t, so a model with ``accepts_scalar_t = True``
(tinydiff's denoisers) is handed the one Python int instead, and computes
its timestep conditioning once per step rather than once per row.
``classifier_free_guidance`` wraps a class-conditional model (Ho and
Salimans 2022, Eq. 6) so either sampler can use it.

Reproducibility: the noise of sample i depends only on the generator's seed
and i, not on how many samples are drawn or on ``batch_size``. One seed
``base`` is taken from ``rng`` per call; x_T is drawn from
default_rng((base, T)) and the noise added at step t from
default_rng((base, t)), each as one array of the full shape, and NumPy fills
rows in order, so row i of a larger draw is row i of a smaller one. The
samples themselves are equal to float32 rounding, not bit for bit: the
model's matrix products round differently with the number of rows in a call
(BLAS blocks them differently), and that difference is carried through the
steps without growing. Measured on a trained 2D model, DDPM 1000 steps and
DDIM 50: sample i of a 2000-sample run against the same sample from a
37-sample run, or with batch_size=100, differs by at most 4e-6 (values up
to 3.5). A run repeated with the same arguments is bit for bit the same.
(On CuPy the numbers come from CuPy's own generator: the same seed gives
the same samples, and the row property held on CuPy 14, but CuPy does not
promise it.)
"""

from __future__ import annotations

import math
import numbers

from . import backend as B
from .autograd import no_grad, unwrap
from .backend import xp
from .checks import check_choice, check_int
from .diffusion import VARIANCES

SPACINGS = ("linspace", "leading", "trailing")


def timesteps(T, steps, spacing="linspace"):
    """The descending 0-indexed steps a sampler visits: a list of ``steps`` ints in 0..T-1.

    linspace  evenly from T - 1 down to 0, rounded (both ends are always in;
              one step is [T - 1])
    leading   multiples of T // steps from 0: [(steps-1) k, ..., k, 0]; the first
              step is below T - 1, so sampling starts from noise the model
              was trained to see at a lower noise level (Lin et al. 2023)
    trailing  round(T - i T / steps) - 1: from T - 1 down, the last step at
              about T / steps - 1 rather than 0
    With steps = T all three give T-1, ..., 0, the full sequence of Algorithm 2.
    """
    T = check_int("T", T, minimum=1)
    steps = check_int("steps", steps, minimum=1, maximum=T)
    check_choice("spacing", spacing, SPACINGS)
    T, steps = int(T), int(steps)
    if spacing == "linspace":
        if steps == 1:
            return [T - 1]
        ascending = [round(i * (T - 1) / (steps - 1)) for i in range(steps)]
    elif spacing == "leading":
        ascending = [i * (T // steps) for i in range(steps)]
    else:
        ascending = [round(T - i * T / steps) - 1 for i in range(steps)][::-1]
    return [int(t) for t in reversed(ascending)]


def _model_output(output):
    """A model's output as a backend array (a Tensor's data, or the array itself)."""
    return B.asarray(unwrap(output))


def _check_shape(shape):
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints like (N, D), got {shape!r}") from None
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints like (N, D), got {shape!r}")
    return shape


def _predict(model, x, t, batch_size, model_kwargs):
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
        return _model_output(model(x, t if t_all is None else t_all, **kwargs))
    parts = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        # Per-row keyword arrays (class labels, masks) are cut like x.
        chunk_kwargs = {
            k: (v[start:stop, ...] if B.is_array(v) and v.ndim >= 1 and v.shape[0] == n else v)
            for k, v in kwargs.items()
        }
        t_chunk = t if t_all is None else t_all[start:stop]
        parts.append(_model_output(model(x[start:stop, ...], t_chunk, **chunk_kwargs)))
    return xp.concat(parts, axis=0)


class SamplingError(RuntimeError):
    """A sampler produced NaN or inf: a diverged model, a huge guidance weight, an impossible parameterisation."""


def _base_seed(rng):
    """The one draw a sampler takes from ``rng``: every noise array derives from it."""
    if not hasattr(rng, "next_seed"):
        raise ValueError(f"rng must be a generator from tinydiff.backend.default_rng(seed), got {rng!r} "
                         "(the samples of a seed are reproducible: pass default_rng(0) for seed 0)")
    return rng.next_seed()


def _check_model_shape(model, shape):
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


class _Loop:
    """What DDPM and DDIM share: the seeds, the progress bar, the trajectory."""

    def __init__(self, diffusion, shape, rng, steps, dtype, progress, return_trajectory, every, batch_size, desc):
        self.shape = _check_shape(shape)
        check_int("batch_size", batch_size, minimum=1, allow_none=True)
        check_int("every", every, minimum=1, allow_none=True)
        self.dtype = B.default_dtype() if dtype is None else dtype
        self.base = _base_seed(rng)
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


def ddpm(
    model,
    diffusion,
    shape,
    rng,
    *,
    variance="beta",
    clip_x0=False,
    progress=False,
    return_trajectory=False,
    every=None,
    batch_size=None,
    model_kwargs=None,
    dtype=None,
):
    """Algorithm 2: ancestral sampling from x_T ~ N(0, I) through all T steps.

    At each t = T-1 .. 0 (paper T .. 1): x_{t-1} = mu_theta(x_t, t) + sigma_t z,
    z ~ N(0, I) except at the last step, where z = 0. mu_theta is the
    posterior mean (Eq. 7) at the predicted x_0, which equals Eq. 11 for an
    eps-prediction; sigma_t^2 = beta_t (``variance="beta"``) or
    beta_tilde_t (``"beta_tilde"``), Sec. 3.2. With ``clip_x0`` the predicted
    x_0 is clipped to [-1, 1] and the noise prediction re-derived from it
    (see GaussianDiffusion.split_prediction).

    Returns the samples x_0, an array of ``shape`` (dtype default float32), or
    (samples, trajectory) with ``return_trajectory``: a dict of lists
    "t" (the step), "x" (x_t fed to the model) and "x0" (its predicted x_0),
    recorded every ``every`` steps (default: about ten frames) and at the
    last step. ``batch_size`` chunks the model calls; ``progress`` shows tqdm.
    """
    check_choice("variance", variance, VARIANCES)
    loop = _Loop(
        diffusion, shape, rng, list(range(diffusion.T - 1, -1, -1)), dtype,
        progress, return_trajectory, every, batch_size, "ddpm",
    )
    _check_model_shape(model, loop.shape)
    x = loop.noise(loop.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, t in loop.iterable:
            output = _predict(model, x, t, batch_size, model_kwargs)
            p = diffusion.p_mean_variance(output, x, t, variance=variance, clip_x0=clip_x0)
            loop.keep(i, t, x, p.x0)
            if t > 0:
                x = p.mean + xp.sqrt(p.variance) * loop.noise(t)
            else:
                x = p.mean  # Algorithm 2: z = 0 at the last step
    return loop.result(x)


def ddim(
    model,
    diffusion,
    shape,
    rng,
    *,
    steps=50,
    eta=0.0,
    spacing="linspace",
    clip_x0=False,
    progress=False,
    return_trajectory=False,
    every=None,
    batch_size=None,
    model_kwargs=None,
    dtype=None,
):
    """DDIM (Song et al. 2020, Eq. 12) on a subsequence tau of ``steps`` steps.

    With alpha_bar_t (DDIM's alpha_t) at the current step t = tau_i and
    alpha_bar_prev at the next one, t' = tau_{i+1} (t - k, not t - 1; 1 after the
    last step):

        x_{t'} = sqrt(alpha_bar_prev) x0_hat
                 + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z,
        sigma  = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t))
                     sqrt(1 - alpha_bar_t / alpha_bar_prev)          (Eq. 16)

    eta = 0 is deterministic; eta = 1 on the full sequence is the DDPM
    posterior step with sigma_t^2 = beta_tilde_t. ``spacing`` picks tau (see
    ``timesteps``). Other arguments and the return value as in ``ddpm``.
    """
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
        raise ValueError(f"eta must be a number >= 0 (0: deterministic, 1: DDPM-like), got {eta!r}")
    sequence = timesteps(diffusion.T, steps, spacing)
    loop = _Loop(
        diffusion, shape, rng, sequence, dtype,
        progress, return_trajectory, every, batch_size, "ddim",
    )
    _check_model_shape(model, loop.shape)
    # The schedule as Python floats once, so each step's coefficients are
    # scalars (no float64 array meets the float32 samples, no device sync).
    alpha_bars = [float(v) for v in B.to_numpy(diffusion.schedule.alpha_bars).tolist()]
    x = loop.noise(loop.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, t in loop.iterable:
            output = _predict(model, x, t, batch_size, model_kwargs)
            eps, x0 = diffusion.split_prediction(output, x, t, clip_x0=clip_x0)
            loop.keep(i, t, x, x0)
            alpha_bar = alpha_bars[t]
            prev = sequence[i + 1] if i + 1 < len(sequence) else -1
            alpha_bar_prev = alpha_bars[prev] if prev >= 0 else 1.0
            # Eq. 16; 0 at the last step (alpha_bar_prev = 1).
            sigma = (
                eta
                * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
                * math.sqrt(1.0 - alpha_bar / alpha_bar_prev)
            )
            direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma * sigma, 0.0))
            x = math.sqrt(alpha_bar_prev) * x0 + direction * eps  # Eq. 12
            if sigma > 0.0:
                x = x + sigma * loop.noise(t)
    return loop.result(x)


def classifier_free_guidance(model, guidance):
    """Ho and Salimans 2022, Eq. 6: a model whose output is (1 + w) out(x, c) - w out(x, null).

    ``model(x_t, t, y=labels)`` is a class-conditional denoiser and
    ``model(x_t, t)`` (no label) its unconditional output, the learned null
    class. The returned callable takes the same arguments and can be passed
    to ``ddpm`` or ``ddim`` with ``model_kwargs={"y": labels}``. w = 0 is the
    plain conditional model. The same mix works for eps, x0 and v outputs:
    each is affine in the other with the same x_t term, so mixing outputs
    mixes the predicted noise the same way.
    """
    if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not guidance >= 0:
        raise ValueError(f"guidance must be a number w >= 0 (0: no guidance), got {guidance!r}")
    w = float(guidance)

    def guided(x, t, y=None, **kwargs):
        conditional = _model_output(model(x, t, y=y, **kwargs))
        if w == 0.0 or y is None:
            return conditional
        unconditional = _model_output(model(x, t, **kwargs))
        return (1.0 + w) * conditional - w * unconditional

    guided.accepts_scalar_t = getattr(model, "accepts_scalar_t", False)  # t goes to the model unchanged
    guided.data_dim = getattr(model, "data_dim", None)
    return guided


def repaint_schedule(T, jump_length=10, resamplings=1):
    """The order in which RePaint visits the noise levels (Lugmayr et al. 2022, Sec. 4.2).

    Returns a list of levels from T down to 0, where level k is the paper's
    x_k (x_T is noise, x_0 the image). It walks down one level at a time;
    at every ``jump_length``-th level it jumps back up ``jump_length``
    levels and walks down again, ``resamplings - 1`` times, so the known and
    generated regions have time to agree ("harmonize"). resamplings = 1 is
    plain replacement at every step.
    """
    for name, value in (("T", T), ("jump_length", jump_length), ("resamplings", resamplings)):
        check_int(name, value, minimum=1)
    jumps_left = {k: resamplings - 1 for k in range(0, T - jump_length, jump_length)}
    level, levels = T, [T]
    while level > 0:
        level -= 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    return levels


def _mask_like(mask, known):
    """The mask as an array of known's shape and dtype (ValueError if it does not broadcast)."""
    mask = xp.astype(B.asarray(mask), known.dtype)
    try:
        return xp.broadcast_to(mask, tuple(known.shape))
    except ValueError:
        raise ValueError(
            f"mask must have the shape of known {tuple(known.shape)} or broadcast to it, got {tuple(mask.shape)}"
        ) from None


def inpaint(
    model,
    diffusion,
    known,
    mask,
    rng,
    *,
    jump_length=10,
    resamplings=1,
    variance="beta",
    clip_x0=False,
    progress=False,
    batch_size=None,
    model_kwargs=None,
):
    """RePaint inpainting (Lugmayr et al. 2022) with any unconditional model.

    known  (N, ...) the data x_0 whose masked part is known (values elsewhere ignored)
    mask   1 where x_0 is known, 0 where it is to be generated (same shape, or broadcastable)

    Each reverse step from level k to k-1 combines (RePaint Eq. 8):
      known region:   x_{k-1} ~ q(x_{k-1} | x_0) from the known data (Eq. 4;
                      at the last step x_0 itself, so known values return exactly);
      unknown region: x_{k-1} ~ p_theta(x_{k-1} | x_k), the ancestral step of Algorithm 2.
    When the schedule (``repaint_schedule``) jumps up a level, x_{k+1} is drawn
    from q(x_{k+1} | x_k) (Eq. 2), "resampling" so the two regions harmonize.
    Returns the completed x_0 (an array like ``known``).
    """
    check_choice("variance", variance, VARIANCES)
    known = B.asarray(known)
    mask = _mask_like(mask, known)
    levels = repaint_schedule(diffusion.T, jump_length, resamplings)
    shape = tuple(known.shape)
    base = _base_seed(rng)

    def noise(*key):  # keyed by the position in the schedule: sample i depends on seed and i only
        return B.default_rng((base, *key)).normal(shape, dtype=known.dtype)

    pairs = list(zip(levels[:-1], levels[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="repaint")
    x = noise(0, diffusion.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, (level, next_level) in enumerate(pairs):
            if next_level > level:  # jump up: x_{k+1} ~ q(x_{k+1} | x_k), Eq. 2 (code step t = k)
                x = diffusion.q_step(x, level, noise(1, i))
                continue
            t = level - 1  # code step of the transition x_level -> x_{level-1}
            output = _predict(model, x, t, batch_size, model_kwargs)
            p = diffusion.p_mean_variance(output, x, t, variance=variance, clip_x0=clip_x0)
            unknown = p.mean + xp.sqrt(p.variance) * noise(2, i) if t > 0 else p.mean
            if t > 0:  # the known region at level t (code step t - 1), Eq. 4
                known_noisy = diffusion.q_sample(known, t - 1, noise(3, i))
            else:
                known_noisy = known
            x = mask * known_noisy + (1.0 - mask) * unknown
    return check_finite(x, "inpaint")
