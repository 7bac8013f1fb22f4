"""Samplers: DDPM (Algorithm 2) and DDIM (Song et al. Eq. 12).

The samplers are checked with the exact denoiser of Gaussian-mixture data
(tinydiff.oracle), so no training is needed: with the ideal model the
samples must follow the data distribution up to Monte Carlo error (and the
samplers' own, known, discretization error). Tolerances are k standard errors
(SE) as stated at each check. The 1000-step runs use numpy only; a cheap
T = 50 run covers every backend.
"""

import math

import numpy as np
import pytest
import scipy.stats as st

from tinydiff import backend as B
from tinydiff.autograd import Tensor, is_grad_enabled
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.oracle import GaussianMixture, MixtureDenoiser
from tinydiff.samplers import ddim, ddpm, timesteps
from tinydiff.schedules import make_schedule
from conftest import host


def toy_model(x, t):
    """A deterministic stand-in for a network: depends on x and t, row by row."""
    return 0.3 * x + 0.001 * B.xp.reshape(B.xp.astype(t, x.dtype), (-1,) + (1,) * (x.ndim - 1))


# -- timesteps -------------------------------------------------------------------------


def test_timesteps_spacings():
    assert timesteps(1000, 50, "leading") == list(range(980, -1, -20))
    assert timesteps(1000, 50, "trailing") == list(range(999, 18, -20))
    linspace = timesteps(1000, 50, "linspace")
    assert linspace[0] == 999 and linspace[-1] == 0 and len(linspace) == 50
    assert timesteps(1000, 4, "linspace") == [999, 666, 333, 0]
    assert timesteps(10, 1, "linspace") == [9] and timesteps(10, 1, "trailing") == [9]
    for spacing in ("linspace", "leading", "trailing"):
        assert timesteps(7, 7, spacing) == [6, 5, 4, 3, 2, 1, 0]  # the full sequence
        for T, n in [(1000, 20), (1000, 100), (1000, 999), (37, 5), (37, 36), (1, 1)]:
            seq = timesteps(T, n, spacing)
            assert len(seq) == n and all(0 <= s < T for s in seq), (T, n, spacing)
            assert all(a > b for a, b in zip(seq, seq[1:])), (T, n, spacing)  # strictly descending
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 10\]"):
        timesteps(10, 11)
    with pytest.raises(ValueError, match="spacing must be one of 'linspace', 'leading', 'trailing'"):
        timesteps(10, 5, "uniform")


# -- exact step identities -----------------------------------------------------------


def test_ddim_eta1_full_sequence_is_the_ddpm_posterior_step(backend):
    """Song et al.: eta = 1 on the full sequence is Algorithm 2 with sigma^2 = beta_tilde.

    Both samplers key the noise of step t by (seed, t), so with the same seed
    the two runs see the same x_T and the same z at every step.
    """
    diffusion = GaussianDiffusion(make_schedule("cosine", 40))
    a = ddpm(toy_model, diffusion, (6, 3), B.default_rng(1), variance="beta_tilde", dtype=B.float64())
    b = ddim(toy_model, diffusion, (6, 3), B.default_rng(1), steps=40, eta=1.0, dtype=B.float64())
    np.testing.assert_allclose(host(a), host(b), rtol=1e-9, atol=1e-9)
    c = ddpm(toy_model, diffusion, (6, 3), B.default_rng(1), variance="beta", dtype=B.float64())
    assert not np.allclose(host(a), host(c))  # the other variance gives other samples


def test_one_ddim_step_is_song_eq12(backend):
    """A two-step DDIM run taken apart: step t -> t - k (not t - 1), Eq. 12 and 16."""
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    eta = 0.7
    x, trajectory = ddim(
        toy_model, diffusion, (4, 2), B.default_rng(2), steps=2, eta=eta, spacing="linspace",
        return_trajectory=True, every=1, dtype=B.float64(),
    )
    assert trajectory["t"] == [99, 0]
    ab = host(diffusion.schedule.alpha_bars)
    x_t = host(trajectory["x"][0])
    eps = host(toy_model(trajectory["x"][0], B.asarray(np.full(4, 99))))
    x0 = (x_t - math.sqrt(1 - ab[99]) * eps) / math.sqrt(ab[99])  # Eq. 15
    sigma = eta * math.sqrt((1 - ab[0]) / (1 - ab[99])) * math.sqrt(1 - ab[99] / ab[0])  # Eq. 16
    base = B.default_rng(2).next_seed()
    z = host(B.default_rng((base, 99)).normal((4, 2), dtype=B.float64()))
    x_next = math.sqrt(ab[0]) * x0 + math.sqrt(1 - ab[0] - sigma**2) * eps + sigma * z  # Eq. 12
    np.testing.assert_allclose(host(trajectory["x"][1]), x_next, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(trajectory["x0"][0]), x0, rtol=1e-10, atol=1e-12)
    # The last step (t = 0 to the data) lands on its predicted x_0.
    np.testing.assert_allclose(host(x), host(trajectory["x0"][1]), rtol=1e-12)


