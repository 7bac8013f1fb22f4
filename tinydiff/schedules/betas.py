"""Building betas: the linear, cosine, quadratic and sigmoid schedules, zero terminal SNR, make_schedule."""

from __future__ import annotations

import math
import numbers

from .. import backend as B
from ..backend import xp
from .schedule import Schedule

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid", "custom")

# Options each schedule accepts (besides T and zero_terminal_snr).
_OPTIONS = {
    "linear": ("beta_start", "beta_end"),
    "quadratic": ("beta_start", "beta_end"),
    "sigmoid": ("beta_start", "beta_end"),
    "cosine": ("s", "max_beta"),
    "custom": ("betas", "alpha_bar", "max_beta"),
}


def _check_T(T):
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise ValueError(f"T must be an integer >= 1 (the number of diffusion steps), got {T!r}")
    if T < 1:
        raise ValueError(f"T must be an integer >= 1 (the number of diffusion steps), got {T}")
    return int(T)


def _check_float(name, value, low=None, high=None, interval=""):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a real number {interval}, got {value!r}")
    value = float(value)
    if (low is not None and value <= low) or (high is not None and value >= high):
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


def _check_betas(betas, argument, T, schedule_name):
    """ValueError unless betas is a float64 (T,) array with values in (0, 1)."""
    if betas.ndim != 1 or int(betas.shape[0]) != T:
        raise ValueError(
            f"{argument} must have shape (T,) = ({T},) for the {schedule_name} schedule, "
            f"got shape {tuple(betas.shape)}"
        )
    if bool(xp.any(xp.isnan(betas))):
        raise ValueError(f"{argument} contains NaN; betas must lie in the open interval (0, 1)")
    bad = xp.logical_or(betas <= 0.0, betas >= 1.0)
    if bool(xp.any(bad)):
        index = int(xp.argmax(xp.astype(bad, xp.int32)))
        raise ValueError(
            f"{argument} must lie in the open interval (0, 1); index {index} "
            f"(paper t = {index + 1}) is {float(betas[index])!r}"
        )


def _beta_ends(name, T, options):
    """beta_start and beta_end, rescaled by 1000 / T unless given (Improved DDPM)."""
    scale = 1000.0 / T
    start = options.get("beta_start", 1e-4 * scale)
    end = options.get("beta_end", 0.02 * scale)
    start = _check_float("beta_start", start, 0.0, 1.0, "(0, 1)")
    if isinstance(end, numbers.Real) and not isinstance(end, bool) and end >= 1.0 and "beta_end" not in options:
        raise ValueError(
            f"the {name} schedule rescaled to T={T} has beta_end = 0.02 * 1000 / T = {end:g}, "
            "outside (0, 1); use T > 20 or pass beta_end= (and beta_start=) explicitly"
        )
    end = _check_float("beta_end", end, 0.0, 1.0, "(0, 1)")
    return start, end


def _linspace(start, stop, T):
    return xp.linspace(start, stop, T, dtype=B.float64())


def linear_betas(T, beta_start, beta_end):
    """Ho et al. Sec. 4: beta_t linear from beta_start to beta_end."""
    return _linspace(beta_start, beta_end, T)


def quadratic_betas(T, beta_start, beta_end):
    """The original DDPM code's "quad": linear in sqrt(beta), then squared."""
    return _linspace(math.sqrt(beta_start), math.sqrt(beta_end), T) ** 2


def sigmoid_betas(T, beta_start, beta_end):
    """GeoDiff (Xu et al. 2022): beta = sigmoid(linspace(-6, 6, T)) (end - start) + start."""
    u = _linspace(-6.0, 6.0, T)
    return 1.0 / (1.0 + xp.exp(-u)) * (beta_end - beta_start) + beta_start


def cosine_alpha_bar(t, s=0.008):
    """Improved DDPM Eq. 17: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) pi / 2).

    ``t`` is the fraction of the way through the diffusion (paper step / T),
    a float or a backend array in [0, 1].
    """
    if isinstance(t, numbers.Real):
        f = math.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    else:
        f = xp.cos((t + s) / (1 + s) * (math.pi / 2)) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def betas_from_alpha_bar(alpha_bar, T, max_beta=0.999):
    """beta_t = 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), t = 1..T, clipped at max_beta.

    Improved DDPM Eq. 17 turned into betas. ``alpha_bar`` is called once on a
    float64 backend array of the T + 1 points t / T, t = 0..T (or, if it only
    takes Python floats, on each point). The ratio, not a difference, keeps
    the betas exact where alpha_bar is tiny. alpha_bar(1) may be 0 (the cosine
    schedule's end): then the last ratio is 0, beta_T = 1, and the clip at
    max_beta (< 1) keeps alpha_T > 0. A division by a zero alpha_bar((t-1)/T)
    (which would need alpha_bar to hit 0 before the end) is reported as an
    error rather than left as NaN.
    """
    grid = xp.arange(T + 1, dtype=B.float64()) / float(T)
    try:
        values = alpha_bar(grid)
        values = xp.astype(B.asarray(values, dtype=B.float64()), B.float64())
        if tuple(values.shape) != (T + 1,):
            raise TypeError
    except (TypeError, ValueError, AttributeError):
        values = B.asarray([float(alpha_bar(i / T)) for i in range(T + 1)], dtype=B.float64())
    if bool(xp.any(xp.isnan(values))):
        raise ValueError("alpha_bar returned NaN; it must map [0, 1] into (0, 1] decreasingly")
    previous, current = values[:-1], values[1:]
    if bool(xp.any(previous <= 0.0)):
        raise ValueError(
            "alpha_bar must stay > 0 on [0, 1) (it may reach 0 only at t = 1); "
            "a zero before the end would make beta_t = 1 - 0/0"
        )
    betas = 1.0 - current / previous
    return xp.minimum(betas, max_beta)


