"""Data: 2D toy sets, MNIST-format IDX files, and the small digits set.

Everything here works on host NumPy arrays; the training loop moves batches to
the backend. One entry point loads any set by name:

    ds = load("eightgaussians", n=10_000, seed=0)   # ds.x: float32 (N, 2)
    ds = load("digits")                              # 1,797 8x8 images in [-1, 1]
    ds = load("mnist", split="test")                 # IDX files, found or downloaded

2D sets are drawn fresh from a seeded generator and scaled to roughly unit
spread (std per axis between about 0.5 and 1.5, nearly all points in
[-3, 3]), the scale the DDPM forward process assumes of data: the paper
scales images to [-1, 1] (Sec. 4) so that x_T ~ N(0, I) is reached at the
same signal-to-noise ratio whatever the data set.

Image sets come flattened, ``x`` of shape (N, H*W), pixels mapped linearly to
[-1, 1] (Sec. 4: "we assume that image data consists of integers in
{0, ..., 255} scaled linearly to [-1, 1]"), with integer labels.

Where MNIST-format files come from (``mnist``, ``fashion-mnist``):

1. ``data_dir=DIR``, else the environment variable ``TINYDIFF_DATA``: the
   files are read from ``DIR/NAME/`` if that folder exists, else from
   ``DIR/`` itself. Nothing is downloaded into a folder the user named.
2. Otherwise the cache ``~/.cache/tinydiff/NAME/`` (``TINYDIFF_CACHE``
   replaces ``~/.cache/tinydiff``); missing files are downloaded there with
   ``urllib`` (``download=True``), into a temporary file that is checked and
   only then renamed.

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

import dataclasses
import gzip
import hashlib
import http.client
import importlib.resources
import io
import math
import operator
import os
import tempfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

DATASETS_2D = ("moons", "swissroll", "eightgaussians", "checkerboard", "circles", "spiral")
IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist")
DATASETS = DATASETS_2D + IMAGE_DATASETS
SPLITS = ("train", "test")

DEFAULT_N_2D = 10_000

# Seconds a download may wait on the network before giving up.
DOWNLOAD_TIMEOUT = 60.0


class DataError(ValueError):
    """A data file is missing, corrupt, truncated, or fails its checksum.

    The message always names the file (or the folder and the files expected
    in it) and says what was wrong.
    """


# ---------------------------------------------------------------------------
# The Dataset record
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Dataset:
    """A loaded data set: host arrays plus what is needed to read them.

    x:            float32 (N, D). Image sets are flattened, D = H * W, in [-1, 1].
    labels:       int64 (N,), or None for sets without natural classes.
    num_classes:  number of classes when labels is not None, else None.
    image_shape:  (H, W) for image sets, None for 2D sets.
    name:         the name ``load`` was given.
    class_names:  a name per class where one exists (Fashion-MNIST), else None.
    """

    x: np.ndarray
    labels: np.ndarray | None = None
    num_classes: int | None = None
    image_shape: tuple[int, int] | None = None
    name: str = ""
    class_names: tuple[str, ...] | None = None

    def __len__(self):
        return int(self.x.shape[0])

    @property
    def dim(self):
        """D, the length of one flattened data point."""
        return int(self.x.shape[1])

    def images(self):
        """The images as float32 (N, H, W) in [-1, 1] (a view of ``x``)."""
        if self.image_shape is None:
            raise ValueError(f"images(): data set {self.name!r} is not an image set")
        return self.x.reshape((len(self),) + tuple(self.image_shape))  # (N, H, W)


# ---------------------------------------------------------------------------
# Argument checks shared by the public functions
# ---------------------------------------------------------------------------


def _check_count(value, argname, minimum=1):
    """An int >= minimum (bools and floats refused), else ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{argname} must be an integer >= {minimum}, got {value!r}")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{argname} must be an integer >= {minimum}, got {value!r}") from None
    if count < minimum:
        raise ValueError(f"{argname} must be an integer >= {minimum}, got {count}")
    return count


