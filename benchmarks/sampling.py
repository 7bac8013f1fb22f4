"""Sampling speed: 10,000 2D points with DDPM (1000 steps) and DDIM (50 steps).

The default 2D denoiser (``nn.MLPDenoiser()``: embedding 128, three hidden
layers of 128, GELU) and the default diffusion (linear betas 1e-4..0.02,
T = 1000, eps-prediction), run on three sides:

- tinydiff: ``samplers.ddpm`` (Algorithm 2) and ``samplers.ddim`` (Song et
  al. 2020, Eq. 12, eta = 0), as a user calls them.
- hand-written: the same loops in plain NumPy around the hand-written
  forward pass of benchmarks/handwritten.py (preallocated buffers, no graph).
- torch (only if ``import torch`` works): the same loops around the same
  network in PyTorch on the CPU, under inference_mode.

All three compute a step alike: every row of a step shares t, so the
timestep embedding's part of the first layer, [x, emb] W^T + b =
x W_x^T + (emb W_emb^T + b), is one row computed once per step (tinydiff's
denoisers say ``accepts_scalar_t`` and the samplers hand them the one int).
``--per-row-t`` also times tinydiff with t as an (N,) array, the call any
other model gets, to show what that saves.

Every side starts from the same weights and consumes the same noise: the
references redraw, step by step, the arrays tinydiff's sampler draws (x_T
keyed (base, T), z_t keyed (base, t), see samplers.py), so the final samples
must agree; the table prints the relative difference. The weights are the
untrained initial ones: the time of a step does not depend on their values.

    python benchmarks/sampling.py            # about a minute on 2 cores
    python benchmarks/sampling.py --quick    # DDPM timed over its first 50 steps, x T/50
    python benchmarks/sampling.py --n 2000 --no-torch
    python benchmarks/sampling.py --per-row-t   # + tinydiff with t per row
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import engine  # noqa: E402
from handwritten import HandMLP  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import samplers  # noqa: E402
from tinydiff import train as T  # noqa: E402

N_POINTS = 10_000
DDIM_STEPS = 50
SEED = 0
TARGET_DDPM_SECONDS = 10.0


class StopSampling(Exception):
    """Raised by a counting model to end a sampler after a fixed number of steps."""


def default_model_and_diffusion():
    """The default 2D denoiser (untrained, seed 0) and the default diffusion of TrainConfig."""
    config = T.TrainConfig().resolved(image_data=False)
    model = T.build_model(config, data_dim=2)
    return model, T.build_diffusion(config)


def host_state(model):
    return {name: np.array(B.to_numpy(a), copy=True) for name, a in model.state_dict().items()}


def host_schedule(diffusion):
    """betas and alpha_bar as Python floats (host), for the reference loops."""
    betas = [float(v) for v in B.to_numpy(diffusion.schedule.betas).tolist()]
    alpha_bars = [float(v) for v in B.to_numpy(diffusion.schedule.alpha_bars).tolist()]
    return betas, alpha_bars


class SameNoise:
    """The noise tinydiff's sampler draws for a generator seeded ``seed`` (NumPy backend).

    The sampler takes one seed ``base`` from its generator, then draws x_T
    from default_rng((base, T)) and the noise of step t from
    default_rng((base, t)); this redraws the same arrays for the references.
    """

    def __init__(self, seed, shape):
        self.base = B.default_rng(seed).next_seed()
        self.shape = shape

    def __call__(self, key):
        return B.default_rng((self.base, int(key))).normal(self.shape)


# ---------------------------------------------------------------------------
# The sides: each returns a function run(kind, n, limit) -> samples (host)
# ---------------------------------------------------------------------------


def tinydiff_runner(model, diffusion, per_row_t=False):
    """samplers.ddpm / ddim around the model. per_row_t: hide accepts_scalar_t, so the
    model gets t as an (N,) array each step (any user callable's call) and computes its
    timestep conditioning for every row."""

    def run(kind, n, limit=None):
        calls = [0]

        def counted(x, t, **kwargs):
            calls[0] += 1
            if limit is not None and calls[0] > limit:
                raise StopSampling
            return model(x, t, **kwargs)

        counted.accepts_scalar_t = getattr(model, "accepts_scalar_t", False) and not per_row_t

        rng = B.default_rng(SEED)
        if kind == "ddpm":
            x = samplers.ddpm(counted, diffusion, (n, 2), rng)
        else:
            x = samplers.ddim(counted, diffusion, (n, 2), rng, steps=DDIM_STEPS)
        return B.to_numpy(x)

    return run


def _reference_loop(kind, n, limit, T_steps, betas, alpha_bars, eps_fn, to_side, from_side):
    """DDPM (Eq. 11) or DDIM (Eq. 12, eta 0) with eps_fn(x, t) -> eps; x lives on the side."""
    noise = SameNoise(SEED, (n, 2))
    x = to_side(noise(T_steps))  # x_T ~ N(0, I)
    if kind == "ddpm":
        sequence = list(range(T_steps - 1, -1, -1))
    else:
        sequence = samplers.timesteps(T_steps, DDIM_STEPS)
    for i, t in enumerate(sequence):
        if limit is not None and i >= limit:
            raise StopSampling
        eps = eps_fn(x, t)
        if kind == "ddpm":
            # Eq. 11: mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t); sigma_t^2 = beta_t
            beta, alpha_bar = betas[t], alpha_bars[t]
            x = (x - (beta / math.sqrt(1.0 - alpha_bar)) * eps) * (1.0 / math.sqrt(1.0 - beta))
            if t > 0:
                x = x + math.sqrt(beta) * to_side(noise(t))
        else:
            alpha_bar = alpha_bars[t]
            prev = sequence[i + 1] if i + 1 < len(sequence) else -1
            alpha_bar_prev = alpha_bars[prev] if prev >= 0 else 1.0
            x0 = (x - math.sqrt(1.0 - alpha_bar) * eps) * (1.0 / math.sqrt(alpha_bar))  # Eq. 15
            x = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1.0 - alpha_bar_prev) * eps  # Eq. 12
    return from_side(x)


def hand_runner(state, diffusion):
    net = HandMLP(state, data_dim=2)
    betas, alpha_bars = host_schedule(diffusion)

    def eps_fn(x, t):
        return net.forward_one_t(x, t)  # a workspace buffer: used before the next call

    def run(kind, n, limit=None):
        return _reference_loop(kind, n, limit, diffusion.T, betas, alpha_bars, eps_fn,
                               lambda a: a, lambda a: np.array(a, copy=True))

    return run


def torch_runner(torch, state, diffusion):
    MLP, _ = engine.torch_models(torch)
    net = MLP(data_dim=2)
    net.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()})
    net.eval()
    betas, alpha_bars = host_schedule(diffusion)

    def eps_fn(x, t):
        return net.forward_one_t(x, t)

    def run(kind, n, limit=None):
        with torch.inference_mode():
            return _reference_loop(kind, n, limit, diffusion.T, betas, alpha_bars, eps_fn,
                                   torch.from_numpy, lambda a: a.numpy().copy())

    return run


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def _time(run, kind, n, limit, total_steps, pause):
    """Seconds for the whole sampler (or the first ``limit`` steps, scaled to all)."""
    time.sleep(pause)  # let the previous side's BLAS threads stop spinning
    start = time.perf_counter()
    samples = None
    try:
        samples = run(kind, n, limit)
    except StopSampling:
        pass
    elapsed = time.perf_counter() - start
    if limit is not None and limit < total_steps:
        elapsed *= total_steps / limit
    return elapsed, samples


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30))


def run_benchmark(n=N_POINTS, quick=False, torch=None, repeats=None, pause=0.25, log=print, per_row_t=False):
    """Time DDPM (T steps) and DDIM (50 steps) on every side; returns a list of row dicts.

    Each row: {"label", "kind", "steps", "n", "estimated", "seconds": {side: s},
    "agreement": {side: relative difference to tinydiff's samples, or None}}.
    With quick, DDPM is timed over its first 50 steps and scaled to T (the
    row says "estimated"), and DDIM runs once.
    """
    B.set_backend("numpy")
    model, diffusion = default_model_and_diffusion()
    state = host_state(model)
    runners = {"tinydiff": tinydiff_runner(model, diffusion), "hand-written": hand_runner(state, diffusion)}
    if per_row_t:
        runners["tinydiff, t per row"] = tinydiff_runner(model, diffusion, per_row_t=True)
    if torch is not None:
        runners["torch"] = torch_runner(torch, state, diffusion)
    for run in runners.values():  # warm up: workspaces, thread pools, the allocator
        run("ddim", min(n, 512))
    rows = []
    ddpm_repeats = 1 if repeats is None else repeats
    ddim_repeats = (1 if quick else 3) if repeats is None else repeats
    plans = [("ddpm", f"DDPM {diffusion.T} steps", diffusion.T, 50 if quick else None, ddpm_repeats),
             ("ddim", f"DDIM {DDIM_STEPS} steps", DDIM_STEPS, None, ddim_repeats)]
    for kind, label, steps, limit, reps in plans:
        log(f"  {label}, {n} points{' (first 50 steps timed, scaled)' if limit else ''} ...", flush=True)
        seconds = {name: [] for name in runners}
        outputs = {}
        names = list(runners)
        for r in range(reps):
            for name in names[r % len(names):] + names[: r % len(names)]:
                elapsed, samples = _time(runners[name], kind, n, limit, steps, pause)
                seconds[name].append(elapsed)
                outputs[name] = samples
        reference = outputs.get("tinydiff")
        agreement = {
            name: (None if reference is None or out is None else _rel(out, reference))
            for name, out in outputs.items() if name != "tinydiff"
        }
        rows.append({
            "label": label, "kind": kind, "steps": steps, "n": n, "estimated": limit is not None,
            "seconds": {name: statistics.median(v) for name, v in seconds.items()},
            "agreement": agreement,
        })
    return rows


def print_table(rows, log=print):
    log()
    log(f"{'sampler':18s} {'points':>7} {'tinydiff':>9} {'hand':>8} {'hand/tiny':>9} {'torch':>8} {'torch/tiny':>10}"
        f"   samples agree (rel. diff.)")
    log(f"{'':18s} {'':>7} {'s':>9} {'s':>8} {'speed':>9} {'s':>8} {'speed':>10}")
    for row in rows:
        s = row["seconds"]
        tiny, hand, tch = s.get("tinydiff"), s.get("hand-written"), s.get("torch")

        def sec(v):
            return f"{v:8.2f}" if v is not None else f"{'-':>8}"

        def speed(ref, tiny=tiny):  # > 1: tinydiff is slower than the reference by that factor
            return f"{tiny / ref:8.2f}x" if ref and tiny else f"{'-':>9}"

        agree = ", ".join(
            f"{name} {'n/a' if err is None else f'{err:.1e}'}" for name, err in row["agreement"].items()
        )
        mark = "~" if row["estimated"] else " "
        log(f"{row['label']:18s} {row['n']:7d} {mark}{tiny:8.2f} {sec(hand)} {speed(hand)} {sec(tch)} "
            f"{speed(tch):>10}   {agree}")
    for row in rows:
        per_row = row["seconds"].get("tinydiff, t per row")
        if per_row is not None:
            log(f"{row['label']}: tinydiff with t as an (N,) array each step (conditioning per row): "
                f"{per_row:.2f} s, {per_row / row['seconds']['tinydiff']:.2f}x the time with one int t")
    if any(row["estimated"] for row in rows):
        log("~ estimated: the first 50 steps timed and scaled to all steps (--quick)")
    log("speed columns: the reference's speed over tinydiff's = tinydiff's time / the reference's time "
        "(as hand/tiny in engine.py: 2.00x means tinydiff takes twice as long)")


def target_line(rows):
    """The line for the target 'DDPM, 10,000 points, 1000 steps in <= 10 s' (None if not measured)."""
    for row in rows:
        if row["kind"] == "ddpm":
            seconds = row["seconds"]["tinydiff"]
            judged = row["n"] == N_POINTS and not row["estimated"]
            verdict = ("MET" if seconds <= TARGET_DDPM_SECONDS else "MISSED") if judged else \
                "not judged (" + ("estimated" if row["estimated"] else f"n = {row['n']}") + ")"
            return (f"tinydiff DDPM {row['steps']} steps, {row['n']} points: {seconds:.2f} s "
                    f"(target <= {TARGET_DDPM_SECONDS:g} s for 10,000 points): {verdict}")
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="DDPM timed over 50 steps and scaled; DDIM once")
    parser.add_argument("--n", type=int, default=N_POINTS, help=f"points to sample (default {N_POINTS})")
    parser.add_argument("--repeats", type=int, default=None, help="runs per side (default: DDPM 1, DDIM 3)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    parser.add_argument("--per-row-t", action="store_true",
                        help="also time tinydiff with t as an (N,) array per step, as before accepts_scalar_t")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    B.set_backend("numpy")
    blas = engine.blas_summary()
    torch = None if args.no_torch else engine.torch_or_none()
    if torch is not None:
        torch.set_num_threads(engine.core_count())
    engine.header(blas, f"{torch.__version__}, {torch.get_num_threads()} threads, CPU" if torch is not None
                  else "left out" if args.no_torch else "not installed (optional)")
    rows = run_benchmark(args.n, quick=args.quick, torch=torch, repeats=args.repeats, per_row_t=args.per_row_t)
    print_table(rows)
    print(target_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
