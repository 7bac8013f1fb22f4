# %% [markdown]
# # Lesson 07: what the network predicts: eps, x0 or v
#
# Given $x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon$ (Eq. 9),
# knowing any one of $\epsilon$, $x_0$ or
# $v = \sqrt{\bar\alpha_t}\epsilon - \sqrt{1-\bar\alpha_t}x_0$ (Salimans and Ho 2022)
# determines the other two. So a network may predict any of them: Ho et al.
# predict $\epsilon$ (Eq. 11) and note that predicting $x_0$ worked worse;
# $v$ stays well defined where $\epsilon$ does not (zero terminal SNR).
# The choice changes how errors at different $t$ are weighted in the loss,
# and nothing else.
#
# Write $a_t = \sqrt{\bar\alpha_t}$, $s_t = \sqrt{1 - \bar\alpha_t}$,
# $\mathrm{SNR}_t = a_t^2 / s_t^2$.
#
# Run: `python lessons/07_parameterizations.py [--fast] [--step] [--out DIR]`

# %%

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, oracle, samplers, train, viz
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("07_parameterizations", "parameterizations: predicting eps, x0 or v")
f64 = B.dtype("float64")
T = 1000
schedule = make_schedule("linear", T)
by_type = {kind: GaussianDiffusion(schedule, prediction_type=kind) for kind in ("eps", "x0", "v")}
diffusion = by_type["eps"]
rng = lesson.rng(1)
n = 256
x0 = B.asarray(data.load("eightgaussians", n=n, seed=lesson.seed).x, dtype=f64)
t = rng.integers(0, T, (n,))
eps = rng.normal((n, 2), dtype=f64)
x_t = diffusion.q_sample(x0, t, eps)
a = xp.reshape(xp.take(schedule.sqrt_alpha_bars, t), (n, 1))  # (N, 1)
s = xp.reshape(xp.take(schedule.sqrt_one_minus_alpha_bars, t), (n, 1))

# %% [markdown]
# ## Step 1: converting between eps, x0 and v
#
# $\hat x_0 = (x_t - s_t\epsilon)/a_t$ (Eq. 15), $\epsilon = (x_t - a_t x_0)/s_t$,
# and for $v$: $x_0 = a_t x_t - s_t v$, $\epsilon = s_t x_t + a_t v$
# (using $a_t^2 + s_t^2 = 1$). Every conversion must return the true
# values it started from.

# %%
lesson.step(
    "eps, x0 and v determine each other",
    paper=["x0 = (x_t - s_t eps) / a_t   (Eq. 15);   eps = (x_t - a_t x0) / s_t   (Eq. 9)",
           "v = a_t eps - s_t x0;  x0 = a_t x_t - s_t v;  eps = s_t x_t + a_t v   (Salimans and Ho 2022)"],
    code="GaussianDiffusion.predict_x0_from_eps, predict_eps_from_x0, v_target, predict_x0_from_v, predict_eps_from_v",
)
v = diffusion.v_target(x0, eps, t)
lesson.check_close("v_target", v, a * eps - s * x0, atol=1e-12, against="a eps - s x0")
lesson.check_close("x0 from eps (Eq. 15)", diffusion.predict_x0_from_eps(x_t, t, eps), x0, atol=1e-9,
                   against="the true x0")
lesson.check_close("eps from x0", diffusion.predict_eps_from_x0(x_t, t, x0), eps, atol=1e-9, against="the true eps")
lesson.check_close("x0 from v", diffusion.predict_x0_from_v(x_t, t, v), x0, atol=1e-12, against="the true x0")
lesson.check_close("eps from v", diffusion.predict_eps_from_v(x_t, t, v), eps, atol=1e-12, against="the true eps")

# %% [markdown]
# ## Step 2: one optimum, three ways to write it
#
# The best network under the squared loss predicts a conditional mean:
# $\mathbb E[\epsilon \mid x_t]$, $\mathbb E[x_0 \mid x_t]$ or $\mathbb E[v \mid x_t]$.
# Since the conversions are linear, these are the same function written
# three ways, and they give the same reverse step. The exact denoiser of
# the eight-Gaussians mixture shows it.

