"""GaussianDiffusion: every equation against an independent float64 computation.

Monte Carlo checks state their standard error (SE) and allow 5 SE; the seeds
are fixed, so a run is deterministic, but the tolerance is honest.
"""

import math

import numpy as np
import pytest
import scipy.stats as st

from tinydiff import backend as B
from tinydiff.autograd import Tensor
from tinydiff.diffusion import (
    GaussianDiffusion,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
)
from tinydiff.schedules import make_schedule
from conftest import host


def arr(values, dtype=None):
    return B.asarray(np.asarray(values, dtype=np.float64), dtype=dtype or B.float64())


def steps(values):
    return B.asarray(np.asarray(values, dtype=np.int64))


@pytest.fixture
def diffusion(backend):
    return GaussianDiffusion(make_schedule("linear", 1000))


# -- forward process: Eq. 2 and Eq. 4 -------------------------------------------


def test_q_sample_eq4_matches_iterating_eq2(diffusion):
    """Eq. 4 (one jump) against Eq. 2 applied t times: Monte Carlo moments."""
    n, t_final = 20000, 300
    rng = B.default_rng(0)
    x0_row = arr([[1.5, -0.7]])
    x = B.xp.ones((n, 1), dtype=B.float64()) * x0_row  # (n, 2), every row x_0
    for t in range(t_final + 1):  # x_0 -> x_1 -> ... (code steps 0..t_final)
        x = diffusion.q_step(x, t, rng.normal((n, 2), dtype=B.float64()))
    iterated = host(x)
    alpha_bar = float(diffusion.schedule.alpha_bars[t_final])
    # Eq. 4: mean sqrt(alpha_bar) x_0, variance 1 - alpha_bar.
    mean, var = math.sqrt(alpha_bar) * np.array([1.5, -0.7]), 1 - alpha_bar
    se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / (n - 1))
    assert np.all(np.abs(iterated.mean(0) - mean) < 5 * se_mean)
    assert np.all(np.abs(iterated.var(0, ddof=1) - var) < 5 * se_var)
    # And q_sample draws from that same law.
    ones = B.xp.ones((n, 1), dtype=B.float64())
    jumped = host(diffusion.q_sample(ones * x0_row, t_final, rng.normal((n, 2), dtype=B.float64())))
    assert np.all(np.abs(jumped.mean(0) - mean) < 5 * se_mean)
    assert np.all(np.abs(jumped.var(0, ddof=1) - var) < 5 * se_var)
    m, v, logv = diffusion.q_mean_variance(x0_row, t_final)
    np.testing.assert_allclose(host(m)[0], mean, rtol=1e-13)
    assert float(v[0, 0]) == pytest.approx(var, rel=1e-13) and float(logv[0, 0]) == pytest.approx(math.log(var), rel=1e-13)


def test_q_sample_eq9_exact_and_per_row_steps(diffusion):
    x0, noise = arr([[0.3], [-1.0], [2.0]]), arr([[1.0], [0.5], [-2.0]])
    t = steps([0, 499, 999])
    ab = host(diffusion.schedule.alpha_bars)[[0, 499, 999]][:, None]
    expected = np.sqrt(ab) * host(x0) + np.sqrt(1 - ab) * host(noise)
    np.testing.assert_allclose(host(diffusion.q_sample(x0, t, noise)), expected, rtol=1e-14)


def test_float32_in_float32_out(diffusion):
    """The training path stays float32: no float64 coefficient upcasts."""
    f32 = B.dtype("float32")
    x0 = B.default_rng(1).normal((8, 3))
    noise = B.default_rng(2).normal((8, 3))
    t = steps([0, 1, 2, 3, 996, 997, 998, 999])
    assert x0.dtype == f32
    assert diffusion.q_sample(x0, t, noise).dtype == f32
    assert diffusion.q_step(x0, t, noise).dtype == f32
    for out in diffusion.q_posterior(x0, noise, t):
        assert out.dtype == f32
    for out in diffusion.split_prediction(noise, x0, t, clip_x0=True):
        assert out.dtype == f32
    assert diffusion.v_target(x0, noise, t).dtype == f32
    assert diffusion.p_mean_variance(noise, x0, t).mean.dtype == f32
    assert diffusion.loss_weights(t).dtype == f32
    # The float32 tables are cached, not cast again on every call.
    table = diffusion._table("sqrt_alpha_bars", f32)
    assert diffusion._table("sqrt_alpha_bars", f32) is table


