"""What is done to loaded data: minibatches, and changes of resolution.

``batches``, ``downsample`` and ``upsample`` work on host NumPy arrays;
``low_resolution`` runs on the backend namespace ``xp``, inside the training
loop, on batches already on the device.
"""

from __future__ import annotations

import numpy as np

from ..backend import xp
from ..checks import check_int
from .common import as_generator

# ---------------------------------------------------------------- minibatches


def batches(x, batch_size, rng, *, labels=None, start=0):
    """An endless iterator of random minibatches of ``x`` (host arrays).

    Each epoch draws a fresh permutation of the N rows from ``rng`` (a numpy
    Generator or an int seed) and yields its consecutive slices of
    ``batch_size`` rows; the last N mod batch_size rows of each epoch are
    skipped (they appear in other epochs), so every batch has the same shape.
    Yields ``x_batch``, or ``(x_batch, labels_batch)`` when ``labels`` is given.

    ``start`` skips that many batches first, so that a run resumed at step
    ``start`` from the same seed sees exactly the batches it would have seen.
    """
    x = np.asarray(x)
    if x.ndim < 1:
        raise ValueError("x must have at least one dimension (rows are data points)")
    count = x.shape[0]
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > count:
        raise ValueError(f"batch_size={batch_size} is larger than the {count} rows of x; allowed 1..{count}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[:1] != (count,):
            raise ValueError(f"labels must have {count} rows like x, got shape {labels.shape}")
    start = check_int("start", start, minimum=0)
    rng = as_generator(rng)
    return _batch_stream(x, labels, batch_size, rng, start)


def _batch_stream(x, labels, batch_size, rng, start):
    per_epoch = x.shape[0] // batch_size
    for _ in range(start // per_epoch):  # whole epochs skipped: draw their permutations only
        rng.permutation(x.shape[0])
    skip = start % per_epoch
    while True:
        order = rng.permutation(x.shape[0])
        for b in range(skip, per_epoch):
            index = order[b * batch_size:(b + 1) * batch_size]
            yield x[index] if labels is None else (x[index], labels[index])
        skip = 0


# ---------------------------------------------------------------- resolution (super-resolution)


def downsample(images, factor=2):
    """Average-pool (N, H, W) host images by ``factor`` in each direction: (N, H/f, W/f)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {images.shape}")
    n, h, w = images.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor must be a positive divisor of H = {h} and W = {w}, got {factor}")
    return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))  # (N, H/f, W/f)


def upsample(images, factor=2):
    """Repeat each pixel of (N, h, w) host images ``factor`` times in each direction (nearest neighbour)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, h, w), got {images.shape}")
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)


def low_resolution(x, image_shape, factor):
    """Flattened images x (N, H*W) average-pooled by ``factor``, then blown back up to (N, H*W).

    The conditioning input of super-resolution: the same number of pixels as
    x, each the mean of its factor x factor block (nearest-neighbour upsampling
    of the low-resolution image).
    """
    # On host arrays this is upsample(downsample(images, f), f), flattened; it
    # is written with xp (reshape, mean, broadcast) so batches stay on the device.
    h, w = image_shape
    if h % factor or w % factor:
        raise ValueError(f"superres factor {factor} must divide the image size {h}x{w}")
    n = x.shape[0]
    blocks = xp.reshape(x, (n, h // factor, factor, w // factor, factor))
    means = xp.mean(blocks, axis=(2, 4), keepdims=True)  # (N, h/f, 1, w/f, 1)
    return xp.reshape(xp.broadcast_to(means, tuple(blocks.shape)), (n, h * w))
