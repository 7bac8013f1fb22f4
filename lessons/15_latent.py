# %% [markdown]
# # Lesson 15: latent diffusion
#
# Rombach et al. (2022) moved diffusion out of pixel space. An autoencoder
# is trained first, alone: an encoder $E$ squeezes an image $x$ into a short
# code $z = E(x)$ and a decoder $D$ turns it back, $D(E(x)) \approx x$.
# The diffusion model is then trained on the codes, and a sample is a
# code, decoded once: $x = D(z)$. Every one of the sampler's steps now
# works on a vector of 4 to 32 numbers instead of 64 or 784 pixels, which
# is what makes Stable Diffusion affordable; and a small MLP denoiser is
# at its best on exactly such short vectors.
#
# The price is a floor: a decoded sample can be no closer to the data
# than the data's own reconstructions $D(E(x))$ are. This lesson trains
# both stages (`train.train` with `latent_dim`), looks at the
# reconstructions, at the codes before and after Rombach et al.'s scale
# factor, at diffusion in the latent space, and at decoded samples beside
# the floor.
#
# The data: MNIST with `--data-dir DIR` (or `TINYDIFF_DATA`), otherwise
# the 8x8 digits shipped with tinydiff.
#
# Run: `python lessons/15_latent.py [--fast] [--step] [--out DIR] [--data-dir DIR]`

# %%
import os

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, nn, samplers, train, viz
from tinydiff.autograd import Tensor
from tinydiff.train import latent
from tinydiff.train.run import parameter_count


def options(parser):
    parser.add_argument("--data-dir", default=None,
                        help="folder with the MNIST IDX files (default $TINYDIFF_DATA; without either: the 8x8 digits)")


lesson = _lesson.Lesson("15_latent", "latent diffusion: an autoencoder, its scaled codes, diffusion on them, the floor",
                        add_arguments=options)
data_dir = lesson.args.data_dir or os.environ.get("TINYDIFF_DATA")
name = "mnist" if data_dir else "digits"
if name == "digits":
    dataset = data.load("digits")
    sizes = dict(latent_dim=8, ae_width=128, ae_steps=lesson.pick(400, 3000), steps=lesson.pick(600, 4000),
                 width=lesson.pick(128, 256), batch_size=lesson.pick(64, 128), lr=lesson.pick(2e-3, 1e-3))
else:
    dataset = data.load("mnist", n=lesson.pick(10000, None), seed=lesson.seed, data_dir=data_dir, download=False)
    sizes = dict(latent_dim=32, ae_width=512, ae_steps=lesson.pick(600, 5000), steps=lesson.pick(800, 10000),
                 width=256, batch_size=128, lr=1e-3)
H, W = dataset.image_shape
D = dataset.dim

# %% [markdown]
# ## Step 1: the autoencoder and its KL term
#
# `nn.Autoencoder` is two MLPs. Its encoder gives, for each image, the mean
# $\mu$ and log-variance $\log\sigma^2$ of a Gaussian $q(z \mid x)$: a code is
# drawn as $z = \mu + \sigma \epsilon$ (Kingma and Welling's
# reparameterization), and the loss adds a small multiple of
# $KL(q(z \mid x) \,\|\, N(0, I)) = \frac12 \sum_j (\mu_j^2 + \sigma_j^2 - 1 - \log\sigma_j^2)$,
# Rombach et al.'s "KL-reg", which keeps the codes near a standard normal.
# The closed form is checked against a Monte Carlo estimate of
# $E_q[\log q(z) - \log p(z)]$.

# %%
lesson.step(
    "the autoencoder's KL term",
    paper=["z = mu + sigma * eps, eps ~ N(0, I)   (Kingma and Welling 2014, Sec. 2.4)",
           "KL(q(z|x) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (their Appendix B)"],
    code="tinydiff.nn.Autoencoder, nn.reparameterize, nn.kl_to_standard_normal",
)
f64 = B.dtype("float64")
rng = np.random.default_rng(lesson.seed)
mean, log_variance = rng.normal(size=(1, 6)), rng.normal(size=(1, 6)) - 1.0
kl = float(nn.kl_to_standard_normal(Tensor(B.asarray(mean, dtype=f64)), Tensor(B.asarray(log_variance, dtype=f64))).item())
eps = rng.normal(size=(lesson.pick(20000, 200000), 6))
z = B.to_numpy(nn.reparameterize(Tensor(B.asarray(mean, dtype=f64)), Tensor(B.asarray(log_variance, dtype=f64)),
                                 B.asarray(eps, dtype=f64)).data)
