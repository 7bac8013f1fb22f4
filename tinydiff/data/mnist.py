"""MNIST-format sets (``mnist``, ``fashion-mnist``): where the files are, what they must hash to.

Where the files come from:

1. ``data_dir=DIR``, else the environment variable ``TINYDIFF_DATA``: the
   files are read from ``DIR/NAME/`` if that folder exists, else from
   ``DIR/`` itself. Nothing is downloaded into a folder the user named.
2. Otherwise the cache ``~/.cache/tinydiff/NAME/`` (``TINYDIFF_CACHE``
   replaces ``~/.cache/tinydiff``); missing files are downloaded there with
   ``urllib`` (``download=True``), checked in memory, and only then written,
   atomically (``tinydiff.files``), so the cache never holds an unchecked or
   half-written file.

Each file may be gzipped or not (detected by its magic bytes, not its
name). Checks: MNIST against the SHA-256 of the decompressed files, so any
mirror's gzip wrapper is accepted; Fashion-MNIST against the MD5 of the
official ``.gz`` files published in its repository's README (no SHA-256 is
published; a decompressed Fashion-MNIST file can only be checked for format).
Every file, checked or not, must be a well-formed IDX file whose byte count
matches its header, with labels in range; anything else raises
``DataError`` naming the file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

import numpy as np

from .. import files
from .common import DataError, check_labels
from .idx import GZIP_MAGIC, decompress, parse_idx, read_file_bytes

# Seconds a download may wait on the network before giving up.
DOWNLOAD_TIMEOUT = 60.0

# The images file and the labels file of each split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Which digest, of which bytes, a file must have. ("sha256", "payload", hex):
# SHA-256 of the decompressed file; ("md5", "gzip", hex): MD5 of the official
# gzipped file as published (a decompressed copy cannot be checked by it).
CHECKSUMS = {
    "mnist": {
        # SHA-256 of the decompressed files (the payload is identical on every mirror).
        "train-images-idx3-ubyte": ("sha256", "payload", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte": ("sha256", "payload", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte": ("sha256", "payload", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte": ("sha256", "payload", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    "fashion-mnist": {
        # MD5 of the .gz files, from the table in github.com/zalandoresearch/fashion-mnist README.md.
        "train-images-idx3-ubyte": ("md5", "gzip", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train-labels-idx1-ubyte": ("md5", "gzip", "25c81989df183df01b3e8a0aad5dffbe"),
        "t10k-images-idx3-ubyte": ("md5", "gzip", "bef4ecab320f06d8554ea6380940ec79"),
        "t10k-labels-idx1-ubyte": ("md5", "gzip", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}

# Base URLs tried in order; each file is fetched as BASE + FILE + ".gz".
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10}
CLASS_NAMES = {
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}


def cache_dir(name=None):
    """The download cache: $TINYDIFF_CACHE or ~/.cache/tinydiff, with NAME/ appended if given."""
    root = os.environ.get("TINYDIFF_CACHE") or os.path.join("~", ".cache", "tinydiff")
    root = Path(root).expanduser()
    return root / name if name else root


# ---------------------------------------------------------------- checks


def checksum_problem(name, filename, raw, payload):
    """None if the file matches its known digest (or none applies), else what was expected."""
    known = CHECKSUMS.get(name, {}).get(filename)
    if known is None:
        return None
    algorithm, of, expected = known
    if of == "gzip":
        if not raw.startswith(GZIP_MAGIC):
            return None  # only the official .gz bytes have a published digest
        data, what = raw, "the gzipped file"
    else:
        data, what = payload, "the decompressed file"
    # usedforsecurity=False: MD5 here detects damage, and FIPS builds refuse it otherwise.
    found = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
    if found == expected:
        return None
    return f"{algorithm.upper()} of {what} is {found}, expected {expected}"


def check_file(name, filename, raw, path):
    """Decompress, verify the digest, parse: the array, or DataError naming ``path``."""
    payload = decompress(raw, path)
    problem = checksum_problem(name, filename, raw, payload)
    if problem is not None:
        raise DataError(f"{path}: checksum mismatch for {name} file {filename}: {problem}")
    return parse_idx(payload, path)


# ---------------------------------------------------------------- download


def fetch_url(url, timeout):
    """The bytes at ``url`` (urllib only, with a timeout).

    Tests replace this function (``tinydiff.data.mnist.fetch_url``) to
    simulate the network.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download(name, filename, folder):
    """Fetch NAME's ``filename`` into ``folder``, checked before it is written.

    Returns the final path. Raises OSError when no mirror could be reached
    and DataError when every file that arrived failed its checks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for base in MIRRORS[name]:
        url = f"{base}{filename}.gz"
        try:
            raw = fetch_url(url, DOWNLOAD_TIMEOUT)
            check_file(name, filename, raw, url)
        except DataError as error:
            failures.append(("bad", str(error)))
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, dropped connections
            failures.append(("net", f"{url}: {type(error).__name__}: {error}"))
        else:
            return Path(files.write_bytes(folder / f"{filename}.gz", raw))
    details = "; ".join(text for _, text in failures)
    if any(kind == "bad" for kind, _ in failures):
        raise DataError(f"downloaded {name} file {filename} failed its checks: {details}")
    raise OSError(details)


# ---------------------------------------------------------------- finding the files


def find_file(folder, filename):
    """``folder/filename`` or ``folder/filename.gz``, whichever exists, else None."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_message(name, split, folder, missing, why):
    """What is missing, where to put it, and where it is published."""
    lines = "\n".join(f"  {folder / (f + '.gz')}" for f in missing)
    urls = ", ".join(MIRRORS[name])
    return (
        f"{name} ({split} split) is not available: {why}.\n"
        f"Put these files (gzipped as downloaded, or decompressed without the .gz) in {folder}:\n"
        f"{lines}\n"
        f"They are published at {urls}. Or pass data_dir=DIR, or set "
        f"TINYDIFF_DATA=DIR, to read them from a folder DIR (or DIR/{name}) that holds them."
    )


