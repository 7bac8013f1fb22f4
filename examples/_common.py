"""What the examples share: their command line, their output folder, the held-out data and judge, figures.

An example is a script a user copies from; everything that is about
diffusion (the configuration it trains, the sampler it calls, what it
measures) stays in the example, read top to bottom. This module holds only
the plumbing around it, as lessons/_lesson.py does for the lessons:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # this folder
    import _common

    parser = _common.argument_parser(__doc__, out="runs/my-example", backend=True)
    args = parser.parse_args(argv)
    _common.prepare(args)                    # --backend switched on, --out made

Every example takes --out (a folder; an empty one is refused), --seed and,
where it shows progress bars, --no-progress. Files are written whole or not
at all (``tinydiff.files.atomic_write``): a killed run never leaves half an
.npz behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# The examples ship with the source tree: make `import tinydiff` find the
# package next to this folder even when it is not installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import data, viz  # noqa: E402
from tinydiff import train as T  # noqa: E402
from tinydiff.files import atomic_write  # noqa: E402

# ---------------------------------------------------------------- the command line


def not_empty(what):
    """An argparse ``type`` that refuses an empty string: ``--out ""`` would write into the current folder."""

    def check(text):
        if not text.strip():
            raise argparse.ArgumentTypeError(f"must name a {what}, got an empty string")
        return text

    check.__name__ = what  # argparse names the type in some messages
    return check


def argument_parser(doc, out, *, out_help=None, out_kind="folder", progress=True, data_dir=False, backend=False):
    """The parser an example starts from: its description (the docstring's first line), --out, --seed,
    --no-progress (unless ``progress`` is False) and, when asked, --data-dir and --backend."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=not_empty(out_kind), default=out,
                        help=out_help or f"where the outputs go (default {out})")
    parser.add_argument("--seed", type=int, default=0)
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if data_dir:
        parser.add_argument("--data-dir", default=None, help="the MNIST files (default: $TINYDIFF_DATA or the cache)")
    if backend:
        parser.add_argument("--backend", default="numpy", choices=list(B.BACKENDS))
    return parser


def add_training_arguments(parser, diffusion_steps=True):
    """--resume, --minutes, --steps and the residual MLP's sizes, for the examples that train on images."""
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--minutes", type=float, default=19.0, help="training time budget (default 19)")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps the learning-rate schedule plans for (default: as many as fit in --minutes, "
                             "from the speed of a short timing run)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=2)
    if diffusion_steps:
        parser.add_argument("--T", type=int, default=1000, help="diffusion steps (default 1000)")
    parser.add_argument("--ema", type=float, default=0.999)


def add_sampler_arguments(parser):
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--sample-steps", type=int, default=100, help="DDIM steps (default 100)")


def add_classifier_argument(parser):
    parser.add_argument("--classifier", default=os.path.join("runs", "classifier.npz"),
                        help="examples/train_classifier.py's output ('none' to skip the accuracy)")


def check_resume(parser, args):
    """--resume needs a run in --out, and cannot be combined with --checkpoint (where the example has one)."""
    if getattr(args, "checkpoint", None) and args.resume:
        parser.error("--checkpoint loads a finished run and --resume continues the one in --out: pick one")
    if args.resume and not os.path.exists(os.path.join(args.out, "checkpoint.npz")):
        parser.error(f"--resume: no checkpoint.npz in {args.out}; train without --resume first")


def check_at_least(parser, args, least, *names):
    """Refuse, naming the flag, any of the integer arguments ``names`` below ``least``."""
    for name in names:
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be >= {least}, got {getattr(args, name)}")


def parse_or_refuse(parser, parse, text):
    """``parse(text)``, with a ValueError turned into the parser's one-line error."""
    try:
        return parse(text)
    except ValueError as error:
        parser.error(str(error))


def prepare(args):
    """Switch to --backend (before any array is made) and make the --out folder."""
    if getattr(args, "backend", None):
        B.set_backend(args.backend)
    os.makedirs(args.out, exist_ok=True)


# ---------------------------------------------------------------- training on a time budget


