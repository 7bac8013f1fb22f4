"""Tests for tinydiff.data: 2D sets, the shipped digits, IDX files, MNIST lookup.

No test touches the network or /work/shared: MNIST-format files are small
ones the tests write themselves, and the downloader is replaced.
"""

import csv
import gzip
import hashlib
import io
import itertools
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

import tinydiff
from tinydiff import backend as B
from tinydiff import data as D
from tinydiff.data import mnist as M

LABELLED_2D = {"moons": 2, "eightgaussians": 8, "circles": 2, "spiral": 2}
UNLABELLED_2D = ("swissroll", "checkerboard")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    """No network, an empty private cache, and no TINYDIFF_DATA from the caller's shell."""
    calls = []

    def no_network(url, timeout):
        calls.append(url)
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(M, "fetch_url", no_network)
    monkeypatch.delenv("TINYDIFF_DATA", raising=False)
    monkeypatch.setenv("TINYDIFF_CACHE", str(tmp_path / "cache"))
    return calls


# ---------------------------------------------------------------------------
# 2D sets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", D.DATASETS_2D)
def test_2d_shape_dtype_and_unit_scale(name):
    ds = D.load(name, n=4000, seed=0)
    assert ds.x.shape == (4000, 2) and ds.x.dtype == np.float32
    assert len(ds) == 4000 and ds.dim == 2 and ds.name == name and ds.image_shape is None
    assert np.all(np.isfinite(ds.x))
    std = ds.x.std(axis=0)
    assert np.all((std > 0.5) & (std < 1.5)), std
    assert np.all(np.abs(ds.x.mean(axis=0)) < 0.5)
    assert np.mean(np.all(np.abs(ds.x) <= 3.0, axis=1)) > 0.99


def test_2d_default_n():
    assert D.load("moons").x.shape == (D.DEFAULT_N_2D, 2)


@pytest.mark.parametrize("name", D.DATASETS_2D)
def test_2d_determinism(name):
    a, b = D.load(name, n=500, seed=3), D.load(name, n=500, seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    if a.labels is not None:
        np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.x, D.load(name, n=500, seed=4).x)
    assert not np.array_equal(a.x, D.load(name, n=500, seed=3, split="test").x)


@pytest.mark.parametrize("name", D.DATASETS_2D)
def test_2d_public_generator_is_what_load_uses(name):
    x, labels = getattr(D, name)(300, np.random.default_rng(7))
    ds = D.load(name, n=300, seed=7)
    np.testing.assert_array_equal(x, ds.x)
    assert (labels is None) == (ds.labels is None)
    # An int seed works in place of a Generator.
    np.testing.assert_array_equal(getattr(D, name)(300, 7)[0], x)


@pytest.mark.parametrize("name", sorted(LABELLED_2D))
def test_2d_labels_balanced_and_separated(name):
    n, k = 1500, LABELLED_2D[name]
    ds = D.load(name, n=n, seed=1)
    assert ds.num_classes == k and ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    counts = np.bincount(ds.labels, minlength=k)
    assert counts.size == k
    p = 1.0 / k
    assert np.all(np.abs(counts / n - p) < 5 * np.sqrt(p * (1 - p) / n)), counts
    # Classes are separate pieces of the plane: a point's nearest other point
    # almost always carries the same label (random labels would give 1/k).
    d2 = np.sum((ds.x[:, None, :] - ds.x[None, :, :]) ** 2, axis=-1)
    np.fill_diagonal(d2, np.inf)
    agree = np.mean(ds.labels[np.argmin(d2, axis=1)] == ds.labels)
    assert agree > 0.97, agree


@pytest.mark.parametrize("name", UNLABELLED_2D)
def test_2d_without_natural_classes(name):
    ds = D.load(name, n=100)
    assert ds.labels is None and ds.num_classes is None


