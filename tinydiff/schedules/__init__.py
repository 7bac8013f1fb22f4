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

    schedule.py  Schedule: the derived quantities and the warnings about numerical traps
    betas.py     the named schedules and make_schedule
"""

from .betas import (
    SCHEDULES,
    betas_from_alpha_bar,
    cosine_alpha_bar,
    linear_betas,
    make_schedule,
    quadratic_betas,
    rescale_zero_terminal_snr,
    sigmoid_betas,
)
from .schedule import BETA_T_WARN, TERMINAL_SNR_WARN, Schedule, ScheduleWarning

__all__ = [
    "BETA_T_WARN", "SCHEDULES", "Schedule", "ScheduleWarning", "TERMINAL_SNR_WARN", "betas_from_alpha_bar",
    "cosine_alpha_bar", "linear_betas", "make_schedule", "quadratic_betas", "rescale_zero_terminal_snr",
    "sigmoid_betas",
]
