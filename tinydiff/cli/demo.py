"""The demo command: train on two moons for about a minute, sample, and draw every stage."""

from __future__ import annotations

import os

from .common import EXIT_SIGNAL_BASE, add_backend, log, non_empty_path, positive_int, refuse_existing_run, save_npy, set_backend
from .plot import forward_snapshots, reverse_snapshots
from .sample import sample_run


def add_parser(commands):
    demo = commands.add_parser("demo", help="train on moons for about a minute, then sample and draw it all")
    demo.add_argument("--out", type=non_empty_path, metavar="DIR", default=os.path.join("runs", "demo"),
                      help="output folder (default runs/demo); it must not hold a run already")
    demo.add_argument("--steps", type=positive_int, default=20000, help="training steps (default 20000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--n", type=positive_int, default=2000, help="samples to draw (default 2000)")
    demo.add_argument("--no-progress", action="store_true")
    add_backend(demo)
    return demo


def _train(args):
    from .. import train as T

    config = T.TrainConfig(data="moons", steps=args.steps, seed=args.seed,
                           checkpoint_every=max(1000, args.steps // 4), log_every=200)
    log(f"training the 2D MLP on moons for {args.steps} steps (Algorithm 1) ...")
    result = T.train(config, args.out, progress=not args.no_progress, log=log)
    rate = len(result.losses) / max(result.seconds, 1e-9)
    last = f", final loss {result.losses[-1][1]:.4f}" if result.losses else ""
    log(f"  {len(result.losses)} steps in {result.seconds:.0f} s ({rate:.0f} steps/s){last}")
    return result


def _draw(args, run, samples, trajectory):
    """The pictures of the demo; returns the paths written."""
    from .. import train as T
    from .. import viz

    out = args.out
    data = T.load_data(run.config).x[:args.n]
    written = [viz.plot_samples_2d(samples, data, os.path.join(out, "samples.png"),
                                   title=f"{args.n} DDPM samples (colour) over the data (grey)")]
    snapshots = forward_snapshots(data[:1000], run.diffusion, [0, 50, 100, 200, 400, 700, 999], args.seed)
    written.append(viz.plot_forward_2d(snapshots, os.path.join(out, "forward.png")))
    reverse = reverse_snapshots(trajectory)
    written.append(viz.plot_reverse_2d(reverse[:: max(1, len(reverse) // 6)] + [reverse[-1]],
                                       os.path.join(out, "reverse.png"), data=data))
    written.append(viz.animate_reverse_2d(reverse, os.path.join(out, "reverse.gif"), data=data))
    steps, losses = T.read_losses(out)
    written.append(viz.plot_loss(steps, losses, os.path.join(out, "loss.png"), title="training loss (Eq. 14)"))
    return written


def command_demo(args):
    from .. import backend as B
    from .. import train as T

    refuse_existing_run("demo", args.out, "choose another --out, or continue it with 'tinydiff train --resume'")
    set_backend(args.backend)
    os.makedirs(args.out, exist_ok=True)
    result = _train(args)
    if result.stop_signal:
        return EXIT_SIGNAL_BASE + result.stop_signal
    run = T.use_ema_weights(result.run)
    log(f"sampling {args.n} points with 1000 ancestral steps (Algorithm 2) ...")
    samples, trajectory = sample_run(run, args.n, "ddpm", seed=args.seed, progress=not args.no_progress,
                                     return_trajectory=True, every=50)
    samples = B.to_numpy(samples)
    written = [save_npy(os.path.join(args.out, "samples.npy"), samples)]
    written += _draw(args, run, samples, trajectory)
    written.append(result.checkpoint)
    log("wrote:")
    for path in written:
        log(f"  {path}")
    log(_sliced_wasserstein_report(samples, run))
    return 0


def _sliced_wasserstein_report(samples, run):
    from .. import data as data_module
    from .. import metrics

    fresh = data_module.load(run.config.data, n=samples.shape[0], seed=run.config.seed + 1).x
    other = data_module.load(run.config.data, n=samples.shape[0], seed=run.config.seed + 2).x
    model_distance = metrics.sliced_wasserstein(samples, fresh)
    floor = metrics.sliced_wasserstein(other, fresh)
    return (f"sliced Wasserstein distance to fresh data: {model_distance:.4f} "
            f"(real against real: {floor:.4f})")
