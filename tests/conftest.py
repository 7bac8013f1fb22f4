"""Shared fixtures: every core test runs under each array backend present.

``backend`` parametrizes a test over numpy and array_api_strict (always) and
cupy (only where a GPU is present; skipped otherwise). That is how the suite
proves, without a GPU, that the core calls nothing NumPy-only.
"""

import os

# One BLAS thread for the suite: the test models are small, and OpenBLAS
# threads that spin on small matrices slow a step by 10x or more whenever
# another process shares the two cores. Set before NumPy is first imported.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import matplotlib  # noqa: E402
import pytest  # noqa: E402

matplotlib.use("Agg")

from tinydiff import backend as B  # noqa: E402

CORE_BACKENDS = ["numpy", "array_api_strict", "cupy"]


@pytest.fixture(params=CORE_BACKENDS)
def backend(request):
    """Run the test under one backend, then restore the previous one."""
    name = request.param
    if name == "cupy" and not B.gpu_available():
        pytest.skip("cupy backend needs CuPy and a GPU")
    previous = B.get_backend()
    B.set_backend(name)
    try:
        yield name
    finally:
        B.set_backend(previous)


@pytest.fixture(autouse=True)
def _restore_backend():
    """No test may leave another backend switched on for the next one."""
    previous = B.get_backend()
    yield
    if B.get_backend() != previous:
        B.set_backend(previous)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TINYDIFF_RUN_SLOW"):
        return
    skip_slow = pytest.mark.skip(reason="slow: set TINYDIFF_RUN_SLOW=1 or run with -m slow")
    if "slow" in (config.getoption("-m") or ""):
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


# -- helpers the test files share (import them: from conftest import host, as_f64) --


def host(x):
    """A backend array (or Tensor) as a host NumPy array."""
    return B.to_numpy(x)


def as_f64(values):
    """Values as a float64 array of the current backend (gradient checks and equation tests)."""
    import numpy as np

    return B.asarray(np.asarray(values, dtype=np.float64), dtype=B.float64())