def _as_generator(rng, argname="rng"):
    """A numpy Generator from a Generator or a non-negative int seed."""
    if isinstance(rng, np.random.Generator):
        return rng
    seed = _check_count(rng, f"{argname} (a numpy Generator or an int seed)", minimum=0)
    return np.random.default_rng(seed)


def _finish_2d(points, labels=None):
    """float32 (n, 2) points and int64 (n,) labels (or None)."""
    points = np.asarray(points, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    return points, labels


# ---------------------------------------------------------------------------
# 2D toy sets. Each is public: f(n, rng) -> (x float32 (n, 2), labels or None)
# ---------------------------------------------------------------------------


def moons(n, rng, *, noise=0.1):
    """Two interleaving half circles, labelled by moon (2 classes).

    Moon 0 is the upper half of the unit circle, (cos s, sin s) for s
    uniform on [0, pi]; moon 1 is its mirror image shifted right and down,
    (1 - cos s, 1/2 - sin s). Each point picks its moon with probability 1/2.
    The union is centred by subtracting (1/2, 1/4), scaled by 3/2, and
    isotropic Gaussian noise of standard deviation ``noise`` is added.
    Without noise: x in [-2.25, 2.25], y in [-1.125, 1.125]; std about (1.3, 0.74).
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    label = rng.integers(0, 2, size=n)
    s = rng.uniform(0.0, np.pi, size=n)
    upper = label == 0
    x = np.where(upper, np.cos(s), 1.0 - np.cos(s))
    y = np.where(upper, np.sin(s), 0.5 - np.sin(s))
    points = 1.5 * np.stack([x - 0.5, y - 0.25], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


def swissroll(n, rng, *, noise=0.1):
    """A 2D Swiss roll: a spiral sheet with no natural classes (labels None).

    With s = (3 pi / 2)(1 + 2u), u uniform on [0, 1] (one and a half turns),
    the point is c * (s cos s, s sin s) with c = 2.5 / (4.5 pi), so the outer
    end sits at radius 2.5; then isotropic Gaussian noise of standard
    deviation ``noise``. Successive turns are 2 pi c ~ 1.1 apart. Not centred
    exactly: the mean is about (0.35, 0.04); std about 1.2 per axis.
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    u = rng.uniform(0.0, 1.0, size=n)
    s = 1.5 * np.pi * (1.0 + 2.0 * u)
    c = 2.5 / (4.5 * np.pi)
    points = c * np.stack([s * np.cos(s), s * np.sin(s)], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, None)


EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.2


def eightgaussians_centers(radius=EIGHT_GAUSSIANS_RADIUS):
    """The 8 component means, float64 (8, 2): radius * (cos(2 pi k / 8), sin(2 pi k / 8))."""
    angle = 2.0 * np.pi * np.arange(8) / 8.0
    return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (8, 2)


def eightgaussians(n, rng, *, radius=EIGHT_GAUSSIANS_RADIUS, std=EIGHT_GAUSSIANS_STD):
    """An equal-weight mixture of 8 isotropic Gaussians on a circle (8 classes).

    p(x) = (1/8) sum_k N(x; mu_k, std^2 I), mu_k = radius * (cos(2 pi k/8),
    sin(2 pi k/8)) (see ``eightgaussians_centers``); the label is the
    component k the point was drawn from. Defaults radius 2, std 0.2: std per
    axis sqrt(radius^2/2 + std^2) ~ 1.43. Its exact score is known, which is
    what the oracle denoiser uses.
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    label = rng.integers(0, 8, size=n)
    points = eightgaussians_centers(radius)[label] + std * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


def checkerboard(n, rng):
    """Uniform on the dark squares of a 4 x 4 checkerboard on [-2, 2]^2 (labels None).

    The board has unit squares; a point (x, y) is on a dark square when
    floor(x) + floor(y) is even. Each of the 8 dark squares is equally
    likely, and the point is uniform inside it. Std per axis 4/sqrt(12) ~ 1.15.
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    column = rng.integers(0, 4, size=n)
    # Rows of the same parity as the column: 0 or 2 for even columns, 1 or 3 for odd.
    row = 2 * rng.integers(0, 2, size=n) + column % 2
    corner = np.stack([column, row], axis=1) - 2.0  # (n, 2) lower-left corners
    points = corner + rng.uniform(0.0, 1.0, size=(n, 2))
    return _finish_2d(points, None)


def circles(n, rng, *, noise=0.05, inner_radius=1.0, outer_radius=2.0):
    """Two concentric circles, labelled 0 (outer) and 1 (inner) (2 classes).

    Each point picks a circle with probability 1/2, an angle uniform on
    [0, 2 pi), sits at radius ``outer_radius`` (2) or ``inner_radius`` (1),
    and gets isotropic Gaussian noise of standard deviation ``noise``.
    Std per axis sqrt((2^2 + 1^2) / 4) ~ 1.12.
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    label = rng.integers(0, 2, size=n)
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
    radius = np.where(label == 0, outer_radius, inner_radius)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


def spiral(n, rng, *, noise=0.08):
    """Two interleaved spiral arms, labelled by arm (2 classes).

    With s = 3 pi sqrt(u), u uniform on [0, 1] (the square root spreads
    points evenly along the arm's length), arm k in {0, 1} is the point at
    angle s + k pi and radius 0.8 s / pi (one and a half turns, out to radius
    2.4); then isotropic Gaussian noise of standard deviation ``noise``. At
    any angle the two arms are 0.8 apart. Std about 1.2 per axis.
    """
    n = _check_count(n, "n")
    rng = _as_generator(rng)
    label = rng.integers(0, 2, size=n)
    s = 3.0 * np.pi * np.sqrt(rng.uniform(0.0, 1.0, size=n))
    angle = s + np.pi * label
    radius = 0.8 * s / np.pi
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


_GENERATORS_2D = {
    "moons": (moons, 2),
    "swissroll": (swissroll, None),
    "eightgaussians": (eightgaussians, 8),
    "checkerboard": (checkerboard, None),
    "circles": (circles, 2),
    "spiral": (spiral, 2),
}


# ---------------------------------------------------------------------------
# IDX files (the MNIST format)
# ---------------------------------------------------------------------------
#
# An IDX file is: two zero bytes, a type code, the number of dimensions d;
# then d big-endian uint32 sizes; then the values, big-endian, C order.

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_file_bytes(path):
    """The raw bytes of a file; DataError naming it when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read file ({error})") from None


def _decompress(raw, path):
    """The payload of a file: gunzipped when it starts with the gzip magic bytes."""
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        # OSError covers gzip.BadGzipFile; EOFError is a truncated stream.
        raise DataError(f"{path}: corrupt or truncated gzip data ({error})") from None


def _parse_idx(data, path):
    """An IDX payload -> a native-byte-order array; DataError on any inconsistency."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (the first bytes are {data[:4].hex() or 'missing'}; "
            "an IDX file starts with 00 00, a type code and the number of dimensions)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02x}; "
            f"allowed: {', '.join(f'0x{c:02x}' for c in _IDX_TYPES)}"
        )
    if ndim < 1:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header
    if found != expected:
        kind = "truncated" if found < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {kind}: header says shape {shape} of {dtype.name} "
            f"({expected} data bytes) but the file holds {found} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a native, writable copy


def read_idx(path):
    """Read an IDX file (gzipped or not, told apart by magic bytes) into a NumPy array.

    Raises DataError naming ``path`` when the file is missing, the gzip
    stream is corrupt or truncated, the magic number or type code is wrong,
    or the byte count disagrees with the dimensions in the header.
    """
    return _parse_idx(_decompress(_read_file_bytes(path), path), path)


def write_idx(path, array, *, compress=None):
    """Write ``array`` as an IDX file; gzipped if ``compress`` (default: path ends in .gz).

    Supported dtypes: uint8, int8, int16, int32, float32, float64. Written
    to a temporary file in the same folder and renamed, so a reader never
    sees half a file.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        allowed = ", ".join(d.name for d in codes)
        raise ValueError(f"write_idx: array dtype {array.dtype} is not storable in IDX; allowed: {allowed}")
    if array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"write_idx: array must have 1 to 255 dimensions, got {array.ndim}")
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    big_endian = _IDX_TYPES[codes[native]]
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=big_endian).tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)
    _atomic_write(path, payload)


