"""The convolution and the U-Net's training step: tinydiff against hand-written NumPy (and PyTorch if present).

    python benchmarks/conv.py                  # the table: convolutions, the U-Net step, its peak memory
    python benchmarks/conv.py --quick          # a smoke run, about 20 s
    python benchmarks/conv.py --against DIR    # before/after: this checkout's conv2d and U-Net step against DIR's

Convolutions: the 3x3 convolutions of the small MNIST U-Net at batch 64
(16 -> 16 channels at 28 x 28, 32 -> 32 at 14 x 14, the 48 -> 16 of the
first block on the way up) and one of the paper's CIFAR-10 model (128 -> 128
at 32 x 32, batch 16). Each side computes the forward pass and the
gradients of x, W and b from the same arrays, and the sides must agree
(relative error 1e-4 in float32) before anything is timed:

- tinydiff: ``autograd.conv2d`` (one matmul per kernel tap on the padded
  rows laid end to end, and their product rule in the backward pass),
  through the engine;
- hand-written: the textbook form in plain NumPy written separately, the
  sliding windows of the padded input contracted with the kernel by
  ``np.einsum(..., optimize=True)`` and the input's gradient added back one
  kernel tap at a time;
- torch: ``torch.nn.functional.conv2d`` and autograd on the CPU, only if
  ``import torch`` works (never a dependency).

Times are the least CPU time of one forward plus backward (BLAS on one
thread, set before NumPy is imported), the steady measure on a shared
machine (see cputime.py). The U-Net step is ``train.train_step`` on the
MNIST configuration (``--model unet`` defaults, 0.28M parameters, batch 64);
its peak memory is measured in a fresh child process, as memory.py does.
"""

from __future__ import annotations

import os
import sys

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = Path(os.environ.get("TINYDIFF_BENCH_ROOT", HERE.parent))  # --against runs a child on another checkout
sys.path.insert(0, str(ROOT))

from tinydiff import autograd as A  # noqa: E402
from tinydiff import backend as B  # noqa: E402

# (name, batch, C_in, C_out, size)
CONVS = [("mnist 16->16 @28", 64, 16, 16, 28), ("mnist 32->32 @14", 64, 32, 32, 14),
         ("mnist 48->16 @28", 64, 48, 16, 28), ("cifar 128->128 @32", 16, 128, 128, 32)]
MEMORY_TARGET_MB = 2000.0


def hand_conv(x, w, b, g):
    """3x3, stride 1, padding 1, by hand: (out, grad_x, grad_w, grad_b) for the output gradient g."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sliding_window_view(padded, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
    out = np.einsum("nchwij,ocij->nohw", windows, w, optimize=True) + b[None, :, None, None]
    grad_w = np.einsum("nohw,nchwij->ocij", g, windows, optimize=True)
    grad_b = g.sum(axis=(0, 2, 3))
    grad_padded = np.zeros_like(padded)
    h, width = x.shape[2:]
    for i in range(3):
        for j in range(3):  # tap (i, j) read padded[:, :, i:i+H, j:j+W]: its gradient goes back there
            grad_padded[:, :, i:i + h, j:j + width] += np.einsum("nohw,oc->nchw", g, w[:, :, i, j], optimize=True)
    return out, grad_padded[:, :, 1:-1, 1:-1], grad_w, grad_b


def tinydiff_conv(x, w, b, g):
    xt, wt, bt = (A.Tensor(v, requires_grad=True) for v in (x, w, b))
    out = A.conv2d(xt, wt, bt, padding=1)
    out.backward(g)
    return out.data, xt.grad, wt.grad, bt.grad


def torch_conv(x, w, b, g):
    import torch

    xt, wt, bt = (torch.from_numpy(v).requires_grad_() for v in (x, w, b))
    out = torch.nn.functional.conv2d(xt, wt, bt, padding=1)
    out.backward(torch.from_numpy(g))
    return out.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def sides():
    found = {"tinydiff": tinydiff_conv, "hand-written": hand_conv}
    try:
        import torch

        torch.set_num_threads(1)
        found["torch"] = torch_conv
    except ImportError:
        pass
    return found


def arrays(n, c_in, c_out, size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32) / np.float32(3 * np.sqrt(c_in))
    b = rng.standard_normal(c_out, dtype=np.float32)
    g = rng.standard_normal((n, c_out, size, size), dtype=np.float32)
    return x, w, b, g


def check(n, c_in, c_out, size, functions=None):
    """True when every side's output and gradients agree with the hand-written ones (relative 1e-4)."""
    inputs = arrays(n, c_in, c_out, size)
    functions = functions or sides()
    reference = hand_conv(*inputs)
    for name, function in functions.items():
        for label, got, want in zip(("out", "grad x", "grad W", "grad b"), function(*inputs), reference):
            error = np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want)
            if not error < 1e-4:
                print(f"  {name} {label}: relative error {error:.2e}: FAIL")
                return False
    return True


def least_cpu_ms(function, inputs, repeats):
    function(*inputs)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        function(*inputs)
        best = min(best, time.process_time() - start)
    return best * 1e3


