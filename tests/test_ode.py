"""Sampling as solving the probability-flow ODE, checked against the exact Gaussian-mixture denoiser.

What is checked, each against an independent computation:
- the drift dx/dlambda of the ODE (Song et al. 2021, Eq. 13, in Lu et al.'s log-SNR time), from
  eps, x0 and v outputs, against the closed-form flow of Gaussian data;
- DDIM (eta = 0) is the first-order exponential-integrator step (the same samples as dpm_solver
  order 1, and the exact integral of the drift with x0_hat frozen);
- every solver's order of convergence against a fine Runge-Kutta solution of the exact ODE;
- DPM-Solver++(2M) at 20 calls samples the mixture as accurately as DDPM at 1000 steps;
- the samplers' calling conventions (per-sample noise, chunks, keyword arrays, guidance, refusals);
- the exact likelihood through the ODE against the true density, with the bound above it.
"""

import math

import numpy as np
import pytest

from tinydiff import autograd as A
from tinydiff import backend as B
from tinydiff import ode
from tinydiff.autograd import Tensor, no_grad
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.gradcheck import gradcheck
from tinydiff.oracle import GaussianMixture, MixtureDenoiser, true_nll
from tinydiff.samplers import classifier_free_guidance, ddim, dpm_solver, heun, timesteps
from tinydiff.schedules import make_schedule
from conftest import as_f64, host

F64 = "float64"

# Three 2-D Gaussians that overlap: the posterior mean is smooth in x at every noise
# level, so the solvers reach their asymptotic range within a few tens of steps. (With
# well-separated components, as in test_samplers.MIXTURE_2D, the ODE is stiff on the
# boundaries between components at high lambda and the same slopes need ~100 steps.)
OVERLAPPING = dict(weights=[0.3, 0.3, 0.4], means=[[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]],
                   variances=[[0.25, 0.25], [0.2, 0.3], [0.3, 0.2]])
SEPARATED = dict(weights=[0.5, 0.3, 0.2], means=[[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]],
                 variances=[[0.09, 0.09], [0.16, 0.04], [0.0625, 0.0625]])


def f64():
    return B.dtype(F64)


def continuous_vp_diffusion(T=7681, lam_max=5.0):
    """A VP diffusion whose T steps are evenly spaced in lambda, from +lam_max down to -lam_max.

    alpha_bar_t = sigmoid(2 lambda_t) and beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}: a fine
    discretisation of a continuous-time VP schedule (steps 1.3e-3 apart in lambda), so the
    solvers' time points are effectively continuous. T - 1 = 7680 is divisible by 3 x 160,
    so the intermediate points of the singlestep solvers fall exactly on trained steps.
    """
    lam = np.linspace(lam_max, -lam_max, T)
    alpha_bars = 1.0 / (1.0 + np.exp(-2.0 * lam))
    betas = 1.0 - alpha_bars / np.concatenate([[1.0], alpha_bars[:-1]])
    return GaussianDiffusion(make_schedule("custom", betas=betas), prediction_type="x0")


# -- the ODE and its time -------------------------------------------------------------------------


