# %% [markdown]
# # Lesson 14: sampling is solving an ODE
#
# DDPM needs one network call per step, 1000 of them. Song et al. (2021)
# showed that the same marginals $q(x_t)$ are carried by a deterministic
# *probability-flow ODE* (their Eq. 13), and Lu et al. (2022, DPM-Solver)
# wrote it in the half log-SNR $\lambda_t = \log(\alpha_t / \sigma_t)$, with
# $\alpha_t = \sqrt{\bar\alpha_t}$ and $\sigma_t = \sqrt{1 - \bar\alpha_t}$:
#
# $\frac{dx}{d\lambda} = \alpha_\lambda(\hat x_0(x, \lambda) - \alpha_\lambda x) = \sigma_\lambda^2 x - \sigma_\lambda \hat\epsilon(x, \lambda)$.
#
# Its linear part can be integrated exactly; only $\hat x_0$ (or $\hat\epsilon$)
# needs approximating. Holding it constant over a step gives DDIM; a Taylor
# polynomial through previous predictions gives DPM-Solver++(2M) and (3M);
# Heun's method in Karras et al.'s variables (EDM) is another second-order
# solver. The exact Gaussian-mixture denoiser stands in for the network, so
# each solver can be compared with the exact solution: their errors must
# fall as $h^k$ for order $k$. The same ODE also gives the exact
# log-likelihood, which the bound of lesson 08 only bounds.
#
# Run: `python lessons/14_ode.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, ode, oracle, samplers, train
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule
from tinydiff.viz.common import finish, new_figure

lesson = _lesson.Lesson("14_ode", "Sampling is solving an ODE: DDIM, DPM-Solver, Heun, and the exact likelihood")
f64 = B.dtype("float64")
T = 1000
diffusion = GaussianDiffusion(make_schedule("linear", T))
lambdas = ode.schedule_lambdas(diffusion.schedule)
eight = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))


def rmse(a, b):
    return float(np.sqrt(np.mean(np.sum((B.to_numpy(a) - B.to_numpy(b)) ** 2, axis=1))))


# %% [markdown]
# ## Step 1: the probability-flow ODE, from any parameterisation
#
# `ode.probability_flow_drift` turns a model output of any kind (eps, x0,
# v) into the drift; the three must agree for the exact denoiser. For
# Gaussian data $N(m, v)$ the flow is known in closed form: each point
# moves along $x(\lambda) = \alpha m + \sqrt{\alpha^2 v + \sigma^2}\, z$ with $z$
# fixed, and its derivative must be the drift.

# %%
lesson.step(
    "the drift dx/dlambda from eps, x0 and v predictions",
    paper=["dx/dlambda = alpha (x0_hat - alpha x) = sigma^2 x - sigma eps_hat   (Song et al. Eq. 13 in lambda)",
           "lambda_t = log(alpha_t / sigma_t): alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda)"],
    code="tinydiff.ode.drift(model, diffusion, x, t); ode.probability_flow_drift; ode.schedule_lambdas",
)
lesson.value("lambda at t = T (noise) and t = 1 (data)", f"{lambdas[T - 1]:.3f} and {lambdas[0]:.3f}")
x = B.asarray(lesson.rng(0).normal((6, 2), dtype=f64) * 2.0, dtype=f64)
drifts = {}
for kind in ("eps", "x0", "v"):
    kind_diffusion = GaussianDiffusion(make_schedule("linear", T), prediction_type=kind)
    drifts[kind] = ode.drift(oracle.MixtureDenoiser(eight, kind_diffusion), kind_diffusion, x, 400)
lesson.check_close("the drift from x0 and from v", drifts["x0"], drifts["eps"], rtol=1e-9, atol=1e-12,
                   against="the drift from eps")
lesson.check_close("the drift from v", drifts["v"], drifts["eps"], rtol=1e-9, atol=1e-12, against="the drift from eps")
m, v, t = 0.4, 0.3, 300
gaussian = oracle.MixtureDenoiser(oracle.GaussianMixture([1.0], [m], [v]), diffusion)
z = B.asarray(np.array([[-1.5], [0.2], [2.0]]), dtype=f64)


def flow(lam):
    alpha, sigma = ode.alpha_sigma(lam)
    return alpha * m + math.sqrt(alpha**2 * v + sigma**2) * z


derivative = (flow(lambdas[t] + 1e-5) - flow(lambdas[t] - 1e-5)) / 2e-5
lesson.check_close("drift for N(0.4, 0.3) data", ode.drift(gaussian, diffusion, flow(lambdas[t]), t), derivative,
                   rtol=1e-6, against="d/dlambda of the closed-form flow")