def rescale_zero_terminal_snr(betas):
    """Lin et al. 2023, Algorithm 1: rescale betas so that alpha_bar_T = 0 (SNR_T = 0).

    Shift sqrt(alpha_bar) so its last value is 0, scale it so its first value
    is unchanged, square, and recover the betas from the ratios. The last beta
    becomes exactly 1: eps-prediction is then undefined at t = T (use v).
    """
    sqrt_alpha_bars = xp.sqrt(xp.cumulative_prod(1.0 - betas))
    first, last = float(sqrt_alpha_bars[0]), float(sqrt_alpha_bars[-1])
    sqrt_alpha_bars = (sqrt_alpha_bars - last) * (first / (first - last))
    alpha_bars = sqrt_alpha_bars**2
    alphas = xp.concat([alpha_bars[0:1], alpha_bars[1:] / alpha_bars[:-1]], axis=0)
    return 1.0 - alphas


def _custom_betas(options):
    """The ``betas=`` of a custom schedule as a float64 array (None when ``alpha_bar=`` is given instead)."""
    has_betas, has_fn = options.get("betas") is not None, options.get("alpha_bar") is not None
    if has_betas == has_fn:
        raise ValueError(
            "the custom schedule needs exactly one of betas= (an array of T values "
            "in (0, 1)) or alpha_bar= (a function of t in [0, 1])"
        )
    if not has_betas:
        if not callable(options["alpha_bar"]):
            raise ValueError(f"alpha_bar must be a function of t in [0, 1], got {options['alpha_bar']!r}")
        return None
    try:
        betas = B.asarray(options["betas"], dtype=B.float64())
    except (TypeError, ValueError) as error:
        raise ValueError(f"betas must be a 1-D array of numbers in (0, 1): {error}") from None
    if betas.ndim != 1:
        raise ValueError(f"betas must be 1-D of shape (T,), got shape {tuple(betas.shape)}")
    return betas


def make_schedule(name, T=None, *, zero_terminal_snr=False, **options):
    """Build a Schedule by name: one of SCHEDULES (see the module docstring).

    ``T`` is the number of diffusion steps (default 1000; for ``custom`` with
    ``betas=`` it defaults to their length). Options by schedule:

    - linear, quadratic, sigmoid: ``beta_start``, ``beta_end`` (default
      1e-4 and 0.02 scaled by 1000 / T);
    - cosine: ``s`` (0.008), ``max_beta`` (0.999)  -- Improved DDPM Eq. 17;
    - custom: ``betas`` (array of T values in (0, 1)) or ``alpha_bar`` (a
      function of t in [0, 1]), and ``max_beta`` (0.999, for ``alpha_bar``).

    ``zero_terminal_snr=True`` rescales the result (Lin et al. 2023).
    Raises ValueError for an unknown name or option, a T that is not an
    integer >= 1, and betas that are NaN, of the wrong length or outside (0, 1).
    """
    if name not in SCHEDULES:
        raise ValueError(f"name must be one of {', '.join(map(repr, SCHEDULES))}, got {name!r}")
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for the {name} schedule; "
            f"allowed: {', '.join(map(repr, _OPTIONS[name]))} and zero_terminal_snr"
        )

    given_betas = _custom_betas(options) if name == "custom" else None
    if T is None and given_betas is not None:
        T = int(given_betas.shape[0])
    T = _check_T(1000 if T is None else T)

    if name in ("linear", "quadratic", "sigmoid"):
        start, end = _beta_ends(name, T, options)
        betas = {"linear": linear_betas, "quadratic": quadratic_betas, "sigmoid": sigmoid_betas}[
            name
        ](T, start, end)
        argument = "betas"
    elif name == "cosine":
        s = _check_float("s", options.get("s", 0.008), 0.0, None, "(0, inf)")
        max_beta = _check_float("max_beta", options.get("max_beta", 0.999), 0.0, 1.0, "(0, 1)")
        betas = betas_from_alpha_bar(lambda t: cosine_alpha_bar(t, s), T, max_beta)
        argument = "betas (from the cosine alpha_bar)"
    elif given_betas is not None:
        betas, argument = given_betas, "betas"
    else:
        max_beta = _check_float("max_beta", options.get("max_beta", 0.999), 0.0, 1.0, "(0, 1)")
        betas = betas_from_alpha_bar(options["alpha_bar"], T, max_beta)
        argument = "betas (from alpha_bar)"
    _check_betas(betas, argument, T, name)

    if zero_terminal_snr:
        if T < 2:
            raise ValueError("zero_terminal_snr needs T >= 2 (it pins alpha_bar_1 and alpha_bar_T apart)")
        betas = rescale_zero_terminal_snr(betas)
    kept = {k: v for k, v in options.items() if k != "betas"}
    return Schedule(betas, name=name, options=kept, zero_terminal_snr=zero_terminal_snr)
