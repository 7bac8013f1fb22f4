"""Pictures: each function writes a readable file, rejects bad shapes, and
draws what it claims (image grids read back dark for -1 and light for +1).

Fast on purpose: small synthetic inputs, one render per function.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinydiff import backend as B
from tinydiff import viz

RNG = np.random.default_rng(0)
POINTS = RNG.normal(size=(200, 2))
DATA = RNG.normal(size=(300, 2)) * 0.5
IMAGES = np.clip(RNG.normal(size=(6, 8, 8)), -1, 1)


def _open(path, fmt="PNG"):
    """Open a written picture and check the basics every picture shares."""
    assert os.path.getsize(path) > 0
    image = Image.open(path)
    assert image.format == fmt
    width, height = image.size
    assert 100 <= width <= 2500 and 100 <= height <= 2500, image.size
    return image


def _gray(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


# ---------------------------------------------------------------- smooth


def _smooth_loop(values, weight):
    """The definition, written out: EMA from 0, divided by 1 - weight^(i+1)."""
    out, mean = [], 0.0
    for i, value in enumerate(values):
        mean = weight * mean + (1 - weight) * value
        out.append(mean / (1 - weight ** (i + 1)))
    return np.array(out)


def _smooth_closed_form(values, weight):
    """m_i = sum_j (1 - w) w^(i - j) v_j: a weighted sum, no recursion."""
    out = []
    for i in range(len(values)):
        powers = weight ** np.arange(i, -1, -1)
        out.append((1 - weight) * np.sum(powers * values[: i + 1]) / (1 - weight ** (i + 1)))
    return np.array(out)


@pytest.mark.parametrize("weight", [0.0, 0.5, 0.9, 0.99])
def test_smooth_matches_loop_and_closed_form(weight):
    values = RNG.normal(size=50) + np.linspace(0, 3, 50)
    got = viz.smooth(values, weight)
    np.testing.assert_allclose(got, _smooth_loop(values, weight), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, _smooth_closed_form(values, weight), rtol=1e-10, atol=1e-12)


def test_smooth_bias_correction_keeps_a_constant():
    # Without the correction the first values would be pulled towards 0.
    np.testing.assert_allclose(viz.smooth(np.full(20, 5.0), 0.98), 5.0, rtol=1e-12)
    np.testing.assert_array_equal(viz.smooth([1.0, 2.0, 3.0], 0.0), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("weight", [1.0, -0.1])
def test_smooth_rejects_bad_weight(weight):
    with pytest.raises(ValueError, match="weight"):
        viz.smooth([1.0, 2.0], weight)


def test_smooth_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"values.*\(N,\)"):
        viz.smooth(np.ones((3, 2)), 0.9)


# ---------------------------------------------------------------- schedules


def _schedule(T, kind):
    betas = np.linspace(1e-4, 0.02, T) if kind == "linear" else np.full(T, 0.01)
    alpha_bars = np.cumprod(1 - betas)
    return {"betas": betas, "alpha_bars": alpha_bars, "snr": alpha_bars / (1 - alpha_bars)}


def test_plot_schedules(tmp_path):
    path = tmp_path / "schedules.png"
    schedules = {"linear": _schedule(100, "linear"), "constant": _schedule(100, "constant")}
    schedules["no snr"] = {k: v for k, v in _schedule(50, "linear").items() if k != "snr"}
    assert viz.plot_schedules(schedules, path) == path
    image = _open(path)
    assert image.width > 2 * image.height  # three panels side by side


def test_plot_schedules_bad_input(tmp_path):
    with pytest.raises(ValueError, match="schedules"):
        viz.plot_schedules({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="alpha_bars"):
        viz.plot_schedules({"a": {"betas": np.ones(3)}}, tmp_path / "x.png")
    bad = _schedule(10, "linear")
    bad["snr"] = bad["snr"][:5]
    with pytest.raises(ValueError, match="same length"):
        viz.plot_schedules({"a": bad}, tmp_path / "x.png")


# ---------------------------------------------------------------- 2D points


@pytest.mark.parametrize("plot", [viz.plot_forward_2d, viz.plot_reverse_2d])
def test_plot_2d_panels(tmp_path, plot):
    two = [(0, POINTS), (10, POINTS * 2)]
    four = two + [(20, POINTS * 3), (30, POINTS * 4)]
    narrow = _open(plot(two, tmp_path / "two.png", data=DATA))
    wide = _open(plot(four, tmp_path / "four.png"))
    assert wide.width > narrow.width  # one panel per snapshot


def test_plot_reverse_2d_keeps_at_most_twelve_panels(tmp_path):
    trajectory = [(t, POINTS[:20] * t) for t in range(30, 0, -1)]
    many = _open(viz.plot_reverse_2d(trajectory, tmp_path / "many.png"))
    twelve = _open(viz.plot_reverse_2d(trajectory[:12], tmp_path / "twelve.png"))
    assert many.size == twelve.size


@pytest.mark.parametrize("plot", [viz.plot_forward_2d, viz.plot_reverse_2d, viz.animate_reverse_2d])
def test_plot_2d_bad_input(tmp_path, plot):
    path = tmp_path / "x.gif"
    with pytest.raises(ValueError, match="empty"):
        plot([], path)
    with pytest.raises(ValueError, match=r"snapshots\[1\].*\(N, 2\)"):
        plot([(0, POINTS), (1, np.ones((5, 3)))], path)
    with pytest.raises(ValueError, match=r"data.*\(N, 2\)"):
        plot([(0, POINTS)], path, data=np.ones(5))


def test_plot_samples_2d(tmp_path):
    _open(viz.plot_samples_2d(POINTS, DATA, tmp_path / "s.png", title="samples"))
    labels = np.arange(len(POINTS)) % 3
    _open(viz.plot_samples_2d(POINTS, DATA, tmp_path / "l.png", labels=labels))
    with pytest.raises(ValueError, match="labels"):
        viz.plot_samples_2d(POINTS, DATA, tmp_path / "x.png", labels=labels[:10])
    with pytest.raises(ValueError, match=r"samples.*\(N, 2\)"):
        viz.plot_samples_2d(POINTS[:, :1], DATA, tmp_path / "x.png")


def test_plot_vector_field(tmp_path):
    calls = []

    def field(points, t):
        calls.append((points.dtype, points.shape, type(t)))
        return -points * (t + 1)

    path = viz.plot_vector_field(field, tmp_path / "f.png", timesteps=[0, 5, 9], data=DATA, grid=7)
    _open(path)
    assert calls == [(np.float32, (49, 2), int)] * 3  # grid*grid points, an int t, once per t
    with pytest.raises(ValueError, match="field_fn"):
        viz.plot_vector_field(lambda p, t: p[:, :1], tmp_path / "x.png", timesteps=[0], grid=5)
    with pytest.raises(ValueError, match="timesteps"):
        viz.plot_vector_field(field, tmp_path / "x.png", timesteps=[])


# ---------------------------------------------------------------- images


def _grid_pixels(tmp_path, images, **kwargs):
    path = viz.image_grid(images, tmp_path / "grid.png", **kwargs)
    _open(path)
    return _gray(path)


def test_image_grid_dark_for_minus_one_light_for_plus_one(tmp_path):
    dark = _grid_pixels(tmp_path, -np.ones((1, 16, 16)))
    light = _grid_pixels(tmp_path, np.ones((1, 16, 16)))
    h, w = dark.shape
    assert dark[h // 2, w // 2] < 20 and light[h // 2, w // 2] > 235
    many = _grid_pixels(tmp_path, -np.ones((9, 16, 16)), nrow=3)
    assert np.mean(many < 20) > 0.5  # mostly black, apart from separators and margins


def test_image_grid_is_row_major(tmp_path):
    # Image 0 (-1) on the left, image 1 (+1) on the right of one row.
    pixels = _grid_pixels(tmp_path, np.stack([-np.ones((16, 16)), np.ones((16, 16))]), nrow=2)
    h, w = pixels.shape
    assert pixels[h // 2, w // 4] < 20 and pixels[h // 2, 3 * w // 4] > 235


def test_image_grid_shows_non_finite_pixels(tmp_path):
    path = viz.image_grid(np.full((1, 16, 16), np.nan), tmp_path / "nan.png")
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    h, w, _ = rgb.shape
    assert tuple(rgb[h // 2, w // 2]) == (255, 0, 255)


def test_image_grid_labels_and_shape(tmp_path):
    images = np.zeros((20, 8, 8))
    pixels = _grid_pixels(tmp_path, images, nrow=4, row_labels=list("abcde"), title="digits")
    assert pixels.shape[0] > pixels.shape[1]  # 5 rows of 4
    with pytest.raises(ValueError, match="row_labels"):
        viz.image_grid(images, tmp_path / "x.png", nrow=4, row_labels=["a"])
    with pytest.raises(ValueError, match=r"images.*\(N, H, W\)"):
        viz.image_grid(np.zeros((20, 64)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="nrow"):
        viz.image_grid(images, tmp_path / "x.png", nrow=0)


def test_plot_forward_images(tmp_path):
    snapshots = [(t, IMAGES + t) for t in (0, 10, 50, 99)]
    image = _open(viz.plot_forward_images(snapshots, tmp_path / "fwd.png"))
    assert image.width > 0
    with pytest.raises(ValueError, match=r"snapshots\[1\].*shape"):
        viz.plot_forward_images([(0, IMAGES), (1, IMAGES[:3])], tmp_path / "x.png")
    with pytest.raises(ValueError, match="empty"):
        viz.plot_forward_images([], tmp_path / "x.png")


# ---------------------------------------------------------------- animations


def test_animate_reverse_2d(tmp_path):
    snapshots = [(t, POINTS * (1 - t / 100) + DATA[:200] * t / 100) for t in range(100)]
    path = viz.animate_reverse_2d(snapshots, tmp_path / "rev.gif", data=DATA, fps=20)
    image = _open(path, "GIF")
    assert 1 < image.n_frames <= viz.MAX_FRAMES
    with pytest.raises(ValueError, match="gif"):
        viz.animate_reverse_2d(snapshots[:3], tmp_path / "rev.png")


def test_animate_reverse_images(tmp_path):
    x_T = RNG.normal(size=(16, 12, 12))
    snapshots = [(t, x_T * t / 30 + (1 - t / 30)) for t in range(30, -1, -1)]  # ends all +1
    path = viz.animate_reverse_images(snapshots, tmp_path / "rev.gif", nrow=4)
    image = _open(path, "GIF")
    assert 1 < image.n_frames <= 20
    assert os.path.getsize(path) < 400_000
    first = np.asarray(image.convert("L"), dtype=float)
    image.seek(image.n_frames - 1)
    last = np.asarray(image.convert("L"), dtype=float)
    # The final grid is all white apart from the separators (16 of 14 x 14
    # cells are image); the first is noise.
    assert np.mean(last > 235) > 0.6 > np.mean(first > 235)
    with pytest.raises(ValueError, match=r"snapshots\[0\].*\(N, H, W\)"):
        viz.animate_reverse_images([(0, np.zeros((4, 9)))], tmp_path / "x.gif")


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("smooth", [0.9, 25])
def test_plot_loss(tmp_path, smooth):
    steps = np.arange(500)
    losses = np.exp(-steps / 100) + 0.1 * RNG.random(500)
    _open(viz.plot_loss(steps, losses, tmp_path / "loss.png", smooth=smooth))


def test_plot_loss_bad_input(tmp_path):
    with pytest.raises(ValueError, match="steps and losses"):
        viz.plot_loss(np.arange(5), np.ones(4), tmp_path / "x.png")
    with pytest.raises(ValueError, match="window"):
        viz.plot_loss(np.arange(5), np.ones(5), tmp_path / "x.png", smooth=0)


def test_plot_loss_by_t(tmp_path):
    t = RNG.integers(0, 100, size=1000)
    losses = 1 / (t + 1) + 0.01 * RNG.random(1000)
    _open(viz.plot_loss_by_t(t, losses, tmp_path / "byt.png", T=100, buckets=10))
    # An empty bucket is left out, not an error.
    _open(viz.plot_loss_by_t(t[t < 50], losses[t < 50], tmp_path / "half.png", T=100))
    with pytest.raises(ValueError, match=r"t_values.*\[0, 100\)"):
        viz.plot_loss_by_t(np.array([0, 100]), np.ones(2), tmp_path / "x.png", T=100)
    with pytest.raises(ValueError, match="buckets"):
        viz.plot_loss_by_t(t, losses, tmp_path / "x.png", T=100, buckets=0)


@pytest.mark.parametrize("T", [1, 10, 200])
def test_plot_vlb_terms(tmp_path, T):
    terms = np.concatenate([[3.0], 0.01 * np.exp(-np.arange(1, T) / 50)])
    _open(viz.plot_vlb_terms(terms, tmp_path / "vlb.png", prior=1e-5))


def test_plot_vlb_terms_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"terms_per_t.*\(N,\)"):
        viz.plot_vlb_terms(np.ones((3, 3)), tmp_path / "x.png")


def test_plot_histogram_1d(tmp_path):
    samples = RNG.normal(size=(2000, 1))

    def density(x):
        assert x.ndim == 1
        return np.exp(-x**2 / 2) / np.sqrt(2 * np.pi)

    _open(viz.plot_histogram_1d(samples, tmp_path / "h.png", density_fn=density, title="N(0, 1)"))
    with pytest.raises(ValueError, match=r"samples.*\(N,\)"):
        viz.plot_histogram_1d(np.ones((10, 2)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="density_fn"):
        viz.plot_histogram_1d(samples, tmp_path / "x.png", density_fn=lambda x: x[:3])


# ---------------------------------------------------------------- integration


def test_accepts_backend_arrays_and_tensors(tmp_path):
    from tinydiff.autograd import Tensor

    with B.using("array_api_strict"):
        points = B.asarray(POINTS)
        snapshots = [(B.asarray(3), points), (B.asarray(0), points)]
        _open(viz.plot_reverse_2d(snapshots, tmp_path / "strict.png", data=B.asarray(DATA)))
        _open(viz.image_grid(Tensor(B.asarray(IMAGES)), tmp_path / "tensor.png"))


def test_creates_missing_directories(tmp_path):
    path = tmp_path / "a" / "b" / "loss.png"
    _open(viz.plot_loss(np.arange(10), np.ones(10), path))


def _failing_after_a_few_bytes(calls):
    """A save method that writes a few bytes into the file it was given, then fails."""
    def save(self, file, *args, **kwargs):
        calls.append(kwargs.get("format"))
        file.write(b"half a picture")
        raise OSError("disk full (test)")
    return save


def test_a_failed_save_leaves_the_old_picture_untouched(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "loss.png"
    viz.plot_loss(np.arange(10), np.ones(10), path)
    before = path.read_bytes()
    calls = []
    monkeypatch.setattr(Figure, "savefig", _failing_after_a_few_bytes(calls))
    with pytest.raises(OSError, match="disk full"):
        viz.plot_loss(np.arange(10), np.arange(10) + 1.0, path)
    assert calls == ["png"]  # the format comes from the suffix
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["loss.png"]  # no .part file left behind


def test_a_failed_gif_save_leaves_the_old_animation_untouched(tmp_path, monkeypatch):
    path = tmp_path / "rev.gif"
    snapshots = [(t, POINTS * t) for t in (3, 2, 1)]
    viz.animate_reverse_2d(snapshots, path)
    before = path.read_bytes()
    monkeypatch.setattr(Image.Image, "save", _failing_after_a_few_bytes([]))
    with pytest.raises(OSError, match="disk full"):
        viz.animate_reverse_2d(snapshots[::-1], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["rev.gif"]


def test_format_follows_the_suffix(tmp_path):
    path = viz.plot_loss(np.arange(10), np.ones(10), tmp_path / "loss.svg")
    assert path.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    _open(viz.plot_loss(np.arange(10), np.ones(10), tmp_path / "no-suffix"))  # PNG by default


def test_leaves_matplotlib_backend_and_pyplot_alone(tmp_path):
    # A user who chose a backend keeps it, and viz never imports pyplot.
    code = (
        "import sys, matplotlib; matplotlib.use('svg');"
        "import numpy as np; from tinydiff import viz;"
        f"viz.plot_loss(np.arange(5), np.ones(5), {str(tmp_path / 'p.png')!r});"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend();"
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
