"""What every part of the data package shares: the error type and two checks."""

from __future__ import annotations

import numpy as np

from ..checks import check_int


class DataError(ValueError):
    """A data file is missing, empty, corrupt, truncated, or fails its checksum.

    The message always names the file (or the folder and the files expected
    in it) and says what was wrong.
    """


def as_generator(rng, argument="rng"):
    """A numpy Generator from a Generator or a non-negative int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    seed = check_int(f"{argument} (a numpy Generator or an int seed)", rng, minimum=0)
    return np.random.default_rng(seed)


def check_labels(labels, num_classes, path):
    """DataError naming ``path`` and the first bad index when a label is >= num_classes."""
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: label {int(labels[bad])} at index {bad} is out of range; allowed 0..{num_classes - 1}"
        )
