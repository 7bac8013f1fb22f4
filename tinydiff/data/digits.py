"""The small digits set shipped inside the package (no download, no network).

The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin
and C. Kaynak, 1998; CC BY 4.0): 1,797 images of 8 x 8 pixels, each pixel a
count in 0..16. It lives in ``tinydiff/data_files/digits.csv.gz``, found
through ``importlib.resources`` so it is read from an installed package too.
"""

from __future__ import annotations

import importlib.resources
import io

import numpy as np

from .common import DataError, check_labels
from .idx import decompress

DIGITS_FILE = "digits.csv.gz"
NUM_CLASSES = 10
MAX_VALUE = 16  # pixels are counts in 0..MAX_VALUE


def digits_resource():
    """The shipped file as an ``importlib.resources`` Traversable (a path for a plain checkout)."""
    return importlib.resources.files("tinydiff") / "data_files" / DIGITS_FILE


def load_digits():
    """(pixels int64 (1797, 8, 8) in 0..16, labels int64 (1797,)) from the shipped CSV.

    One row per image: 64 pixel counts in 0..16 (an 8x8 grid, row by row),
    then the digit.
    """
    where = f"tinydiff/data_files/{DIGITS_FILE}"
    try:
        raw = digits_resource().read_bytes()
    except OSError as error:
        raise DataError(
            f"{where}: cannot read the shipped digits file ({error}); reinstall tinydiff"
        ) from None
    text = decompress(raw, where).decode("ascii", errors="replace")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{where}: not a table of integers ({error})") from None
    if table.shape[1] != 65:
        raise DataError(f"{where}: expected 65 columns (64 pixels, then the label), got {table.shape[1]}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > MAX_VALUE:
        raise DataError(f"{where}: pixel values must lie in 0..16, found {pixels.min()}..{pixels.max()}")
    if labels.min() < 0:
        raise DataError(f"{where}: negative label {labels.min()}")
    check_labels(labels, NUM_CLASSES, where)
    return pixels.reshape(-1, 8, 8), labels  # (N, 8, 8)
