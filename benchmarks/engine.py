"""Training-step speed of tinydiff against hand-written NumPy (and PyTorch on the CPU).

One DDPM training step (Algorithm 1 of Ho et al. 2020) on each side:

    x_0 ~ a fixed pool of data, t ~ Uniform{0..999}, eps ~ N(0, I)
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps        Eq. 4
    loss = mean((eps - eps_theta(x_t, t))^2)                        Eq. 14
    backward, one Adam step

- tinydiff: tinydiff.nn denoiser, tinydiff.autograd.mse, tinydiff.optim.Adam.
- hand-written: the same networks in plain NumPy with a hand-derived
  backward and a chunked flat Adam (benchmarks/handwritten.py): the yardstick
  of what NumPy itself can do, so hand/tiny is the engine's overhead.
- torch (only if ``import torch`` works; never a dependency): the same
  networks in PyTorch on the CPU, with every core.

The sides run alternately in the same process (rounds of K steps each, the
order rotated every round) so a busy neighbour on a shared machine slows all
of them alike; the table reports the median steps/s over the rounds. Before
timing, each configuration checks once that the sides compute the same
thing from the same weights and batch (loss, every gradient, the
parameters after two Adam steps) and prints OK or FAIL. Each side's minor
page faults per step are counted too: fresh allocations that the allocator
has just handed back to the system cost tinydiff more than its Python
overhead does (see benchmarks/README.md).

    python benchmarks/engine.py              # the default run, about 2 minutes on 2 cores
    python benchmarks/engine.py --quick      # smoke test, under 30 s
    python benchmarks/engine.py --configs resmlp128 --rounds 9
    python benchmarks/engine.py --default-malloc   # without tinydiff's malloc setting (page faults)
    python benchmarks/engine.py --profile --configs mlp256   # cProfile of both steps
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from handwritten import FlatAdam, HandMLP, HandResMLP  # noqa: E402

from tinydiff import autograd as A  # noqa: E402
from tinydiff import backend as B  # noqa: E402
from tinydiff import nn, optim  # noqa: E402

F32 = np.float32
T = 1000  # diffusion steps
LR = 1e-3
SEED = 0


class Config:
    def __init__(self, key, label, kind, batch, data_dim, pool):
        self.key, self.label, self.kind = key, label, kind
        self.batch, self.data_dim, self.pool = batch, data_dim, pool


CONFIGS = {
    "mlp256": Config("mlp256", "2D MLP, batch 256", "mlp", 256, 2, 10_000),
    "mlp1024": Config("mlp1024", "2D MLP, batch 1024", "mlp", 1024, 2, 10_000),
    "resmlp128": Config("resmlp128", "ResMLP 784, batch 128", "resmlp", 128, 784, 2_048),
}


# ---------------------------------------------------------------------------
# Data: a fixed pool, the linear schedule of Ho et al. Sec. 4, q_sample (Eq. 4)
# ---------------------------------------------------------------------------


def schedule_tables():
    """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) for betas linear from 1e-4 to 0.02."""
    betas = np.linspace(1e-4, 0.02, T, dtype=np.float64)
    alpha_bar = np.cumprod(1.0 - betas)
    return np.sqrt(alpha_bar).astype(F32), np.sqrt(1.0 - alpha_bar).astype(F32)


def data_pool(config):
    """Random points in [-1, 1]^D standing in for 2D toy data or flattened images."""
    rng = np.random.default_rng(1234)
    return rng.uniform(-1.0, 1.0, size=(config.pool, config.data_dim)).astype(F32)


class NumpyBatches:
    """Draws (x_t, t, eps) for one training step; tinydiff and hand-written share this code."""

    def __init__(self, config, seed=SEED):
        self.pool = data_pool(config)
        self.n, self.d = config.batch, config.data_dim
        self.sqrt_alpha_bar, self.sqrt_one_minus = schedule_tables()
        self.rng = np.random.default_rng(seed)

    def draw(self):
        rng, n = self.rng, self.n
        x0 = np.take(self.pool, rng.integers(0, self.pool.shape[0], n), axis=0)  # (N, D)
        t = rng.integers(0, T, n)  # int64, 0-indexed
        noise = rng.standard_normal((n, self.d), dtype=F32)
        x_t = self.sqrt_alpha_bar[t][:, None] * x0  # Eq. 4, coefficients (N, 1)
        x_t += self.sqrt_one_minus[t][:, None] * noise
        return x_t, t, noise


# ---------------------------------------------------------------------------
# The three sides
# ---------------------------------------------------------------------------


def tinydiff_model(config):
    rng = B.default_rng(SEED)
    if config.kind == "mlp":
        return nn.MLPDenoiser(data_dim=config.data_dim, rng=rng)
    return nn.ResMLPDenoiser(data_dim=config.data_dim, rng=rng)


def initial_state(config):
    """The weights every side starts from: a tinydiff model's, as host arrays."""
    return {name: np.array(B.to_numpy(a), copy=True) for name, a in tinydiff_model(config).state_dict().items()}


