"""Sample-quality measures on host arrays, with the real-against-real floor.

A distance between samples and data means little alone: two independent
draws of the *same* distribution are not at distance 0. Every measure here
is therefore reported next to its floor, the distance between two fresh
draws of real data of the same size (``floor``).

- Sliced Wasserstein (Rabin et al. 2011; Bonneel et al. 2015): project both
  sets on random directions, where the 1-D Wasserstein-1 distance is the
  mean gap between sorted values; average over directions.
- Maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012),
  bandwidth by the median heuristic; the unbiased estimate.
- Precision: the fraction of samples within the real data's own
  nearest-neighbour radius, which sees samples strewn between thin
  structures that the averages above forgive.
- The Frechet distance between Gaussians fitted to features of the two
  sets (Dowson and Landau 1982), the formula of FID (Heusel et al. 2017);
  the examples apply it to the penultimate layer of tinydiff's own MNIST
  classifier (examples/evaluate_mnist.py).
"""

from __future__ import annotations

import numpy as np


def _host_2d(x, name):
    from .backend import to_numpy

    x = np.asarray(to_numpy(x), dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a (N, D) array with N >= 2, got shape {x.shape}")
    return x


def _quantiles(sorted_values, n):
    """n evenly spaced quantiles of a sorted 1-D sample (so unequal sizes compare)."""
    if sorted_values.shape[0] == n:
        return sorted_values
    positions = (np.arange(n) + 0.5) / n * sorted_values.shape[0] - 0.5
    return np.interp(positions, np.arange(sorted_values.shape[0]), sorted_values)


def sliced_wasserstein(a, b, n_projections=256, seed=0):
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of the projections."""
    a, b = _host_2d(a, "a"), _host_2d(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(a.shape[1], n_projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)  # (D, P) unit columns
    pa = np.sort(a @ directions, axis=0)  # (Na, P)
    pb = np.sort(b @ directions, axis=0)  # (Nb, P)
    n = max(pa.shape[0], pb.shape[0])
    gaps = [np.abs(_quantiles(pa[:, k], n) - _quantiles(pb[:, k], n)).mean() for k in range(n_projections)]
    return float(np.mean(gaps))


def mmd(a, b, bandwidth=None, max_points=2000, seed=0):
    """Unbiased squared MMD with a Gaussian kernel; bandwidth by the median heuristic."""
    a, b = _host_2d(a, "a"), _host_2d(b, "b")
    rng = np.random.default_rng(seed)
    if a.shape[0] > max_points:
        a = a[rng.choice(a.shape[0], max_points, replace=False)]
    if b.shape[0] > max_points:
        b = b[rng.choice(b.shape[0], max_points, replace=False)]

    def squared_distances(x, y):
        return np.maximum((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T, 0.0)

    d_ab = squared_distances(a, b)
    if bandwidth is None:
        bandwidth = np.sqrt(0.5 * np.median(d_ab))
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_aa = np.exp(-gamma * squared_distances(a, a))
    k_bb = np.exp(-gamma * squared_distances(b, b))
    k_ab = np.exp(-gamma * d_ab)
    n, m = a.shape[0], b.shape[0]
    term_aa = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
    term_bb = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(term_aa + term_bb - 2 * k_ab.mean())


def _nearest_distances(a, b, chunk=1024):
    """For each row of a, the Euclidean distance to its nearest row of b."""
    out = np.empty(a.shape[0])
    b_squared = (b * b).sum(1)
    for start in range(0, a.shape[0], chunk):
        block = a[start:start + chunk]
        squared = (block * block).sum(1)[:, None] + b_squared[None, :] - 2 * block @ b.T
        out[start:start + chunk] = np.sqrt(np.maximum(squared.min(axis=1), 0.0))
    return out


def precision(samples, data, reference=None, quantile=0.95):
    """The fraction of samples that lie on the data (Kynkaanniemi et al. 2019, simplified).

    A sample "lies on the data" when its distance to the nearest data point
    is at most the ``quantile`` of the same distance for a fresh real draw
    (``reference``; by default half of ``data`` against the other half). Real
    against real scores about ``quantile`` by construction; samples spread
    between thin rings or squares score far lower, which the sliced
    Wasserstein distance, an average over directions, can miss.
    """
    samples, data = _host_2d(samples, "samples"), _host_2d(data, "data")
    if reference is None:
        half = data.shape[0] // 2
        data, reference = data[:half], data[half:]
    reference = _host_2d(reference, "reference")
    radius = np.quantile(_nearest_distances(reference, data), quantile)
    return float(np.mean(_nearest_distances(samples, data) <= radius))


def floor(draw, n, metric=sliced_wasserstein, seeds=(101, 202)):
    """The metric between two independent real draws of size n: draw(n, seed) -> (n, D)."""
    return metric(draw(n, seeds[0]), draw(n, seeds[1]))


def gaussian_statistics(features):
    """(mean (D,), covariance (D, D)) of host features (N, D), the covariance with N - 1 as in FID."""
    features = _host_2d(features, "features")
    return features.mean(axis=0), np.atleast_2d(np.cov(features, rowvar=False))


def frechet_distance(a, b):
    """The squared Frechet distance between Gaussians fitted to features a (N, D) and b (M, D): FID's formula.

        d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    (Dowson and Landau 1982; Heusel et al. 2017 report d^2 of Inception
    features as FID). Tr((S_a S_b)^(1/2)) is the sum of the square roots of
    the eigenvalues of S_a S_b; they are computed from the symmetric matrix
    S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues, all real and >= 0,
    so no complex square root appears (scipy.linalg.sqrtm of S_a S_b, which
    FID's reference code uses, agrees: tests/test_frechet.py). Compare with
    the real-against-real floor: ``floor(draw, n, frechet_distance)``.
    """
    mu_a, cov_a = gaussian_statistics(a)
    mu_b, cov_b = gaussian_statistics(b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"a and b must have the same number of features, got {mu_a.shape[0]} and {mu_b.shape[0]}")
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.maximum(values, 0.0))) @ vectors.T  # S_a^(1/2)
    product = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)  # the eigenvalues of S_a S_b
    trace_sqrt = float(np.sum(np.sqrt(np.maximum(product, 0.0))))  # Tr((S_a S_b)^(1/2))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
