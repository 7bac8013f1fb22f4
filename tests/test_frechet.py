"""The Frechet distance of tinydiff.metrics (FID's formula) against independent computations."""

import numpy as np
import pytest
from scipy import linalg

from tinydiff import metrics


def frechet_with_sqrtm(a, b):
    """FID's reference computation: scipy's matrix square root of S_a S_b (its real part)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root))


def test_against_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.5
    assert metrics.frechet_distance(a, b) == pytest.approx(frechet_with_sqrtm(a, b), rel=1e-8)


def test_one_dimension_is_the_closed_form():
    """For 1-D Gaussians d^2 = (m_a - m_b)^2 + (s_a - s_b)^2."""
    a = np.array([[0.0], [2.0], [4.0]])  # mean 2, sample variance 4
    b = np.array([[1.0], [2.0]])  # mean 1.5, sample variance 0.5
    expected = 0.5**2 + (2.0 - np.sqrt(0.5)) ** 2
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)


def test_zero_for_the_same_set_symmetric_and_a_floor_below_a_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    assert abs(metrics.frechet_distance(x, x)) < 1e-9
    y = rng.normal(size=(300, 4)) * 1.5
    assert metrics.frechet_distance(x, y) == pytest.approx(metrics.frechet_distance(y, x), rel=1e-9)

    def draw(n, seed):
        return np.random.default_rng(seed).normal(size=(n, 4))

    floor = metrics.floor(draw, 300, metrics.frechet_distance)
    assert 0 < floor < metrics.frechet_distance(draw(300, 5), draw(300, 6) + 1.0)
    with pytest.raises(ValueError, match="same number of features"):
        metrics.frechet_distance(x, x[:, :3])


def test_evaluate_mnist_scores_samples_files_beside_the_floor(tmp_path, monkeypatch, capsys):
    """examples/evaluate_mnist.py on the shipped 8x8 digits standing in for MNIST's test split."""
    import importlib.util
    import json
    from pathlib import Path

    from tinydiff import backend as B
    from tinydiff import data, nn

    examples = Path(__file__).resolve().parent.parent / "examples"
    monkeypatch.syspath_prepend(str(examples))
    spec = importlib.util.spec_from_file_location("evaluate_mnist_under_test", examples / "evaluate_mnist.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    import _common
    import train_classifier

    digits = data.load("digits")
    monkeypatch.setattr(_common, "held_out_images", lambda name, data_dir=None: digits)
    classifier = nn.MLP(64, [32, 16], 10, "relu", rng=B.default_rng(0))
    path = train_classifier.save_classifier(classifier, str(tmp_path / "classifier.npz"), {"data": "mnist"})
    features = example.penultimate_features(classifier, digits.x[:5])
    assert features.shape == (5, 16) and np.all(features >= 0)  # the last hidden layer, after its ReLU
    np.save(tmp_path / "real.npy", digits.x[-300:])  # real digits: near the floor
    np.save(tmp_path / "noise.npy", np.random.default_rng(0).uniform(-1, 1, (300, 64)).astype(np.float32))
    out = tmp_path / "scores"
    assert example.main([str(tmp_path / "real.npy"), str(tmp_path / "noise.npy"), "--n", "300", "--classifier",
                         path, "--out", str(out)]) == 0
    scores = json.loads((out / "scores.json").read_text())
    real, noise = (scores["samples"][str(tmp_path / name)] for name in ("real.npy", "noise.npy"))
    assert 0 < scores["floor"] and real < 3 * scores["floor"] < noise
    assert "real/real" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        example.main([str(tmp_path / "real.npy"), "--n", "301", "--classifier", path, "--out", str(out)])