def train_within_budget(config, args, dataset=None, fewest_steps=1, started=None):
    """``train.train(config)`` into --out within --minutes; returns its TrainResult.

    Unless --steps or --resume fix the length, a short timed run first plans
    config.steps (at least ``fewest_steps``) so that the cosine decay of the
    learning rate ends when the budget does; warm-up is then at most a tenth
    of the planned steps. ``started``: the time.perf_counter() at which the
    budget began (default: now), so loading the data can count against it.
    """
    start = time.perf_counter() if started is None else started
    if not args.steps and not args.resume:
        budget = args.minutes * 60 - (time.perf_counter() - start)
        steps = max(fewest_steps, T.steps_for_budget(config, budget, dataset))
        config = dataclasses.replace(config, steps=steps, warmup=min(config.warmup, steps // 10))
        print(f"planning {config.steps} steps for {args.minutes:g} minutes (timed here)")
    result = T.train(config, args.out, resume=args.resume, progress=not args.no_progress, dataset=dataset,
                     max_seconds=args.minutes * 60 - (time.perf_counter() - start))
    print(f"trained to step {result.run.step} in {(time.perf_counter() - start) / 60:.1f} min "
          f"({len(result.losses) / max(result.seconds, 1e-9):.1f} steps/s)")
    return result


# ---------------------------------------------------------------- held-out images and the judge


def held_out_images(name, data_dir=None):
    """The held-out images of data set ``name``: its test split; digits has one split, so all of it."""
    if name == "digits":
        return data.load("digits")
    return data.load(name, split="test", data_dir=data_dir)


def pick_held_out(parser, dataset, n, seed):
    """Sorted indices of ``n`` distinct images of ``dataset`` drawn by ``seed``; --n too large is refused."""
    if n > len(dataset):
        parser.error(f"--n {n} is more than the {len(dataset)} held-out images")
    return np.sort(np.random.default_rng(seed).choice(len(dataset), size=n, replace=False))


def load_judge(path, dim, data_name=None):
    """The classifier saved by examples/train_classifier.py, or None (and say why) when there is none."""
    if not path or path.lower() == "none":
        print("no classifier given (--classifier): accuracy is not measured")
        return None
    if not os.path.exists(path):
        print(f"no classifier at {path}: accuracy is not measured. Make one with\n"
              f"    python examples/train_classifier.py --data-dir DIR --out {path}")
        return None
    import train_classifier  # beside this file; imported here, not at the top, as it imports this module

    model, header = train_classifier.load_classifier(path)
    if header["in_features"] != dim:
        raise SystemExit(f"--classifier {path} reads images of {header['in_features']} pixels, "
                         f"these have {dim}; train one on the same data set")
    if data_name and header.get("data") not in (None, data_name):
        print(f"warning: --classifier {path} was trained on {header['data']}, these images are {data_name}")
    return model


def judge_predict(judge, images):
    """The digits the classifier reads in host images (N, D) in [-1, 1]."""
    import train_classifier

    return train_classifier.predict(judge, images)


# ---------------------------------------------------------------- writing files


def save_npy(path, array):
    """np.save, written whole or not at all; returns the path."""
    with atomic_write(path, "wb") as file:
        np.save(file, array)
    return path


def save_npz(path, **arrays):
    """np.savez, written whole or not at all; returns the path."""
    with atomic_write(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def save_json(path, values):
    """``values`` as indented JSON, written whole or not at all; returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as file:
        json.dump(values, file, indent=2)
    return path


# ---------------------------------------------------------------- figures


def figure(width, height):
    """An empty matplotlib Figure (no pyplot: no window, no global state)."""
    fig = Figure(figsize=(width, height), dpi=viz.DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, title):
    """Give ``fig`` its title and write it to ``path`` (PNG), whole or not at all; returns the path."""
    fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as file:
        fig.savefig(file, format="png", dpi=viz.DPI)
    return path


def square_view(data, pad=1.3):
    """(center, half): a square around the bulk (99%) of ``data`` (N, 2) alone, so that a sampler's
    stray points fall outside the panel rather than shrink the data in it."""
    low, high = np.percentile(data, [0.5, 99.5], axis=0)
    return (low + high) / 2, float(np.max(high - low)) / 2 * pad


def point_size(n):
    """Marker area for a scatter of n points: smaller when there are many."""
    return float(np.clip(2000.0 / n, 1.0, 12.0))


def scatter_panel(ax, layers, view, size):
    """Scatter each (points (N, 2), color, alpha) of ``layers`` in turn on ``ax``, framed by ``view``."""
    for points, color, alpha in layers:
        ax.scatter(points[:, 0], points[:, 1], s=size, c=color, linewidths=0, alpha=alpha)
    center, half = view
    ax.set_xlim(center[0] - half, center[0] + half)
    ax.set_ylim(center[1] - half, center[1] + half)
    ax.set_aspect("equal")


def image_rows(path, rows, image_shape, most, title):
    """One row per entry of ``rows`` (label -> flat images (N, H*W)): the first ``most`` images of each,
    labelled, in one grid at ``path`` (``viz.image_grid``). Returns the path."""
    shown = min(most, min(len(images) for images in rows.values()))
    grid = np.concatenate([images[:shown] for images in rows.values()])  # (len(rows) * shown, H*W)
    return viz.image_grid(grid.reshape((-1,) + tuple(image_shape)), path, nrow=shown, row_labels=list(rows),
                          title=title)
