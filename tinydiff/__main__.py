"""The command line: ``python -m tinydiff demo | train | sample | plot | lesson``.

    python -m tinydiff demo                       # moons in about a minute
    python -m tinydiff train --data digits --steps 3000
    python -m tinydiff sample --checkpoint runs/digits --n 64 --sampler ddim --steps 50
    python -m tinydiff plot schedules

A user error (a bad argument, a missing or corrupt file) ends with one line
naming what was wrong: exit status 2 for arguments, 1 for files and failed
runs. No traceback for anything the user can fix.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

EXIT_USAGE, EXIT_FAILURE = 2, 1


class UsageError(Exception):
    """A bad argument: exit 2 with a one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value != value:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _classes(text):
    try:
        values = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers like 3 or 0,1,2 or 'all', got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected class numbers >= 0, got {text!r}")
    return values


def _add_backend(parser):
    parser.add_argument("--backend", choices=["numpy", "cupy", "array_api_strict"], default=None,
                        help="array backend (default: numpy, or $TINYDIFF_BACKEND)")


def build_parser():
    from . import data, schedules

    parser = _Parser(prog="tinydiff", description="Denoising diffusion probabilistic models in plain NumPy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser("demo", help="train on moons for about a minute, then sample and draw it all")
    demo.add_argument("--out", default=os.path.join("runs", "demo"), help="output folder (default runs/demo)")
    demo.add_argument("--steps", type=_positive_int, default=20000, help="training steps (default 20000)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--n", type=_positive_int, default=2000, help="samples to draw (default 2000)")
    demo.add_argument("--no-progress", action="store_true")
    _add_backend(demo)

    train = commands.add_parser("train", help="train a denoiser (Algorithm 1)")
    train.add_argument("--data", required=True, choices=data.DATASETS)
    train.add_argument("--data-dir", default=None, help="folder with MNIST-format files (or $TINYDIFF_DATA)")
    train.add_argument("--n-data", type=_positive_int, default=None, help="points drawn (2D) or a subset size (images)")
    train.add_argument("--steps", type=_positive_int, default=None,
                       help="default: 20000 for 2D sets (under a minute), 15000 for images")
    train.add_argument("--batch-size", type=_positive_int, default=None)
    train.add_argument("--lr", type=_positive_float, default=None)
    train.add_argument("--warmup", type=int, default=100)
    train.add_argument("--no-cosine", action="store_true", help="keep the learning rate flat after warmup")
    train.add_argument("--grad-clip", type=_non_negative_float, default=1.0, help="0 disables")
    train.add_argument("--T", type=_positive_int, default=1000)
    train.add_argument("--schedule", choices=[s for s in schedules.SCHEDULES if s != "custom"], default=None,
                       help="default: linear for 2D sets, cosine for images")
    train.add_argument("--prediction", choices=["eps", "x0", "v"], default=None,
                       help="what the network predicts; default: eps for 2D sets, x0 for images")
    train.add_argument("--loss-weighting", choices=["simple", "vlb", "min_snr"], default="simple")
    train.add_argument("--model", choices=["mlp", "resmlp"], default=None)
    train.add_argument("--width", type=_positive_int, default=None)
    train.add_argument("--depth", type=_positive_int, default=None, help="hidden layers (mlp) or blocks (resmlp)")
    train.add_argument("--ema", type=_non_negative_float, default=0.999, help="EMA decay; 0 disables")
    train.add_argument("--conditional", action="store_true", help="train with labels (classifier-free guidance)")
    train.add_argument("--label-dropout", type=_non_negative_float, default=0.1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=_positive_int, default=1000)
    train.add_argument("--out", default=None, help="run folder (default runs/DATA)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--no-progress", action="store_true")
    _add_backend(train)

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint.npz or the run folder holding it")
    sample.add_argument("--n", type=_positive_int, default=64)
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    sample.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps (default 50)")
    sample.add_argument("--eta", type=_non_negative_float, default=0.0, help="DDIM eta (0 deterministic, 1 DDPM-like)")
    sample.add_argument("--variance", choices=["beta", "beta_tilde"], default="beta", help="DDPM sigma_t^2")
    sample.add_argument("--clip-x0", action="store_true", help="clip predicted x0 to [-1, 1] (images)")
    sample.add_argument("--class", dest="classes", type=_classes, default=None,
                        help="class(es) to draw, e.g. 3 or 0,1,2 (conditional models); one row per class")
    sample.add_argument("--guidance", type=_non_negative_float, default=0.0, help="classifier-free guidance weight w")
    sample.add_argument("--batch-size", type=_positive_int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    sample.add_argument("--no-progress", action="store_true")
    _add_backend(sample)

    plot = commands.add_parser("plot", help="draw a picture: schedules, forward, reverse, field, loss, vlb")
    plot.add_argument("what", choices=["schedules", "forward", "reverse", "field", "loss", "vlb"])
    plot.add_argument("--checkpoint", default=None, help="run folder or checkpoint (reverse, field, loss, vlb)")
    plot.add_argument("--data", default="moons", choices=data.DATASETS, help="data for 'forward'")
    plot.add_argument("--data-dir", default=None)
    plot.add_argument("--T", type=_positive_int, default=1000)
    plot.add_argument("--schedule", default="linear", choices=[s for s in schedules.SCHEDULES if s != "custom"])
    plot.add_argument("--seed", type=int, default=0)
    plot.add_argument("--out", default=None, help="output file (default: a name in the current folder or run)")
    _add_backend(plot)

    lesson = commands.add_parser("lesson", help="run a lesson script, e.g. 'lesson 03'")
    lesson.add_argument("name", help="lesson number or name, e.g. 03 or posterior; 'list' lists them")
    lesson.add_argument("rest", nargs=argparse.REMAINDER, help="--fast, --step, --out DIR")
    return parser


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _set_backend(name):
    if name:
        from . import backend

        backend.set_backend(name)


def _log(message):
    print(message, flush=True)


def command_train(args):
    from . import train as T

    _set_backend(args.backend)
    out = args.out or os.path.join("runs", args.data)
    config = T.TrainConfig(
        data=args.data, data_dir=args.data_dir, n_data=args.n_data, conditional=args.conditional,
        label_dropout=args.label_dropout, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup=args.warmup, cosine=not args.no_cosine, grad_clip=args.grad_clip, ema=args.ema, T=args.T,
        schedule=args.schedule, prediction=args.prediction, loss_weighting=args.loss_weighting,
        model=args.model, width=args.width, depth=args.depth, seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    existing = os.path.join(out, "checkpoint.npz")
    if args.resume and not os.path.exists(existing):
        raise FileNotFoundError(f"--resume: no checkpoint.npz in {out}; train without --resume first")
    if not args.resume and os.path.exists(existing):
        raise UsageError(f"tinydiff train: {out} already holds a run (checkpoint.npz): continue it with --resume, "
                         "or choose another --out")
    if args.resume:
        _log("--resume: continuing with the run's saved configuration"
             + (f", extended to {args.steps} steps" if args.steps else "") + "; other training flags are ignored")
    result = T.train(config, out, resume=args.resume, progress=not args.no_progress, log=_log)
    steps_done = len(result.losses)
    rate = steps_done / result.seconds if result.seconds > 0 else float("nan")
    last = f", last loss {result.losses[-1][1]:.4f}" if result.losses else ""
    _log(f"trained {steps_done} steps in {result.seconds:.1f} s ({rate:.0f} steps/s){last}")
    _log(f"wrote {result.checkpoint}, {os.path.join(out, 'losses.csv')}, {os.path.join(out, 'config.json')}")
    return 0


def _sample_run(run, n, sampler="ddpm", steps=50, eta=0.0, variance="beta", clip_x0=False, classes=None,
                guidance=0.0, seed=0, batch_size=None, progress=True, return_trajectory=False, every=None):
    """Samples (and optionally the trajectory) from a run, as host arrays."""
    from . import backend as B
    from . import samplers

    model = run.model
    model_kwargs = None
    if run.config.superres:
        raise ValueError("this is a super-resolution model: it draws from a low-resolution image, not from "
                         "noise alone; use examples/superres_mnist.py --checkpoint RUN")
    if classes is not None:
        if run.num_classes is None or not run.config.conditional:
            raise ValueError("--class needs a model trained with --conditional")
        bad = [c for c in classes if c >= run.num_classes]
        if bad:
            raise ValueError(f"--class {bad[0]} is out of range: this model has classes 0..{run.num_classes - 1}")
        per_class = max(1, n // len(classes))
        labels = np.repeat(np.array(classes, dtype=np.int64), per_class)
        n = labels.shape[0]
        model, model_kwargs = samplers.classifier_free_guidance(run.model, guidance), {"y": B.asarray(labels)}
    elif guidance:
        raise ValueError("--guidance needs --class (a class to guide towards)")
    rng = B.default_rng(seed)
    shape = (n, run.data_dim)
    common = dict(clip_x0=clip_x0, progress=progress, return_trajectory=return_trajectory, every=every,
                  batch_size=batch_size, model_kwargs=model_kwargs)
    if sampler == "ddpm":
        result = samplers.ddpm(model, run.diffusion, shape, rng, variance=variance, **common)
    else:
        result = samplers.ddim(model, run.diffusion, shape, rng, steps=steps, eta=eta, **common)
    return result


def command_sample(args):
    from . import backend as B
    from . import train as T
    from . import viz

    _set_backend(args.backend)
    run = T.load_run(args.checkpoint)
    if not args.no_ema:
        T.use_ema_weights(run)
    folder = args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(os.path.abspath(args.checkpoint))
    out = args.out or folder
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    samples = _sample_run(run, args.n, args.sampler, args.steps, args.eta, args.variance, args.clip_x0,
                          args.classes, args.guidance, args.seed, args.batch_size, not args.no_progress)
    seconds = time.perf_counter() - start
    samples = B.to_numpy(samples)
    npy = os.path.join(out, "samples.npy")
    np.save(npy, samples)
    picture = os.path.join(out, "samples.png")
    title = f"{run.config.data}: {args.sampler}" + (f" {args.steps} steps" if args.sampler == "ddim" else "")
    if run.image_shape is not None:
        images = np.clip(samples, -1, 1).reshape((-1,) + tuple(run.image_shape))
        row_labels = None
        nrow = None
        if args.classes is not None:  # one row per class
            nrow = images.shape[0] // len(args.classes)
            row_labels = [str(c) for c in args.classes]
        viz.image_grid(images, picture, nrow=nrow, row_labels=row_labels, title=title)
    else:
        data = T.load_data(run.config).x[:5000]
        viz.plot_samples_2d(samples, data, picture, title=title)
    _log(f"drew {samples.shape[0]} samples in {seconds:.1f} s")
    _log(f"wrote {npy} and {picture}")
    return 0


def _forward_snapshots(x0, diffusion, timesteps, seed=0):
    from . import backend as B

    rng = B.default_rng(seed)
    x0_device = B.asarray(x0)
    noise = rng.normal(tuple(x0_device.shape))
    return [(t, B.to_numpy(diffusion.q_sample(x0_device, t, noise))) for t in timesteps]


def _reverse_snapshots(trajectory):
    from . import backend as B

    return [(int(t), B.to_numpy(x)) for t, x in zip(trajectory["t"], trajectory["x"])]


def command_demo(args):
    from . import backend as B
    from . import train as T
    from . import viz

    _set_backend(args.backend)
    out = args.out
    os.makedirs(out, exist_ok=True)
    config = T.TrainConfig(data="moons", steps=args.steps, seed=args.seed, checkpoint_every=max(1000, args.steps // 4),
                           log_every=200)
    _log(f"training the 2D MLP on moons for {args.steps} steps (Algorithm 1) ...")
    result = T.train(config, out, progress=not args.no_progress, log=_log)
    rate = len(result.losses) / max(result.seconds, 1e-9)
    _log(f"  {len(result.losses)} steps in {result.seconds:.0f} s ({rate:.0f} steps/s), "
         f"final loss {result.losses[-1][1]:.4f}")
    run = T.use_ema_weights(result.run)
    _log(f"sampling {args.n} points with 1000 ancestral steps (Algorithm 2) ...")
    samples, trajectory = _sample_run(run, args.n, "ddpm", seed=args.seed, progress=not args.no_progress,
                                      return_trajectory=True, every=50)
    samples = B.to_numpy(samples)
    data = T.load_data(run.config).x[:args.n]
    written = []
    path = os.path.join(out, "samples.npy")
    np.save(path, samples)
    written.append(path)
    written.append(viz.plot_samples_2d(samples, data, os.path.join(out, "samples.png"),
                                       title=f"{args.n} DDPM samples (colour) over the data (grey)"))
    snapshots = _forward_snapshots(data[:1000], run.diffusion, [0, 50, 100, 200, 400, 700, 999], args.seed)
    written.append(viz.plot_forward_2d(snapshots, os.path.join(out, "forward.png")))
    reverse = _reverse_snapshots(trajectory)
    written.append(viz.plot_reverse_2d(reverse[:: max(1, len(reverse) // 6)] + [reverse[-1]],
                                       os.path.join(out, "reverse.png"), data=data))
    written.append(viz.animate_reverse_2d(reverse, os.path.join(out, "reverse.gif"), data=data))
    steps, losses = T.read_losses(out)
    written.append(viz.plot_loss(steps, losses, os.path.join(out, "loss.png"), title="training loss (Eq. 14)"))
    written.append(result.checkpoint)
    quality = _sliced_wasserstein_report(samples, run)
    _log("wrote:")
    for path in written:
        _log(f"  {path}")
    if quality:
        _log(quality)
    return 0


def _sliced_wasserstein_report(samples, run):
    try:
        from . import data as data_module
        from . import metrics
    except ImportError:
        return ""
    fresh = data_module.load(run.config.data, n=samples.shape[0], seed=run.config.seed + 1).x
    other = data_module.load(run.config.data, n=samples.shape[0], seed=run.config.seed + 2).x
    model_distance = metrics.sliced_wasserstein(samples, fresh)
    floor = metrics.sliced_wasserstein(other, fresh)
    return (f"sliced Wasserstein distance to fresh data: {model_distance:.4f} "
            f"(real against real: {floor:.4f})")


def command_plot(args):
    from . import backend as B
    from . import data as data_module
    from . import train as T
    from . import viz
    from .diffusion import GaussianDiffusion
    from .schedules import make_schedule

    _set_backend(args.backend)
    what = args.what
    if what == "schedules":
        out = args.out or "schedules.png"
        curves = {}
        for name in ("linear", "cosine", "quadratic", "sigmoid"):
            s = make_schedule(name, args.T)
            curves[name] = {"betas": B.to_numpy(s.betas), "alpha_bars": B.to_numpy(s.alpha_bars),
                            "snr": B.to_numpy(s.snr)}
        _log(f"wrote {viz.plot_schedules(curves, out)}")
        return 0
    if what == "forward":
        out = args.out or f"forward_{args.data}.png"
        dataset = data_module.load(args.data, n=None if args.data in data_module.IMAGE_DATASETS else 1000,
                                   seed=args.seed, data_dir=args.data_dir)
        diffusion = GaussianDiffusion(make_schedule(args.schedule, args.T))
        timesteps = [int(round(f * (args.T - 1))) for f in (0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)]
        if dataset.image_shape is not None:
            x0 = dataset.x[:6]
            snapshots = [(t, x.reshape((-1,) + dataset.image_shape)) for t, x in
                         _forward_snapshots(x0, diffusion, timesteps, args.seed)]
            _log(f"wrote {viz.plot_forward_images(snapshots, out)}")
        else:
            snapshots = _forward_snapshots(dataset.x, diffusion, timesteps, args.seed)
            _log(f"wrote {viz.plot_forward_2d(snapshots, out)}")
        return 0
    if not args.checkpoint:
        raise UsageError(f"tinydiff plot {what}: --checkpoint is required (a run folder or checkpoint.npz)")
    run = T.use_ema_weights(T.load_run(args.checkpoint))
    folder = args.checkpoint if os.path.isdir(args.checkpoint) else os.path.dirname(os.path.abspath(args.checkpoint))
    if what == "loss":
        steps, losses = T.read_losses(folder)
        out = args.out or os.path.join(folder, "loss.png")
        viz.plot_loss(steps, losses, out)
        dataset = T.load_data(run.config)
        centres, bucket_losses = T.loss_by_timestep(run, dataset.x)
        out2 = os.path.splitext(out)[0] + "_by_t.png"
        viz.plot_loss_by_t(centres, bucket_losses, out2, T=run.diffusion.T)
        _log(f"wrote {out} and {out2}")
        return 0
    if what == "reverse":
        samples, trajectory = _sample_run(run, 64 if run.image_shape else 1000, "ddpm", seed=args.seed,
                                          return_trajectory=True, every=max(1, run.diffusion.T // 40))
        reverse = _reverse_snapshots(trajectory)
        out = args.out or os.path.join(folder, "reverse.gif")
        if run.image_shape is not None:
            frames = [(t, x[:16].reshape((-1,) + run.image_shape)) for t, x in reverse]
            viz.animate_reverse_images(frames, out, nrow=4)
        else:
            viz.animate_reverse_2d(reverse, out, data=T.load_data(run.config).x[:1000])
        _log(f"wrote {out}")
        return 0
    if what == "field":
        if run.image_shape is not None or run.data_dim != 2:
            raise UsageError("tinydiff plot field: needs a model trained on a 2D set")
        from .autograd import no_grad

        def field(points, t):
            x = B.asarray(points)
            tt = run.diffusion.timesteps_array(int(t), points.shape[0])
            with no_grad():
                output = run.model(x, tt)
            eps, x0_hat = run.diffusion.split_prediction(output.data, x, tt)
            return B.to_numpy(x0_hat) - points  # where the model would move each point

        out = args.out or os.path.join(folder, "field.png")
        T_ = run.diffusion.T
        viz.plot_vector_field(field, out, [0, T_ // 10, T_ // 4, T_ // 2], data=T.load_data(run.config).x[:2000])
        _log(f"wrote {out}")
        return 0
    if what == "vlb":
        dataset = T.load_data(run.config)
        x0 = B.asarray(dataset.x[:64])
        decoder = "discretized" if run.image_shape is not None else "gaussian"
        bound = run.diffusion.vlb(run.model, x0, B.default_rng(args.seed), decoder=decoder)
        terms = B.to_numpy(bound["terms"]).mean(axis=0)
        out = args.out or os.path.join(folder, "vlb.png")
        viz.plot_vlb_terms(terms, out, prior=float(B.to_numpy(bound["prior"]).mean()))
        _log(f"bound: {float(B.to_numpy(bound['total']).mean()):.3f} nats per example, "
             f"{float(B.to_numpy(bound['bits_per_dim']).mean()):.3f} bits per dimension")
        _log(f"wrote {out}")
        return 0
    raise UsageError(f"unknown plot {what!r}")  # pragma: no cover - argparse checks


def _lessons_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "lessons")


def command_lesson(args):
    folder = _lessons_dir()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no lessons folder at {folder}: the lessons ship with the source tree "
                                "(git clone, then pip install -e .)")
    scripts = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f[:2].isdigit())
    if args.name == "list":
        for script in scripts:
            _log(script[:-3])
        return 0
    matches = [s for s in scripts if s.startswith(args.name) or s[3:-3] == args.name]
    if len(matches) != 1:
        raise UsageError(f"tinydiff lesson: no single lesson matches {args.name!r}; "
                         f"choose from {', '.join(s[:-3] for s in scripts)}")
    return subprocess.call([sys.executable, os.path.join(folder, matches[0]), *args.rest])


COMMANDS = {"demo": command_demo, "train": command_train, "sample": command_sample, "plot": command_plot,
            "lesson": command_lesson}


def main(argv=None):
    from . import backend, data, train

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, backend.BackendError) as error:
        is_file_error = isinstance(error, (train.CheckpointError, data.DataError))
        print(f"tinydiff: error: {error}", file=sys.stderr)
        return EXIT_FAILURE if is_file_error else EXIT_USAGE
    except OSError as error:  # a missing file, a folder where a file should be, a full disk, ...
        print(f"tinydiff: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except train.TrainingError as error:
        print(f"tinydiff: training stopped: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("tinydiff: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