# %% [markdown]
# ## Step 2: DDIM is the first-order exponential integrator
#
# Integrating the ODE exactly from $\lambda_s$ to $\lambda_t$ with $\hat x_0$ held at
# its value at $\lambda_s$ gives $x_t = \frac{\sigma_t}{\sigma_s} x_s + \alpha_t(1 - e^{-h})\hat x_0$,
# $h = \lambda_t - \lambda_s$, and because $\frac{\sigma_t}{\sigma_s}(x_s - \alpha_s\hat x_0) = \sigma_t\hat\epsilon$ this
# is $\alpha_t \hat x_0 + \sigma_t \hat\epsilon$: DDIM's Eq. 12 with $\eta = 0$. (It is Euler's
# method for $x / \sigma$ in the variable $e^\lambda$.) Euler's method on $x$
# itself in $\lambda$ is also first order, but it approximates the linear
# part too, and pays for it.

# %%
lesson.step(
    "DDIM (eta = 0) = DPM-Solver-1 = the exact integral with x0_hat frozen",
    paper=["x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_hat = alpha_t x0_hat + sigma_t eps_hat",
           "(DDIM Eq. 12 with sigma = 0; DPM-Solver Eq. 3.4 with the integrand constant)"],
    code="tinydiff.samplers.ddim; tinydiff.samplers.dpm_solver(order=1); tinydiff.ode.first_order_update",
)
exact = oracle.MixtureDenoiser(eight, diffusion)
n = lesson.pick(300, 1000)
as_ddim = samplers.ddim(exact, diffusion, (n, 2), lesson.rng(1), steps=20, dtype=f64)
as_solver = samplers.dpm_solver(exact, diffusion, (n, 2), lesson.rng(1), steps=20, order=1, spacing="time_uniform",
                                dtype=f64)
lesson.check_close("dpm_solver(order=1), 20 steps", as_solver, as_ddim, atol=1e-10, against="ddim(eta=0), 20 steps")
steps = samplers.timesteps(T, 20)
nodes = ode.schedule_nodes(diffusion.schedule)  # (t, lambda_t, alpha_t, sigma_t) of each trained step
x_ddim = x_euler = B.default_rng((lesson.rng(1).next_seed(), T)).normal((n, 2), dtype=f64)  # ddim's x_T
for s, t in zip(steps[:-1], steps[1:]):
    h = lambdas[t] - lambdas[s]
    x_euler = x_euler + h * ode.drift(exact, diffusion, x_euler, s)  # Euler on x in lambda
    _, x0_hat = diffusion.split_prediction(exact(x_ddim, s), x_ddim, s)  # exact predicts eps: x0_hat by Eq. 15
    x_ddim = ode.first_order_update(x_ddim, x0_hat, nodes[s], nodes[t], "data")  # x0_hat frozen over the step
reference = samplers.dpm_solver(exact, diffusion, (n, 2), lesson.rng(1), steps=200, order=3, dtype=f64)
x_last = diffusion.split_prediction(exact(x_ddim, 0), x_ddim, 0)[1]  # the last step: x0_hat
lesson.check_close("the hand-written DDIM steps", x_last, as_ddim, atol=1e-9, against="samplers.ddim")
errors = {"ddim": rmse(x_last, reference), "euler": rmse(diffusion.split_prediction(exact(x_euler, 0), x_euler, 0)[1],
                                                         reference)}
lesson.value("RMS error after 20 steps: DDIM", errors["ddim"], "(against DPM-Solver++(3M), 200 steps)")
lesson.value("RMS error after 20 steps: Euler on x", errors["euler"])
lesson.check_less("DDIM's error", errors["ddim"], "Euler's on x in lambda", errors["euler"])

# %% [markdown]
# ## Step 3: each solver's order, against the exact solution
#
# On a schedule whose steps are evenly spaced in $\lambda$ (from +5 to -5, so
# fine that the time points are in effect continuous) and an overlapping
# 2-D mixture, a Runge-Kutta solution of the exact ODE in 2000 steps is the
# reference. Each solver runs from the same $x_T$ with $s$ steps; the slope of
# log error against log $s$ is the order. (Third-order solvers reach their
# asymptotic range later, so their slope is fitted at 40 to 160 steps.)

