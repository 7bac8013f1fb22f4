"""The exact log-likelihood of a diffusion model through its probability-flow ODE (Song et al. 2021, Sec. 4.3).

Along a solution x(lambda) of dx/dlambda = F(x, lambda) (flow.py), the
instantaneous change of variables (Chen et al. 2018, Theorem 1) gives

    d log p_lambda(x(lambda)) / dlambda = -div F(x(lambda), lambda),

so integrating from the data (lambda_0, code step t = 0) down to the noise
(lambda_{T-1}, where p is the prior N(0, I)):

    log p_0(x_0) = log N(x_T; 0, I) + int_{lambda_0}^{lambda_{T-1}} div F dlambda.

Unlike the bound of Eq. 3 this is the model's exact density (up to the ODE's
discretisation and the prior mismatch at T, both small), the density of
the data at the first noise level of the schedule (sigma_1 = sqrt(beta_1)).

With F = alpha (x0_hat - alpha x) and x0_hat = c_x x + c_out output
(flow.x0_coefficients), div F = alpha (c_x - alpha) D + alpha c_out tr(d output / dx).
The trace comes from vector-Jacobian products of the model (tinydiff.autograd):
exactly, tr J = sum_d e_d^T J e_d from D of them (low-dimensional data), or by
the Hutchinson estimator tr J ~ z^T J z with Rademacher z (E[z z^T] = I),
one VJP per probe, the same z for the whole integration (as Song et al. and
FFJORD do), so the integral stays unbiased.

The ODE is integrated with Heun's method (the trapezoid rule, second order)
on the trained steps that ``solver_timesteps`` picks uniformly in lambda.
"""

from __future__ import annotations

import contextlib
import math

from .. import backend as B
from ..autograd import Tensor, is_grad_enabled
from ..backend import xp
from ..checks import check_choice, check_int
from .flow import SOLVER_SPACINGS, alpha_sigma, schedule_lambdas, solver_timesteps, x0_coefficients

LOG_2PI = math.log(2.0 * math.pi)


@contextlib.contextmanager
def _frozen(model):
    """The model's parameters stop requiring gradients inside the block: VJPs then skip the weights' gradients."""
    parameters = model.parameters() if hasattr(model, "parameters") else []
    previous = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad = False
    try:
        yield
    finally:
        for p, flag in zip(parameters, previous):
            p.requires_grad = flag


def _call(model, x, t, model_kwargs):
    """model(x, t) for one step t shared by every row: the int for ``accepts_scalar_t`` models, else (N,)."""
    t_arg = t if getattr(model, "accepts_scalar_t", False) else xp.full((x.shape[0],), t, dtype=xp.int64)
    return model(x, t_arg, **(model_kwargs or {}))


def _flat(a):
    return xp.reshape(a, (a.shape[0], -1))  # (N, D)


def drift_and_divergence(model, x, t, lam, prediction_type, probes, model_kwargs=None):
    """F(x, lambda_t) and div F at trained step t: (F (N, ...), div (P, N)) for P probes.

    ``probes`` is a list of P arrays like x (Hutchinson: one estimate of the
    trace per probe, z^T J z), or the string "exact" (the D one-hot vectors:
    the exact trace, returned as one row). The model must be differentiable
    in x through tinydiff.autograd (its output a Tensor that requires grad).
    """
    alpha, sigma = alpha_sigma(lam)
    c_x, c_out = x0_coefficients(prediction_type, alpha, sigma)
    x_in = Tensor(x, requires_grad=True)
    output = _call(model, x_in, t, model_kwargs)
    if not isinstance(output, Tensor) or not output.requires_grad:
        raise ValueError("log_likelihood needs vector-Jacobian products of the model: its output must be a "
                         "tinydiff.autograd Tensor that depends on x (a network from tinydiff.nn, or "
                         "oracle.MixtureDenoiser), not a plain array")
    n, dim = x.shape[0], math.prod(x.shape[1:])
    if probes == "exact":
        one_hots = [xp.reshape(xp.astype(xp.arange(dim) == d, x.dtype), (1, dim)) * xp.ones((n, 1), dtype=x.dtype)
                    for d in range(dim)]
        vectors, exact = [xp.reshape(u, tuple(x.shape)) for u in one_hots], True
    else:
        vectors, exact = probes, False
    estimates = []
    for k, z in enumerate(vectors):
        x_in.grad = None
        output.backward(z, retain_graph=k + 1 < len(vectors))
        z_J = _flat(x_in.grad)  # z^T (d output / dx), (N, D)
        estimates.append(xp.sum(z_J * _flat(z), axis=1))  # z^T J z, (N,)
    trace = xp.stack(estimates, axis=0)  # (P, N)
    if exact:
        trace = xp.sum(trace, axis=0, keepdims=True)  # sum_d e_d^T J e_d, (1, N)
    x0_hat = c_x * x + c_out * output.data
    F = alpha * (x0_hat - alpha * x)  # flow.probability_flow_drift
    divergence = alpha * (c_x - alpha) * dim + alpha * c_out * trace
    return F, divergence


def _integrate(model, diffusion, x, sequence, lambdas, probes, model_kwargs, progress):
    """Heun's method from the data (sequence[0] = 0) to the noise: (x_T, int div F dlambda per probe (P, N))."""
    prediction = diffusion.prediction_type
    F_a, div_a = drift_and_divergence(model, x, sequence[0], lambdas[sequence[0]], prediction, probes, model_kwargs)
    integral = xp.zeros_like(div_a)
    pairs = list(zip(sequence[:-1], sequence[1:]))
    if progress:
        from tqdm.auto import tqdm

        pairs = tqdm(pairs, desc="ode likelihood")
    for t_a, t_b in pairs:
        h = lambdas[t_b] - lambdas[t_a]  # < 0: towards the noise
        x_euler = x + h * F_a
        F_b, div_b = drift_and_divergence(model, x_euler, t_b, lambdas[t_b], prediction, probes, model_kwargs)
        x = x + h / 2.0 * (F_a + F_b)  # Heun (trapezoid) for x
        integral = integral + h / 2.0 * (div_a + div_b)  # and for the log-density
        if t_b != sequence[-1]:
            F_a, div_a = drift_and_divergence(model, x, t_b, lambdas[t_b], prediction, probes, model_kwargs)
    return x, integral


