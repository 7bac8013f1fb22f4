# %% [markdown]
# # Lesson 03: the posterior of the forward process
#
# The forward process runs from data to noise. To run it backwards, the
# model learns $p_\theta(x_{t-1} \mid x_t)$; its training target is the
# forward process's own posterior, which is a Gaussian with a closed form
# when we also condition on $x_0$ (Ho et al. 2020, Eq. 6, 7):
#
# $q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t(x_t, x_0), \tilde\beta_t I)$,
# $\tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0 + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t$,
# $\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t$.
#
# This lesson derives the same numbers from Bayes' rule by hand, on a grid,
# with no algebra at all, and then checks a property the sampler relies on.
#
# Run: `python lessons/03_posterior.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("03_posterior", "the posterior q(x_{t-1} | x_t, x_0): Eq. 6-7 against Bayes' rule")
f64 = B.dtype("float64")
T = 1000
schedule = make_schedule("linear", T)
diffusion = GaussianDiffusion(schedule)
betas = B.to_numpy(schedule.betas)
alpha_bars = B.to_numpy(schedule.alpha_bars)
x0_value, xt_value = 0.8, -0.4  # one data point and one noisy point, 1-D


def closed_form(t):
    """(mean, variance) of Eq. 7 from tinydiff, for code t (paper t + 1)."""
    x0 = xp.full((1, 1), x0_value, dtype=f64)
    x_t = xp.full((1, 1), xt_value, dtype=f64)
    mean, variance, _ = diffusion.q_posterior(x0, x_t, t)
    return float(mean[0, 0]), float(variance[0, 0])


# %% [markdown]
# ## Step 1: the closed form
#
# The two coefficients of $\tilde\mu_t$ and $\tilde\beta_t$ are schedule
# tables (`posterior_mean_coef1`, `posterior_mean_coef2`,
# `posterior_variance`). At paper $t = 1$, $\bar\alpha_0 = 1$ makes
# $\tilde\beta_1 = 0$: given $x_0$, there is nothing left to guess.

# %%
lesson.step(
    "Eq. 7 in closed form",
    paper=["mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t",
           "beta~_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t   (Eq. 7; abar_0 = 1 so beta~_1 = 0)"],
    code="tinydiff.diffusion.GaussianDiffusion.q_posterior (tables in tinydiff.schedules.Schedule)",
)
t = 99  # code t: the paper's t = 100
ab, ab_prev, beta = alpha_bars[t], alpha_bars[t - 1], betas[t]
mean, variance = closed_form(t)
by_hand_mean = (math.sqrt(ab_prev) * beta / (1 - ab) * x0_value
                + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * xt_value)
by_hand_var = (1 - ab_prev) / (1 - ab) * beta
lesson.value("x_0, x_t, paper t", f"{x0_value}, {xt_value}, {t + 1}")
lesson.value("mu~_t, beta~_t (tinydiff)", f"{mean:.8f}, {variance:.8g}")
lesson.check_close("mu~_t", mean, by_hand_mean, rtol=1e-12, against="Eq. 7 typed out")
lesson.check_close("beta~_t", variance, by_hand_var, rtol=1e-12, against="Eq. 7 typed out")
lesson.check(float(schedule.posterior_variance[0]) == 0.0, "beta~_1 = 0 exactly (abar_0 = 1)")

# %% [markdown]
# ## Step 2: Bayes' rule, by hand, on a grid
#
# Because the forward process is Markov, $q(x_t \mid x_{t-1}, x_0) = q(x_t \mid x_{t-1})$, so
#
# $q(x_{t-1} \mid x_t, x_0) \propto q(x_t \mid x_{t-1})\; q(x_{t-1} \mid x_0)$,
#
# Eq. 2 times Eq. 4. We evaluate that product on a fine grid of
# $x_{t-1}$, normalise it numerically, and take its mean and variance by
# quadrature: no Gaussian algebra anywhere.

# %%
lesson.step(
    "Bayes' rule on a grid",
    paper="q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0)   (Eq. 2 x Eq. 4, normalised)",
    code="by hand with NumPy: log N(x_t; sqrt(alpha_t) x, beta_t) + log N(x; sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})",
)
grid = np.linspace(-6.0, 6.0, lesson.pick(120_001, 600_001))
dx = grid[1] - grid[0]