class TinydiffSide:
    name = "tinydiff"

    def __init__(self, config, state):
        self.model = tinydiff_model(config)
        self.model.load_state_dict(state)
        # One ParameterVector, as train() makes (a tinydiff from before it, timed by cputime.py
        # --against, has none: its optimizer gathered the parameters into a flat vector itself).
        vector = getattr(optim, "ParameterVector", None)
        params = vector(self.model.parameters()) if vector else self.model.parameters()
        self.optimizer = optim.Adam(params, lr=LR)
        self.batches = NumpyBatches(config)

    def loss_and_grad(self, x_t, t, noise):
        self.optimizer.zero_grad()
        loss = A.mse(self.model(x_t, t), noise)
        loss.backward()
        return loss

    def grads(self):
        return {name: B.to_numpy(p.grad) for name, p in self.model.named_parameters()}

    def params(self):
        return {name: B.to_numpy(p.data) for name, p in self.model.named_parameters()}

    def step(self):
        self.loss_and_grad(*self.batches.draw())
        self.optimizer.step()


class HandSide:
    name = "hand-written"

    def __init__(self, config, state):
        cls = HandMLP if config.kind == "mlp" else HandResMLP
        self.model = cls(state, data_dim=config.data_dim)
        self.optimizer = FlatAdam(self.model.params, lr=LR)
        self.batches = NumpyBatches(config)

    def loss_and_grad(self, x_t, t, noise):
        return self.model.loss_and_grad(x_t, t, noise)

    def grads(self):
        return dict(self.model.params.grad)

    def params(self):
        return dict(self.model.params.value)

    def step(self):
        self.model.loss_and_grad(*self.batches.draw())
        self.optimizer.step()


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_models(torch):
    """The two denoisers in PyTorch, parameter names as in tinydiff's state_dict."""
    F = torch.nn.functional

    def frequencies(emb_dim):
        half = emb_dim // 2
        return torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / half))

    class MLP(torch.nn.Module):
        def __init__(self, data_dim=2, width=128, depth=3, emb_dim=128):
            super().__init__()
            self.hidden = torch.nn.ModuleList(
                [torch.nn.Linear(data_dim + emb_dim if i == 0 else width, width) for i in range(depth)]
            )
            self.out = torch.nn.Linear(width, data_dim)
            self.register_buffer("frequencies", frequencies(emb_dim), persistent=False)

        def forward(self, x, t):
            angles = t[:, None].float() * self.frequencies
            h = torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=1)
            for layer in self.hidden:
                h = F.gelu(layer(h), approximate="tanh")
            return self.out(h)

        def forward_one_t(self, x, t):
            """One int t for every row, as tinydiff's samplers call MLPDenoiser: the first
            layer split by columns, the embedding's part computed for one row."""
            angles = torch.full((1, 1), float(t)) * self.frequencies
            emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (1, emb_dim)
            first, d = self.hidden[0], x.shape[1]
            row_bias = F.linear(emb, first.weight[:, d:], first.bias)[0]  # (width,)
            h = F.gelu(F.linear(x, first.weight[:, :d], row_bias), approximate="tanh")
            for layer in self.hidden[1:]:
                h = F.gelu(layer(h), approximate="tanh")
            return self.out(h)

    class Block(torch.nn.Module):
        def __init__(self, width, cond_dim):
            super().__init__()
            self.norm = torch.nn.LayerNorm(width, eps=1e-5)
            self.fc1 = torch.nn.Linear(width, width)
            self.cond = torch.nn.Linear(cond_dim, width)
            self.fc2 = torch.nn.Linear(width, width)

        def forward(self, h, cond):
            z = self.fc1(F.silu(self.norm(h))) + self.cond(cond)
            return h + self.fc2(F.silu(z))

    class ResMLP(torch.nn.Module):
        def __init__(self, data_dim=784, width=1024, blocks=2, emb_dim=128, cond_dim=256):
            super().__init__()
            self.time_in = torch.nn.Linear(emb_dim, cond_dim)
            self.time_out = torch.nn.Linear(cond_dim, cond_dim)
            self.inp = torch.nn.Linear(data_dim, width)
            self.blocks = torch.nn.ModuleList([Block(width, cond_dim) for _ in range(blocks)])
            self.norm_out = torch.nn.LayerNorm(width, eps=1e-5)
            self.out = torch.nn.Linear(width, data_dim)
            self.register_buffer("frequencies", frequencies(emb_dim), persistent=False)

        def forward(self, x, t):
            angles = t[:, None].float() * self.frequencies
            emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
            cond = F.silu(self.time_out(F.silu(self.time_in(emb))))
            h = self.inp(x)
            for block in self.blocks:
                h = block(h, cond)
            return self.out(F.silu(self.norm_out(h)))

    return MLP, ResMLP


