"""Pictures of a diffusion model: schedules, both processes, samples, losses.

Every function here takes host arrays (NumPy; a device array or a Tensor is
brought over with ``tinydiff.backend.to_numpy``), writes one file to ``path``
and returns ``path``. Still pictures are PNG (or whatever format the suffix
names); animations are GIF.

Nothing here touches pyplot or the global matplotlib backend: each picture is
a ``matplotlib.figure.Figure`` drawn on its own Agg canvas, so a user who
chose an interactive backend keeps it, and no figure is left open.

Conventions:

- Images are ``(N, H, W)`` arrays in [-1, 1] (the data scaling of Sec. 3.3):
  -1 draws black, +1 white. Values outside are clipped; non-finite pixels draw
  magenta so a diverged sampler shows up instead of hiding as grey.
- Points are ``(N, 2)`` arrays; 2D panels have equal aspect and, within one
  picture, shared limits, so panels can be compared by eye.
- Snapshots are lists of ``(t, array)`` pairs; ``t`` is printed as given.
- Schedule and bound plots put the paper's t = 1..T on the x axis: entry i of
  a length-T array is paper step t = i + 1.
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw

from tinydiff.backend import to_numpy

DPI = 100
MAX_FRAMES = 40  # animations keep at most this many snapshots (GIF size)
MAX_COLUMNS = 6  # panels per row before wrapping
MAX_PANELS = 12  # still pictures of a process keep at most this many snapshots
DATA_COLOR = "0.75"  # the data, drawn in grey under what is being shown
POINT_COLOR = "tab:blue"
PAD_RGB = (0.55, 0.55, 0.55)  # separators between images in a grid
BAD_RGB = (1.0, 0.0, 1.0)  # non-finite pixels


# ---------------------------------------------------------------- checks


def _host(value, name):
    """A float64 host array; ``name`` is only for the error message."""
    try:
        return np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from error


def _vector(value, name):
    array = _host(value, name)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N,) with N >= 1, got shape {array.shape}")
    return array


def _points(value, name):
    array = _host(value, name)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 2) with N >= 1, got shape {array.shape}")
    return array


def _images(value, name):
    array = _host(value, name)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(
            f"{name} must have shape (N, H, W) (reshape flat vectors first), got shape {array.shape}"
        )
    return array


def _snapshots(snapshots, name, check):
    """A non-empty list of (t, array) pairs, each array passed through ``check``."""
    try:
        pairs = list(snapshots)
    except TypeError as error:
        raise ValueError(f"{name} must be a list of (t, array) pairs") from error
    if not pairs:
        raise ValueError(f"{name} must be a non-empty list of (t, array) pairs, got an empty list")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{name}[{i}] must be a (t, array) pair, got {type(pair).__name__}")
        t, array = pair
        t = np.asarray(to_numpy(t)).item() if not isinstance(t, (int, float, str)) else t
        out.append((t, check(array, f"{name}[{i}] array")))
    return out


def _same_images(snapshots):
    """Snapshots of images that all share the shape (N, H, W) of the first."""
    snapshots = _snapshots(snapshots, "snapshots", _images)
    shape = snapshots[0][1].shape
    for i, (_, images) in enumerate(snapshots):
        if images.shape != shape:
            raise ValueError(f"snapshots[{i}] array must have shape {shape} like snapshots[0], "
                             f"got {images.shape}")
    return snapshots


def _pick(snapshots, most):
    """At most ``most`` evenly spaced snapshots, always the first and the last."""
    if len(snapshots) <= most:
        return snapshots
    keep = np.unique(np.round(np.linspace(0, len(snapshots) - 1, most)).astype(int))
    return [snapshots[i] for i in keep]


def _finish(fig, path):
    """Write the figure (format from the suffix, PNG by default) and return ``path``."""
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _figure(width, height):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _panel_axes(fig, count):
    """``count`` axes on a grid of at most MAX_COLUMNS columns."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return [fig.add_subplot(rows, columns, i + 1) for i in range(count)]


def _panel_size(count, panel=2.2):
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return panel * columns, panel * rows + 0.4


# ---------------------------------------------------------------- smoothing


