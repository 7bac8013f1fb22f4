"""Sampling as solving an ODE, and the exact likelihood: the probability-flow ODE of the VP diffusion.

    flow.py         the ODE in half log-SNR time lambda (Song et al. 2021, Eq. 13;
                    Lu et al. 2022, DPM-Solver Eq. 3.4): lambda_t of a schedule, the drift
                    dx/dlambda from an eps, x0 or v prediction, DDIM (eta = 0) as its
                    first-order exponential-integrator step, the solvers' time grids
    integrators.py  one step of DPM-Solver (noise form) and DPM-Solver++ (data form):
                    orders 1 to 3, singlestep and multistep
    likelihood.py   log p(x_0) through the ODE with the instantaneous change of
                    variables, the divergence exact or by Hutchinson's estimator

The samplers built on these (``dpm_solver``, ``heun``) are in tinydiff.samplers.
Timesteps are 0-indexed, code t = paper t - 1.
"""

from .flow import (
    SOLVER_SPACINGS,
    alpha_sigma,
    drift,
    nearest_step,
    probability_flow_drift,
    schedule_lambdas,
    solver_timesteps,
    x0_coefficients,
)
from .integrators import (
    Node,
    first_order_update,
    multistep_second_update,
    multistep_third_update,
    schedule_nodes,
    singlestep_second_update,
    singlestep_third_update,
)
from .likelihood import drift_and_divergence, log_likelihood

__all__ = [
    "Node", "SOLVER_SPACINGS", "alpha_sigma", "drift", "drift_and_divergence", "first_order_update",
    "log_likelihood", "multistep_second_update", "multistep_third_update", "nearest_step",
    "probability_flow_drift", "schedule_lambdas", "schedule_nodes", "singlestep_second_update", "singlestep_third_update",
    "solver_timesteps", "x0_coefficients",
]