def torch_adam(torch, params):
    """PyTorch's fastest CPU Adam: fused where this version has it, else the default."""
    try:
        return torch.optim.Adam(params, lr=LR, fused=True), "fused"
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=LR), "default"


class TorchSide:
    name = "torch"

    def __init__(self, config, state, torch):
        self.torch = torch
        MLP, ResMLP = torch_models(torch)
        self.model = MLP(data_dim=config.data_dim) if config.kind == "mlp" else ResMLP(data_dim=config.data_dim)
        self.model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()})
        self.optimizer, self.adam_kind = torch_adam(torch, self.model.parameters())
        self.pool = torch.from_numpy(data_pool(config))
        sqrt_alpha_bar, sqrt_one_minus = schedule_tables()
        self.sqrt_alpha_bar = torch.from_numpy(sqrt_alpha_bar)
        self.sqrt_one_minus = torch.from_numpy(sqrt_one_minus)
        self.n, self.d = config.batch, config.data_dim
        self.generator = torch.Generator().manual_seed(SEED)

    def loss_and_grad(self, x_t, t, noise):
        torch = self.torch
        x_t, t, noise = (torch.from_numpy(np.asarray(a)) for a in (x_t, t, noise))
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.model(x_t, t), noise)
        loss.backward()
        return loss.detach().numpy()

    def grads(self):
        return {k: p.grad.numpy() for k, p in self.model.named_parameters()}

    def params(self):
        return {k: p.detach().numpy() for k, p in self.model.named_parameters()}

    def step(self):
        torch, g, n = self.torch, self.generator, self.n
        x0 = self.pool[torch.randint(0, self.pool.shape[0], (n,), generator=g)]
        t = torch.randint(0, T, (n,), generator=g)
        noise = torch.randn(n, self.d, generator=g)
        x_t = self.sqrt_alpha_bar[t][:, None] * x0 + self.sqrt_one_minus[t][:, None] * noise
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.model(x_t, t), noise)
        loss.backward()
        self.optimizer.step()


# ---------------------------------------------------------------------------
# Correctness check, timing, profile
# ---------------------------------------------------------------------------


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(b)
    return np.linalg.norm(a - b) / scale if scale > 0 else np.linalg.norm(a - b)


def check(config, state, reference, other, tolerance=1e-4):
    """Same weights and batches: loss, every gradient and the parameters after two Adam steps.

    Relative errors are norms per parameter, ||other - ref|| / ||ref||. The
    parameters are compared by their change from the start (the updates), so
    the test does not pass just because lr is small. Returns True for OK.
    """
    batches = NumpyBatches(config, seed=SEED + 1)
    first = batches.draw()
    loss_err = _rel(other.loss_and_grad(*first), np.asarray(reference.loss_and_grad(*first).data))
    ref_grads, grads = reference.grads(), other.grads()
    grad_errs = {name: _rel(grads[name], g) for name, g in ref_grads.items()}
    reference.optimizer.step()
    other.optimizer.step()
    second = batches.draw()
    reference.loss_and_grad(*second)
    other.loss_and_grad(*second)
    reference.optimizer.step()
    other.optimizer.step()
    ref_params, params = reference.params(), other.params()
    update_errs = {name: _rel(params[name] - state[name], p - state[name]) for name, p in ref_params.items()}
    worst_grad = max(grad_errs, key=grad_errs.get)
    worst_update = max(update_errs, key=update_errs.get)
    ok = (loss_err <= tolerance and grad_errs[worst_grad] <= tolerance
          and update_errs[worst_update] <= 10 * tolerance)
    print(f"  check {other.name} vs tinydiff: loss {loss_err:.1e}, worst gradient {grad_errs[worst_grad]:.1e} "
          f"({worst_grad}), worst 2-step update {update_errs[worst_update]:.1e} ({worst_update}): "
          f"{'OK' if ok else 'FAIL'}", flush=True)
    return ok


