"""One step of DPM-Solver (Lu et al. 2022) and DPM-Solver++ (Lu et al. 2022b): exponential integrators.

Each step goes from lambda_s to lambda_t, h = lambda_t - lambda_s > 0, by the
exact solution of the probability-flow ODE (DPM-Solver Eq. 3.4, see flow.py)
with the model's prediction m replaced by a Taylor polynomial in lambda:

    noise form (DPM-Solver,   m = eps_hat):  x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) m_s + ...
    data form  (DPM-Solver++, m = x0_hat):   x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) m_s + ...

The "..." are the higher-order terms: a singlestep method evaluates the
model at intermediate points s < s1 (< s2) < t of its own step; a multistep
method re-uses the predictions of the previous steps (Adams-Bashforth-like).
r is a ratio of lambda intervals. The formulas hold for any r in (0, 1), so
intermediate points may be trained steps rather than exactly 1/2 or 1/3, 2/3
of the way (the solvers use the exact lambdas of the steps they call).

A time point is a ``Node(t, lam, alpha, sigma)``: the trained step and its
lambda, alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). ``expm1`` keeps
e^h - 1 accurate for small h.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .. import backend as B
from .flow import schedule_lambdas


class Node(NamedTuple):
    """A solver's time point: trained step t, half log-SNR lam = log(alpha / sigma), alpha and sigma."""

    t: int
    lam: float
    alpha: float
    sigma: float


def schedule_nodes(schedule):
    """Node(t, lambda_t, alpha_t, sigma_t) for every trained step (alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar))."""
    alpha_bars = [float(v) for v in B.to_numpy(schedule.alpha_bars).tolist()]
    lambdas = schedule_lambdas(schedule)
    return [Node(t, lam, math.sqrt(ab), math.sqrt(1.0 - ab)) for t, (lam, ab) in enumerate(zip(lambdas, alpha_bars))]


def first_order_update(x, m, s, t, prediction):
    """DPM-Solver-1 / DPM-Solver++(1), which is DDIM with eta = 0 (Eq. 12).

    noise: x_t = (alpha_t / alpha_s) x_s - sigma_t (e^h - 1) eps_s
    data:  x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0_s
    """
    h = t.lam - s.lam
    if prediction == "data":
        return (t.sigma / s.sigma) * x - t.alpha * math.expm1(-h) * m
    return (t.alpha / s.alpha) * x - t.sigma * math.expm1(h) * m


def multistep_second_update(x, m0, m1, t, s0, s1, prediction):
    """DPM-Solver++(2M) (data) and multistep DPM-Solver-2 (noise), from the predictions at s0 and s1 < s0.

    r = h_prev / h with h = lambda_t - lambda_s0, h_prev = lambda_s0 - lambda_s1;
    D = (1 + 1/(2r)) m_s0 - 1/(2r) m_s1, then
    data:  x_t = (sigma_t / sigma_s0) x - alpha_t (e^{-h} - 1) D
    noise: x_t = (alpha_t / alpha_s0) x - sigma_t (e^h - 1) D
    """
    h, h_prev = t.lam - s0.lam, s0.lam - s1.lam
    r = h_prev / h
    D = (1.0 + 1.0 / (2.0 * r)) * m0 - 1.0 / (2.0 * r) * m1
    if prediction == "data":
        return (t.sigma / s0.sigma) * x - t.alpha * math.expm1(-h) * D
    return (t.alpha / s0.alpha) * x - t.sigma * math.expm1(h) * D


def multistep_third_update(x, m0, m1, m2, t, s0, s1, s2, prediction):
    """DPM-Solver++(3M) (data) and multistep DPM-Solver-3 (noise), from predictions at s0 > s1 > s2 (in lambda).

    The Taylor terms of m about lambda_s0: with r0 = (lambda_s0 - lambda_s1) / h,
    r1 = (lambda_s1 - lambda_s2) / h and the scaled differences D1_0 = (m0 - m1) / r0,
    D1_1 = (m1 - m2) / r1,
        D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1)   ~ h m'
        D2 = 2 (D1_0 - D1_1) / (r0 + r1)          ~ h^2 m''
    and the exact integrals of each term:
    data:  x_t = (sigma_t / sigma_s0) x - alpha_t phi_1 m0 + alpha_t phi_2 D1 - alpha_t phi_3 D2,
           phi_1 = e^{-h} - 1, phi_2 = phi_1 / h + 1, phi_3 = phi_2 / h - 1/2
    noise: x_t = (alpha_t / alpha_s0) x - sigma_t phi_1 m0 - sigma_t phi_2 D1 - sigma_t phi_3 D2,
           phi_1 = e^h - 1, phi_2 = phi_1 / h - 1, phi_3 = phi_2 / h - 1/2
    (-phi_3 h^2 m'' is the integral of the Taylor term h^2/2 m'': phi_3 ~ -h/6 for small h).
    DPM-Solver's reference code, and diffusers' DPMSolverMultistepScheduler after it (the
    copies we read), take D2 = (D1_0 - D1_1) / (r0 + r1), half of h^2 m'': that leaves the
    h^3 term half its size and the method second order. The order test (tests/test_ode.py)
    measures slopes of 2.01 (data) and 2.09 (noise) with their D2, 2.86 and 3.14 with this one.
    """
    h = t.lam - s0.lam
    r0, r1 = (s0.lam - s1.lam) / h, (s1.lam - s2.lam) / h
    D1_0, D1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    D1 = D1_0 + r0 / (r0 + r1) * (D1_0 - D1_1)
    D2 = 2.0 * (D1_0 - D1_1) / (r0 + r1)  # h^2 m'': the 2 the reference code lacks (see the docstring)
    if prediction == "data":
        phi_1 = math.expm1(-h)
        phi_2 = phi_1 / h + 1.0
        phi_3 = phi_2 / h - 0.5
        return (t.sigma / s0.sigma) * x - t.alpha * phi_1 * m0 + t.alpha * phi_2 * D1 - t.alpha * phi_3 * D2
    phi_1 = math.expm1(h)
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    return (t.alpha / s0.alpha) * x - t.sigma * phi_1 * m0 - t.sigma * phi_2 * D1 - t.sigma * phi_3 * D2


