"""Sampling as solving the probability-flow ODE: DPM-Solver, DPM-Solver++ and EDM's Heun sampler.

The ODE, its log-SNR time and the time grids are in tinydiff.ode; the
update formulas of DPM-Solver are in tinydiff.ode.integrators. Here they are
wrapped as samplers with the calling conventions of ``ddim`` (clip_x0,
model_kwargs, batch_size, progress, return_trajectory, dtype): x_T is the
same array DDIM draws for the same seed (keyed (seed, T)), every time point
is a trained step, and ``steps`` counts network calls.

Every sampler ends as DDPM and DDIM do: its last time point is the first
trained step (code t = 0, paper t = 1), and the step from there to the
data (sigma = 0, lambda = +inf) is the first-order one, x_0 = x0_hat (the
exponential integrator's limit, and diffusers' final_sigmas_type="zero").
"""

from __future__ import annotations

import math
import numbers

from ..autograd import no_grad
from ..checks import check_choice, check_int
from ..ode.flow import SOLVER_SPACINGS, nearest_step, solver_timesteps
from ..ode.integrators import (
    first_order_update,
    multistep_second_update,
    multistep_third_update,
    schedule_nodes,
    singlestep_second_update,
    singlestep_third_update,
)
from .loop import SamplingLoop, check_model_shape, predict

