"""The sample command: draw from a checkpoint with DDPM (Algorithm 2) or DDIM, optionally by class.

A flag that the chosen sampler would ignore is refused rather than dropped:
--steps, --eta and --spacing belong to DDIM, --variance to DDPM. Samples of
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
DEFAULT_N, DEFAULT_PER_CLASS = 64, 8


def add_parser(commands):
    from ..samplers import SPACINGS

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint.npz or the run folder holding it")
    sample.add_argument("--n", type=positive_int, default=None,
                        help=f"samples to draw (default {DEFAULT_N}; with --class, {DEFAULT_PER_CLASS} per class, "
                             "and a given --n must be a multiple of the number of classes)")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    sample.add_argument("--steps", type=positive_int, default=None, help=f"DDIM steps (default {DDIM_STEPS})")
    sample.add_argument("--eta", type=unit_interval, default=None,
                        help=f"DDIM eta in [0, 1]: 0 deterministic, 1 DDPM-like (default {DDIM_ETA:g})")
    sample.add_argument("--spacing", choices=SPACINGS, default=None,
                        help=f"which DDIM steps of 0..T-1 are visited (default {DDIM_SPACING})")
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
    sample.add_argument("--out", type=non_empty_path, metavar="DIR", default=None,
                        help="output folder (default: the checkpoint's folder)")
    sample.add_argument("--no-progress", action="store_true")
    add_backend(sample)
    return sample


def sample_run(run, n, sampler="ddpm", *, steps=DDIM_STEPS, eta=DDIM_ETA, spacing=DDIM_SPACING, variance="beta",
               clip_x0=False, labels=None, guidance=0.0, seed=0, batch_size=None, progress=True,
               return_trajectory=False, every=None):
    """Samples (and optionally the trajectory) from a run, as backend arrays.

    ``labels`` (one class per sample; then n = len(labels)) draws from a
    conditional model with classifier-free guidance weight ``guidance``.
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
    rng = B.default_rng(seed)
    shape = (n, run.data_dim)
    common = dict(clip_x0=clip_x0, progress=progress, return_trajectory=return_trajectory, every=every,
                  batch_size=batch_size, model_kwargs=model_kwargs)
    if sampler == "ddpm":
        return samplers.ddpm(model, run.diffusion, shape, rng, variance=variance, **common)
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
        raise UsageError("tinydiff sample: --sampler ddim does not use --variance (DDPM's sigma_t^2); "
                         "its noise is set by --eta")
    if args.guidance and args.classes is None:
        raise UsageError("tinydiff sample: --guidance needs --class (a class to guide towards)")


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

    title = f"{run.config.data}: {args.sampler}" + (f" {args.steps or DDIM_STEPS} steps" if args.sampler == "ddim" else "")
    if run.image_shape is None:
        data = T.load_data(run.config).x[:5000]
        return viz.plot_samples_2d(samples, data, path, title=title)
    images = samples.reshape((-1,) + tuple(run.image_shape))
    if labels is None:
        return viz.image_grid(images, path, title=title)
    rows = list(dict.fromkeys(labels.tolist()))  # the classes in order, one row each
    return viz.image_grid(images, path, nrow=len(labels) // len(rows), row_labels=[str(c) for c in rows],
                          title=title)


def command_sample(args):
    from .. import backend as B
    from .. import train as T

    check_sampler_flags(args)
    set_backend(args.backend)
    run = T.load_run(args.checkpoint)
    if not args.no_ema:
        T.use_ema_weights(run)
    labels = class_labels(args, run)
    images = run.image_shape is not None
    n = args.n or DEFAULT_N
    # x_t, the model's activations (a batch_size-row chunk of them), the step's noise and the result
    rows = min(n, args.batch_size or n)
    check_fits_in_memory(4 * (4 * n * run.data_dim + 8 * rows * run.config.width), f"drawing {n:,} samples",
                         "lower --n, or pass --batch-size to evaluate the model in chunks")
    out = args.out or run_folder(args.checkpoint)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    with np.errstate(all="ignore"):  # an overflow is reported once, as a SamplingError, not as warnings
        samples = sample_run(
            run, n, args.sampler, steps=args.steps or DDIM_STEPS,
            eta=DDIM_ETA if args.eta is None else args.eta, spacing=args.spacing or DDIM_SPACING,
            variance=args.variance or "beta", clip_x0=images if args.clip_x0 is None else args.clip_x0, labels=labels,
            guidance=args.guidance, seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
        )
    seconds = time.perf_counter() - start
    samples = B.to_numpy(samples)
    if images:
        samples = np.clip(samples, -1, 1)  # the data's range (Sec. 3.3)
    npy = save_npy(os.path.join(out, "samples.npy"), samples)
    picture = _picture(args, run, samples, labels, os.path.join(out, "samples.png"))
    log(f"drew {samples.shape[0]} samples in {seconds:.1f} s")
    log(f"wrote {npy} and {picture}")
    return 0
