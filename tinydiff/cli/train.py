"""The train command: one flag per TrainConfig field, generated from the dataclass.

Each field of ``tinydiff.train.TrainConfig`` with ``metadata["cli"]`` becomes
a flag (``batch_size`` -> ``--batch-size``, ``T`` -> ``--T``) with the
field's help and choices; bool fields are ``--name/--no-name``. Every
generated flag defaults to None, so the command knows which ones the user
gave: only those go into the TrainConfig (the rest keep its defaults), and
on ``--resume`` only the ones in RESUME_OVERRIDES may be given.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import typing

from ..train import TrainConfig
from ..train import RESUME_OVERRIDES
from .common import (
    EXIT_SIGNAL_BASE,
    UsageError,
    add_backend,
    integer,
    log,
    non_empty_path,
    number,
    refuse_existing_run,
    set_backend,
)

REQUIRED = ("data",)  # a run always names its data (and the default --out, runs/DATA, comes from it)
TYPES = {int: integer, float: number, str: str}
METAVARS = {int: "N", float: "X", str: "DIR"}  # the one free-text field is data_dir


def flag(name):
    """The command-line flag of a TrainConfig field: batch_size -> --batch-size, T -> --T."""
    return "--" + name.replace("_", "-")


def as_typed(name, value):
    """The flag as the user typed it: --no-cosine for cosine=False."""
    return flag("no_" + name) if value is False else flag(name)


def config_fields():
    """The TrainConfig fields that are flags, with their types (Optional[X] counts as X)."""
    hints = typing.get_type_hints(TrainConfig)
    fields = []
    for field in dataclasses.fields(TrainConfig):
        if field.metadata.get("cli"):
            kinds = [kind for kind in typing.get_args(hints[field.name]) if kind is not type(None)]
            fields.append((field, kinds[0] if kinds else hints[field.name]))
    return fields


def _default_note(field, kind):
    if field.default is None or field.name in REQUIRED:
        return ""  # the help says what None means
    if kind is bool:
        return f" (default: {'on' if field.default else 'off'})"
    return f" (default: {field.default})"


def _add_config_flag(group, field, kind):
    help_text = field.metadata["help"] + _default_note(field, kind)
    if kind is bool:
        group.add_argument(flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_text)
        return
    choices = field.metadata.get("choices")
    metavar = None if choices else field.metadata.get("metavar") or METAVARS[kind]
    group.add_argument(flag(field.name), dest=field.name, type=TYPES[kind], default=None, choices=choices,
                       metavar=metavar, required=field.name in REQUIRED, help=help_text)


def add_parser(commands):
    train = commands.add_parser(
        "train", help="train a denoiser (Algorithm 1)",
        description="Train a denoiser by Algorithm 1 into a run folder (checkpoint.npz, losses.csv, config.json).",
    )
    group = train.add_argument_group("configuration (TrainConfig; saved in the run)")
    for field, kind in config_fields():
        _add_config_flag(group, field, kind)
    run = train.add_argument_group("the run")
    run.add_argument("--out", type=non_empty_path, metavar="DIR", default=None, help="run folder (default runs/DATA)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its checkpoint; only "
                          f"{', '.join(flag(name) for name in RESUME_OVERRIDES)} may change")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--distributed", action="store_true",
                     help="train one model on every process of an MPI job (mpiexec -n N ...; found without this "
                          "flag when mpiexec starts several); --batch-size stays the whole batch; needs the mpi extra")
    add_backend(run)
    return train


def given_config(args) -> dict:
    """{field: value} of the configuration flags the user gave."""
    return {field.name: getattr(args, field.name) for field, _ in config_fields()
            if getattr(args, field.name) is not None}


def build_config(given) -> TrainConfig:
    """TrainConfig(**given), validated; a bad value is a usage error naming its flag."""
    try:
        return TrainConfig(**given).validate()
    except ValueError as error:
        name, _, rest = str(error).partition(" ")
        if name in {field.name for field in dataclasses.fields(TrainConfig)}:
            raise UsageError(f"tinydiff train: {flag(name)} {rest}") from None
        raise UsageError(f"tinydiff train: {error}") from None


def resume_overrides(given, out) -> dict:
    """The flags that may change on --resume; a UsageError for any other training flag."""
    from .. import train as T

    checkpoint = os.path.join(out, "checkpoint.npz")
    if not os.path.exists(checkpoint):
        raise FileNotFoundError(f"--resume: no checkpoint.npz in {out}; train without --resume first")
    refused = [as_typed(name, value) for name, value in given.items()
               if name not in RESUME_OVERRIDES and name not in REQUIRED]
    if refused:
        raise UsageError(f"tinydiff train: --resume continues the run with its saved configuration, so "
                         f"{', '.join(refused)} cannot be given; only "
                         f"{', '.join(flag(name) for name in RESUME_OVERRIDES)} may change on resume")
    saved = T.read_checkpoint_header(checkpoint).get("config", {}).get("data")
    if saved != given["data"]:
        raise UsageError(f"tinydiff train: --data {given['data']}: the run in {out} was trained on {saved}")
    return {name: value for name, value in given.items() if name in RESUME_OVERRIDES}


def command_train(args):
    from .. import distributed
    from .. import train as T

    set_backend(args.backend)
    communicator = distributed.connect(args.distributed)  # None for one process; mpi4py is imported only for several
    distributed.quiet_unless_root(communicator)
    with distributed.guard(communicator), distributed.together(communicator):
        given = given_config(args)
        config = build_config(given)
        out = args.out or os.path.join("runs", args.data)
        overrides = None
        if args.resume:
            overrides = resume_overrides(given, out)
            log(f"--resume: continuing the run in {out} with its saved configuration (only "
                f"{', '.join(flag(name) for name in RESUME_OVERRIDES)} may change)")
        else:
            refuse_existing_run("train", out, "continue it with --resume, or choose another --out")
    with distributed.guard(communicator):
        if communicator is not None:
            log(f"training one model on {communicator.size} MPI process(es): each takes its rows of every "
                "batch, one all-reduce sums their gradients")
        result = T.train(config, out, resume=args.resume, overrides=overrides, progress=not args.no_progress,
                         log=log, communicator=communicator)
    _report(result, out)
    return EXIT_SIGNAL_BASE + result.stop_signal if result.stop_signal else 0


def _report(result, out):
    steps_done = len(result.losses)
    rate = steps_done / result.seconds if result.seconds > 0 else float("nan")
    last = f", last loss {result.losses[-1][1]:.4f}" if result.losses else ""
    stopped = f"; stopped by {signal.Signals(result.stop_signal).name}" if result.stop_signal else ""
    log(f"trained {steps_done} steps in {result.seconds:.1f} s ({rate:.0f} steps/s){last}{stopped}")
    log(f"wrote {result.checkpoint}, {os.path.join(out, 'losses.csv')}, {os.path.join(out, 'config.json')}")
