"""Pictures of 2D points: both processes as panels, samples over the data, the
denoising field, and the reverse process as an animation.

Points are ``(N, 2)`` arrays; 2D panels have equal aspect and, within one
picture, shared limits, so panels can be compared by eye.
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

from ..backend import to_numpy
from .common import (
    DATA_COLOR,
    MAX_FRAMES,
    MAX_PANELS,
    POINT_COLOR,
    as_host,
    as_points,
    as_snapshots,
    check_gif,
    finish,
    grab,
    new_figure,
    panel_axes,
    panel_size,
    pick,
    write_gif,
)


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
    snapshots = pick(as_snapshots(snapshots, "snapshots", as_points), MAX_PANELS)
    data = None if data is None else as_points(data, "data")
    xlim, ylim = _limits([points for _, points in snapshots] + ([data] if data is not None else []))
    fig = new_figure(*panel_size(len(snapshots)))
    for ax, (t, points) in zip(panel_axes(fig, len(snapshots)), snapshots):
        _draw_data(ax, data)
        ax.scatter(points[:, 0], points[:, 1], s=_scatter_size(len(points)), c=POINT_COLOR,
                   linewidths=0, alpha=0.7)
        ax.set_title(f"t = {t}", fontsize="medium")
        _style_2d(ax, xlim, ylim)
    fig.suptitle(title)
    return finish(fig, path)


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
    samples = as_points(samples, "samples")
    data = as_points(data, "data")
    fig = new_figure(4.8, 4.8)
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
    return finish(fig, path)


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
    data = None if data is None else as_points(data, "data")
    axis = np.linspace(-lim, lim, int(grid))
    gx, gy = np.meshgrid(axis, axis)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)  # (grid*grid, 2)
    cell = axis[1] - axis[0]
    fig = new_figure(*panel_size(len(timesteps), panel=3.2))
    for ax, t in zip(panel_axes(fig, len(timesteps)), timesteps):
        vectors = as_host(field_fn(points, t), "field_fn output")
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
    return finish(fig, path)


def animate_reverse_2d(snapshots, path, data=None, fps=10, max_points=400, max_frames=MAX_FRAMES):
    """An animated GIF of the reverse process on 2D points.

    At most ``max_frames`` evenly spaced snapshots become frames (first and
    last always) and the first ``max_points`` points of each are drawn: every
    moving point costs bytes in every frame, and a few hundred show the flow
    as well as thousands. The last frame is held for 1.5 s.
    """
    check_gif(path, fps)
    snapshots = pick(as_snapshots(snapshots, "snapshots", as_points), int(max_frames))
    snapshots = [(t, points[:int(max_points)]) for t, points in snapshots]
    data = None if data is None else as_points(data, "data")
    xlim, ylim = _limits([points for _, points in snapshots] + ([data] if data is not None else []))
    fig = new_figure(3.6, 3.6)
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
        frames.append(grab(fig))
    return write_gif(frames, path, fps)