def test_lambda_alpha_sigma_and_the_time_grids():
    schedule = make_schedule("linear", 1000)
    alpha_bars = host(schedule.alpha_bars)
    lambdas = ode.schedule_lambdas(schedule)
    np.testing.assert_allclose(lambdas, np.log(np.sqrt(alpha_bars) / np.sqrt(1 - alpha_bars)), rtol=1e-12)
    for lam in (-30.0, -5.0, -0.3, 0.0, 2.0, 30.0):
        alpha, sigma = ode.alpha_sigma(lam)
        assert alpha**2 + sigma**2 == pytest.approx(1.0, abs=1e-15)
        assert math.log(alpha) - math.log(sigma) == pytest.approx(lam, abs=1e-9)
    assert ode.alpha_sigma(math.inf) == (1.0, 0.0) and ode.alpha_sigma(-math.inf) == (0.0, 1.0)

    for spacing in ode.SOLVER_SPACINGS:
        for n in (1, 2, 5, 20, 300, 1000):
            steps = ode.solver_timesteps(schedule, n, spacing)
            assert len(steps) == n and steps[0] == 999 and (n == 1 or steps[-1] == 0), (spacing, n)
            assert all(a > b for a, b in zip(steps, steps[1:])), (spacing, n)
    assert ode.solver_timesteps(schedule, 20, "time_uniform") == timesteps(1000, 20, "linspace")
    # logsnr and karras: every point within three trained steps of the even grid (in lambda, and in
    # EDM Eq. 5's sigma^(1/rho), rho = 7): each is the trained step nearest an even split of what is
    # left after the previous one, so the rounding does not accumulate.
    gaps = np.abs(np.diff(lambdas))
    sigma_max, sigma_min = math.exp(-lambdas[999]), math.exp(-lambdas[0])
    for n in (10, 20, 50):
        ramp = np.linspace(0, 1, n)
        grids = {"logsnr": lambdas[999] + ramp * (lambdas[0] - lambdas[999]),
                 "karras": -np.log((sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7)}
        for spacing, targets in grids.items():
            for t, target in zip(ode.solver_timesteps(schedule, n, spacing), targets):
                assert abs(lambdas[t] - target) <= 3 * gaps[max(t - 1, 0)] + 1e-12, (spacing, n, t, target)
    # The cosine schedule's last step (its beta clipped at 0.999) spans 3.5 in lambda: the grid spends
    # one call on it and spaces the rest evenly (DPM-Solver's fixed grid would put 4 of 20 points there).
    cosine = make_schedule("cosine", 1000)
    cosine_lambdas = ode.schedule_lambdas(cosine)
    steps = ode.solver_timesteps(cosine, 20, "logsnr")
    assert steps[:2] == [999, 998] and cosine_lambdas[998] - cosine_lambdas[999] > 3
    h = np.diff([cosine_lambdas[t] for t in steps[1:]])
    assert h.max() - h.min() < 0.15, h
    # EDM's sigma_max: the grid starts at the trained step nearest it
    assert ode.solver_timesteps(schedule, 10, "karras", sigma_max=80.0)[0] == ode.nearest_step(lambdas, -math.log(80))
    with pytest.raises(ValueError, match="spacing must be one of 'logsnr', 'time_uniform', 'karras'"):
        ode.solver_timesteps(schedule, 10, "linspace")
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\]"):
        ode.solver_timesteps(schedule, 1001)


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_the_drift_is_the_derivative_of_the_exact_flow(backend, prediction_type):
    """For N(m, v) data the probability-flow ODE moves each point along x(lambda) = alpha m +
    sqrt(alpha^2 v + sigma^2) z with z fixed (it maps quantiles to quantiles). Its derivative by
    central differences in lambda must equal the drift computed from any parameterisation."""
    m, v = 0.4, 0.3
    diffusion = GaussianDiffusion(make_schedule("cosine", 200), prediction_type=prediction_type)
    oracle = MixtureDenoiser(GaussianMixture([1.0], [m], [v]), diffusion)
    z = as_f64([[-1.7], [-0.2], [0.5], [2.3]])
    lambdas = ode.schedule_lambdas(diffusion.schedule)

    def exact(lam):
        alpha, sigma = ode.alpha_sigma(lam)
        return alpha * m + math.sqrt(alpha**2 * v + sigma**2) * z

    for t in (3, 60, 150, 199):
        lam, delta = lambdas[t], 1e-5
        x = exact(lam)
        derivative = (exact(lam + delta) - exact(lam - delta)) / (2 * delta)
        drift = ode.drift(oracle, diffusion, x, t)
        np.testing.assert_allclose(host(drift), host(derivative), rtol=1e-6, atol=1e-8)
        # the noise form: sigma^2 x - sigma eps_hat, with eps_hat of the exact denoiser (Eq. 9)
        eps_hat, _ = diffusion.split_prediction(oracle(x, t), x, t)
        alpha, sigma = ode.alpha_sigma(lam)
        np.testing.assert_allclose(host(drift), host(sigma**2 * x - sigma * eps_hat), rtol=1e-9, atol=1e-12)


