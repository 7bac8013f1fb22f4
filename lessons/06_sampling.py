# %% [markdown]
# # Lesson 06: sampling (Algorithm 2)
#
# To sample, start from $x_T \sim \mathcal N(0, I)$ and apply the learned
# reverse step $T$ times (Ho et al. 2020, Algorithm 2):
#
# $x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta(x_t, t)\Big) + \sigma_t z$,
# $z \sim \mathcal N(0, I)$ for $t > 1$, $z = 0$ at the last step.
#
# The first term is the mean of Eq. 11; $\sigma_t^2$ is $\beta_t$ or
# $\tilde\beta_t$ (Sec. 3.2). To test the *sampler* apart from any training
# error, this lesson samples with the exact denoiser of Gaussian-mixture
# data (`tinydiff.oracle`): whatever is wrong then is the sampler's fault.
#
# Run: `python lessons/06_sampling.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, oracle, samplers, viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("06_sampling", "sampling: Algorithm 2, Eq. 11, and the two variance choices")
f64 = B.dtype("float64")
T = lesson.pick(200, 1000)
diffusion = GaussianDiffusion(make_schedule("linear", T))
betas = [float(v) for v in B.to_numpy(diffusion.schedule.betas)]
alpha_bars = [float(v) for v in B.to_numpy(diffusion.schedule.alpha_bars)]
mixture = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))
exact = oracle.MixtureDenoiser(mixture, diffusion)  # E[eps | x_t], the best eps_theta there is

# %% [markdown]
# ## Step 1: Algorithm 2, written out
#
# The loop below is Algorithm 2 line by line with Python floats for the
# coefficients. `samplers.ddpm` draws its noise from one seed per call:
# $x_T$ from `default_rng((base, T))` and the $z$ of step $t$ from
# `default_rng((base, t))` (see its module docstring), so a hand-written
# loop with the same draws must give the same samples.

# %%
lesson.step(
    "Algorithm 2 by hand against samplers.ddpm",
    paper=["x_T ~ N(0, I); for t = T..1: z ~ N(0, I) if t > 1 else z = 0",
           "x_{t-1} = (x_t - (1 - alpha_t) / sqrt(1 - abar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z"],
    code="tinydiff.samplers.ddpm(model, diffusion, shape, rng, variance='beta')",
)
shape = (lesson.pick(300, 1000), 2)
base = lesson.rng(1).next_seed()  # what ddpm takes from the same generator
x = B.default_rng((base, T)).normal(shape, dtype=f64)  # x_T
for t in range(T - 1, -1, -1):  # code t = paper t - 1
    eps = exact(x, xp.full((shape[0],), t, dtype=xp.int64))
    alpha = 1.0 - betas[t]
    x = (x - (1.0 - alpha) / math.sqrt(1.0 - alpha_bars[t]) * eps) / math.sqrt(alpha)  # Eq. 11
    if t > 0:
        x = x + math.sqrt(betas[t]) * B.default_rng((base, t)).normal(shape, dtype=f64)  # sigma_t^2 = beta_t
by_hand = B.to_numpy(x)
library = B.to_numpy(samplers.ddpm(exact, diffusion, shape, lesson.rng(1), dtype=f64))
lesson.check_close("samplers.ddpm", library, by_hand, atol=1e-9, against="the loop above")

# %% [markdown]
# ## Step 2: Eq. 11 is the posterior mean at the predicted $x_0$
#
# Solving Eq. 9 for $x_0$ with the predicted noise gives Eq. 15,
# $\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}$.
# Putting $\hat x_0$ into the posterior mean of Eq. 7 gives back Eq. 11
# exactly: the model's step is "guess $x_0$, then take the forward
# process's own posterior step". tinydiff computes it that way
# (`p_mean_variance`), which also works for the $x_0$ and $v$
# parameterizations of lesson 07.

# %%
lesson.step(
    "Eq. 11 = Eq. 7 at x0_hat of Eq. 15",
    paper=["mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t)   (Eq. 11)",
           "x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)   (Eq. 15);  mu~_t(x_t, x0_hat)   (Eq. 7)"],
    code="GaussianDiffusion.mean_from_eps; predict_x0_from_eps + q_posterior; p_mean_variance",
)
rng = lesson.rng(2)
x_t = rng.normal((64, 2), dtype=f64)
t = rng.integers(1, T, (64,))
eps = rng.normal((64, 2), dtype=f64)
eq11 = diffusion.mean_from_eps(x_t, t, eps)
eq7, _, _ = diffusion.q_posterior(diffusion.predict_x0_from_eps(x_t, t, eps), x_t, t)
lesson.check_close("Eq. 11 mean", eq11, eq7, rtol=1e-9, atol=1e-12, against="Eq. 7 at Eq. 15's x0_hat")
lesson.check_close("p_mean_variance(...).mean", diffusion.p_mean_variance(eps, x_t, t).mean, eq11,
                   rtol=1e-9, atol=1e-12, against="Eq. 11")

# %% [markdown]
# ## Step 3: which $\sigma_t^2$? The true reverse variance at two extremes
#
# Sec. 3.2: $\sigma_t^2 = \beta_t$ is optimal for $x_0 \sim \mathcal N(0, I)$,
# $\sigma_t^2 = \tilde\beta_t$ for $x_0$ a single point. We measure the true
# $\mathrm{Var}(x_{t-1} \mid x_t)$ by simulating the forward process and
# regressing $x_{t-1}$ on $x_t$ (for Gaussian data the regression is exact
# and its residual variance is the conditional variance).

