"""DDPM's 1000 ancestral steps against DDIM with 100, 50, 20 and 10: time and quality.

    python examples/compare_samplers.py                    # trains moons (5000 steps, about a minute), compares
    python examples/compare_samplers.py --checkpoint runs/moons/checkpoint.npz
    python examples/compare_samplers.py --data spiral --ddim 200,50,10 --out runs/samplers-spiral

One trained 2D model (its EMA weights), several samplers (Algorithm 2 of Ho
et al. 2020; DDIM, Song et al. 2020, Eq. 12 with eta = 0 on an evenly spaced
subsequence of steps). For each: the wall-clock time and the sliced
Wasserstein distance of its samples to a fresh draw of the data. The
distance means little alone, so the table also gives the floor: the
distance between two independent real draws of the same size (a perfect
sampler would sit at the floor, not at 0).

Writes to --out: samplers.png (the samples of each sampler over the data,
and the distance against the number of steps) and the training run when
one was trained.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

from tinydiff import backend as B  # noqa: E402
from tinydiff import data as data_module  # noqa: E402
from tinydiff import metrics, samplers, viz  # noqa: E402
from tinydiff import train as T  # noqa: E402


def parse_steps(text):
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--ddim must be comma-separated integers like 100,50,20,10, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"--ddim must list step counts >= 1, got {text!r}")
    return steps


def get_run(args, log=print):
    """A trained 2D run: from --checkpoint, or trained now into OUT/run."""
    if args.checkpoint:
        run = T.load_run(args.checkpoint)
        log(f"loaded {args.checkpoint}: {run.config.data}, step {run.step}")
    else:
        config = T.TrainConfig(data=args.data, steps=args.steps, seed=args.seed,
                               checkpoint_every=max(1000, args.steps))
        log(f"training the default 2D MLP on {args.data} for {args.steps} steps ...", flush=True)
        result = T.train(config, os.path.join(args.out, "run"), progress=not args.no_progress, log=log)
        log(f"  {len(result.losses)} steps in {result.seconds:.1f} s, final loss {result.losses[-1][1]:.4f}")
        run = result.run
    if run.image_shape is not None or run.data_dim != 2:
        raise ValueError(f"this example compares samplers on 2D sets; the checkpoint holds {run.config.data!r}")
    return T.use_ema_weights(run)


def compare(run, ddim_steps, n, seed, log=print):
    """Rows (label, steps, seconds, distance, samples) for DDPM and each DDIM step count."""
    plans = [("DDPM", run.diffusion.T, lambda rng: samplers.ddpm(run.model, run.diffusion, (n, 2), rng))]
    for k in ddim_steps:
        if k > run.diffusion.T:
            raise ValueError(f"--ddim: {k} steps is more than the diffusion's T = {run.diffusion.T}")
        plans.append((f"DDIM {k}", k, lambda rng, k=k: samplers.ddim(run.model, run.diffusion, (n, 2), rng, steps=k)))
    fresh = data_module.load(run.config.data, n=n, seed=seed + 11).x
    rows = []
    for label, steps, sample in plans:
        start = time.perf_counter()
        samples = B.to_numpy(sample(B.default_rng(seed)))
        seconds = time.perf_counter() - start
        distance = metrics.sliced_wasserstein(samples, fresh)
        rows.append((label, steps, seconds, distance, samples))
        log(f"  {label:9s} {seconds:6.2f} s  sliced Wasserstein {distance:.4f}", flush=True)
    floor = metrics.sliced_wasserstein(data_module.load(run.config.data, n=n, seed=seed + 12).x, fresh)
    return rows, floor, fresh


def print_table(rows, floor, n, log=print):
    log(f"\n{'sampler':10s} {'steps':>6} {'seconds':>8} {'ms/step':>8} {'sliced W':>9} {'/ floor':>8}")
    for label, steps, seconds, distance, _ in rows:
        log(f"{label:10s} {steps:6d} {seconds:8.2f} {1e3 * seconds / steps:8.2f} {distance:9.4f} "
            f"{distance / floor:8.2f}")
    log(f"{'real/real':10s} {'':>6} {'':>8} {'':>8} {floor:9.4f} {1.0:8.2f}   (the floor: two fresh draws "
        f"of {n} points)")


def plot(rows, floor, data, path, title):
    """Samples of each sampler over the data, then the distance against the number of steps."""
    panels = len(rows) + 1
    fig = _common.figure(2.6 * panels, 3.0)
    view, size = _common.square_view(data), _common.point_size(len(data))
    for i, (label, _, seconds, distance, samples) in enumerate(rows):
        ax = fig.add_subplot(1, panels, i + 1)
        _common.scatter_panel(ax, [(data, viz.DATA_COLOR, 1.0), (samples, viz.POINT_COLOR, 0.7)], view, size)
        ax.tick_params(labelsize="small")
        ax.set_title(f"{label}\n{seconds:.2f} s, SW {distance:.3f}", fontsize="small")
    ax = fig.add_subplot(1, panels, panels)
    ddim = [(steps, distance) for label, steps, _, distance, _ in rows if label.startswith("DDIM")]
    if ddim:
        ddim.sort()
        ax.plot([s for s, _ in ddim], [d for _, d in ddim], "o-", color=viz.POINT_COLOR, label="DDIM")
    ddpm = [(steps, distance) for label, steps, _, distance, _ in rows if label == "DDPM"]
    if ddpm:
        ax.plot([ddpm[0][0]], [ddpm[0][1]], "s", color="tab:red", label="DDPM")
    ax.axhline(floor, color="0.4", linestyle="--", label="real vs real")
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel("sliced Wasserstein to data")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    ax.set_title("quality against steps", fontsize="small")
    return _common.save_figure(fig, path, title)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "compare-samplers"))
    parser.add_argument("--checkpoint", default=None, help="a 2D training checkpoint (default: train one now)")
    parser.add_argument("--data", default="moons", choices=data_module.DATASETS_2D, help="set to train on")
    parser.add_argument("--steps", type=int, default=T.TrainConfig().resolved(image_data=False).steps,
                        help="training steps (default: the train default, %(default)s)")
    parser.add_argument("--ddim", default="100,50,20,10", help="DDIM step counts (default 100,50,20,10)")
    parser.add_argument("--n", type=int, default=2000, help="samples per sampler (default 2000)")
    args = parser.parse_args(argv)
    ddim_steps = _common.parse_or_refuse(parser, parse_steps, args.ddim)
    if args.n < 2 or args.steps < 1:
        parser.error("--n must be >= 2 and --steps >= 1")

    _common.prepare(args)
    run = get_run(args)
    print(f"sampling {args.n} points with each sampler ...")
    rows, floor, fresh = compare(run, ddim_steps, args.n, args.seed)
    print_table(rows, floor, args.n)
    path = plot(rows, floor, fresh, os.path.join(args.out, "samplers.png"),
                f"{run.config.data}: DDPM against DDIM ({args.n} samples, model at step {run.step})")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
