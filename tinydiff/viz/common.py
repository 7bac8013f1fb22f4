"""What every picture shares: its constants, the argument checks, making and writing figures.

Every picture is written atomically through ``tinydiff.files``: drawn into a
temporary file beside ``path`` and renamed onto it, so a crash or an error
while saving leaves the previous picture as it was.
"""

from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from .. import files
from ..backend import to_numpy

DPI = 100
MAX_FRAMES = 40  # animations keep at most this many snapshots (GIF size)
MAX_COLUMNS = 6  # panels per row before wrapping
MAX_PANELS = 12  # still pictures of a process keep at most this many snapshots
DATA_COLOR = "0.75"  # the data, drawn in grey under what is being shown
POINT_COLOR = "tab:blue"
PAD_RGB = (0.55, 0.55, 0.55)  # separators between images in a grid
BAD_RGB = (1.0, 0.0, 1.0)  # non-finite pixels


# ---------------------------------------------------------------- checks


def as_host(value, name):
    """A float64 host array; ``name`` is only for the error message."""
    try:
        return np.asarray(to_numpy(value), dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from error


def as_vector(value, name):
    """A host array of shape (N,), N >= 1."""
    array = as_host(value, name)
    if array.ndim != 1 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N,) with N >= 1, got shape {array.shape}")
    return array


def as_points(value, name):
    """A host array of 2D points, shape (N, 2), N >= 1."""
    array = as_host(value, name)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, 2) with N >= 1, got shape {array.shape}")
    return array


def as_images(value, name, colour=False):
    """A host array of images, shape (N, H, W) (or (N, 3, H, W) in colour where allowed), none of them 0."""
    array = as_host(value, name)
    rgb = colour and array.ndim == 4 and array.shape[1] == 3
    if (array.ndim != 3 and not rgb) or 0 in array.shape:
        shapes = "(N, H, W) or (N, 3, H, W)" if colour else "(N, H, W)"
        raise ValueError(f"{name} must have shape {shapes} (reshape flat vectors first), got shape {array.shape}")
    return array


def as_snapshots(snapshots, name, check):
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


def pick(snapshots, most):
    """At most ``most`` evenly spaced snapshots, always the first and the last."""
    if len(snapshots) <= most:
        return snapshots
    keep = np.unique(np.round(np.linspace(0, len(snapshots) - 1, most)).astype(int))
    return [snapshots[i] for i in keep]


# ---------------------------------------------------------------- figures


def new_figure(width, height):
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas (pyplot untouched)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panel_axes(fig, count):
    """``count`` axes on a grid of at most MAX_COLUMNS columns."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return [fig.add_subplot(rows, columns, i + 1) for i in range(count)]


def panel_size(count, panel=2.2):
    """Figure size in inches for ``count`` square panels of ``panel`` inches, plus a title."""
    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    return panel * columns, panel * rows + 0.4


# ---------------------------------------------------------------- writing


def _make_parent(path):
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)


def finish(fig, path):
    """Write the figure atomically (format from the suffix, PNG without one) and return ``path``."""
    _make_parent(path)
    suffix = os.path.splitext(os.fspath(path))[1]
    with files.atomic_write(path, "wb") as file:
        fig.savefig(file, format=suffix[1:].lower() or "png", dpi=DPI)
    return path


def grab(fig):
    """The figure's current pixels as an RGB uint8 array (H, W, 3)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def check_gif(path, fps):
    """Checked before any drawing, so a wrong suffix fails fast."""
    if not os.fspath(path).lower().endswith(".gif"):
        raise ValueError(f"path must end in .gif for an animation, got {os.fspath(path)!r}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")


def write_gif(frames, path, fps, palette=None, hold_last=1.5):
    """Write RGB uint8 frames atomically as a looping GIF; the last frame is held ``hold_last`` s.

    Frames are mapped to ``palette`` (a "P" image) when given, else each to
    its own 32-color palette: plots have few colors, and a small palette is
    what keeps a GIF small.
    """
    _make_parent(path)
    no_dither = getattr(Image, "Dither", Image).NONE
    if palette is None:
        images = [Image.fromarray(frame).quantize(colors=32, dither=no_dither) for frame in frames]
    else:
        images = [Image.fromarray(frame).quantize(palette=palette, dither=no_dither) for frame in frames]
    durations = [int(1000 / fps)] * len(images)
    durations[-1] = max(durations[-1], int(1000 * hold_last))
    with files.atomic_write(path, "wb") as file:
        images[0].save(file, format="GIF", save_all=True, append_images=images[1:], duration=durations,
                       loop=0)
    return path