# -- posterior: Eq. 6, 7 ---------------------------------------------------------


def test_q_posterior_eq7_matches_bayes_rule(diffusion):
    """Eq. 7 against the Gaussian posterior worked out from prior x likelihood."""
    s = diffusion.schedule
    ab_prev = host(s.alpha_bars_prev)
    alpha, beta = host(s.alphas), host(s.betas)
    t = np.arange(1, 1000, 37)
    x0, x_t = np.linspace(-1, 1, t.size)[:, None], np.linspace(2, -2, t.size)[:, None]
    mean, var, logvar = diffusion.q_posterior(arr(x0), arr(x_t), steps(t))
    # Prior q(x_{t-1} | x_0) = N(sqrt(ab_prev) x_0, 1 - ab_prev) (Eq. 4);
    # likelihood q(x_t | x_{t-1}) = N(sqrt(alpha) x_{t-1}, beta) (Eq. 2).
    precision = 1 / (1 - ab_prev[t]) + alpha[t] / beta[t]
    bayes_var = 1 / precision
    bayes_mean = bayes_var * (np.sqrt(ab_prev[t]) * x0[:, 0] / (1 - ab_prev[t]) + np.sqrt(alpha[t]) * x_t[:, 0] / beta[t])
    np.testing.assert_allclose(host(mean)[:, 0], bayes_mean, rtol=1e-10)
    np.testing.assert_allclose(host(var)[:, 0], bayes_var, rtol=1e-10)
    np.testing.assert_allclose(host(logvar)[:, 0], np.log(bayes_var), rtol=1e-10)
    # t = 0: the prior is a point mass at x_0, so the posterior is x_0 exactly.
    mean0, var0, _ = diffusion.q_posterior(arr([[0.7]]), arr([[5.0]]), 0)
    assert float(mean0[0, 0]) == pytest.approx(0.7, rel=1e-14) and float(var0[0, 0]) == 0.0


def test_q_posterior_against_numerical_bayes_on_a_grid(backend):
    """Eq. 6, 7 against Bayes' rule by quadrature: prior x likelihood on a grid."""
    diffusion = GaussianDiffusion(make_schedule("cosine", 50))
    s = diffusion.schedule
    for t in (1, 10, 25, 49):
        x0, x_t = 0.4, -0.9
        ab_prev, alpha, beta = float(s.alpha_bars_prev[t]), float(s.alphas[t]), float(s.betas[t])
        grid = np.linspace(-6, 6, 400001)
        log_w = st.norm.logpdf(grid, math.sqrt(ab_prev) * x0, math.sqrt(1 - ab_prev)) + st.norm.logpdf(
            x_t, math.sqrt(alpha) * grid, math.sqrt(beta)
        )
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        m = (w * grid).sum()
        v = (w * (grid - m) ** 2).sum()
        mean, var, _ = diffusion.q_posterior(arr([[x0]]), arr([[x_t]]), t)
        assert float(mean[0, 0]) == pytest.approx(m, abs=1e-8)
        assert float(var[0, 0]) == pytest.approx(v, rel=1e-6)


# -- parameterisations: Eq. 11, 15, v -------------------------------------------