def test_ddpm_step_is_algorithm2(backend):
    diffusion = GaussianDiffusion(make_schedule("linear", 30))
    x, trajectory = ddpm(toy_model, diffusion, (3, 2), B.default_rng(3), return_trajectory=True, every=1, dtype=B.float64())
    assert trajectory["t"] == list(range(29, -1, -1))
    s = diffusion.schedule
    base = B.default_rng(3).next_seed()
    for i in (0, 15, 28):
        t = trajectory["t"][i]
        x_t = host(trajectory["x"][i])
        eps = 0.3 * x_t + 0.001 * t
        alpha, beta, ab = float(s.alphas[t]), float(s.betas[t]), float(s.alpha_bars[t])
        z = host(B.default_rng((base, t)).normal((3, 2), dtype=B.float64()))
        # Algorithm 2: x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - ab_t) eps) / sqrt(alpha_t) + sigma_t z
        expected = (x_t - (1 - alpha) / math.sqrt(1 - ab) * eps) / math.sqrt(alpha) + math.sqrt(beta) * z
        np.testing.assert_allclose(host(trajectory["x"][i + 1]), expected, rtol=1e-10, atol=1e-12)
    # Last step: no noise.
    x_1 = host(trajectory["x"][-1])
    expected = (x_1 - float(s.betas[0]) / math.sqrt(1 - float(s.alpha_bars[0])) * (0.3 * x_1)) / math.sqrt(float(s.alphas[0]))
    np.testing.assert_allclose(host(x), expected, rtol=1e-10)


# -- calling conventions ---------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_reproducible_across_batch_size_and_sample_count(backend, sampler):
    diffusion = GaussianDiffusion(make_schedule("linear", 25))
    run = (lambda **kw: ddpm(toy_model, diffusion, rng=B.default_rng(4), **kw)) if sampler == "ddpm" else (
        lambda **kw: ddim(toy_model, diffusion, rng=B.default_rng(4), steps=10, eta=1.0, **kw)
    )
    full = host(run(shape=(64, 2), batch_size=64))
    chunked = host(run(shape=(64, 2), batch_size=16))
    first = host(run(shape=(16, 2)))
    np.testing.assert_array_equal(full, chunked)
    np.testing.assert_array_equal(full[:16], first)
    assert full.dtype == np.float32  # sampling defaults to float32


def test_model_conventions_tensor_no_grad_kwargs_progress(backend, capsys):
    diffusion = GaussianDiffusion(make_schedule("linear", 25), prediction_type="v")
    seen = []

    def model(x, t, label=None):
        assert not is_grad_enabled()  # samplers run under no_grad
        assert t.dtype == B.xp.int64 and t.shape == (x.shape[0],)
        seen.append((x.shape[0], None if label is None else host(label).tolist()))
        return Tensor(0.1 * x, requires_grad=True)

    labels = B.asarray(np.arange(10))
    out = ddim(model, diffusion, (10, 3), B.default_rng(5), steps=5, batch_size=4,
               model_kwargs={"label": labels}, progress=True)
    assert tuple(out.shape) == (10, 3) and B.is_array(out)
    # Per-row keyword arrays are chunked with x.
    assert seen[:3] == [(4, [0, 1, 2, 3]), (4, [4, 5, 6, 7]), (2, [8, 9])]
    assert "ddim" in capsys.readouterr().err  # the tqdm bar