def singlestep_second_update(x, m, s, s1, t, predict, prediction):
    """DPM-Solver-2 (noise) and DPM-Solver++(2S) (data): one model call at s1 between s and t.

    r1 = (lambda_s1 - lambda_s) / h;
    noise: u = (alpha_s1 / alpha_s) x - sigma_s1 (e^{r1 h} - 1) eps_s,
           x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps_s - sigma_t / (2 r1) (e^h - 1) (eps(u, s1) - eps_s)
    data:  u = (sigma_s1 / sigma_s) x - alpha_s1 (e^{-r1 h} - 1) x0_s,
           x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) x0_s - alpha_t / (2 r1) (e^{-h} - 1) (x0(u, s1) - x0_s)
    ``predict(u, node)`` returns the model's m (eps or x0) at u.
    """
    h = t.lam - s.lam
    r1 = (s1.lam - s.lam) / h
    if prediction == "data":
        u = (s1.sigma / s.sigma) * x - s1.alpha * math.expm1(-r1 * h) * m
        m1 = predict(u, s1)
        phi_1 = math.expm1(-h)
        return (t.sigma / s.sigma) * x - t.alpha * phi_1 * m - t.alpha / (2.0 * r1) * phi_1 * (m1 - m)
    u = (s1.alpha / s.alpha) * x - s1.sigma * math.expm1(r1 * h) * m
    m1 = predict(u, s1)
    phi_1 = math.expm1(h)
    return (t.alpha / s.alpha) * x - t.sigma * phi_1 * m - t.sigma / (2.0 * r1) * phi_1 * (m1 - m)


def singlestep_third_update(x, m, s, s1, s2, t, predict, prediction):
    """DPM-Solver-3 (noise) and DPM-Solver++(3S) (data): model calls at s1 and s2 between s and t.

    r1 = (lambda_s1 - lambda_s) / h, r2 = (lambda_s2 - lambda_s) / h (1/3 and 2/3 in the paper);
    noise: u1 = (alpha_s1 / alpha_s) x - sigma_s1 (e^{r1 h} - 1) eps_s,  D1 = eps(u1, s1) - eps_s,
           u2 = (alpha_s2 / alpha_s) x - sigma_s2 (e^{r2 h} - 1) eps_s
                - sigma_s2 (r2 / r1) ((e^{r2 h} - 1) / (r2 h) - 1) D1,          D2 = eps(u2, s2) - eps_s,
           x_t = (alpha_t / alpha_s) x - sigma_t (e^h - 1) eps_s - sigma_t / r2 ((e^h - 1) / h - 1) D2
    data:  the same with (alpha, sigma, h) -> (sigma, alpha, -h) and the signs of the
           correction terms turned: u2 = ... + alpha_s2 (r2 / r1) ((e^{-r2 h} - 1) / (r2 h) + 1) D1,
           x_t = (sigma_t / sigma_s) x - alpha_t (e^{-h} - 1) x0_s + alpha_t / r2 ((e^{-h} - 1) / h + 1) D2
    """
    h = t.lam - s.lam
    r1, r2 = (s1.lam - s.lam) / h, (s2.lam - s.lam) / h
    if prediction == "data":
        u1 = (s1.sigma / s.sigma) * x - s1.alpha * math.expm1(-r1 * h) * m
        D1 = predict(u1, s1) - m
        u2 = ((s2.sigma / s.sigma) * x - s2.alpha * math.expm1(-r2 * h) * m
              + s2.alpha * (r2 / r1) * (math.expm1(-r2 * h) / (r2 * h) + 1.0) * D1)
        D2 = predict(u2, s2) - m
        return ((t.sigma / s.sigma) * x - t.alpha * math.expm1(-h) * m
                + t.alpha / r2 * (math.expm1(-h) / h + 1.0) * D2)
    u1 = (s1.alpha / s.alpha) * x - s1.sigma * math.expm1(r1 * h) * m
    D1 = predict(u1, s1) - m
    u2 = ((s2.alpha / s.alpha) * x - s2.sigma * math.expm1(r2 * h) * m
          - s2.sigma * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1.0) * D1)
    D2 = predict(u2, s2) - m
    return (t.alpha / s.alpha) * x - t.sigma * math.expm1(h) * m - t.sigma / r2 * (math.expm1(h) / h - 1.0) * D2
