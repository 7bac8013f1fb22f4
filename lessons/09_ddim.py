# %% [markdown]
# # Lesson 09: DDIM, and sampling in fewer steps
#
# Algorithm 2 needs all $T = 1000$ network calls. Song, Meng and Ermon
# (2020) noticed that the DDPM objective only ever looks at the marginals
# $q(x_t \mid x_0)$, so other processes with the same marginals can be
# sampled with the same trained network, including ones that skip steps.
# Their update (DDIM Eq. 12, written with our $\bar\alpha$) is
#
# $x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t'} - \sigma_t^2}\,\hat\epsilon + \sigma_t z$,
# $\sigma_t(\eta) = \eta\sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}\sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}}$ (Eq. 16),
#
# where $t'$ is the next step of a subsequence $\tau$ and $\hat x_0$ comes
# from $\hat\epsilon$ by Eq. 15. $\eta = 1$ is DDPM; $\eta = 0$ adds no noise
# at all: sampling becomes a deterministic map from $x_T$ to $x_0$.
# As in lessons 06 and 08, the exact denoiser of the eight-Gaussians
# mixture stands in for a trained network, so only the sampler is tested.
#
# Run: `python lessons/09_ddim.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, oracle, samplers, viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("09_ddim", "DDIM (Song et al. 2020) and sampling in fewer steps")
f64 = B.dtype("float64")
T = 1000
diffusion = GaussianDiffusion(make_schedule("linear", T))
alpha_bars = [float(v) for v in B.to_numpy(diffusion.schedule.alpha_bars)]
mixture = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))
exact = oracle.MixtureDenoiser(mixture, diffusion)


def draw(n, seed):
    return data.load("eightgaussians", n=n, seed=seed).x


def ddim_step(x, t, t_next, eps):
    """DDIM Eq. 12 with sigma = 0, from step t to t_next (-1: the end, alpha_bar = 1)."""
    ab, ab_next = alpha_bars[t], (alpha_bars[t_next] if t_next >= 0 else 1.0)
    x0_hat = (x - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)  # Eq. 15
    return math.sqrt(ab_next) * x0_hat + math.sqrt(1.0 - ab_next) * eps


def run_ddim(x, sequence):
    """Deterministic DDIM from x at sequence[0] down to x_0, by hand."""
    for i, t in enumerate(sequence):
        eps = exact(x, xp.full((x.shape[0],), t, dtype=xp.int64))
        x = ddim_step(x, t, sequence[i + 1] if i + 1 < len(sequence) else -1, eps)
    return x


# %% [markdown]
# ## Step 1: the subsequence, and $\eta = 1$ is DDPM's $\tilde\beta_t$
#
# `samplers.timesteps(T, S)` picks the $S$ steps visited. On the full
# sequence ($t' = t - 1$), Eq. 16 with $\eta = 1$ simplifies to
# $\sqrt{\tilde\beta_t}$, the posterior standard deviation of Eq. 7.

# %%
lesson.step(
    "the subsequence tau, and sigma_t(eta = 1) = sqrt(beta~_t)",
    paper=["sigma_t(eta) = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1})   (DDIM Eq. 16)",
           "eta = 1, t' = t - 1:  sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t = beta~_t   (Eq. 7)"],
    code="tinydiff.samplers.timesteps(T, steps, spacing); tinydiff.samplers.ddim(..., eta)",
)
for spacing in ("linspace", "leading", "trailing"):
    steps = samplers.timesteps(T, 10, spacing)
    lesson.value(f"10 steps, {spacing}", str(steps))
lesson.check(samplers.timesteps(T, T) == list(range(T - 1, -1, -1)),
             "with steps = T the sequence is T-1, ..., 0: all of Algorithm 2")
ab = np.array(alpha_bars)
ab_prev = np.concatenate([[1.0], ab[:-1]])
sigma2 = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
lesson.check_close("sigma_t(eta = 1)^2, t = 1..T", sigma2, B.to_numpy(diffusion.schedule.posterior_variance),
                   rtol=1e-9, atol=1e-15, against="beta~_t")

# %% [markdown]
# ## Step 2: DDIM by hand, and DDIM($\eta = 1$) = DDPM
#
# `samplers.ddim` draws $x_T$ and each step's noise the way `samplers.ddpm`
# does (one seed per call, one key per step), so with the same generator
# seed (i) our deterministic loop above reproduces it, and (ii) DDIM with
# $\eta = 1$ on all steps reproduces DDPM with $\sigma_t^2 = \tilde\beta_t$.

