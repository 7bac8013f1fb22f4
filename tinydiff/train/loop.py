"""The training loop of Algorithm 1: one readable step, and the loop that keeps its results safe.

``train_step`` is Algorithm 1 with the optimizer's parts around it, on one
screen. ``train`` repeats it and adds what a long run needs: the learning-
rate schedule, a loss log, checkpoints, a stop on a NaN loss, Ctrl-C and
SIGTERM, and resume. Given a ``communicator`` (tinydiff.distributed), every
rank of an MPI job runs the same loop on its rows of each batch, one
all-reduce joins the gradients, and rank 0 alone writes the run folder.
The loss log, the NaN stop and the checkpoint writes are ``TrainingLog``
(log.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import tempfile
import time

from .. import backend as B
from .. import data as data_module
from .. import optim
from ..backend import xp
from ..distributed import together
from ..files import remove_stale_parts, write_text
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .folder import RunLock, check_writable
from .latent import first_stage
from .log import TrainingError  # noqa: F401  (raised by the log; tinydiff.train and latent.py import it from here)
from .log import TrainingLog
from .run import Run, load_data, load_run, new_run


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate at ``step``: warmup, then a cosine decay to min_lr_ratio * lr (or flat)."""
    if not (config.cosine or config.warmup):
        return config.lr
    return optim.warmup_cosine(step, config.lr, config.warmup, config.steps if config.cosine else None,
                               config.min_lr_ratio * config.lr)


def train_step(run: Run, x0, model_kwargs=None, communicator=None):
    """One step of Algorithm 1 on the batch x0; returns the loss (a 0-d backend array).

    The loss draws t ~ Uniform{0..T-1} and eps ~ N(0, I) from run.rng and
    compares the model's output at x_t with its target (Eq. 14). With a
    ``communicator`` x0 is the whole batch of every rank: this rank computes
    L_r, its rows' part of the loss, and returns it; one all-reduce sums the
    parts' gradients into the batch's (tinydiff.distributed).
    """
    run.optimizer.lr = learning_rate(run.config, run.step)
    if communicator is None:
        loss = run.diffusion.training_loss(run.model, x0, run.rng, model_kwargs=model_kwargs)
    else:
        loss = _loss_of_my_rows(run, x0, model_kwargs, communicator)
    run.optimizer.zero_grad()
    loss.backward()
    if communicator is not None:
        communicator.allreduce_gradients(run.parameters)  # grad L = sum over ranks r of grad L_r
    if run.config.grad_clip:
        optim.clip_grad_norm(run.parameters, run.config.grad_clip)
    run.optimizer.step()
    if run.ema is not None:
        run.ema.update()
    run.step += 1
    return loss.data


def _loss_of_my_rows(run, x0, model_kwargs, communicator):
    """L_r = (1/B) sum of l_i over this rank's rows of the batch, each row with the t and eps one process gives it.

    Every rank draws t and eps for the whole batch from the same stream, in
    the order training_loss draws them (t, then eps), and keeps its rows.
    """
    n = x0.shape[0]
    t = run.rng.integers(0, run.diffusion.T, (n,))  # (B,)
    noise = run.rng.normal(tuple(x0.shape), dtype=x0.dtype)  # (B, D)
    rows = communicator.rows(n)
    kwargs = {name: value[rows, ...] for name, value in (model_kwargs or {}).items()}
    mean = run.diffusion.training_loss(run.model, x0[rows, ...], run.rng, t=t[rows], noise=noise[rows, ...],
                                       model_kwargs=kwargs)
    return mean * ((rows.stop - rows.start) / n)  # the mean over this rank's rows, times their share of the batch


def drop_labels(y, num_classes, probability, rng):
    """Replace each label by the null class (num_classes) with the given probability.

    Classifier-free guidance (Ho and Salimans 2022) trains one network for
    eps(x, c) and eps(x, null) this way.
    """
    if probability <= 0:
        return y
    drop = rng.uniform((y.shape[0],)) < probability
    return xp.where(drop, xp.full(y.shape, num_classes, dtype=y.dtype), y)


