# %% [markdown]
# # Lesson 11: images, end to end
#
# Everything so far, on images: load digits scaled to $[-1, 1]$ (Sec. 4),
# watch the forward process destroy them, train a denoiser with
# Algorithm 1, and sample a grid with Algorithm 2 (lesson 06).
#
# The data: MNIST when you point the lesson at its files
# (`--data-dir DIR` or the environment variable `TINYDIFF_DATA`; nothing is
# downloaded), otherwise the 1,797 8x8 digits shipped inside tinydiff
# (UCI, CC BY 4.0), which train in seconds on a laptop. The denoiser is the
# residual MLP of lesson 04, not the paper's U-Net, so expect recognisable
# blobs after a short run, not the paper's samples.
#
# Run: `python lessons/11_mnist.py [--fast] [--step] [--out DIR] [--data-dir DIR]`

# %%
import math
import os

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, metrics, samplers, train, viz


def options(parser):
    parser.add_argument("--data-dir", default=None,
                        help="folder with the MNIST IDX files (default $TINYDIFF_DATA; without either: the 8x8 digits)")


lesson = _lesson.Lesson("11_mnist", "images end to end: data, forward strip, training, a sample grid",
                        add_arguments=options)
data_dir = lesson.args.data_dir or os.environ.get("TINYDIFF_DATA")
name = "mnist" if data_dir else "digits"

# %% [markdown]
# ## Step 1: the data
#
# Pixels are integers (0..255 for MNIST, 0..16 for the digits) mapped
# linearly to $[-1, 1]$: the scale at which $x_T \sim \mathcal N(0, I)$ is
# reached at the signal-to-noise ratio the schedule was designed for.
# Images come flattened to vectors of length $D = H W$.

# %%
lesson.step(
    f"the {name} images",
    paper="Sec. 4: image data are integers in {0, ..., 255} scaled linearly to [-1, 1]",
    code=f"tinydiff.data.load({name!r}{', data_dir=..., download=False' if data_dir else ''})",
)
if data_dir:
    dataset = data.load("mnist", n=lesson.pick(10000, None), seed=lesson.seed, data_dir=data_dir, download=False)
else:
    dataset = data.load("digits")
H, W = dataset.image_shape
D = dataset.dim
lesson.value("images, shape of x", f"{len(dataset)} images of {H}x{W}, x {dataset.x.shape} {dataset.x.dtype}")
lesson.check(dataset.x.min() == -1.0 and dataset.x.max() == 1.0, "pixels span exactly [-1, 1]",
             f"min {dataset.x.min()}, max {dataset.x.max()}")
lesson.check(D == H * W and set(np.unique(dataset.labels)) == set(range(10)),
             "images are flattened to D = H W, and every digit 0-9 is present")

# %% [markdown]
# ## Step 2: the forward strip
#
# $x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon$ (Eq. 4, 9)
# for a few images and a few $t$. Regressing the noisy pixels on the clean
# ones recovers the signal coefficient $\sqrt{\bar\alpha_t}$.

# %%
lesson.step(
    "the forward process on images",
    paper="x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (Eq. 4, 9): the slope of x_t on x_0 is sqrt(abar_t)",
    code="tinydiff.diffusion.GaussianDiffusion.q_sample; tinydiff.viz.plot_forward_images",
)
# The run's size by data set. MNIST's 784 pixels need a bigger network and far more steps than a
# lesson spends (examples/train_mnist.py draws clean digits in about 20 minutes), so its bars are lower.
if name == "digits":
    size = dict(width=lesson.pick(128, 256), steps=lesson.pick(300, 2000), lr=lesson.pick(2e-3, 1e-3))
    loss_bar, sample_bar = 0.5, 0.5  # final loss below; sample distance below sample_bar x noise's
else:
    size = dict(width=lesson.pick(256, 512), steps=lesson.pick(500, 3000), lr=2e-3)
    loss_bar, sample_bar = 0.8, 1.0
config = train.TrainConfig(data=name, data_dir=data_dir, model="resmlp", depth=lesson.pick(1, 2),
                           emb_dim=lesson.pick(32, 64), batch_size=128, warmup=20, T=lesson.pick(200, 1000),
                           seed=lesson.seed, checkpoint_every=10**6, log_every=50, **size).resolved()