log_ratio = ((-0.5 * eps**2 - 0.5 * log_variance) - (-0.5 * z**2)).sum(axis=1)  # log q(z) - log p(z) per draw
lesson.value("KL, closed form", kl, "nats")
lesson.check_mc("KL", log_ratio.mean(), kl, log_ratio.std() / np.sqrt(len(log_ratio)))

# %% [markdown]
# ## Step 2: two stages in one run
#
# `train.train(TrainConfig(..., latent_dim=d))` first trains the
# autoencoder for `ae_steps` steps (its own loss log,
# `autoencoder-losses.csv`), then encodes the training set once and trains
# the denoiser of Algorithm 1 on the codes, all in one checkpoint. The
# reconstructions show what the decoder can draw; their error is the floor
# of everything that follows. Predicting the mean image for every digit is
# the trivial baseline they must beat by far.

# %%
lesson.step(
    "stage 1: reconstructions D(E(x))",
    paper="min over E, D of E_x ||x - D(z)||^2 + lambda KL(q(z|x) || N(0, I)),  z ~ q(z|x)   (Rombach et al. Sec. 3.1)",
    code="tinydiff.train.train(TrainConfig(latent_dim=...)); train.latent.train_autoencoder, LatentStage.reconstruct",
)
config = train.TrainConfig(data=name, data_dir=data_dir, ae_kl=1e-4, ae_lr=sizes["lr"], warmup=50, T=lesson.pick(200, 1000),
                           emb_dim=64, depth=2, seed=lesson.seed, checkpoint_every=10**6, log_every=50, **sizes)
result = train.train(config, lesson.out / "run", progress=False, log=lambda *_: None, dataset=dataset)
run = train.use_ema_weights(result.run)
stage = run.latent
held_out = dataset.x[-512:]
reconstructions = stage.reconstruct(held_out)
error = latent.reconstruction_error(stage, held_out)
baseline = float(np.mean((held_out - dataset.x.mean(axis=0)) ** 2))
lesson.value("autoencoder", f"{stage.autoencoder.num_parameters():,} parameters, codes of {config.latent_dim} numbers "
             f"for {D} pixels")
lesson.value("reconstruction error (MSE per pixel)", error, f"the mean image scores {baseline:.4f}")
lesson.check_less("the reconstruction error", error, "a third of the mean image's", baseline / 3)
pairs = np.stack([held_out[:8], reconstructions[:8]], axis=1).reshape(16, H, W)  # image, reconstruction, ...
lesson.saved(viz.image_grid(pairs, lesson.path("reconstructions.png"), nrow=8,
                            title="x, D(E(x)) in pairs"))

# %% [markdown]
# ## Step 3: the codes before and after scaling
#
# The noise schedule was designed for data of about unit variance (images
# in $[-1, 1]$, lesson 11): $x_T$ is pure noise only if the signal is not
# much larger than the noise. The raw codes $\mu(x)$ have whatever spread
# the autoencoder gave them. Rombach et al. divide them by their standard
# deviation over the training set, one number $s = 1/\hat\sigma$ kept with
# the model, so the diffusion model sees codes of unit variance.

# %%
lesson.step(
    "the scale factor",
    paper="z <- z / sigma_hat,  sigma_hat^2 = mean over all codes and components of (z - mean z)^2   "
          "(Rombach et al. Sec. 4.3.2)",
    code="tinydiff.train.latent.fit_scale_factor, LatentStage.mean_codes, LatentStage.encode",
)
raw = B.to_numpy(stage.mean_codes(dataset.x)).astype(np.float64)  # (N, latent_dim)
codes = B.to_numpy(stage.encode(dataset.x)).astype(np.float64)
s = stage.autoencoder.scale_factor
lesson.value("scale factor s", s)
lesson.table(["codes", "mean", "std", "smallest std of a component", "largest"],
             [["raw mu(x)", raw.mean(), raw.std(), raw.std(0).min(), raw.std(0).max()],
              ["scaled s mu(x)", codes.mean(), codes.std(), codes.std(0).min(), codes.std(0).max()]])
lesson.check_close("std of the scaled codes", codes.std(), 1.0, atol=1e-5, against="unit variance")
lesson.check_close("s", s, 1 / raw.std(), rtol=1e-6, against="1 / std of the raw codes")
lesson.saved(viz.plot_histogram_1d(raw.reshape(-1), lesson.path("codes_raw.png"), bins=80,
                                   title=f"raw codes mu(x): std {raw.std():.3f}"))
lesson.saved(viz.plot_histogram_1d(codes.reshape(-1), lesson.path("codes_scaled.png"), bins=80,
                                   density_fn=lambda v: np.exp(-0.5 * v**2) / np.sqrt(2 * np.pi),
                                   title="scaled codes s mu(x) against N(0, 1)"))

