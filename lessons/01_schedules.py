# %% [markdown]
# # Lesson 01: noise schedules
#
# The forward process adds Gaussian noise in $T$ small steps of variance
# $\beta_1, \dots, \beta_T$ (Ho et al. 2020, Eq. 2). Everything else in the
# paper is a function of these betas: $\alpha_t = 1 - \beta_t$, the
# cumulative product $\bar\alpha_t = \prod_{s \le t} \alpha_s$ (Eq. 4), the
# posterior (Eq. 7), the loss weights (Eq. 12). `tinydiff.schedules`
# computes them once, in float64, from a named schedule.
#
# Indexing: the paper counts $t = 1..T$; arrays count from 0, so index
# `i` holds the paper's $t = i + 1$.
#
# Run: `python lessons/01_schedules.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import schedules as S
from tinydiff import viz

lesson = _lesson.Lesson("01_schedules", "noise schedules: beta_t, alpha_bar_t and the signal-to-noise ratio")


def host(array):
    return B.to_numpy(array).astype(np.float64)


# %% [markdown]
# ## Step 1: the linear schedule of the paper
#
# Sec. 4: $T = 1000$ and $\beta_t$ rising linearly from $10^{-4}$ to $0.02$.
# Then $\bar\alpha_t = \prod_{s\le t}(1 - \beta_s)$ and the signal-to-noise
# ratio $\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)$. We recompute the
# product with plain Python floats, one factor at a time.

# %%
lesson.step(
    "the linear schedule and alpha_bar",
    paper=["beta_t linear from 1e-4 to 0.02, T = 1000   (Sec. 4)",
           "alpha_t = 1 - beta_t,  alpha_bar_t = prod_{s<=t} alpha_s   (Eq. 4)"],
    code="tinydiff.schedules.make_schedule('linear', T) -> Schedule.betas, .alpha_bars, .snr",
)
T = 1000
linear = S.make_schedule("linear", T)
betas = host(linear.betas)
product, by_hand = 1.0, []
for t in range(1, T + 1):  # paper t
    beta = 1e-4 + (0.02 - 1e-4) * (t - 1) / (T - 1)
    product *= 1.0 - beta
    by_hand.append(product)
by_hand = np.array(by_hand)
alpha_bars = host(linear.alpha_bars)
lesson.table(["paper t", "beta_t", "alpha_bar_t", "SNR_t"],
             [[t, betas[t - 1], alpha_bars[t - 1], host(linear.snr)[t - 1]] for t in (1, 10, 100, 250, 500, 1000)])
lesson.check_close("alpha_bar_t for every t", alpha_bars, by_hand, rtol=1e-12,
                   against="a Python product of (1 - beta_s)")
lesson.check_close("alpha_bar_T", alpha_bars[-1], 4.0358e-5, rtol=1e-3, against="the value often quoted")
lesson.say("""At t = T only sqrt(alpha_bar_T) ~ 0.006 of the data is left: x_T is, for all
practical purposes, the N(0, I) that sampling starts from.""")

# %% [markdown]
# ## Step 2: the cosine schedule (Improved DDPM, Eq. 17)
#
# Nichol and Dhariwal define $\bar\alpha$ directly,
# $\bar\alpha_t = f(t)/f(0)$, $f(t) = \cos^2\!\big(\frac{t/T + s}{1 + s}\frac{\pi}{2}\big)$,
# $s = 0.008$, and recover $\beta_t = 1 - \bar\alpha_t / \bar\alpha_{t-1}$,
# clipped at 0.999. The product of the recovered alphas must give back
# $f(t)/f(0)$ wherever the clip did not act. The linear schedule destroys
# information quickly: it spends its last few hundred steps on almost pure noise.

# %%
lesson.step(
    "the cosine schedule",
    paper=["alpha_bar_t = f(t) / f(0),  f(t) = cos^2(((t/T + s) / (1 + s)) pi/2),  s = 0.008   (IDDPM Eq. 17)",
           "beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped to at most 0.999"],
    code="tinydiff.schedules.cosine_alpha_bar, betas_from_alpha_bar, make_schedule('cosine', T)",
)
cosine = S.make_schedule("cosine", T)
s = 0.008
f = [math.cos(((t / T + s) / (1 + s)) * math.pi / 2) ** 2 for t in range(T + 1)]
closed = np.array(f[1:]) / f[0]
cos_betas, cos_bars = host(cosine.betas), host(cosine.alpha_bars)
unclipped = cos_betas < 0.999
lesson.value("steps where the clip acted", int((~unclipped).sum()), "(only the last: f(T) = 0)")
lesson.check_close("cosine alpha_bar_t (unclipped steps)", cos_bars[unclipped], closed[unclipped],
                   rtol=1e-9, atol=1e-15, against="f(t)/f(0)")