# %%
lesson.step(
    "the hand-written loop against samplers.ddim; eta = 1 against samplers.ddpm",
    paper="x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'} - sigma_t^2) eps_hat + sigma_t z   (DDIM Eq. 12)",
    code="tinydiff.samplers.ddim(model, diffusion, shape, rng, steps, eta); tinydiff.samplers.ddpm",
)
shape = (lesson.pick(300, 1000), 2)
sequence = samplers.timesteps(T, 50)
base = lesson.rng(1).next_seed()  # ddim takes exactly this from the generator
x_T = B.default_rng((base, T)).normal(shape, dtype=f64)
by_hand = run_ddim(x_T, sequence)
library = samplers.ddim(exact, diffusion, shape, lesson.rng(1), steps=50, eta=0.0, dtype=f64)
lesson.check_close("samplers.ddim(eta = 0, 50 steps)", library, by_hand, atol=1e-9, against="the loop by hand")
small = GaussianDiffusion(make_schedule("linear", lesson.pick(100, 1000)))
small_exact = oracle.MixtureDenoiser(mixture, small)
as_ddim = samplers.ddim(small_exact, small, shape, lesson.rng(2), steps=small.T, eta=1.0, dtype=f64)
as_ddpm = samplers.ddpm(small_exact, small, shape, lesson.rng(2), variance="beta_tilde", dtype=f64)
lesson.check_close(f"ddim(eta = 1, all {small.T} steps)", as_ddim, as_ddpm, atol=1e-8,
                   against="ddpm(variance = 'beta_tilde')")

# %% [markdown]
# ## Step 3: fewer steps
#
# With the exact denoiser, the only error left is from the step size. We
# sample with $S$ steps and measure the sliced Wasserstein distance to
# fresh data, next to the real-against-real floor (lesson 06). Each step is
# one network call, so 50 steps instead of 1000 is a 20x faster sampler.
# (With the exact denoiser $\eta = 1$ is only a little worse here; the
# paper's gap is for trained networks on images.)

# %%
lesson.step(
    "sample quality against the number of steps",
    paper="DDIM Table 1: with eta = 0, 10x to 50x fewer steps keep most of the sample quality",
    code="tinydiff.samplers.ddim(..., steps=S, eta=0 | 1); tinydiff.metrics.sliced_wasserstein",
)
N = lesson.pick(2000, 5000)
reference = draw(N, 1000 + lesson.seed)
floor = metrics.floor(draw, N)
rows, distances, shown = [], {}, {}
for steps in (5, 10, 20, 50):
    row = [steps]
    for eta in (0.0, 1.0):
        samples = B.to_numpy(samplers.ddim(exact, diffusion, (N, 2), lesson.rng(3), steps=steps, eta=eta))
        distances[steps, eta] = metrics.sliced_wasserstein(samples, reference)
        row.append(distances[steps, eta])
        if eta == 0.0 and steps in (5, 50):
            shown[steps] = samples[:1000]
    rows.append(row + [floor])
lesson.table(["steps", "eta = 0", "eta = 1", "floor"], rows, digits=4)
lesson.check(distances[50, 0.0] < 2 * floor, "DDIM with 50 of 1000 steps samples within twice the floor",
             f"{distances[50, 0.0]:.4f} < 2 x {floor:.4f}")
lesson.check_less("the distance with 50 steps", distances[50, 0.0], "with 5 steps", distances[5, 0.0])
lesson.saved(viz.plot_samples_2d(np.concatenate(list(shown.values())), draw(2000, 5), lesson.path("ddim_steps.png"),
                                 title="DDIM (eta = 0) with 5 and with 50 steps",
                                 labels=np.concatenate([[f"{s:>2} steps"] * len(v) for s, v in shown.items()])))

# %% [markdown]
# ## Step 4: $\eta = 0$ is invertible
#
# Without noise, each DDIM step is a fixed map, and it can be run upwards:
# from $x_0$, step to larger $t$ with the same formula (using the
# prediction at the current point). That *encodes* data into a latent
# $x_T$; decoding it with DDIM gives the data back, with an error that
# shrinks as the steps get smaller. (DDPM's random steps cannot do this.)

# %%
lesson.step(
    "encoding with DDIM run upwards, then decoding",
    paper="eta = 0: x_{t'} = sqrt(abar_{t'}) x0_hat + sqrt(1 - abar_{t'}) eps_hat is deterministic and run either way",
    code="the DDIM step above, upwards then downwards (samplers.timesteps for the sequence)",
)
x0 = B.asarray(draw(lesson.pick(300, 1000), 11), dtype=f64)
errors = {}
for steps in (20, 100):
    sequence = samplers.timesteps(T, steps)  # descending
    x, previous = x0, -1  # -1: x_0 itself (alpha_bar = 1)
    for t in reversed(sequence):  # upwards: encode
        eps = exact(x, xp.full((x.shape[0],), max(previous, 0), dtype=xp.int64))
        ab_now = alpha_bars[previous] if previous >= 0 else 1.0
        x0_hat = x if previous < 0 else (x - math.sqrt(1 - ab_now) * eps) / math.sqrt(ab_now)
        x = math.sqrt(alpha_bars[t]) * x0_hat + math.sqrt(1 - alpha_bars[t]) * eps
        previous = t
    latent = x
    decoded = run_ddim(latent, sequence)
    errors[steps] = float(np.sqrt(np.mean(B.to_numpy(decoded - x0) ** 2)))
    lesson.value(f"{steps} steps: RMS(decode(encode(x_0)) - x_0)", errors[steps],
                 f"(latent std {float(np.std(B.to_numpy(latent))):.3f})")
lesson.check(errors[100] < 0.05, "with 100 steps the round trip returns the data to within 0.05 RMS",
             f"{errors[100]:.4f}")
lesson.check_less("the round-trip error with 100 steps", errors[100], "half that with 20 steps", errors[20] / 2)

lesson.done()
