"""Schedules: the published formulas, every derived quantity, bad input, warnings.

Each schedule is compared with its formula written out independently here
in plain Python floats (math), and the derived quantities of Eq. 4 and Eq. 7
with running products and sums computed by loops, in float64.
"""

import math
import warnings

import numpy as np
import pytest

from tinydiff import backend as B
from tinydiff.schedules import SCHEDULES, ScheduleWarning, make_schedule
from conftest import host

ATTRIBUTES = (
    "betas",
    "alphas",
    "alpha_bars",
    "alpha_bars_prev",
    "sqrt_alphas",
    "sqrt_recip_alphas",
    "sqrt_alpha_bars",
    "sqrt_alpha_bars_prev",
    "one_minus_alpha_bars",
    "sqrt_one_minus_alpha_bars",
    "recip_sqrt_one_minus_alpha_bars",
    "sqrt_recip_alpha_bars",
    "sqrt_recipm1_alpha_bars",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "snr",
    "log_snr",
)


def cosine_f(t, T, s=0.008):
    """Improved DDPM Eq. 17, written out again: f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)."""
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


# -- the published formulas ------------------------------------------------


def test_linear_matches_ho_et_al(backend):
    betas = host(make_schedule("linear", 1000).betas)
    expected = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    np.testing.assert_allclose(betas, expected, rtol=1e-13, atol=0)
    assert betas[0] == pytest.approx(1e-4, rel=1e-15) and betas[-1] == pytest.approx(0.02, rel=1e-15)


@pytest.mark.parametrize("T", [50, 250, 4000])
def test_linear_rescaled_by_1000_over_T(backend, T):
    betas = host(make_schedule("linear", T).betas)
    assert betas[0] == pytest.approx(1e-4 * 1000 / T, rel=1e-12)
    assert betas[-1] == pytest.approx(0.02 * 1000 / T, rel=1e-12)
    # The total noise, sum of betas, stays that of T = 1000 (about 10.05).
    assert betas.sum() == pytest.approx(sum(1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)), rel=1e-12)


@pytest.mark.parametrize("T", [1, 2, 10, 1000])
def test_cosine_matches_eq17(backend, T):
    schedule = make_schedule("cosine", T)
    betas, alpha_bars = host(schedule.betas), host(schedule.alpha_bars)
    f0 = cosine_f(0, T)
    expected_betas = [min(1 - cosine_f(t, T) / cosine_f(t - 1, T), 0.999) for t in range(1, T + 1)]
    np.testing.assert_allclose(betas, expected_betas, rtol=1e-12, atol=1e-15)
    # alpha_bar_t = f(t) / f(0) wherever the clip at 0.999 did not act.
    unclipped = [i for i in range(T) if expected_betas[i] < 0.999]
    for i in unclipped:
        if all(expected_betas[j] < 0.999 for j in range(i + 1)):
            assert alpha_bars[i] == pytest.approx(cosine_f(i + 1, T) / f0, rel=1e-10)
    # The trap: f(T) = cos^2(pi/2) = 0 makes beta_T = 1 and 1/alpha_T infinite
    # unless clipped; every derived quantity must stay finite.
    assert betas[-1] == pytest.approx(0.999)
    for name in ATTRIBUTES:
        assert np.all(np.isfinite(host(getattr(schedule, name)))), name


def test_quadratic_and_sigmoid_formulas(backend):
    T = 1000
    quad = host(make_schedule("quadratic", T).betas)
    lo, hi = math.sqrt(1e-4), math.sqrt(0.02)
    np.testing.assert_allclose(quad, [(lo + (hi - lo) * i / (T - 1)) ** 2 for i in range(T)], rtol=1e-12)
    sig = host(make_schedule("sigmoid", T).betas)
    expected = [
        1 / (1 + math.exp(-(-6 + 12 * i / (T - 1)))) * (0.02 - 1e-4) + 1e-4 for i in range(T)
    ]
    np.testing.assert_allclose(sig, expected, rtol=1e-12)
    assert np.all(np.diff(quad) > 0) and np.all(np.diff(sig) > 0)