class Batches:
    """Minibatches drawn with replacement from the data, on the device once (float32)."""

    def __init__(self, run: Run, dataset):
        self.run = run
        self.x = B.asarray(dataset.x, dtype=B.default_dtype())
        self.labels = B.asarray(dataset.labels) if run.config.conditional else None

    def draw(self):
        """(x0, model_kwargs) of the next step: labels (some dropped) and the low-resolution input."""
        run, config = self.run, self.run.config
        index = run.rng.integers(0, self.x.shape[0], (config.batch_size,))
        x0 = xp.take(self.x, index, axis=0)  # (B, D)
        model_kwargs = {}
        if self.labels is not None:
            labels = xp.take(self.labels, index, axis=0)
            model_kwargs["y"] = drop_labels(labels, run.num_classes, config.label_dropout, run.rng)
        if config.superres:
            model_kwargs["extra"] = data_module.low_resolution(x0, run.image_shape, config.superres)
        return x0, model_kwargs


@dataclasses.dataclass
class TrainResult:
    run: Run
    checkpoint: str
    losses: list  # (step, loss) of this call
    stopped_early: bool = False
    seconds: float = 0.0
    stop_signal: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run, if one did


class _StopSignals:
    """SIGINT and SIGTERM set a flag; the loop then saves and returns (a context manager)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        for number in self.SIGNALS:
            try:
                self.previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread: signals stay with the caller
                pass
        return self

    def _handle(self, number, frame):
        self.received = number

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


RESUME_OVERRIDES = ("steps", "lr", "grad_clip", "data_dir")


def _resume(config, out_dir, dataset, overrides, log):
    """(run, dataset): the run in out_dir with the allowed overrides applied."""
    run = load_run(os.path.join(out_dir, "checkpoint.npz"))
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if unknown:
        raise ValueError(f"on resume only {', '.join(RESUME_OVERRIDES)} may change, not {', '.join(unknown)}")
    if config.data_dir and not run.config.data_dir:
        overrides.setdefault("data_dir", config.data_dir)
    if "steps" in overrides and overrides["steps"] < run.step:
        raise ValueError(f"steps={overrides['steps']} is behind the checkpoint, which is at step {run.step}")
    for key, value in overrides.items():
        if getattr(run.config, key) != value:
            log(f"resume: {key} changes from {getattr(run.config, key)} to {value}")
    run.config = dataclasses.replace(run.config, **overrides).validate()
    log(f"resuming from {out_dir} at step {run.step} of {run.config.steps}")
    return run, (dataset if dataset is not None else load_data(run.config))


def _take_folder(out_dir, writer, held, log):
    """The writer (rank 0, or the one process) checks, locks and tidies out_dir; every rank catches signals."""
    if writer:
        check_writable(out_dir)
        held.enter_context(RunLock(out_dir, log))
    signals = held.enter_context(_StopSignals())
    if writer:
        remove_stale_parts(out_dir)  # temporary files of a killed run (only the lock's holder may touch them)
    return signals


def _stop(signals, deadline, communicator):
    """Whether to stop before the next step: a signal came, or the time is up. On any rank: all stop together."""
    flags = [signals.received or 0, int(deadline is not None and time.perf_counter() > deadline)]
    if communicator is not None:
        flags = communicator.maximum(flags)  # one small all-reduce a step: every rank stops at the same step
        signals.received = flags[0] or signals.received  # (one that came during the all-reduce counts next step)
    return any(flags)


def train(config: TrainConfig, out_dir, *, resume=False, progress=True, dataset=None, stop_at=None,
          max_seconds=None, overrides=None, log=print, communicator=None) -> TrainResult:
    """Train by Algorithm 1 into ``out_dir`` (checkpoint.npz, losses.csv, config.json).

    resume=True continues from out_dir/checkpoint.npz with its saved
    configuration; ``overrides`` may change steps, lr, grad_clip and data_dir
    (``config`` then only supplies data_dir). stop_at ends this call at that
    step (a checkpoint is written) without changing the configured total, as
    a Ctrl-C would; max_seconds does the same after that much wall-clock time
    (the learning-rate schedule still follows config.steps). SIGINT and
    SIGTERM save a checkpoint and return with ``stop_signal`` set.

    With a ``communicator`` (tinydiff.distributed.connect()) every rank of an
    MPI job calls train alike and trains the one model on its rows of each
    batch. Rank 0 alone writes out_dir; a refusal, a signal or the time
    limit on any rank ends every rank at the same point.
    """
    writer = communicator is None or communicator.rank == 0
    log = log if writer else (lambda *_: None)
    with contextlib.ExitStack() as held:
        with together(communicator):  # a refusal on any rank is raised on every rank
            if not resume:  # validated and sized before the folder is touched: a refusal leaves nothing behind
                run, dataset = new_run(config, dataset)
            signals = _take_folder(out_dir, writer, held, log)
            if resume:
                run, dataset = _resume(config, out_dir, dataset, overrides, log)
            if communicator is not None:
                communicator.check_batch_size(run.config.batch_size)
            if writer:
                write_text(os.path.join(out_dir, "config.json"), _config_json(run.config))
            B.keep_freed_memory()  # no page faults re-reading freed memory every step
            if run.latent is not None:  # latent diffusion: stage 1 trains the autoencoder; its codes are the data
                dataset, max_seconds = first_stage(run, dataset, out_dir, signals, max_seconds, progress, log, communicator)
                if dataset is None:  # stopped in stage 1, saved
                    return TrainResult(run, os.path.join(out_dir, "checkpoint.npz"), [], True, 0.0, signals.received)
            batches = Batches(run, dataset)
            logbook = TrainingLog(run, out_dir, progress, run.step if resume else None, communicator)
        end = run.config.steps if stop_at is None else min(run.config.steps, stop_at)
        start_time, x0, model_kwargs = time.perf_counter(), None, None
        deadline = start_time + max_seconds if max_seconds else None
        try:
            while run.step < end and not _stop(signals, deadline, communicator):
                x0, model_kwargs = batches.draw()
                logbook.record(train_step(run, x0, model_kwargs, communicator), run.optimizer.lr)
                if run.step % run.config.checkpoint_every == 0:
                    logbook.save(x0, model_kwargs)
            if x0 is None:
                x0, model_kwargs = batches.draw()  # (nothing trained: the probe still needs a batch)
            logbook.save(x0, model_kwargs)
        finally:
            logbook.close()
    seconds = time.perf_counter() - start_time
    stopped_early = run.step < end
    if stopped_early:
        reason = "time limit reached" if signals.received is None else f"stopped by {signal.Signals(signals.received).name}"
        log(f"{reason} at step {run.step}: saved {logbook.checkpoint}; continue with --resume")
    return TrainResult(run, logbook.checkpoint, logbook.losses, stopped_early, seconds, signals.received)


def _config_json(config):
    import json

    return json.dumps(dataclasses.asdict(config), indent=2) + "\n"


def steps_for_budget(config: TrainConfig, seconds: float, dataset=None, probe_steps=60) -> int:
    """How many steps of ``config`` fit in ``seconds`` on this machine, from a short timed run.

    So a time-budgeted run can plan its cosine decay to end when the budget
    does. The probe trains ``probe_steps`` steps in a scratch folder and
    times its second half (the first steps pay for warm-up: allocations,
    caches), so the rate is the steady one; it also times one checkpoint,
    since a run writes one every checkpoint_every steps and at the end.
    ``seconds`` counts the probe's own time too.
    """
    start = time.perf_counter()
    half = max(1, probe_steps // 2)
    with tempfile.TemporaryDirectory() as scratch:
        quiet = dict(progress=False, dataset=dataset, log=lambda *_: None)
        probe = dataclasses.replace(config, steps=2 * half, checkpoint_every=10 * probe_steps)
        train(probe, scratch, stop_at=half, **quiet)
        steady = train(probe, scratch, resume=True, **quiet)
        saving = time.perf_counter()
        save_checkpoint(steady.run, os.path.join(scratch, "timed.npz"))
        checkpoint_seconds = time.perf_counter() - saving
    step_seconds = steady.seconds / half
    left = seconds - (time.perf_counter() - start) - checkpoint_seconds  # the final checkpoint
    # n steps cost n * step_seconds plus one checkpoint every checkpoint_every steps.
    return max(2 * half, int(left / (step_seconds + checkpoint_seconds / config.checkpoint_every)))