# %%
lesson.step(
    "the exact denoiser in three parameterizations gives one reverse step",
    paper="E[x0 | x_t] = (x_t - s_t E[eps | x_t]) / a_t, and mu_theta = mu~_t(x_t, E[x0 | x_t])",
    code="tinydiff.oracle.MixtureDenoiser(mixture, diffusion, prediction_type); GaussianDiffusion.p_mean_variance",
)
mixture = oracle.GaussianMixture(np.ones(8), data.eightgaussians_centers(), np.full(8, data.EIGHT_GAUSSIANS_STD**2))
means = {}
for kind, d in by_type.items():
    output = oracle.MixtureDenoiser(mixture, d)(x_t, t)
    means[kind] = d.p_mean_variance(output, x_t, t).mean
lesson.check_close("reverse mean from the x0 oracle", means["x0"], means["eps"], rtol=1e-7, atol=1e-9,
                   against="from the eps oracle")
lesson.check_close("reverse mean from the v oracle", means["v"], means["eps"], rtol=1e-7, atol=1e-9,
                   against="from the eps oracle")

# %% [markdown]
# ## Step 3: the same error, weighted three ways
#
# If the predicted noise is off by $\delta$, the implied $x_0$ is off by
# $-(s_t/a_t)\delta$ and the implied $v$ by $\delta/a_t$. So
# $\|x_0 - \hat x_0\|^2 = \|\epsilon - \hat\epsilon\|^2/\mathrm{SNR}_t$ and
# $\|v - \hat v\|^2 = \|\epsilon - \hat\epsilon\|^2 (\mathrm{SNR}_t + 1)/\mathrm{SNR}_t$:
# the three losses are Eq. 14 with different weights over $t$. Min-SNR
# weighting (Hang et al. 2023) is one weighting, $\min(\mathrm{SNR}_t, \gamma)$
# on the $x_0$ error, written for each target.

# %%
lesson.step(
    "a prediction error seen as eps, x0 and v errors",
    paper=["|x0 - x0_hat|^2 = |eps - eps_hat|^2 / SNR_t;  |v - v_hat|^2 = |eps - eps_hat|^2 (SNR_t + 1) / SNR_t",
           "min-SNR: min(SNR, 5) / SNR (eps), min(SNR, 5) (x0), min(SNR, 5) / (SNR + 1) (v)"],
    code="GaussianDiffusion.split_prediction; GaussianDiffusion(loss_weighting='min_snr').loss_weights",
)
eps_hat = eps + 0.1 * rng.normal((n, 2), dtype=f64)
_, x0_hat = diffusion.split_prediction(eps_hat, x_t, t)
v_hat = diffusion.v_target(x0_hat, eps_hat, t)  # v of the implied pair
eps_err = xp.sum((eps - eps_hat) ** 2, axis=1)
snr = xp.take(schedule.snr, t)
lesson.check_close("|x0 - x0_hat|^2", xp.sum((x0 - x0_hat) ** 2, axis=1), eps_err / snr, rtol=1e-7, atol=1e-12,
                   against="|eps - eps_hat|^2 / SNR")
lesson.check_close("|v - v_hat|^2", xp.sum((v - v_hat) ** 2, axis=1), eps_err * (snr + 1) / snr, rtol=1e-7,
                   atol=1e-12, against="|eps - eps_hat|^2 (SNR + 1) / SNR")
factor = {"eps": xp.ones_like(snr), "x0": 1 / snr, "v": (snr + 1) / snr}  # each loss per unit of |eps error|^2
effective = {kind: GaussianDiffusion(schedule, prediction_type=kind, loss_weighting="min_snr").loss_weights(t, f64)
             * factor[kind] for kind in factor}
lesson.check_close("min-SNR weight on the eps error, x0 target", effective["x0"], effective["eps"], rtol=1e-9,
                   against="eps target")
lesson.check_close("min-SNR weight on the eps error, v target", effective["v"], effective["eps"], rtol=1e-9,
                   against="eps target")

# %% [markdown]
# ## Step 4: where eps fails: zero terminal SNR
#
# With $\bar\alpha_T = 0$ (lesson 01), $x_T$ holds no data at all:
# $\epsilon = x_T$ exactly, and $x_0$ from $\epsilon$ divides by
# $a_T = 0$. Predicting $v = -x_0$ there is still well defined, so the
# reverse step stays finite.