def test_trajectory_every_k_steps(backend):
    diffusion = GaussianDiffusion(make_schedule("linear", 50))
    x, trajectory = ddpm(toy_model, diffusion, (5, 2), B.default_rng(6), return_trajectory=True, every=10)
    assert trajectory["t"] == [49, 39, 29, 19, 9, 0]
    assert len(trajectory["x"]) == len(trajectory["x0"]) == 6
    assert all(tuple(a.shape) == (5, 2) for a in trajectory["x"] + trajectory["x0"])
    _, default = ddim(toy_model, diffusion, (5, 2), B.default_rng(6), steps=20, return_trajectory=True)
    assert default["t"][0] == 49 and default["t"][-1] == 0 and len(default["t"]) == 11


def test_clip_x0_keeps_samples_in_range(backend):
    diffusion = GaussianDiffusion(make_schedule("linear", 30))
    wild = lambda x, t: -5.0 * x  # noqa: E731  (predicts x_0 far outside [-1, 1])
    for sample in (
        ddpm(wild, diffusion, (50, 2), B.default_rng(7), clip_x0=True),
        ddim(wild, diffusion, (50, 2), B.default_rng(7), steps=10, clip_x0=True),
    ):
        assert np.all(np.abs(host(sample)) <= 1.0 + 1e-6)
    assert np.abs(host(ddim(wild, diffusion, (50, 2), B.default_rng(7), steps=10))).max() > 1.0


def test_bad_sampler_arguments(backend):
    diffusion = GaussianDiffusion(make_schedule("linear", 30))
    with pytest.raises(ValueError, match="variance must be one of 'beta', 'beta_tilde'"):
        ddpm(toy_model, diffusion, (2, 2), B.default_rng(0), variance="fixedlarge")
    with pytest.raises(ValueError, match="eta must be a number >= 0"):
        ddim(toy_model, diffusion, (2, 2), B.default_rng(0), eta=-1.0)
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 30\]"):
        ddim(toy_model, diffusion, (2, 2), B.default_rng(0), steps=31)
    with pytest.raises(ValueError, match="batch_size must be None or an integer >= 1"):
        ddpm(toy_model, diffusion, (2, 2), B.default_rng(0), batch_size=0)
    with pytest.raises(ValueError, match="shape must be a tuple of positive ints"):
        ddpm(toy_model, diffusion, (0, 2), B.default_rng(0))


# -- with the exact denoiser -----------------------------------------------------------


def exact_gaussian_sampler_law(schedule, m, v, sequence=None, eta=0.0, variance=None):
    """Mean and sd of a sampler's output for N(m, v) data and the exact denoiser.

    For Gaussian data every step is affine in x_t: the exact denoiser gives
    x0_hat = m + k (x_t - a m) with k = a v / (a^2 v + s^2), a = sqrt(alpha_bar),
    s^2 = 1 - alpha_bar (Bayes' rule), and the step adds independent noise. So
    the output law is Gaussian and its moments follow by a recursion, written
    here from the papers' formulas in plain NumPy, independent of samplers.py.
    ``variance`` set: DDPM (Algorithm 2); else DDIM (Eq. 12) on ``sequence``.
    """
    ab, betas = B.to_numpy(schedule.alpha_bars), B.to_numpy(schedule.betas)
    mean, var = 0.0, 1.0  # x_T ~ N(0, 1)
    steps = list(range(len(ab) - 1, -1, -1)) if variance else sequence
    for i, t in enumerate(steps):
        a, s2 = math.sqrt(ab[t]), 1 - ab[t]
        k = a * v / (a * a * v + s2)
        x0_offset, x0_gain = m - k * a * m, k  # x0_hat = offset + gain x_t
        prev = ab[steps[i + 1]] if i + 1 < len(steps) else 1.0
        if variance:  # Eq. 7 mean at x0_hat; sigma^2 = beta or beta_tilde, none at t = 0
            c1 = betas[t] * math.sqrt(prev) / s2
            c2 = (1 - prev) * math.sqrt(1 - betas[t]) / s2
            noise = 0.0 if t == 0 else (betas[t] if variance == "beta" else betas[t] * (1 - prev) / s2)
        else:  # Eq. 12 with eps_hat = (x_t - a x0_hat) / s and sigma of Eq. 16
            sigma2 = eta**2 * (1 - prev) / s2 * (1 - ab[t] / prev)
            d = math.sqrt(max(1 - prev - sigma2, 0.0)) / math.sqrt(s2)
            c1, c2, noise = math.sqrt(prev) - d * a, d, sigma2
        gain, offset = c1 * x0_gain + c2, c1 * x0_offset
        mean, var = offset + gain * mean, gain * gain * var + noise
    return mean, math.sqrt(var)