def smooth(values, weight=0.98):
    """Exponential moving average with bias correction.

    m_i = weight * m_{i-1} + (1 - weight) * v_i with m_{-1} = 0, and the
    output is m_i / (1 - weight^(i+1)): the same correction Adam applies to
    its moments, so the first points are not pulled towards zero.
    ``weight`` = 0 returns the values unchanged.
    """
    values = _vector(values, "values")
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight must be in [0, 1), got {weight}")
    out = np.empty_like(values)
    mean = 0.0
    for i, value in enumerate(values):
        mean = weight * mean + (1.0 - weight) * value
        out[i] = mean / (1.0 - weight ** (i + 1))
    return out


def _window_mean(values, window):
    """Trailing moving average; the first points average what exists so far."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


# ---------------------------------------------------------------- schedules


def plot_schedules(schedules, path):
    """Compare noise schedules: beta_t, alpha_bar_t and log SNR(t) against t.

    ``schedules`` maps a name to a dict of length-T host arrays "betas" and
    "alpha_bars", and optionally "snr" (else SNR = alpha_bar / (1 - alpha_bar),
    Kingma et al. 2021). beta_t is on a log axis so a linear schedule and a
    cosine one (Nichol and Dhariwal 2021, Eq. 17) are both visible.
    """
    if not isinstance(schedules, dict) or not schedules:
        raise ValueError("schedules must be a non-empty dict name -> {'betas', 'alpha_bars', 'snr'}")
    fig = _figure(11, 3.4)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    for name, schedule in schedules.items():
        if not isinstance(schedule, dict) or "betas" not in schedule or "alpha_bars" not in schedule:
            raise ValueError(f"schedules[{name!r}] must be a dict with arrays 'betas' and 'alpha_bars'")
        betas = _vector(schedule["betas"], f"schedules[{name!r}]['betas']")
        alpha_bars = _vector(schedule["alpha_bars"], f"schedules[{name!r}]['alpha_bars']")
        if "snr" in schedule:
            snr = _vector(schedule["snr"], f"schedules[{name!r}]['snr']")
        else:
            snr = alpha_bars / np.maximum(1.0 - alpha_bars, 1e-300)
        if not len(betas) == len(alpha_bars) == len(snr):
            raise ValueError(
                f"schedules[{name!r}]: 'betas', 'alpha_bars' and 'snr' must have the same length T, "
                f"got {len(betas)}, {len(alpha_bars)}, {len(snr)}"
            )
        t = np.arange(1, len(betas) + 1)  # paper t = 1..T
        with np.errstate(divide="ignore"):
            log_snr = np.where(snr > 0, np.log(np.maximum(snr, 1e-300)), np.nan)
        axes[0].plot(t, betas, label=str(name))
        axes[1].plot(t, alpha_bars, label=str(name))
        axes[2].plot(t, log_snr, label=str(name))
    axes[0].set_yscale("log")
    titles = [r"$\beta_t$ (log scale)", r"$\bar\alpha_t$", r"$\log\,\mathrm{SNR}(t)$"]
    ylabels = [r"$\beta_t$", r"$\bar\alpha_t$", r"$\log\,\bar\alpha_t / (1 - \bar\alpha_t)$"]
    for ax, title, ylabel in zip(axes, titles, ylabels):
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize="small")
    return _finish(fig, path)


# ---------------------------------------------------------------- 2D points


def _limits(arrays):
    """Square, shared limits covering the bulk (99%) of all points, padded."""
    points = np.concatenate(arrays, axis=0)
    points = points[np.all(np.isfinite(points), axis=1)]
    if len(points) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    center = (low + high) / 2
    half = max(float(np.max(high - low)) / 2 * 1.1, 1e-3)
    return (center[0] - half, center[0] + half), (center[1] - half, center[1] + half)


def _scatter_size(n):
    return float(np.clip(2000.0 / max(n, 1), 1.0, 12.0))


def _style_2d(ax, xlim, ylim):
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.tick_params(labelsize="small")


def _draw_data(ax, data):
    if data is not None:
        ax.scatter(data[:, 0], data[:, 1], s=_scatter_size(len(data)), c=DATA_COLOR, linewidths=0)


def _plot_2d_panels(snapshots, path, data, title):
    snapshots = _pick(_snapshots(snapshots, "snapshots", _points), MAX_PANELS)
    data = None if data is None else _points(data, "data")
    xlim, ylim = _limits([points for _, points in snapshots] + ([data] if data is not None else []))
    fig = _figure(*_panel_size(len(snapshots)))
    for ax, (t, points) in zip(_panel_axes(fig, len(snapshots)), snapshots):
        _draw_data(ax, data)
        ax.scatter(points[:, 0], points[:, 1], s=_scatter_size(len(points)), c=POINT_COLOR,
                   linewidths=0, alpha=0.7)
        ax.set_title(f"t = {t}", fontsize="medium")
        _style_2d(ax, xlim, ylim)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_forward_2d(snapshots, path, data=None):
    """The forward process q(x_t | x_0) (Eq. 4) on 2D points: one panel per t.

    ``snapshots`` is a list of (t, points (N, 2)); at most 12 evenly spaced
    ones are drawn (first and last kept). ``data`` (M, 2), if given, is drawn
    in grey under every panel.
    """
    return _plot_2d_panels(snapshots, path, data,
                           r"Forward process $q(x_t \mid x_0)$: data dissolves into noise")


def plot_reverse_2d(snapshots, path, data=None):
    """The reverse process p(x_{t-1} | x_t) (Algorithm 2) on 2D points: one panel per t.

    Takes the same arguments as ``plot_forward_2d``; pass the whole sampling
    trajectory if you like, at most 12 snapshots are drawn.
    """
    return _plot_2d_panels(snapshots, path, data,
                           r"Reverse process $p_\theta(x_{t-1} \mid x_t)$: noise becomes data")


def plot_samples_2d(samples, data, path, title=None, labels=None):
    """Samples (N, 2) drawn over the data (M, 2) in grey; ``labels`` (N,) colors by class."""
    samples = _points(samples, "samples")
    data = _points(data, "data")
    fig = _figure(4.8, 4.8)
    ax = fig.add_subplot()
    xlim, ylim = _limits([samples, data])
    _draw_data(ax, data)
    size = _scatter_size(len(samples))
    if labels is None:
        ax.scatter(samples[:, 0], samples[:, 1], s=size, c=POINT_COLOR, linewidths=0, alpha=0.7,
                   label="samples")
    else:
        labels = np.asarray(to_numpy(labels))
        if labels.shape != (len(samples),):
            raise ValueError(f"labels must have shape ({len(samples)},) like samples, got {labels.shape}")
        colors = colormaps["tab10"]
        for k, label in enumerate(np.unique(labels)):
            chosen = samples[labels == label]
            ax.scatter(chosen[:, 0], chosen[:, 1], s=size, color=colors(k % 10), linewidths=0,
                       alpha=0.8, label=str(label))
    ax.scatter([], [], s=_scatter_size(len(data)), c=DATA_COLOR, label="data")  # legend entry only
    ax.legend(fontsize="small", markerscale=2, loc="upper right")
    ax.set_title(title or "Samples over the data")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    _style_2d(ax, xlim, ylim)
    return _finish(fig, path)


def plot_vector_field(field_fn, path, timesteps, data=None, lim=3.0, grid=25):
    """The learned denoising direction as arrows over a 2D grid, one panel per t.

    ``field_fn(points, t)`` takes host float32 points (M, 2) and an int t and
    returns vectors (M, 2), e.g. -eps_hat (the score times sqrt(1 - alpha_bar_t))
    or x0_hat - x. Arrow lengths are scaled per panel (a typical arrow spans
    about one grid cell; longer ones are clipped at 1.5 times that), so compare
    directions across panels and lengths within one; the title gives max |v|.
    """
    if not callable(field_fn):
        raise ValueError("field_fn must be callable as field_fn(points (M, 2), t) -> (M, 2)")
    timesteps = [int(t) for t in np.atleast_1d(to_numpy(timesteps))]
    if not timesteps:
        raise ValueError("timesteps must hold at least one t")
    if not lim > 0 or int(grid) < 2:
        raise ValueError(f"lim must be > 0 and grid >= 2, got lim={lim}, grid={grid}")
    data = None if data is None else _points(data, "data")
    axis = np.linspace(-lim, lim, int(grid))
    gx, gy = np.meshgrid(axis, axis)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)  # (grid*grid, 2)
    cell = axis[1] - axis[0]
    fig = _figure(*_panel_size(len(timesteps), panel=3.2))
    for ax, t in zip(_panel_axes(fig, len(timesteps)), timesteps):
        vectors = _host(field_fn(points, t), "field_fn output")
        if vectors.shape != points.shape:
            raise ValueError(f"field_fn must return shape {points.shape} for points {points.shape}, "
                             f"got {vectors.shape} at t={t}")
        norms = np.linalg.norm(vectors, axis=1)
        finite = norms[np.isfinite(norms)]
        longest = float(finite.max()) if len(finite) else 0.0
        # Scale so a typical (90th percentile) arrow spans 0.9 of a cell, and
        # clip the few longer ones at 1.5 times that so they do not cover the panel.
        typical = max(float(np.percentile(finite, 90)) if len(finite) else 0.0, 1e-12)
        shrink = np.minimum(1.0, 1.5 * typical / np.maximum(norms, 1e-300))[:, None]
        shown = vectors * shrink
        _draw_data(ax, data)
        ax.quiver(points[:, 0], points[:, 1], shown[:, 0], shown[:, 1], color=POINT_COLOR,
                  angles="xy", scale_units="xy", scale=typical / (0.9 * cell), width=0.005)
        ax.set_title(f"t = {t}  (max |v| = {longest:.3g})", fontsize="medium")
        _style_2d(ax, (-lim - cell, lim + cell), (-lim - cell, lim + cell))
    fig.suptitle("Denoising direction over the plane")
    return _finish(fig, path)


# ---------------------------------------------------------------- images


def _to_rgb(images):
    """(N, H, W) in [-1, 1] -> (N, H, W, 3) in [0, 1]; non-finite pixels magenta."""
    bad = ~np.isfinite(images)
    gray = (np.clip(np.nan_to_num(images), -1.0, 1.0) + 1.0) / 2.0
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    rgb[bad] = BAD_RGB
    return rgb


def _pad(h, w):
    """Separator width in pixels: 1 for 8 x 8 digits, 2 for 28 x 28 MNIST."""
    return max(1, round(min(h, w) / 14))


def _tile(images, ncols):
    """(N, H, W) -> one RGB mosaic (rows*(H+pad)+pad, ncols*(W+pad)+pad, 3), row-major."""
    n, h, w = images.shape
    pad = _pad(h, w)
    rows = math.ceil(n / ncols)
    mosaic = np.empty((rows * (h + pad) + pad, ncols * (w + pad) + pad, 3))
    mosaic[:] = PAD_RGB
    rgb = _to_rgb(images)
    for i in range(n):
        r, c = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        mosaic[top:top + h, left:left + w] = rgb[i]
    return mosaic


def _mosaic_size(mosaic, extra_w=0.0, extra_h=0.0, max_inches=8.0, min_pixels=300):
    """Figure size showing the mosaic at 3 screen pixels per image pixel.

    More for a small mosaic (so it is at least ``min_pixels`` across), fewer
    for a large one (so it fits in ``max_inches``).
    """
    height, width = mosaic.shape[:2]
    longest = max(height, width)
    per_pixel = max(3, math.ceil(min_pixels / longest))
    per_pixel = min(per_pixel, max_inches * DPI / longest)
    return width * per_pixel / DPI + extra_w, height * per_pixel / DPI + extra_h


def _check_nrow(nrow, n):
    """Images per row: ``nrow``, or about sqrt(n) when None."""
    if nrow is None:
        return max(1, math.ceil(math.sqrt(n)))
    if int(nrow) < 1:
        raise ValueError(f"nrow (images per row) must be >= 1, got {nrow}")
    return int(nrow)


def image_grid(images, path, nrow=None, row_labels=None, title=None):
    """A grid of images (N, H, W) in [-1, 1]; -1 is black, +1 white.

    ``nrow`` is the number of images per row (as in torchvision's
    ``make_grid``; default about sqrt(N)). ``row_labels``, one per row, names
    the rows (for a class-conditional grid with one row per digit).
    """
    images = _images(images, "images")
    ncols = _check_nrow(nrow, len(images))
    rows = math.ceil(len(images) / ncols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must have one label per row ({rows} rows of {ncols}), "
                         f"got {len(row_labels)}")
    mosaic = _tile(images, ncols)
    width, height = _mosaic_size(mosaic, extra_w=0.5 if row_labels is not None else 0.1,
                                 extra_h=0.4 if title else 0.1)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    h, w = images.shape[1:]
    if row_labels is not None:
        pad = _pad(h, w)
        ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)], [str(x) for x in row_labels])
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_forward_images(snapshots, path, title=None):
    """The forward process on images: rows are examples, columns are t.

    ``snapshots`` is a list of (t, images (N, H, W)) with the same N and H, W
    in every entry, typically x_t from Eq. 4 for a few t and fixed x_0; at
    most 16 evenly spaced columns are drawn.
    """
    snapshots = _pick(_same_images(snapshots), 16)
    n, h, w = snapshots[0][1].shape
    columns = len(snapshots)
    stacked = np.stack([images for _, images in snapshots], axis=1)  # (N, columns, H, W)
    mosaic = _tile(stacked.reshape(n * columns, h, w), columns)
    width, height = _mosaic_size(mosaic, extra_w=0.1, extra_h=0.8)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    pad = _pad(h, w)
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(columns)], [str(t) for t, _ in snapshots],
                  fontsize="small")
    ax.set_xlabel("t")
    ax.set_yticks([])
    ax.tick_params(length=0)
    ax.set_title(title or r"Forward process $q(x_t \mid x_0)$")
    return _finish(fig, path)


# ---------------------------------------------------------------- animations


def _grab(fig):
    """The figure's current pixels as an RGB uint8 array (H, W, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _check_gif(path, fps):
    """Checked before any drawing, so a wrong suffix fails fast."""
    if not os.fspath(path).lower().endswith(".gif"):
        raise ValueError(f"path must end in .gif for an animation, got {os.fspath(path)!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")