def test_eq15_eq11_and_v_round_trips(diffusion):
    rng = B.default_rng(3)
    x0, eps = rng.normal((64, 4), dtype=B.float64()), rng.normal((64, 4), dtype=B.float64())
    t = rng.integers(0, 1000, (64,))
    x_t = diffusion.q_sample(x0, t, eps)
    close = dict(rtol=1e-9, atol=1e-9)
    # Eq. 15 recovers x_0 from the true noise; eps from x_0 recovers the noise.
    np.testing.assert_allclose(host(diffusion.predict_x0_from_eps(x_t, t, eps)), host(x0), **close)
    np.testing.assert_allclose(host(diffusion.predict_eps_from_x0(x_t, t, x0)), host(eps), **close)
    # v = sqrt(ab) eps - sqrt(1 - ab) x_0, and back.
    v = diffusion.v_target(x0, eps, t)
    np.testing.assert_allclose(host(diffusion.predict_x0_from_v(x_t, t, v)), host(x0), **close)
    np.testing.assert_allclose(host(diffusion.predict_eps_from_v(x_t, t, v)), host(eps), **close)
    # Eq. 11 (mean from eps) = Eq. 7 posterior mean at the Eq. 15 x_0 (Eq. 10).
    other = rng.normal((64, 4), dtype=B.float64())
    mean_eq11 = diffusion.mean_from_eps(x_t, t, other)
    mean_eq7, _, _ = diffusion.q_posterior(diffusion.predict_x0_from_eps(x_t, t, other), x_t, t)
    np.testing.assert_allclose(host(mean_eq11), host(mean_eq7), **close)
    # Eq. 11 written out with the paper's symbols.
    s = diffusion.schedule
    tt = host(t)
    beta, alpha, ab = host(s.betas)[tt, None], host(s.alphas)[tt, None], host(s.alpha_bars)[tt, None]
    written = (host(x_t) - beta / np.sqrt(1 - ab) * host(other)) / np.sqrt(alpha)
    np.testing.assert_allclose(host(mean_eq11), written, **close)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_split_prediction_and_clipping(backend, prediction_type):
    diffusion = GaussianDiffusion(make_schedule("cosine", 100), prediction_type=prediction_type)
    rng = B.default_rng(4)
    x0, eps = 1.8 * rng.normal((32, 3), dtype=B.float64()), rng.normal((32, 3), dtype=B.float64())
    t = rng.integers(0, 100, (32,))
    x_t = diffusion.q_sample(x0, t, eps)
    target = diffusion.training_target(x0, eps, t)
    eps_hat, x0_hat = diffusion.split_prediction(target, x_t, t)
    np.testing.assert_allclose(host(eps_hat), host(eps), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(host(x0_hat), host(x0), rtol=1e-8, atol=1e-8)
    # Clipped: x_0 inside [-1, 1] and eps re-derived so that Eq. 9 still gives x_t.
    eps_c, x0_c = diffusion.split_prediction(Tensor(target), x_t, t, clip_x0=True)
    assert np.all(np.abs(host(x0_c)) <= 1.0) and np.any(np.abs(host(x0)) > 1.0)
    np.testing.assert_allclose(host(diffusion.q_sample(x0_c, t, eps_c)), host(x_t), rtol=1e-9, atol=1e-9)
    # The reverse mean from the clipped pair is the same whether built by
    # Eq. 11 from eps or Eq. 7 from x_0: the step is consistent.
    p = diffusion.p_mean_variance(target, x_t, t, clip_x0=True)
    np.testing.assert_allclose(host(p.mean), host(diffusion.mean_from_eps(x_t, t, eps_c)), rtol=1e-8, atol=1e-8)


def test_p_mean_variance_variances(diffusion):
    x_t = arr([[0.1], [0.2], [0.3]])
    t = steps([0, 1, 999])
    s = diffusion.schedule
    beta = diffusion.p_mean_variance(x_t, x_t, t, variance="beta")
    tilde = diffusion.p_mean_variance(x_t, x_t, t, variance="beta_tilde")
    np.testing.assert_allclose(host(beta.variance)[:, 0], host(s.betas)[[0, 1, 999]], rtol=1e-15)
    np.testing.assert_allclose(host(beta.log_variance)[:, 0], np.log(host(s.betas)[[0, 1, 999]]), rtol=1e-14)
    np.testing.assert_allclose(host(tilde.variance)[:, 0], host(s.posterior_variance)[[0, 1, 999]], rtol=1e-15)
    assert float(tilde.variance[0, 0]) == 0.0 and math.isfinite(float(tilde.log_variance[0, 0]))
    with pytest.raises(ValueError, match="variance must be one of 'beta', 'beta_tilde'"):
        diffusion.p_mean_variance(x_t, x_t, t, variance="learned")


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_one_int_t_gives_what_a_full_t_array_gives(backend, prediction_type):
    """A sampler passes one int t; coefficients are then one (1, 1) value, broadcast.
    Every output must equal the per-row computation on t = full((N,), t)."""
    diffusion = GaussianDiffusion(make_schedule("cosine", 200), prediction_type=prediction_type)
    x_t = arr(np.random.default_rng(0).normal(size=(5, 3)))
    output = arr(np.random.default_rng(1).normal(size=(5, 3)))
    for t in (0, 1, 77, 199):
        full = steps([t] * 5)
        for variance in ("beta", "beta_tilde"):
            one = diffusion.p_mean_variance(output, x_t, t, variance=variance, clip_x0=True)
            rows = diffusion.p_mean_variance(output, x_t, full, variance=variance, clip_x0=True)
            for field in ("mean", "variance", "log_variance", "x0", "eps"):
                a, b = host(getattr(one, field)), host(getattr(rows, field))
                np.testing.assert_allclose(np.broadcast_to(a, b.shape), b, rtol=1e-12, atol=1e-15, err_msg=field)
        np.testing.assert_allclose(host(diffusion.q_sample(x_t, t, output)), host(diffusion.q_sample(x_t, full, output)),
                                   rtol=1e-12)
    one = diffusion.p_mean_variance(output, x_t, 77)
    assert tuple(one.variance.shape) == (1, 1) and tuple(one.log_variance.shape) == (1, 1)  # one value, not N
    before = float(host(one.variance)[0, 0])
    one.variance[...] = 0.5  # a caller's write must not reach the cached table
    assert float(host(diffusion.p_mean_variance(output, x_t, 77).variance)[0, 0]) == before
    np.testing.assert_allclose(host(diffusion.q_sample(x_t, np.int64(77), output)),
                               host(diffusion.q_sample(x_t, 77, output)), rtol=0)  # NumPy ints are ints too
    with pytest.raises(ValueError, match="t must be in 0..199"):
        diffusion.p_mean_variance(output, x_t, 200)


def test_zero_terminal_snr_v_prediction_is_finite(backend):
    schedule = make_schedule("linear", 100, zero_terminal_snr=True)
    diffusion = GaussianDiffusion(schedule, prediction_type="v")
    x_t, v = arr([[0.3, -0.2]]), arr([[0.5, 0.1]])
    p = diffusion.p_mean_variance(v, x_t, 99)
    assert np.all(np.isfinite(host(p.mean))) and np.all(np.isfinite(host(p.x0)))
    np.testing.assert_allclose(host(p.x0), -host(v), rtol=1e-14)  # x0_hat = -v at alpha_bar = 0
    with pytest.raises(ValueError, match="cannot be used with a zero-terminal-SNR schedule.*'v' or 'x0'"):
        GaussianDiffusion(schedule, prediction_type="eps")


# -- training loss: Algorithm 1 ---------------------------------------------------


def _manual_loss(diffusion, output, x0, noise, t, weights):
    target = host(diffusion.training_target(x0, noise, t))
    per_example = ((host(output) - target) ** 2).reshape(len(target), -1).mean(1)
    return float((per_example * weights).mean())


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["simple", "vlb", "min_snr"])
def test_training_loss_matches_manual(backend, prediction_type, weighting):
    diffusion = GaussianDiffusion(make_schedule("linear", 200), prediction_type, weighting)
    rng = B.default_rng(5)
    x0 = rng.normal((16, 2, 3), dtype=B.float64())
    noise = rng.normal((16, 2, 3), dtype=B.float64())
    t = rng.integers(0, 200, (16,))
    model = lambda x, t: Tensor(0.5 * x)  # noqa: E731
    loss = diffusion.training_loss(model, x0, rng, t=t, noise=noise)
    assert isinstance(loss, Tensor) and loss.shape == ()
    s = diffusion.schedule
    tt = host(t)
    snr = host(s.snr)[tt]
    if weighting == "simple":
        weights = np.ones(16)
    elif weighting == "min_snr":  # Hang et al. 2023, gamma = 5
        clipped = np.minimum(snr, 5.0)
        weights = {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction_type]
    else:  # Eq. 12 with sigma^2 = beta: beta^2 / (2 sigma^2 alpha (1 - alpha_bar)) for eps
        beta, alpha, ab = host(s.betas)[tt], host(s.alphas)[tt], host(s.alpha_bars)[tt]
        eps_weight = beta**2 / (2 * beta * alpha * (1 - ab))
        weights = {"eps": eps_weight, "x0": eps_weight * snr, "v": eps_weight * snr / (snr + 1)}[prediction_type]
    np.testing.assert_allclose(host(diffusion.loss_weights(t, dtype=B.float64())), weights, rtol=1e-12)
    expected = _manual_loss(diffusion, 0.5 * diffusion.q_sample(x0, t, noise), x0, noise, t, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_training_loss_draws_uniform_t_and_backpropagates(backend):
    T = 5
    diffusion = GaussianDiffusion(make_schedule("cosine", T))
    seen = []
    w = Tensor(B.asarray([0.3]), requires_grad=True)

    def model(x, t, scale=1.0):
        seen.append(host(t))
        return Tensor(x) * w * scale

    x0 = B.default_rng(6).normal((400, 2))
    loss = diffusion.training_loss(model, x0, B.default_rng(7), model_kwargs={"scale": 2.0})
    assert loss.dtype == B.dtype("float32")
    loss.backward()
    assert w.grad is not None and float(w.grad[0]) != 0.0
    t = seen[0]
    assert t.dtype == np.int64 and t.min() == 0 and t.max() == T - 1
    # Uniform over 0..T-1: each count within 5 SE of 400 / T.
    counts = np.bincount(t, minlength=T)
    assert np.all(np.abs(counts - 80) < 5 * math.sqrt(400 * 0.2 * 0.8))
    with pytest.raises(ValueError, match="the model returned shape"):
        diffusion.training_loss(lambda x, t: Tensor(x[:, :1]), x0, B.default_rng(0))


def test_bad_arguments(backend):
    schedule = make_schedule("linear", 100)
    with pytest.raises(ValueError, match="prediction_type must be one of 'eps', 'x0', 'v'"):
        GaussianDiffusion(schedule, prediction_type="score")
    with pytest.raises(ValueError, match="loss_weighting must be one of 'simple', 'vlb', 'min_snr'"):
        GaussianDiffusion(schedule, loss_weighting="p2")
    with pytest.raises(ValueError, match="schedule must be a Schedule"):
        GaussianDiffusion([0.1, 0.2])
    with pytest.raises(ValueError, match="t must be in 0..99"):
        GaussianDiffusion(schedule).q_sample(arr([[0.0]]), 100, arr([[0.0]]))


# -- the bound: KL terms, decoders, vlb ---------------------------------------------


@pytest.mark.parametrize("m1, v1, m2, v2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 2.0), (1.0, 0.01, 0.9, 0.02)])
def test_normal_kl_against_monte_carlo(backend, m1, v1, m2, v2):
    kl = float(normal_kl(arr([m1]), arr([math.log(v1)]), arr([m2]), arr([math.log(v2)]))[0])
    # Against the formula of PAPER.md and a Monte Carlo estimate E_p1[log p1 - log p2].
    formula = math.log(math.sqrt(v2 / v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5
    assert kl == pytest.approx(formula, rel=1e-12, abs=1e-15)
    x = np.random.default_rng(8).normal(m1, math.sqrt(v1), 200000)
    log_ratio = st.norm.logpdf(x, m1, math.sqrt(v1)) - st.norm.logpdf(x, m2, math.sqrt(v2))
    se = log_ratio.std() / math.sqrt(x.size)
    assert abs(log_ratio.mean() - kl) <= 5 * se + 1e-12


def test_kl_terms_of_the_bound_against_monte_carlo(backend):
    """L_{t-1} (KL of Eq. 5 between Eq. 7 and the model step) and L_T, by sampling."""
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    x0, x_t = arr([[0.5, -0.3]]), arr([[0.2, 0.4]])
    t = 40
    output = arr([[0.1, -0.6]])  # any eps prediction
    term = float(diffusion.vlb_terms(output, x0, x_t, t, variance="beta")[0])
    q_mean, q_var, _ = diffusion.q_posterior(x0, x_t, t)
    p = diffusion.p_mean_variance(output, x_t, t, variance="beta")
    n = 200000
    sample = host(q_mean) + math.sqrt(float(q_var[0, 0])) * np.random.default_rng(10).normal(size=(n, 2))
    log_q = st.norm.logpdf(sample, host(q_mean), math.sqrt(float(q_var[0, 0]))).sum(1)
    log_p = st.norm.logpdf(sample, host(p.mean), math.sqrt(float(p.variance[0, 0]))).sum(1)
    ratio = log_q - log_p
    assert abs(ratio.mean() - term) <= 5 * ratio.std() / math.sqrt(n)
    # L_T = KL(N(sqrt(ab_T) x_0, 1 - ab_T) || N(0, I)), summed over dimensions.
    ab = float(diffusion.schedule.alpha_bars[99])
    prior = float(diffusion.prior_kl(x0)[0])
    expected = sum(0.5 * (-1 - math.log(1 - ab) + (1 - ab) + ab * v * v) for v in (0.5, -0.3))
    assert prior == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_vlb_weights_turn_squared_error_into_the_kl_term(backend, prediction_type, variance):
    """The Eq. 12 weights: KL term - KL at the exact mean = D * w_t * mean squared error."""
    diffusion = GaussianDiffusion(make_schedule("cosine", 50), prediction_type, "vlb", variance=variance)
    rng = B.default_rng(11)
    x0, eps = rng.normal((20, 3), dtype=B.float64()), rng.normal((20, 3), dtype=B.float64())
    t = rng.integers(1, 50, (20,))
    x_t = diffusion.q_sample(x0, t, eps)
    target = diffusion.training_target(x0, eps, t)
    output = target + 0.1 * rng.normal((20, 3), dtype=B.float64())
    term = host(diffusion.vlb_terms(output, x0, x_t, t))
    floor = host(diffusion.vlb_terms(target, x0, x_t, t))  # the exact mean: variance part only
    mse = ((host(output) - host(target)) ** 2).mean(1)
    weights = host(diffusion.loss_weights(t, dtype=B.float64()))
    np.testing.assert_allclose(term - floor, 3 * weights * mse, rtol=1e-8)


def test_discretized_decoder_eq13_against_scipy(backend):
    rng = np.random.default_rng(12)
    x = rng.integers(0, 256, 4000) / 127.5 - 1.0
    mean = rng.uniform(-1.3, 1.3, 4000)
    scale = rng.choice([1e-3, 1e-2, 0.1, 1.0, 3.0, 30.0], 4000)
    got = host(discretized_gaussian_log_likelihood(arr(x), arr(mean), arr(np.log(scale))))
    upper = np.where(x > 0.999, np.inf, x + 1 / 255)
    lower = np.where(x < -0.999, -np.inf, x - 1 / 255)
    # Exact bin masses, on the side of the smaller tail (scipy's log CDF / log SF).
    with np.errstate(all="ignore"):
        left = st.norm.logcdf(upper, mean, scale) + np.log(
            -np.expm1(st.norm.logcdf(lower, mean, scale) - st.norm.logcdf(upper, mean, scale))
        )
        right = st.norm.logsf(lower, mean, scale) + np.log(
            -np.expm1(st.norm.logsf(upper, mean, scale) - st.norm.logsf(lower, mean, scale))
        )
    expected = np.where(x <= mean, left, right)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mean, scale", [(0.0, 0.01), (0.37, 0.2), (-0.95, 1.0), (1.2, 0.05), (0.0, 1e-4)])
def test_discretized_decoder_is_a_distribution_over_256_levels(backend, mean, scale):
    levels = np.arange(256) / 127.5 - 1.0
    log_p = discretized_gaussian_log_likelihood(arr(levels), arr(np.full(256, mean)), arr(np.full(256, math.log(scale))))
    assert float(np.exp(host(log_p)).sum()) == pytest.approx(1.0, abs=1e-6)


def test_gaussian_decoder_against_scipy(backend):
    x, mean, scale = np.linspace(-3, 3, 11), np.linspace(1, -1, 11), np.linspace(0.1, 2, 11)
    got = host(gaussian_log_likelihood(arr(x), arr(mean), arr(np.log(scale))))
    np.testing.assert_allclose(got, st.norm.logpdf(x, mean, scale), rtol=1e-12)


def test_vlb_structure_and_units(backend):
    T = 20
    diffusion = GaussianDiffusion(make_schedule("cosine", T))
    x0 = B.asarray(np.random.default_rng(13).integers(0, 256, (5, 6)) / 127.5 - 1.0, dtype=B.float64())
    calls = []

    def model(x, t):
        calls.append(x.shape[0])
        return 0.1 * x

    result = diffusion.vlb(model, x0, B.default_rng(14), batch_size=25)
    assert host(result["terms"]).shape == (5, T)
    assert sum(calls) == 5 * T and max(calls) <= 25  # chunks of several t per call
    total = host(result["prior"]) + host(result["terms"]).sum(1)
    np.testing.assert_allclose(host(result["total"]), total, rtol=1e-12)
    np.testing.assert_allclose(host(result["bits_per_dim"]), total / (6 * math.log(2)), rtol=1e-12)
    assert np.all(host(result["terms"])[:, 1:] >= 0)  # KL terms are non-negative
    # Column 0 is the decoder L_0 = -log p(x_0 | x_1) of Eq. 13 (the first
    # noise vlb draws is that of t = 0; sigma_1^2 = beta_1).
    x_1 = diffusion.q_sample(x0, 0, B.default_rng(14).normal((5, 6), dtype=B.float64()))
    mean = host(diffusion.p_mean_variance(0.1 * x_1, x_1, 0).mean)
    scale = math.sqrt(float(diffusion.schedule.betas[0]))
    xs = host(x0)
    upper = np.where(xs > 0.999, np.inf, xs + 1 / 255)
    lower = np.where(xs < -0.999, -np.inf, xs - 1 / 255)
    mass = st.norm.cdf(upper, mean, scale) - st.norm.cdf(lower, mean, scale)
    np.testing.assert_allclose(host(result["terms"])[:, 0], -np.log(mass).sum(1), rtol=1e-6)
    again = diffusion.vlb(model, x0, B.default_rng(14), batch_size=25)
    np.testing.assert_allclose(host(again["total"]), host(result["total"]), rtol=0)  # same rng, same result
    with pytest.raises(ValueError, match="decoder must be one of 'discretized', 'gaussian'"):
        diffusion.vlb(model, x0, B.default_rng(0), decoder="logistic")
