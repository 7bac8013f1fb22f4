"""DDPM's ancestral sampler (Algorithm 2) and DDIM (Song et al. 2020, Eq. 12, 16): the trained steps, walked down.

Both take any callable ``model(x_t, t)`` that returns a prediction of the
diffusion's prediction_type (eps, x0 or v); see the package docstring for
the calling convention and the reproducibility promise.
"""

from __future__ import annotations

import math
import numbers

from .. import backend as B
from ..autograd import no_grad
from ..backend import xp
from ..checks import check_choice, check_int
from ..diffusion import VARIANCES
from .loop import SamplingLoop, check_model_shape, predict

SPACINGS = ("linspace", "leading", "trailing")


def timesteps(T, steps, spacing="linspace"):
    """The descending 0-indexed steps a sampler visits: a list of ``steps`` ints in 0..T-1.

    linspace  evenly from T - 1 down to 0, rounded (both ends are always in;
              one step is [T - 1])
    leading   multiples of T // steps from 0: [(steps-1) k, ..., k, 0]; the first
              step is below T - 1, so sampling starts from noise the model
              was trained to see at a lower noise level (Lin et al. 2023)
    trailing  round(T - i T / steps) - 1: from T - 1 down, the last step at
              about T / steps - 1 rather than 0
    With steps = T all three give T-1, ..., 0, the full sequence of Algorithm 2.
    """
    T = check_int("T", T, minimum=1)
    steps = check_int("steps", steps, minimum=1, maximum=T)
    check_choice("spacing", spacing, SPACINGS)
    T, steps = int(T), int(steps)
    if spacing == "linspace":
        if steps == 1:
            return [T - 1]
        ascending = [round(i * (T - 1) / (steps - 1)) for i in range(steps)]
    elif spacing == "leading":
        ascending = [i * (T // steps) for i in range(steps)]
    else:
        ascending = [round(T - i * T / steps) - 1 for i in range(steps)][::-1]
    return [int(t) for t in reversed(ascending)]



def ddpm(
    model,
    diffusion,
    shape,
    rng,
    *,
    variance="beta",
    clip_x0=False,
    progress=False,
    return_trajectory=False,
    every=None,
    batch_size=None,
    model_kwargs=None,
    dtype=None,
):
    """Algorithm 2: ancestral sampling from x_T ~ N(0, I) through all T steps.

    At each t = T-1 .. 0 (paper T .. 1): x_{t-1} = mu_theta(x_t, t) + sigma_t z,
    z ~ N(0, I) except at the last step, where z = 0. mu_theta is the
    posterior mean (Eq. 7) at the predicted x_0, which equals Eq. 11 for an
    eps-prediction; sigma_t^2 = beta_t (``variance="beta"``) or
    beta_tilde_t (``"beta_tilde"``), Sec. 3.2. With ``clip_x0`` the predicted
    x_0 is clipped to [-1, 1] and the noise prediction re-derived from it
    (see GaussianDiffusion.split_prediction).

    Returns the samples x_0, an array of ``shape`` (dtype default float32), or
    (samples, trajectory) with ``return_trajectory``: a dict of lists
    "t" (the step), "x" (x_t fed to the model) and "x0" (its predicted x_0),
    recorded every ``every`` steps (default: about ten frames) and at the
    last step. ``batch_size`` chunks the model calls; ``progress`` shows tqdm.
    """
    check_choice("variance", variance, VARIANCES)
    loop = SamplingLoop(
        diffusion, shape, rng, list(range(diffusion.T - 1, -1, -1)), dtype,
        progress, return_trajectory, every, batch_size, "ddpm",
    )
    check_model_shape(model, loop.shape)
    x = loop.noise(loop.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, t in loop.iterable:
            output = predict(model, x, t, batch_size, model_kwargs)
            p = diffusion.p_mean_variance(output, x, t, variance=variance, clip_x0=clip_x0)
            loop.keep(i, t, x, p.x0)
            if t > 0:
                x = p.mean + xp.sqrt(p.variance) * loop.noise(t)
            else:
                x = p.mean  # Algorithm 2: z = 0 at the last step
    return loop.result(x)


def ddim(model, diffusion, shape, rng, *, steps=50, eta=0.0, spacing="linspace", clip_x0=False, progress=False,
         return_trajectory=False, every=None, batch_size=None, model_kwargs=None, dtype=None):
    """DDIM (Song et al. 2020, Eq. 12) on a subsequence tau of ``steps`` steps.

    With alpha_bar_t (DDIM's alpha_t) at the current step t = tau_i and
    alpha_bar_prev at the next one, t' = tau_{i+1} (t - k, not t - 1; 1 after the
    last step):

        x_{t'} = sqrt(alpha_bar_prev) x0_hat
                 + sqrt(1 - alpha_bar_prev - sigma^2) eps_hat + sigma z,
        sigma  = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t))
                     sqrt(1 - alpha_bar_t / alpha_bar_prev)          (Eq. 16)

    eta = 0 is deterministic; eta = 1 on the full sequence is the DDPM
    posterior step with sigma_t^2 = beta_tilde_t. With eta = 0 each step is
    the first-order exponential-integrator step of the probability-flow ODE
    (tinydiff.ode: x0_hat held constant over the step, the rest integrated
    exactly), so dpm_solver(order=1) on the same steps gives the same samples.
    ``spacing`` picks tau (see ``timesteps``). Other arguments and the return
    value as in ``ddpm``.
    """
    _check_eta(eta)
    sequence = timesteps(diffusion.T, steps, spacing)
    loop = SamplingLoop(diffusion, shape, rng, sequence, dtype, progress, return_trajectory, every, batch_size, "ddim")
    check_model_shape(model, loop.shape)
    alpha_bar_steps = _alpha_bar_steps(diffusion, sequence)
    x = loop.noise(loop.T)  # x_T ~ N(0, I)
    with no_grad():
        for i, t in loop.iterable:
            output = predict(model, x, t, batch_size, model_kwargs)
            eps, x0 = diffusion.split_prediction(output, x, t, clip_x0=clip_x0)
            loop.keep(i, t, x, x0)
            alpha_bar, alpha_bar_prev = alpha_bar_steps[i]  # at t = tau_i and t' = tau_{i+1}
            # Eq. 16; 0 at the last step (alpha_bar_prev = 1).
            sigma = (
                eta
                * math.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
                * math.sqrt(1.0 - alpha_bar / alpha_bar_prev)
            )
            direction = math.sqrt(max(1.0 - alpha_bar_prev - sigma * sigma, 0.0))
            x = math.sqrt(alpha_bar_prev) * x0 + direction * eps  # Eq. 12
            if sigma > 0.0:
                x = x + sigma * loop.noise(t)
    return loop.result(x)


def _check_eta(eta):
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not eta >= 0:
        raise ValueError(f"eta must be a number >= 0 (0: deterministic, 1: DDPM-like), got {eta!r}")


def _alpha_bar_steps(diffusion, sequence):
    """(alpha_bar_t, alpha_bar_prev) at each step t = tau_i of ``sequence``: alpha_bar_prev is at tau_{i+1}, 1 after the last.

    The schedule as Python floats once, so each step's coefficients are
    scalars (no float64 array meets the float32 samples, no device sync).
    """
    alpha_bars = [float(v) for v in B.to_numpy(diffusion.schedule.alpha_bars).tolist()]
    alpha_bar_prevs = [alpha_bars[t_next] for t_next in sequence[1:]] + [1.0]
    return [(alpha_bars[t], alpha_bar_prev) for t, alpha_bar_prev in zip(sequence, alpha_bar_prevs)]
