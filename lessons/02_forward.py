# %% [markdown]
# # Lesson 02: the forward process
#
# The forward (diffusion) process of Ho et al. 2020 is a Markov chain that
# adds a little Gaussian noise at each step (Eq. 2),
# $q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1}, \beta_t I)$,
# and it has a closed form for any $t$ (Eq. 4),
# $q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0, (1-\bar\alpha_t) I)$.
# This lesson runs the chain of Eq. 2 step by step and checks that it lands
# on the distribution of Eq. 4; then it uses Eq. 4 (as Eq. 9,
# $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$) on 2D data.
#
# Run: `python lessons/02_forward.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson

from tinydiff import backend as B
from tinydiff import data, viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("02_forward", "the forward process: Eq. 2 iterated against Eq. 4")
f64 = B.dtype("float64")
T = 1000
diffusion = GaussianDiffusion(make_schedule("linear", T))
alpha_bars = B.to_numpy(diffusion.schedule.alpha_bars)
betas = B.to_numpy(diffusion.schedule.betas)
N = lesson.pick(4000, 40000)  # chains run side by side

# %% [markdown]
# ## Step 1: one step of Eq. 2
#
# From a fixed $x_{t-1}$, one step gives mean $\sqrt{1-\beta_t}\,x_{t-1}$ and
# variance $\beta_t$. With $N$ draws the sample mean has standard error
# $\sqrt{\beta_t / N}$ and the sample variance about $\beta_t\sqrt{2/(N-1)}$.

# %%
lesson.step(
    "one forward step",
    paper="q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   (Eq. 2)",
    code="tinydiff.diffusion.GaussianDiffusion.q_step(x_prev, t, noise)",
)
rng = lesson.rng(1)
t = 499  # code t: the paper's t = 500
x_prev = xp.full((N, 1), 1.3, dtype=f64)
x_t = B.to_numpy(diffusion.q_step(x_prev, t, rng.normal((N, 1), dtype=f64)))[:, 0]
beta = betas[t]
lesson.value("paper t, beta_t", f"{t + 1}, {beta:.6f}")
lesson.check_mc("mean of x_t", x_t.mean(), math.sqrt(1 - beta) * 1.3, math.sqrt(beta / N),
                against="sqrt(1 - beta_t) x_{t-1} =")
lesson.check_mc("variance of x_t", x_t.var(ddof=1), beta, beta * math.sqrt(2 / (N - 1)), against="beta_t =")

# %% [markdown]
# ## Step 2: iterate Eq. 2, compare with Eq. 4
#
# Start $N$ chains at the same $x_0 = 1.3$ and apply Eq. 2 again and again.
# At several $t$ the sample mean and variance must match Eq. 4:
# $\sqrt{\bar\alpha_t}\,x_0$ and $1 - \bar\alpha_t$. Why: a Gaussian step
# of a Gaussian is Gaussian; the means multiply,
# $\sqrt{\alpha_t}\sqrt{\bar\alpha_{t-1}} = \sqrt{\bar\alpha_t}$, and the
# variances add, $\alpha_t(1 - \bar\alpha_{t-1}) + \beta_t = 1 - \bar\alpha_t$.

# %%
lesson.step(
    "the chain of Eq. 2 lands on the closed form of Eq. 4",
    paper=["q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)   (Eq. 4)",
           "alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t: the variances add up"],
    code="GaussianDiffusion.q_step iterated T times; GaussianDiffusion.q_mean_variance",
)
x0_value = 1.3
x = xp.full((N, 1), x0_value, dtype=f64)
watch = {10, 100, 300, 1000}  # paper t
rows = []
for code_t in range(T):
    x = diffusion.q_step(x, code_t, rng.normal((N, 1), dtype=f64))
    if code_t + 1 in watch:
        sample = B.to_numpy(x)[:, 0]
        mean, var, _ = diffusion.q_mean_variance(xp.full((1, 1), x0_value, dtype=f64), code_t)
        rows.append((code_t + 1, sample.mean(), float(mean[0, 0]), sample.var(ddof=1), float(var[0, 0])))