def test_ddim_is_the_first_order_exponential_integrator(backend):
    """DDIM (eta = 0) and dpm_solver(order=1), in both forms and both methods, give the same
    samples; and one DDIM step is the exact solution of the ODE with x0_hat held at its start value
    (integrated here by RK4 in fine steps, from the drift alone)."""
    diffusion = GaussianDiffusion(make_schedule("linear", 200), prediction_type="v")
    oracle = MixtureDenoiser(GaussianMixture(**SEPARATED), diffusion)
    reference = ddim(oracle, diffusion, (16, 2), B.default_rng(3), steps=12, dtype=f64())
    for prediction in ("data", "noise"):
        for method in ("multistep", "singlestep"):
            x = dpm_solver(oracle, diffusion, (16, 2), B.default_rng(3), steps=12, order=1, prediction=prediction,
                           method=method, spacing="time_uniform", dtype=f64())
            np.testing.assert_allclose(host(x), host(reference), rtol=1e-10, atol=1e-10)

    x_s = as_f64(np.random.default_rng(0).normal(size=(5, 2)))
    s, t = 150, 90
    eps_hat, x0_hat = diffusion.split_prediction(oracle(x_s, s), x_s, s)
    ab = host(diffusion.schedule.alpha_bars)
    ddim_step = math.sqrt(ab[t]) * x0_hat + math.sqrt(1 - ab[t]) * eps_hat  # DDIM Eq. 12, sigma = 0
    lambdas = ode.schedule_lambdas(diffusion.schedule)
    x, n = x_s, 400
    h = (lambdas[t] - lambdas[s]) / n
    for i in range(n):  # RK4 on dx/dlambda = alpha (x0_hat - alpha x), x0_hat frozen
        lam = lambdas[s] + i * h
        k1 = ode.probability_flow_drift(x0_hat, x, lam)
        k2 = ode.probability_flow_drift(x0_hat, x + h / 2 * k1, lam + h / 2)
        k3 = ode.probability_flow_drift(x0_hat, x + h / 2 * k2, lam + h / 2)
        k4 = ode.probability_flow_drift(x0_hat, x + h * k3, lam + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    np.testing.assert_allclose(host(x), host(ddim_step), rtol=1e-10, atol=1e-12)


# -- the order of convergence -----------------------------------------------------------------------

SOLVERS = {  # name: (order, network calls for s solver steps, sampler)
    "ddim": (1, lambda s: s + 1, lambda *a, calls, **k: ddim(*a, steps=calls, **k)),
    "dpm-solver++ 2M": (2, lambda s: s + 1, lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=2, **k)),
    "dpm-solver++ 3M": (3, lambda s: s + 1, lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=3, **k)),
    "dpm-solver 2M": (2, lambda s: s + 1, lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=2, prediction="noise", **k)),
    "dpm-solver 3M": (3, lambda s: s + 1, lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=3, prediction="noise", **k)),
    "dpm-solver++ 2S": (2, lambda s: 2 * s + 1,
                        lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=2, method="singlestep", **k)),
    "dpm-solver++ 3S": (3, lambda s: 3 * s + 1,
                        lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=3, method="singlestep", **k)),
    "dpm-solver-2": (2, lambda s: 2 * s + 1,
                     lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=2, method="singlestep", prediction="noise", **k)),
    "dpm-solver-3": (3, lambda s: 3 * s + 1,
                     lambda *a, calls, **k: dpm_solver(*a, steps=calls, order=3, method="singlestep", prediction="noise", **k)),
    "heun": (2, lambda s: 2 * s + 1, lambda *a, calls, **k: heun(*a, steps=calls, sigma_max=math.inf, **k)),
}
STEPS = (5, 10, 20, 40, 80, 160)
# Where each order is asymptotic (the slope is fitted there): 10-40 steps for orders 1 and 2; third-
# order methods still show their h^4 terms at 10-40 steps (slopes 2.5 to 4.5, measured) and are fitted
# at 40-160.
FIT_RANGE = {1: (10, 20, 40), 2: (10, 20, 40), 3: (40, 80, 160)}


def reference_solution(mixture, diffusion, x_T, substeps=2000):
    """The ODE solved by classical RK4 in lambda with ``substeps`` even steps, the exact denoiser
    evaluated at any lambda (alpha_bar = sigmoid(2 lambda)), then x0_hat at the first trained step,
    as every sampler ends. Independent of the solvers' code: only the drift and the mixture."""
    lambdas = ode.schedule_lambdas(diffusion.schedule)

    def F(x, lam):
        alpha, _ = ode.alpha_sigma(lam)
        return ode.probability_flow_drift(mixture.posterior_x0(x, alpha * alpha), x, lam)

    x, start = x_T, lambdas[-1]
    h = (lambdas[0] - start) / substeps
    for i in range(substeps):
        lam = start + i * h
        k1 = F(x, lam)
        k2 = F(x + h / 2 * k1, lam + h / 2)
        k3 = F(x + h / 2 * k2, lam + h / 2)
        k4 = F(x + h * k3, lam + h)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return mixture.posterior_x0(x, float(diffusion.schedule.alpha_bars[0]))


