"""The probability-flow ODE of the VP diffusion, written in log-SNR time lambda.

Song et al. 2021 (Eq. 13): the SDE of the forward process has an ODE with the
same marginals q(x_t),

    dx = [f(t) x - 1/2 g(t)^2 grad log q_t(x)] dt.

For our (VP) diffusion, x_t = alpha_t x_0 + sigma_t eps with alpha_t =
sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) (Eq. 4), and Lu et al.
2022 (DPM-Solver) change the time variable to the half log-SNR

    lambda_t = log(alpha_t / sigma_t)      (so alpha_lambda^2 = sigmoid(2 lambda),
                                            sigma_lambda^2 = sigmoid(-2 lambda)),

which turns the ODE into

    dx/dlambda = sigma_lambda^2 x - sigma_lambda eps_hat(x, lambda)            (noise form)
               = alpha_lambda (x0_hat(x, lambda) - alpha_lambda x)          (data form)

(f = dlog alpha/dt, g^2 = -2 sigma^2 dlambda/dt and grad log q = -eps_hat / sigma;
dlog alpha/dlambda = sigma^2 and alpha^2 + sigma^2 = 1). Lambda runs from
lambda_T (noise, about -5 for the linear schedule) up to lambda_1 (data, about
+4.6): sampling integrates upwards, the likelihood downwards. Its exact
solution over one step from lambda_s to lambda_t, h = lambda_t - lambda_s, is
(DPM-Solver Eq. 3.4, and its data form in DPM-Solver++)

    x_t = (alpha_t / alpha_s) x_s - alpha_t  int e^{-lambda} eps_hat dlambda
        = (sigma_t / sigma_s) x_s + sigma_t  int e^{lambda}  x0_hat  dlambda.

Holding x0_hat at its value at lambda_s gives the first-order step
x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0_hat, and since
(sigma_t / sigma_s)(x_s - alpha_s x0_hat) = sigma_t eps_hat this is
x_t = alpha_t x0_hat + sigma_t eps_hat: DDIM with eta = 0 (DDIM Eq. 12). The
same step is Euler's method for y = x / sigma in the variable e^lambda, since
dy/d(e^lambda) = x0_hat.

Time points. Our models know the T trained steps only (code t = paper t - 1,
an int). The solvers therefore take their time points among the trained
steps: a spacing (uniform in lambda, uniform in t, or Karras et al.'s
rho = 7 spacing of sigma = e^{-lambda}) names target points, each becomes the
nearest trained step in lambda (EDM rounds its sigmas to the trained ones in
the same way for discrete-time models), and the solver uses that step's
exact lambda. A solver is then a consistent method on a slightly uneven
grid, and the model is only ever called at a step it was trained on.
"""

from __future__ import annotations

import bisect
import math

from .. import backend as B
from ..checks import check_choice, check_int

SOLVER_SPACINGS = ("logsnr", "time_uniform", "karras")


def schedule_lambdas(schedule):
    """lambda_t = log(alpha_t / sigma_t) = 1/2 log SNR_t at every trained step, as a list of T floats.

    Decreasing in t: lambda[0] (paper t = 1) is the cleanest, lambda[T - 1] the
    noisiest (-inf for a zero-terminal-SNR schedule).
    """
    return [0.5 * float(v) for v in B.to_numpy(schedule.log_snr).tolist()]


def alpha_sigma(lam):
    """(alpha_lambda, sigma_lambda) of the VP diffusion at half log-SNR lambda: alpha^2 = sigmoid(2 lambda).

    sigma^2 = sigmoid(-2 lambda) = 1 - alpha^2; lambda = +inf gives (1, 0)
    (the data), -inf gives (0, 1) (pure noise). Written with exp of
    -2|lambda| so neither end overflows.
    """
    if lam >= 0:
        e = math.exp(-2.0 * lam)  # e^{-2 lambda}, in (0, 1]
        return 1.0 / math.sqrt(1.0 + e), math.sqrt(e / (1.0 + e))
    e = math.exp(2.0 * lam)
    return math.sqrt(e / (1.0 + e)), 1.0 / math.sqrt(1.0 + e)


def x0_coefficients(prediction_type, alpha, sigma):
    """(c_x, c_out) with x0_hat = c_x x_t + c_out output, for an eps, x0 or v prediction.

    eps: x0_hat = (x_t - sigma eps) / alpha    (Eq. 15)
    x0:  x0_hat = output
    v:   x0_hat = alpha x_t - sigma v          (Salimans and Ho 2022)
    Every parameterisation is affine in the output, so the drift and its
    divergence follow from the raw model output by these two numbers.
    """
    check_choice("prediction_type", prediction_type, ("eps", "x0", "v"))
    if prediction_type == "eps":
        return 1.0 / alpha, -sigma / alpha
    if prediction_type == "x0":
        return 0.0, 1.0
    return alpha, -sigma


