"""Sample quality against network calls: DDPM's 1000 steps, DDIM, and the ODE solvers at 5 to 50 calls.

    python examples/compare_samplers.py                    # trains moons (20,000 steps, about 2 minutes), compares
    python examples/compare_samplers.py --checkpoint runs/moons/checkpoint.npz
    python examples/compare_samplers.py --data spiral --ddim 200,50,10 --out runs/samplers-spiral
    python examples/compare_samplers.py --checkpoint runs/moons --mnist runs/mnist --data-dir DIR \\
        --classifier runs/classifier.npz                   # and the same on MNIST

One trained model (its EMA weights), many samplers: Algorithm 2 of Ho et al.
2020 (1000 calls); DDIM (Song et al. 2020, Eq. 12, eta = 0) at --ddim steps;
and at --calls network calls each the probability-flow ODE solvers of
tinydiff.samplers: DPM-Solver (Lu et al. 2022, noise form, 2M), DPM-Solver++
(Lu et al. 2022b, data form, 2M and 3M) and Heun (Karras et al. 2022; 2N - 1
calls, so an even budget leaves one unused). All draw x_T from the same seed.

Quality on a 2D set: the sliced Wasserstein distance of the samples to a
fresh draw of the data. On MNIST (--mnist): the Frechet distance (FID's
formula, tinydiff.metrics.frechet_distance) between features of our own
MNIST classifier (its penultimate layer, as examples/evaluate_mnist.py) of
the samples and of test images, and the share of samples the classifier is
at least 90% sure of. Each is shown beside its floor: two independent real
draws of the same size, where a perfect sampler would sit. The tables give
seconds per sample (wall clock; the machine's speed varies, compare within
a run).

Writes to --out: samplers.png (samples over the data, and quality against
network calls), with --mnist samplers_mnist.png (quality against calls) and
digits_mnist.png (a row of digits per sampler), and the training run when
one was trained.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import data as data_module  # noqa: E402
from tinydiff import metrics, samplers, viz  # noqa: E402
from tinydiff import train as T  # noqa: E402

# The ODE solvers compared: label -> sampler(model, diffusion, shape, rng, calls, **common)
SOLVERS = {
    "DPM-Solver(2M)": lambda *a, calls, **k: samplers.dpm_solver(*a, steps=calls, prediction="noise", **k),
    "DPM-Solver++(2M)": lambda *a, calls, **k: samplers.dpm_solver(*a, steps=calls, **k),
    "DPM-Solver++(3M)": lambda *a, calls, **k: samplers.dpm_solver(*a, steps=calls, order=3, **k),
    "Heun": lambda *a, calls, **k: samplers.heun(*a, steps=calls, **k),
}


def parse_steps(text, flag="--ddim"):
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated integers like 100,50,20,10, got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"{flag} must list step counts >= 1, got {text!r}")
    return steps


def network_calls(label, calls):
    """The calls a sampler really makes for a budget: Heun's 2N - 1 with N = (calls + 1) // 2."""
    return 2 * ((calls + 1) // 2) - 1 if label == "Heun" else calls


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


def plans(run, ddim_steps, solver_calls, n, clip_x0=False, batch_size=None):
    """(label, calls, sample(rng)) for DDPM, DDIM at each step count, each solver at each budget."""
    shape, common = (n, run.data_dim), dict(clip_x0=clip_x0, batch_size=batch_size)
    found = [("DDPM", run.diffusion.T, lambda rng: samplers.ddpm(run.model, run.diffusion, shape, rng, **common))]
    for k in ddim_steps:
        if k > run.diffusion.T:
            raise ValueError(f"--ddim: {k} steps is more than the diffusion's T = {run.diffusion.T}")
        found.append((f"DDIM {k}", k, lambda rng, k=k: samplers.ddim(run.model, run.diffusion, shape, rng, steps=k,
                                                                     **common)))
    for label, solver in SOLVERS.items():
        for calls in solver_calls:
            found.append((f"{label} {network_calls(label, calls)}", network_calls(label, calls),
                          lambda rng, s=solver, c=calls: s(run.model, run.diffusion, shape, rng, calls=c, **common)))
    return found


def timed(sample, seed):
    start = time.perf_counter()
    samples = B.to_numpy(sample(B.default_rng(seed)))
    return samples, time.perf_counter() - start


def compare(run, ddim_steps, solver_calls, n, seed, log=print):
    """Rows (label, calls, seconds, distance, samples) for every sampler, on a 2D set, and the floor."""
    fresh = data_module.load(run.config.data, n=n, seed=seed + 11).x
    rows = []
    for label, calls, sample in plans(run, ddim_steps, solver_calls, n):
        samples, seconds = timed(sample, seed)
        distance = metrics.sliced_wasserstein(samples, fresh)
        rows.append((label, calls, seconds, distance, samples))
        log(f"  {label:22s} {seconds:6.2f} s  sliced Wasserstein {distance:.4f}", flush=True)
    floor = metrics.sliced_wasserstein(data_module.load(run.config.data, n=n, seed=seed + 12).x, fresh)
    return rows, floor, fresh


def print_table(rows, floor, n, what="sliced W", sure=None, log=print):
    """One line per sampler: label, network calls, seconds, ms per sample, [share sure,] quality, quality / floor."""
    extra = f" {'>=90% sure':>10}" if sure is not None else ""
    log(f"\n{'sampler':22s} {'calls':>6} {'seconds':>8} {'ms/sample':>9}{extra} {what:>9} {'/ floor':>8}")
    for label, calls, seconds, distance, *more in rows:
        share = f" {more[1]:10.0%}" if sure is not None else ""
        log(f"{label:22s} {calls:6d} {seconds:8.2f} {1e3 * seconds / n:9.3f}{share} {distance:9.4f} "
            f"{distance / floor:8.2f}")
    share = f" {sure:10.0%}" if sure is not None else ""
    log(f"{'real/real':22s} {'':>6} {'':>8} {'':>9}{share} {floor:9.4f} {1.0:8.2f}   (the floor: two fresh "
        f"draws of {n})")


def quality_panel(ax, rows, floor, ylabel):
    """Quality against network calls: a line per sampler family, DDPM as one point, the floor dashed."""
    families = {}
    for label, calls, _, distance, *_ in rows:
        families.setdefault(label.rsplit(" ", 1)[0], []).append((calls, distance))
    for family, points in families.items():
        points.sort()
        style = "s" if family == "DDPM" else "o-"
        ax.plot([c for c, _ in points], [d for _, d in points], style, label=family, markersize=4)
    ax.axhline(floor, color="0.4", linestyle="--", label="real vs real")
    ax.set_xscale("log")
    ax.set_yscale("log")  # a few-call Heun can be 100x the floor
    ax.set_xlabel("network calls")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="x-small")
    ax.set_title("quality against network calls", fontsize="small")