def test_every_solver_converges_with_its_order():
    """The error against a fine reference falls as (1 / steps)^order.

    On a continuous-time VP schedule (lambda from +5 to -5, continuous_vp_diffusion) with the exact
    denoiser of an overlapping 2-D mixture: 64 samples from the same x_T, s = 5 .. 160 solver steps
    (s + 1 network calls for DDIM and the multistep solvers, k s + 1 for singlestep order k, 2 s + 1
    for Heun), error = RMS distance to reference_solution (RK4, 2000 steps: error below 1e-9). The
    log-log slope of error against s, fitted over FIT_RANGE, must be within 0.3 of the solver's order.
    Measured: DDIM 0.96; DPM-Solver++ 2M 1.90, 3M 2.86, 2S 1.87, 3S 2.96; DPM-Solver 2M 1.85,
    3M 3.14, -2 2.12, -3 2.99; Heun 2.16. (With the D2 of DPM-Solver's reference code, 3M gives 2.01 and 2.09.)
    A sign error in a step (DDIM's, say) leaves the error at O(1) and the slope near 0. numpy only; ~4 s.
    """
    diffusion = continuous_vp_diffusion()
    mixture = GaussianMixture(**OVERLAPPING)
    oracle = MixtureDenoiser(mixture, diffusion)
    shape = (64, 2)
    base = B.default_rng(0).next_seed()  # what every sampler takes from default_rng(0): x_T is keyed (base, T)
    x_T = B.default_rng((base, diffusion.T)).normal(shape, dtype=f64())
    reference = host(reference_solution(mixture, diffusion, x_T))
    for name, (order, calls, sampler) in SOLVERS.items():
        errors = {}
        for s in STEPS:
            if order < 3 and s > 40:
                continue
            x = sampler(oracle, diffusion, shape, B.default_rng(0), dtype=f64(), calls=calls(s))
            errors[s] = float(np.sqrt(np.mean(np.sum((host(x) - reference) ** 2, axis=1))))
        fit = FIT_RANGE[order]
        slope = -np.polyfit(np.log(fit), np.log([errors[s] for s in fit]), 1)[0]
        assert abs(slope - order) < 0.3, (name, slope, errors)
        assert errors[40] < errors[20] < errors[10] < 0.5, (name, errors)


# -- sampling quality at 20 calls -------------------------------------------------------------------


def test_dpm_solver_pp_2m_in_20_calls_samples_the_mixture_as_ddpm_in_1000():
    """test_samplers.test_full_samplers_match_the_mixture with 20 network calls instead of 1000:
    each component's weight within 4 binomial SE, mean within 4 SE, variance within 4 SE
    (3000 samples, the linear schedule, T = 1000). Then one narrow Gaussian N(0, 0.3^2): the
    deterministic map is linear, so sd(samples) / sd(x_T) is exact; it must be within 2% of the
    true sd of x0_hat at the first step, 0.3 sqrt(a^2 v / (a^2 v + s^2)) (DDIM at 20 steps: 0.79).
    Measured: 1.0145 of 0.3 (3M: 1.0008). numpy only; ~1 s."""
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    mixture = GaussianMixture(**SEPARATED)
    n = 3000
    x = host(dpm_solver(MixtureDenoiser(mixture, diffusion), diffusion, (n, 2), B.default_rng(9), steps=20,
                        dtype=f64()))
    component = host(mixture.component_log_prob(B.asarray(x))).argmax(1)
    for k, (w, m, v) in enumerate(zip(SEPARATED["weights"], SEPARATED["means"], SEPARATED["variances"])):
        members = x[component == k]
        n_k = len(members)
        assert abs(n_k / n - w) < 4 * math.sqrt(w * (1 - w) / n), (k, n_k / n)
        assert np.all(np.abs(members.mean(0) - m) < 4 * np.sqrt(np.array(v) / n_k)), (k, members.mean(0))
        assert np.all(np.abs(members.var(0, ddof=1) - v) < 4 * np.array(v) * math.sqrt(2 / n_k)), (k, members.var(0))

    narrow = MixtureDenoiser(GaussianMixture([1.0], [0.0], [0.09]), diffusion)
    a2 = float(diffusion.schedule.alpha_bars[0])
    exact = 0.3 * math.sqrt(a2 * 0.09 / (a2 * 0.09 + 1 - a2))
    ratios = {}
    for name, sampler in (("ddim", ddim), ("dpm-solver++", dpm_solver)):
        x, trajectory = sampler(narrow, diffusion, (200, 1), B.default_rng(11), steps=20, dtype=f64(),
                                return_trajectory=True, every=100)
        ratios[name] = float(np.std(host(x)) / np.std(host(trajectory["x"][0]))) / exact
    assert abs(ratios["dpm-solver++"] - 1) < 0.02, ratios
    assert ratios["ddim"] < 0.8, ratios


# -- calling conventions ------------------------------------------------------------------------------


def toy_model(x, t):
    """A deterministic stand-in for a network: depends on x and t, row by row."""
    return 0.3 * x + 0.001 * B.xp.reshape(B.xp.astype(t, x.dtype), (-1,) + (1,) * (x.ndim - 1))


