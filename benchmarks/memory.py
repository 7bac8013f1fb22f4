"""Peak memory of MNIST training at batch 128, measured in a fresh process.

A child process runs the real training loop (``tinydiff.train.train``) with
the default image configuration: the residual MLP (width 1024, 2 blocks,
6.4M parameters), Adam, EMA 0.999, gradient clipping, batch 128, on an
MNIST-sized training set (60,000 x 784 float32, held whole in memory as
train() holds it), for N steps, then writes its checkpoint. The set is
random pixels unless --mnist-dir names the real files: the memory is the
same, and nothing is downloaded.

The peak is the child's own high-water mark of resident memory (VmHWM in
/proc/self/status), read at its end. Not ru_maxrss of the child from
getrusage or wait4: on Linux that inherits the parent's resident size at
fork (a parent holding 400 MB makes ``python -c pass`` report 400 MB), so
it says more about the benchmark than about tinydiff. Where /proc is
missing (macOS) the child's own getrusage(RUSAGE_SELF) is used.

    python benchmarks/memory.py              # 30 steps, about 10 s on 2 cores
    python benchmarks/memory.py --steps 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

TARGET_MB = 1000.0  # "under 1 GB", in MB of 10^6 bytes
MNIST_TRAIN = 60_000


def _proc_status_kb(field):
    """A field of /proc/self/status in kB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _peak_mb():
    """This process's peak resident memory so far, in MB (10^6 bytes)."""
    kb = _proc_status_kb("VmHWM")
    if kb is not None:
        return kb * 1024 / 1e6, "VmHWM"
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return maxrss * scale / 1e6, "ru_maxrss"


def _now_mb():
    """(resident now, peak so far) in MB; None off Linux."""
    now, peak = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
    return None if now is None else (now * 1024 / 1e6, peak * 1024 / 1e6)


def child(steps, batch_size, mnist_dir):
    """The measured process: import, data, train N steps, report stages as one JSON line."""
    stages = [("python started", _now_mb())]
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from tinydiff import backend as B
    from tinydiff import data as data_module
    from tinydiff import train as T

    B.set_backend("numpy")
    stages.append(("numpy + tinydiff imported", _now_mb()))
    if mnist_dir:
        dataset = data_module.load("mnist", data_dir=mnist_dir, download=False)
        source = f"MNIST files in {mnist_dir}"
    else:
        rng = np.random.default_rng(0)
        x = rng.random((MNIST_TRAIN, 784), dtype=np.float32)  # (60000, 784), drawn in float32:
        x *= 2.0  # no float64 temporary, which would double the peak before training starts
        x -= 1.0
        labels = rng.integers(0, 10, MNIST_TRAIN)
        dataset = data_module.Dataset(x=x, labels=labels, num_classes=10, image_shape=(28, 28), name="mnist")
        source = "random pixels, MNIST's shape"
    stages.append((f"data loaded ({dataset.x.nbytes / 1e6:.0f} MB)", _now_mb()))
    config = T.TrainConfig(data="mnist", steps=steps, batch_size=batch_size, checkpoint_every=10**9, seed=0)
    with tempfile.TemporaryDirectory(prefix="tinydiff-memory-") as out:
        start = time.perf_counter()
        result = T.train(config, out, progress=False, dataset=dataset, log=lambda *a: None)
        seconds = time.perf_counter() - start
        stages.append((f"{result.run.step} steps + checkpoint", _now_mb()))
        parameters = result.run.model.num_parameters()
    peak, how = _peak_mb()
    print(json.dumps({"peak_mb": peak, "how": how, "stages": stages, "parameters": parameters,
                      "steps": result.run.step, "seconds": seconds, "batch_size": batch_size,
                      "source": source}))


def measure(steps=30, batch_size=128, mnist_dir=None, timeout=600):
    """Run the child and return its report (a dict; "peak_mb" is the result)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(steps),
               "--batch-size", str(batch_size)]
    if mnist_dir:
        command += ["--mnist-dir", str(mnist_dir)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    if completed.returncode != 0:
        raise RuntimeError(f"the measured process failed (exit {completed.returncode}):\n{completed.stderr[-2000:]}")
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


def report_lines(report):
    lines = [f"peak memory of training (child process, {report['how']}): {report['peak_mb']:.0f} MB",
             f"  {report['parameters'] / 1e6:.1f}M parameters, batch {report['batch_size']}, "
             f"{report['steps']} steps in {report['seconds']:.1f} s, data: {report['source']}",
             "  resident memory after each stage:"]
    for label, mb in report["stages"]:
        lines.append(f"    {label:34s} " + ("n/a" if mb is None else f"{mb[0]:7.0f} MB (peak so far {mb[1]:.0f} MB)"))
    return lines


def target_line(report):
    verdict = "MET" if report["peak_mb"] < TARGET_MB else "MISSED"
    return (f"peak memory, MNIST training at batch {report['batch_size']}: {report['peak_mb']:.0f} MB "
            f"(target < {TARGET_MB:.0f} MB): {verdict}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mnist-dir", default=None, help="a folder with the MNIST IDX files (default: random pixels)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.child:
        child(args.steps, args.batch_size, args.mnist_dir)
        return 0
    report = measure(args.steps, args.batch_size, args.mnist_dir)
    for line in report_lines(report):
        print(line)
    print(target_line(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
