"""Noise schedules: the betas of Ho et al. 2020 and everything derived from them.

A schedule is the sequence beta_1 .. beta_T of forward-process variances
(Eq. 2). Every quantity the forward process, the posterior, the losses and the
samplers need is a function of the betas alone, so it is computed here once,
in float64, and looked up everywhere else:

    alphas            alpha_t = 1 - beta_t                               (Eq. 4)
    alpha_bars        alpha_bar_t = prod_{s <= t} alpha_s                (Eq. 4)
    alpha_bars_prev   alpha_bar_{t-1}, with alpha_bar_0 = 1              (Eq. 7)
    posterior_variance  beta_tilde_t                                     (Eq. 7)
    posterior_mean_coef1/2  the two coefficients of mu_tilde_t           (Eq. 7)
    snr               alpha_bar_t / (1 - alpha_bar_t)

Indexing. The paper counts t = 1 .. T; arrays here count from 0, as NumPy and
the established diffusion libraries do: index i holds the paper's t = i + 1.
So ``alpha_bars[0]`` is alpha_bar_1 and ``alpha_bars[T - 1]`` is alpha_bar_T;
``alpha_bars_prev[0]`` is the paper's alpha_bar_0 = 1.

Schedules (``make_schedule(name, T)``):

- ``linear``: Ho et al. Sec. 4, beta from 1e-4 to 0.02 at T = 1000. For other
  T both ends are multiplied by 1000 / T, as Improved DDPM does, so the total
  noise added (sum of the betas) stays about the same.
- ``cosine``: Improved DDPM (Nichol and Dhariwal 2021) Eq. 17, s = 0.008,
  betas clipped at 0.999.
- ``quadratic``: the original DDPM code's "quad", beta = linspace(sqrt(1e-4),
  sqrt(0.02), T)^2, ends rescaled by 1000 / T like ``linear``.
- ``sigmoid``: the beta form of GeoDiff (Xu et al. 2022, arXiv 2203.02923),
  beta = sigmoid(linspace(-6, 6, T)) * (0.02 - 1e-4) + 1e-4, ends rescaled by
  1000 / T like ``linear``.
- ``custom``: ``betas=`` an array of T values in (0, 1), or ``alpha_bar=`` a
  function of t in [0, 1] (t = paper step / T) turned into betas the way
  Eq. 17 is: beta_t = 1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), clipped
  at ``max_beta``.

Any of them can be rescaled to zero terminal SNR (Lin et al. 2023,
Algorithm 1) with ``zero_terminal_snr=True``.
"""

from __future__ import annotations

import math
import numbers
import warnings as _warnings

from . import backend as B
from .backend import xp

SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid", "custom")

# Options each schedule accepts (besides T and zero_terminal_snr).
_OPTIONS = {
    "linear": ("beta_start", "beta_end"),
    "quadratic": ("beta_start", "beta_end"),
    "sigmoid": ("beta_start", "beta_end"),
    "cosine": ("s", "max_beta"),
    "custom": ("betas", "alpha_bar", "max_beta"),
}

# Warning thresholds of Schedule.warnings(); see that method for the reasons.
BETA_T_WARN = 0.99
TERMINAL_SNR_WARN = 1e-3


class ScheduleWarning(UserWarning):
    """A schedule with a known numerical trap (see Schedule.warnings)."""



def _cumprod(values):
    """Cumulative product along a 1-D array (cumulative_prod where it exists).

    numpy >= 2.1 and array_api_strict have ``cumulative_prod``; older
    namespaces (CuPy 13) only ``cumprod``. Both give the exact float64
    products, unlike exp(cumsum(log)).
    """
    if hasattr(xp, "cumulative_prod"):
        return xp.cumulative_prod(values)
    return xp.cumprod(values)


def _recip(values):
    """1 / values, with +inf (and no division warning) where values is 0.

    Only a zero-terminal-SNR schedule has zeros here (alpha_T = alpha_bar_T = 0).
    """
    zero = values == 0.0
    return xp.where(zero, math.inf, 1.0 / xp.where(zero, 1.0, values))


def _log(values):
    """log(values), with -inf (and no warning) where values is 0."""
    zero = values == 0.0
    return xp.where(zero, -math.inf, xp.log(xp.where(zero, 1.0, values)))


def _concat(arrays):
    """Join arrays along the first axis (``concat``; ``concatenate`` on older CuPy)."""
    return xp.concat(arrays, axis=0) if hasattr(xp, "concat") else xp.concatenate(arrays, axis=0)