def _write_gif(frames, path, fps, palette=None, hold_last=1.5):
    """Write RGB uint8 frames as a looping GIF; the last frame is held ``hold_last`` s.

    Frames are mapped to ``palette`` (a "P" image) when given, else each to
    its own 32-color palette: plots have few colors, and a small palette is
    what keeps a GIF small.
    """
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    no_dither = getattr(Image, "Dither", Image).NONE
    if palette is None:
        images = [Image.fromarray(frame).quantize(colors=32, dither=no_dither) for frame in frames]
    else:
        images = [Image.fromarray(frame).quantize(palette=palette, dither=no_dither) for frame in frames]
    durations = [int(1000 / fps)] * len(images)
    durations[-1] = max(durations[-1], int(1000 * hold_last))
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                   loop=0)
    return path


def animate_reverse_2d(snapshots, path, data=None, fps=10, max_points=400, max_frames=MAX_FRAMES):
    """An animated GIF of the reverse process on 2D points.

    At most ``max_frames`` evenly spaced snapshots become frames (first and
    last always) and the first ``max_points`` points of each are drawn: every
    moving point costs bytes in every frame, and a few hundred show the flow
    as well as thousands. The last frame is held for 1.5 s.
    """
    _check_gif(path, fps)
    snapshots = _pick(_snapshots(snapshots, "snapshots", _points), int(max_frames))
    snapshots = [(t, points[:int(max_points)]) for t, points in snapshots]
    data = None if data is None else _points(data, "data")
    xlim, ylim = _limits([points for _, points in snapshots] + ([data] if data is not None else []))
    fig = _figure(3.6, 3.6)
    ax = fig.add_subplot()
    _draw_data(ax, data)
    first = snapshots[0][1]
    dots = ax.scatter(first[:, 0], first[:, 1], s=2 * _scatter_size(len(first)), c=POINT_COLOR,
                      linewidths=0)
    _style_2d(ax, xlim, ylim)
    label = ax.set_title(f"reverse process, t = {snapshots[0][0]}", fontsize="medium")
    fig.canvas.draw()
    fig.set_layout_engine("none")  # freeze the layout so the axes do not jitter between frames
    frames = []
    for t, points in snapshots:
        dots.set_offsets(points)
        label.set_text(f"reverse process, t = {t}")
        frames.append(_grab(fig))
    return _write_gif(frames, path, fps)


