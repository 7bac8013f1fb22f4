"""Data-parallel training on this machine: steps/s on 1 and 2 ranks, and the cost model checked against them.

    python benchmarks/distributed.py                   # both models, 3 rounds, about 3 minutes
    python benchmarks/distributed.py --quick           # a smoke test
    python benchmarks/distributed.py --models mlp2d --rounds 5

The machine has 2 cores, so the comparison is between ways of using both:
one process whose BLAS runs on two threads, against two MPI ranks with one
BLAS thread each (``mpiexec -n 2``, each rank on its own core). One process
with one thread is the baseline of the scaling efficiency:

    efficiency = (steps/s on 2 ranks) / (2 x steps/s of 1 process, 1 thread)

Each configuration runs as its own child process (BLAS threads are fixed at
start-up), in rounds whose order rotates. A round's rate is one over its
median step time (a neighbour's burst slows some steps, not half of them;
on 2 ranks the steps are in lockstep, and rank 0's are timed); the table
gives the median over the rounds, the mean rate of the whole run, and one
over the fastest step (what a quiet machine gives: a neighbour can only
slow a step down). The machine is shared: the header prints its load, and
the cost model is checked on the median and on the fastest steps.
The steps are the training loop's own: Batches.draw, train_step with the
communicator, and the small all-reduce of stop flags that train() makes
each step; nothing is written to disk. The MNIST model trains on random
784-d vectors of MNIST's shape (the timing depends on shapes alone).

The cost model of one step on k ranks (benchmarks/README.md):

    t(k) = t_update + (B / k) t_row + 2 (k - 1) / k * 4P / bandwidth + 2 (k - 1) latency

t_update (the optimizer and EMA on all P weights, done whole on every
rank) and t_row (the forward and backward pass per row) come from one
process on one thread at batch B and B/2; the all-reduce of the 4P-byte
gradient is timed alone on 2 ranks, and so is a one-number all-reduce
(the latency). The script prints the model's 2-rank step next to the
measured one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MODELS = {  # name: (data, batch B, steps timed, warm-up steps)
    "mlp2d": ("moons", 256, 600, 50),
    "mnist": ("mnist", 128, 30, 5),
}
SIDES = [  # (label, ranks, BLAS threads, batch divisor)
    ("1 process, 1 thread", 1, 1, 1),
    ("1 process, 1 thread, B/2", 1, 1, 2),
    ("1 process, 2 threads", 1, 2, 1),
    ("2 ranks, 1 thread each", 2, 1, 1),
]


# ---------------------------------------------------------------- the worker (one configuration, in a child)


def _dataset(name, config):
    import numpy as np

    from tinydiff import data
    from tinydiff.train import load_data

    if name == "mnist":  # MNIST's shape, without the download
        x = np.random.default_rng(0).uniform(-1, 1, (2048, 784)).astype(np.float32)
        return data.Dataset(x=x, image_shape=(28, 28), name="mnist", levels=256)
    return load_data(config)


def _allreduce_ms(communicator, size, repeats):
    """Mean milliseconds of one in-place Allreduce(SUM) of ``size`` float32 on every rank."""
    import numpy as np

    buffer = np.ones(size, dtype=np.float32)
    communicator.comm.Barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        communicator.transport.sum(buffer)
    return 1e3 * (time.perf_counter() - start) / repeats


def worker(model, batch_divisor, steps, warmup):
    from tinydiff import backend as B
    from tinydiff import distributed
    from tinydiff.train import TrainConfig, new_run, train_step
    from tinydiff.train.loop import Batches

    communicator = distributed.connect()
    name, batch = MODELS[model][0], MODELS[model][1] // batch_divisor
    config = TrainConfig(data=name, batch_size=batch, steps=10**6, n_data=10_000 if name == "moons" else None)
    run, dataset = new_run(config, _dataset(name, config))
    B.keep_freed_memory()
    batches = Batches(run, dataset)
    if communicator is not None:
        communicator.check_batch_size(run.config.batch_size)

    def step():
        x0, model_kwargs = batches.draw()
        train_step(run, x0, model_kwargs, communicator)
        if communicator is not None:
            communicator.maximum([0, 0])  # train()'s stop flags

    for _ in range(warmup):
        step()
    if communicator is not None:
        communicator.comm.Barrier()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    result = {"steps_per_s": 1 / statistics.median(times), "mean_steps_per_s": steps / sum(times),
              "best_steps_per_s": 1 / min(times), "parameters": int(run.parameters.size), "batch": batch}
    if communicator is not None:
        result["allreduce_ms"] = _allreduce_ms(communicator, run.parameters.size, 20 if name == "mnist" else 500)
        result["latency_ms"] = _allreduce_ms(communicator, 1, 2000)
        if communicator.rank != 0:
            return
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- the parent: run every side, print the tables


def _launch(model, ranks, threads, divisor, steps, warmup):
    environment = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                       MKL_NUM_THREADS=str(threads), TINYDIFF_BACKEND="numpy", OMPI_ALLOW_RUN_AS_ROOT="1",
                       OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--worker", model, "--divisor", str(divisor), "--steps", str(steps),
               "--warmup", str(warmup)]
    if ranks > 1:
        command = ["mpiexec", "-n", str(ranks), "--bind-to", "core"] + command
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(lines[0][len("RESULT "):])


def measure(model, rounds, scale):
    _, _, steps, warmup = MODELS[model]
    steps = max(2, int(steps * scale))
    results = {label: [] for label, *_ in SIDES}
    for round_number in range(rounds):
        order = SIDES[round_number % len(SIDES):] + SIDES[:round_number % len(SIDES)]
        for label, ranks, threads, divisor in order:
            results[label].append(_launch(model, ranks, threads, divisor, steps, warmup))
    return results


def _median(results, key):
    return statistics.median(r[key] for r in results)


def report(model, results):
    one, half, two_threads, ranks = (results[label] for label, *_ in SIDES)
    P, B = one[0]["parameters"], one[0]["batch"]
    print(f"\n{model}: {P:,} parameters, batch {B}; steps/s over {len(one)} rounds")
    print(f"  {'':28} {'median':>8} {'mean':>8} {'fastest':>8}")
    for label, *_ in SIDES:
        if "B/2" not in label:
            rates = [_median(results[label], key) for key in ("steps_per_s", "mean_steps_per_s", "best_steps_per_s")]
            print(f"  {label:28} " + " ".join(f"{r:8.1f}" for r in rates))
    allreduce, latency = _median(ranks, "allreduce_ms"), _median(ranks, "latency_ms")
    bandwidth = 4 * P / max(allreduce - latency, 1e-9) / 1e6  # GB/s, from t = 2 (k-1)/k 4P / W + 2 (k-1) alpha at k = 2
    print(f"  all-reduce of the {4 * P / 1e6:.2f} MB gradient on 2 ranks: {allreduce:.2f} ms ({bandwidth:.2f} GB/s); "
          f"of one number: {1e3 * latency:.0f} us")
    for key, what in (("steps_per_s", "median"), ("best_steps_per_s", "fastest")):
        rate = {label: _median(results[label], key) for label in results}
        efficiency = rate[SIDES[3][0]] / (2 * rate[SIDES[0][0]])
        # The cost model: t(B) = t_update + B t_row, from one process on one thread at B and B/2.
        t_full, t_half = 1e3 / rate[SIDES[0][0]], 1e3 / rate[SIDES[1][0]]
        t_row = (t_full - t_half) / (B - B // 2)
        t_update = t_full - B * t_row
        predicted = t_update + (B / 2) * t_row + allreduce + latency  # + the stop flags' all-reduce
        measured = 1e3 / rate[SIDES[3][0]]
        print(f"  {what} steps: efficiency {efficiency:.0%} (2 ranks against 2 x 1 thread), "
              f"{rate[SIDES[3][0]] / rate[SIDES[2][0]]:.2f}x of 1 process on 2 threads; cost model: t_update "
              f"{t_update:.2f} ms, t_row {1e3 * t_row:.1f} us/row -> 2-rank step {predicted:.2f} ms, measured "
              f"{measured:.2f} ms ({measured / predicted:.2f}x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp2d,mnist", help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 round, a tenth of the steps")
    parser.add_argument("--worker", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--divisor", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.divisor, args.steps, args.warmup)
    if shutil.which("mpiexec") is None:
        raise SystemExit('mpiexec is not on PATH: pip install -e ".[mpi]"')
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, load average {load:.2f}; OpenBLAS threads as in each row")
    for model in args.models.split(","):
        report(model, measure(model, 1 if args.quick else args.rounds, 0.1 if args.quick else 1.0))


if __name__ == "__main__":
    sys.exit(main())