# -- derived quantities (Eq. 4, 7) -----------------------------------------


@pytest.mark.parametrize("name", ["linear", "cosine", "quadratic", "sigmoid"])
def test_derived_quantities_against_loops(backend, name):
    T = 200
    schedule = make_schedule(name, T)
    assert schedule.T == T and len(schedule) == T and schedule.name == name
    for attribute in ATTRIBUTES:
        value = getattr(schedule, attribute)
        assert tuple(value.shape) == (T,), attribute
        assert value.dtype == B.dtype("float64"), attribute
    betas = [float(b) for b in host(schedule.betas)]
    alpha_bar, alpha_bars, prev = 1.0, [], []
    for beta in betas:  # Eq. 4 as a running product
        prev.append(alpha_bar)
        alpha_bar *= 1 - beta
        alpha_bars.append(alpha_bar)
    # Eq. 7, term by term.
    post_var = [b * (1 - p) / (1 - a) for b, p, a in zip(betas, prev, alpha_bars)]
    coef1 = [b * math.sqrt(p) / (1 - a) for b, p, a in zip(betas, prev, alpha_bars)]
    coef2 = [(1 - p) * math.sqrt(1 - b) / (1 - a) for b, p, a in zip(betas, prev, alpha_bars)]
    close = dict(rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(host(schedule.alpha_bars), alpha_bars, **close)
    np.testing.assert_allclose(host(schedule.alpha_bars_prev), prev, **close)
    np.testing.assert_allclose(host(schedule.alphas), [1 - b for b in betas], **close)
    np.testing.assert_allclose(host(schedule.posterior_variance), post_var, **close)
    np.testing.assert_allclose(host(schedule.posterior_mean_coef1), coef1, **close)
    np.testing.assert_allclose(host(schedule.posterior_mean_coef2), coef2, **close)
    np.testing.assert_allclose(host(schedule.snr), [a / (1 - a) for a in alpha_bars], **close)
    np.testing.assert_allclose(host(schedule.sqrt_recip_alphas), [1 / math.sqrt(1 - b) for b in betas], **close)
    np.testing.assert_allclose(
        host(schedule.sqrt_recipm1_alpha_bars), [math.sqrt(1 / a - 1) for a in alpha_bars], **close
    )
    # beta_tilde_1 = 0 (alpha_bar_0 = 1) and its log is clipped to the next value.
    assert post_var[0] == 0.0
    log_clipped = host(schedule.posterior_log_variance_clipped)
    assert log_clipped[0] == pytest.approx(math.log(post_var[1]), rel=1e-12)
    np.testing.assert_allclose(log_clipped[1:], np.log(post_var[1:]), rtol=1e-12)


def test_custom_betas_and_alpha_bar(backend):
    betas = [0.01, 0.05, 0.1, 0.3]
    schedule = make_schedule("custom", betas=betas)
    assert schedule.T == 4
    np.testing.assert_allclose(host(schedule.betas), betas, rtol=0, atol=0)
    np.testing.assert_allclose(host(schedule.alpha_bars), np.cumprod(1 - np.array(betas)), rtol=1e-14)
    # An alpha_bar function reproduces the cosine schedule, whether it takes
    # arrays (xp) or only Python floats (math).
    cosine = host(make_schedule("cosine", 100).betas)
    from_array = make_schedule(
        "custom", 100, alpha_bar=lambda t: B.xp.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    )
    from_float = make_schedule("custom", 100, alpha_bar=lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
    np.testing.assert_allclose(host(from_array.betas), cosine, rtol=1e-12)
    np.testing.assert_allclose(host(from_float.betas), cosine, rtol=1e-12)


def test_zero_terminal_snr_lin_et_al(backend):
    before = make_schedule("linear", 1000)
    after = make_schedule("linear", 1000, zero_terminal_snr=True)
    old = np.sqrt(host(before.alpha_bars))
    new = np.sqrt(host(after.alpha_bars))
    # Algorithm 1: sqrt(alpha_bar) shifted to end at 0, scaled to keep its start.
    np.testing.assert_allclose(new, (old - old[-1]) * old[0] / (old[0] - old[-1]), rtol=1e-10, atol=1e-15)
    assert new[-1] == 0.0 and new[0] == pytest.approx(old[0], rel=1e-14)
    assert host(after.snr)[-1] == 0.0 and host(after.betas)[-1] == 1.0
    assert np.all(host(after.betas)[:-1] < 1) and np.all(host(after.betas) > 0)
    assert after.zero_terminal_snr and any("beta_T = 1" in m for m in after.warnings())
    # Every schedule can be rescaled.
    for name in ("cosine", "quadratic", "sigmoid"):
        assert host(make_schedule(name, 100, zero_terminal_snr=True).alpha_bars)[-1] == 0.0


# -- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(name="linearish"), "name must be one of 'linear', 'cosine'"),
        (dict(name="linear", T=0), "T must be an integer >= 1"),
        (dict(name="linear", T=-5), "T must be an integer >= 1"),
        (dict(name="linear", T=100.0), "T must be an integer"),
        (dict(name="linear", T="100"), "T must be an integer"),
        (dict(name="linear", T=True), "T must be an integer"),
        (dict(name="linear", T=10), "beta_end = 0.02 \\* 1000 / T = 2"),
        (dict(name="linear", beta_start=0.0), "beta_start must lie in \\(0, 1\\)"),
        (dict(name="linear", beta_end=1.5), "beta_end must lie in \\(0, 1\\)"),
        (dict(name="linear", beta_end=float("nan")), "beta_end must be a real number"),
        (dict(name="cosine", max_beta=1.0), "max_beta must lie in \\(0, 1\\)"),
        (dict(name="linear", s=0.1), "unknown option\\(s\\) 's' for the linear schedule; allowed: 'beta_start'"),
        (dict(name="custom"), "exactly one of betas="),
        (dict(name="custom", betas=[0.1, 0.0, 0.2]), "betas must lie in the open interval \\(0, 1\\); index 1"),
        (dict(name="custom", betas=[0.1, 1.0]), "betas must lie in the open interval \\(0, 1\\); index 1"),
        (dict(name="custom", betas=[0.1, -0.2]), "open interval \\(0, 1\\)"),
        (dict(name="custom", betas=[0.1, float("nan")]), "betas contains NaN"),
        (dict(name="custom", T=3, betas=[0.1, 0.2]), "betas must have shape \\(T,\\) = \\(3,\\)"),
        (dict(name="custom", betas=[[0.1, 0.2]]), "betas must be 1-D"),
        (dict(name="custom", T=10, alpha_bar=lambda t: 0.5 + 0.0 * t), "betas \\(from alpha_bar\\) must lie in"),
        (dict(name="custom", T=10, alpha_bar=3.0), "alpha_bar must be a function"),
        (dict(name="cosine", T=1, zero_terminal_snr=True), "zero_terminal_snr needs T >= 2"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(backend, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_schedule(**kwargs)


def test_schedules_tuple_lists_every_name():
    assert SCHEDULES == ("linear", "cosine", "quadratic", "sigmoid", "custom")


# -- warnings -------------------------------------------------------------------


def test_warnings_report_known_traps(backend):
    assert make_schedule("linear", 1000).warnings() == []
    cosine = make_schedule("cosine", 1000).warnings()
    assert len(cosine) == 1 and "beta_T = 0.999" in cosine[0] and "max_beta" in cosine[0]
    # beta_1 = 1e-9: alpha_bar_1 rounds to exactly 1 in float32.
    tiny_first = make_schedule("linear", 1000, beta_start=1e-9).warnings()
    assert any("exactly 1 in float32" in m and "beta_start" in m for m in tiny_first)
    # Small betas leave signal at t = T: terminal SNR far from 0.
    leaky = make_schedule("linear", 1000, beta_end=0.005).warnings()
    assert any("terminal SNR" in m and "zero_terminal_snr=True" in m for m in leaky)


def test_check_emits_schedule_warnings(backend):
    with pytest.warns(ScheduleWarning, match="beta_T = 0.999"):
        messages = make_schedule("cosine", 100).check()
    assert len(messages) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_schedule("linear", 1000).check() == []
