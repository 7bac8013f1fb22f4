"""Data: 2D toy sets, MNIST-format IDX files, and the small digits set.

Everything here works on host NumPy arrays (apart from ``low_resolution``,
which runs on the backend); the training loop moves batches to the backend.
One entry point loads any set by name:

    ds = load("eightgaussians", n=10_000, seed=0)   # ds.x: float32 (N, 2)
    ds = load("digits")                              # 1,797 8x8 images in [-1, 1]
    ds = load("mnist", split="test")                 # IDX files, found or downloaded
    ds = load("cifar10")                             # the binary archive; x (N, 3*32*32)

2D sets are drawn fresh from a seeded generator and scaled to roughly unit
spread, the scale the DDPM forward process assumes of data: the paper scales
images to [-1, 1] (Sec. 4) so that x_T ~ N(0, I) is reached at the same
signal-to-noise ratio whatever the data set.

Image sets come flattened, ``x`` of shape (N, H*W) (colour: (N, C*H*W), the
channels one after another), pixels mapped linearly to [-1, 1] (Sec. 4: "we
assume that image data consists of integers in {0, ..., 255} scaled
linearly to [-1, 1]"), with integer labels.

The package, one concept a file:

    common.py      DataError and the checks every part shares
    toy2d.py       moons, swissroll, eightgaussians, checkerboard, circles, spiral
    idx.py         IDX files (the MNIST format): read, write, digest
    mnist.py       MNIST and Fashion-MNIST: where the files are, checksums, download
    cifar10.py     CIFAR-10 from its binary .tar.gz (never the pickled version)
    digits.py      the digits set shipped in tinydiff/data_files/
    transforms.py  minibatches, downsample, upsample, low_resolution
    __init__.py    Dataset and load(), which ties them together
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..checks import check_int
from . import cifar10, digits, mnist
from .common import DataError
from .digits import DIGITS_FILE
from .idx import read_idx, sha256_of, write_idx
from .mnist import DOWNLOAD_TIMEOUT, cache_dir
from .toy2d import (
    DATASETS_2D,
    EIGHT_GAUSSIANS_RADIUS,
    EIGHT_GAUSSIANS_STD,
    GENERATORS_2D,
    checkerboard,
    circles,
    eightgaussians,
    eightgaussians_centers,
    moons,
    spiral,
    swissroll,
)
from .transforms import batches, downsample, low_resolution, upsample

IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10")
DATASETS = DATASETS_2D + IMAGE_DATASETS
SPLITS = ("train", "test")

DEFAULT_N_2D = 10_000

__all__ = [
    "DATASETS", "DATASETS_2D", "DEFAULT_N_2D", "DIGITS_FILE", "DOWNLOAD_TIMEOUT",
    "EIGHT_GAUSSIANS_RADIUS", "EIGHT_GAUSSIANS_STD", "IMAGE_DATASETS", "SPLITS",
    "DataError", "Dataset", "batches", "cache_dir", "checkerboard", "circles",
    "downsample", "eightgaussians", "eightgaussians_centers", "load", "low_resolution",
    "moons", "read_idx", "scale_pixels", "sha256_of", "spiral", "swissroll", "upsample",
    "write_idx",
]


@dataclasses.dataclass
class Dataset:
    """A loaded data set: host arrays plus what is needed to read them.

    x:            float32 (N, D). Image sets are flattened, D = H * W (C * H * W in colour), in [-1, 1].
    labels:       int64 (N,), or None for sets without natural classes.
    num_classes:  number of classes when labels is not None, else None.
    image_shape:  (H, W) for grey image sets, (C, H, W) for colour ones (CIFAR-10), None for 2D sets.
    name:         the name ``load`` was given.
    class_names:  a name per class where one exists (Fashion-MNIST), else None.
    levels:       the number of pixel values of an image set (256 for MNIST, 17 for
                  digits), which the discretized decoder of Eq. 13 needs; None for 2D sets.
    """

    x: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int | None = None
    image_shape: tuple[int, int] | None = None
    name: str = ""
    class_names: tuple[str, ...] | None = None
    levels: int | None = None

    def __len__(self):
        return int(self.x.shape[0])

    @property
    def dim(self):
        """D, the length of one flattened data point."""
        return int(self.x.shape[1])

    @property
    def channels(self):
        """1 for grey images, C for colour ones (image_shape (C, H, W)); None for 2D sets."""
        if self.image_shape is None:
            return None
        return self.image_shape[0] if len(self.image_shape) == 3 else 1

    def images(self):
        """The images as float32 (N, H, W), or (N, C, H, W) in colour, in [-1, 1] (a view of ``x``)."""
        if self.image_shape is None:
            raise ValueError(f"images(): data set {self.name!r} is not an image set")
        return self.x.reshape((len(self),) + tuple(self.image_shape))  # (N, H, W) or (N, C, H, W)


def scale_pixels(pixels, max_value):
    """Integers in 0..max_value -> float32 in [-1, 1], linearly (Sec. 4); 0 -> -1, max -> 1 exactly."""
    half = np.float32(max_value / 2.0)
    return (pixels.astype(np.float32) - half) / half


def load(name, n=None, seed=0, *, split="train", data_dir=None, download=True):
    """Load data set ``name`` as a ``Dataset`` of host NumPy arrays.

    name:      one of DATASETS (2D: moons, swissroll, eightgaussians,
               checkerboard, circles, spiral; images: digits, mnist, fashion-mnist,
               cifar10).
    n:         2D sets: how many points to draw (default 10,000).
               Image sets: None for all, else a random subset of n images
               drawn without replacement by ``seed``.
    seed:      a non-negative int; the same seed gives the same data.
    split:     "train" or "test". For 2D sets "test" draws from an independent
               stream of the same seed; digits has a single set of 1,797
               images, so only "train".
    data_dir:  a folder holding the IDX files (MNIST-format sets) or the CIFAR-10
               archive; when None, $TINYDIFF_DATA, else the download cache (see
               ``mnist`` and ``cifar10``).
    download:  whether missing files may be downloaded to the cache.

    Images come as x float32 (N, H*W) in [-1, 1] with int64 labels; see
    ``Dataset.images()`` for (N, H, W).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set name {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    seed = check_int("seed", seed, minimum=0)
    n = check_int("n", n, minimum=1, allow_none=True)
    if name in GENERATORS_2D:
        generate, num_classes = GENERATORS_2D[name]
        # The test split gets its own stream, independent of the train stream.
        rng = np.random.default_rng(seed if split == "train" else [seed, 1])
        x, labels = generate(DEFAULT_N_2D if n is None else n, rng)
        return Dataset(x=x, labels=labels, num_classes=num_classes, image_shape=None, name=name)
    return _load_images(name, n, seed, split, data_dir, download)


def _load_images(name, n, seed, split, data_dir, download):
    """An image set as a Dataset: all images, or ``n`` drawn without replacement by ``seed``."""
    if name == "digits":
        if split != "train":
            raise ValueError(
                "split: the digits set has a single split of 1,797 images; use split='train' "
                "(hold out a part yourself if you need a test set)"
            )
        pixels, labels = digits.load_digits()
        max_value, num_classes = digits.MAX_VALUE, digits.NUM_CLASSES
    elif name == "cifar10":
        pixels, labels = cifar10.load_cifar10(split, data_dir, download)  # (N, 3, 32, 32)
        max_value, num_classes = 255, cifar10.NUM_CLASSES
    else:
        pixels, labels = mnist.load_idx_set(name, split, data_dir, download)
        max_value, num_classes = 255, mnist.NUM_CLASSES[name]
    count = pixels.shape[0]
    if n is not None:
        if n > count:
            raise ValueError(
                f"n={n} is larger than the {count} images of {name} ({split}); "
                f"allowed 1..{count} or None"
            )
        index = np.random.default_rng(seed).choice(count, size=n, replace=False)
        pixels, labels = pixels[index], labels[index]
    x = scale_pixels(pixels.reshape(pixels.shape[0], -1), max_value)  # (N, H*W), or (N, C*H*W) in colour
    return Dataset(
        x=x,
        labels=labels.astype(np.int64),
        num_classes=num_classes,
        image_shape=tuple(int(n) for n in pixels.shape[1:]),  # (H, W), or (C, H, W)
        name=name,
        class_names=cifar10.CLASS_NAMES if name == "cifar10" else mnist.CLASS_NAMES.get(name),
        levels=max_value + 1,
    )