half_linear = int(np.argmax(alpha_bars < 0.5)) + 1
half_cosine = int(np.argmax(cos_bars < 0.5)) + 1
lesson.value("t where alpha_bar falls below 1/2", f"linear {half_linear}, cosine {half_cosine}")
lesson.check_less("linear half-way step", half_linear, "cosine half-way step", half_cosine)

# %% [markdown]
# ## Step 3: other T, and the quadratic and sigmoid schedules
#
# For $T \ne 1000$ tinydiff scales both ends by $1000/T$, as Improved DDPM
# does, so $\sum_t \beta_t$ (about the total noise added) stays the same and a
# model with fewer steps still reaches noise. Two more schedules: the
# original code's "quad" ($\beta$ linear in $\sqrt\beta$) and GeoDiff's
# sigmoid.

# %%
lesson.step(
    "T other than 1000, quadratic and sigmoid",
    paper=["T != 1000: beta from 1e-4 * 1000/T to 0.02 * 1000/T   (IDDPM)",
           "quadratic: beta = linspace(sqrt(1e-4), sqrt(0.02), T)^2;  sigmoid: sigmoid(linspace(-6, 6, T)) (0.02 - 1e-4) + 1e-4"],
    code="tinydiff.schedules.make_schedule('linear' | 'quadratic' | 'sigmoid', T)",
)
rows = []
small_T = lesson.pick(50, 100)
for name in ("linear", "quadratic", "sigmoid"):
    big, small = S.make_schedule(name, 1000), S.make_schedule(name, small_T)
    rows.append([name, float(B.xp.sum(big.betas)), float(B.xp.sum(small.betas)),
                 float(big.alpha_bars[-1]), float(small.alpha_bars[-1])])
lesson.table(["schedule", "sum beta (T=1000)", f"sum beta (T={small_T})", "alpha_bar_T (1000)",
              f"alpha_bar_T ({small_T})"], rows)
lesson.check_close(f"sum of linear betas at T = {small_T}", rows[0][2], rows[0][1], rtol=1e-12,
                   against="at T = 1000")
quad = host(S.make_schedule("quadratic", T).betas)
lesson.check_close("quadratic betas", quad, np.linspace(math.sqrt(1e-4), math.sqrt(0.02), T) ** 2, rtol=1e-12,
                   against="linspace(sqrt(1e-4), sqrt(0.02))^2")

# %% [markdown]
# ## Step 4: zero terminal SNR, and the schedule's own warnings
#
# $\bar\alpha_T$ of the linear schedule is small but not 0, so training
# never sees pure noise while sampling starts from it. Lin et al. 2023
# (Algorithm 1) shift and scale $\sqrt{\bar\alpha_t}$ so that
# $\bar\alpha_T = 0$ exactly, keeping $\bar\alpha_1$. Then $\beta_T = 1$ and
# predicting $\epsilon$ is undefined at $t = T$ (lesson 07 uses $v$).
# `Schedule.warnings()` lists such traps.

# %%
lesson.step(
    "zero terminal SNR (Lin et al. 2023, Algorithm 1)",
    paper="sqrt(abar) <- (sqrt(abar) - sqrt(abar_T)) * sqrt(abar_1) / (sqrt(abar_1) - sqrt(abar_T)); beta_T becomes 1",
    code="tinydiff.schedules.make_schedule(..., zero_terminal_snr=True); Schedule.warnings()",
)
zero = S.make_schedule("linear", T, zero_terminal_snr=True)
zero_bars = host(zero.alpha_bars)
lesson.value("alpha_bar_1, alpha_bar_T", f"{zero_bars[0]:.8f}, {zero_bars[-1]:.3g}")
lesson.check(zero_bars[-1] == 0.0 and float(zero.betas[-1]) == 1.0, "alpha_bar_T = 0 and beta_T = 1 exactly")
lesson.check_close("alpha_bar_1 after rescaling", zero_bars[0], alpha_bars[0], rtol=1e-12, against="before")
short = S.make_schedule("linear", 20, beta_start=1e-4, beta_end=0.05)  # too few, too small steps
for message in short.warnings():
    lesson.value("warning (T=20, beta_end 0.05)", message[:100] + "...")
lesson.check(any("terminal SNR" in m for m in short.warnings()),
             "a schedule that never reaches noise is warned about (terminal SNR)")

# %% [markdown]
# ## The picture
#
# $\beta_t$ (log scale), $\bar\alpha_t$ and $\log \mathrm{SNR}_t$ of the four
# schedules side by side.

# %%
pictured = {name: S.make_schedule(name, T) for name in ("linear", "cosine", "quadratic", "sigmoid")}
lesson.saved(viz.plot_schedules(
    {name: {"betas": host(s.betas), "alpha_bars": host(s.alpha_bars)} for name, s in pictured.items()},
    lesson.path("schedules.png")))

lesson.done()