NEW_SAMPLERS = {
    "dpm-solver++ 2M": lambda *a, **k: dpm_solver(*a, steps=8, **k),
    "dpm-solver 3S": lambda *a, **k: dpm_solver(*a, steps=8, order=3, method="singlestep", prediction="noise", **k),
    "heun with churn": lambda *a, **k: heun(*a, steps=7, churn=2.0, **k),
}


@pytest.mark.parametrize("name", list(NEW_SAMPLERS))
def test_new_samplers_draw_their_noise_per_sample(backend, name):
    """Sample i depends only on the seed and i: the same with batch_size chunks and in a smaller
    run; x_T is DDIM's for the same seed; float32 by default."""
    diffusion = GaussianDiffusion(make_schedule("linear", 60))
    run = NEW_SAMPLERS[name]
    full = host(run(toy_model, diffusion, (48, 2), B.default_rng(4)))
    np.testing.assert_array_equal(full, host(run(toy_model, diffusion, (48, 2), B.default_rng(4), batch_size=10)))
    np.testing.assert_array_equal(full[:13], host(run(toy_model, diffusion, (13, 2), B.default_rng(4))))
    assert full.dtype == np.float32
    assert not np.array_equal(full, host(run(toy_model, diffusion, (48, 2), B.default_rng(5))))
    if name == "heun with churn":  # without churn: its first point is alpha (x_T / alpha), x_T up to rounding
        run = lambda *a, **k: heun(*a, steps=7, **k)  # noqa: E731
    _, trajectory = run(toy_model, diffusion, (48, 2), B.default_rng(4), return_trajectory=True, every=1)
    _, ddim_trajectory = ddim(toy_model, diffusion, (48, 2), B.default_rng(4), steps=3, return_trajectory=True)
    np.testing.assert_allclose(host(trajectory["x"][0]), host(ddim_trajectory["x"][0]), rtol=1e-6, atol=1e-6)
    assert trajectory["t"][-1] == 0 and trajectory["t"][0] == (59 if name != "heun with churn" else 52)  # sigma 80


def test_heun_is_edm_algorithm_1_and_churn_adds_noise(backend):
    """Two noise levels taken apart: Heun's step in EDM's variables written out here, then the
    final Euler step to sigma = 0 (which lands on x0_hat). By default the ODE starts at the trained
    step nearest EDM's sigma_max = 80. Churn > 0 gives other samples."""
    diffusion = GaussianDiffusion(make_schedule("linear", 50))
    x, trajectory = heun(toy_model, diffusion, (4, 2), B.default_rng(2), steps=3, return_trajectory=True, every=1,
                         dtype=f64(), sigma_max=math.inf)  # from t = T - 1, not EDM's sigma_max = 80
    t0, t1 = trajectory["t"]
    assert (t0, t1) == (49, ode.solver_timesteps(diffusion.schedule, 2, "karras")[1]) == (49, 0)
    ab = host(diffusion.schedule.alpha_bars)
    sigma = np.sqrt((1 - ab) / ab)

    def D(x_tilde, t):  # x0_hat of the eps-model toy_model at x = alpha x~
        x_vp = math.sqrt(ab[t]) * x_tilde
        eps = 0.3 * x_vp + 0.001 * t
        return (x_vp - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])

    base = B.default_rng(2).next_seed()
    x_tilde = host(B.default_rng((base, 50)).normal((4, 2), dtype=f64())) / math.sqrt(ab[49])
    d = (x_tilde - D(x_tilde, 49)) / sigma[49]
    euler = x_tilde + (sigma[0] - sigma[49]) * d
    d_next = (euler - D(euler, 0)) / sigma[0]
    x_1 = x_tilde + (sigma[0] - sigma[49]) * (d + d_next) / 2  # Algorithm 1, lines 5-8
    np.testing.assert_allclose(host(trajectory["x"][1]), math.sqrt(ab[0]) * x_1, rtol=1e-10)
    np.testing.assert_allclose(host(x), D(x_1, 0), rtol=1e-10)
    _, default = heun(toy_model, diffusion, (4, 2), B.default_rng(2), steps=3, return_trajectory=True, dtype=f64())
    lambdas = ode.schedule_lambdas(diffusion.schedule)
    assert sigma[49] > 80 and default["t"][0] == ode.nearest_step(lambdas, -math.log(80.0)) < 49  # EDM's sigma_max
    plain = heun(toy_model, diffusion, (4, 2), B.default_rng(2), steps=9, dtype=f64())
    churned = heun(toy_model, diffusion, (4, 2), B.default_rng(2), steps=9, churn=1.0, dtype=f64())
    assert not np.allclose(host(churned), host(plain))
    np.testing.assert_array_equal(host(churned), host(heun(toy_model, diffusion, (4, 2), B.default_rng(2), steps=9,
                                                            churn=1.0, dtype=f64())))