GIF_GREY_LEVELS = 16  # noise does not compress: fewer grey levels, fewer bytes


def _gif_palette():
    """A fixed palette: GIF_GREY_LEVELS greys, then the bad-pixel magenta."""
    greys = np.linspace(0, 255, GIF_GREY_LEVELS).round().astype(int)
    colors = [(g, g, g) for g in greys] + [tuple(int(255 * c) for c in BAD_RGB)]
    palette = Image.new("P", (1, 1))
    palette.putpalette([value for color in colors for value in color])
    return palette


def _image_frame(images, ncols, caption, scale):
    """One GIF frame: the image mosaic at ``scale`` screen pixels per pixel, captioned."""
    mosaic = _tile(images, ncols)
    levels = GIF_GREY_LEVELS - 1
    pixels = (np.round(mosaic * levels) / levels * 255).round().astype(np.uint8)
    pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)  # (H*scale, W*scale, 3)
    header = np.full((16, pixels.shape[1], 3), 255, dtype=np.uint8)
    frame = Image.fromarray(np.concatenate([header, pixels], axis=0))
    ImageDraw.Draw(frame).text((4, 2), caption, fill=(0, 0, 0))
    return np.asarray(frame)


def animate_reverse_images(snapshots, path, nrow=None, fps=10, max_frames=20):
    """An animated GIF of the reverse process on images: each frame an image grid.

    ``nrow`` is images per row, as in ``image_grid``. Noisy frames barely
    compress, so at most ``max_frames`` evenly spaced snapshots are kept
    (first and last always), drawn in 16 grey levels, each image pixel a
    block of 1 to 4 screen pixels so the grid is about 250 pixels across.
    """
    _check_gif(path, fps)
    snapshots = _pick(_same_images(snapshots), int(max_frames))
    ncols = _check_nrow(nrow, snapshots[0][1].shape[0])
    longest = max(_tile(snapshots[0][1], ncols).shape[:2])
    scale = int(np.clip(round(250 / longest), 1, 4))  # whole screen pixels per image pixel
    frames = [_image_frame(images, ncols, f"t = {t}", scale) for t, images in snapshots]
    return _write_gif(frames, path, fps, palette=_gif_palette())