def test_eightgaussians_label_is_the_component():
    ds = D.load("eightgaussians", n=4000, seed=2)
    angle = 2 * np.pi * np.arange(8) / 8
    centers = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # independent of the module
    np.testing.assert_allclose(D.eightgaussians_centers(), centers, atol=1e-12)
    nearest = np.argmin(np.sum((ds.x[:, None, :] - centers[None]) ** 2, axis=-1), axis=1)
    assert np.mean(nearest == ds.labels) > 0.995
    # Offsets from the own center: per-coordinate variance std^2 = 0.04.
    # 8000 squared-normal terms: relative standard error sqrt(2/8000) ~ 1.6%.
    offset = ds.x.astype(np.float64) - centers[ds.labels]
    assert abs(np.mean(offset ** 2) / 0.04 - 1) < 0.08


def test_circles_radius_per_label():
    ds = D.load("circles", n=2000, seed=0)
    radius = np.linalg.norm(ds.x, axis=1)
    assert abs(np.mean(radius[ds.labels == 0]) - 2.0) < 0.02
    assert abs(np.mean(radius[ds.labels == 1]) - 1.0) < 0.02


def test_moons_upper_moon_is_label_zero():
    ds = D.load("moons", n=2000, seed=0)
    assert ds.x[ds.labels == 0, 1].mean() > ds.x[ds.labels == 1, 1].mean() + 0.5


def test_checkerboard_points_on_dark_squares():
    x, _ = D.checkerboard(3000, np.random.default_rng(0))
    assert np.all(np.abs(x) <= 2.0)
    parity = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2
    assert np.all(parity == 0)
    # all 8 dark squares are used, about equally
    squares = np.unique(np.floor(x), axis=0, return_counts=True)[1]
    assert squares.size == 8 and squares.min() > 3000 / 8 * 0.8


def test_swissroll_and_spiral_follow_their_definitions():
    # Noise-free, each point is c * s * (cos s, sin s): recover s from the radius.
    x, _ = D.swissroll(500, np.random.default_rng(0), noise=0.0)
    c = 2.5 / (4.5 * np.pi)
    s = np.linalg.norm(x, axis=1) / c
    assert s.min() >= 1.5 * np.pi - 1e-3 and s.max() <= 4.5 * np.pi + 1e-3
    np.testing.assert_allclose(x, c * s[:, None] * np.stack([np.cos(s), np.sin(s)], 1), atol=1e-5)
    # Spiral arm k sits at angle s + k pi, radius 0.8 s / pi.
    x, k = D.spiral(500, np.random.default_rng(0), noise=0.0)
    s = np.linalg.norm(x, axis=1) * np.pi / 0.8
    assert s.max() <= 3 * np.pi + 1e-3
    angle = s + np.pi * k
    expected = (0.8 * s / np.pi)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    np.testing.assert_allclose(x, expected, atol=1e-5)


@pytest.mark.parametrize("bad", ["mnist2", "Moons", "", None, 3])
def test_unknown_name_lists_allowed(bad):
    with pytest.raises(ValueError) as info:
        D.load(bad)
    message = str(info.value)
    assert all(name in message for name in D.DATASETS)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_bad_n(bad):
    with pytest.raises(ValueError, match="n must be"):
        D.load("moons", n=bad)
    with pytest.raises(ValueError, match="n must be"):
        D.moons(bad, np.random.default_rng(0))


def test_bad_seed_and_split():
    with pytest.raises(ValueError, match="seed"):
        D.load("moons", seed=-1)
    with pytest.raises(ValueError, match="seed"):
        D.load("moons", seed=1.5)
    with pytest.raises(ValueError, match="split"):
        D.load("moons", split="validation")
    assert set(D.DATASETS) == set(D.DATASETS_2D) | set(D.IMAGE_DATASETS)


# ---------------------------------------------------------------------------
# The shipped digits set
# ---------------------------------------------------------------------------


def _digits_rows():
    """The shipped CSV read with the csv module, independently of tinydiff.data."""
    path = Path(tinydiff.__file__).parent / "data_files" / "digits.csv.gz"
    with gzip.open(path, "rt", newline="") as handle:
        return np.array([[int(v) for v in row] for row in csv.reader(handle)])