def test_conventions_kwargs_guidance_clipping_progress(backend, capsys):
    diffusion = GaussianDiffusion(make_schedule("linear", 40), prediction_type="x0")
    seen = []

    def model(x, t, label=None):
        seen.append((x.shape[0], None if label is None else host(label).tolist()))
        return Tensor(-5.0 * x)  # predicts x0 far outside [-1, 1]

    labels = B.asarray(np.arange(10))
    out = dpm_solver(model, diffusion, (10, 3), B.default_rng(1), steps=4, batch_size=4,
                     model_kwargs={"label": labels}, progress=True, clip_x0=True)
    assert seen[:3] == [(4, [0, 1, 2, 3]), (4, [4, 5, 6, 7]), (2, [8, 9])]
    assert np.all(np.abs(host(out)) <= 1.0 + 1e-6)
    assert "dpm-solver++ 2M" in capsys.readouterr().err

    def conditional(x, t, y=None):
        shift = 0.0 if y is None else B.xp.reshape(B.xp.astype(y, x.dtype), (-1, 1))
        return 0.5 * x + shift

    y = B.asarray(np.array([1, 2]))
    guided = heun(classifier_free_guidance(conditional, 1.0), diffusion, (2, 2), B.default_rng(0), steps=5,
                  model_kwargs={"y": y})
    plain = heun(conditional, diffusion, (2, 2), B.default_rng(0), steps=5, model_kwargs={"y": y})
    assert tuple(guided.shape) == (2, 2) and not np.allclose(host(guided), host(plain))