def test_cheap_oracle_sampling_every_backend(backend):
    """T = 50 with the exact denoiser of N(0.5, 0.4^2) in 1-D, on every backend.

    At T = 50 the samplers' discretization error is large (the sd comes out
    +4.6% with sigma^2 = beta, -13% with beta_tilde), so the sample moments
    are compared with the sampler's exact output law for this T
    (exact_gaussian_sampler_law): mean within 5 SE (sd / sqrt(n)), sd within
    5 SE (sd / sqrt(2 n)).
    """
    schedule = make_schedule("linear", 50)
    diffusion = GaussianDiffusion(schedule)
    oracle = MixtureDenoiser(GaussianMixture([1.0], [0.5], [0.16]), diffusion)
    n = 4000
    runs = [
        (ddpm(oracle, diffusion, (n, 1), B.default_rng(8), dtype=B.float64()), dict(variance="beta")),
        (ddpm(oracle, diffusion, (n, 1), B.default_rng(8), variance="beta_tilde", dtype=B.float64()),
         dict(variance="beta_tilde")),
        (ddim(oracle, diffusion, (n, 1), B.default_rng(8), steps=10, dtype=B.float64()), dict(sequence=timesteps(50, 10))),
        (ddim(oracle, diffusion, (n, 1), B.default_rng(8), steps=50, eta=1.0, dtype=B.float64()),
         dict(sequence=timesteps(50, 50), eta=1.0)),
    ]
    for sample, law in runs:
        x = host(sample)[:, 0]
        mean, sd = exact_gaussian_sampler_law(schedule, 0.5, 0.16, **law)
        assert abs(x.mean() - mean) < 5 * sd / math.sqrt(n), (law, x.mean(), mean)
        assert abs(x.std() - sd) < 5 * sd / math.sqrt(2 * n), (law, x.std(), sd)
    # The law itself: sigma^2 = beta overshoots and beta_tilde undershoots the true 0.4.
    assert exact_gaussian_sampler_law(schedule, 0.5, 0.16, variance="beta")[1] > 0.41
    assert exact_gaussian_sampler_law(schedule, 0.5, 0.16, variance="beta_tilde")[1] < 0.36


MIXTURE_2D = dict(
    weights=[0.5, 0.3, 0.2],
    means=[[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]],
    variances=[[0.09, 0.09], [0.16, 0.04], [0.0625, 0.0625]],
)
MIXTURE_1D = dict(weights=[0.6, 0.4], means=[-1.5, 1.0], variances=[0.09, 0.25])

FULL_SAMPLERS = {
    "ddpm-beta": lambda m, d, shape, rng: ddpm(m, d, shape, rng, variance="beta", dtype=B.float64()),
    "ddpm-beta_tilde": lambda m, d, shape, rng: ddpm(m, d, shape, rng, variance="beta_tilde", dtype=B.float64()),
    "ddim-eta0": lambda m, d, shape, rng: ddim(m, d, shape, rng, steps=d.T, eta=0.0, dtype=B.float64()),
    "ddim-eta1": lambda m, d, shape, rng: ddim(m, d, shape, rng, steps=d.T, eta=1.0, dtype=B.float64()),
}