def test_digits_loads_whole_set():
    ds = D.load("digits")
    rows = _digits_rows()
    assert rows.shape == (1797, 65)
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10 and ds.image_shape == (8, 8)
    assert ds.x.min() == -1.0 and ds.x.max() == 1.0
    # Linear map 0..16 -> [-1, 1]: (x + 1) * 8 gives back the file's pixels exactly.
    np.testing.assert_array_equal((ds.x + 1.0) * 8.0, rows[:, :64])
    np.testing.assert_array_equal(ds.labels, rows[:, 64])
    np.testing.assert_array_equal(np.bincount(ds.labels), np.bincount(rows[:, 64]))
    np.testing.assert_array_equal(
        np.bincount(ds.labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    )
    images = ds.images()
    assert images.shape == (1797, 8, 8)
    np.testing.assert_array_equal(images[5, 2], ds.x[5, 16:24])  # row-major 8x8


def test_digits_subset_is_seeded_without_replacement():
    full = D.load("digits")
    a, b = D.load("digits", n=100, seed=5), D.load("digits", n=100, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, D.load("digits", n=100, seed=6).x)
    assert a.x.shape == (100, 64) and a.labels.shape == (100,)
    # Every drawn row is a row of the full set, with its own label; no row twice.
    rows = {r.tobytes(): label for r, label in zip(full.x, full.labels)}
    assert all(rows[r.tobytes()] == label for r, label in zip(a.x, a.labels))
    assert len(np.unique(full.x, axis=0)) == 1797  # rows are distinct, so:
    assert len(np.unique(a.x, axis=0)) == 100
    with pytest.raises(ValueError, match="1797"):
        D.load("digits", n=1798)
    with pytest.raises(ValueError, match="split"):
        D.load("digits", split="test")


def test_images_refused_for_2d_sets():
    with pytest.raises(ValueError, match="not an image set"):
        D.load("moons", n=10).images()


# ---------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------

ROUND_TRIP_ARRAYS = [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-3, 0, 7], dtype=np.int8),
    np.array([[-300, 2], [5, 32000]], dtype=np.int16),
    np.array([1, -2, 2**31 - 1], dtype=np.int32),
    np.array([[0.5, -1.25], [3e8, 1e-7]], dtype=np.float32),
    np.array([np.pi, -np.e], dtype=np.float64),
]


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("array", ROUND_TRIP_ARRAYS, ids=lambda a: a.dtype.name)
def test_idx_round_trip(tmp_path, array, compress):
    # The name never says whether the file is gzipped: detection is by magic bytes.
    path = tmp_path / ("file.gz" if not compress else "file")
    D.write_idx(path, array, compress=compress)
    back = D.read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if compress else b"\x00\x00")