def plot(rows, floor, data, path, title, shown=("DDPM", "DDIM", "DPM-Solver++(2M)")):
    """Samples of DDPM and of the cheapest DDIM and DPM-Solver++(2M) runs with >= 20 calls, then quality against calls."""
    picked = []
    for family in shown:
        candidates = [r for r in rows if r[0].rsplit(" ", 1)[0] == family]
        at_20 = [r for r in candidates if r[1] >= 20] or candidates
        if at_20:
            picked.append(min(at_20, key=lambda r: r[1]))
    panels = len(picked) + 1
    fig = _common.figure(2.8 * panels + 1.0, 3.2)
    view, size = _common.square_view(data), _common.point_size(len(data))
    for i, (label, calls, seconds, distance, samples) in enumerate(picked):
        ax = fig.add_subplot(1, panels, i + 1)
        _common.scatter_panel(ax, [(data, viz.DATA_COLOR, 1.0), (samples, viz.POINT_COLOR, 0.7)], view, size)
        ax.tick_params(labelsize="small")
        ax.set_title(f"{label.rsplit(' ', 1)[0]}, {calls} calls\n{seconds:.2f} s, SW {distance:.3f}", fontsize="small")
    quality_panel(fig.add_subplot(1, panels, panels), rows, floor, "sliced Wasserstein to data")
    return _common.save_figure(fig, path, title)