# %%
lesson.step(
    "at zero terminal SNR only x0 and v predictions define the first reverse step",
    paper="abar_T = 0: x0_hat = (x_T - s_T eps_hat) / a_T divides by 0; with v, x0_hat = a_T x_T - s_T v_hat = -v_hat",
    code="make_schedule(..., zero_terminal_snr=True); GaussianDiffusion(prediction_type='v').p_mean_variance",
)
zero = make_schedule("linear", T, zero_terminal_snr=True)
try:
    GaussianDiffusion(zero, prediction_type="eps")
    refusal = ""
except ValueError as error:
    refusal = str(error)
lesson.check("eps" in refusal and "v" in refusal,
             "GaussianDiffusion refuses eps-prediction where alpha_bar_T = 0, and says to use v or x0", refusal)
# The reason, from the schedule itself: x_0 from eps (Eq. 15) divides by sqrt(alpha_bar_T) = 0.
recip = B.to_numpy(zero.sqrt_recip_alpha_bars)[T - 1]
lesson.value("1 / sqrt(alpha_bar_T), the factor of x_t in Eq. 15", recip)
lesson.check(not np.isfinite(recip), "the eps-parameterized step is not finite at t = T")
zero_v = GaussianDiffusion(zero, prediction_type="v")
x_T = rng.normal((8, 2), dtype=f64)
output = rng.normal((8, 2), dtype=f64)
v_step = zero_v.p_mean_variance(output, x_T, T - 1)
lesson.value("first reverse mean, v model", v_step.mean[0])
lesson.check_close("x0_hat from v at t = T", v_step.x0, -output, atol=1e-12, against="-v_hat")

# %% [markdown]
# ## Step 5: train all three
#
# The same small MLP, trained briefly on eight Gaussians with each target
# (`TrainConfig(prediction=...)`), then sampled with 50 DDIM steps
# (lesson 09). All three move far from noise towards the data. Look at
# the picture too: after this short run the $x_0$ model's samples sit on a
# thin ring through the clusters, the averaging of a regression to
# $\mathbb E[x_0 \mid x_t]$ that is not yet sharp, which is the kind of
# result that made Ho et al. prefer predicting $\epsilon$.

# %%
lesson.step(
    "a short training run per parameterization",
    paper="L = E || target - network(x_t, t) ||^2 with target eps, x0 or v",
    code="tinydiff.train.train(TrainConfig(prediction='eps' | 'x0' | 'v')); tinydiff.samplers.ddim",
)
N = lesson.pick(1000, 3000)
reference = data.load("eightgaussians", n=N, seed=1000 + lesson.seed).x
noise_distance = metrics.sliced_wasserstein(np.random.default_rng(0).normal(size=(N, 2)), reference)
rows, pooled, names = [], [], []
for kind in ("eps", "x0", "v"):
    config = train.TrainConfig(data="eightgaussians", n_data=lesson.pick(4000, 20000), prediction=kind,
                               schedule="linear",  # the paper's schedule, where all three are defined throughout
                               steps=lesson.pick(800, 4000), width=lesson.pick(64, 128), emb_dim=lesson.pick(32, 64),
                               batch_size=lesson.pick(128, 256), lr=3e-3, warmup=20, seed=lesson.seed,
                               checkpoint_every=10**6, log_every=100)
    result = train.train(config, lesson.out / f"run_{kind}", progress=False, log=lambda *_: None)
    run = train.use_ema_weights(result.run)
    samples = B.to_numpy(samplers.ddim(run.model, run.diffusion, (N, 2), lesson.rng(2), steps=50))
    distance = metrics.sliced_wasserstein(samples, reference)
    rows.append([kind, float(np.mean([value for _, value in result.losses[-50:]])), distance])
    pooled.append(samples[:600])
    names += [kind] * len(samples[:600])
lesson.table(["target", "final loss", "sliced W. to data"], rows)
lesson.value("sliced Wasserstein of N(0, I) noise", noise_distance)
for kind, _, distance in rows:
    lesson.check_less(f"{kind}: distance of the samples", distance, "a third of N(0, I) noise's", noise_distance / 3)
lesson.saved(viz.plot_samples_2d(np.concatenate(pooled), reference, lesson.path("samples_by_target.png"),
                                 title="DDIM samples, one model per target", labels=np.array(names)))

lesson.done()