# %%
lesson.step(
    "the variance of the true reverse step (Sec. 3.2)",
    paper=["x_0 ~ N(0, I):  Var(x_{t-1} | x_t) = beta_t   (sigma_t^2 = beta_t)",
           "x_0 one point:  Var(x_{t-1} | x_t) = beta~_t  (sigma_t^2 = beta~_t, Eq. 7)"],
    code="GaussianDiffusion.q_sample, q_step; GaussianDiffusion.reverse_variance(t, x, 'beta' | 'beta_tilde')",
)
N = lesson.pick(20000, 100000)
t = 9  # code t: paper t = 10, where beta~ and beta differ most visibly
reverse = {v: float(diffusion.reverse_variance(t, x_t[:1], v)[0][0, 0]) for v in ("beta", "beta_tilde")}
for label, x0, expected in (("x_0 ~ N(0, 1)", rng.normal((N, 1), dtype=f64), "beta"),
                            ("x_0 = 0.5", xp.full((N, 1), 0.5, dtype=f64), "beta_tilde")):
    x_prev = B.to_numpy(diffusion.q_sample(x0, t - 1, rng.normal((N, 1), dtype=f64)))[:, 0]
    x_next = B.to_numpy(diffusion.q_step(B.asarray(x_prev[:, None], dtype=f64), t,
                                         rng.normal((N, 1), dtype=f64)))[:, 0]
    slope, intercept = np.polyfit(x_next, x_prev, 1)
    residual = x_prev - (slope * x_next + intercept)
    variance = residual.var(ddof=2)
    lesson.value(f"{label}: Var(x_(t-1) | x_t), t = {t + 1}", variance,
                 f"(beta_t {reverse['beta']:.6g}, beta~_t {reverse['beta_tilde']:.6g})")
    lesson.check_mc(f"reverse variance for {label}", variance, reverse[expected],
                    reverse[expected] * math.sqrt(2 / (N - 2)), against=f"sigma_t^2 = {expected} =")

# %% [markdown]
# ## Step 4: sampling with both choices
#
# For $x_0 \sim \mathcal N(0, 1)$ the exact denoiser with $\sigma_t^2 = \beta_t$
# must give samples of variance 1, while $\tilde\beta_t$, too small for this
# data, gives less. (With many steps the difference shrinks; the paper
# found both choices gave similar samples at $T = 1000$.)

# %%
lesson.step(
    "sampling N(0, 1) data with sigma_t^2 = beta_t and beta~_t",
    paper="Sec. 3.2: both choices gave similar results experimentally; beta_t is the right one for N(0, I) data",
    code="tinydiff.samplers.ddpm(..., variance='beta' | 'beta_tilde')",
)
short = GaussianDiffusion(make_schedule("linear", 100))
gaussian = oracle.MixtureDenoiser(oracle.GaussianMixture([1.0], [[0.0]], [1.0]), short)
N = lesson.pick(8000, 40000)
got = {}
for variance in ("beta", "beta_tilde"):
    samples = B.to_numpy(samplers.ddpm(gaussian, short, (N, 1), lesson.rng(4), variance=variance, dtype=f64))
    got[variance] = samples.var(ddof=1)
lesson.value("sample variance (T = 100)", f"beta: {got['beta']:.4f}, beta~: {got['beta_tilde']:.4f}")
lesson.check_mc("sample variance with sigma^2 = beta", got["beta"], 1.0, math.sqrt(2 / (N - 1)),
                against="the data's")
lesson.check_less("sample variance with beta~", got["beta_tilde"], "with beta", got["beta"])

# %% [markdown]
# ## Step 5: eight Gaussians, and how close is close
#
# A distance between two sample sets is not 0 even for the same
# distribution, so it is read next to its floor: the distance between two
# fresh draws of the real data of the same size (`metrics.floor`).

# %%
lesson.step(
    "samples of the eight-Gaussians data with the exact denoiser",
    paper="Algorithm 2 with the true E[eps | x_t] samples q(x_0) up to the discretisation in T",
    code="tinydiff.samplers.ddpm(..., return_trajectory=True); tinydiff.metrics.sliced_wasserstein, floor",
)
N = lesson.pick(2000, 5000)
samples, trajectory = samplers.ddpm(exact, diffusion, (N, 2), lesson.rng(5), return_trajectory=True,
                                    every=T // 4)
samples = B.to_numpy(samples)


def draw(n, seed):
    return data.load("eightgaussians", n=n, seed=seed).x


distance = metrics.sliced_wasserstein(samples, draw(N, 1000 + lesson.seed))
floor = metrics.floor(draw, N)
noise = metrics.sliced_wasserstein(np.random.default_rng(0).normal(size=(N, 2)), draw(N, 7))
lesson.value("sliced Wasserstein to the data", f"samples {distance:.4f}, floor {floor:.4f}, N(0, I) {noise:.4f}")
lesson.check(distance < 2 * floor, "the samples are within twice the real-against-real floor",
             f"{distance:.4f} < 2 x {floor:.4f}")
variance = float(B.to_numpy(mixture.variance())[0])
sample_var, se = _lesson.sample_variance(samples[:, 0])
lesson.check_mc("variance of axis 0", sample_var, variance, se, against="the mixture's")
snaps = [(t + 1, B.to_numpy(x)) for t, x in zip(trajectory["t"], trajectory["x"])] + [(0, samples)]
lesson.saved(viz.plot_reverse_2d(snaps, lesson.path("reverse.png"), data=draw(2000, 3)))

lesson.done()