def locate_idx_files(name, split, data_dir, download_missing):
    """Paths of the images and labels files of NAME's ``split``, downloading if allowed."""
    filenames = IDX_FILES[split]
    source = "data_dir"
    if data_dir is None and os.environ.get("TINYDIFF_DATA"):
        data_dir, source = os.environ["TINYDIFF_DATA"], "TINYDIFF_DATA"
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        folder = root / name if (root / name).is_dir() else root
        paths = [find_file(folder, f) for f in filenames]
        missing = [f for f, p in zip(filenames, paths) if p is None]
        if missing:
            why = f"files missing from the folder named by {source}"
            raise DataError(missing_message(name, split, folder, missing, why))
        return paths
    folder = cache_dir(name)
    paths = [find_file(folder, f) if folder.is_dir() else None for f in filenames]
    missing = [f for f, p in zip(filenames, paths) if p is None]
    if missing and not download_missing:
        raise DataError(missing_message(name, split, folder, missing, "not in the cache and download=False"))
    for i, filename in enumerate(filenames):
        if paths[i] is None:
            try:
                paths[i] = download(name, filename, folder)
            except OSError as error:
                raise DataError(
                    missing_message(name, split, folder, missing, f"the download failed ({error})")
                ) from None
    return paths


def load_idx_set(name, split, data_dir, download_missing):
    """(pixels uint8 (N, H, W), labels int64 (N,)) of an MNIST-format set, all checked."""
    image_path, label_path = locate_idx_files(name, split, data_dir, download_missing)
    image_file, label_file = IDX_FILES[split]
    images = check_file(name, image_file, read_file_bytes(image_path), image_path)
    labels = check_file(name, label_file, read_file_bytes(label_path), label_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{image_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{label_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{label_path}: holds {labels.shape[0]} labels but {image_path} holds {images.shape[0]} images"
        )
    check_labels(labels, NUM_CLASSES[name], label_path)
    return images, labels.astype(np.int64)
