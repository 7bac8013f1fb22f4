# %% [markdown]
# # Lesson 12: the GPU switch
#
# Every formula in tinydiff's core (autograd, nn, optim, schedules,
# diffusion, samplers, oracle) is written against `xp`, a proxy to the
# current array namespace, using only functions the Python array API
# standard defines. So one switch moves the same code between
#
# - `numpy`: the CPU, the default;
# - `cupy`: an NVIDIA GPU, the same arrays on the device;
# - `array_api_strict`: a namespace that refuses anything outside the
#   standard. The tests run the core under it, which is how they know,
#   without a GPU, that nothing NumPy-only slipped in.
#
# Switch in code with `backend.set_backend(name)` (or the context manager
# `backend.using(name)`), or for a whole run with the environment variable
# `TINYDIFF_BACKEND=cupy`. Switch before building a model: arrays of two
# namespaces do not mix.
#
# Run: `python lessons/12_gpu.py [--fast] [--step] [--out DIR]`

# %%
import importlib.util
import os
import subprocess
import sys
import time

import _lesson
import numpy as np

from tinydiff import backend as B
from tinydiff import nn, optim
from tinydiff.backend import xp
from tinydiff.diffusion import GaussianDiffusion
from tinydiff.schedules import make_schedule

lesson = _lesson.Lesson("12_gpu", "the GPU switch: numpy, array_api_strict and cupy run the same code")
gpu = B.gpu_available()
# array_api_strict comes with the test extra (pip install -e '.[test]'); the lesson runs without it too.
strict = importlib.util.find_spec("array_api_strict") is not None
names = ["numpy"] + (["array_api_strict"] if strict else []) + (["cupy"] if gpu else [])
other = names[1] if len(names) > 1 else None  # a second backend to switch to, if any
initial = B.get_backend()  # numpy, unless TINYDIFF_BACKEND chose another: every switch below comes back to it

# %% [markdown]
# ## Step 1: the switch
#
# `xp` is bound once (`from tinydiff.backend import xp`) and follows every
# later switch. Under `array_api_strict` a NumPy-only function such as
# `cumprod` does not exist (the standard's name is `cumulative_prod`), and
# arrays have no `.astype` method: code that runs there uses only the
# standard.

# %%
lesson.step(
    "set_backend, using, and the xp proxy",
    paper="(no equation: the same Eq. 4 and Algorithm 1 code runs on every namespace)",
    code="tinydiff.backend.set_backend(name), using(name), get_backend(), gpu_available(), xp; TINYDIFF_BACKEND",
)
lesson.value("backends tinydiff knows", ", ".join(B.BACKENDS))
lesson.value("current backend, GPU available", f"{B.get_backend()}, {gpu}")
lesson.value("backends in this run", ", ".join(names))
if strict:
    with B.using("array_api_strict"):
        strict_array = xp.asarray([1.0, 2.0])
        lesson.value("inside using('array_api_strict')",
                     f"{B.get_backend()}: {type(strict_array).__module__}, xp = {xp!r}")
        lesson.check(type(strict_array).__module__.startswith("array_api_strict"),
                     "xp.asarray makes an array_api_strict array inside the block")
        lesson.check_raises(AttributeError, lambda: xp.cumprod, "array_api_strict has no NumPy-only xp.cumprod")
    lesson.check(B.get_backend() == initial, f"leaving the block restores {initial}")
else:
    lesson.say("""array_api_strict is not installed (pip install array-api-strict, or the test
    extra): the strict namespace is left out of this run.""")
if other:
    path = os.pathsep.join(p for p in (_lesson.ROOT, os.environ.get("PYTHONPATH")) if p)
    environment = dict(os.environ, TINYDIFF_BACKEND=other, PYTHONPATH=path)
    child = subprocess.run([sys.executable, "-c", "import tinydiff.backend as B; print(B.get_backend())"],
                           capture_output=True, text=True, env=environment, check=True)
    lesson.check(child.stdout.strip() == other, f"TINYDIFF_BACKEND={other} selects the backend at import",
                 f"child process: {child.stdout.strip()}")
if not gpu:
    lesson.check_raises(B.BackendError, lambda: B.set_backend("cupy"),
                        "asking for cupy here fails with a message saying why")
    lesson.check(B.get_backend() == initial, f"a refused switch leaves {initial} in place")

# %% [markdown]
# ## Step 2: the same forward process on every backend
#
# The same host data and noise, moved into each namespace, go through
# `q_sample` (Eq. 4, 9). The results, brought back with
# `backend.to_numpy`, must agree to float32 rounding.

# %%
lesson.step(
    "q_sample under each backend",
    paper="x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps   (Eq. 4, 9)",
    code="tinydiff.diffusion.GaussianDiffusion.q_sample; tinydiff.backend.asarray, to_numpy",
)
host = np.random.default_rng(lesson.seed)
N, D, T = lesson.pick(256, 4096), 2, 1000
x0_host = host.normal(size=(N, D)).astype(np.float32)
eps_host = host.normal(size=(N, D)).astype(np.float32)
t_host = host.integers(0, T, size=N)


