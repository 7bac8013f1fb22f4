"""CIFAR-10 from its official binary distribution, read with the standard library's tarfile.

The data set of the paper's Table 1 (Krizhevsky 2009): 60,000 colour images
of 32 x 32 pixels in 10 classes, 50,000 for training and 10,000 for testing.
Only the binary version is read (``cifar-10-binary.tar.gz``, "suitable for C
programs"): never the Python version, whose files are pickles, and loading a
pickle from outside runs whatever code it holds.

The archive holds ``cifar-10-batches-bin/data_batch_1.bin`` ...
``data_batch_5.bin`` (training) and ``test_batch.bin``; each file is a run of
3,073-byte records: one label byte (0..9), then the 1,024 red, 1,024 green
and 1,024 blue values of the image, each plane row by row. The members are
read from the archive in memory (nothing is extracted to disk), after the
whole archive has matched the MD5 published on the data set's page.

Where the archive is found, as for MNIST (``mnist.py``):

1. ``data_dir=DIR``, else ``TINYDIFF_DATA``: ``DIR/cifar10/cifar-10-binary.tar.gz``
   if that folder exists, else ``DIR/cifar-10-binary.tar.gz``. Nothing is
   downloaded there.
2. Otherwise the cache ``~/.cache/tinydiff/cifar10/`` (``TINYDIFF_CACHE``
   moves it): a missing archive is downloaded there (170 MB), checked, and
   only then written, atomically.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import tarfile
from pathlib import Path

import numpy as np

from .. import files
from . import mnist
from .common import DataError, check_labels
from .idx import read_file_bytes

ARCHIVE = "cifar-10-binary.tar.gz"
# MD5 of the archive, from https://www.cs.toronto.edu/~kriz/cifar.html (170,052,171 bytes).
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
FOLDER = "cifar-10-batches-bin"
MEMBERS = {
    "train": tuple(f"{FOLDER}/data_batch_{i}.bin" for i in range(1, 6)),
    "test": (f"{FOLDER}/test_batch.bin",),
}
IMAGE_SHAPE = (3, 32, 32)  # channels (red, green, blue), height, width
RECORD_BYTES = 1 + 3 * 32 * 32
NUM_CLASSES = 10
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def md5_problem(raw):
    """None if ``raw`` has the published MD5, else what was found and expected."""
    # usedforsecurity=False: MD5 here detects damage, and FIPS builds refuse it otherwise.
    found = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return None if found == ARCHIVE_MD5 else f"MD5 {found}, expected {ARCHIVE_MD5}"


def parse_records(payload, where):
    """(pixels uint8 (N, 3, 32, 32), labels int64 (N,)) from the bytes of one .bin file."""
    if not payload or len(payload) % RECORD_BYTES:
        raise DataError(f"{where}: {len(payload)} bytes is not a whole number of {RECORD_BYTES}-byte records "
                        "(a truncated or foreign file)")
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    check_labels(labels, NUM_CLASSES, where)
    return records[:, 1:].reshape((-1,) + IMAGE_SHAPE), labels


def read_archive(path, split):
    """The images and labels of ``split`` in the archive at ``path``, after its MD5 check."""
    raw = read_file_bytes(path)
    problem = md5_problem(raw)
    if problem is not None:
        raise DataError(f"{path}: checksum mismatch for CIFAR-10 archive {ARCHIVE}: {problem} "
                        "(a corrupt, truncated or different file)")
    pixels, labels = [], []
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
            for name in MEMBERS[split]:
                try:
                    member = archive.getmember(name)
                except KeyError:
                    raise DataError(f"{path}: the archive has no member {name}") from None
                if not member.isfile():
                    raise DataError(f"{path}: member {name} is not a regular file")
                p, y = parse_records(archive.extractfile(member).read(), f"{path}:{name}")
                pixels.append(p)
                labels.append(y)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .tar.gz archive ({error})") from None
    return np.concatenate(pixels), np.concatenate(labels)


def download(folder):
    """Fetch the archive into ``folder``, checked before it is written; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in URLS:
        try:
            raw = mnist.fetch_url(url, mnist.DOWNLOAD_TIMEOUT)
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{url}: {type(error).__name__}: {error}")
            continue
        problem = md5_problem(raw)
        if problem is None:
            return Path(files.write_bytes(folder / ARCHIVE, raw))
        raise DataError(f"downloaded CIFAR-10 archive from {url} failed its check: {problem}")
    raise OSError("; ".join(failures))


def _missing(folder, why):
    return DataError(
        f"cifar10 is not available: {why}.\nPut the binary version of CIFAR-10, {ARCHIVE} (170 MB, "
        f"MD5 {ARCHIVE_MD5}), in {folder}:\n  {folder / ARCHIVE}\nIt is published at {', '.join(URLS)} "
        f"(not the Python version, which is pickled). Or pass data_dir=DIR, or set TINYDIFF_DATA=DIR, to read "
        f"it from a folder DIR (or DIR/cifar10) that holds it."
    )


def locate_archive(data_dir, download_missing):
    """The path of the archive: in data_dir (or $TINYDIFF_DATA), else the cache, downloading if allowed."""
    source = "data_dir"
    if data_dir is None and os.environ.get("TINYDIFF_DATA"):
        data_dir, source = os.environ["TINYDIFF_DATA"], "TINYDIFF_DATA"
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        folder = root / "cifar10" if (root / "cifar10").is_dir() else root
        if not (folder / ARCHIVE).is_file():
            raise _missing(folder, f"the archive is missing from the folder named by {source}")
        return folder / ARCHIVE
    folder = mnist.cache_dir("cifar10")
    if (folder / ARCHIVE).is_file():
        return folder / ARCHIVE
    if not download_missing:
        raise _missing(folder, "not in the cache and download=False")
    try:
        return download(folder)
    except OSError as error:
        raise _missing(folder, f"the download failed ({error})") from None


def load_cifar10(split, data_dir=None, download_missing=True):
    """(pixels uint8 (N, 3, 32, 32), labels int64 (N,)) of the CIFAR-10 ``split``, all checked."""
    return read_archive(locate_archive(data_dir, download_missing), split)