# ---------------------------------------------------------------- losses


def plot_loss(steps, losses, path, smooth=0.98, log_y=True, title=None):
    """The training loss: raw values faint, smoothed curve on top.

    ``smooth`` is either an EMA weight in [0, 1) (bias corrected, see
    ``smooth()``) or an int window >= 1 for a trailing moving average. The y
    axis is logarithmic when ``log_y`` and every loss is positive.
    """
    steps = _vector(steps, "steps")
    losses = _vector(losses, "losses")
    if steps.shape != losses.shape:
        raise ValueError(f"steps and losses must have the same shape (N,), got {steps.shape} and "
                         f"{losses.shape}")
    if isinstance(smooth, (int, np.integer)) and not isinstance(smooth, bool):
        if smooth < 1:
            raise ValueError(f"smooth as a window must be >= 1, got {smooth}")
        smoothed, how = _window_mean(losses, int(smooth)), f"moving average of {int(smooth)}"
    else:
        smoothed, how = _ema(losses, float(smooth)), f"EMA {float(smooth):g}"
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color=POINT_COLOR, alpha=0.25, linewidth=0.8, label="loss")
    ax.plot(steps, smoothed, color=POINT_COLOR, linewidth=1.8, label=f"smoothed ({how})")
    if log_y and np.all(losses[np.isfinite(losses)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title or "Training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _finish(fig, path)


_ema = smooth  # plot_loss's argument ``smooth`` shadows the function inside it


def plot_loss_by_t(t_values, losses, path, T, buckets=10):
    """Mean loss per timestep bucket, with standard-error bars.

    ``t_values`` (N,) are the code's 0-indexed timesteps in [0, T) that the
    per-example ``losses`` (N,) were computed at. Shows which t the model
    finds hard (for eps-prediction, the small t of Sec. 3.4).
    """
    t_values = _vector(t_values, "t_values")
    losses = _vector(losses, "losses")
    if t_values.shape != losses.shape:
        raise ValueError(f"t_values and losses must have the same shape (N,), got {t_values.shape} "
                         f"and {losses.shape}")
    T, buckets = int(T), int(buckets)
    if T < 1 or not 1 <= buckets <= T:
        raise ValueError(f"T must be >= 1 and buckets in [1, T], got T={T}, buckets={buckets}")
    if t_values.min() < 0 or t_values.max() >= T:
        raise ValueError(f"t_values must lie in [0, T) = [0, {T}), got range "
                         f"[{t_values.min():g}, {t_values.max():g}]")
    edges = np.linspace(0, T, buckets + 1).round().astype(int)
    which = np.searchsorted(edges, t_values, side="right") - 1  # bucket k holds edges[k] <= t < edges[k+1]
    means = np.full(buckets, np.nan)
    errors = np.zeros(buckets)
    for k in range(buckets):
        chosen = losses[which == k]
        if len(chosen):
            means[k] = chosen.mean()
            errors[k] = chosen.std(ddof=1) / math.sqrt(len(chosen)) if len(chosen) > 1 else 0.0
    fig = _figure(max(5.0, 0.45 * buckets + 1.5), 3.6)
    ax = fig.add_subplot()
    ax.bar(np.arange(buckets), means, yerr=errors, color=POINT_COLOR, capsize=2)
    ax.set_xticks(np.arange(buckets), [f"{edges[k]}-{edges[k + 1] - 1}" for k in range(buckets)],
                  rotation=45 if buckets > 6 else 0, fontsize="small")
    if np.all(means[np.isfinite(means)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("t bucket")
    ax.set_ylabel("mean loss")
    ax.set_title("Loss by timestep")
    ax.grid(alpha=0.3, axis="y", which="both")
    return _finish(fig, path)


def plot_vlb_terms(terms_per_t, path, prior=None):
    """The variational bound (Eq. 5) split by t, in nats.

    Entry i of ``terms_per_t`` (T,) is L_i: i = 0 the decoder term L_0, then
    the KL terms L_1..L_{T-1}, plotted at paper step t = i + 1. ``prior`` is
    L_T, which has no step of its own and goes into the title and total.
    """
    terms = _vector(terms_per_t, "terms_per_t")
    t = np.arange(1, len(terms) + 1)
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    kl = r"$L_{t-1}$ (KL, Eq. 5)"
    if len(terms) <= 50:
        ax.bar(t[1:], terms[1:], color=POINT_COLOR, label=kl)
        ax.bar(t[:1], terms[:1], color="tab:orange", label="$L_0$ (decoder)")
    else:
        ax.plot(t[1:], terms[1:], color=POINT_COLOR, linewidth=1.2, label=kl)
        ax.plot(t[:1], terms[:1], "o", color="tab:orange", label="$L_0$ (decoder)")
    if np.all(terms[np.isfinite(terms)] > 0):
        ax.set_yscale("log")
    total = float(np.sum(terms)) + (float(prior) if prior is not None else 0.0)
    parts = f"$L_T$ = {float(prior):.3g}, " if prior is not None else ""
    ax.set_title(f"Variational bound by t: {parts}total = {total:.4g} nats", fontsize="medium")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("t")
    ax.set_ylabel("nats")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _finish(fig, path)


def plot_histogram_1d(samples, path, density_fn=None, bins=60, title=None):
    """A histogram of 1-D samples (N,) or (N, 1), with an optional density curve.

    ``density_fn(x)`` takes a host float64 array (M,) and returns the density
    (M,), e.g. the true data density to compare the samples against.
    """
    samples = _host(samples, "samples")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1 or samples.shape[0] == 0:
        raise ValueError(f"samples must have shape (N,) or (N, 1) with N >= 1, got {samples.shape}")
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        raise ValueError("samples has no finite values")
    fig = _figure(5.5, 3.6)
    ax = fig.add_subplot()
    ax.hist(finite, bins=int(bins), density=True, color=POINT_COLOR, alpha=0.6, label="samples")
    if density_fn is not None:
        low, high = finite.min(), finite.max()
        margin = 0.1 * (high - low) + 1e-6
        x = np.linspace(low - margin, high + margin, 400)
        y = _host(density_fn(x), "density_fn output")
        if y.shape != x.shape:
            raise ValueError(f"density_fn must return shape {x.shape} for x {x.shape}, got {y.shape}")
        ax.plot(x, y, color="black", linewidth=1.5, label="density")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(title or "Samples against the density")
    ax.legend(fontsize="small")
    return _finish(fig, path)