def _atomic_write(path, payload):
    """Write bytes to a temporary file beside ``path``, then rename it onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sha256_of(path):
    """SHA-256 (hex) of a file's decompressed bytes (the file itself when not gzipped).

    Hashing the payload rather than the file makes the digest independent
    of how, or whether, a mirror gzipped it.
    """
    return hashlib.sha256(_decompress(_read_file_bytes(path), path)).hexdigest()


# ---------------------------------------------------------------------------
# MNIST-format sets: where the files are, what they must hash to
# ---------------------------------------------------------------------------

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Which digest, of which bytes, a file must have. ("sha256", "payload", hex):
# SHA-256 of the decompressed file; ("md5", "gzip", hex): MD5 of the official
# gzipped file as published (a decompressed copy cannot be checked by it).
_CHECKSUMS = {
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
_MIRRORS = {
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

_NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion-mnist": 10}
_CLASS_NAMES = {
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


def _checksum_problem(name, filename, raw, payload):
    """None if the file matches its known digest (or none applies), else what was expected."""
    known = _CHECKSUMS.get(name, {}).get(filename)
    if known is None:
        return None
    algorithm, of, expected = known
    if of == "gzip":
        if not raw.startswith(_GZIP_MAGIC):
            return None  # only the official .gz bytes have a published digest
        data, what = raw, "the gzipped file"
    else:
        data, what = payload, "the decompressed file"
    # usedforsecurity=False: MD5 here detects damage, and FIPS builds refuse it otherwise.
    found = hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()
    if found == expected:
        return None
    return f"{algorithm.upper()} of {what} is {found}, expected {expected}"


def _check_file(name, filename, raw, path):
    """Decompress, verify the digest, parse: the array, or DataError naming ``path``."""
    payload = _decompress(raw, path)
    problem = _checksum_problem(name, filename, raw, payload)
    if problem is not None:
        raise DataError(f"{path}: checksum mismatch for {name} file {filename}: {problem}")
    return _parse_idx(payload, path)


def _fetch_url(url, path, timeout):
    """Download ``url`` into the file ``path`` (urllib only, with a timeout).

    Tests replace this function to simulate the network.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as handle:
        while True:
            chunk = response.read(1 << 20)
            if not chunk:
                break
            handle.write(chunk)