def probability_flow_drift(output, x, lam, prediction_type="x0"):
    """dx/dlambda = alpha_lambda (x0_hat - alpha_lambda x) = sigma_lambda^2 x - sigma_lambda eps_hat.

    The probability-flow ODE (Song et al. 2021, Eq. 13) of the VP diffusion in
    half log-SNR time lambda = log(alpha / sigma) (Lu et al. 2022), from a model
    ``output`` at x of any prediction type (eps, x0, v): x0_hat comes from
    ``x0_coefficients``. lambda may be any real number, so an exact denoiser
    that can be evaluated between trained steps gives the exact ODE.
    Works on arrays and on Tensors (the divergence of the likelihood uses it).
    """
    alpha, sigma = alpha_sigma(lam)
    c_x, c_out = x0_coefficients(prediction_type, alpha, sigma)
    x0_hat = c_x * x + c_out * output
    return alpha * (x0_hat - alpha * x)


def drift(model, diffusion, x, t, model_kwargs=None):
    """The drift dx/dlambda of the probability-flow ODE at trained step t (0-indexed), from ``model(x, t)``.

    ``probability_flow_drift`` at lambda_t = log(alpha_t / sigma_t) of the
    diffusion's schedule, with its prediction type.
    """
    from ..autograd import unwrap

    t = check_int("t", t, minimum=0, maximum=diffusion.T - 1)
    output = B.asarray(unwrap(model(x, t, **(model_kwargs or {}))))
    return probability_flow_drift(output, x, schedule_lambdas(diffusion.schedule)[t], diffusion.prediction_type)


def nearest_step(lambdas, target):
    """The trained step whose lambda is nearest ``target`` (lambdas decreasing in t)."""
    ascending = lambdas[::-1]  # increasing in lambda: index T - 1 - t
    k = bisect.bisect_left(ascending, target)
    best = min((j for j in (k - 1, k) if 0 <= j < len(ascending)), key=lambda j: abs(ascending[j] - target))
    return len(lambdas) - 1 - best


def _evenly_spent(lambdas, first, n, coordinate, inverse):
    """``n`` trained steps from ``first`` to 0, each nearest an even split of what is left of the range.

    coordinate(lambda) is the variable in which the grid is even (lambda itself, or Karras's
    sigma^(1/rho)), inverse its inverse. After point i at step t_i, point i + 1 is the trained step
    nearest coordinate(lambda_{t_i}) + (coordinate(lambda_0) - coordinate(lambda_{t_i})) / (n - 1 - i),
    strictly below t_i and high enough to leave a step for each later point. On a fine schedule this
    is the even grid; where the trained steps are coarser than the grid (the last steps before the
    data; a cosine schedule's first step, its beta clipped at 0.999, which spans 3.5 in lambda) no
    call is spent twice on one step, and the rest of the grid stays even.
    """
    steps, end = [first], coordinate(lambdas[0])
    for i in range(1, n):
        t = steps[-1]
        here = coordinate(lambdas[t] if math.isfinite(lambdas[t]) else lambdas[t - 1])  # zero terminal SNR: -inf
        target = inverse(here + (end - here) / (n - i))
        steps.append(min(max(nearest_step(lambdas, target), n - 1 - i), t - 1))
    return steps


def solver_timesteps(schedule, n, spacing="logsnr", rho=7.0, sigma_max=None):
    """``n`` strictly decreasing trained steps from T - 1 (or ``sigma_max``'s step) to 0: an ODE solver's time points.

    logsnr        uniform in lambda between lambda_{T-1} and lambda_0 (DPM-Solver's
                  choice, "logSNR")
    time_uniform  uniform in t: round(linspace(T - 1, 0, n)) (the same steps as
                  DDIM's "linspace")
    karras        Karras et al. 2022, Eq. 5: sigma_i = (sigma_max^(1/rho) + i / (n - 1)
                  (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho with sigma = e^{-lambda}
                  = sqrt((1 - alpha_bar) / alpha_bar), rho = 7
    Each point is the trained step nearest its target in lambda, the targets
    spread evenly over what is left of the range after the previous point
    (``_evenly_spent``), so no call is spent twice where trained steps are
    coarser than the grid.
    ``sigma_max`` (EDM's sigma = e^{-lambda}; Karras et al. use 80 for VP models)
    starts the grid at the trained step nearest it instead of at T - 1.
    """
    T = schedule.T
    lambdas = schedule_lambdas(schedule)
    first = T - 1 if sigma_max is None else min(nearest_step(lambdas, -math.log(sigma_max)), T - 1)
    n = check_int("steps", n, minimum=1, maximum=first + 1)
    check_choice("spacing", spacing, SOLVER_SPACINGS)
    if n == 1:
        return [first]
    if spacing == "time_uniform":
        return [int(round(i * first / (n - 1))) for i in range(n)][::-1]
    if spacing == "logsnr":
        return _evenly_spent(lambdas, first, n, lambda lam: lam, lambda c: c)
    return _evenly_spent(lambdas, first, n, lambda lam: math.exp(-lam / rho), lambda c: -rho * math.log(c))
