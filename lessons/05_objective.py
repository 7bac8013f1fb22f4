# %% [markdown]
# # Lesson 05: the training objective
#
# The reverse step is $p_\theta(x_{t-1} \mid x_t) = \mathcal N(\mu_\theta(x_t, t), \sigma_t^2 I)$.
# Its term of the bound, $L_{t-1} = \mathrm{KL}(q(x_{t-1} \mid x_t, x_0) \,\|\, p_\theta(x_{t-1} \mid x_t))$,
# is a squared distance between means (Eq. 8). Writing $\mu_\theta$ with a
# predicted noise (Eq. 11) turns it into a weighted noise-prediction error
# (Ho et al. 2020, Eq. 12):
#
# $L_{t-1} - C = \mathbb E\Big[\frac{\beta_t^2}{2\sigma_t^2\alpha_t(1-\bar\alpha_t)}\|\epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon, t)\|^2\Big]$.
#
# The paper then drops the weight (Eq. 14, $L_\mathrm{simple}$) and trains
# with Algorithm 1. This lesson checks Eq. 12 against the KL it came from,
# shows what dropping the weight does, and trains a small model.
#
# Run: `python lessons/05_objective.py [--fast] [--step] [--out DIR]`

# %%
import inspect
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, nn, optim, oracle, train, viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion, normal_kl
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("05_objective", "the objective: Eq. 12 against Eq. 14, and Algorithm 1")
f64 = B.dtype("float64")
T = 1000
schedule = make_schedule("linear", T)
simple = GaussianDiffusion(schedule)  # Eq. 14, eps-prediction
betas = B.to_numpy(schedule.betas)
alphas = 1.0 - betas
alpha_bars = B.to_numpy(schedule.alpha_bars)
posterior_variance = B.to_numpy(schedule.posterior_variance)
model = nn.MLPDenoiser(data_dim=2, width=lesson.pick(64, 128), depth=3, emb_dim=lesson.pick(32, 64),
                       rng=lesson.rng(1))
dataset = data.load("eightgaussians", n=lesson.pick(4000, 20000), seed=lesson.seed)

# %% [markdown]
# ## Step 1: Algorithm 1, one loss by hand
#
# Draw $x_0$, $t \sim \mathrm{Uniform}\{1..T\}$ and $\epsilon \sim \mathcal N(0, I)$;
# form $x_t$ by Eq. 9; the loss is $\|\epsilon - \epsilon_\theta(x_t, t)\|^2$,
# averaged (tinydiff averages over the dimensions as well, so that a model
# predicting 0 scores exactly 1 in expectation).

# %%
lesson.step(
    "Algorithm 1: one batch's loss",
    paper=["t ~ Uniform{1..T}, eps ~ N(0, I), x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps",
           "L_simple = E || eps - eps_theta(x_t, t) ||^2   (Eq. 14, Algorithm 1)"],
    code="tinydiff.diffusion.GaussianDiffusion.training_loss(model, x0, rng, t=..., noise=...)",
)
rng = lesson.rng(2)
x0 = B.asarray(dataset.x[:256])
t = rng.integers(0, T, (256,))
eps = rng.normal((256, 2))
t_host = B.to_numpy(t)
x_t = (B.to_numpy(x0) * np.sqrt(alpha_bars[t_host])[:, None]
       + B.to_numpy(eps) * np.sqrt(1 - alpha_bars[t_host])[:, None])  # Eq. 9, by hand
prediction = B.to_numpy(model(B.asarray(x_t.astype(np.float32)), t))
by_hand = float(((B.to_numpy(eps) - prediction) ** 2).mean())
loss = simple.training_loss(model, x0, rng, t=t, noise=eps)
lesson.check_close("training_loss", loss.item(), by_hand, rtol=1e-5, against="the mean of (eps - eps_theta)^2 by hand")
# eps^2 has mean 1 and variance 2, so the mean of 512 values has standard error sqrt(2 / 512).
lesson.check_mc("loss of the model that predicts 0", float((B.to_numpy(eps) ** 2).mean()), 1.0,
                math.sqrt(2 / (256 * 2)), against="E|eps|^2 / D =")