@pytest.mark.parametrize("sampler", list(FULL_SAMPLERS))
def test_full_samplers_match_the_mixture(sampler):
    """1000 steps with the exact denoiser: the mixture's weights, means and variances.

    2-D, three well separated components (numpy only; about 2 s per sampler).
    Samples are assigned to the component of largest responsibility; with
    n_k samples in component k the checks are: weight within 4 binomial SE,
    each mean within 4 SE (sqrt(v / n_k)), each variance within 4 SE
    (v sqrt(2 / n_k)). The samplers' own bias on a component of sd 0.3 is
    about +0.6% (DDPM, beta), -2.5% (beta_tilde and DDIM eta 1) and -1% (DDIM
    eta 0) in variance at T = 1000, well inside these bounds.
    Then a 1-D mixture, by a Kolmogorov-Smirnov test against its exact CDF.
    """
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    mixture = GaussianMixture(**MIXTURE_2D)
    n = 3000
    x = FULL_SAMPLERS[sampler](MixtureDenoiser(mixture, diffusion), diffusion, (n, 2), B.default_rng(9))
    x = host(x)
    component = host(mixture.component_log_prob(B.asarray(x))).argmax(1)
    for k, (w, m, v) in enumerate(zip(MIXTURE_2D["weights"], MIXTURE_2D["means"], MIXTURE_2D["variances"])):
        members = x[component == k]
        n_k = len(members)
        assert abs(n_k / n - w) < 4 * math.sqrt(w * (1 - w) / n), (k, n_k / n)
        assert np.all(np.abs(members.mean(0) - m) < 4 * np.sqrt(np.array(v) / n_k)), (k, members.mean(0))
        assert np.all(np.abs(members.var(0, ddof=1) - v) < 4 * np.array(v) * math.sqrt(2 / n_k)), (k, members.var(0))

    mixture_1d = GaussianMixture(**MIXTURE_1D)
    y = host(FULL_SAMPLERS[sampler](MixtureDenoiser(mixture_1d, diffusion), diffusion, (2000, 1), B.default_rng(10)))[:, 0]

    def cdf(v):
        return sum(w * st.norm.cdf(v, m, math.sqrt(s)) for w, m, s in zip(*MIXTURE_1D.values()))

    assert st.kstest(y, cdf).pvalue > 1e-3


def _ddim_sd_ratio(steps, n=20000):
    """sd of deterministic DDIM samples / 0.3, for N(0, 0.3^2) data and the exact denoiser."""
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    oracle = MixtureDenoiser(GaussianMixture([1.0], [0.0], [0.09]), diffusion)
    x, trajectory = ddim(
        oracle, diffusion, (n, 1), B.default_rng(11), steps=steps, eta=0.0, dtype=B.float64(),
        return_trajectory=True, every=steps,
    )
    # The deterministic map is linear for Gaussian data, x_0 = c x_T, so the
    # ratio of sample sds is |c| exactly, free of Monte Carlo error in x_T.
    x_T = host(trajectory["x"][0])
    return float(np.std(host(x)) / (0.3 * np.std(x_T)))


def test_ddim_discretization_error_shrinks_with_steps():
    """DDIM with the exact denoiser on N(0, 0.3^2): fewer steps, smaller spread.

    Measured (linear schedule, T = 1000, linspace spacing): the sample sd is
    0.957, 0.915 and 0.793 of the true 0.3 at 100, 50 and 20 steps (0.995 on
    all 1000): 50 deterministic steps give an sd about 8.5% too small. The
    map is linear, so these ratios are exact (computed here from the sampler
    itself, not from a formula).
    """
    ratios = {steps: _ddim_sd_ratio(steps, n=200) for steps in (20, 50, 100, 1000)}
    assert ratios[20] < ratios[50] < ratios[100] < ratios[1000] < 1.0
    assert ratios[50] == pytest.approx(0.915, abs=0.002)
    assert ratios[20] == pytest.approx(0.793, abs=0.002)
    assert ratios[100] == pytest.approx(0.957, abs=0.002)
    assert ratios[1000] == pytest.approx(0.995, abs=0.002)


def test_classifier_free_guidance_eq6(backend):
    """Ho and Salimans Eq. 6: (1 + w) out(x, c) - w out(x, null); w = 0 is conditional."""
    from tinydiff.samplers import classifier_free_guidance

    def model(x, t, y=None):
        shift = 0.0 if y is None else B.xp.reshape(B.xp.astype(y, x.dtype), (-1, 1))
        return Tensor(0.5 * x + shift)

    x = B.asarray(np.array([[1.0, 2.0], [3.0, 4.0]]), dtype=B.float64())
    t = B.asarray(np.array([3, 3]))
    y = B.asarray(np.array([1, 2]))
    guided = classifier_free_guidance(model, 2.0)(x, t, y=y)
    expected = 3.0 * (0.5 * host(x) + [[1.0], [2.0]]) - 2.0 * (0.5 * host(x))
    np.testing.assert_allclose(host(guided), expected, rtol=1e-14)
    np.testing.assert_allclose(host(classifier_free_guidance(model, 0.0)(x, t, y=y)), host(model(x, t, y=y).data))
    diffusion = GaussianDiffusion(make_schedule("linear", 30))
    out = ddim(classifier_free_guidance(model, 1.0), diffusion, (2, 2), B.default_rng(0), steps=5,
               batch_size=1, model_kwargs={"y": y})
    assert tuple(out.shape) == (2, 2)
    with pytest.raises(ValueError, match="guidance must be a number w >= 0"):
        classifier_free_guidance(model, -1.0)


