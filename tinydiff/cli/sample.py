"""The sample command: draw from a checkpoint with DDPM (Algorithm 2), DDIM or an ODE solver, optionally by class.

The ODE solvers (tinydiff.samplers.dpm_solver, heun) take --steps as network
calls: dpm-solver (noise form) and dpm-solver++ (data form) with --order 1-3,
heun (EDM's Heun, 2N - 1 calls for N noise levels). A flag that the chosen
sampler would ignore is refused rather than dropped: --steps and --spacing
belong to DDIM and the solvers (each with its own spacings), --eta to DDIM,
--order to dpm-solver(++), --variance to DDPM. Samples of
an image model are in the data's range, [-1, 1] (Sec. 3.3): its predicted
x0 is clipped at every step by default (--no-clip-x0 turns that off) and
the final samples are clipped before they are written.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..checks import check_fits_in_memory
from .common import (
    UsageError,
    add_backend,
    classes,
    log,
    non_empty_path,
    non_negative_float,
    positive_int,
    run_folder,
    save_npy,
    set_backend,
    unit_interval,
)

DDIM_STEPS, DDIM_ETA, DDIM_SPACING = 50, 0.0, "linspace"
# The ODE solvers (tinydiff.samplers.dpm_solver, heun): --steps counts network calls.
SOLVER_SAMPLERS = ("dpm-solver", "dpm-solver++", "heun")
DEFAULT_STEPS = {"ddim": DDIM_STEPS, "dpm-solver": 20, "dpm-solver++": 20, "heun": 35}
DEFAULT_SPACING = {"ddim": DDIM_SPACING, "dpm-solver": "logsnr", "dpm-solver++": "logsnr"}
DEFAULT_ORDER = 2
DEFAULT_N, DEFAULT_PER_CLASS = 64, 8


def add_parser(commands):
    from ..ode import SOLVER_SPACINGS
    from ..samplers import SPACINGS

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint.npz or the run folder holding it")
    sample.add_argument("--n", type=positive_int, default=None,
                        help=f"samples to draw (default {DEFAULT_N}; with --class, {DEFAULT_PER_CLASS} per class, "
                             "and a given --n must be a multiple of the number of classes)")
    sample.add_argument("--sampler", choices=["ddpm", "ddim", *SOLVER_SAMPLERS], default="ddpm",
                        help="ddpm (Algorithm 2, all T steps), ddim, or an ODE solver: dpm-solver (noise form), "
                             "dpm-solver++ (data form), heun (Karras et al.)")
    sample.add_argument("--steps", type=positive_int, default=None,
                        help="network calls: DDIM's steps (default %d), the solvers' calls (default dpm-solver(++) "
                             "%d, heun %d)" % (DDIM_STEPS, DEFAULT_STEPS["dpm-solver"], DEFAULT_STEPS["heun"]))
    sample.add_argument("--order", type=positive_int, choices=[1, 2, 3], default=None,
                        help=f"dpm-solver(++) order, multistep (default {DEFAULT_ORDER}: DPM-Solver++(2M))")
    sample.add_argument("--eta", type=unit_interval, default=None,
                        help=f"DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like (default {DDIM_ETA:g})")
    sample.add_argument("--spacing", choices=[*SPACINGS, *SOLVER_SPACINGS], default=None,
                        help=f"which steps of 0..T-1 are visited: DDIM's {', '.join(SPACINGS)} (default "
                             f"{DDIM_SPACING}); dpm-solver(++)'s {', '.join(SOLVER_SPACINGS)} (default logsnr)")
    sample.add_argument("--variance", choices=["beta", "beta_tilde"], default=None,
                        help="DDPM sigma_t^2 (default beta)")
    sample.add_argument("--clip-x0", action=argparse.BooleanOptionalAction, default=None,
                        help="clip the predicted x0 to [-1, 1] at every step (default: on for images, off for 2D)")
    sample.add_argument("--class", dest="classes", type=classes, default=None,
                        help="class(es) to draw, e.g. 3, 0,1,2 or all (conditional models); one row per class")
    sample.add_argument("--guidance", type=non_negative_float, default=0.0,
                        help="classifier-free guidance weight w (needs --class)")
    sample.add_argument("--batch-size", type=positive_int, default=None)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--int8", action="store_true",
                        help="sample from the denoiser quantized to int8 (tinydiff.quantize), kept beside the "
                             "checkpoint as checkpoint-int8.npz (written on first use, rewritten when stale)")
    sample.add_argument("--out", type=non_empty_path, metavar="DIR", default=None,
                        help="output folder (default: the checkpoint's folder)")
    sample.add_argument("--no-progress", action="store_true")
    sample.add_argument("--distributed", action="store_true",
                        help="split the samples across every process of an MPI job (mpiexec -n N ...; found "
                             "without this flag when mpiexec starts several); rank 0 writes them all")
    add_backend(sample)
    return sample


def sample_run(run, n, sampler="ddpm", *, steps=DDIM_STEPS, eta=DDIM_ETA, spacing=DDIM_SPACING, variance="beta",
               clip_x0=False, labels=None, guidance=0.0, seed=0, batch_size=None, progress=True,
               return_trajectory=False, every=None, communicator=None, order=DEFAULT_ORDER):
    """Samples (and optionally the trajectory) from a run, as backend arrays.

    ``labels`` (one class per sample; then n = len(labels)) draws from a
    conditional model with classifier-free guidance weight ``guidance``.
    With a ``communicator`` every rank evaluates the model on its own rows
    and gets all the samples (tinydiff.distributed.shard_rows).
    """
    from .. import backend as B
    from .. import samplers

    if run.config.superres:
        raise ValueError("this is a super-resolution model: it draws from a low-resolution image, not from "
                         "noise alone; use examples/superres_mnist.py --checkpoint RUN")
    model, model_kwargs = run.model, None
    if labels is not None:
        n = len(labels)
        model, model_kwargs = samplers.classifier_free_guidance(run.model, guidance), {"y": B.asarray(labels)}
    if communicator is not None:
        from ..distributed import shard_rows

        model = shard_rows(model, communicator)
    rng = B.default_rng(seed)
    shape = (n, run.data_dim)
    common = dict(clip_x0=clip_x0, progress=progress, return_trajectory=return_trajectory, every=every,
                  batch_size=batch_size, model_kwargs=model_kwargs)
    if sampler == "ddpm":
        return samplers.ddpm(model, run.diffusion, shape, rng, variance=variance, **common)
    if sampler in ("dpm-solver", "dpm-solver++"):
        prediction = "data" if sampler == "dpm-solver++" else "noise"
        return samplers.dpm_solver(model, run.diffusion, shape, rng, steps=steps, order=order, prediction=prediction,
                                   spacing=spacing, **common)
    if sampler == "heun":
        return samplers.heun(model, run.diffusion, shape, rng, steps=steps, **common)
    return samplers.ddim(model, run.diffusion, shape, rng, steps=steps, eta=eta, spacing=spacing, **common)


def check_sampler_flags(args):
    """Refuse the flags the chosen sampler would ignore."""
    if args.sampler == "ddpm":
        ddim_only = [name for name, value in (("--steps", args.steps), ("--eta", args.eta),
                                              ("--spacing", args.spacing)) if value is not None]
        if ddim_only:
            raise UsageError(f"tinydiff sample: --sampler ddpm does not use {', '.join(ddim_only)} (DDIM's); "
                             "it runs all T steps of Algorithm 2")
    elif args.variance is not None:
        raise UsageError(f"tinydiff sample: --sampler {args.sampler} does not use --variance (DDPM's sigma_t^2)")
    check_solver_flags(args)
    if args.guidance and args.classes is None:
        raise UsageError("tinydiff sample: --guidance needs --class (a class to guide towards)")
    if args.int8 and args.no_ema:
        raise UsageError("tinydiff sample: --int8 quantizes the EMA weights that sampling uses; drop --no-ema")


def check_solver_flags(args):
    """--eta is DDIM's, --order dpm-solver(++)'s, and each sampler takes only its own --spacing values."""
    from ..ode import SOLVER_SPACINGS
    from ..samplers import SPACINGS

    if args.sampler in SOLVER_SAMPLERS and args.eta is not None:
        raise UsageError(f"tinydiff sample: --sampler {args.sampler} does not use --eta (DDIM's): it solves the "
                         "deterministic probability-flow ODE")
    if args.order is not None and args.sampler not in ("dpm-solver", "dpm-solver++"):
        raise UsageError(f"tinydiff sample: --order is dpm-solver(++)'s; --sampler {args.sampler} does not use it")
    allowed = {"ddim": SPACINGS, "dpm-solver": SOLVER_SPACINGS, "dpm-solver++": SOLVER_SPACINGS}.get(args.sampler, ())
    if args.sampler == "heun" and args.spacing is not None:
        raise UsageError("tinydiff sample: --sampler heun always uses Karras et al.'s rho = 7 spacing; drop --spacing")
    if args.sampler != "ddpm" and args.spacing is not None and args.spacing not in allowed:
        raise UsageError(f"tinydiff sample: --spacing {args.spacing} is not one of --sampler {args.sampler}'s: "
                         f"{', '.join(allowed)}")


def class_labels(args, run):
    """The class of each sample, one row per class (None without --class); checks --class and --n."""
    if args.classes is None:
        return None
    if run.num_classes is None or not run.config.conditional:
        raise UsageError("tinydiff sample: --class needs a model trained with --conditional")
    chosen = list(range(run.num_classes)) if args.classes == "all" else args.classes
    bad = [c for c in chosen if c >= run.num_classes]
    if bad:
        raise UsageError(f"tinydiff sample: --class {bad[0]} is out of range: "
                         f"this model has classes 0..{run.num_classes - 1}")
    if args.n is not None and args.n % len(chosen):
        raise UsageError(f"tinydiff sample: --n {args.n} is not a multiple of the {len(chosen)} classes of "
                         f"--class {','.join(map(str, chosen))} (one row per class)")
    per_class = DEFAULT_PER_CLASS if args.n is None else args.n // len(chosen)
    return np.repeat(np.array(chosen, dtype=np.int64), per_class)


def _picture(args, run, samples, labels, path):
    from .. import train as T
    from .. import viz

    title = f"{run.config.data}: {args.sampler}" + (f" {args.steps or DEFAULT_STEPS[args.sampler]} steps"
                                                     if args.sampler in DEFAULT_STEPS else "")
    if run.pixel_shape is None:
        data = T.load_data(run.config).x[:5000]
        return viz.plot_samples_2d(samples, data, path, title=title)
    images = samples.reshape((-1,) + tuple(run.pixel_shape))
    if labels is None:
        return viz.image_grid(images, path, title=title)
    rows = list(dict.fromkeys(labels.tolist()))  # the classes in order, one row each
    return viz.image_grid(images, path, nrow=len(labels) // len(rows), row_labels=[str(c) for c in rows],
                          title=title)


def command_sample(args):
    from .. import distributed
    from ..samplers import SamplingError

    check_sampler_flags(args)
    set_backend(args.backend)
    communicator = distributed.connect(args.distributed)  # None for one process; mpi4py is imported only for several
    distributed.quiet_unless_root(communicator)
    with distributed.guard(communicator, every_rank=(SamplingError,)):  # every rank holds every sample
        return _draw_and_write(args, communicator)


def activations_per_row(run):
    """About how many float32 numbers the model holds per sample row in one call (to refuse what cannot fit).

    An MLP holds a few hidden layers of ``width``; a U-Net, its feature maps,
    counted in maps of ``channels`` x H x W (the top resolution's): the skip
    connections kept for the way up, the padded input and output of each
    convolution, group normalization's temporaries. One call's peak measured
    18 to 19 such maps per row, for 8 to 128 channels (tests/test_unet.py
    checks the estimate against tracemalloc); 24 leaves a margin.
    """
    if run.config.model == "unet":
        return 24 * run.model.ch * run.model.image_size**2
    return 8 * run.config.width


def _draw_and_write(args, communicator=None):
    from .. import backend as B
    from .. import train as T
    from ..distributed import together

    with together(communicator):  # a refusal on any rank is raised on every rank
        run = T.load_run(args.checkpoint)
        if not args.no_ema:
            T.use_ema_weights(run)
        if args.int8:
            use_int8(run, args.checkpoint, writer=communicator is None or communicator.rank == 0)
        labels = class_labels(args, run)
        images = run.image_shape is not None
        n = args.n or DEFAULT_N
        # x_t, the model's activations (a batch_size-row chunk of them), the step's noise and the result
        rows = min(n, args.batch_size or n)
        if run.config.model == "unet":  # on the CPU the U-Net itself takes a cache-sized slice of rows a call
            rows = min(rows, run.model.inference_rows() or rows)
        check_fits_in_memory(4 * (4 * n * run.data_dim + rows * activations_per_row(run)), f"drawing {n:,} samples",
                             "lower --n, or pass --batch-size to evaluate the model in chunks")
        out = args.out or run_folder(args.checkpoint)
        os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with np.errstate(all="ignore"):  # an overflow is reported once, as a SamplingError, not as warnings
        samples = sample_run(
            run, n, args.sampler, steps=args.steps or DEFAULT_STEPS.get(args.sampler, DDIM_STEPS),
            eta=DDIM_ETA if args.eta is None else args.eta,
            spacing=args.spacing or DEFAULT_SPACING.get(args.sampler, DDIM_SPACING),
            order=args.order or DEFAULT_ORDER,
            variance=args.variance or "beta", clip_x0=images if args.clip_x0 is None else args.clip_x0, labels=labels,
            guidance=args.guidance, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
            communicator=communicator,
        )
        if run.latent is not None:  # latent diffusion: the samples are codes z; the images are D(z / s), in [-1, 1]
            samples = run.latent.decode(samples)
    seconds = time.perf_counter() - start
    if communicator is not None and communicator.rank != 0:
        return 0  # rank 0 alone writes the whole set
    samples = B.to_numpy(samples)
    if images:
        samples = np.clip(samples, -1, 1)  # the data's range (Sec. 3.3)
    npy = save_npy(os.path.join(out, "samples.npy"), samples)
    picture = _picture(args, run, samples, labels, os.path.join(out, "samples.png"))
    log(f"drew {samples.shape[0]} samples in {seconds:.1f} s")
    log(f"wrote {npy} and {picture}")
    return 0


def use_int8(run, checkpoint, writer=True):
    """Swap the run's denoiser for its int8 quantization (tinydiff.quantize); log the two sizes; returns the path.

    checkpoint-int8.npz beside the checkpoint is loaded when it is fresh (as
    new as the checkpoint, from the same step and configuration); otherwise
    the loaded (EMA) weights are quantized and written there, atomically.
    The size is compared with the float32 weights alone: the training
    checkpoint also holds Adam's moments and the EMA.
    """
    from .. import backend as B
    from .. import quantize as Q
    from ..train import CheckpointError

    source = checkpoint if os.path.isfile(checkpoint) else os.path.join(checkpoint, "checkpoint.npz")
    path = os.path.join(os.path.dirname(os.path.abspath(source)), "checkpoint-int8.npz")
    float_bytes = sum(B.to_numpy(value).nbytes for value in run.model.state_dict().values())
    fresh = None
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(source):
        try:
            fresh = Q.load_int8(path)
        except (OSError, CheckpointError):
            fresh = None  # unreadable: made again below
    if fresh is not None and fresh.step == run.step and fresh.config == run.config:
        run.model = fresh.model
    else:
        Q.quantize(run.model)
        if writer:
            Q.save_int8(run, path)
    if os.path.exists(path):
        size = os.path.getsize(path)
        log(f"int8: {path} is {size / 1e6:.2f} MB; the float32 weights are {float_bytes / 1e6:.2f} MB "
            f"({size / float_bytes:.2f}x)")
    return path