# %% [markdown]
# ## Step 2: the weights of Eq. 12
#
# With $\sigma_t^2 = \beta_t$ the weight is $\beta_t / (2\alpha_t(1-\bar\alpha_t))$;
# with $\sigma_t^2 = \tilde\beta_t$ it is larger. Either way it is largest
# at small $t$, where predicting the noise of an almost clean point is
# easy, and about fifty times smaller in the middle of the chain. Eq. 14 sets every weight to 1,
# which shifts the training effort to the harder, larger $t$ (Sec. 3.4).

# %%
lesson.step(
    "the weights of Eq. 12",
    paper="lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t))   (Eq. 12);  Eq. 14: lambda_t = 1",
    code="GaussianDiffusion(schedule, loss_weighting='vlb', variance='beta' | 'beta_tilde').loss_weights(t)",
)
all_t = B.asarray(np.arange(T))
rows = {}
for variance, sigma2 in (("beta", betas), ("beta_tilde", posterior_variance)):
    weighted = GaussianDiffusion(schedule, loss_weighting="vlb", variance=variance)
    got = B.to_numpy(weighted.loss_weights(all_t, dtype=f64))
    with np.errstate(divide="ignore"):
        expected = betas**2 / (2 * sigma2 * alphas * (1 - alpha_bars))
    rows[variance] = got
    lesson.check_close(f"Eq. 12 weights, sigma^2 = {variance}, t = 2..T", got[1:], expected[1:], rtol=1e-10,
                       against="beta^2 / (2 sigma^2 alpha (1 - abar))")
lesson.table(["paper t", "lambda_t (sigma^2 = beta)", "lambda_t (sigma^2 = beta~)", "Eq. 14"],
             [[t + 1, rows["beta"][t], rows["beta_tilde"][t], 1] for t in (1, 9, 99, 499, 999)])
spread = rows["beta"][1] / rows["beta"][499]
lesson.check(spread > 10, "Eq. 12 weighs t = 2 more than ten times as much as t = 500 (Eq. 14: equally)",
             f"lambda_2 / lambda_500 = {spread:.0f}")

# %% [markdown]
# ## Step 3: Eq. 12 is the KL term, exactly
#
# For any network output, the KL between the posterior of Eq. 7 and the
# model's step with mean Eq. 11 equals the weighted squared error plus a
# constant that does not depend on $\theta$:
# $C_t = \frac{D}{2}\big(\log\frac{\sigma_t^2}{\tilde\beta_t} + \frac{\tilde\beta_t}{\sigma_t^2} - 1\big)$.
# We compute the KL with the Gaussian KL formula and compare, per example.

# %%
lesson.step(
    "Eq. 12 equals L_{t-1} of Eq. 5 up to a constant",
    paper=["L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) = lambda_t ||eps - eps_theta||^2 + C_t",
           "KL(N(m1, s1^2) || N(m2, s2^2)) = log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2"],
    code="GaussianDiffusion.vlb_terms (normal_kl of q_posterior and p_mean_variance) against loss_weights",
)
weighted = GaussianDiffusion(schedule, loss_weighting="vlb", variance="beta")
n = 64
x0_64 = B.asarray(dataset.x[:n], dtype=f64)
t = rng.integers(1, T, (n,))  # code t >= 1: the KL terms (t = 0 is the decoder L_0)
eps = rng.normal((n, 2), dtype=f64)
x_t = weighted.q_sample(x0_64, t, eps)
eps_theta = eps + 0.3 * rng.normal((n, 2), dtype=f64)  # any prediction will do: a noisy one
kl = B.to_numpy(weighted.vlb_terms(eps_theta, x0_64, x_t, t, variance="beta"))
tt = B.to_numpy(t)
D = 2  # data dimensions
constant = D / 2 * (np.log(betas[tt] / posterior_variance[tt]) + posterior_variance[tt] / betas[tt] - 1)
squared = B.to_numpy(xp.sum((eps - eps_theta) ** 2, axis=1))
lesson.check_close("KL L_{t-1} for 64 random (x_0, t, eps)", kl,
                   rows["beta"][tt] * squared + constant, rtol=1e-8, atol=1e-12,
                   against="lambda_t |eps - eps_theta|^2 + C_t")
