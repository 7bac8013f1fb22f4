"""The 2D toy sets: each is f(n, rng) -> (x float32 (n, 2), labels int64 (n,) or None).

Every set is scaled to roughly unit spread (std per axis between about 0.5
and 1.5, nearly all points in [-3, 3]), the scale the DDPM forward process
assumes of data (Sec. 4 scales images to [-1, 1] for the same reason).
``rng`` is a numpy Generator or a non-negative int seed.
"""

from __future__ import annotations

import numpy as np

from ..checks import check_int
from .common import as_generator

DATASETS_2D = ("moons", "swissroll", "eightgaussians", "checkerboard", "circles", "spiral")

EIGHT_GAUSSIANS_RADIUS = 2.0
EIGHT_GAUSSIANS_STD = 0.2


def _finish_2d(points, labels=None):
    """float32 (n, 2) points and int64 (n,) labels (or None)."""
    points = np.asarray(points, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    return points, labels


def moons(n, rng, *, noise=0.1):
    """Two interleaving half circles, labelled by moon (2 classes).

    Moon 0 is the upper half of the unit circle, (cos s, sin s) for s
    uniform on [0, pi]; moon 1 is its mirror image shifted right and down,
    (1 - cos s, 1/2 - sin s). Each point picks its moon with probability 1/2.
    The union is centred by subtracting (1/2, 1/4), scaled by 3/2, and
    isotropic Gaussian noise of standard deviation ``noise`` is added.
    Without noise: x in [-2.25, 2.25], y in [-1.125, 1.125]; std about (1.3, 0.74).
    """
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
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
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
    u = rng.uniform(0.0, 1.0, size=n)
    s = 1.5 * np.pi * (1.0 + 2.0 * u)
    c = 2.5 / (4.5 * np.pi)
    points = c * np.stack([s * np.cos(s), s * np.sin(s)], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, None)


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
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
    label = rng.integers(0, 8, size=n)
    points = eightgaussians_centers(radius)[label] + std * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


def checkerboard(n, rng):
    """Uniform on the dark squares of a 4 x 4 checkerboard on [-2, 2]^2 (labels None).

    The board has unit squares; a point (x, y) is on a dark square when
    floor(x) + floor(y) is even. Each of the 8 dark squares is equally
    likely, and the point is uniform inside it. Std per axis 4/sqrt(12) ~ 1.15.
    """
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
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
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
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
    n = check_int("n", n, minimum=1)
    rng = as_generator(rng)
    label = rng.integers(0, 2, size=n)
    s = 3.0 * np.pi * np.sqrt(rng.uniform(0.0, 1.0, size=n))
    angle = s + np.pi * label
    radius = 0.8 * s / np.pi
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    points = points + noise * rng.standard_normal((n, 2))
    return _finish_2d(points, label)


# name -> (generator, number of classes or None); ``load`` draws from these.
GENERATORS_2D = {
    "moons": (moons, 2),
    "swissroll": (swissroll, None),
    "eightgaussians": (eightgaussians, 8),
    "checkerboard": (checkerboard, None),
    "circles": (circles, 2),
    "spiral": (spiral, 2),
}
