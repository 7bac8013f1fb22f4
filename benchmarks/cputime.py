"""CPU time of one training step, tinydiff against hand-written NumPy: the steady measure.

Wall-clock steps/s on a shared machine move by up to 2x from minute to
minute (engine.py's spread line shows it), often more than the change being
measured. The CPU time one step needs on one core moves much less. This
script pins BLAS to one thread (before NumPy is imported), runs the same
steps as engine.py (tinydiff, and benchmarks/handwritten.py from the same
weights) in alternating blocks, and reports for each side the least CPU
time any one step took: a neighbour's burst can only make a step look
slower, so the least-disturbed step is the one that counts. The ratio is
tinydiff's speed over the hand-written step's (1.00: as fast).

    python benchmarks/cputime.py                      # the three configurations, about 40 s
    python benchmarks/cputime.py --configs mlp256 --steps-scale 3
    python benchmarks/cputime.py --against ../before  # also the tinydiff of another checkout, for a before/after

With ``--against PATH`` the same measurement runs a second time in a child
process that imports ``tinydiff`` from PATH (a checkout or worktree of an
earlier commit, say ``git worktree add ../before HEAD~3``), and the table
gets its columns too. What this does not show: anything that depends on
BLAS threads (engine.py measures that, in wall-clock time).
"""

from __future__ import annotations

import os
import sys

# One BLAS thread, set before NumPy is first imported (here, or by engine.py below).
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent

STEPS = {"mlp256": 2000, "mlp1024": 600, "resmlp128": 60}  # per side; each block is a tenth of them


def _import_tinydiff_from(path):
    """Import tinydiff from ``path`` before engine.py puts this checkout first on sys.path."""
    if path is not None:
        sys.path.insert(0, str(Path(path).resolve()))
    import tinydiff

    return tinydiff


def measure(configs, steps_scale=1.0, blocks=10, log=print):
    """{config: {"tinydiff": ms, "hand-written": ms}}: the least CPU time of one step per side."""
    sys.path.insert(0, str(HERE))
    import engine  # noqa: E402  (after tinydiff: engine keeps the tinydiff already imported)

    engine.B.keep_freed_memory()  # as train() does
    results = {}
    for key in configs:
        config = engine.CONFIGS[key]
        state = engine.initial_state(config)
        sides = {"tinydiff": engine.TinydiffSide(config, state), "hand-written": engine.HandSide(config, state)}
        per_block = max(1, round(STEPS[key] * steps_scale / blocks))
        best = {name: float("inf") for name in sides}
        for side in sides.values():  # warm up: workspaces, the allocator, the caches
            for _ in range(3):
                side.step()
        for block in range(blocks):
            names = list(sides) if block % 2 == 0 else list(sides)[::-1]
            for name in names:
                side = sides[name]
                for _ in range(per_block):
                    start = time.process_time()
                    side.step()
                    best[name] = min(best[name], time.process_time() - start)
        results[key] = {name: 1e3 * seconds for name, seconds in best.items()}
        log(f"  {config.label}: {per_block * blocks} steps per side", flush=True)
    return results


def _child(path, configs, steps_scale):
    """The same measurement with tinydiff imported from ``path``, in a fresh interpreter."""
    args = [sys.executable, str(Path(__file__).resolve()), "--configs", ",".join(configs),
            "--steps-scale", str(steps_scale), "--json", "--tinydiff-from", str(Path(path).resolve())]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the run against {path} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results, other=None, other_name=None):
    print()
    head = f"{'config':26s} {'tinydiff':>9} {'hand':>9} {'tiny/hand':>9}"
    if other:
        head += f" {'other':>9} {'other/hand':>10}"
    print(head + "   (least CPU ms of one step, one BLAS thread)")
    for key, sides in results.items():
        tiny, hand = sides["tinydiff"], sides["hand-written"]
        line = f"{key:26s} {tiny:9.3f} {hand:9.3f} {hand / tiny:8.2f}x"
        if other:
            o_tiny, o_hand = other[key]["tinydiff"], other[key]["hand-written"]
            line += f" {o_tiny:9.3f} {o_hand / o_tiny:9.2f}x"
        print(line)
    print("tiny/hand: the hand-written step's CPU time over tinydiff's (tinydiff's speed as a share of it)")
    if other:
        print(f"other: tinydiff imported from {other_name}, its ratio to the hand-written step timed in its own run")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="mlp256,mlp1024,resmlp128", help="comma-separated (engine.py's keys)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale the steps per side (default 1)")
    parser.add_argument("--against", default=None, help="another checkout whose tinydiff is timed too")
    parser.add_argument("--tinydiff-from", default=None, help=argparse.SUPPRESS)  # the child of --against
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in STEPS]
    if unknown or not configs:
        parser.error(f"--configs: unknown {unknown or configs}; choose from {', '.join(STEPS)}")
    if args.steps_scale <= 0:
        parser.error(f"--steps-scale must be > 0, got {args.steps_scale}")
    if args.against is not None and not (Path(args.against) / "tinydiff" / "__init__.py").is_file():
        parser.error(f"--against: {args.against} holds no tinydiff/__init__.py (a checkout of this repository?)")
    tinydiff = _import_tinydiff_from(args.tinydiff_from)
    if args.json:  # the child of --against: numbers only
        results = measure(configs, args.steps_scale, log=lambda *a, **k: None)
        print(json.dumps({"tinydiff": str(Path(tinydiff.__file__).parent), "results": results}))
        return 0
    sys.path.insert(0, str(HERE))
    import engine  # noqa: E402

    engine.header(engine.blas_summary(), "not used (one-thread CPU time of tinydiff and hand-written only)")
    print(f"tinydiff from {Path(tinydiff.__file__).parent}; BLAS pinned to 1 thread")
    results = measure(configs, args.steps_scale)
    other, other_name = None, None
    if args.against:
        child = _child(args.against, configs, args.steps_scale)
        other, other_name = child["results"], child["tinydiff"]
    print_table(results, other, other_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
