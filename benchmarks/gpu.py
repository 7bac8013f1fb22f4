"""NumPy against CuPy: the same training step and sampler on the CPU and on the GPU.

One prepared run on a machine with CuPy and an NVIDIA GPU (meant to take under 90 s on an H100):

1. Agreement. From the same initial weights and the same batch (x_0, t,
   eps from the host), one training step of each default denoiser on both
   backends: the loss, every gradient and the parameters after one Adam
   step must agree to a relative error under 1e-4 (norm per parameter,
   worst one shown). The Adam update itself (parameters after minus
   before) is shown too: its first step is lr * g / (|g| + eps), which
   magnifies rounding where |g| is near eps, so it gets 1e-3.
2. Training speed, as ``train()`` runs a step (batch and noise drawn on the
   backend, Algorithm 1, Adam, gradient clipping, EMA), on the MNIST
   configuration (residual MLP, 784-d, width 1024, 2 blocks) at batch 128
   and 1024: steps/s on NumPy and CuPy, ``backend.synchronize()`` before
   the clock starts and before it stops.
3. Sampling 10,000 2D points with DDPM (1000 steps) and DDIM (50 steps),
   the default 2D MLP. The NumPy DDPM is timed over its first 100 steps and
   scaled to 1000 (--full-numpy runs it all).
4. Hidden host transfers in the inner loops, three ways:
   - calls of ``backend.to_numpy`` (the one sanctioned way to the host)
     during 20 training steps and a whole DDPM run: expect 0;
   - whether the host ever waits for the GPU inside one training step and
     inside a short DDPM run: the GPU is first given a backlog of big
     matrix products; a loop that only enqueues work returns long before
     the backlog is done, one that copies to the host (float(x), .item(),
     .get(), a boolean mask) waits for all of it. Control loops of 300,
     1000 and 3000 plain additions show where the launch queue alone
     starts to make the host wait (more launches than it holds);
   - cupyx.allow_synchronize(False), where this CuPy still has it.
5. The U-Net (the MNIST configuration, ``--model unet``, batch 64): its
   training step's steps/s on NumPy and CuPy, the calls of
   ``backend.to_numpy`` in 10 training steps and a DDIM run (expect 0 and
   1), and whether the host waits for the GPU inside one training step.

Without CuPy or a GPU it prints why and exits 0. ``--out DIR`` also writes
the results as DIR/gpu.json; nothing else is written.

    python benchmarks/gpu.py
    python benchmarks/gpu.py --quick            # shorter timings
    python benchmarks/gpu.py --out $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import engine  # noqa: E402
import sampling  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import optim, samplers  # noqa: E402
from tinydiff import train as T  # noqa: E402
from tinydiff.backend import xp  # noqa: E402
from tinydiff.diffusion import GaussianDiffusion  # noqa: E402
from tinydiff.schedules import make_schedule  # noqa: E402

DEVICE = "cupy"  # the backend under test; --simulate puts "numpy" here to run the script without a GPU
TOLERANCE = 1e-4
UPDATE_TOLERANCE = 1e-3
POOL = 10_000  # training examples held on the backend (random, MNIST-shaped for the ResMLP)


# ---------------------------------------------------------------------------
# The GPU, or why there is none
# ---------------------------------------------------------------------------


def find_gpu():
    """(cupy module, None) when a GPU can run CuPy; (None, reason) when not."""
    try:
        B.set_backend("cupy")
    except B.BackendError as error:
        return None, str(error)
    except Exception as error:  # a broken CUDA install: still "no usable GPU"
        return None, f"CuPy could not start ({type(error).__name__}: {error})"
    finally:
        if B.get_backend() == "cupy":
            B.set_backend("numpy")
    return sys.modules["cupy"], None


def gpu_description(cupy):
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props.get("name", b"?")
    name = name.decode() if isinstance(name, bytes) else str(name)
    free, total = device.mem_info

    def version(v):
        return f"{v // 1000}.{(v % 1000) // 10}"

    return (f"{name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free); CuPy {cupy.__version__}, "
            f"CUDA runtime {version(cupy.cuda.runtime.runtimeGetVersion())}, driver "
            f"{version(cupy.cuda.runtime.driverGetVersion())}; CUPY_TF32={os.environ.get('CUPY_TF32', 'unset')}")


# ---------------------------------------------------------------------------
# 1. Agreement of one training step
# ---------------------------------------------------------------------------


def _rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else float(np.linalg.norm(a - b))


def one_step(backend, config, state, batch):
    """Loss, gradients and parameters after one Adam step, as host arrays, on ``backend``."""
    with B.using(backend):
        model = engine.tinydiff_model(config)
        model.load_state_dict(state)
        diffusion = T.build_diffusion(T.TrainConfig().resolved(image_data=False))  # linear betas, T = 1000, eps
        optimizer = optim.Adam(model.parameters(), lr=engine.LR)
        x0, t, noise = (B.asarray(a) for a in batch)
        loss = diffusion.training_loss(model, x0, None, t=t, noise=noise)  # Algorithm 1, Eq. 14
        optimizer.zero_grad()
        loss.backward()
        grads = {name: np.array(B.to_numpy(p.grad), copy=True) for name, p in model.named_parameters()}
        optimizer.step()
        params = {name: np.array(B.to_numpy(p.data), copy=True) for name, p in model.named_parameters()}
        return float(loss.item()), grads, params


def check_agreement(key, log=print):
    """NumPy against CuPy on one step of configuration ``key``; returns a result dict."""
    config = engine.CONFIGS[key]
    state = engine.initial_state(config)
    pool = engine.data_pool(config)
    rng = np.random.default_rng(7)
    x0 = np.take(pool, rng.integers(0, pool.shape[0], config.batch), axis=0)  # (N, D)
    t = rng.integers(0, engine.T, config.batch)
    noise = rng.standard_normal((config.batch, config.data_dim), dtype=np.float32)
    cpu = one_step("numpy", config, state, (x0, t, noise))
    gpu = one_step(DEVICE, config, state, (x0, t, noise))
    loss_err = _rel(gpu[0], cpu[0])
    grad = {name: _rel(gpu[1][name], g) for name, g in cpu[1].items()}
    param = {name: _rel(gpu[2][name], p) for name, p in cpu[2].items()}
    update = {name: _rel(gpu[2][name] - state[name], p - state[name]) for name, p in cpu[2].items()}
    worst = {kind: max(d, key=d.get) for kind, d in (("grad", grad), ("param", param), ("update", update))}
    ok = (loss_err < TOLERANCE and grad[worst["grad"]] < TOLERANCE and param[worst["param"]] < TOLERANCE
          and update[worst["update"]] < UPDATE_TOLERANCE)
    log(f"  {config.label}: loss {cpu[0]:.6f} vs {gpu[0]:.6f} (rel {loss_err:.1e}), worst gradient "
        f"{grad[worst['grad']]:.1e} ({worst['grad']}), worst parameter after 1 Adam step "
        f"{param[worst['param']]:.1e} ({worst['param']}), worst update {update[worst['update']]:.1e} "
        f"({worst['update']}): {'OK' if ok else 'FAIL'}", flush=True)
    return {"config": key, "ok": bool(ok), "loss": loss_err, "grad": grad[worst["grad"]],
            "param": param[worst["param"]], "update": update[worst["update"]]}


# ---------------------------------------------------------------------------
# 2. Training speed: the step of train(), data and noise on the backend
# ---------------------------------------------------------------------------


class Trainer:
    """The inner loop of tinydiff.train.train (no logging, no lr schedule) on the current backend."""

    def __init__(self, kind, batch_size, seed=0):
        image = kind in ("resmlp", "unet")
        config = T.TrainConfig(data="mnist" if image else "moons", model="unet" if kind == "unet" else None
                               ).resolved(image)
        data_dim = 784 if image else 2
        self.model = T.build_model(config, data_dim)
        self.diffusion = T.build_diffusion(config)
        self.params = self.model.parameters()
        self.optimizer = optim.Adam(self.params, lr=config.lr)
        self.ema = optim.EMA(self.params, decay=config.ema)
        self.grad_clip = config.grad_clip
        self.rng = B.default_rng(seed)
        pool = np.random.default_rng(1234).random((POOL, data_dim), dtype=np.float32) * 2.0 - 1.0
        self.data = B.asarray(pool)  # on the device once, as train() does
        self.batch_size = batch_size

    def step(self):
        index = self.rng.integers(0, self.data.shape[0], (self.batch_size,))
        x0 = xp.take(self.data, index, axis=0)  # (B, D)
        loss = self.diffusion.training_loss(self.model, x0, self.rng)
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip:
            optim.clip_grad_norm(self.params, self.grad_clip)
        self.optimizer.step()
        self.ema.update()
        return loss


def steps_per_second(step, seconds, min_steps, warmup=2):
    """(steps/s, steps) of ``step`` run for at least ``seconds`` and ``min_steps``, synchronized."""
    for _ in range(warmup):
        step()
    B.synchronize()
    count, start = 0, time.perf_counter()
    while True:
        step()
        count += 1
        if count >= min_steps and time.perf_counter() - start >= seconds:
            break
    B.synchronize()
    return count / (time.perf_counter() - start), count


def time_training(batch_sizes, seconds, log=print):
    rows = []
    for batch in batch_sizes:
        row = {"batch": batch}
        for label, backend in (("numpy", "numpy"), ("cupy", DEVICE)):
            with B.using(backend):
                trainer = Trainer("resmlp", batch)
                # NumPy at batch 1024 takes a few hundred ms a step: a handful is enough.
                rate, count = steps_per_second(trainer.step, seconds, 3 if label == "numpy" else 10)
                row[label] = rate
                log(f"  ResMLP 784, batch {batch}, {label}: {rate:.1f} steps/s ({count} steps)", flush=True)
                del trainer
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------
# 3. Sampling speed
# ---------------------------------------------------------------------------


def time_sampling(n, numpy_limit, log=print):
    """{(kind, backend): seconds} for DDPM 1000 and DDIM 50; NumPy DDPM scaled from numpy_limit steps."""
    out, estimated = {}, {}
    for label, backend in (("numpy", "numpy"), ("cupy", DEVICE)):
        with B.using(backend):
            model, diffusion = sampling.default_model_and_diffusion()
            run = sampling.tinydiff_runner(model, diffusion)
            run("ddim", 512)  # warm up: CuPy compiles each kernel on first use; memory pool, workspaces
            try:
                run("ddpm", 512, 3)  # the DDPM step's own kernels (posterior mean, noise)
            except sampling.StopSampling:
                pass
            B.synchronize()
            for kind, steps in (("ddpm", diffusion.T), ("ddim", sampling.DDIM_STEPS)):
                limit = numpy_limit if (label == "numpy" and kind == "ddpm" and numpy_limit) else None
                start = time.perf_counter()
                try:
                    run(kind, n, limit)  # ends with to_numpy: synchronized
                except sampling.StopSampling:
                    pass
                B.synchronize()
                elapsed = time.perf_counter() - start
                if limit:
                    elapsed *= steps / limit
                out[(kind, label)] = elapsed
                estimated[(kind, label)] = bool(limit)
                log(f"  {kind.upper()} {steps} steps, {n} points, {label}: {elapsed:.2f} s"
                    f"{f' (first {limit} steps timed, scaled)' if limit else ''}", flush=True)
    return out, estimated


# ---------------------------------------------------------------------------
# 4. Hidden host transfers
# ---------------------------------------------------------------------------


class CountToNumpy:
    """Counts calls of backend.to_numpy, wherever a tinydiff module holds a reference to it."""

    def __enter__(self):
        self.count = 0
        self.original = B.to_numpy
        original = self.original

        def counting(value):
            self.count += 1
            return original(value)

        self.patched = []
        for name, module in list(sys.modules.items()):
            if (name == "tinydiff" or name.startswith("tinydiff.")) and getattr(module, "to_numpy", None) is original:
                module.to_numpy = counting
                self.patched.append(module)
        return self

    def __exit__(self, *exc):
        for module in self.patched:
            module.to_numpy = self.original
        return False


def host_waits(cupy, region, log_name, size=16384, log=print):
    """Does ``region()`` make the host wait for the GPU? Returns a dict with the evidence.

    The GPU gets a backlog of a few big matrix products (16384 x 16384, about
    0.1 s each on an H100) lasting at least ten times the region's own host
    time; then the region runs. If it only enqueues work, it returns while
    the backlog is still running; if it waits for a result, it returns only
    after the backlog is done. Few, long products keep the launch queue
    nearly empty for the region (a full queue would block the host too).
    """
    region()  # warm: compile kernels, fill the memory pool
    B.synchronize()
    start = time.perf_counter()
    region()
    alone = time.perf_counter() - start
    B.synchronize()
    a = cupy.ones((size, size), dtype=cupy.float32)
    c = cupy.empty_like(a)
    cupy.matmul(a, a, out=c)
    B.synchronize()
    start = time.perf_counter()
    for _ in range(2):
        cupy.matmul(a, a, out=c)
    B.synchronize()
    per_product = (time.perf_counter() - start) / 2
    products = int(min(100, max(2, math.ceil(max(0.3, 10 * alone) / per_product))))
    start = time.perf_counter()
    for _ in range(products):
        cupy.matmul(a, a, out=c)
    enqueued = time.perf_counter() - start
    region_start = time.perf_counter()
    region()
    with_backlog = time.perf_counter() - region_start
    B.synchronize()
    total = time.perf_counter() - start
    # The GPU work still ahead of the region when it started (plus the region's own), after the fact:
    pending = total - enqueued
    waited = with_backlog > alone + 0.5 * max(pending - alone, 0.0)
    log(f"  {log_name}: host time alone {1e3 * alone:.1f} ms, behind a {1e3 * pending:.0f} ms backlog "
        f"{1e3 * with_backlog:.1f} ms -> {'WAITED for the GPU' if waited else 'no wait'}", flush=True)
    del a, c
    return {"alone_ms": 1e3 * alone, "backlog_ms": 1e3 * pending, "with_backlog_ms": 1e3 * with_backlog,
            "waited": bool(waited)}


def check_transfers(cupy, quick, n, backlog_size=16384, log=print):
    result = {}
    with B.using(DEVICE):
        trainer = Trainer("resmlp", 128)
        trainer.step()
        B.synchronize()
        with CountToNumpy() as counter:
            for _ in range(5 if quick else 20):
                trainer.step()
        B.synchronize()
        result["to_numpy_train"] = counter.count
        model, diffusion = sampling.default_model_and_diffusion()
        with CountToNumpy() as counter:
            samplers.ddpm(model, diffusion, (n, 2), B.default_rng(0))
        B.synchronize()
        result["to_numpy_ddpm"] = counter.count
        with CountToNumpy() as counter:
            samplers.ddim(model, diffusion, (n, 2), B.default_rng(0), steps=sampling.DDIM_STEPS)
        B.synchronize()
        result["to_numpy_ddim"] = counter.count
        log(f"  backend.to_numpy calls: {result['to_numpy_train']} in {5 if quick else 20} training steps, "
            f"{result['to_numpy_ddpm']} in DDPM 1000 steps, {result['to_numpy_ddim']} in DDIM 50 steps "
            f"(DDIM reads the schedule once before its loop)", flush=True)

        # Host waits: short regions, so the launch queue never fills (a full queue also blocks).
        x = cupy.zeros((1000,), dtype=cupy.float32)

        def control(count):
            def additions():
                y = x
                for _ in range(count):
                    y = y + 1.0
                return y

            return additions

        short = GaussianDiffusion(make_schedule("linear", 4, beta_start=0.1, beta_end=0.5))
        mlp_trainer = Trainer("mlp", 256)
        regions = [
            # Controls: plain additions never copy to the host, but more launches than
            # the launch queue holds make the host wait too: these show where that starts.
            ("control: 300 additions", control(300)),
            ("control: 1000 additions", control(1000)),
            ("control: 3000 additions", control(3000)),
            ("one training step, 2D MLP batch 256", mlp_trainer.step),
            ("one training step, ResMLP batch 128", trainer.step),
            (f"DDPM through a 4-step schedule, {n} points", lambda: samplers.ddpm(
                model, short, (n, 2), B.default_rng(0))),
        ]
        waits = {}
        for name, region in regions:
            try:
                waits[name] = host_waits(cupy, region, name, backlog_size, log)
            except Exception as error:  # report, keep going
                log(f"  {name}: could not measure ({type(error).__name__}: {error})")
        result["waits"] = waits

        try:
            import cupyx

            allow = getattr(cupyx, "allow_synchronize", None)
        except ImportError:
            allow = None
        if allow is None:
            log("  cupyx.allow_synchronize: not available (removed from CuPy after its deprecation in v10)")
            result["allow_synchronize"] = "n/a"
        else:
            verdicts = {}
            for name, region in regions[3:]:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        with allow(False):
                            region()
                    verdicts[name] = "no synchronization"
                except Exception as error:
                    verdicts[name] = f"{type(error).__name__}"
                log(f"  cupyx.allow_synchronize(False), {name}: {verdicts[name]}")
            B.synchronize()
            result["allow_synchronize"] = verdicts
    return result


def check_unet(cupy, quick, batch, seconds, backlog_size=16384, log=print):
    """5. The U-Net on the device: steps/s on both backends, no to_numpy in its loops, no host wait in a step."""
    result = {"batch": batch}
    for label, backend in (("numpy", "numpy"), ("cupy", DEVICE)):
        with B.using(backend):
            trainer = Trainer("unet", batch)
            result[label], count = steps_per_second(trainer.step, seconds, 2 if label == "numpy" else 10)
            log(f"  U-Net (MNIST configuration), batch {batch}, {label}: {result[label]:.2f} steps/s ({count} steps)",
                flush=True)
    with B.using(DEVICE):
        with CountToNumpy() as counter:
            for _ in range(2 if quick else 10):
                trainer.step()
        B.synchronize()
        result["to_numpy_train"] = counter.count
        with CountToNumpy() as counter:
            samplers.ddim(trainer.model, trainer.diffusion, (batch, 784), B.default_rng(0), steps=5 if quick else 50)
        B.synchronize()
        result["to_numpy_ddim"] = counter.count
        log(f"  backend.to_numpy calls: {result['to_numpy_train']} in the U-Net's training steps, "
            f"{result['to_numpy_ddim']} in a DDIM run", flush=True)
        result["wait"] = host_waits(cupy, trainer.step, f"one training step, U-Net batch {batch}", backlog_size, log)
    return result


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def section(title, failures, log=print):
    log(f"\n== {title} ==", flush=True)
    try:
        yield
    except Exception:
        failures.append(title)
        log(f"  FAILED:\n{traceback.format_exc()}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timings and fewer steps")
    parser.add_argument("--full-numpy", action="store_true",
                        help="run the NumPy DDPM through all 1000 steps (slow) instead of scaling 100")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per training timing (default 2, quick 0.7)")
    parser.add_argument("--out", default=None, help="also write the results to OUT/gpu.json")
    parser.add_argument("--n", type=int, default=sampling.N_POINTS, help="points to sample (default 10,000)")
    parser.add_argument("--batches", default="128,1024", help="training batch sizes (default 128,1024)")
    parser.add_argument("--simulate", action="store_true",
                        help="run every part with NumPy standing in for CuPy (tests the script without a GPU)")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not batches or min(batches) < 1 or args.n < 2:
        parser.error("--batches must be integers >= 1 and --n an integer >= 2")
    started = time.perf_counter()

    global DEVICE
    if args.simulate:
        DEVICE, cupy = "numpy", np
        print("SIMULATED: NumPy stands in for CuPy; the numbers below say nothing about a GPU")
    else:
        cupy, reason = find_gpu()
        if cupy is None:
            print(f"no GPU: {reason}")
            print("benchmarks/gpu.py needs CuPy and an NVIDIA GPU; nothing to measure here.")
            return 0

    seconds = args.seconds if args.seconds is not None else (0.7 if args.quick else 2.0)
    B.set_backend("numpy")
    B.keep_freed_memory()  # as train() does on the CPU (process-wide; CuPy ignores it)
    if not args.simulate:
        print(f"GPU: {gpu_description(cupy)}")
    print(f"CPU: {engine.cpu_name()}, {engine.core_count()} cores; python {platform.python_version()}, "
          f"numpy {np.__version__}, BLAS: {engine.blas_summary()}")
    failures, results = [], {}

    with section("1. NumPy and CuPy agree on a training step (same weights, same batch)", failures):
        checks = [check_agreement(key) for key in ("mlp256", "resmlp128")]
        results["agreement"] = checks
        if not all(c["ok"] for c in checks):
            failures.append("agreement")

    with section("2. training speed, MNIST configuration (ResMLP 784, width 1024, 2 blocks)", failures):
        results["training"] = time_training(batches, seconds)

    with section(f"3. sampling speed, {args.n} 2D points, default MLP", failures):
        limit = None if args.full_numpy else (50 if args.quick else 100)
        times, estimated = time_sampling(args.n, limit)
        results["sampling"] = {f"{k}/{b}": v for (k, b), v in times.items()}
        results["sampling_estimated"] = {f"{k}/{b}": v for (k, b), v in estimated.items()}

    with section("4. host transfers inside the inner loops (CuPy)", failures):
        results["transfers"] = check_transfers(cupy, args.quick, args.n, 256 if args.simulate else 16384)

    with section("5. the U-Net on the device (MNIST configuration)", failures):
        results["unet"] = check_unet(cupy, args.quick, min(64, batches[0]), seconds, 256 if args.simulate else 16384)

    print("\n== summary ==")
    print(f"{'measure':44s} {'NumPy':>10} {'CuPy':>10} {'speed-up':>9}")
    for row in results.get("training", []):
        print(f"{'train steps/s, ResMLP 784, batch ' + str(row['batch']):44s} {row['numpy']:10.1f} "
              f"{row['cupy']:10.1f} {row['cupy'] / row['numpy']:8.1f}x")
    sampling_times = results.get("sampling", {})
    for kind, label in (("ddpm", f"sample s, DDPM 1000 steps, {args.n} points"),
                        ("ddim", f"sample s, DDIM 50 steps, {args.n} points")):
        cpu, gpu = sampling_times.get(f"{kind}/numpy"), sampling_times.get(f"{kind}/cupy")
        if cpu is not None and gpu is not None:
            mark = "~" if results["sampling_estimated"].get(f"{kind}/numpy") else ""
            print(f"{label:44s} {mark + f'{cpu:.2f}':>10} {gpu:10.2f} {cpu / gpu:8.1f}x")
    for check in results.get("agreement", []):
        print(f"agreement, {engine.CONFIGS[check['config']].label}: loss {check['loss']:.1e}, gradients "
              f"{check['grad']:.1e}, parameters {check['param']:.1e} (< {TOLERANCE:g}), update "
              f"{check['update']:.1e} (< {UPDATE_TOLERANCE:g}): {'OK' if check['ok'] else 'FAIL'}")
    transfers = results.get("transfers")
    if transfers:
        print(f"to_numpy calls in the loops: training {transfers['to_numpy_train']}, DDPM "
              f"{transfers['to_numpy_ddpm']}, DDIM {transfers['to_numpy_ddim']} (expected 0, 0, 1)")
        for name, w in transfers["waits"].items():
            print(f"host waits for the GPU, {name}: {'YES' if w['waited'] else 'no'}")
        print("  (a loop makes the host wait when it copies to the host, or when it launches more kernels than\n"
              "   the launch queue holds; the controls, additions only, show from how many launches the queue\n"
              "   alone does it)")
    unet = results.get("unet")
    if unet:
        print(f"{'train steps/s, U-Net MNIST, batch ' + str(unet['batch']):44s} {unet['numpy']:10.2f} "
              f"{unet['cupy']:10.2f} {unet['cupy'] / unet['numpy']:8.1f}x")
        print(f"U-Net: to_numpy calls in 10 training steps {unet['to_numpy_train']}, in DDIM {unet['to_numpy_ddim']} "
              f"(expected 0, 1); host waits in a step: {'YES' if unet['wait']['waited'] else 'no'}")
    if any(results.get("sampling_estimated", {}).values()):
        print("~ NumPy DDPM timed over its first steps and scaled to 1000 (--full-numpy runs them all)")
    print(f"total {time.perf_counter() - started:.0f} s; "
          f"{'all parts ran' if not failures else 'FAILED: ' + ', '.join(failures)}")

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "gpu.json")
        with open(path, "w") as f:
            json.dump({"failures": failures, **results}, f, indent=2, default=str)
        print(f"wrote {path}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