class Schedule:
    """The betas of a diffusion and every quantity derived from them (float64).

    Build one with ``make_schedule``. All arrays have shape (T,) and are
    backend float64 arrays indexed from 0 (index i is the paper's t = i + 1).

    Attributes: ``betas``, ``alphas``, ``alpha_bars``, ``alpha_bars_prev``,
    ``sqrt_alphas``, ``sqrt_recip_alphas``, ``sqrt_alpha_bars``,
    ``sqrt_alpha_bars_prev``, ``one_minus_alpha_bars``,
    ``sqrt_one_minus_alpha_bars``, ``sqrt_recip_alpha_bars``,
    ``sqrt_recipm1_alpha_bars``, ``recip_sqrt_one_minus_alpha_bars``,
    ``posterior_variance``, ``posterior_log_variance_clipped``,
    ``posterior_mean_coef1``, ``posterior_mean_coef2``, ``snr``, ``log_snr``;
    and ``T``, ``name``, ``options``, ``zero_terminal_snr``.
    """

    def __init__(self, betas, name="custom", options=None, zero_terminal_snr=False):
        self.name = name
        self.options = dict(options or {})
        self.zero_terminal_snr = bool(zero_terminal_snr)
        betas = xp.astype(betas, B.float64())
        self.T = int(betas.shape[0])
        one = xp.ones((1,), dtype=B.float64())

        # Eq. 4: alpha_t = 1 - beta_t and alpha_bar_t = prod_{s<=t} alpha_s.
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = _cumprod(self.alphas)
        # alpha_bar_{t-1}: the paper's alpha_bar_0 = 1 goes in front.
        self.alpha_bars_prev = _concat([one, self.alpha_bars[:-1]])

        # Square roots and complements, each computed once (Eq. 4, 9, 11, 15).
        self.sqrt_alphas = xp.sqrt(self.alphas)
        self.sqrt_recip_alphas = _recip(self.sqrt_alphas)  # inf where alpha_T = 0 (zero SNR)
        self.sqrt_alpha_bars = xp.sqrt(self.alpha_bars)
        self.sqrt_alpha_bars_prev = xp.sqrt(self.alpha_bars_prev)
        self.one_minus_alpha_bars = 1.0 - self.alpha_bars
        self.sqrt_one_minus_alpha_bars = xp.sqrt(self.one_minus_alpha_bars)
        self.recip_sqrt_one_minus_alpha_bars = 1.0 / self.sqrt_one_minus_alpha_bars
        self.sqrt_recip_alpha_bars = _recip(self.sqrt_alpha_bars)
        self.sqrt_recipm1_alpha_bars = xp.sqrt(_recip(self.alpha_bars) - 1.0)

        # Eq. 7: beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t.
        # It is exactly 0 at the first step (alpha_bar_0 = 1), so its log is
        # clipped there to the next value, as the established code does: the
        # log is only used as a decoder or KL scale, never to add noise at t = 0.
        self.posterior_variance = (
            betas * (1.0 - self.alpha_bars_prev) / self.one_minus_alpha_bars
        )
        if self.T > 1:
            first = self.posterior_variance[1:2]
        else:  # T = 1: no second step to borrow from; beta_1 is the natural scale
            first = betas[0:1]
        self.posterior_log_variance_clipped = xp.log(
            _concat([first, self.posterior_variance[1:]])
        )
        # Eq. 7: mu_tilde_t = coef1 * x_0 + coef2 * x_t.
        self.posterior_mean_coef1 = (
            betas * self.sqrt_alpha_bars_prev / self.one_minus_alpha_bars
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alpha_bars_prev) * self.sqrt_alphas / self.one_minus_alpha_bars
        )
        # Signal-to-noise ratio of x_t: alpha_bar_t / (1 - alpha_bar_t).
        self.snr = self.alpha_bars / self.one_minus_alpha_bars
        self.log_snr = _log(self.alpha_bars) - xp.log(self.one_minus_alpha_bars)

    def __len__(self):
        return self.T

    def __repr__(self):
        zts = ", zero_terminal_snr=True" if self.zero_terminal_snr else ""
        return f"Schedule({self.name!r}, T={self.T}{zts})"

    def warnings(self):
        """Known numerical traps of this schedule, as messages a reader can act on.

        Returns a list of strings (empty when none applies). Checked:

        - beta_T close to 1 (> 0.99): the last reverse step divides by
          sqrt(alpha_T) (Eq. 11), so an eps-prediction error is multiplied by
          up to 1 / sqrt(1 - beta_T); at beta_T = 1 (zero terminal SNR) it is
          undefined and only v- or x0-prediction work.
        - alpha_bar at the first step that is exactly 1 in float32: then
          1 - alpha_bar_1 = 0 in float32 training, sqrt(1 - alpha_bar_1) is 0
          and x_0 from eps (Eq. 15) and the posterior (Eq. 7) divide by zero.
        - terminal SNR far from 0 (> 1e-3): x_T still holds
          sqrt(alpha_bar_T) of the data, but sampling starts from pure N(0, I),
          so training and sampling disagree at t = T and the prior term L_T
          of the bound is not negligible.
        """
        messages = []
        beta_T = float(self.betas[self.T - 1])
        if beta_T > BETA_T_WARN:
            if beta_T >= 1.0:
                messages.append(
                    f"beta_T = 1 ({self.name} schedule, T={self.T}): alpha_T = 0, so the "
                    "eps-parameterised mean (Eq. 11) and x_0 from eps (Eq. 15) are "
                    "undefined at the last step; train with prediction_type='v' or 'x0'"
                )
            else:
                messages.append(
                    f"beta_T = {beta_T:.6g} is close to 1 ({self.name} schedule, T={self.T}): "
                    f"the first reverse step multiplies eps errors by 1/sqrt(alpha_T) = "
                    f"{1.0 / math.sqrt(1.0 - beta_T):.3g} (Eq. 11); lower the clip "
                    "(max_beta=0.99 or less) or use prediction_type='v'"
                )
        alpha_bar_1_f32 = float(xp.astype(self.alpha_bars[0:1], B.dtype("float32"))[0])
        if alpha_bar_1_f32 == 1.0:
            messages.append(
                f"alpha_bar_1 = {float(self.alpha_bars[0]):.10g} is exactly 1 in float32 "
                f"(beta_1 = {float(self.betas[0]):.3g} < 6e-8): sqrt(1 - alpha_bar_1) is 0 "
                "when training in float32, so x_0 from eps (Eq. 15) and the posterior "
                "(Eq. 7) divide by zero at t = 1; raise beta_1 (beta_start) to 1e-6 or more"
            )
        snr_T = float(self.snr[self.T - 1])
        if snr_T > TERMINAL_SNR_WARN:
            messages.append(
                f"terminal SNR = {snr_T:.3g} is far from 0 ({self.name} schedule, T={self.T}): "
                f"x_T keeps sqrt(alpha_bar_T) = {math.sqrt(float(self.alpha_bars[self.T - 1])):.3g} "
                "of the data while sampling starts from pure N(0, I); use more steps, "
                "larger betas, or make_schedule(..., zero_terminal_snr=True) "
                "(Lin et al. 2023) with prediction_type='v'"
            )
        return messages

    def check(self):
        """Emit each of ``warnings()`` as a ScheduleWarning; return the list."""
        messages = self.warnings()
        for message in messages:
            _warnings.warn(message, ScheduleWarning, stacklevel=2)
        return messages


