"""The training log: losses checked, written and shown in groups, and checkpoints written only when good.

``TrainingLog`` is what ``train`` (loop.py) keeps beside Algorithm 1: the
loss log (losses.csv), the progress bar, the stop on a NaN loss with a
message naming the step and the last good checkpoint, and the checkpoint
writes, each after a probe that its weights are finite. With a
``communicator`` (tinydiff.distributed) every rank checks the same summed
losses and rank 0 alone writes.
"""

from __future__ import annotations

import hashlib
import math
import os

from .. import backend as B
from ..autograd import no_grad
from ..backend import xp
from ..distributed import raised_on_every_rank, together
from .checkpoint import save_checkpoint
from .folder import LossLog


class TrainingError(RuntimeError):
    """Training stopped: a NaN loss, or a resume that does not fit."""


class TrainingLog:
    """The loss log, the progress bar and the NaN stop: losses are checked and written in groups.

    float(loss) on every step is free on the CPU; on a GPU it is a
    synchronisation, so there the check waits for each group of log_every.
    With a communicator too: each group of the ranks' parts is summed then,
    so every rank stops at the same NaN. Rank 0 alone writes and shows.
    """

    def __init__(self, run, out_dir, progress, last_saved, communicator=None):
        self.run, self.last_saved, self.communicator = run, last_saved, communicator
        self.writer = communicator is None or communicator.rank == 0
        self.checkpoint = os.path.join(out_dir, "checkpoint.npz")
        self.file = LossLog(os.path.join(out_dir, "losses.csv"), run.step) if self.writer else None
        self.pending, self.losses = [], []
        self.check_every = run.config.log_every if B.get_backend() == "cupy" or communicator else 1
        self.bar = None
        if progress and self.writer:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.config.steps, initial=run.step, desc="train", unit="step", dynamic_ncols=True)

    def record(self, loss, lr):
        self.pending.append((self.run.step, loss, lr))
        if self.check_every == 1 and not math.isfinite(float(loss)):
            self.flush()  # raises TrainingError naming this step
        if len(self.pending) >= self.run.config.log_every:
            self.flush()
        if self.bar is not None:
            self.bar.update(1)

    def flush(self):
        if not self.pending:
            return
        values = B.to_numpy(xp.stack([loss for _, loss, _ in self.pending]))
        if self.communicator is not None:
            values = self.communicator.sum(values)  # each step's parts L_r add up to its loss L
        rows = [(step, float(value), lr) for (step, _, lr), value in zip(self.pending, values)]
        self.pending.clear()
        with together(self.communicator):
            self._check_and_write(rows)
        self.losses.extend((step, value) for step, value, _ in rows)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{rows[-1][1]:.4f}", lr=f"{rows[-1][2]:.2e}")

    def _check_and_write(self, rows):
        for step, value, _ in rows:
            if not math.isfinite(value):
                raise TrainingError(f"loss became {value} at step {step}; {self.where_saved()}. Lower the "
                                    f"learning rate (now {self.run.config.lr}; on resume --lr may change), keep "
                                    "gradient clipping on, or check the data for NaNs")
        if self.file is None:
            return
        try:
            self.file.append(rows)
        except OSError as error:
            raise TrainingError(f"could not write {self.file.path} at step {rows[-1][0]} "
                                f"({error.strerror or error}); {self.where_saved()}") from None

    def where_saved(self):
        if self.last_saved is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {self.checkpoint} (step {self.last_saved})"

    def save(self, x0, model_kwargs):
        """Flush, then write a checkpoint if its weights are good (finite, with a finite loss on the last batch).

        With a communicator, the ranks first show that they hold the same
        weights and generator state, so the one checkpoint rank 0 writes is
        every rank's, and --resume continues every rank.
        """
        self.flush()
        if self.communicator is not None and not self.communicator.same(_state_digest(self.run)):
            raise raised_on_every_rank(TrainingError(f"the ranks hold different weights or generator states at "
                                                     f"step {self.run.step}; nothing was saved; {self.where_saved()}"))
        with together(self.communicator):
            if self.writer:
                self._write(x0, model_kwargs)
        self.last_saved = self.run.step

    def _write(self, x0, model_kwargs):
        run = self.run
        finite = bool(xp.all(xp.isfinite(run.parameters.data)))
        if finite:
            with no_grad():
                probe_rng = B.default_rng((run.config.seed, run.step, 2))  # its own stream: run.rng is untouched
                probe = run.diffusion.training_loss(run.model, x0, probe_rng, model_kwargs=model_kwargs)
            finite = math.isfinite(float(probe.data))
        if not finite:
            raise TrainingError(f"the weights at step {run.step} are not finite (or give a non-finite loss), so "
                                f"they were not saved; {self.where_saved()}. Lower the learning rate and resume")
        try:
            save_checkpoint(run, self.checkpoint)
        except OSError as error:  # a full disk, a folder made read-only: the old checkpoint is intact
            raise TrainingError(f"could not write {self.checkpoint} at step {run.step} "
                                f"({error.strerror or error}); {self.where_saved()}") from None

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _state_digest(run):
    """A short digest of the weights and the generator's state: the same on every rank of one run."""
    digest = hashlib.blake2b(B.to_numpy(run.parameters.data).tobytes(), digest_size=16)
    digest.update(repr(run.rng.state()).encode())
    return digest.hexdigest()