def log_normal(x, mean, var):
    return -0.5 * (math.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def bayes_on_grid(t):
    alpha, ab_prev = 1.0 - betas[t], alpha_bars[t - 1]
    log_post = (log_normal(xt_value, math.sqrt(alpha) * grid, 1.0 - alpha)  # Eq. 2, as a function of x_{t-1}
                + log_normal(grid, math.sqrt(ab_prev) * x0_value, 1.0 - ab_prev))  # Eq. 4 at t - 1
    weights = np.exp(log_post - log_post.max())
    weights /= weights.sum() * dx  # normalise: the denominator of Bayes' rule
    mean = (grid * weights).sum() * dx
    var = ((grid - mean) ** 2 * weights).sum() * dx
    return mean, var


rows = []
for t in (1, 9, 99, 499, 999):  # code t: paper t = 2, 10, 100, 500, 1000
    grid_mean, grid_var = bayes_on_grid(t)
    mean, variance = closed_form(t)
    rows.append((t + 1, grid_mean, mean, grid_var, variance))
lesson.table(["paper t", "Bayes mean", "Eq. 7 mean", "Bayes variance", "Eq. 7 variance"], rows, digits=8)
for t_paper, gm, m, gv, v in rows:
    lesson.check_close(f"mean at t = {t_paper}", gm, m, rtol=1e-7, atol=1e-9, against="Eq. 7")
    lesson.check_close(f"variance at t = {t_paper}", gv, v, rtol=1e-6, against="Eq. 7")

# %% [markdown]
# ## Step 3: why it is Gaussian: precisions add
#
# A product of two Gaussian densities in $x_{t-1}$ is Gaussian, with
# precision the sum of the precisions: $\alpha_t/\beta_t$ from Eq. 2 (as a
# function of $x_{t-1}$) and $1/(1-\bar\alpha_{t-1})$ from Eq. 4. That is
# Eq. 7's $\tilde\beta_t$ after simplifying with
# $\alpha_t(1 - \bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$. Checked for
# every $t \ge 2$ at once.

# %%
lesson.step(
    "the product of two Gaussians",
    paper="1 / beta~_t = alpha_t / beta_t + 1 / (1 - abar_{t-1})",
    code="tinydiff.schedules.Schedule.posterior_variance",
)
posterior_variance = B.to_numpy(schedule.posterior_variance)
precision = (1 - betas[1:]) / betas[1:] + 1 / (1 - alpha_bars[:-1])
lesson.check_close("1 / beta~_t, t = 2..T", 1 / posterior_variance[1:], precision, rtol=1e-10,
                   against="alpha_t / beta_t + 1 / (1 - abar_{t-1})")
ratio = posterior_variance[1:] / betas[1:]
lesson.value("beta~_t / beta_t at t = 2, 10, 100, 1000", ratio[[0, 8, 98, 998]])
lesson.check(np.all(ratio < 1) and ratio[-1] > 0.999, "beta~_t < beta_t, and the two meet at large t",
             f"max ratio {ratio.max():.6f}")

# %% [markdown]
# ## Step 4: the posterior undoes the forward step
#
# Draw $x_t \sim q(x_t \mid x_0)$, then $x_{t-1} \sim q(x_{t-1} \mid x_t, x_0)$:
# the pair has the joint law of the forward process, so $x_{t-1}$ must
# follow $q(x_{t-1} \mid x_0) = \mathcal N(\sqrt{\bar\alpha_{t-1}}x_0, 1 - \bar\alpha_{t-1})$.
# This is why a sampler that knew $x_0$ could walk back exactly; the model
# of lesson 04 has to guess $x_0$ instead.

# %%
lesson.step(
    "a posterior step after a forward jump gives the forward marginal at t - 1",
    paper="x_t ~ q(x_t | x_0), x_{t-1} ~ q(x_{t-1} | x_t, x_0)  =>  x_{t-1} ~ N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1})",
    code="GaussianDiffusion.q_sample, then GaussianDiffusion.q_posterior",
)
N = lesson.pick(5000, 50000)
rng = lesson.rng(3)
t = 299  # code t: paper t = 300
x0 = xp.full((N, 1), x0_value, dtype=f64)
x_t = diffusion.q_sample(x0, t, rng.normal((N, 1), dtype=f64))
mean, variance, _ = diffusion.q_posterior(x0, x_t, t)
x_prev = B.to_numpy(mean + xp.sqrt(variance) * rng.normal((N, 1), dtype=f64))[:, 0]
target_mean, target_var = math.sqrt(alpha_bars[t - 1]) * x0_value, 1 - alpha_bars[t - 1]
lesson.check_mc("mean of x_{t-1}", x_prev.mean(), target_mean, math.sqrt(target_var / N))
lesson.check_mc("variance of x_{t-1}", x_prev.var(ddof=1), target_var, target_var * math.sqrt(2 / (N - 1)))

# The picture: the posterior for one fixed x_t, sampled, against the density found by Bayes' rule.
fixed = xp.full((N, 1), xt_value, dtype=f64)
mean, variance, _ = diffusion.q_posterior(x0, fixed, t)
draws = B.to_numpy(mean + xp.sqrt(variance) * rng.normal((N, 1), dtype=f64))[:, 0]
m, v = bayes_on_grid(t)
lesson.saved(viz.plot_histogram_1d(
    draws, lesson.path("posterior.png"),
    density_fn=lambda x: np.exp(log_normal(x, m, v)),
    title=f"posterior at t = {t + 1}: draws and Bayes' rule"))

lesson.done()
