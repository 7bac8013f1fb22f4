"""Gaussian KL divergence and log-likelihoods, elementwise: the pieces of the bound (Eq. 5, 13)."""

from __future__ import annotations

import math

from ..backend import xp

LOG_2PI = math.log(2.0 * math.pi)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats.

    KL = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2 (the Gaussian KL of
    PAPER.md), written with log-variances so a tiny variance does not underflow.
    Used for L_T and every L_{t-1} of Eq. 5.
    """
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + xp.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * xp.exp(-logvar2)
    )


# Chebyshev-fitted erfc (Press et al., Numerical Recipes, "erfcc"):
# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0, with a relative
# error below 1.2e-7 everywhere. Written as a log it never underflows, which
# is what the far tails of Eq. 13 need. (The array API has no erf.)
_ERFC_COEFFICIENTS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _log_erfc(z):
    """log(erfc(z)) elementwise, accurate to about 1e-7 relative, for any real z."""
    a = xp.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = _ERFC_COEFFICIENTS[-1]
    for c in reversed(_ERFC_COEFFICIENTS[:-1]):
        poly = c + t * poly  # Horner
    log_tail = xp.log(t) - a * a + poly  # log erfc(|z|)
    # erfc(-a) = 2 - erfc(a)
    return xp.where(z >= 0, log_tail, xp.log(2.0 - xp.exp(log_tail)))


def log_standard_normal_cdf(x):
    """log Phi(x) = log(erfc(-x / sqrt(2)) / 2), finite far into both tails."""
    return _log_erfc(-x * (1.0 / math.sqrt(2.0))) - math.log(2.0)


def discretized_gaussian_log_likelihood(x, mean, log_scale, bin_width=2.0 / 255.0):
    """Eq. 13: log of the N(mean, exp(log_scale)^2) mass on x's bin, per element.

    x holds data on 256 levels scaled to [-1, 1]; its bin is
    [x - 1/255, x + 1/255], widened to (-inf, x + 1/255] at x = -1 and
    [x - 1/255, +inf) at x = 1. In standard units (m = (x - mean) / sigma,
    h = half the bin width / sigma) the mass of an inner bin is taken
    - for a bin narrow next to the curvature of the density (h max(1, |m|) <=
      0.05), by the midpoint rule with its Hermite corrections,
      2 h phi(m) (1 + He2(m) h^2 / 3! + He4(m) h^4 / 5! + He6(m) h^6 / 7!),
      exact to about 1e-15: a difference of two nearly equal CDFs would lose
      the digits here;
    - otherwise as Phi(m + h) - Phi(m - h) on the side of the smaller tail and
      in logs (log Phi_big + log(1 - Phi_small / Phi_big)), so a bin many
      sigmas out neither underflows nor cancels (about 1e-6 relative).
    """
    inv_scale = xp.exp(-log_scale)
    m = (x - mean) * inv_scale  # bin centre, standardised
    h = (0.5 * bin_width) * inv_scale  # half bin width, standardised
    upper, lower = m + h, m - h
    log_cdf_upper = log_standard_normal_cdf(upper)  # log P(X <= upper): the x = -1 bin
    log_sf_lower = log_standard_normal_cdf(-lower)  # log P(X >= lower): the x = +1 bin

    # Wide inner bins: subtract CDFs left of the mean, survival functions right of it.
    left = m <= 0.0
    log_big = xp.where(left, log_cdf_upper, log_sf_lower)
    log_small = xp.where(left, log_standard_normal_cdf(lower), log_standard_normal_cdf(-upper))
    gap = -xp.expm1(log_small - log_big)  # 1 - Phi_small / Phi_big, in (0, 1]
    tiny = 1e-300 if str(x.dtype).endswith("float64") else 1e-37
    log_wide = log_big + xp.log(xp.maximum(gap, tiny))

    # Narrow inner bins: integral of phi over [m - h, m + h] by Taylor expansion.
    m2, h2 = m * m, h * h
    he2 = m2 - 1.0
    he4 = (m2 - 6.0) * m2 + 3.0
    he6 = ((m2 - 15.0) * m2 + 45.0) * m2 - 15.0
    series = 1.0 + h2 * (he2 / 6.0 + h2 * (he4 / 120.0 + h2 * he6 / 5040.0))
    log_narrow = xp.log(2.0 * h) - 0.5 * LOG_2PI - 0.5 * m2 + xp.log(xp.maximum(series, tiny))
    narrow = h * xp.maximum(xp.abs(m), 1.0) <= 0.05

    log_inner = xp.where(narrow, log_narrow, log_wide)
    return xp.where(x < -0.999, log_cdf_upper, xp.where(x > 0.999, log_sf_lower, log_inner))


def gaussian_log_likelihood(x, mean, log_scale):
    """log N(x; mean, exp(log_scale)^2) per element: the decoder L_0 for real-valued data."""
    z = (x - mean) * xp.exp(-log_scale)
    return -0.5 * LOG_2PI - log_scale - 0.5 * z * z