def test_idx_layout_is_the_standard_one(tmp_path):
    """The header written by hand per the IDX spec: 00 00 type ndim, big-endian sizes."""
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    path = tmp_path / "a.idx"
    D.write_idx(path, array)
    expected = bytes([0, 0, 0x0B, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + b"".join(
        int(v).to_bytes(2, "big") for v in range(6)
    )
    assert path.read_bytes() == expected
    D.write_idx(tmp_path / "a.idx.gz", array)  # .gz suffix: gzipped by default
    assert gzip.decompress((tmp_path / "a.idx.gz").read_bytes()) == expected
    assert D.sha256_of(tmp_path / "a.idx.gz") == hashlib.sha256(expected).hexdigest()
    assert D.sha256_of(path) == hashlib.sha256(expected).hexdigest()


def test_write_idx_refuses_unstorable_dtype(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        D.write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def _idx_bytes(array):
    buffer = io.BytesIO()
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    buffer.write(header + array.astype(np.uint8).tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_is_an_error_naming_the_file(tmp_path, gz):
    payload = _idx_bytes(np.zeros((10, 4, 4), np.uint8))
    path = tmp_path / "truncated-images"
    if gz:
        whole = gzip.compress(payload)
        path.write_bytes(whole[: len(whole) // 2])  # a cut gzip stream
    else:
        path.write_bytes(payload[:-7])  # a cut payload
    with pytest.raises(D.DataError) as info:
        D.read_idx(path)
    assert str(path) in str(info.value)
    assert ("truncated" in str(info.value)) or ("gzip" in str(info.value))


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "not an IDX file"),  # bad magic
        (b"", "empty"),  # empty file
        (gzip.compress(b""), "empty"),  # a gzip stream of nothing
        (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", "type code"),  # unknown type
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header"),  # header cut short
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "trailing"),  # one byte too many
        (b"\x1f\x8b\x08\x00garbage-not-deflate", "gzip"),  # gzip magic, corrupt stream
    ],
)
def test_malformed_idx_is_an_error_naming_the_file(tmp_path, content, words):
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    with pytest.raises(D.DataError, match=words) as info:
        D.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["empty-images", "empty-images.gz"])
@pytest.mark.parametrize("content", [b"", gzip.compress(b"")], ids=["zero-bytes", "gzip-of-nothing"])
def test_empty_file_is_a_data_error_naming_it(tmp_path, name, content):
    """Whatever the name says, an empty file or an empty gzip stream is refused by name."""
    path = tmp_path / name
    path.write_bytes(content)
    for read in (D.read_idx, D.sha256_of):
        with pytest.raises(D.DataError, match="empty") as info:
            read(path)
        assert str(path) in str(info.value)


def test_empty_file_in_data_dir_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "CHECKSUMS", {})
    images, labels = _fake_split()
    _, label_path = _write_split(tmp_path, "train", images, labels)
    label_path.write_bytes(b"")
    with pytest.raises(D.DataError, match="empty") as info:
        D.load("mnist", data_dir=tmp_path)
    assert str(label_path) in str(info.value)


def test_write_idx_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "a.idx"
    D.write_idx(path, np.arange(3, dtype=np.uint8))
    D.write_idx(path, np.arange(5, dtype=np.uint8))  # over an existing file
    np.testing.assert_array_equal(D.read_idx(path), np.arange(5))
    with pytest.raises(ValueError, match="dtype"):
        D.write_idx(path, np.zeros(3, dtype=np.int64))  # refused before anything is written
    np.testing.assert_array_equal(D.read_idx(path), np.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.idx"]  # no .part left


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(D.DataError, match="not found") as info:
        D.read_idx(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert issubclass(D.DataError, ValueError)


# ---------------------------------------------------------------------------
# MNIST-format sets from small files the tests write
# ---------------------------------------------------------------------------

FAKE_SHAPE = (4, 5)  # not square, so that H and W cannot be swapped unnoticed


def _fake_split(n=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n,) + FAKE_SHAPE, dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def _write_split(folder, split, images, labels, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    image_name, label_name = M.IDX_FILES[split]
    suffix = ".gz" if gz else ""
    D.write_idx(folder / (image_name + suffix), images, compress=gz)
    D.write_idx(folder / (label_name + suffix), labels, compress=gz)
    return folder / (image_name + suffix), folder / (label_name + suffix)


def _trust(monkeypatch, name, split, images, labels):
    """Make the fake files the 'official' ones: their payload SHA-256 becomes the known digest."""
    image_name, label_name = M.IDX_FILES[split]
    table = {
        image_name: ("sha256", "payload", hashlib.sha256(_idx_bytes(images)).hexdigest()),
        label_name: ("sha256", "payload", hashlib.sha256(_idx_bytes(labels)).hexdigest()),
    }
    monkeypatch.setattr(M, "CHECKSUMS", {name: table})


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_data_dir(tmp_path, monkeypatch, gz, _offline):
    images, labels = _fake_split()
    _write_split(tmp_path / "mine", "test", images, labels, gz=gz)
    _trust(monkeypatch, "mnist", "test", images, labels)
    ds = D.load("mnist", split="test", data_dir=tmp_path / "mine")
    assert ds.x.shape == (12, 20) and ds.x.dtype == np.float32 and ds.image_shape == FAKE_SHAPE
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10
    np.testing.assert_array_equal(ds.labels, labels)
    # 0 -> -1 and 255 -> 1 exactly, linear in between.
    np.testing.assert_array_equal(ds.images(), (images.astype(np.float32) - 127.5) / 127.5)
    assert ds.x[0, 0] == -1.0 and ds.x[0, 1] == 1.0
    assert _offline == []  # a folder the user named is never downloaded into


def test_data_dir_subfolder_and_mixed_compression(tmp_path, monkeypatch):
    images, labels = _fake_split(seed=1)
    image_path, _ = _write_split(tmp_path / "root" / "mnist", "train", images, labels, gz=False)
    D.write_idx(Path(str(image_path) + ".gz"), images)  # both present: either is fine
    image_path.unlink()
    _trust(monkeypatch, "mnist", "train", images, labels)
    ds = D.load("mnist", data_dir=tmp_path / "root", n=5, seed=0)
    assert ds.x.shape == (5, 20)
    full = D.load("mnist", data_dir=tmp_path / "root")
    chosen = [int(np.flatnonzero(np.all(full.x == row, axis=1))[0]) for row in ds.x]
    assert len(set(chosen)) == 5
    np.testing.assert_array_equal(full.labels[chosen], ds.labels)


def test_tinydiff_data_env_is_honoured(tmp_path, monkeypatch, _offline):
    images, labels = _fake_split(seed=2)
    _write_split(tmp_path / "env" / "fashion-mnist", "train", images, labels, gz=False)
    monkeypatch.setenv("TINYDIFF_DATA", str(tmp_path / "env"))
    ds = D.load("fashion-mnist")  # decompressed Fashion-MNIST: format checks only
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.class_names[0] == "T-shirt/top" and len(ds.class_names) == 10
    assert _offline == []
    # data_dir wins over the environment variable.
    with pytest.raises(D.DataError, match="elsewhere"):
        D.load("fashion-mnist", data_dir=tmp_path / "elsewhere")


def test_known_checksum_mismatch_in_data_dir(tmp_path):
    """Unpatched: fake files are not the real MNIST, and the error says what was expected."""
    images, labels = _fake_split()
    image_path, _ = _write_split(tmp_path, "train", images, labels)
    with pytest.raises(D.DataError) as info:
        D.load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(image_path) in message and "checksum mismatch" in message
    assert M.CHECKSUMS["mnist"]["train-images-idx3-ubyte"][2] in message


def test_fashion_gz_checked_against_published_md5(tmp_path):
    images, labels = _fake_split()
    image_path, _ = _write_split(tmp_path, "test", images, labels, gz=True)
    with pytest.raises(D.DataError) as info:
        D.load("fashion-mnist", split="test", data_dir=tmp_path)
    assert str(image_path) in str(info.value) and "bef4ecab320f06d8554ea6380940ec79" in str(info.value)


def test_altered_file_fails_its_checksum(tmp_path, monkeypatch):
    images, labels = _fake_split()
    _trust(monkeypatch, "mnist", "train", images, labels)
    altered = images.copy()
    altered[3, 2, 1] ^= 1  # still a well-formed IDX file: only the digest catches it
    _, label_path = _write_split(tmp_path, "train", altered, labels)
    with pytest.raises(D.DataError, match="train-images-idx3-ubyte") as info:
        D.load("mnist", data_dir=tmp_path)
    assert "expected " + M.CHECKSUMS["mnist"]["train-images-idx3-ubyte"][2] in str(info.value)


def test_labels_out_of_range(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "CHECKSUMS", {})
    images, labels = _fake_split()
    labels[7] = 10
    _, label_path = _write_split(tmp_path, "train", images, labels)
    with pytest.raises(D.DataError, match="out of range") as info:
        D.load("mnist", data_dir=tmp_path)
    assert str(label_path) in str(info.value) and "index 7" in str(info.value)


def test_label_count_must_match_image_count(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "CHECKSUMS", {})
    images, labels = _fake_split()
    _, label_path = _write_split(tmp_path, "train", images, labels[:-1])
    with pytest.raises(D.DataError, match="11 labels") as info:
        D.load("mnist", data_dir=tmp_path)
    assert str(label_path) in str(info.value)


def test_missing_files_without_network(tmp_path, _offline):
    cache = tmp_path / "cache" / "mnist"
    with pytest.raises(D.DataError) as info:
        D.load("mnist")
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert str(cache) in message and "unreachable" in message
    assert len(_offline) == len(M.MIRRORS["mnist"])  # every mirror tried once, then stopped
    assert not any(cache.iterdir())  # no partial file left behind
    # download=False: the same instructions, and no attempt.
    with pytest.raises(D.DataError, match="download=False") as info:
        D.load("mnist", split="test", download=False)
    assert "t10k-images-idx3-ubyte" in str(info.value) and str(cache) in str(info.value)
    assert len(_offline) == len(M.MIRRORS["mnist"])


def test_missing_files_in_named_dir_are_listed(tmp_path):
    images, labels = _fake_split()
    image_path, label_path = _write_split(tmp_path, "train", images, labels)
    label_path.unlink()
    with pytest.raises(D.DataError) as info:
        D.load("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "train-labels-idx1-ubyte" in message and str(tmp_path) in message
    assert "train-images-idx3-ubyte" not in message


def test_download_verifies_then_caches(tmp_path, monkeypatch):
    images, labels = _fake_split(seed=3)
    _trust(monkeypatch, "mnist", "train", images, labels)
    served = {"train-images-idx3-ubyte.gz": images, "train-labels-idx1-ubyte.gz": labels}
    fetched = []

    def fake_fetch(url, timeout):
        assert timeout > 0
        fetched.append(url)
        return D.idx.idx_bytes(served[url.rsplit("/", 1)[1]], compress=True)

    monkeypatch.setattr(M, "fetch_url", fake_fetch)
    ds = D.load("mnist")
    np.testing.assert_array_equal(ds.labels, labels)
    cache = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(served)  # renamed, no .part left
    assert len(fetched) == 2
    D.load("mnist")
    assert len(fetched) == 2  # second load reads the cache


def test_download_with_wrong_checksum_is_refused(tmp_path, monkeypatch):
    images, labels = _fake_split(seed=3)
    _trust(monkeypatch, "mnist", "train", images, labels)
    def wrong_fetch(url, timeout):  # a well-formed file with the wrong content
        return D.idx.idx_bytes(images[::-1].copy(), compress=True)

    monkeypatch.setattr(M, "fetch_url", wrong_fetch)
    with pytest.raises(D.DataError) as info:
        D.load("mnist")
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "expected" in message
    assert not any((tmp_path / "cache" / "mnist").iterdir())  # nothing unverified is kept


def test_cache_dir(tmp_path, monkeypatch):
    assert D.cache_dir("mnist") == tmp_path / "cache" / "mnist"
    monkeypatch.delenv("TINYDIFF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert D.cache_dir("mnist") == tmp_path / "home" / ".cache" / "tinydiff" / "mnist"


# ---------------------------------------------------------------------------
# Minibatches
# ---------------------------------------------------------------------------


def test_batches_cover_each_epoch_and_keep_labels_aligned():
    x = np.arange(50, dtype=np.float32).reshape(25, 2)  # row i is (2i, 2i + 1)
    labels = np.arange(25)
    stream = D.batches(x, 8, np.random.default_rng(0), labels=labels)
    epoch = [next(stream) for _ in range(3)]  # 25 // 8 = 3 batches per epoch
    rows = np.concatenate([xb for xb, _ in epoch])
    assert all(xb.shape == (8, 2) and xb.dtype == np.float32 for xb, _ in epoch)
    assert len(np.unique(rows[:, 0])) == 24  # no row twice within an epoch
    for xb, yb in epoch:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)


def test_batches_deterministic_and_resumable():
    x = np.random.default_rng(9).normal(size=(30, 3)).astype(np.float32)
    first = list(itertools.islice(D.batches(x, 7, 11), 20))
    again = list(itertools.islice(D.batches(x, 7, np.random.default_rng(11)), 20))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    other = next(D.batches(x, 7, 12))
    assert not np.array_equal(first[0], other)
    for start in (1, 4, 9):  # mid-epoch and at an epoch boundary (4 per epoch)
        resumed = list(itertools.islice(D.batches(x, 7, 11, start=start), 20 - start))
        for a, b in zip(first[start:], resumed):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [0, 31, 2.0])
def test_batches_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        D.batches(np.zeros((30, 2)), bad, 0)


# ---------------------------------------------------------------------------
# Resolution changes
# ---------------------------------------------------------------------------


def _low_resolution_loop(x, shape, factor):
    """Each pixel replaced by the mean of its factor x factor block, one pixel at a time."""
    h, w = shape
    out = np.empty_like(x)
    for k in range(x.shape[0]):
        for i in range(h):
            for j in range(w):
                top, left = i - i % factor, j - j % factor
                block = [x[k, (top + a) * w + left + b] for a in range(factor) for b in range(factor)]
                out[k, i * w + j] = sum(block) / factor ** 2
    return out


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("shape, factor", [((4, 6), 2), ((6, 6), 3), ((8, 4), 4), ((3, 5), 1)])
def test_low_resolution_against_a_loop(backend, shape, factor):
    x = np.random.default_rng(0).normal(size=(3, shape[0] * shape[1]))  # (N, H*W)
    expected = _low_resolution_loop(x, shape, factor)
    with B.using(backend):
        got = B.to_numpy(D.low_resolution(B.asarray(x, dtype=B.xp.float64), shape, factor))
    assert got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # On host arrays it is upsample(downsample(.)), flattened.
    images = x.reshape((3,) + shape)
    both = D.upsample(D.downsample(images, factor), factor).reshape(3, -1)
    np.testing.assert_allclose(got, both, rtol=1e-12, atol=1e-12)


def test_low_resolution_refuses_a_factor_that_does_not_divide():
    with pytest.raises(ValueError, match="divide"):
        D.low_resolution(np.zeros((2, 24)), (4, 6), 4)


# ---------------------------------------------------------------------------
# CIFAR-10 (the binary version), from archives the tests write themselves
# ---------------------------------------------------------------------------


def _cifar_archive(path, records=(3, 2, 2, 1, 2, 4), seed=0):
    """A cifar-10-binary.tar.gz in the official layout: records per data_batch_1..5, then test_batch.

    Returns {member name: (pixels (N, 3, 32, 32), labels)} of what it wrote.
    """
    import tarfile

    from tinydiff.data import cifar10 as C

    rng = np.random.default_rng(seed)
    written = {}
    with tarfile.open(path, "w:gz") as archive:
        for name, count in zip(C.MEMBERS["train"] + C.MEMBERS["test"], records):
            pixels = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, 10, size=count, dtype=np.uint8)
            payload = np.concatenate([labels[:, None], pixels.reshape(count, -1)], axis=1).tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
            written[name] = (pixels, labels)
    return written


def _trusted_cifar(tmp_path, monkeypatch, folder="data"):
    from tinydiff.data import cifar10 as C

    root = tmp_path / folder
    root.mkdir(parents=True, exist_ok=True)
    written = _cifar_archive(root / C.ARCHIVE)
    monkeypatch.setattr(C, "ARCHIVE_MD5", hashlib.md5((root / C.ARCHIVE).read_bytes()).hexdigest())
    return root, written


def test_cifar10_reads_the_binary_records(tmp_path, monkeypatch):
    from tinydiff.data import cifar10 as C

    root, written = _trusted_cifar(tmp_path, monkeypatch)
    train = D.load("cifar10", data_dir=root)
    assert train.image_shape == (3, 32, 32) and train.channels == 3 and train.dim == 3072
    assert len(train) == 3 + 2 + 2 + 1 + 2 and train.x.dtype == np.float32 and train.levels == 256
    first_pixels, first_labels = written[C.MEMBERS["train"][0]]
    # record layout: label byte, then the red, green and blue planes, each row by row
    assert np.array_equal(train.labels[:3], first_labels)
    assert np.array_equal(train.images()[:3], D.scale_pixels(first_pixels, 255))
    assert train.x.min() >= -1 and train.x.max() <= 1 and train.class_names[0] == "airplane"
    test = D.load("cifar10", split="test", data_dir=root)
    assert len(test) == 4 and np.array_equal(test.labels, written[C.MEMBERS["test"][0]][1])
    subset = D.load("cifar10", n=5, seed=1, data_dir=root)
    assert len(subset) == 5


def test_cifar10_from_a_subfolder_and_tinydiff_data(tmp_path, monkeypatch):
    root, _ = _trusted_cifar(tmp_path, monkeypatch, folder="all/cifar10")
    monkeypatch.setenv("TINYDIFF_DATA", str(tmp_path / "all"))
    assert len(D.load("cifar10", split="test")) == 4


def test_cifar10_published_md5_and_a_mismatch_names_the_file(tmp_path):
    from tinydiff.data import cifar10 as C

    assert C.ARCHIVE_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"  # www.cs.toronto.edu/~kriz/cifar.html
    _cifar_archive(tmp_path / C.ARCHIVE)  # well formed, but not the published archive
    with pytest.raises(D.DataError) as info:
        D.load("cifar10", data_dir=tmp_path)
    assert str(tmp_path / C.ARCHIVE) in str(info.value) and "expected c32a1d4ab5d03f1284b67883e8d87530" in str(info.value)


def test_cifar10_corrupt_archive_and_bad_records_are_named(tmp_path, monkeypatch):
    import tarfile

    from tinydiff.data import cifar10 as C

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / C.ARCHIVE).write_bytes(b"\x1f\x8b not really gzip")
    monkeypatch.setattr(C, "ARCHIVE_MD5", hashlib.md5((broken / C.ARCHIVE).read_bytes()).hexdigest())
    with pytest.raises(D.DataError, match="not a readable .tar.gz"):
        D.load("cifar10", data_dir=broken)
    short = tmp_path / "short"
    short.mkdir()
    with tarfile.open(short / C.ARCHIVE, "w:gz") as archive:
        for name in C.MEMBERS["train"]:
            info = tarfile.TarInfo(name)
            info.size = C.RECORD_BYTES - 1  # one byte short of a record
            archive.addfile(info, io.BytesIO(b"\x00" * info.size))
    monkeypatch.setattr(C, "ARCHIVE_MD5", hashlib.md5((short / C.ARCHIVE).read_bytes()).hexdigest())
    with pytest.raises(D.DataError, match="data_batch_1.bin: 3072 bytes is not a whole number"):
        D.load("cifar10", data_dir=short)
    with pytest.raises(D.DataError, match="no member cifar-10-batches-bin/test_batch.bin"):
        D.load("cifar10", split="test", data_dir=short)


def test_cifar10_missing_archive_says_where_to_put_it(tmp_path, _offline):
    from tinydiff.data import cifar10 as C

    with pytest.raises(D.DataError) as info:
        D.load("cifar10", data_dir=tmp_path)
    assert str(tmp_path / C.ARCHIVE) in str(info.value) and "pickled" in str(info.value)
    with pytest.raises(D.DataError, match="the download failed"):
        D.load("cifar10")  # the cache, with no network
    assert _offline == list(C.URLS)


def test_cifar10_download_is_checked_before_it_is_cached(tmp_path, monkeypatch):
    from tinydiff.data import cifar10 as C

    _cifar_archive(tmp_path / "served.tar.gz")
    raw = (tmp_path / "served.tar.gz").read_bytes()
    monkeypatch.setattr(M, "fetch_url", lambda url, timeout: raw)
    with pytest.raises(D.DataError, match="failed its check"):
        D.load("cifar10")
    assert not (tmp_path / "cache" / "cifar10" / C.ARCHIVE).exists()
    monkeypatch.setattr(C, "ARCHIVE_MD5", hashlib.md5(raw).hexdigest())
    assert len(D.load("cifar10", split="test")) == 4
    assert (tmp_path / "cache" / "cifar10" / C.ARCHIVE).read_bytes() == raw


def test_cifar10_is_read_without_pickle():
    source = Path(D.__file__).with_name("cifar10.py").read_text()
    assert "import pickle" not in source and "allow_pickle=True" not in source and ".load(" not in source


def test_a_grid_of_colour_images_is_drawn_in_colour(tmp_path):
    from PIL import Image

    from tinydiff import viz

    red = np.full((4, 3, 8, 8), -1.0)
    red[:, 0] = 1.0  # the red plane full, green and blue off
    path = viz.image_grid(red, tmp_path / "rgb.png", nrow=2)
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    assert np.any((pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, 3, H, W\)"):
        viz.image_grid(np.zeros((2, 2, 8, 8)), tmp_path / "bad.png")
