"""Every CPU benchmark in one run, with the targets next to the results.

1. Training step (benchmarks/engine.py): the two default denoisers, 2D MLP
   at batch 256 and 1024 and the residual MLP on 784-d vectors at batch 128,
   for tinydiff, hand-written NumPy and PyTorch on the CPU (if installed);
   each configuration first checks that the sides compute the same step.
2. Sampling (benchmarks/sampling.py): 10,000 2D points with DDPM (1000
   steps) and DDIM (50 steps), the default 2D MLP, same three sides.
3. Memory (benchmarks/memory.py): the peak resident memory of a fresh
   process training the default MNIST configuration at batch 128.

Ratios are tinydiff's speed over the reference's (1.00: as fast; above 1:
tinydiff is faster). The header names the machine, NumPy's BLAS and its
threads; on a shared machine compare ratios from one run, not absolute times.

    python benchmarks/all.py            # about 4 minutes on 2 cores
    python benchmarks/all.py --quick    # a smoke run, about a minute; verdicts only indicative
    python benchmarks/all.py --no-torch --skip sampling
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import engine  # noqa: E402
import memory  # noqa: E402
import sampling  # noqa: E402

from tinydiff import backend as B  # noqa: E402

PARTS = ("train", "sampling", "memory")
TRAIN_KEYS = ("mlp256", "mlp1024", "resmlp128")

# (config, reference side, minimum of tinydiff speed / reference speed)
TRAIN_TARGETS = [
    ("mlp256", "hand-written", 0.9),
    ("mlp256", "torch", 0.8),
    ("mlp1024", "hand-written", 0.9),
    ("resmlp128", "hand-written", 0.9),
    ("resmlp128", "torch", 1.0),
]


def _verdict(ok, quick):
    word = "MET" if ok else "MISSED"
    return f"{word} (quick)" if quick else word


def summary(train_rows, sampling_rows, memory_report, quick, torch_present, log=print):
    """The results against the targets, one line each; returns the number of targets missed."""
    log("\n== summary: tinydiff against the targets ==")
    log(f"{'measure':40s} {'tinydiff':>10} {'reference':>22} {'tiny/ref':>9}  {'target':24s} verdict")
    missed = 0
    results = dict(train_rows)
    shown = set()
    for key, side, minimum in TRAIN_TARGETS:
        if key not in results:
            continue
        config = engine.CONFIGS[key]
        first = key not in shown
        label = f"train steps/s, {config.label}" if first else ""
        shown.add(key)
        tiny = results[key].get("tinydiff")
        tiny_cell = f"{tiny[0]:.1f}" if first else ""
        ref = results[key].get(side)
        name = "hand" if side == "hand-written" else side
        target = f">= {minimum:.2f} x {name}"
        if ref is None:
            why = "torch not installed" if side == "torch" and not torch_present else "not measured"
            log(f"{label:40s} {tiny_cell:>10} {name + ' -':>22} {'-':>9}  {target:24s} n/a ({why})")
            continue
        ratio = tiny[0] / ref[0]
        ok = ratio >= minimum
        missed += not ok
        log(f"{label:40s} {tiny_cell:>10} {f'{name} {ref[0]:.1f}':>22} {ratio:9.2f}  {target:24s} "
            f"{_verdict(ok, quick)}")
    for row in sampling_rows:
        seconds = row["seconds"]
        tiny = seconds["tinydiff"]
        mark = "~" if row["estimated"] else ""
        first = True
        for side in ("hand-written", "torch"):
            if side not in seconds:
                continue
            label = f"sample s, {row['label']}, {row['n']} pts" if first else ""
            tiny_cell = f"{mark}{tiny:.2f}" if first else ""
            target, verdict = "-", "(reference)"
            if first and row["kind"] == "ddpm":
                target = f"<= {sampling.TARGET_DDPM_SECONDS:g} s"
                if row["n"] == sampling.N_POINTS:
                    ok = tiny <= sampling.TARGET_DDPM_SECONDS
                    missed += not ok
                    verdict = _verdict(ok, quick or row["estimated"])
                else:
                    verdict = f"n/a (n = {row['n']})"
            name = "hand" if side == "hand-written" else side
            log(f"{label:40s} {tiny_cell:>10} {f'{name} {seconds[side]:.2f}':>22} "
                f"{seconds[side] / tiny:9.2f}  {target:24s} {verdict}")
            first = False
    if memory_report is not None:
        ok = memory_report["peak_mb"] < memory.TARGET_MB
        missed += not ok
        log(f"{'peak MB, MNIST training, batch ' + str(memory_report['batch_size']):40s} "
            f"{memory_report['peak_mb']:10.0f} {'':>22} {'':>9}  {f'< {memory.TARGET_MB:.0f} MB':24s} "
            f"{_verdict(ok, quick)}")
    log("tiny/ref: tinydiff's speed over the reference's (steps/s ratio; for sampling, the reference's "
        "time over tinydiff's): 1.00 as fast, above 1 tinydiff faster")
    if any(row["estimated"] for row in sampling_rows):
        log("~ estimated from the first 50 DDPM steps (--quick)")
    return missed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 short rounds, DDPM timed over 50 steps, 5 memory steps")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out, from {', '.join(PARTS)}")
    parser.add_argument("--rounds", type=int, default=None, help="training: rounds per side (default 7, quick 2)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="training: seconds per side per round (default 1.2, quick 0.15)")
    parser.add_argument("--n", type=int, default=sampling.N_POINTS, help="sampling: points (default 10,000)")
    parser.add_argument("--memory-steps", type=int, default=None, help="memory: training steps (default 30, quick 5)")
    args = parser.parse_args(argv)
    skip = {p.strip() for p in args.skip.split(",") if p.strip()}
    if skip - set(PARTS):
        parser.error(f"--skip: unknown {sorted(skip - set(PARTS))}; choose from {', '.join(PARTS)}")
    rounds = args.rounds if args.rounds is not None else (2 if args.quick else 7)
    seconds = args.seconds if args.seconds is not None else (0.15 if args.quick else 1.2)
    pause = 0.1 if args.quick else 0.25
    memory_steps = args.memory_steps if args.memory_steps is not None else (5 if args.quick else 30)
    if rounds < 1 or seconds <= 0 or args.n < 1 or memory_steps < 1:
        parser.error("--rounds, --n and --memory-steps must be >= 1 and --seconds > 0")

    started = time.perf_counter()
    B.set_backend("numpy")
    kept = B.keep_freed_memory()  # as train() does; process-wide, so every side runs under it
    blas = engine.blas_summary()  # before torch loads its own thread pools
    torch = None if args.no_torch else engine.torch_or_none()
    if torch is not None:
        torch.set_num_threads(engine.core_count())
        adam = engine.torch_adam(torch, [torch.nn.Parameter(torch.zeros(1))])[1]
        torch_note = f"{torch.__version__}, {torch.get_num_threads()} threads, CPU, Adam {adam}"
    else:
        torch_note = "left out (--no-torch)" if args.no_torch else \
            "not installed (optional: pip install torch adds the reference column)"
    engine.header(blas, torch_note)
    print("malloc keeps freed memory (backend.keep_freed_memory, as train() does)" if kept
          else "malloc setting unavailable here: default malloc")
    all_ok = True

    train_rows = []
    if "train" not in skip:
        print(f"\n== 1. training step: {rounds} rounds x ~{seconds:g} s per side, sides alternating ==")
        for key in TRAIN_KEYS:
            config = engine.CONFIGS[key]
            print(f"\n{config.label} ({key}):", flush=True)
            sides, ok = engine.build_sides(config, torch)
            all_ok &= ok
            train_rows.append((key, engine.time_sides(sides, rounds, seconds, pause)))
        engine.table([(engine.CONFIGS[key], result) for key, result in train_rows])

    sampling_rows = []
    if "sampling" not in skip:
        print(f"\n== 2. sampling {args.n} 2D points, default MLP (untrained weights; the time does not "
              f"depend on them) ==", flush=True)
        sampling_rows = sampling.run_benchmark(args.n, quick=args.quick, torch=torch, pause=pause)
        sampling.print_table(sampling_rows)
        for row in sampling_rows:
            for side, err in row["agreement"].items():
                if err is not None and err > 1e-3:
                    print(f"  FAIL: {side} samples differ from tinydiff's by {err:.1e} ({row['label']})")
                    all_ok = False

    memory_report = None
    if "memory" not in skip:
        print(f"\n== 3. memory: default MNIST training, batch 128, {memory_steps} steps, fresh process ==",
              flush=True)
        memory_report = memory.measure(memory_steps)
        for line in memory.report_lines(memory_report):
            print(line)

    missed = summary(train_rows, sampling_rows, memory_report, args.quick, torch is not None)
    print(f"\nchecks (sides agree): {'OK' if all_ok else 'FAIL'}; targets missed: {missed}; "
          f"total {time.perf_counter() - started:.0f} s")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