def compare_mnist(args, ddim_steps, solver_calls, log=print):
    """The same comparison on an MNIST run: Frechet distance on classifier features, and confidence."""
    import evaluate_mnist  # beside this file: the classifier's features

    run = T.use_ema_weights(T.load_run(args.mnist))
    test = _common.held_out_images(run.config.data, args.data_dir)
    judge = _common.load_judge(args.classifier, test.dim, run.config.data)
    if judge is None:
        raise SystemExit("--mnist needs the classifier (--classifier): the Frechet distance uses its features")
    order = np.random.default_rng(args.seed).permutation(len(test))
    real = evaluate_mnist.penultimate_features(judge, test.x[order[:args.mnist_n]])
    other = test.x[order[args.mnist_n:2 * args.mnist_n]]
    floor = metrics.frechet_distance(evaluate_mnist.penultimate_features(judge, other), real)
    rows = []
    for label, calls, sample in plans(run, ddim_steps, solver_calls, args.mnist_n, clip_x0=True, batch_size=500):
        samples, seconds = timed(sample, args.seed)
        samples = np.clip(samples, -1.0, 1.0)
        distance = metrics.frechet_distance(evaluate_mnist.penultimate_features(judge, samples), real)
        sure = float(np.mean(confidence(judge, samples) >= 0.9))
        rows.append((label, calls, seconds, distance, samples, sure))
        log(f"  {label:22s} {seconds:7.1f} s  Frechet {distance:.3f}  sure of {sure:.0%}", flush=True)
    real_sure = float(np.mean(confidence(judge, other) >= 0.9))
    return run, rows, floor, real_sure


def confidence(judge, images):
    """The classifier's probability of its most likely digit, per image."""
    from tinydiff.autograd import no_grad

    with no_grad():
        logits = B.to_numpy(judge(B.asarray(np.ascontiguousarray(images, dtype=np.float32))).data)
    logits = logits - logits.max(1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(1, keepdims=True)).max(1)


def report_mnist(args, run, rows, floor, real_sure, log=print):
    print_table(rows, floor, args.mnist_n, what="Frechet", sure=real_sure, log=log)
    fig = _common.figure(5.0, 3.4)
    quality_panel(fig.add_subplot(1, 1, 1), rows, floor, "Frechet distance (classifier features)")
    path = _common.save_figure(fig, os.path.join(args.out, "samplers_mnist.png"),
                               f"MNIST: quality against network calls ({args.mnist_n} samples)")
    picked = {f"{r[0]}": r[4] for r in rows if r[0] in ("DDPM", "DDIM 20", "DPM-Solver++(2M) 20", "Heun 19")}
    digits = _common.image_rows(os.path.join(args.out, "digits_mnist.png"), picked, run.image_shape, 10,
                                "MNIST: the first 10 samples of each sampler, from the same x_T")
    log(f"wrote {path} and {digits}")


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "compare-samplers"), data_dir=True)
    parser.add_argument("--checkpoint", default=None, help="a 2D training checkpoint (default: train one now)")
    parser.add_argument("--data", default="moons", choices=data_module.DATASETS_2D, help="set to train on")
    parser.add_argument("--steps", type=int, default=T.TrainConfig().resolved(image_data=False).steps,
                        help="training steps (default: the train default, %(default)s)")
    parser.add_argument("--ddim", default="50,20,10,5", help="DDIM step counts (default 50,20,10,5)")
    parser.add_argument("--calls", default="50,20,10,5", help="the solvers' network calls (default 50,20,10,5)")
    parser.add_argument("--n", type=int, default=2000, help="samples per sampler (default 2000)")
    parser.add_argument("--mnist", default=None, help="an MNIST run (folder or checkpoint) to compare on as well")
    parser.add_argument("--mnist-n", type=int, default=1000, help="MNIST samples per sampler (default 1000)")
    _common.add_classifier_argument(parser)
    args = parser.parse_args(argv)
    ddim_steps = _common.parse_or_refuse(parser, parse_steps, args.ddim)
    solver_calls = _common.parse_or_refuse(parser, lambda text: parse_steps(text, "--calls"), args.calls)
    if args.n < 2 or args.steps < 1 or args.mnist_n < 2:
        parser.error("--n and --mnist-n must be >= 2 and --steps >= 1")

    _common.prepare(args)
    run = get_run(args)
    print(f"sampling {args.n} points with each sampler ...")
    rows, floor, fresh = compare(run, ddim_steps, solver_calls, args.n, args.seed)
    print_table(rows, floor, args.n)
    path = plot(rows, floor, fresh, os.path.join(args.out, "samplers.png"),
                f"{run.config.data}: quality against network calls ({args.n} samples, model at step {run.step})")
    print(f"\nwrote {path}")
    if args.mnist:
        print(f"\nsampling {args.mnist_n} MNIST digits with each sampler ...")
        report_mnist(args, *compare_mnist(args, ddim_steps, solver_calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