def forward(name):
    with B.using(name):
        diffusion = GaussianDiffusion(make_schedule("linear", T))
        x_t = diffusion.q_sample(B.asarray(x0_host), B.asarray(t_host), B.asarray(eps_host))
        return B.to_numpy(x_t)


results = {name: forward(name) for name in names}
for name in names[1:]:
    lesson.check_close(f"q_sample under {name}", results[name], results["numpy"], atol=1e-6, against="under numpy")
if len(names) == 1:
    lesson.check(np.all(np.isfinite(results["numpy"])), "q_sample under numpy is finite (no other backend here)")

# %% [markdown]
# ## Step 3: one training step on every backend
#
# A denoiser built once on the host (its weights copied into each
# namespace with `load_state_dict`), one batch, one loss (Algorithm 1 with
# fixed $t$ and $\epsilon$), one backward pass, one Adam step. Loss and
# updated weights must agree. (Each backend's own random generator would
# also do: numpy and array_api_strict draw the same numbers from one seed,
# cupy draws its own on the device.)

# %%
lesson.step(
    "a training step under each backend",
    paper="Algorithm 1: gradient step on || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2",
    code="GaussianDiffusion.training_loss(model, x0, rng, t=..., noise=...); Tensor.backward; optim.Adam.step",
)
width = lesson.pick(64, 256)
weights = nn.MLPDenoiser(data_dim=D, width=width, depth=3, emb_dim=32, rng=B.default_rng(lesson.seed)).state_dict()
weights = {k: B.to_numpy(v).copy() for k, v in weights.items()}


def train_step(name):
    with B.using(name):
        model = nn.MLPDenoiser(data_dim=D, width=width, depth=3, emb_dim=32).load_state_dict(weights)
        diffusion = GaussianDiffusion(make_schedule("linear", T))
        opt = optim.Adam(model.parameters(), lr=1e-3)
        loss = diffusion.training_loss(model, B.asarray(x0_host), None, t=B.asarray(t_host),
                                       noise=B.asarray(eps_host))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item(), {k: B.to_numpy(v) for k, v in model.state_dict().items()}


steps = {name: train_step(name) for name in names}
for name in names[1:]:
    lesson.check_close(f"loss under {name}", steps[name][0], steps["numpy"][0], rtol=1e-5, against="under numpy")
    worst = max(float(np.abs(steps[name][1][k] - steps["numpy"][1][k]).max()) for k in weights)
    lesson.check(worst < 1e-5, f"every weight after one Adam step under {name} matches numpy",
                 f"max |difference| {worst:.2g}")
lesson.check(B.get_backend() == initial, f"{initial} is the backend again after the comparisons")

# %% [markdown]
# ## Step 4: on a GPU
#
# With CuPy and a GPU present, the comparisons above already included
# `cupy`; here we also time a few training steps of an image-sized
# denoiser on each. On a GPU the same code runs unchanged; small models
# gain little (each operation launches a kernel), wide ones a lot. Without
# a GPU this step only says so.

# %%
lesson.step(
    "timing on the GPU (when there is one)",
    paper="(no equation)",
    code="TINYDIFF_BACKEND=cupy python -m tinydiff train ...; tinydiff.backend.synchronize()",
)
if gpu:
    big = dict(data_dim=784, width=lesson.pick(512, 1024), blocks=2)
    batch = host.normal(size=(256, 784)).astype(np.float32)
    timings = {}
    for name in ("numpy", "cupy"):
        with B.using(name):
            model = nn.ResMLPDenoiser(**big, rng=B.default_rng(0))
            diffusion = GaussianDiffusion(make_schedule("linear", T))
            opt = optim.Adam(model.parameters(), lr=1e-4)
            rng = B.default_rng(1)
            x = B.asarray(batch)
            for step in range(lesson.pick(3, 10) + 2):  # the first two warm up (kernel compilation)
                if step == 2:
                    B.synchronize()
                    began = time.perf_counter()
                loss = diffusion.training_loss(model, x, rng)
                opt.zero_grad()
                loss.backward()
                opt.step()
            B.synchronize()
            timings[name] = (time.perf_counter() - began) / lesson.pick(3, 10)
    lesson.value("seconds per step (ResMLP, batch 256)", f"numpy {timings['numpy']:.4f}, cupy {timings['cupy']:.4f}")
    lesson.check(np.isfinite(timings["cupy"]) and B.get_backend() == initial,
                 f"the GPU run finished and {initial} is restored")
else:
    lesson.say("""No GPU here (backend.gpu_available() is False): the cupy comparison was skipped.
    On a machine with an NVIDIA GPU, pip install -e '.[gpu]' and run this lesson again.""")
    lesson.check(B.get_backend() == initial, f"{initial} is the backend at the end")

lesson.done()