# %%
lesson.step(
    "the error of each solver falls as (1 / steps)^order",
    paper=["DDIM: order 1; DPM-Solver++(2M), Heun (EDM Algorithm 1): 2; DPM-Solver++(3M): 3",
           "error(s) ~ C s^-k, so log error against log s has slope -k"],
    code="tinydiff.samplers.ddim, dpm_solver(order=2 | 3), heun; reference: RK4 on ode.probability_flow_drift",
)
T_fine = 7681
fine_lambdas = np.linspace(5.0, -5.0, T_fine)
fine_alpha_bars = 1.0 / (1.0 + np.exp(-2.0 * fine_lambdas))
fine = GaussianDiffusion(make_schedule("custom", betas=1 - fine_alpha_bars / np.concatenate([[1.0], fine_alpha_bars[:-1]])),
                         prediction_type="x0")
overlapping = oracle.GaussianMixture([0.3, 0.3, 0.4], [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]],
                                     [[0.25, 0.25], [0.2, 0.3], [0.3, 0.2]])
fine_exact = oracle.MixtureDenoiser(overlapping, fine)
shape = (lesson.pick(32, 128), 2)
x = B.default_rng((lesson.rng(2).next_seed(), T_fine)).normal(shape, dtype=f64)  # every sampler's x_T
h = (fine_lambdas[0] - fine_lambdas[-1]) / 2000
for i in range(2000):  # classical RK4 in lambda, the exact denoiser at any lambda
    lam = fine_lambdas[-1] + i * h
    F = lambda y, at: ode.probability_flow_drift(overlapping.posterior_x0(y, ode.alpha_sigma(at)[0] ** 2), y, at)  # noqa: E731
    k1 = F(x, lam)
    k2 = F(x + h / 2 * k1, lam + h / 2)
    k3 = F(x + h / 2 * k2, lam + h / 2)
    k4 = F(x + h * k3, lam + h)
    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
reference = overlapping.posterior_x0(x, float(fine_alpha_bars[0]))
solvers = {  # name: (order, s -> samples)
    "DDIM": (1, lambda s: samplers.ddim(fine_exact, fine, shape, lesson.rng(2), steps=s + 1, dtype=f64)),
    "DPM-Solver++(2M)": (2, lambda s: samplers.dpm_solver(fine_exact, fine, shape, lesson.rng(2), steps=s + 1,
                                                         dtype=f64)),
    "Heun (EDM)": (2, lambda s: samplers.heun(fine_exact, fine, shape, lesson.rng(2), steps=2 * s + 1, dtype=f64,
                                              sigma_max=math.inf)),  # from lambda = -5 (sigma 148) like the rest
    "DPM-Solver++(3M)": (3, lambda s: samplers.dpm_solver(fine_exact, fine, shape, lesson.rng(2), steps=s + 1,
                                                         order=3, dtype=f64)),
}
all_steps = (5, 10, 20, 40, 80, 160)
fit_range = {1: (10, 20, 40), 2: (10, 20, 40), 3: (40, 80, 160)}
curves, rows = {}, []
for name, (order, run) in solvers.items():
    curves[name] = {s: rmse(run(s), reference) for s in all_steps if s <= 40 or order == 3}
    fit = fit_range[order]
    slope = -np.polyfit(np.log(fit), np.log([curves[name][s] for s in fit]), 1)[0]
    rows.append([name, order] + [curves[name].get(s, float("nan")) for s in all_steps] + [slope])
lesson.table(["solver", "order"] + [f"s={s}" for s in all_steps] + ["slope"], rows, digits=3)
for name, order, *values in rows:
    lesson.check(abs(values[-1] - order) < 0.3, f"{name}: log-log slope within 0.3 of its order {order}",
                 f"{values[-1]:.2f}")
fig = new_figure(5.0, 3.6)
ax = fig.add_subplot(1, 1, 1)
for name, curve in curves.items():
    ax.loglog(list(curve), list(curve.values()), "o-", label=f"{name} (order {solvers[name][0]})")
ax.set_xlabel("solver steps s")
ax.set_ylabel("RMS error against the exact ODE")
ax.legend(fontsize="small")
ax.set_title("order of convergence, exact mixture denoiser", fontsize="small")
lesson.saved(finish(fig, lesson.path("convergence.png")))

# %% [markdown]
# ## Step 4: twenty network calls
#
# Back on the linear schedule with $T = 1000$. For one narrow Gaussian
# $N(0, 0.3^2)$ the deterministic samplers are linear maps, so the spread of
# their samples relative to $x_T$ is exact, free of Monte Carlo error. DDIM
# in 20 steps shrinks it by a fifth; DPM-Solver++(2M) in 20 calls is within
# 2%. On the eight Gaussians, the sliced Wasserstein distance to fresh data
# tells the same story.