def test_bad_solver_arguments(backend):
    diffusion = GaussianDiffusion(make_schedule("linear", 30))
    cases = [
        (dict(order=4), r"order must be an integer in \[1, 3\]"),
        (dict(prediction="x0"), "prediction must be one of 'data', 'noise'"),
        (dict(method="adams"), "method must be one of 'multistep', 'singlestep'"),
        (dict(spacing="linspace"), "spacing must be one of 'logsnr', 'time_uniform', 'karras'"),
        (dict(steps=31), r"steps must be an integer in \[1, 30\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            dpm_solver(toy_model, diffusion, (2, 2), B.default_rng(0), **kwargs)
    with pytest.raises(ValueError, match="churn must be a number >= 0"):
        heun(toy_model, diffusion, (2, 2), B.default_rng(0), churn=-1.0)
    zero = GaussianDiffusion(make_schedule("linear", 30, zero_terminal_snr=True), prediction_type="v")
    with pytest.raises(ValueError, match="prediction 'noise' cannot start from a zero-terminal-SNR schedule"):
        dpm_solver(toy_model, zero, (2, 2), B.default_rng(0), prediction="noise")
    with pytest.raises(ValueError, match="heun cannot start from a zero-terminal-SNR schedule"):
        heun(toy_model, zero, (2, 2), B.default_rng(0))
    assert np.isfinite(host(dpm_solver(toy_model, zero, (2, 2), B.default_rng(0), steps=5))).all()


# -- the exact likelihood ------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_the_exact_denoiser_has_an_exact_vjp(backend, prediction_type):
    """MixtureDenoiser called with a Tensor joins the graph with Tweedie's Jacobian (a/s^2) Cov[x_0 | x_t]:
    checked by central differences (tinydiff.gradcheck, float64)."""
    diffusion = GaussianDiffusion(make_schedule("linear", 100), prediction_type=prediction_type)
    oracle = MixtureDenoiser(GaussianMixture(**SEPARATED), diffusion)
    x = as_f64(np.random.default_rng(1).normal(size=(3, 2)) * 1.5)
    for t in (5, 40, 90):
        assert gradcheck(lambda x_t, t=t: A.sum(oracle(x_t, t) * as_f64([[1.0, -2.0]])), [x], atol=1e-6, rtol=1e-5)
        assert gradcheck(lambda x_t, t=t: A.sum(oracle(x_t, t) ** 2), [x], atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(host(oracle(Tensor(x), 5).data), host(oracle(x, 5)))


def test_divergence_exact_and_hutchinson_against_finite_differences(backend):
    """div F of a small network written in autograd ops: the exact trace from D VJPs against central
    differences of the drift; Hutchinson's estimate averages to it (200 probes, within 4 SE)."""
    rng = np.random.default_rng(3)
    W1, W2 = as_f64(rng.normal(size=(3, 16)) / 2), as_f64(rng.normal(size=(16, 3)) / 4)

    def net(x, t):
        x = x if isinstance(x, Tensor) else Tensor(x)
        return A.tanh(x @ Tensor(W1)) @ Tensor(W2) * (1.0 + 0.01 * t) + 0.2 * x

    net.accepts_scalar_t = True
    diffusion = GaussianDiffusion(make_schedule("linear", 100), prediction_type="eps")
    lam = ode.schedule_lambdas(diffusion.schedule)[40]
    x = as_f64(rng.normal(size=(4, 3)))
    _, exact = ode.drift_and_divergence(net, x, 40, lam, "eps", "exact")
    numerical = np.zeros(4)
    for d in range(3):
        step = np.zeros((4, 3))
        step[:, d] = 1e-6
        up = ode.probability_flow_drift(host(net(x + as_f64(step), 40).data), host(x) + step, lam, "eps")
        down = ode.probability_flow_drift(host(net(x - as_f64(step), 40).data), host(x) - step, lam, "eps")
        numerical += (up - down)[:, d] / 2e-6
    np.testing.assert_allclose(host(exact)[0], numerical, rtol=1e-6, atol=1e-8)
    probes = [B.xp.sign(B.default_rng(k).uniform((4, 3), low=-1.0, high=1.0, dtype=f64())) for k in range(200)]
    _, estimates = ode.drift_and_divergence(net, x, 40, lam, "eps", probes)
    estimates = host(estimates)
    se = estimates.std(0, ddof=1) / math.sqrt(200)
    assert np.all(np.abs(estimates.mean(0) - host(exact)[0]) < 4 * se + 1e-12)
    with no_grad():
        with pytest.raises(RuntimeError, match="outside autograd.no_grad"):
            ode.log_likelihood(net, diffusion, x, B.default_rng(0), steps=5)
    with pytest.raises(ValueError, match="must be a tinydiff.autograd Tensor"):
        ode.log_likelihood(lambda x, t: 0.3 * x.data, diffusion, x, B.default_rng(0), steps=5)  # a plain array


def _true_log_density_at_first_step(mixture, diffusion, x):
    """log q_1(x): the mixture noised to the first trained step (Eq. 4), where the ODE's density lives."""
    ab = float(diffusion.schedule.alpha_bars[0])
    logits = host(mixture.component_log_prob(x, math.sqrt(ab), 1.0 - ab))  # (N, K)
    top = logits.max(1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]


def test_the_ode_likelihood_of_the_exact_denoiser_is_the_true_density():
    """log p(x_0) by the ODE with the exact denoiser against the true log-density of the mixture noised
    to the first step (T = 1000, linear, 100 Heun steps, 200 points of the separated 2-D mixture).
    Exact trace: within 0.02 nats of the truth per point (measured: mean 0.0008, worst 0.007, the
    prior N(0, I) standing in for q_T); Hutchinson, 4 probes: the mean difference within 4 of its
    stated standard errors (sqrt(sum stderr_i^2) / N). numpy only; ~1 s."""
    diffusion = GaussianDiffusion(make_schedule("linear", 1000))
    mixture = GaussianMixture(**SEPARATED)
    oracle = MixtureDenoiser(mixture, diffusion)
    x = mixture.sample(200, B.default_rng(1), dtype=f64())
    truth = _true_log_density_at_first_step(mixture, diffusion, x)
    exact = ode.log_likelihood(oracle, diffusion, x, B.default_rng(2), steps=100, exact_trace=True)
    difference = host(exact["log_prob"]) - truth
    assert np.abs(difference).max() < 0.02 and abs(difference.mean()) < 0.003, difference
    assert "stderr" not in exact
    np.testing.assert_allclose(host(exact["nll"]), -host(exact["log_prob"]))
    np.testing.assert_allclose(host(exact["bits_per_dim"]), host(exact["nll"]) / (2 * math.log(2)))
    hutchinson = ode.log_likelihood(oracle, diffusion, x, B.default_rng(2), steps=100, probes=4)
    difference = host(hutchinson["log_prob"]) - truth
    stated = math.sqrt(np.sum(host(hutchinson["stderr"]) ** 2)) / 200
    assert abs(difference.mean()) < 4 * stated, (difference.mean(), stated)
    assert 0.5 < np.std(difference) / np.sqrt(np.mean(host(hutchinson["stderr"]) ** 2)) < 2  # SE is honest


def test_the_bound_stays_above_the_exact_likelihood():
    """On a short schedule (T = 100) the variational bound (Eq. 3, Gaussian decoder) is loose: with the
    exact denoiser, its mean over 2000 points (4 draws each) exceeds the ODE's NLL by more than 4 SE,
    while the ODE stays on the true density. Measured: bound - truth 0.105 +- 0.017 nats, ODE - truth
    0.0013. numpy only; ~2 s."""
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    mixture = GaussianMixture(**SEPARATED)
    oracle = MixtureDenoiser(mixture, diffusion)
    x = mixture.sample(2000, B.default_rng(5), dtype=f64())
    ode_nll = host(ode.log_likelihood(oracle, diffusion, x, B.default_rng(2), steps=50, exact_trace=True)["nll"])
    truth = -_true_log_density_at_first_step(mixture, diffusion, x)
    assert abs(np.mean(ode_nll - truth)) < 0.01
    bound = np.mean([host(diffusion.vlb(oracle, x, B.default_rng(6 + k), decoder="gaussian")["total"])
                     for k in range(4)], axis=0)
    gap = bound - ode_nll
    assert gap.mean() > 4 * gap.std() / math.sqrt(len(gap)), (gap.mean(), gap.std())
    assert bound.mean() > host(true_nll(mixture, x)).mean()


def test_dequantised_bits_per_dimension(backend):
    """levels=256: the data are dequantised within their bins (per sample), and the NLL of the discrete
    data is -log p(y) + D log 128, i.e. bits/dim = -log p(y) / (D ln 2) + 7 (Song et al.)."""
    diffusion = GaussianDiffusion(make_schedule("linear", 100))
    oracle = MixtureDenoiser(GaussianMixture([1.0], [[0.0, 0.2, -0.1]], [0.2]), diffusion)
    x = as_f64(np.round(np.random.default_rng(0).uniform(0, 255, size=(6, 3))) / 255 * 2 - 1)
    result = ode.log_likelihood(oracle, diffusion, x, B.default_rng(1), steps=10, exact_trace=True, levels=256)
    np.testing.assert_allclose(host(result["bits_per_dim"]), -host(result["log_prob"]) / (3 * math.log(2)) + 7.0)
    again = ode.log_likelihood(oracle, diffusion, x[:2, ...], B.default_rng(1), steps=10, exact_trace=True, levels=256)
    np.testing.assert_allclose(host(again["log_prob"]), host(result["log_prob"])[:2], rtol=1e-12)
    plain = ode.log_likelihood(oracle, diffusion, x, B.default_rng(1), steps=10, exact_trace=True)
    assert not np.allclose(host(plain["log_prob"]), host(result["log_prob"]))  # the dequantised points differ


# -- the command line -------------------------------------------------------------------------------------


def test_the_command_line_samples_with_each_solver(tmp_path, capsys):
    """sample --sampler dpm-solver|dpm-solver++|heun --steps S --order K on a tiny trained run."""
    from tinydiff.__main__ import main

    run = str(tmp_path / "run")
    assert main(["train", "--data", "moons", "--out", run, "--steps", "30", "--T", "40", "--width", "16",
                 "--depth", "2", "--batch-size", "32", "--n-data", "256", "--no-progress"]) == 0
    for k, args in enumerate((["--sampler", "dpm-solver++", "--steps", "6"],
                              ["--sampler", "dpm-solver", "--steps", "5", "--order", "3"],
                              ["--sampler", "dpm-solver++", "--order", "1", "--spacing", "karras", "--steps", "4"],
                              ["--sampler", "heun", "--steps", "5"])):
        out = str(tmp_path / f"samples{k}")
        assert main(["sample", "--checkpoint", run, "--n", "20", *args, "--out", out, "--no-progress"]) == 0, args
        samples = np.load(f"{out}/samples.npy", allow_pickle=False)
        assert samples.shape == (20, 2) and np.all(np.isfinite(samples))
    capsys.readouterr()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--sampler", "heun", "--order", "2"], "--order is dpm-solver(++)'s"),
        (["--sampler", "ddpm", "--order", "3"], "--order is dpm-solver(++)'s"),
        (["--sampler", "dpm-solver++", "--eta", "0.5"], "does not use --eta"),
        (["--sampler", "dpm-solver++", "--spacing", "leading"], "--spacing leading is not one of"),
        (["--sampler", "ddim", "--spacing", "karras"], "--spacing karras is not one of"),
        (["--sampler", "heun", "--spacing", "karras"], "always uses Karras"),
        (["--sampler", "heun", "--variance", "beta"], "--variance"),
        (["--sampler", "dpm-solver", "--order", "4"], "--order: invalid choice"),
    ],
)
def test_the_command_line_refuses_solver_flags_that_would_be_ignored(args, needle, capsys):
    from tinydiff.__main__ import main

    code = main(["sample", "--checkpoint", "no-such-run", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
