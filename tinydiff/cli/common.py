"""What every command shares: exit statuses, the one-line usage error, argument types, writing arrays."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..files import atomic_write

EXIT_USAGE, EXIT_FAILURE = 2, 1
EXIT_SIGNAL_BASE = 128  # a run stopped by signal N exits 128 + N, as a shell reports it (130 for Ctrl-C)


class UsageError(Exception):
    """A bad argument: exit 2 with a one-line message."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one-line UsageErrors instead of a usage block and exit."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------- argument types


def integer(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text):
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def number(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def non_negative_float(text):
    value = number(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def unit_interval(text):
    value = number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def non_empty_path(text):
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def classes(text):
    """'3', '0,1,2' or 'all' (every class of the model): a list of ints, or the string 'all'."""
    if text.strip() == "all":
        return "all"
    try:
        values = [int(part) for part in text.split(",") if part.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers like 3 or 0,1,2 or 'all', got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected class numbers >= 0, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected each class once (one row per class), got {text!r}")
    return values


# ---------------------------------------------------------------- shared flags and helpers


def add_backend(parser):
    parser.add_argument("--backend", choices=["numpy", "cupy", "array_api_strict"], default=None,
                        help="array backend (default: numpy, or $TINYDIFF_BACKEND)")


def set_backend(name):
    if name:
        from .. import backend

        backend.set_backend(name)


def log(message):
    print(message, flush=True)


def run_folder(checkpoint):
    """The run folder of a --checkpoint argument (the folder itself, or the folder holding the file)."""
    return checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def refuse_existing_run(command, out, advice):
    """A UsageError if ``out`` already holds a run: nothing overwrites a checkpoint by accident."""
    if os.path.exists(os.path.join(out, "checkpoint.npz")):
        raise UsageError(f"tinydiff {command}: {out} already holds a run (checkpoint.npz): {advice}")


def save_npy(path, array) -> str:
    """np.save to ``path`` atomically (a crash leaves the old file or the new one); returns the path."""
    with atomic_write(path, "wb") as file:
        np.save(file, array)
    return path
