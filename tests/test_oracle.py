"""The exact denoiser of Gaussian-mixture data, and the bound checked with it."""

import math

import numpy as np
import pytest
import scipy.stats as st

from tinydiff import backend as B
from tinydiff.autograd import Tensor
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.oracle import GaussianMixture, MixtureDenoiser, distance_to_oracle, true_nll
from tinydiff.schedules import make_schedule
from conftest import host


MIX = dict(weights=[2.0, 1.0, 1.0], means=[[-1.0, 0.5], [1.0, 1.0], [0.5, -1.5]], variances=[[0.2, 0.1], [0.05, 0.3], [0.1, 0.1]])


def test_mixture_log_prob_and_moments(backend):
    mixture = GaussianMixture(**MIX)
    assert mixture.n_components == 3 and mixture.dim == 2
    np.testing.assert_allclose(host(mixture.weights), [0.5, 0.25, 0.25])
    x = np.random.default_rng(0).normal(size=(50, 2)) * 1.5
    expected = np.log(
        sum(
            w * st.multivariate_normal(m, np.diag(v)).pdf(x)
            for w, m, v in zip([0.5, 0.25, 0.25], MIX["means"], MIX["variances"])
        )
    )
    np.testing.assert_allclose(host(mixture.log_prob(B.asarray(x, dtype=B.float64()))), expected, rtol=1e-12)
    # Far out (log q about -5000) the logsumexp must not underflow to -inf.
    far = host(mixture.log_prob(B.asarray([[60.0, -60.0]], dtype=B.float64())))
    assert np.isfinite(far).all()
    # Sample moments within 5 SE of the mixture's mean and variance.
    n = 40000
    sample = host(mixture.sample(n, B.default_rng(1), dtype=B.float64()))
    mean, var = host(mixture.mean()), host(mixture.variance())
    assert np.all(np.abs(sample.mean(0) - mean) < 5 * np.sqrt(var / n))
    # SE of a sample variance: sd of the squared deviations / sqrt(n).
    se_var = ((sample - sample.mean(0)) ** 2).std(0) / math.sqrt(n)
    assert np.all(np.abs(sample.var(0) - var) < 5 * se_var)
    assert mixture.sample(5, B.default_rng(1)).dtype == B.dtype("float32")