# --------------------------------------------------------------------------
# Building betas


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
    sqrt_alpha_bars = xp.sqrt(_cumprod(1.0 - betas))
    first, last = float(sqrt_alpha_bars[0]), float(sqrt_alpha_bars[-1])
    sqrt_alpha_bars = (sqrt_alpha_bars - last) * (first / (first - last))
    alpha_bars = sqrt_alpha_bars**2
    alphas = _concat([alpha_bars[0:1], alpha_bars[1:] / alpha_bars[:-1]])
    return 1.0 - alphas


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

    given_betas = None
    if name == "custom":
        has_betas, has_fn = options.get("betas") is not None, options.get("alpha_bar") is not None
        if has_betas == has_fn:
            raise ValueError(
                "the custom schedule needs exactly one of betas= (an array of T values "
                "in (0, 1)) or alpha_bar= (a function of t in [0, 1])"
            )
        if has_betas:
            try:
                given_betas = B.asarray(options["betas"], dtype=B.float64())
            except (TypeError, ValueError) as error:
                raise ValueError(f"betas must be a 1-D array of numbers in (0, 1): {error}") from None
            if given_betas.ndim != 1:
                raise ValueError(f"betas must be 1-D of shape (T,), got shape {tuple(given_betas.shape)}")
            if T is None:
                T = int(given_betas.shape[0])
        elif not callable(options["alpha_bar"]):
            raise ValueError(f"alpha_bar must be a function of t in [0, 1], got {options['alpha_bar']!r}")
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