def build_sides(config, torch, checked=True):
    """Fresh sides from one initial state; with checked, the agreement check runs first."""
    state = initial_state(config)
    ok = True
    if checked:
        reference = TinydiffSide(config, state)
        ok &= check(config, state, reference, HandSide(config, state))
        if torch is not None:
            ok &= check(config, state, TinydiffSide(config, state), TorchSide(config, state, torch))
    sides = [TinydiffSide(config, state), HandSide(config, state)]
    if torch is not None:
        sides.append(TorchSide(config, state, torch))
    return sides, ok


def time_sides(sides, rounds, seconds, pause=0.25):
    """Median steps/s per side over rounds of about ``seconds`` each, sides alternating.

    A round runs whole steps until ``seconds`` have passed (so a slow
    moment on a shared machine makes fewer steps, not a longer run); the
    order of the sides rotates every round. Before each round the process
    sleeps ``pause`` seconds: OpenBLAS's and OpenMP's worker threads spin
    for a while after their last call, and spinning threads of the side
    that just ran would steal a core from the next one.
    Returns {name: (median, min, max steps/s, mean steps per round, minor faults per step)}.
    """
    for side in sides:  # warm up: workspaces, thread pools, the allocator
        side.step()
        side.step()
    rates = {side.name: [] for side in sides}
    steps = {side.name: 0 for side in sides}
    faults = {side.name: 0 for side in sides}
    for r in range(rounds):
        for side in sides[r % len(sides):] + sides[: r % len(sides)]:
            time.sleep(pause)
            before = _minor_faults()
            count, start = 0, time.perf_counter()
            deadline = start + seconds
            while True:
                side.step()
                count += 1
                now = time.perf_counter()
                if now >= deadline:
                    break
            rates[side.name].append(count / (now - start))
            steps[side.name] += count
            if before is not None:
                faults[side.name] += _minor_faults() - before
    return {
        name: (statistics.median(v), min(v), max(v), steps[name] / rounds, faults[name] / steps[name])
        for name, v in rates.items()
    }


