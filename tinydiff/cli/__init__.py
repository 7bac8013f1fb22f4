"""The command line: ``python -m tinydiff demo | train | sample | plot | lesson | notebooks``.

    python -m tinydiff demo                       # moons in about a minute
    python -m tinydiff train --data digits --steps 3000
    python -m tinydiff sample --checkpoint runs/digits --n 64 --sampler ddim --steps 50
    python -m tinydiff plot schedules

A user error (a bad argument, a missing or corrupt file) ends with one line
naming what was wrong: exit status 2 for arguments, 1 for files and failed
runs. No traceback for anything the user can fix. A flag that would be
ignored is refused, not dropped. A run stopped by Ctrl-C or SIGTERM saves
its checkpoint and exits 128 + the signal's number (130, 143), as a shell
reports a process killed by it.

    common.py   exit statuses, UsageError, argument types, atomic .npy files
    train.py    train: its flags generated from TrainConfig's fields
    sample.py   sample: DDPM or DDIM, by class, with guidance
    plot.py     plot: schedules, forward, loss, reverse, field, vlb
    demo.py     demo: train, sample and draw two moons
    lesson.py   lesson: run a script of lessons/
    notebooks.py  notebooks: the lessons as Jupyter notebooks, optionally executed
"""

from __future__ import annotations

import sys

from . import demo, lesson, notebooks, plot, sample, train
from .common import EXIT_FAILURE, EXIT_SIGNAL_BASE, EXIT_USAGE, Parser, UsageError

COMMANDS = {"demo": demo.command_demo, "train": train.command_train, "sample": sample.command_sample,
            "plot": plot.command_plot, "lesson": lesson.command_lesson, "notebooks": notebooks.command_notebooks}


def build_parser():
    parser = Parser(prog="tinydiff", description="Denoising diffusion probabilistic models in plain NumPy.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (demo, train, sample, plot, lesson, notebooks):
        module.add_parser(commands)
    return parser


def main(argv=None):
    """Run one command; returns the exit status (0, 1 failure, 2 usage, 128 + N stopped by signal N)."""
    from .. import backend, data, samplers
    from .. import train as training

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        if backend.ENV_ERROR and not getattr(args, "backend", None):
            print(f"tinydiff: error: {backend.ENV_ERROR}; use one of {', '.join(backend.BACKENDS)}", file=sys.stderr)
            return EXIT_USAGE
        backend.keep_freed_memory()  # a process setting, made here at the entry point (see backend)
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, backend.BackendError) as error:
        is_file_error = isinstance(error, (training.CheckpointError, data.DataError))
        print(f"tinydiff: error: {error}", file=sys.stderr)
        return EXIT_FAILURE if is_file_error else EXIT_USAGE
    except OSError as error:  # a missing file, a folder where a file should be, a full disk, ...
        print(f"tinydiff: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except training.RunFolderError as error:  # locked by another process, or not writable
        print(f"tinydiff: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except training.TrainingError as error:
        print(f"tinydiff: training stopped: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except samplers.SamplingError as error:  # NaN or inf samples: nothing was written
        print(f"tinydiff: sampling failed: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("tinydiff: interrupted", file=sys.stderr)
        return EXIT_SIGNAL_BASE + 2  # SIGINT


__all__ = ["COMMANDS", "EXIT_FAILURE", "EXIT_SIGNAL_BASE", "EXIT_USAGE", "UsageError", "build_parser", "main"]