def _download(name, filename, folder):
    """Fetch NAME's ``filename`` into ``folder``, verified before it is renamed into place.

    Returns the final path. Raises OSError when no mirror could be reached
    and DataError when every file that arrived failed its checks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{filename}.gz"
    failures = []
    for base in _MIRRORS[name]:
        url = f"{base}{filename}.gz"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
        os.close(fd)
        try:
            _fetch_url(url, tmp, DOWNLOAD_TIMEOUT)
            _check_file(name, filename, _read_file_bytes(tmp), url)
            os.replace(tmp, target)
            return target
        except DataError as error:
            failures.append(("bad", str(error)))
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, dropped connections
            failures.append(("net", f"{url}: {type(error).__name__}: {error}"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    details = "; ".join(text for _, text in failures)
    if any(kind == "bad" for kind, _ in failures):
        raise DataError(f"downloaded {name} file {filename} failed its checks: {details}")
    raise OSError(details)


def _find_file(folder, filename):
    """``folder/filename`` or ``folder/filename.gz``, whichever exists, else None."""
    for candidate in (folder / filename, folder / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(name, split, folder, missing, why):
    lines = "\n".join(f"  {folder / (f + '.gz')}" for f in missing)
    urls = ", ".join(_MIRRORS[name])
    return (
        f"{name} ({split} split) is not available: {why}.\n"
        f"Put these files (gzipped as downloaded, or decompressed without the .gz) in {folder}:\n"
        f"{lines}\n"
        f"They are published at {urls}. Or pass data_dir=DIR, or set "
        f"TINYDIFF_DATA=DIR, to read them from a folder DIR (or DIR/{name}) that holds them."
    )


def _locate_idx_files(name, split, data_dir, download):
    """Paths of the images and labels files of NAME's ``split``, downloading if allowed."""
    filenames = _IDX_FILES[split]
    source = "data_dir"
    if data_dir is None and os.environ.get("TINYDIFF_DATA"):
        data_dir, source = os.environ["TINYDIFF_DATA"], "TINYDIFF_DATA"
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        folder = root / name if (root / name).is_dir() else root
        paths = [_find_file(folder, f) for f in filenames]
        missing = [f for f, p in zip(filenames, paths) if p is None]
        if missing:
            why = f"files missing from the folder named by {source}"
            raise DataError(_missing_message(name, split, folder, missing, why))
        return paths
    folder = cache_dir(name)
    paths = [_find_file(folder, f) if folder.is_dir() else None for f in filenames]
    missing = [f for f, p in zip(filenames, paths) if p is None]
    if missing and not download:
        raise DataError(_missing_message(name, split, folder, missing, "not in the cache and download=False"))
    for i, filename in enumerate(filenames):
        if paths[i] is None:
            try:
                paths[i] = _download(name, filename, folder)
            except OSError as error:
                raise DataError(
                    _missing_message(name, split, folder, missing, f"the download failed ({error})")
                ) from None
    return paths