def test_mixture_1d_and_bad_input(backend):
    mixture = GaussianMixture([1.0], [0.3], [0.04])
    assert mixture.dim == 1
    x = B.asarray([[0.0], [0.5]], dtype=B.float64())
    np.testing.assert_allclose(host(mixture.log_prob(x)), st.norm.logpdf([0.0, 0.5], 0.3, 0.2), rtol=1e-12)
    np.testing.assert_allclose(host(true_nll(mixture, x)), -st.norm.logpdf([0.0, 0.5], 0.3, 0.2), rtol=1e-12)
    with pytest.raises(ValueError, match="weights must be positive"):
        GaussianMixture([1.0, -1.0], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="variances must be positive"):
        GaussianMixture([1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match="means must have shape \\(K, D\\) or \\(K,\\) with K = 2"):
        GaussianMixture([1.0, 1.0], [0.0, 1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="variances must have shape"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[1.0, 1.0, 1.0]])


def test_posterior_mean_against_numerical_bayes(backend):
    """E[x_0 | x_t] of the oracle against Bayes' rule by quadrature (1-D mixture)."""
    mixture = GaussianMixture([0.7, 0.3], [-1.0, 1.2], [0.1, 0.3])
    diffusion = GaussianDiffusion(make_schedule("linear", 1000), prediction_type="x0")
    oracle = MixtureDenoiser(mixture, diffusion)
    grid = np.linspace(-6, 6, 200001)
    prior = 0.7 * st.norm.pdf(grid, -1.0, math.sqrt(0.1)) + 0.3 * st.norm.pdf(grid, 1.2, math.sqrt(0.3))
    for t in (0, 50, 300, 999):
        ab = float(diffusion.schedule.alpha_bars[t])
        for x_t in (-1.3, 0.1, 2.0):
            weight = prior * st.norm.pdf(x_t, math.sqrt(ab) * grid, math.sqrt(1 - ab))
            expected = (weight * grid).sum() / weight.sum()
            got = float(oracle(B.asarray([[x_t]], dtype=B.float64()), t)[0, 0])
            assert got == pytest.approx(expected, abs=1e-6), (t, x_t)


@pytest.mark.parametrize("prediction_type", ["eps", "v"])
def test_oracle_prediction_types_agree(backend, prediction_type):
    mixture = GaussianMixture(**MIX)
    schedule = make_schedule("cosine", 100)
    reference = MixtureDenoiser(mixture, GaussianDiffusion(schedule, prediction_type="x0"))
    diffusion = GaussianDiffusion(schedule, prediction_type=prediction_type)
    oracle = MixtureDenoiser(mixture, diffusion)
    rng = B.default_rng(2)
    x_t = rng.normal((40, 2), dtype=B.float64())
    t = rng.integers(0, 100, (40,))
    _, x0 = diffusion.split_prediction(oracle(x_t, t), x_t, t)
    np.testing.assert_allclose(host(x0), host(reference(x_t, t)), rtol=1e-9, atol=1e-9)
    assert oracle(B.xp.astype(x_t, B.dtype("float32")), t).dtype == B.dtype("float32")


def test_single_gaussian_oracle_is_the_linear_formula(backend):
    """For N(m, v) data, E[eps | x_t] = s (x_t - a m) / (a^2 v + s^2) (Eq. 9 and Bayes)."""
    diffusion = GaussianDiffusion(make_schedule("linear", 200))
    oracle = MixtureDenoiser(GaussianMixture([1.0], [[0.4, -0.2]], [0.25]), diffusion)
    x_t = B.asarray([[0.3, 0.1], [-2.0, 1.0]], dtype=B.float64())
    t = B.asarray(np.array([10, 150]))
    ab = host(diffusion.schedule.alpha_bars)[[10, 150]][:, None]
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    expected = s * (host(x_t) - a * np.array([0.4, -0.2])) / (a * a * 0.25 + s * s)
    np.testing.assert_allclose(host(oracle(x_t, t)), expected, rtol=1e-12)


def test_oracle_minimises_the_training_loss(backend):
    """The conditional mean beats any perturbation of it on the Eq. 14 loss."""
    mixture = GaussianMixture(**MIX)
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    oracle = MixtureDenoiser(mixture, diffusion)
    x0 = mixture.sample(4000, B.default_rng(3), dtype=B.float64())

    def loss(model):
        return diffusion.training_loss(lambda x, t: Tensor(model(x, t)), x0, B.default_rng(4)).item()

    best = loss(oracle)
    assert best < loss(lambda x, t: 1.05 * oracle(x, t))
    assert best < loss(lambda x, t: oracle(x, t) + 0.05)
    assert best < loss(lambda x, t: 0.0 * x)


def test_distance_to_oracle(backend):
    """distance = c^2 for oracle + c; model_loss = distance + oracle_loss up to MC error."""
    mixture = GaussianMixture(**MIX)
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    oracle = MixtureDenoiser(mixture, diffusion)
    x0 = mixture.sample(20000, B.default_rng(5), dtype=B.float64())
    shifted = lambda x, t: Tensor(oracle(x, t) + 0.1)  # noqa: E731
    result = distance_to_oracle(shifted, oracle, diffusion, x0, B.default_rng(6), [0, 50, 99])
    assert result["t"] == [0, 50, 99]
    np.testing.assert_allclose(result["distance"], 0.01, rtol=1e-9)
    # model_loss - oracle_loss - distance = 2 c E[oracle - target]: mean zero, SE
    # 2 c sqrt(oracle_loss / (n D)).
    for m, o, d in zip(result["model_loss"], result["oracle_loss"], result["distance"]):
        assert abs(m - o - d) < 5 * 2 * 0.1 * math.sqrt(o / (20000 * 2))
    same = distance_to_oracle(oracle, oracle, diffusion, x0, B.default_rng(6), [10])
    assert same["distance"] == [0.0]


def bound_gap(T, n=8000):
    """Mean (bound - true NLL) over n examples of N(0, 0.3^2) data, and its SE."""
    mixture = GaussianMixture([1.0], [0.0], [0.09])
    diffusion = GaussianDiffusion(make_schedule("linear", T), variance="beta")
    x0 = mixture.sample(n, B.default_rng(7), dtype=B.float64())
    bound = diffusion.vlb(MixtureDenoiser(mixture, diffusion), x0, B.default_rng(8), decoder="gaussian")
    gap = host(bound["total"] - true_nll(mixture, x0))
    return gap.mean(), gap.std() / math.sqrt(n)


def test_bound_approaches_the_true_nll_as_T_grows():
    """The oracle's bound (Eq. 3, 5, Gaussian decoder, sigma^2 = beta) on N(0, 0.3^2) data.

    Measured with 20000 examples, in nats per example (true NLL 0.209):
    gap 0.119 at T = 30, 0.031 at T = 100, 0.007 at T = 300, 0.000 +- 0.007
    at T = 1000. Here with 8000 examples (SE about 0.011; numpy only, ~1.5 s):
    the gap at T = 30 is positive by far more than 5 SE, smaller at T = 100,
    and within 4 SE of 0 at T = 1000.
    """
    gap30, se30 = bound_gap(30)
    gap100, se100 = bound_gap(100)
    gap1000, se1000 = bound_gap(1000)
    assert gap30 > 5 * se30
    assert gap100 < gap30 - 3 * math.hypot(se30, se100)
    assert abs(gap1000) < 4 * se1000
    assert gap30 - gap1000 > 4 * math.hypot(se30, se1000)
