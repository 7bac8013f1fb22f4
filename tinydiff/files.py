"""Writing files so that a crash never leaves half of one: the one atomic writer.

Every file tinydiff writes (checkpoints, samples, loss logs, configurations,
pictures, downloaded data) goes through ``atomic_write``: the content is
written to a hidden temporary file in the same folder, flushed to disk, and
renamed over the destination. A rename within one folder is atomic on POSIX
and Windows, so a reader (or a resume after kill -9) sees the old file or the
new one, never a mixture. The file gets the permissions the process's umask
gives a new file (``tempfile.mkstemp`` alone would make it 0600, so another
user could not read a shared run).

    with atomic_write("runs/x/config.json", "w") as file:
        json.dump(config, file)

Temporary names start with ``.`` and end with ``.part``; ``remove_stale_parts``
deletes the ones a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

PART_SUFFIX = ".part"


def _umask_mode() -> int:
    """The mode a new regular file gets under the current umask (0o644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None, newline=None):
    """Open a temporary file beside ``path`` for writing; rename it onto ``path`` on success.

    On any exception (a full disk, Ctrl-C) the temporary file is removed and
    ``path`` is left as it was. ``mode`` is "wb" or "w" (text).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=PART_SUFFIX, dir=folder)
    try:
        with os.fdopen(handle, mode, encoding=encoding, newline=newline) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _umask_mode())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_bytes(path, payload: bytes) -> str:
    """Write ``payload`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as file:
        file.write(payload)
    return os.fspath(path)


def write_text(path, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    return os.fspath(path)


def remove_stale_parts(folder) -> list:
    """Delete the temporary files that killed writers left in ``folder``; returns their names."""
    removed = []
    if not os.path.isdir(folder):
        return removed
    for name in os.listdir(folder):
        if name.startswith(".") and name.endswith(PART_SUFFIX):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed
