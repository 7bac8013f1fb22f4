# %% [markdown]
# # Lesson 08: the variational bound and bits per dimension
#
# A diffusion model is a latent-variable model, and Ho et al. 2020 train it
# (in principle) by the usual variational bound on the negative log
# likelihood (Eq. 3), which splits into one term per step (Eq. 5):
#
# $L = \underbrace{\mathrm{KL}(q(x_T \mid x_0) \,\|\, p(x_T))}_{L_T}
#    + \sum_{t>1} \underbrace{\mathrm{KL}(q(x_{t-1} \mid x_t, x_0) \,\|\, p_\theta(x_{t-1} \mid x_t))}_{L_{t-1}}
#    \underbrace{- \log p_\theta(x_0 \mid x_1)}_{L_0}$.
#
# Every KL is between Gaussians, so it has a closed form; $L_0$ is the
# decoder, discretized for images (Eq. 13). Reported in bits per dimension,
# $L / (D \ln 2)$, it is the NLL column of Table 1 (3.75 bits/dim on CIFAR-10).
#
# Run: `python lessons/08_bound.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, oracle, viz
from tinydiff.diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("08_bound", "the variational bound (Eq. 3, 5, 13) and bits per dimension")
f64 = B.dtype("float64")
rng = lesson.rng(1)


