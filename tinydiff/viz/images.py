"""Pictures of images: sample grids, the forward process as a strip, the reverse process animated.

Images are ``(N, H, W)`` arrays in [-1, 1] (the data scaling of Sec. 3.3):
-1 draws black, +1 white. Values outside are clipped; non-finite pixels draw
magenta so a diverged sampler shows up instead of hiding as grey.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .common import (
    BAD_RGB,
    DPI,
    PAD_RGB,
    as_images,
    as_snapshots,
    check_gif,
    finish,
    new_figure,
    pick,
    write_gif,
)

GIF_GREY_LEVELS = 16  # noise does not compress: fewer grey levels, fewer bytes


# ---------------------------------------------------------------- mosaics


def _same_images(snapshots):
    """Snapshots of images that all share the shape (N, H, W) of the first."""
    snapshots = as_snapshots(snapshots, "snapshots", as_images)
    shape = snapshots[0][1].shape
    for i, (_, images) in enumerate(snapshots):
        if images.shape != shape:
            raise ValueError(f"snapshots[{i}] array must have shape {shape} like snapshots[0], "
                             f"got {images.shape}")
    return snapshots


def _to_rgb(images):
    """(N, H, W) grey or (N, 3, H, W) colour in [-1, 1] -> (N, H, W, 3) in [0, 1]; non-finite pixels magenta."""
    if images.ndim == 4:
        images = np.moveaxis(images, 1, -1)  # (N, H, W, 3)
    bad = ~np.isfinite(images)
    scaled = (np.clip(np.nan_to_num(images), -1.0, 1.0) + 1.0) / 2.0
    if images.ndim == 4:
        rgb = scaled
        rgb[np.any(bad, axis=-1)] = BAD_RGB
        return rgb
    rgb = np.repeat(scaled[..., None], 3, axis=-1)
    rgb[bad] = BAD_RGB
    return rgb


def _pad(h, w):
    """Separator width in pixels: 1 for 8 x 8 digits, 2 for 28 x 28 MNIST."""
    return max(1, round(min(h, w) / 14))


def _tile(images, ncols):
    """(N, H, W) or (N, 3, H, W) -> one RGB mosaic (rows*(H+pad)+pad, ncols*(W+pad)+pad, 3), row-major."""
    n, (h, w) = images.shape[0], images.shape[-2:]
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


# ---------------------------------------------------------------- still pictures


def image_grid(images, path, nrow=None, row_labels=None, title=None):
    """A grid of images (N, H, W), or colour images (N, 3, H, W), in [-1, 1]; -1 is black, +1 white.

    ``nrow`` is the number of images per row (as in torchvision's
    ``make_grid``; default about sqrt(N)). ``row_labels``, one per row, names
    the rows (for a class-conditional grid with one row per digit).
    """
    images = as_images(images, "images", colour=True)
    ncols = _check_nrow(nrow, len(images))
    rows = math.ceil(len(images) / ncols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must have one label per row ({rows} rows of {ncols}), "
                         f"got {len(row_labels)}")
    mosaic = _tile(images, ncols)
    width, height = _mosaic_size(mosaic, extra_w=0.5 if row_labels is not None else 0.1,
                                 extra_h=0.4 if title else 0.1)
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([])
    h, w = images.shape[-2:]
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
    return finish(fig, path)


def plot_forward_images(snapshots, path, title=None):
    """The forward process on images: rows are examples, columns are t.

    ``snapshots`` is a list of (t, images (N, H, W)) with the same N and H, W
    in every entry, typically x_t from Eq. 4 for a few t and fixed x_0; at
    most 16 evenly spaced columns are drawn.
    """
    snapshots = pick(_same_images(snapshots), 16)
    n, h, w = snapshots[0][1].shape
    columns = len(snapshots)
    stacked = np.stack([images for _, images in snapshots], axis=1)  # (N, columns, H, W)
    mosaic = _tile(stacked.reshape(n * columns, h, w), columns)
    width, height = _mosaic_size(mosaic, extra_w=0.1, extra_h=0.8)
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    pad = _pad(h, w)
    ax.set_xticks([pad + c * (w + pad) + w / 2 for c in range(columns)], [str(t) for t, _ in snapshots],
                  fontsize="small")
    ax.set_xlabel("t")
    ax.set_yticks([])
    ax.tick_params(length=0)
    ax.set_title(title or r"Forward process $q(x_t \mid x_0)$")
    return finish(fig, path)


# ---------------------------------------------------------------- animation


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
    check_gif(path, fps)
    snapshots = pick(_same_images(snapshots), int(max_frames))
    ncols = _check_nrow(nrow, snapshots[0][1].shape[0])
    longest = max(_tile(snapshots[0][1], ncols).shape[:2])
    scale = int(np.clip(round(250 / longest), 1, 4))  # whole screen pixels per image pixel
    frames = [_image_frame(images, ncols, f"t = {t}", scale) for t, images in snapshots]
    return write_gif(frames, path, fps, palette=_gif_palette())