# %%
lesson.step(
    "quality at 20 network calls",
    paper="DPM-Solver++ (Lu et al. 2022b): data prediction, multistep, ~20 calls for the quality of 1000",
    code="tinydiff.samplers.dpm_solver(steps=20); samplers.ddim(steps=20); samplers.heun(steps=19)",
)
narrow = oracle.MixtureDenoiser(oracle.GaussianMixture([1.0], [0.0], [0.09]), diffusion)
a2 = float(diffusion.schedule.alpha_bars[0])
true_sd = 0.3 * math.sqrt(a2 * 0.09 / (a2 * 0.09 + 1 - a2))  # sd of x0_hat at the first step
ratios = {}
for name, run in (("DDIM, 20", lambda **k: samplers.ddim(narrow, diffusion, (200, 1), lesson.rng(3), steps=20, **k)),
                  ("Heun, 19", lambda **k: samplers.heun(narrow, diffusion, (200, 1), lesson.rng(3), steps=19, **k)),
                  ("DPM-Solver++(2M), 20", lambda **k: samplers.dpm_solver(narrow, diffusion, (200, 1), lesson.rng(3),
                                                                          steps=20, **k)),
                  ("DPM-Solver++(3M), 20", lambda **k: samplers.dpm_solver(narrow, diffusion, (200, 1), lesson.rng(3),
                                                                          steps=20, order=3, **k))):
    out, trajectory = run(dtype=f64, return_trajectory=True, every=100)
    ratios[name] = float(np.std(B.to_numpy(out)) / np.std(B.to_numpy(trajectory["x"][0]))) / true_sd
    lesson.value(f"sd / true sd: {name}", ratios[name])
lesson.check(abs(ratios["DPM-Solver++(2M), 20"] - 1) < 0.02, "DPM-Solver++(2M) in 20 calls within 2% of the true sd",
             f"{ratios['DPM-Solver++(2M), 20']:.4f}")
lesson.check(ratios["DDIM, 20"] < 0.85, "DDIM in 20 steps shrinks the spread", f"{ratios['DDIM, 20']:.4f}")
n = lesson.pick(1000, 3000)
fresh = data.load("eightgaussians", n=n, seed=1000 + lesson.seed).x
floor = metrics.floor(lambda k, seed: data.load("eightgaussians", n=k, seed=seed).x, n)
distance = {name: metrics.sliced_wasserstein(B.to_numpy(run()), fresh) for name, run in (
    ("DDIM, 20", lambda: samplers.ddim(exact, diffusion, (n, 2), lesson.rng(4), steps=20)),
    ("DPM-Solver++(2M), 20", lambda: samplers.dpm_solver(exact, diffusion, (n, 2), lesson.rng(4), steps=20)),
)}
lesson.table(["sampler", "sliced W", "/ floor"], [[k, d, d / floor] for k, d in distance.items()], digits=4)
lesson.check_less("DPM-Solver++(2M)'s distance", distance["DPM-Solver++(2M), 20"], "DDIM's", distance["DDIM, 20"])

# %% [markdown]
# ## Step 5: the exact likelihood, next to the bound
#
# Along the flow, $\frac{d}{d\lambda}\log p_\lambda(x(\lambda)) = -\nabla\cdot F$ (the
# instantaneous change of variables), so integrating from the data to the
# noise, $\log p(x_0) = \log N(x_T; 0, I) + \int \nabla\cdot F\, d\lambda$. The divergence
# comes from vector-Jacobian products of the model (for the exact denoiser,
# Tweedie's $\partial\hat x_0 / \partial x = \frac{\alpha}{\sigma^2}\mathrm{Cov}[x_0 \mid x_t]$): all $D$ of them
# here, or one per Hutchinson probe $z^T J z$ for images. It is the density
# at the first noise level, $q_1 = q$ noised by $\sigma_1 = 0.01$, which we know.
# The bound of lesson 08 bounds the same NLL from above.