PREDICTIONS = ("data", "noise")
METHODS = ("multistep", "singlestep")
# Where the intermediate points of one singlestep step sit, as fractions of its lambda interval.
SINGLESTEP_RATIOS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def singlestep_orders(steps, order):
    """The order of each step of a singlestep solver that makes ``steps`` network calls in all.

    One call goes to the final step (to x0_hat at t = 0); the others are spent
    in steps of ``order`` calls each, the remainder in one lower-order step at
    the end (as DPM-Solver's reference code does).
    """
    calls = steps - 1
    return [order] * (calls // order) + ([calls % order] if calls % order else [])


def intermediate_steps(lambdas, t_a, t_b, ratios):
    """Trained steps strictly between t_a > t_b nearest lambda_a + r (lambda_b - lambda_a) for each r.

    Fewer are returned (so the step drops to a lower order) when fewer than
    len(ratios) trained steps lie strictly between t_a and t_b.
    """
    ratios = ratios[: max(0, t_a - t_b - 1)]
    picked, upper = [], t_a - 1
    for k, r in enumerate(ratios):
        target = lambdas[t_a] + r * (lambdas[t_b] - lambdas[t_a])
        lowest = t_b + len(ratios) - k  # room for the later ones below it
        step = min(max(nearest_step(lambdas, target), lowest), upper)
        picked.append(step)
        upper = step - 1
    return picked


def _check_solver_arguments(diffusion, steps, order, prediction, method, spacing, max_order=3):
    check_int("steps", steps, minimum=1, maximum=diffusion.T)
    check_int("order", order, minimum=1, maximum=max_order)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("method", method, METHODS)
    check_choice("spacing", spacing, SOLVER_SPACINGS)
    if prediction == "noise" and float(diffusion.schedule.alpha_bars[diffusion.T - 1]) == 0.0:
        raise ValueError("prediction 'noise' cannot start from a zero-terminal-SNR schedule: its first step divides "
                         "by alpha_T = 0; use prediction='data' (DPM-Solver++)")


def dpm_solver(
    model,
    diffusion,
    shape,
    rng,
    *,
    steps=20,
    order=2,
    prediction="data",
    method="multistep",
    spacing="logsnr",
    clip_x0=False,
    progress=False,
    return_trajectory=False,
    every=None,
    batch_size=None,
    model_kwargs=None,
    dtype=None,
):
    """DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b) in ``steps`` network calls.

    prediction  "data": DPM-Solver++, the exponential integrator of the data
                form, on x0_hat (suits x0 models, clipping and guidance);
                "noise": DPM-Solver, the noise form, on eps_hat.
    method      "multistep": one call per time point, the order built from the
                previous points' predictions (DPM-Solver++(2M), (3M)); the
                first steps use lower orders until enough are known.
                "singlestep": extra calls inside each step (DPM-Solver-2, -3,
                DPM-Solver++(2S), (3S)); ``steps`` calls are split into steps
                of ``order`` calls, the remainder in a lower-order step.
    order       1, 2 or 3. Order 1 is DDIM with eta = 0 (the same samples).
    spacing     the time points: "logsnr" (uniform in lambda), "time_uniform"
                (uniform in t; DDIM's "linspace" steps) or "karras" (rho = 7);
                see ode.solver_timesteps. Each is a trained step, and the
                solver uses its exact lambda.
    Other arguments and the return value as in ``ddim``; the trajectory holds
    x and x0_hat at each time point where the model is called between steps.
    """
    _check_solver_arguments(diffusion, steps, order, prediction, method, spacing)
    orders = [order] * (steps - 1) if method == "multistep" else singlestep_orders(steps, order)
    sequence = solver_timesteps(diffusion.schedule, len(orders) + 1, spacing)
    name = ("dpm-solver++" if prediction == "data" else "dpm-solver") + f" {order}{method[0].upper()}"
    loop = SamplingLoop(diffusion, shape, rng, sequence, dtype, progress, return_trajectory, every, batch_size, name)
    check_model_shape(model, loop.shape)
    nodes = schedule_nodes(diffusion.schedule)

    def evaluate(x, node):  # (eps_hat, x0_hat) at a time point
        output = predict(model, x, node.t, batch_size, model_kwargs)
        return diffusion.split_prediction(output, x, node.t, clip_x0=clip_x0)

    with no_grad():
        x = _solve(loop, loop.noise(loop.T), sequence, orders, nodes, evaluate, prediction, method)  # from x_T
    return loop.result(x)


def _solve(loop, x, sequence, orders, nodes, evaluate, prediction, method):
    """Step from x_T through the time points ``sequence``; the last step, to sigma = 0, is x0_hat."""

    def solver_input(x, node):  # what the solver integrates: x0_hat (data form) or eps_hat (noise form)
        eps, x0 = evaluate(x, node)
        return x0 if prediction == "data" else eps

    lambdas = [node.lam for node in nodes]
    history = []  # (node, m) of the latest time points, newest last (multistep)
    for i, t in loop.iterable:
        eps, x0 = evaluate(x, nodes[t])
        loop.keep(i, t, x, x0)
        if i == len(sequence) - 1:
            return x0  # the last step, to sigma = 0, is x0_hat (first order, as DDIM's)
        m, here, there = (x0 if prediction == "data" else eps), nodes[t], nodes[sequence[i + 1]]
        if method == "multistep":
            history = (history + [(here, m)])[-orders[i]:]
            x = _multistep_step(x, history, there, prediction)
        else:
            inner = [nodes[s] for s in intermediate_steps(lambdas, t, there.t, SINGLESTEP_RATIOS[orders[i]])]
            x = _singlestep_step(x, m, here, inner, there, solver_input, prediction)
    return x


def _multistep_step(x, history, t, prediction):
    """One multistep step to node t from ``history`` [(node, m), ...] (newest last): order len(history)."""
    (s0, m0) = history[-1]
    if len(history) == 1:
        return first_order_update(x, m0, s0, t, prediction)
    (s1, m1) = history[-2]
    if len(history) == 2:
        return multistep_second_update(x, m0, m1, t, s0, s1, prediction)
    (s2, m2) = history[-3]
    return multistep_third_update(x, m0, m1, m2, t, s0, s1, s2, prediction)


def _singlestep_step(x, m, s, inner, t, solver_input, prediction):
    """One singlestep step from node s to node t through the intermediate nodes ``inner`` (0, 1 or 2 of them)."""
    if not inner:
        return first_order_update(x, m, s, t, prediction)
    if len(inner) == 1:
        return singlestep_second_update(x, m, s, inner[0], t, solver_input, prediction)
    return singlestep_third_update(x, m, s, inner[0], inner[1], t, solver_input, prediction)


def _nearest_sigma_step(nodes, sigma):
    """The trained step whose EDM sigma = e^{-lambda} is nearest ``sigma`` in log (EDM's round_sigma)."""
    return nearest_step([node.lam for node in nodes], -math.log(sigma))


def heun(model, diffusion, shape, rng, *, steps=35, rho=7.0, sigma_max=80.0, churn=0.0, s_tmin=0.0, s_tmax=math.inf,
         s_noise=1.0, clip_x0=False, progress=False, return_trajectory=False, every=None, batch_size=None,
         model_kwargs=None, dtype=None):
    """Karras et al. 2022 (EDM): Heun's second-order method, Algorithm 1 (Algorithm 2 with ``churn`` > 0).

    EDM's variables on our VP models: the noise level sigma = sqrt((1 - alpha_bar)
    / alpha_bar) = e^{-lambda}, the state x~ = x / alpha (so x~ = x_0 + sigma eps)
    and the denoiser D(x~; sigma) = x0_hat(alpha x~, t). The ODE is
    dx~/dsigma = (x~ - D(x~; sigma)) / sigma (EDM Eq. 3 with sigma(t) = t), and each
    step from sigma_i to sigma_{i+1} is

        d_i = (x~_i - D(x~_i; sigma_i)) / sigma_i,   x~' = x~_i + (sigma_{i+1} - sigma_i) d_i      (Euler)
        d'  = (x~' - D(x~'; sigma_{i+1})) / sigma_{i+1}
        x~_{i+1} = x~_i + (sigma_{i+1} - sigma_i) (d_i / 2 + d' / 2)                               (Heun)

    on N noise levels with Karras's rho = 7 spacing (EDM Eq. 5) from sigma_max
    down to the first trained step, each rounded to a trained step as EDM does
    for discrete-time models, then an Euler step to sigma_N = 0, which lands
    on D = x0_hat. ``sigma_max`` is EDM's 80 for VP models (the schedule's own
    sigma_T when that is smaller; math.inf starts at t = T - 1, as the other
    solvers do): a cosine schedule's last step has sigma near 2e4 (its beta is
    clipped at 0.999), and a rho = 7 grid from there spends most of its levels
    above sigma = 1000. The ODE starts from x~ = x_T / alpha at that step, with
    DDIM's x_T ~ N(0, I) (EDM's sigma_max n, up to the sqrt(1 + sigma^2) of VP). That is 2N - 1 network
    calls: N = (steps + 1) // 2, so all ``steps`` calls are made when steps is
    odd and one fewer when it is even (EDM's 35 calls are N = 18).

    churn (S_churn, default 0: deterministic): Algorithm 2 first raises the
    noise level of x~_i to sigma^ = (1 + gamma) sigma_i, gamma = min(S_churn / N,
    sqrt(2) - 1) for sigma_i in [s_tmin, s_tmax], by adding fresh noise of
    variance sigma^2 - sigma_i^2 (times s_noise), keyed by (seed, t_i) per
    sample; sigma^ is rounded to a trained step too.
    Other arguments and the return value as in ``ddim``.
    """
    _check_heun_arguments(diffusion, steps, rho, churn, s_tmin, s_noise)
    levels = (steps + 1) // 2
    sequence = solver_timesteps(diffusion.schedule, levels, "karras", rho, sigma_max)
    loop = SamplingLoop(diffusion, shape, rng, sequence, dtype, progress, return_trajectory, every, batch_size, "heun")
    check_model_shape(model, loop.shape)
    nodes = schedule_nodes(diffusion.schedule)
    sigma = [node.sigma / node.alpha for node in nodes]  # EDM's sigma of every trained step
    gamma = min(churn / levels, math.sqrt(2.0) - 1.0)
    D = _edm_denoiser(model, diffusion, nodes, clip_x0, batch_size, model_kwargs)
    with no_grad():
        x = _heun_steps(loop, loop.noise(loop.T) / nodes[sequence[0]].alpha, sequence, nodes, sigma, D,
                        (gamma, s_tmin, s_tmax, s_noise))
    return loop.result(x)


def _edm_denoiser(model, diffusion, nodes, clip_x0, batch_size, model_kwargs):
    """EDM's denoiser D(x~; sigma_t) = x0_hat(alpha_t x~, t) of the VP model, as D(x_tilde, t) at a trained step t.

    x = alpha_t x~ is the VP state at step t (x~ = x_0 + sigma eps); ``nodes``
    are the schedule's (tinydiff.ode.integrators.schedule_nodes).
    """

    def D(x_tilde, t):
        x = nodes[t].alpha * x_tilde
        eps, x0 = diffusion.split_prediction(predict(model, x, t, batch_size, model_kwargs), x, t, clip_x0=clip_x0)
        return x0

    return D


def _check_heun_arguments(diffusion, steps, rho, churn, s_tmin, s_noise):
    check_int("steps", steps, minimum=1, maximum=2 * diffusion.T - 1)
    for name, value in (("rho", rho), ("churn", churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if rho == 0:
        raise ValueError("rho must be > 0 (Karras et al. use 7)")
    if float(diffusion.schedule.alpha_bars[diffusion.T - 1]) == 0.0:
        raise ValueError("heun cannot start from a zero-terminal-SNR schedule (sigma_max = inf); "
                         "use dpm_solver with prediction='data'")


def _heun_steps(loop, x, sequence, nodes, sigma, D, churn_settings):
    """EDM Algorithm 1 (2 with churn) from x~_0 (the VP prior in EDM's variable) to sigma = 0."""
    gamma, s_tmin, s_tmax, s_noise = churn_settings
    for i, t in loop.iterable:
        t_hat = t
        if gamma > 0 and s_tmin <= sigma[t] <= s_tmax:  # Algorithm 2: more noise first
            t_hat = max(t, min(_nearest_sigma_step(nodes, (1.0 + gamma) * sigma[t]), loop.T - 1))
            x = x + math.sqrt(sigma[t_hat] ** 2 - sigma[t] ** 2) * s_noise * loop.noise(t)
        denoised = D(x, t_hat)
        loop.keep(i, t_hat, nodes[t_hat].alpha * x, denoised)
        if i == len(sequence) - 1:
            return denoised  # Euler to sigma = 0: x~ + (0 - sigma) d = D(x~; sigma)
        t_next = sequence[i + 1]
        d = (x - denoised) / sigma[t_hat]
        x_euler = x + (sigma[t_next] - sigma[t_hat]) * d
        d_next = (x_euler - D(x_euler, t_next)) / sigma[t_next]
        x = x + (sigma[t_next] - sigma[t_hat]) * (0.5 * d + 0.5 * d_next)
    return x