def _load_idx_set(name, split, data_dir, download):
    """(pixels uint8 (N, H, W), labels int64 (N,)) of an MNIST-format set, all checked."""
    image_path, label_path = _locate_idx_files(name, split, data_dir, download)
    image_file, label_file = _IDX_FILES[split]
    images = _check_file(name, image_file, _read_file_bytes(image_path), image_path)
    labels = _check_file(name, label_file, _read_file_bytes(label_path), label_path)
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
    _check_labels(labels, _NUM_CLASSES[name], label_path)
    return images, labels.astype(np.int64)


def _check_labels(labels, num_classes, path):
    if labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataError(
            f"{path}: label {int(labels[bad])} at index {bad} is out of range; allowed 0..{num_classes - 1}"
        )


# ---------------------------------------------------------------------------
# The digits set shipped inside the package
# ---------------------------------------------------------------------------

DIGITS_FILE = "digits.csv.gz"


def _load_digits():
    """(pixels int64 (1797, 8, 8) in 0..16, labels int64 (1797,)) from the shipped CSV.

    The UCI "Optical Recognition of Handwritten Digits" test set (E. Alpaydin
    and C. Kaynak, 1998; CC BY 4.0): one row per image, 64 pixel counts in
    0..16 (an 8x8 grid, row by row), then the digit.
    """
    resource = importlib.resources.files("tinydiff") / "data_files" / DIGITS_FILE
    where = f"tinydiff/data_files/{DIGITS_FILE}"
    try:
        raw = resource.read_bytes()
    except OSError as error:
        raise DataError(
            f"{where}: cannot read the shipped digits file ({error}); reinstall tinydiff"
        ) from None
    text = _decompress(raw, where).decode("ascii", errors="replace")
    try:
        table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise DataError(f"{where}: not a table of integers ({error})") from None
    if table.shape[1] != 65:
        raise DataError(f"{where}: expected 65 columns (64 pixels, then the label), got {table.shape[1]}")
    pixels, labels = table[:, :64], table[:, 64]
    if pixels.min() < 0 or pixels.max() > 16:
        raise DataError(f"{where}: pixel values must lie in 0..16, found {pixels.min()}..{pixels.max()}")
    if labels.min() < 0:
        raise DataError(f"{where}: negative label {labels.min()}")
    _check_labels(labels, 10, where)
    return pixels.reshape(-1, 8, 8), labels  # (N, 8, 8)


# ---------------------------------------------------------------------------
# load(): one entry point for every set
# ---------------------------------------------------------------------------