# The same KL from the Gaussian KL formula and the two means, by hand:
q_mean, _, q_log_var = weighted.q_posterior(x0_64, x_t, t)
p = weighted.p_mean_variance(eps_theta, x_t, t, variance="beta")
by_formula = B.to_numpy(xp.sum(normal_kl(q_mean, q_log_var, p.mean, p.log_variance), axis=1))
lesson.check_close("the same KL", kl, by_formula, rtol=1e-10, against="normal_kl(mu~, beta~, mu_theta, sigma^2)")

# %% [markdown]
# ## Step 4: train with Algorithm 1, and compare with the best possible denoiser
#
# The eight-Gaussians data is a Gaussian mixture, so the best possible
# $\epsilon_\theta$, the posterior mean $\mathbb E[\epsilon \mid x_t]$, is
# known in closed form (`tinydiff.oracle`). Its loss is the floor no network
# can go below (the noise that $x_t$ does not reveal); training must move
# the network from the loss of predicting 0 (which is 1) towards that floor.

# %%
lesson.step(
    "Algorithm 1 in a loop, against the oracle's floor",
    paper="repeat: x_0 ~ q(x_0), t ~ Uniform, eps ~ N(0, I); gradient step on ||eps - eps_theta(x_t, t)||^2",
    code="tinydiff.train.train_step (GaussianDiffusion.training_loss, Tensor.backward, optim.Adam); "
         "tinydiff.oracle.MixtureDenoiser",
)
# One step of training is `train.train_step`: the learning rate, the loss of
# Algorithm 1 (it draws t and eps), zero_grad, backward, clipping, the Adam
# step and the EMA, in ten lines. Here it is, as the training loop runs it:
print(inspect.getsource(train.train_step))
steps, batch = lesson.pick(400, 3000), lesson.pick(128, 256)
config = train.TrainConfig(data="eightgaussians", steps=steps, batch_size=batch, lr=2e-3, warmup=0,
                           cosine=False, grad_clip=0.0, ema=0.0).resolved()  # a flat rate, no clipping, no EMA
run = train.Run(config, model, simple, optim.Adam(model.parameters(), lr=config.lr), None, rng)
data_x = B.asarray(dataset.x)
history = []
for _ in range(steps):
    index = rng.integers(0, data_x.shape[0], (batch,))  # Algorithm 1, line 2: x_0 ~ q(x_0)
    loss = train.train_step(run, xp.take(data_x, index, axis=0))  # lines 3-5: t, eps, one gradient step
    history.append(float(loss))
mixture = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))
best = oracle.MixtureDenoiser(mixture, simple)
probe_t = [9, 49, 99, 199, 299, 499, 799]  # code t
x_probe = B.asarray(dataset.x[: lesson.pick(2000, 5000)])
report = oracle.distance_to_oracle(model, best, simple, x_probe, lesson.rng(9), probe_t)
lesson.table(["paper t", "model loss", "oracle loss (floor)", "distance to oracle"],
             [[t + 1, m, o, d] for t, m, o, d in zip(report["t"], report["model_loss"], report["oracle_loss"],
                                                     report["distance"])])
first, last = float(np.mean(history[:50])), float(np.mean(history[-50:]))
lesson.value(f"mean loss, first and last 50 of {steps} steps", f"{first:.4f} -> {last:.4f}")
lesson.check_less("the loss after training", last, "the loss of the first steps", first)
model_mean, oracle_mean = np.mean(report["model_loss"]), np.mean(report["oracle_loss"])
lesson.check(oracle_mean <= model_mean + 0.02,
             "the trained network does not beat the exact denoiser (the floor holds)",
             f"model {model_mean:.4f}, oracle {oracle_mean:.4f}")
lesson.check(model_mean - oracle_mean < 0.5 * (1.0 - oracle_mean),
             "training closed more than half the gap between predicting 0 (loss 1) and the floor",
             f"gap left {model_mean - oracle_mean:.4f} of {1.0 - oracle_mean:.4f}")
lesson.saved(viz.plot_loss(np.arange(1, steps + 1), history, lesson.path("loss.png"),
                           title="L_simple (Eq. 14) during Algorithm 1"))

lesson.done()