diffusion = train.build_diffusion(config)
alpha_bars = B.to_numpy(diffusion.schedule.alpha_bars)
rng = lesson.rng(1)
x0 = dataset.x[:512]  # (512, D)
rows, strip = [], [(0, x0[:6].reshape(6, H, W))]
T = config.T
for t in (T // 20 - 1, T // 10 - 1, T // 4 - 1, T // 2 - 1, T - 1):  # code t: paper t = T/20, T/10, T/4, T/2, T
    x_t = B.to_numpy(diffusion.q_sample(B.asarray(x0), t, rng.normal(x0.shape)))
    strip.append((t + 1, x_t[:6].reshape(6, H, W)))  # (6, H, W)
    centred = x0 - x0.mean()
    slope = float((centred * (x_t - x_t.mean())).sum() / (centred**2).sum())
    se = math.sqrt((1 - alpha_bars[t]) / (centred**2).sum())
    rows.append((t + 1, slope, math.sqrt(alpha_bars[t]), se))
lesson.table(["paper t", "slope of x_t on x_0", "sqrt(abar_t)", "SE"], rows)
for t_paper, slope, exact, se in rows:
    lesson.check_mc(f"signal coefficient at t = {t_paper}", slope, exact, se, against="sqrt(abar_t) =")
lesson.saved(viz.plot_forward_images(strip, lesson.path("forward.png"), title=f"{name}: q(x_t | x_0)"))

# %% [markdown]
# ## Step 3: train briefly
#
# Algorithm 1 through `tinydiff.train` (checkpoint and loss log in the
# `--out` folder). The loss of predicting $\hat\epsilon = 0$ is 1. A short
# run on the 8x8 digits gets to about 0.2. MNIST's 784 pixels take a bigger
# network far longer: a fast run stays near 0.75 and its samples are
# only a little closer to the data than noise; `examples/train_mnist.py`
# (v-prediction, cosine schedule, a wide network, about 20 minutes) draws
# clean digits.

# %%
lesson.step(
    "Algorithm 1 on images",
    paper="repeat: x_0 ~ data, t ~ Uniform{1..T}, eps ~ N(0, I); step on ||eps - eps_theta(x_t, t)||^2",
    code=f"tinydiff.train.train(TrainConfig(data={name!r}, model='resmlp', ...)); tinydiff.nn.ResMLPDenoiser",
)
result = train.train(config, lesson.out / "run", progress=False, log=lambda *_: None, dataset=dataset)
run = train.use_ema_weights(result.run)
steps, losses = np.array([s for s, _ in result.losses]), np.array([value for _, value in result.losses])
lesson.value("denoiser", f"{type(run.model).__name__}, {run.model.num_parameters():,} parameters")
lesson.value(f"loss, first and last 50 of {config.steps} steps",
             f"{losses[:50].mean():.4f} -> {losses[-50:].mean():.4f}  ({result.seconds:.1f} s)")
lesson.check(losses[-50:].mean() < loss_bar,
             f"the loss ends below {loss_bar} (predicting eps = 0 scores 1)", f"{losses[-50:].mean():.4f}")
lesson.saved(viz.plot_loss(steps, losses, lesson.path("loss.png"), title=f"L_simple on {name}"))

# %% [markdown]
# ## Step 4: a grid of samples
#
# Algorithm 2 with all $T$ steps ($T = 200$ in fast mode, where the
# linear schedule is rescaled as in lesson 01, and 1000 otherwise); the predicted $x_0$ is clipped to $[-1, 1]$ at each step, as the original
# DDPM code does for images. The samples should be much closer to the data
# than noise is (sliced Wasserstein distance, with the real-against-real
# floor for scale).

# %%
lesson.step(
    "sampling a grid",
    paper="Algorithm 2 from x_T ~ N(0, I), x0_hat clipped to [-1, 1]",
    code="tinydiff.samplers.ddpm(..., clip_x0=True); tinydiff.viz.image_grid",
)
n = 64
samples = B.to_numpy(samplers.ddpm(run.model, run.diffusion, (n * 4, D), lesson.rng(2), clip_x0=True))
reference = dataset.x[-1000:]
distance = metrics.sliced_wasserstein(samples, reference)
noise = metrics.sliced_wasserstein(np.random.default_rng(0).normal(size=samples.shape), reference)
floor = metrics.sliced_wasserstein(dataset.x[: len(samples)], reference)
lesson.value("sliced Wasserstein to the data", f"samples {distance:.3f}, N(0, I) {noise:.3f}, real data {floor:.3f}")
lesson.check(np.all(np.isfinite(samples)), "every sample is finite")
lesson.check_less("the samples' distance to the data", distance, f"{sample_bar:g} x that of N(0, I) noise",
                  sample_bar * noise)
lesson.saved(viz.image_grid(samples[:n].reshape(n, H, W), lesson.path("samples.png"), nrow=8,
                            title=f"{name}: samples after {config.steps} steps"))

lesson.done()