def test_denoisers_get_one_int_t_and_plain_callables_get_an_array(backend):
    """tinydiff's denoisers say accepts_scalar_t, so a sampler step hands them its one t
    (the conditioning is computed once, not per row). Samples must match the same model
    called through a plain function, which gets the (N,) array, and stay independent of
    batch_size; classifier_free_guidance passes the promise on."""
    from tinydiff import nn
    from tinydiff.samplers import classifier_free_guidance

    diffusion = GaussianDiffusion(make_schedule("linear", 25))
    model = nn.MLPDenoiser(data_dim=2, width=32, depth=2, emb_dim=16, num_classes=3, num_timesteps=25,
                           rng=B.default_rng(1))
    seen = []

    def plain(x, t, **kwargs):
        seen.append(t)
        return model(x, t, **kwargs)

    class Recording(nn.MLPDenoiser):  # the same model, noting what t it is handed
        def forward(self, x, t, **kwargs):
            seen_by_denoiser.append(t)
            return super().forward(x, t, **kwargs)

    seen_by_denoiser = []
    recording = Recording(data_dim=2, width=32, depth=2, emb_dim=16, num_classes=3, num_timesteps=25,
                          rng=B.default_rng(1))
    ddim(recording, diffusion, (12, 2), B.default_rng(2), steps=5, batch_size=5)
    assert len(seen_by_denoiser) == 15 and all(type(t) is int for t in seen_by_denoiser)

    fast = host(ddpm(model, diffusion, (12, 2), B.default_rng(2)))
    fast_chunked = host(ddpm(model, diffusion, (12, 2), B.default_rng(2), batch_size=5))
    slow = host(ddpm(plain, diffusion, (12, 2), B.default_rng(2)))
    assert all(B.is_array(t) and t.shape == (12,) for t in seen)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fast, fast_chunked, rtol=1e-5, atol=1e-6)

    guided = classifier_free_guidance(model, 2.0)
    assert guided.accepts_scalar_t is True
    assert classifier_free_guidance(plain, 2.0).accepts_scalar_t is False
    labels = B.asarray(np.array([0, 1, 2] * 4), dtype=B.dtype("int64"))
    guided_fast = host(ddim(guided, diffusion, (12, 2), B.default_rng(3), steps=5, model_kwargs={"y": labels}))
    guided_slow = host(ddim(classifier_free_guidance(plain, 2.0), diffusion, (12, 2), B.default_rng(3), steps=5,
                            model_kwargs={"y": labels}))
    np.testing.assert_allclose(guided_fast, guided_slow, rtol=1e-4, atol=1e-5)


def test_a_real_denoiser_agrees_across_batch_sizes_to_float32_rounding():
    """With a network, row i of a big run equals row i of a small or chunked run to float32 rounding,
    as the module docstring says (BLAS rounds products of different row counts differently)."""
    from tinydiff import nn

    model = nn.MLPDenoiser(width=64, depth=2, emb_dim=16, num_timesteps=200, rng=B.default_rng(1))
    diffusion = GaussianDiffusion(make_schedule("linear", 200))
    full = host(ddpm(model, diffusion, (300, 2), B.default_rng(5)))
    part = host(ddpm(model, diffusion, (37, 2), B.default_rng(5)))
    chunked = host(ddpm(model, diffusion, (300, 2), B.default_rng(5), batch_size=64))
    again = host(ddpm(model, diffusion, (300, 2), B.default_rng(5)))
    np.testing.assert_array_equal(full, again)  # the same call is bit for bit the same
    np.testing.assert_allclose(full[:37], part, rtol=0, atol=1e-5)
    np.testing.assert_allclose(full, chunked, rtol=0, atol=1e-5)
