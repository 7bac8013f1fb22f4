# %% [markdown]
# # Lesson 10: conditioning and classifier-free guidance
#
# To sample a chosen class $c$, give the denoiser the label:
# $\epsilon_\theta(x_t, t, c)$. Ho and Salimans (2022) train *one* network
# for both $\epsilon_\theta(x_t, t, c)$ and the unconditional
# $\epsilon_\theta(x_t, t, \varnothing)$, by replacing the label with a null
# label $\varnothing$ for a fraction $p_\mathrm{uncond}$ of the training
# examples. At sampling time they extrapolate away from the unconditional
# prediction (their Eq. 6):
#
# $\tilde\epsilon_\theta(x_t, c) = (1 + w)\,\epsilon_\theta(x_t, c) - w\,\epsilon_\theta(x_t, \varnothing)$.
#
# $w = 0$ is the plain conditional model; larger $w$ makes samples more
# typical of their class, at the cost of diversity.
#
# The data: eight Gaussians, labelled by component, with a wider spread
# (std 0.5) than the default so that the classes overlap: then "how often
# does a sample land nearest to the centre it asked for" is an informative
# number (about 0.88 for the data itself).
#
# Run: `python lessons/10_guidance.py [--fast] [--step] [--out DIR]`

# %%
import math

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import data, nn, samplers, train, viz
from tinydiff.backend import xp

lesson = _lesson.Lesson("10_guidance", "conditioning and classifier-free guidance (Ho and Salimans 2022)")
STD = 0.5
centers = data.eightgaussians_centers()  # (8, 2)
points, labels = data.eightgaussians(lesson.pick(4000, 20000), np.random.default_rng(lesson.seed), std=STD)
dataset = data.Dataset(x=points, labels=labels, num_classes=8, name="eightgaussians")


def nearest_center(x):
    return np.linalg.norm(x[:, None, :] - centers[None], axis=2).argmin(axis=1)  # (N,)


# %% [markdown]
# ## Step 1: label dropout
#
# During training each label is replaced by the null class (index
# `num_classes`, here 8) with probability $p_\mathrm{uncond}$; the paper
# uses 0.1 to 0.2. The model holds no randomness: the training loop drops
# the labels.

# %%
lesson.step(
    "label dropout: the null class",
    paper="train with c replaced by the null label with probability p_uncond (0.1 to 0.2)   (Ho and Salimans 2022)",
    code="tinydiff.train.drop_labels(y, num_classes, probability, rng); TrainConfig(conditional=True, label_dropout=p)",
)
p_uncond = 0.2
n = lesson.pick(20000, 100000)
y = B.asarray(np.arange(n) % 8)
dropped = B.to_numpy(train.drop_labels(y, 8, p_uncond, lesson.rng(1)))
is_null = dropped == 8
lesson.check_mc("fraction of labels dropped", is_null.mean(), p_uncond, math.sqrt(p_uncond * (1 - p_uncond) / n),
                against="p_uncond =")
lesson.check(np.all(dropped[~is_null] == B.to_numpy(y)[~is_null]), "the labels that are kept are unchanged")

# %% [markdown]
# ## Step 2: the conditional denoiser
#
# `MLPDenoiser(num_classes=8)` adds a learned class embedding (9 rows: the
# 8 classes and the null class) to the timestep embedding. Calling it
# without a label means the null class.

# %%
lesson.step(
    "a class embedding added to the timestep embedding",
    paper="eps_theta(x_t, t, c): one network; eps_theta(x_t, t, null) is the same network with the null label",
    code="tinydiff.nn.MLPDenoiser(num_classes=8); tinydiff.nn.ClassConditioning",
)
width, emb = lesson.pick(64, 128), lesson.pick(32, 64)
probe = nn.MLPDenoiser(width=width, depth=3, emb_dim=emb, num_classes=8, rng=lesson.rng(2))
plain = nn.MLPDenoiser(width=width, depth=3, emb_dim=emb, rng=lesson.rng(2))
lesson.check(probe.num_parameters() - plain.num_parameters() == 9 * emb,
             "the class table adds (num_classes + 1) x emb_dim parameters",
             f"{probe.num_parameters()} - {plain.num_parameters()} = 9 x {emb}")
x = lesson.rng(3).normal((5, 2))
t = B.asarray([0, 100, 200, 300, 999])
lesson.check_close("model(x, t) without a label", probe(x, t).data, probe(x, t, y=xp.full((5,), 8, dtype=xp.int64)).data,
                   atol=0.0, against="model(x, t, y = null)")

# %% [markdown]
# ## Step 3: train with label dropout
#
# The training loop of `tinydiff.train` with `conditional=True` draws the
# labels with each batch and drops them with probability `label_dropout`.

