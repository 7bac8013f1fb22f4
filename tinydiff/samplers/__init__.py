"""Samplers: ancestral DDPM (Algorithm 2), DDIM (Song et al. 2020, Eq. 12), ODE solvers, guidance.

    ancestral.py  ddpm (Algorithm 2), ddim (DDIM Eq. 12, 16), timesteps
    solvers.py    dpm_solver (DPM-Solver, DPM-Solver++), heun (Karras et al. 2022): the
                  probability-flow ODE of tinydiff.ode, solved in 5 to 50 network calls
    guidance.py   classifier_free_guidance (Ho and Salimans 2022), inpaint (RePaint)
    loop.py       what they share: the model call, the seeds, the trajectory, the checks

All take any callable ``model(x_t, t)`` that returns a prediction of the
diffusion's prediction_type (eps, x0 or v) as a Tensor or a backend array,
with x_t an (N, ...) array and t an int64 array (N,) of 0-indexed steps
(code t = paper t - 1: the loop runs t = T-1 .. 0 for the paper's T .. 1).
All rows of a step share t, so a model with ``accepts_scalar_t = True``
(tinydiff's denoisers) is handed the one Python int instead, and computes
its timestep conditioning once per step rather than once per row.
``classifier_free_guidance`` wraps a class-conditional model (Ho and
Salimans 2022, Eq. 6) so any sampler can use it.

Reproducibility: the noise of sample i depends only on the generator's seed
and i, not on how many samples are drawn or on ``batch_size``. One seed
``base`` is taken from ``rng`` per call; x_T is drawn from
default_rng((base, T)) and the noise added at step t from
default_rng((base, t)), each as one array of the full shape, and NumPy fills
rows in order, so row i of a larger draw is row i of a smaller one. The
samples themselves are equal to float32 rounding, not bit for bit: the
model's matrix products round differently with the number of rows in a call
(BLAS blocks them differently), and that difference is carried through the
steps without growing. Measured on a trained 2D model, DDPM 1000 steps and
DDIM 50: sample i of a 2000-sample run against the same sample from a
37-sample run, or with batch_size=100, differs by at most 4e-6 (values up
to 3.5). A run repeated with the same arguments is bit for bit the same.
(On CuPy the numbers come from CuPy's own generator: the same seed gives
the same samples, and the row property held on CuPy 14, but CuPy does not
promise it.)
"""

from .ancestral import SPACINGS, ddim, ddpm, timesteps
from .guidance import classifier_free_guidance, inpaint, repaint_schedule
from .loop import SamplingError, SamplingLoop, check_finite, predict
from .solvers import METHODS, PREDICTIONS, dpm_solver, heun

__all__ = [
    "METHODS", "PREDICTIONS", "SPACINGS", "SamplingError", "SamplingLoop", "check_finite",
    "classifier_free_guidance", "ddim", "ddpm", "dpm_solver", "heun", "inpaint", "predict", "repaint_schedule",
    "timesteps",
]