def conv_table(repeats):
    functions = sides()
    print(f"{'convolution, forward + backward':28s}" + "".join(f"{name:>14s}" for name in functions)
          + "   (least CPU ms, one thread)")
    for name, n, c_in, c_out, size in CONVS:
        verdict = "OK" if check(min(n, 4), c_in, c_out, size, functions) else "FAIL"
        inputs = arrays(n, c_in, c_out, size)
        times = {side: least_cpu_ms(f, inputs, repeats) for side, f in functions.items()}
        ratio = times["hand-written"] / times["tinydiff"]
        print(f"{name + ' b' + str(n):28s}" + "".join(f"{t:14.1f}" for t in times.values())
              + f"   agree: {verdict}; tinydiff {ratio:.2f}x the hand-written speed")


def tinydiff_times(repeats, steps):
    """{case: least CPU ms of conv2d forward + backward, "unet": least CPU s of a U-Net step} of this process's tinydiff."""
    times = {name: least_cpu_ms(tinydiff_conv, arrays(n, c_in, c_out, size), repeats)
             for name, n, c_in, c_out, size in CONVS}
    times["unet"] = unet_step(steps)[0]
    return times


def against_table(other, repeats, steps, rounds=2):
    """This checkout's conv2d and U-Net step against another checkout's, each side in a child, alternating."""
    results = {"this": [], "other": []}
    for _ in range(rounds):
        for side, root in (("this", ROOT), ("other", Path(other).resolve())):
            command = [sys.executable, str(Path(__file__).resolve()), "--times", "--repeats", str(repeats),
                       "--steps", str(steps)]
            env = dict(os.environ, TINYDIFF_BENCH_ROOT=str(root))
            completed = subprocess.run(command, capture_output=True, text=True, timeout=1200, env=env)
            if completed.returncode != 0:
                raise RuntimeError(f"the child on {root} failed:\n{completed.stderr[-2000:]}")
            results[side].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    print(f"{'least CPU time, one thread':28s}{'this':>12s}{'other':>12s}   other/this   (other: {other})")
    for key in results["this"][0]:
        this, that = (min(r[key] for r in results[side]) for side in ("this", "other"))
        unit = "s" if key == "unet" else "ms"
        label = "U-Net step b64" if key == "unet" else key + " b" + str(dict((c[0], c[1]) for c in CONVS)[key])
        print(f"{label + ' (' + unit + ')':28s}{this:12.3f}{that:12.3f}   {that / this:.2f}x")


def unet_step(steps):
    """(least CPU seconds of a step, wall steps/s) of train_step on the MNIST U-Net at batch 64."""
    from tinydiff import train as T
    from tinydiff import data as data_module

    B.keep_freed_memory()
    rng = np.random.default_rng(0)
    x = rng.random((4096, 784), dtype=np.float32) * 2 - 1
    dataset = data_module.Dataset(x=x, labels=rng.integers(0, 10, 4096), num_classes=10, image_shape=(28, 28),
                                  name="mnist")
    config = T.TrainConfig(data="mnist", model="unet", batch_size=64, steps=10**6, seed=0)
    run, _ = T.new_run(config, dataset)
    batch = B.asarray(x[:64])
    T.train_step(run, batch)
    cpu, start = [], time.perf_counter()
    for _ in range(steps):
        begin = time.process_time()
        T.train_step(run, batch)
        cpu.append(time.process_time() - begin)
    return min(cpu), steps / (time.perf_counter() - start), run.model.num_parameters()


def child(steps):
    """The measured process of the memory figure: the real training loop, then its peak resident memory."""
    import tempfile

    from tinydiff import data as data_module
    from tinydiff import train as T

    rng = np.random.default_rng(0)
    x = rng.random((60_000, 784), dtype=np.float32)
    x *= 2.0
    x -= 1.0
    dataset = data_module.Dataset(x=x, labels=rng.integers(0, 10, 60_000), num_classes=10, image_shape=(28, 28),
                                  name="mnist")
    config = T.TrainConfig(data="mnist", model="unet", batch_size=64, steps=steps, checkpoint_every=10**9, seed=0)
    with tempfile.TemporaryDirectory(prefix="tinydiff-conv-") as out:
        T.train(config, out, progress=False, dataset=dataset, log=lambda *a: None)
    print(json.dumps({"peak_mb": peak_resident_mb()}))


def peak_resident_mb():
    """This process's peak resident memory in MB: VmHWM of /proc/self/status (see memory.py for why)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024) / 1e6


def peak_memory_mb(steps):
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(steps)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=str(HERE))
    if completed.returncode != 0:
        raise RuntimeError(f"the measured process failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])["peak_mb"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repeats and steps: a smoke run")
    parser.add_argument("--against", metavar="DIR", help="time this checkout against another (git worktree add DIR REV)")
    parser.add_argument("--times", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.steps)
        return 0
    repeats, steps = (2, 3) if args.quick else (7, 12)
    repeats, steps = args.repeats or repeats, args.steps or steps
    if args.times:
        print(json.dumps(tinydiff_times(repeats, steps)))
        return 0
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch "
          f"{'present' if 'torch' in sides() else 'not installed: its column is left out'}")
    if args.against:
        against_table(args.against, repeats, steps)
        return 0
    conv_table(repeats)
    cpu, rate, parameters = unet_step(steps)
    print(f"U-Net training step, MNIST configuration ({parameters / 1e6:.2f}M parameters), batch 64: "
          f"{cpu:.3f} s CPU (least), {rate:.2f} steps/s wall")
    peak = peak_memory_mb(steps)
    verdict = "MET" if peak < MEMORY_TARGET_MB else "MISSED"
    print(f"peak memory of U-Net training at batch 64 (fresh process, {steps} steps): {peak:.0f} MB "
          f"(target < {MEMORY_TARGET_MB:.0f} MB): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