def _dequantize(x, levels, base):
    """Uniform dequantisation (Song et al.; Ho et al. Sec. 3.3 data on ``levels`` values in [-1, 1]).

    The level k = round((x + 1) / 2 (levels - 1)) becomes y = (k + u) / levels * 2 - 1 with u ~ U[0, 1) per
    value, keyed (seed, 1) per sample: a density on [-1, 1]^D whose -log p(y) + D log(levels / 2)
    bounds the discrete NLL in expectation.
    """
    k = xp.round((x + 1.0) / 2.0 * (levels - 1))
    u = B.default_rng((base, 1)).uniform(tuple(x.shape), dtype=x.dtype)
    return (k + u) / levels * 2.0 - 1.0


def _check_arguments(diffusion, steps, probes, levels, spacing, batch_size):
    if not is_grad_enabled():
        raise RuntimeError("log_likelihood takes vector-Jacobian products: call it outside autograd.no_grad()")
    check_int("steps", steps, minimum=1, maximum=diffusion.T - 1)
    check_int("probes", probes, minimum=1)
    check_int("levels", levels, minimum=2, allow_none=True)
    check_int("batch_size", batch_size, minimum=1, allow_none=True)
    check_choice("spacing", spacing, SOLVER_SPACINGS)


def log_likelihood(model, diffusion, x, rng, *, steps=100, exact_trace=False, probes=1, levels=None,
                   spacing="logsnr", batch_size=None, model_kwargs=None, progress=False):
    """log p(x_0) of each example by the probability-flow ODE, in nats and bits per dimension.

    The instantaneous change of variables (Chen et al. 2018) along the ODE
    (Song et al. 2021 Sec. 4.3): log p(x_0) = log N(x_T; 0, I) + int div F dlambda.

    x            (N, ...) data in the model's scale, as the first trained step sees it
    steps        Heun steps from t = 0 to t = T - 1 (2 steps + 1 model calls, each with
                 its VJPs), on trained steps spaced by ``spacing`` (default uniform in lambda)
    exact_trace  the exact divergence from D VJPs per call (2-D data) instead of Hutchinson's
    probes       Hutchinson vectors per example (their mean is the estimate; with 2 or more
                 the result has a per-example standard error "stderr")
    levels       data on ``levels`` values in [-1, 1] (256 for 8-bit images): the uniform
                 dequantisation of Song et al., and the NLL of the discrete data
    The random numbers (probes, dequantisation) are keyed (seed, i) per sample, as the
    samplers' are. Returns a dict of backend arrays, (N,) each unless said:
      "log_prob"      log p(y) in nats, y = x (or its dequantised version)
      "nll"           -log p(y) + D log(levels / 2) (just -log p(y) without levels)
      "bits_per_dim"  nll / (D ln 2)
      "prior"         log N(x_T; 0, I);   "x_T" (N, ...) the latent the ODE maps x to
      "stderr"        (with probes >= 2) the standard error of log_prob over the probes
    """
    _check_arguments(diffusion, steps, probes, levels, spacing, batch_size)
    x = B.asarray(x)
    base = rng.next_seed()
    if levels is not None:
        x = _dequantize(x, levels, base)
    n, dim = x.shape[0], math.prod(x.shape[1:])
    sequence = solver_timesteps(diffusion.schedule, steps + 1, spacing)[::-1]  # 0 .. T-1: data to noise
    lambdas = schedule_lambdas(diffusion.schedule)
    z_all = None if exact_trace else [  # Rademacher: +-1 with probability 1/2 each, keyed (seed, 2, probe)
        xp.astype(B.default_rng((base, 2, p)).uniform(tuple(x.shape), dtype=x.dtype) < 0.5, x.dtype) * 2.0 - 1.0
        for p in range(probes)
    ]
    chunk = batch_size or n
    latents, integrals = [], []
    with _frozen(model):
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            kwargs = {k: (v[rows, ...] if B.is_array(v) and v.ndim >= 1 and v.shape[0] == n else v)
                      for k, v in (model_kwargs or {}).items()}
            probes_here = "exact" if exact_trace else [z[rows, ...] for z in z_all]
            x_T, integral = _integrate(model, diffusion, x[rows, ...], sequence, lambdas, probes_here, kwargs, progress)
            latents.append(x_T)
            integrals.append(integral)
    x_T, integral = xp.concat(latents, axis=0), xp.concat(integrals, axis=1)  # (N, ...), (P, N)
    prior = -0.5 * xp.sum(_flat(x_T) ** 2 + LOG_2PI, axis=1)  # log N(x_T; 0, I)
    log_prob = prior + xp.mean(integral, axis=0)
    offset = dim * math.log(levels / 2.0) if levels is not None else 0.0
    result = {"log_prob": log_prob, "nll": offset - log_prob, "prior": prior, "x_T": x_T}
    result["bits_per_dim"] = result["nll"] / (dim * math.log(2.0))
    if integral.shape[0] >= 2:
        p = integral.shape[0]
        spread = xp.sum((integral - xp.mean(integral, axis=0)) ** 2, axis=0) / (p - 1)  # sample variance over probes
        result["stderr"] = xp.sqrt(spread / p)
    return result
