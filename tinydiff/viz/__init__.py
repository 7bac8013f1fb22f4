"""Pictures of a diffusion model: schedules, both processes, samples, losses.

Every function here takes host arrays (NumPy; a device array or a Tensor is
brought over with ``tinydiff.backend.to_numpy``), writes one file to ``path``
and returns ``path``. Still pictures are PNG (or whatever format the suffix
names); animations are GIF. Every file is written atomically (through
``tinydiff.files``): a failure while saving leaves an older picture at
``path`` untouched.

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

The package, one concept a file:

    common.py   constants, argument checks, making figures, writing files and GIFs
    curves.py   schedules, loss, loss by t, the bound by t, a 1-D histogram
    points.py   2D points: forward and reverse panels, samples, the vector field, animation
    images.py   image grids, the forward process on images, the reverse process animated
"""

from .common import BAD_RGB, DATA_COLOR, DPI, MAX_COLUMNS, MAX_FRAMES, MAX_PANELS, PAD_RGB, POINT_COLOR
from .curves import plot_histogram_1d, plot_loss, plot_loss_by_t, plot_schedules, plot_vlb_terms, smooth
from .images import GIF_GREY_LEVELS, animate_reverse_images, image_grid, plot_forward_images
from .points import animate_reverse_2d, plot_forward_2d, plot_reverse_2d, plot_samples_2d, plot_vector_field

__all__ = [
    "BAD_RGB", "DATA_COLOR", "DPI", "GIF_GREY_LEVELS", "MAX_COLUMNS", "MAX_FRAMES", "MAX_PANELS",
    "PAD_RGB", "POINT_COLOR",
    "animate_reverse_2d", "animate_reverse_images", "image_grid", "plot_forward_2d",
    "plot_forward_images", "plot_histogram_1d", "plot_loss", "plot_loss_by_t", "plot_reverse_2d",
    "plot_samples_2d", "plot_schedules", "plot_vector_field", "plot_vlb_terms", "smooth",
]
