"""The run folder: its lock, its loss log, and the checks made before any step is trained.

A run folder holds checkpoint.npz, config.json and losses.csv. Nothing in
it is ever lost to a crash or a second process:

- ``RunLock``: one training process per folder, by the operating system's
  file lock on ``.tinydiff.lock``, which holds the owner's pid for the
  message; a lock whose process is gone (killed with -9, say) is taken over
  with a message.
- ``check_writable``: the folder is written to before training starts, so a
  read-only folder fails at once, not after every step has been trained.
- ``LossLog``: losses.csv. On resume the rows up to the checkpoint's step
  are kept and the file is rewritten atomically once; new rows are then
  appended (a kill -9 can cost at most the torn last row, which is skipped
  when the file is read).
"""

from __future__ import annotations

import csv
import io
import os

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import numpy as np

from ..files import write_text

LOCK_NAME = ".tinydiff.lock"


class RunFolderError(RuntimeError):
    """The run folder cannot be used: locked by another process, or not writable."""


class RunLock:
    """An exclusive lock on a run folder for one training process (a context manager).

    The operating system's file lock (flock) on ``.tinydiff.lock`` is the
    lock: taking it is atomic, and it is let go when its process ends, even
    by kill -9, so a lock can never be left stale. The file holds the
    owner's pid, for the message a refused process prints; a pid left in it
    by a process that no longer holds the lock is taken over with a message.
    (Where flock does not exist, on Windows, the pid alone decides.)
    """

    def __init__(self, folder, log=print):
        self.path = os.path.join(folder, LOCK_NAME)
        self.log = log
        self.handle = None

    def _owner(self):
        try:
            with open(self.path) as file:
                return int(file.read().strip() or "0")
        except (OSError, ValueError):
            return 0

    def acquire(self):
        handle = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            _lock_or_refuse(handle, os.path.dirname(self.path), self._owner)
        except BaseException:
            os.close(handle)
            raise
        owner = self._owner()
        if owner and owner != os.getpid():
            self.log(f"taking over a stale lock in {os.path.dirname(self.path)} (pid {owner} no longer holds it)")
        os.ftruncate(handle, 0)
        os.write(handle, str(os.getpid()).encode())
        self.handle = handle
        return self

    def release(self):
        if self.handle is not None:
            os.ftruncate(self.handle, 0)  # no owner; the file stays (removing it would let two lock two files)
            _unlock(self.handle)
            os.close(self.handle)
            self.handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _refusal(folder, owner):
    return RunFolderError(f"{folder} is in use by another training process (pid {owner}); wait for it, "
                          "or choose another --out")


def _lock_or_refuse(handle, folder, owner):
    """Take the OS lock on ``handle`` without waiting; RunFolderError naming the owner if another holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(folder, owner()) from None
        return
    pid = owner()  # no flock (Windows): a live pid other than ours holds the folder
    if pid and pid != os.getpid() and _process_alive(pid):
        raise _refusal(folder, pid)


def _unlock(handle):
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def check_writable(folder):
    """Create ``folder`` if needed and prove a file can be written in it (RunFolderError if not)."""
    try:
        os.makedirs(folder, exist_ok=True)
        write_text(os.path.join(folder, ".tinydiff-write-test"), "ok")
        os.remove(os.path.join(folder, ".tinydiff-write-test"))
    except OSError as error:
        raise RunFolderError(f"cannot write in the run folder {folder} ({error.strerror or error}); "
                             "choose a writable --out") from None


def _read_rows(path):
    """(step, loss, lr) rows of a losses.csv; a torn or malformed row is skipped."""
    rows = []
    with open(path, newline="") as file:
        for row in csv.reader(file):
            try:
                rows.append((int(row[0]), float(row[1]), float(row[2])))
            except (ValueError, IndexError):
                continue  # the header, or a row torn by a kill
    return rows


class LossLog:
    """losses.csv in the run folder: step, loss, lr; rows past a resumed checkpoint are dropped."""

    def __init__(self, path, resume_step):
        self.path = path
        rows = []
        if resume_step > 0 and os.path.exists(path):
            rows = [r for r in _read_rows(path) if r[0] <= resume_step]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["step", "loss", "lr"])
        writer.writerows(rows)
        write_text(path, text.getvalue())

    def append(self, rows):
        with open(self.path, "a", newline="") as file:
            csv.writer(file).writerows(rows)


def read_losses(run_dir):
    """(steps, losses) arrays from a run folder's losses.csv."""
    rows = _read_rows(os.path.join(run_dir, "losses.csv"))
    return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows])