# %%
lesson.step(
    "log p(x_0) through the ODE, against the truth and the bound",
    paper=["log p_0(x_0) = log p_T(x_T) + int div F dlambda   (Chen et al. 2018; Song et al. 2021, Sec. 4.3)",
           "div F: exact from D VJPs, or Hutchinson's z^T (dF/dx) z"],
    code="tinydiff.ode.log_likelihood(model, diffusion, x, rng, steps, exact_trace); GaussianDiffusion.vlb",
)
points = eight.sample(lesson.pick(300, 1000), lesson.rng(5), dtype=f64)
ode_nll = B.to_numpy(ode.log_likelihood(exact, diffusion, points, lesson.rng(6), steps=100, exact_trace=True)["nll"])
logits = B.to_numpy(eight.component_log_prob(points, math.sqrt(a2), 1 - a2))
top = logits.max(1, keepdims=True)
true_nll = -(top[:, 0] + np.log(np.exp(logits - top).sum(1)))  # -log q_1(x) (Eq. 4 applied to the mixture)
bound = B.to_numpy(diffusion.vlb(exact, points, lesson.rng(7), decoder="gaussian")["total"])
se = bound.std() / math.sqrt(len(bound))
lesson.table(["nats per point", "mean", "SE"], [["true -log q_1(x)", true_nll.mean(), 0.0],
                                                ["ODE, exact trace", ode_nll.mean(), 0.0],
                                                ["the bound L (Eq. 3)", bound.mean(), se]], digits=5)
lesson.check_close("the ODE's NLL of each point", ode_nll, true_nll, atol=0.03, against="the true -log q_1(x)")
lesson.check(bound.mean() > true_nll.mean() - 4 * se, "the bound stays above the true NLL (within 4 SE)",
             f"{bound.mean():.4f} vs {true_nll.mean():.4f}, SE {se:.4f}")

# %% [markdown]
# ## Step 6: a trained model
#
# The same two numbers for a small network trained on two moons, on fresh
# points: the exact NLL of the ODE model and the bound of the ancestral one.
# They are two different models made from one network, so either may be
# lower; both should beat a Gaussian fitted to the data. Hutchinson's
# estimate (4 probes) must agree with the exact trace within its own
# standard error.

# %%
lesson.step(
    "a trained 2D model: the ODE's NLL and the bound, side by side",
    paper="NLL <= L (Eq. 3) for the ancestral model; the ODE gives its own model's exact NLL",
    code="tinydiff.train.train; ode.log_likelihood(..., exact_trace=True | probes=4); diffusion.vlb",
)
config = train.TrainConfig(data="moons", steps=lesson.pick(1500, 8000), width=lesson.pick(64, 128),
                           depth=lesson.pick(2, 3), batch_size=256, lr=3e-3, warmup=50, seed=lesson.seed,
                           checkpoint_every=10**6, log_every=500)
run = train.use_ema_weights(train.train(config, lesson.out / "run", progress=False, log=lambda *_: None).run)
held_out = B.asarray(data.load("moons", n=lesson.pick(300, 1000), seed=777 + lesson.seed).x)
exact_trace = ode.log_likelihood(run.model, run.diffusion, held_out, lesson.rng(8), steps=lesson.pick(50, 100),
                                 exact_trace=True)
hutchinson = ode.log_likelihood(run.model, run.diffusion, held_out, lesson.rng(8), steps=lesson.pick(50, 100),
                                probes=4)
trained_bound = B.to_numpy(run.diffusion.vlb(run.model, held_out, lesson.rng(9), decoder="gaussian")["total"])
host = B.to_numpy(held_out).astype(np.float64)
gaussian_nll = -np.mean([np.log(np.linalg.det(2 * np.pi * np.cov(host.T))) * -0.5 - 0.5 * d @ np.linalg.solve(
    np.cov(host.T), d) for d in host - host.mean(0)])
nll_exact, nll_hutch = B.to_numpy(exact_trace["nll"]), B.to_numpy(hutchinson["nll"])
se_hutch = math.sqrt(np.sum(B.to_numpy(hutchinson["stderr"]) ** 2)) / len(nll_hutch)
lesson.table(["nats per point", "mean"], [["ODE, exact trace", nll_exact.mean()],
                                          ["ODE, Hutchinson (4 probes)", nll_hutch.mean()],
                                          ["the bound L", trained_bound.mean()],
                                          ["a fitted Gaussian", gaussian_nll]], digits=5)
lesson.check_mc("mean NLL by Hutchinson", nll_hutch.mean(), nll_exact.mean(), se_hutch, against="the exact trace")
lesson.check_less("the ODE's NLL", nll_exact.mean(), "a fitted Gaussian's", gaussian_nll)
lesson.check_less("the bound", trained_bound.mean(), "a fitted Gaussian's NLL", gaussian_nll)

lesson.done()