# %% [markdown]
# ## Step 4: diffusion in the latent space
#
# Stage 2 is Algorithm 1 unchanged, with the codes as $x_0$: the forward
# process takes them to $N(0, I)$, the denoiser learns to undo it, and any
# sampler draws new codes. The codes it draws should be much closer to the
# real codes than noise is (sliced Wasserstein distance, beside the real
# codes' own floor). The saving per step is not only the first and last
# layers, which shrink from the pixels to latent_dim: short vectors of
# unit variance do with a narrower network. Count one step's multiply-adds
# against the denoiser tinydiff trains on these pixels by default.

# %%
lesson.step(
    "stage 2: Algorithm 1 and 2 on the codes",
    paper=["repeat: z_0 = s mu(x), t ~ U{1..T}, eps ~ N(0, I); step on ||target - f_theta(z_t, t)||^2   (Algorithm 1)",
           "z_T ~ N(0, I) -> ... -> z_0 by Algorithm 2; x = D(z_0 / s)"],
    code="tinydiff.train.train (stage 2); samplers.ddpm; LatentStage.decode",
)
n = lesson.pick(512, 2000)
sampled = B.to_numpy(samplers.ddpm(run.model, run.diffusion, (n, config.latent_dim), lesson.rng(2)))
real_codes = codes[-n:]
distance = metrics.sliced_wasserstein(sampled, real_codes)
noise = metrics.sliced_wasserstein(np.random.default_rng(0).normal(size=sampled.shape), real_codes)
floor = metrics.sliced_wasserstein(codes[:n], real_codes)
losses = np.array([v for _, v in result.losses])
lesson.value(f"stage 2 loss, first and last 50 of {config.steps}", f"{losses[:50].mean():.4f} -> {losses[-50:].mean():.4f}")
lesson.value("sliced Wasserstein to the real codes", f"samples {distance:.3f}, N(0, I) {noise:.3f}, real {floor:.3f}")
lesson.check_less("the sampled codes' distance", distance, "half that of N(0, I) noise", noise / 2)
per_step = parameter_count(run.config, config.latent_dim)  # about one multiply-add per weight and sample
pixel_config = train.TrainConfig(data=name).resolved(True)  # the pixel-space default: residual MLP, width 1024
in_pixels = parameter_count(pixel_config, D)
lesson.value("multiply-adds per sample and step", f"{per_step:,} on the codes (width {run.config.width}), "
             f"{in_pixels:,} on the pixels (width {pixel_config.width})")
lesson.check_less("a latent step's multiply-adds", per_step, "a fifth of a pixel step's", in_pixels / 5)

# %% [markdown]
# ## Step 5: decoded samples, and the floor
#
# A sample is decoded once, $x = D(z / s)$, clipped to $[-1, 1]$. In pixel
# space it is compared with held-out images beside two references: noise
# pushed through the decoder (what an untrained diffusion model would
# give) and the reconstructions $D(E(x))$ of real images, the floor no
# latent sample can beat, since every decoded sample lies in the
# decoder's range.

# %%
lesson.step(
    "decoded samples against the floor",
    paper="x = D(z_0 / s)  (Rombach et al. Sec. 3): d(D(z_0), x) >= d(D(E(x)), x) is the autoencoder's floor",
    code="tinydiff.train.latent.LatentStage.decode, reconstruct; tinydiff.metrics.sliced_wasserstein",
)
images = stage.decode(sampled)
reference = dataset.x[-n:]
rows = [["decoded samples", metrics.sliced_wasserstein(images, reference)],
        ["decoded N(0, I) codes", metrics.sliced_wasserstein(stage.decode(np.random.default_rng(1).normal(
            size=sampled.shape)), reference)],
        ["reconstructions D(E(x)): the floor", metrics.sliced_wasserstein(stage.reconstruct(dataset.x[:n]), reference)],
        ["real images", metrics.sliced_wasserstein(dataset.x[:n], reference)]]
lesson.table(["images", "sliced Wasserstein to held-out images"], rows)
lesson.check_less("the decoded samples' distance", rows[0][1], "that of decoded noise", rows[1][1])
lesson.check(rows[2][1] <= 1.1 * rows[0][1], "the floor (reconstructions) is no farther than the samples",
             f"{rows[2][1]:.4f} against {rows[0][1]:.4f}")
lesson.saved(viz.image_grid(images[:64].reshape(64, H, W), lesson.path("samples.png"), nrow=8,
                            title=f"{name}: decoded latent samples ({config.latent_dim} numbers each)"))

lesson.done()