def _scale_pixels(pixels, max_value):
    """Integers in 0..max_value -> float32 in [-1, 1], linearly (Sec. 4); 0 -> -1, max -> 1 exactly."""
    half = np.float32(max_value / 2.0)
    return (pixels.astype(np.float32) - half) / half


def load(name, n=None, seed=0, *, split="train", data_dir=None, download=True):
    """Load data set ``name`` as a ``Dataset`` of host NumPy arrays.

    name:      one of DATASETS (2D: moons, swissroll, eightgaussians,
               checkerboard, circles, spiral; images: digits, mnist, fashion-mnist).
    n:         2D sets: how many points to draw (default 10,000).
               Image sets: None for all, else a random subset of n images
               drawn without replacement by ``seed``.
    seed:      a non-negative int; the same seed gives the same data.
    split:     "train" or "test". For 2D sets "test" draws from an independent
               stream of the same seed; digits has a single set of 1,797
               images, so only "train".
    data_dir:  a folder holding the IDX files (MNIST-format sets only); when
               None, $TINYDIFF_DATA, else the download cache (module docstring).
    download:  whether missing MNIST-format files may be downloaded to the cache.

    Images come as x float32 (N, H*W) in [-1, 1] with int64 labels; see
    ``Dataset.images()`` for (N, H, W).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown data set name {name!r}; allowed: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    seed = _check_count(seed, "seed", minimum=0)
    if n is not None:
        n = _check_count(n, "n")

    if name in _GENERATORS_2D:
        generate, num_classes = _GENERATORS_2D[name]
        # The test split gets its own stream, independent of the train stream.
        rng = np.random.default_rng(seed if split == "train" else [seed, 1])
        x, labels = generate(DEFAULT_N_2D if n is None else n, rng)
        return Dataset(x=x, labels=labels, num_classes=num_classes, image_shape=None, name=name)

    if name == "digits":
        if split != "train":
            raise ValueError(
                "split: the digits set has a single split of 1,797 images; use split='train' "
                "(hold out a part yourself if you need a test set)"
            )
        pixels, labels = _load_digits()
        max_value = 16
    else:
        pixels, labels = _load_idx_set(name, split, data_dir, download)
        max_value = 255

    count = pixels.shape[0]
    if n is not None:
        if n > count:
            raise ValueError(
                f"n={n} is larger than the {count} images of {name} ({split}); "
                f"allowed 1..{count} or None"
            )
        index = np.random.default_rng(seed).choice(count, size=n, replace=False)
        pixels, labels = pixels[index], labels[index]
    height, width = pixels.shape[1:]
    x = _scale_pixels(pixels.reshape(pixels.shape[0], height * width), max_value)  # (N, H*W)
    return Dataset(
        x=x,
        labels=labels.astype(np.int64),
        num_classes=_NUM_CLASSES[name],
        image_shape=(int(height), int(width)),
        name=name,
        class_names=_CLASS_NAMES.get(name),
    )


# ---------------------------------------------------------------------------
# Minibatches
# ---------------------------------------------------------------------------


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
    batch_size = _check_count(batch_size, "batch_size")
    if batch_size > count:
        raise ValueError(f"batch_size={batch_size} is larger than the {count} rows of x; allowed 1..{count}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape[:1] != (count,):
            raise ValueError(f"labels must have {count} rows like x, got shape {labels.shape}")
    start = _check_count(start, "start", minimum=0)
    rng = _as_generator(rng)
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


# ---------------------------------------------------------------------------
# Resolution changes (super-resolution)
# ---------------------------------------------------------------------------


def downsample(images, factor=2):
    """Average-pool (N, H, W) images by ``factor`` in each direction: (N, H/f, W/f)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {images.shape}")
    n, h, w = images.shape
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor must be a positive divisor of H = {h} and W = {w}, got {factor}")
    return images.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))  # (N, H/f, W/f)


def upsample(images, factor=2):
    """Repeat each pixel of (N, h, w) images ``factor`` times in each direction (nearest neighbour)."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, h, w), got {images.shape}")
    if factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    return np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