def _minor_faults():
    """Minor page faults of this process so far (None where the resource module is missing).

    A step that allocates fresh memory the allocator has just given back to
    the system touches every page again: thousands of faults a step show it.
    """
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def profile(config, side, steps, lines=22):
    """cProfile of `steps` training steps, sorted by own time."""
    for _ in range(3):
        side.step()
    faults = _minor_faults()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        side.step()
    profiler.disable()
    elapsed = time.perf_counter() - start
    faults = "n/a" if faults is None else f"{(_minor_faults() - faults) / steps:.0f}"
    print(f"\n== profile: {side.name}, {config.label}, {steps} steps, "
          f"{1e3 * elapsed / steps:.2f} ms/step under the profiler, {faults} minor page faults/step ==")
    print("(matmuls written with @ are charged to the Python function that contains them)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(lines)


# ---------------------------------------------------------------------------
# Header and table
# ---------------------------------------------------------------------------


def core_count():
    """The cores this process may run on (taskset and containers can give fewer than cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_summary():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
            f"{i.get('threading_layer')}, {i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"
        ]
        if found:
            return "; ".join(found)
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} (numpy.show_config)"
    except Exception:  # old numpy without mode="dicts"
        return "unknown (no threadpoolctl; see numpy.show_config())"


def header(blas, torch_note):
    cores = core_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"machine: {platform.platform()}, {cpu_name()}, {cores} cores, load average {load}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas}")
    print(f"torch: {torch_note}")


def fmt_rate(entry):
    return f"{entry[0]:9.1f}" if entry else f"{'-':>9}"


def fmt_ratio(a, b):
    return f"{a[0] / b[0]:8.2f}x" if a and b else f"{'-':>9}"


def table(rows):
    print()
    print(f"{'config':26s} {'tinydiff':>9} {'hand':>9} {'hand/tiny':>9} {'torch':>9} {'torch/tiny':>10}")
    print(f"{'':26s} {'steps/s':>9} {'steps/s':>9} {'':>9} {'steps/s':>9} {'':>10}")
    for config, result in rows:
        tiny, hand, tch = (result.get(k) for k in ("tinydiff", "hand-written", "torch"))
        print(f"{config.label:26s} {fmt_rate(tiny)} {fmt_rate(hand)} {fmt_ratio(hand, tiny)} "
              f"{fmt_rate(tch)} {fmt_ratio(tch, tiny):>10}")
    print("\nspread over the rounds: min..max steps/s (steps per round; minor page faults per step)")
    for config, result in rows:
        parts = [f"{name} {r[1]:.1f}..{r[2]:.1f} ({r[3]:.0f} steps; {r[4]:.0f} faults)" for name, r in result.items()]
        print(f"  {config.key}: " + ", ".join(parts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (2 rounds of 0.15 s)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 7, quick 2)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="target seconds per side per round (default 1.2, quick 0.15)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, from {', '.join(CONFIGS)} (default all)")
    parser.add_argument("--pause", type=float, default=None,
                        help="seconds of sleep before each round, so the last side's threads stop "
                             "spinning (default 0.25, quick 0.1)")
    parser.add_argument("--default-malloc", action="store_true",
                        help="leave glibc malloc as it is (tinydiff's train() changes it; shows what page faults cost)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing, cProfile the tinydiff and hand-written steps")
    parser.add_argument("--profile-steps", type=int, default=None, help="steps to profile (default: ~2 s worth)")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    seconds = args.seconds if args.seconds is not None else (0.15 if args.quick else 1.2)
    pause = args.pause if args.pause is not None else (0.1 if args.quick else 0.25)
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    if seconds <= 0:
        parser.error(f"--seconds must be > 0, got {seconds}")
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown or not keys:
        parser.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")

    B.set_backend("numpy")
    # tinydiff's training loop asks malloc to keep freed memory (backend.keep_freed_memory);
    # do the same here so the step is timed as train() runs it (it is process-wide,
    # so the hand-written and torch steps run under the same setting).
    trim_note = None
    if not args.default_malloc:
        kept = B.keep_freed_memory()
        trim_note = "malloc keeps freed memory (tinydiff.backend.keep_freed_memory, as train() does)" if kept \
            else "malloc setting unavailable here (not glibc): default malloc"
    blas = blas_summary()  # before torch loads its own thread pools
    torch = None if args.no_torch else torch_or_none()
    if torch is not None:
        torch.set_num_threads(core_count())
        probe = TorchSide(CONFIGS["mlp256"], initial_state(CONFIGS["mlp256"]), torch)
        torch_note = (f"{torch.__version__}, {torch.get_num_threads()} threads, CPU, "
                      f"Adam {probe.adam_kind}")
    else:
        torch_note = ("left out (--no-torch)" if args.no_torch else
                      "not installed (optional: pip install torch==2.13.0 adds the column)")
    header(blas, torch_note)
    if trim_note:
        print(trim_note)

    if args.profile:
        for key in keys:
            config = CONFIGS[key]
            state = initial_state(config)
            for side in (TinydiffSide(config, state), HandSide(config, state)):
                start = time.perf_counter()
                side.step()
                one = time.perf_counter() - start
                steps = args.profile_steps or max(5, int(2.0 / max(one, 1e-6)))
                profile(config, side, steps)
        return 0

    print(f"timing: {rounds} rounds x ~{seconds:g} s per side, sides alternating; lr {LR}, "
          f"T {T}, linear betas 1e-4..0.02")
    rows, all_ok = [], True
    started = time.perf_counter()
    for key in keys:
        config = CONFIGS[key]
        print(f"\n{config.label} ({key}):", flush=True)
        sides, ok = build_sides(config, torch)
        all_ok &= ok
        rows.append((config, time_sides(sides, rounds, seconds, pause)))
    table(rows)
    print(f"\nchecks: {'OK' if all_ok else 'FAIL'}; total {time.perf_counter() - started:.0f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
