"""The Schedule: the betas of a diffusion and every quantity derived from them, in float64.

See the package docstring (tinydiff.schedules) for the indexing convention.
"""

from __future__ import annotations

import math
import warnings as _warnings

from .. import backend as B
from ..backend import xp

# Warning thresholds of Schedule.warnings(); see that method for the reasons.
BETA_T_WARN = 0.99
TERMINAL_SNR_WARN = 1e-3


class ScheduleWarning(UserWarning):
    """A schedule with a known numerical trap (see Schedule.warnings)."""


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
        self.alpha_bars = xp.cumulative_prod(self.alphas)  # exact float64 products
        # alpha_bar_{t-1}: the paper's alpha_bar_0 = 1 goes in front.
        self.alpha_bars_prev = xp.concat([one, self.alpha_bars[:-1]], axis=0)

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
            xp.concat([first, self.posterior_variance[1:]], axis=0)
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