# %%
lesson.step(
    "a short conditional training run",
    paper="Algorithm 1 with (x_0, c) pairs, c dropped to null with probability p_uncond",
    code="tinydiff.train.train(TrainConfig(data='eightgaussians', conditional=True, label_dropout=0.2), dataset=...)",
)
config = train.TrainConfig(data="eightgaussians", conditional=True, label_dropout=p_uncond,
                           steps=lesson.pick(600, 4000), width=width, emb_dim=emb, batch_size=lesson.pick(128, 256),
                           lr=3e-3, warmup=20, seed=lesson.seed, checkpoint_every=10**6, log_every=100)
result = train.train(config, lesson.out / "run", progress=False, log=lambda *_: None, dataset=dataset)
run = train.use_ema_weights(result.run)
losses = [loss for _, loss in result.losses]
lesson.value("loss, first and last 100 steps", f"{np.mean(losses[:100]):.4f} -> {np.mean(losses[-100:]):.4f}")
lesson.check_less("the loss of the last 100 steps", np.mean(losses[-100:]), "that of the first 100",
                  np.mean(losses[:100]))

# %% [markdown]
# ## Step 4: the guided model
#
# `samplers.classifier_free_guidance(model, w)` returns a model with the
# same call, `guided(x, t, y=labels)`, whose output is Eq. 6. Any sampler
# can use it. It costs two network calls per step.

# %%
lesson.step(
    "Eq. 6 of Ho and Salimans",
    paper="eps~(x_t, c) = (1 + w) eps_theta(x_t, c) - w eps_theta(x_t, null)",
    code="tinydiff.samplers.classifier_free_guidance(model, w)",
)
x = lesson.rng(4).normal((8, 2))
t = B.asarray([50] * 8)
c = B.asarray(np.arange(8))
conditional = B.to_numpy(run.model(x, t, y=c).data)
unconditional = B.to_numpy(run.model(x, t).data)
for w in (0.0, 2.0):
    guided = B.to_numpy(samplers.classifier_free_guidance(run.model, w)(x, t, y=c))
    lesson.check_close(f"guided output, w = {w:g}", guided, (1 + w) * conditional - w * unconditional,
                       rtol=1e-5, atol=1e-6, against="(1 + w) eps(x, c) - w eps(x, null) by hand")

# %% [markdown]
# ## Step 5: guidance strength against class fidelity
#
# We ask for each class equally often and count how often a sample lands
# nearest to the centre it asked for. At $w = 0$ the model should behave
# like the data (about 0.88 here, since the classes overlap); guidance
# pushes samples to where their class is unmistakable, so the fraction
# rises, and the samples move outwards, away from the other classes: the
# diversity that guidance trades away.

# %%
lesson.step(
    "the fraction of samples in the requested component rises with w",
    paper="Ho and Salimans 2022: larger w raises sample fidelity to the class (and lowers diversity)",
    code="tinydiff.samplers.ddim(classifier_free_guidance(model, w), ..., model_kwargs={'y': labels})",
)
N = lesson.pick(1600, 8000)
requested = np.arange(N) % 8
data_fraction = float((nearest_center(points) == labels).mean())
rows, fraction, radius = [], {}, {}
for w in (0.0, 1.0, 3.0):
    guided = samplers.classifier_free_guidance(run.model, w)
    samples = B.to_numpy(samplers.ddim(guided, run.diffusion, (N, 2), lesson.rng(5), steps=50,
                                       model_kwargs={"y": B.asarray(requested)}))
    fraction[w] = float((nearest_center(samples) == requested).mean())
    radius[w] = float(np.linalg.norm(samples, axis=1).mean())
    rows.append([w, fraction[w], radius[w]])
    if w in (0.0, 3.0):
        lesson.saved(viz.plot_samples_2d(samples[:800], points[:3000], lesson.path(f"samples_w{w:g}.png"),
                                         title=f"classifier-free guidance, w = {w:g}", labels=requested[:800]))
rows.append(["data", data_fraction, float(np.linalg.norm(points, axis=1).mean())])
lesson.table(["w", "in requested component", "mean radius"], rows, digits=4)
lesson.check(abs(fraction[0.0] - data_fraction) < 0.05,
             "without guidance the model lands in the requested component as often as the data does (within 0.05)",
             f"{fraction[0.0]:.3f} against {data_fraction:.3f}")
lesson.check(fraction[1.0] > fraction[0.0] + 0.05 and fraction[3.0] > fraction[0.0] + 0.05,
             "with w = 1 and w = 3 the fraction rises by more than 0.05",
             f"{fraction[0.0]:.3f} -> {fraction[1.0]:.3f}, {fraction[3.0]:.3f}")
lesson.check_less("the mean radius at w = 0", radius[0.0], "at w = 3 (samples pushed away from other classes)",
                  radius[3.0])

lesson.done()