lesson.table(["paper t", "chain mean", "Eq. 4 mean", "chain variance", "Eq. 4 variance"], rows)
for t_paper, m, m_exact, v, v_exact in rows:
    lesson.check_mc(f"mean after {t_paper} steps", m, m_exact, math.sqrt(v_exact / N))
    lesson.check_mc(f"variance after {t_paper} steps", v, v_exact, v_exact * math.sqrt(2 / (N - 1)))
lesson.check_close("variances add: alpha_t (1 - abar_{t-1}) + beta_t",
                   (1 - betas[1:]) * (1 - alpha_bars[:-1]) + betas[1:], 1 - alpha_bars[1:], rtol=1e-12,
                   against="1 - abar_t")

# %% [markdown]
# ## Step 3: one jump (Eq. 9) on 2D data
#
# Eq. 4 written with a standard normal $\epsilon$ is Eq. 9; it is how
# training draws $x_t$ in one step for a random $t$ (Algorithm 1). On the
# two-moons data, the coordinates' variance must move from the data's,
# $v_0$, to $\bar\alpha_t v_0 + (1 - \bar\alpha_t)$, and $x_T$ is close to
# $\mathcal N(0, I)$.

# %%
lesson.step(
    "x_t in one jump on 2D data",
    paper="x_t(x_0, eps) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,  eps ~ N(0, I)   (Eq. 9)",
    code="tinydiff.diffusion.GaussianDiffusion.q_sample(x0, t, noise)",
)
moons = data.load("moons", n=N, seed=lesson.seed)
x0 = B.asarray(moons.x)
eps = rng.normal(tuple(x0.shape))
t_half = 249  # code t: paper t = 250
jumped = diffusion.q_sample(x0, t_half, eps)
by_hand = math.sqrt(alpha_bars[t_half]) * moons.x + math.sqrt(1 - alpha_bars[t_half]) * B.to_numpy(eps)
lesson.check_close("q_sample", jumped, by_hand, rtol=1e-5, atol=1e-6, against="sqrt(abar) x0 + sqrt(1 - abar) eps")
v0 = moons.x.var(axis=0, ddof=1)
expected = alpha_bars[t_half] * v0 + 1 - alpha_bars[t_half]
lesson.value("data variance per axis", v0)
for axis in (0, 1):
    # The standard error of a non-Gaussian variable's sample variance comes from its fourth moment.
    got, se = _lesson.sample_variance(B.to_numpy(jumped)[:, axis])
    lesson.check_mc(f"variance of axis {axis} at paper t = {t_half + 1}", got, expected[axis], se,
                    against="abar v0 + 1 - abar =")
x_T = B.to_numpy(diffusion.q_sample(x0, T - 1, rng.normal(tuple(x0.shape))))
lesson.check_mc("mean of x_T (axis 0)", x_T[:, 0].mean(), 0.0, 1 / math.sqrt(N), against="N(0, I):")
lesson.check_mc("variance of x_T (axis 1)", x_T[:, 1].var(ddof=1), 1.0, math.sqrt(2 / (N - 1)), against="N(0, I):")

# %% [markdown]
# ## The picture
#
# The moons dissolve: $x_t$ from Eq. 9 at a few $t$ (paper numbering).

# %%
snapshot_t = [49, 99, 249, 499, 999]  # code t: paper t = 50, 100, 250, 500, 1000
points = moons.x[: lesson.pick(600, 1500)]
snaps = [(0, points)] + [
    (t + 1, B.to_numpy(diffusion.q_sample(B.asarray(points), t, rng.normal(points.shape)))) for t in snapshot_t
]
lesson.saved(viz.plot_forward_2d(snaps, lesson.path("forward.png"), data=points))

lesson.done()