def phi(z):
    """The standard normal CDF, from math.erf."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


# %% [markdown]
# ## Step 1: the KL between two Gaussians
#
# $\mathrm{KL}(\mathcal N(m_1, s_1^2) \,\|\, \mathcal N(m_2, s_2^2)) = \log\frac{s_2}{s_1} + \frac{s_1^2 + (m_1 - m_2)^2}{2 s_2^2} - \frac12$,
# checked against its definition $\mathbb E_{x \sim q}[\log q(x) - \log p(x)]$
# by Monte Carlo.

# %%
lesson.step(
    "the Gaussian KL",
    paper="KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2",
    code="tinydiff.diffusion.normal_kl(mean1, logvar1, mean2, logvar2)",
)
m1, s1, m2, s2 = 0.3, 0.5, -0.2, 0.8
closed = float(normal_kl(B.asarray(m1, dtype=f64), B.asarray(math.log(s1**2), dtype=f64),
                         B.asarray(m2, dtype=f64), B.asarray(math.log(s2**2), dtype=f64)))
N = lesson.pick(20000, 200000)
x = m1 + s1 * np.random.default_rng(lesson.seed).normal(size=N)
log_ratio = (-np.log(s1) - (x - m1) ** 2 / (2 * s1**2)) - (-np.log(s2) - (x - m2) ** 2 / (2 * s2**2))
lesson.check_close("normal_kl", closed, math.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5,
                   rtol=1e-12, against="the formula typed out")
lesson.check_mc("KL", log_ratio.mean(), closed, log_ratio.std(ddof=1) / math.sqrt(N),
                against="normal_kl")

# %% [markdown]
# ## Step 2: $L_T$, the prior term
#
# $q(x_T \mid x_0) = \mathcal N(\sqrt{\bar\alpha_T}x_0, (1 - \bar\alpha_T)I)$
# against $p(x_T) = \mathcal N(0, I)$. It has no parameters (the paper
# fixes the betas, Sec. 3.1), and for the linear schedule it is tiny: the
# forward process really ends at noise.

# %%
lesson.step(
    "L_T = KL(q(x_T | x_0) || N(0, I))",
    paper="L_T = KL(q(x_T | x_0) || p(x_T)) with q(x_T | x_0) = N(sqrt(abar_T) x_0, (1 - abar_T) I)   (Eq. 5)",
    code="tinydiff.diffusion.GaussianDiffusion.prior_kl(x0)",
)
diffusion = GaussianDiffusion(make_schedule("linear", 1000))
ab_T = float(diffusion.schedule.alpha_bars[-1])
x0 = B.asarray(data.load("eightgaussians", n=8, seed=lesson.seed).x, dtype=f64)
by_hand = np.sum(0.5 * (-math.log(1 - ab_T) + (1 - ab_T) + ab_T * B.to_numpy(x0) ** 2 - 1), axis=1)
prior = diffusion.prior_kl(x0)
lesson.check_close("prior_kl for 8 points", prior, by_hand, rtol=1e-9, against="the Gaussian KL by hand")
lesson.value("L_T in nats (largest of the 8)", float(np.max(B.to_numpy(prior))))

# %% [markdown]
# ## Step 3: $L_0$, the discretized decoder (Eq. 13)
#
# Images have 256 levels scaled to $[-1, 1]$, so a pixel's likelihood is
# the Gaussian's mass on its bin, $[x - 1/255, x + 1/255]$, with the edge
# bins stretched to $\pm\infty$. Then the 256 probabilities of a pixel sum
# to exactly 1: a proper discrete distribution, whose $-\log$ is a true
# code length in nats.

# %%
lesson.step(
    "the discretized decoder is a distribution over 256 levels",
    paper=["p(x_0 | x_1) = prod_i integral over [delta-(x_0^i), delta+(x_0^i)] of N(x; mu^i, sigma_1^2)   (Eq. 13)",
           "delta+(x) = inf if x = 1 else x + 1/255;  delta-(x) = -inf if x = -1 else x - 1/255"],
    code="tinydiff.diffusion.discretized_gaussian_log_likelihood(x, mean, log_scale)",
)
levels = np.arange(256) / 255.0 * 2.0 - 1.0  # the 256 pixel values in [-1, 1]
rows = []
for mean, scale in ((0.1, 0.05), (-0.93, 0.01), (0.999, 0.3), (0.0, 2.0)):
    log_p = discretized_gaussian_log_likelihood(B.asarray(levels, dtype=f64), B.asarray(mean, dtype=f64),
                                                B.asarray(math.log(scale), dtype=f64))
    total = float(np.exp(B.to_numpy(log_p)).sum())
    k = min(max(int(np.argmin(np.abs(levels - mean - 0.02))), 1), 254)  # an inner bin near the mean
    inner = phi((levels[k] + 1 / 255 - mean) / scale) - phi((levels[k] - 1 / 255 - mean) / scale)
    rows.append((mean, scale, total, float(np.exp(B.to_numpy(log_p)[k])), inner))
lesson.table(["mean", "sigma", "sum over 256 bins", "p(inner bin near mean)", "CDF difference"], rows, digits=8)
for mean, scale, total, p_bin, inner in rows:
    lesson.check_close(f"sum of the 256 bin masses (mean {mean}, sigma {scale})", total, 1.0, atol=1e-6,
                       against="exactly")
    lesson.check_close(f"mass of one inner bin (mean {mean}, sigma {scale})", p_bin, inner, rtol=1e-5,
                       against="Phi(upper) - Phi(lower) from math.erf")

# %% [markdown]
# ## Step 4: the whole bound, with the exact denoiser
#
# For data from a known density the bound can be compared with the truth.
# The eight-Gaussians mixture has an exact log density and an exact
# denoiser (`tinydiff.oracle`). The bound is an upper bound on average:
# $\mathbb E[L] \ge \mathbb E[-\log p_\theta(x_0)] \ge \mathbb E[-\log q(x_0)]$,
# and with the best possible denoiser and many steps it should be close.
# These are continuous points, so $L_0$ uses a Gaussian density (which can
# exceed 1, so $L_0$ may be negative); both use $\sigma_t^2 = \beta_t$.
# The bound is estimated with one $x_t$ per example and step.

# %%
lesson.step(
    "E[L] >= E[-log q(x_0)], tight for the exact denoiser",
    paper=["E[-log p_theta(x_0)] <= E_q[ L_T + sum_{t>1} L_{t-1} + L_0 ] = L   (Eq. 3, 5)",
           "bits per dimension = L / (D ln 2)"],
    code="GaussianDiffusion.vlb(model, x0, rng, decoder='gaussian'); tinydiff.oracle.true_nll",
)
T = lesson.pick(200, 1000)
diffusion = GaussianDiffusion(make_schedule("linear", T))
mixture = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))
exact = oracle.MixtureDenoiser(mixture, diffusion)
n = lesson.pick(1000, 2000)
x0 = B.asarray(data.load("eightgaussians", n=n, seed=lesson.seed).x, dtype=f64)
bound = diffusion.vlb(exact, x0, rng, decoder="gaussian", variance="beta")
total, nll = B.to_numpy(bound["total"]), B.to_numpy(oracle.true_nll(mixture, x0))
gap = total - nll
se = gap.std(ddof=1) / math.sqrt(n)
terms = B.to_numpy(bound["terms"]).mean(axis=0)  # (T,): L_0, L_1, ..., L_{T-1}
lesson.table(["L_T", "sum of L_{t-1}", "L_0", "L (nats)", "-log q(x_0) (nats)"],
             [[float(B.to_numpy(bound["prior"]).mean()), terms[1:].sum(), terms[0], total.mean(), nll.mean()]])
lesson.check(gap.mean() > -4 * se, "the bound is not below the true NLL (within 4 standard errors)",
             f"E[L] - E[-log q] = {gap.mean():.4f}, SE {se:.4f}")
lesson.check(gap.mean() < 0.25, "with the exact denoiser the bound is within 0.25 nats of the true NLL",
             f"gap {gap.mean():.4f} nats per point")
bits = B.to_numpy(bound["bits_per_dim"])
lesson.check_close("bits per dimension", bits, total / (2 * math.log(2)), rtol=1e-6, against="L / (D ln 2)")
lesson.value("bound in bits per dimension", bits.mean())
lesson.saved(viz.plot_vlb_terms(terms, lesson.path("bound_terms.png"),
                                prior=float(B.to_numpy(bound["prior"]).mean())))

# %% [markdown]
# ## Step 5: the reverse variance and the bound
#
# With $\sigma_t^2 = \tilde\beta_t$ the same exact means give a looser
# bound here: near $t = 1$ the data's clusters (std 0.2) are wide compared
# with the noise, so locally the data look Gaussian, the case where
# $\beta_t$ is the right variance (lesson 06, Step 3). Ho et al. found
# $\tilde\beta_t$'s bound worse as well, and Improved DDPM learns $\sigma_t$
# to get the best of both.

# %%
lesson.step(
    "sigma_t^2 = beta_t against beta~_t in the bound",
    paper="L_{t-1} = KL(N(mu~_t, beta~_t) || N(mu_theta, sigma_t^2)): depends on sigma_t^2 through log and ratio",
    code="GaussianDiffusion.vlb(..., variance='beta' | 'beta_tilde')",
)
tilde = diffusion.vlb(exact, x0, lesson.rng(1), decoder="gaussian", variance="beta_tilde")
total_tilde = B.to_numpy(tilde["total"])
lesson.value("E[L] with beta, beta~ (nats)", f"{total.mean():.4f}, {total_tilde.mean():.4f}")
lesson.check_less("the bound with beta_t", total.mean(), "the bound with beta~_t", total_tilde.mean())
lesson.say(f"""For scale: Table 1's 3.75 bits/dim on a 32x32x3 CIFAR-10 image is
{3.75 * 3072 * math.log(2):.0f} nats per image.""")

lesson.done()
