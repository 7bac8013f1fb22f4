"""The Gaussian diffusion of Ho et al. 2020: forward process, posterior, parameterisations.

``GaussianDiffusion(schedule)`` holds a Schedule and implements, equation by
equation:

    q_step            one forward step q(x_t | x_{t-1})                 Eq. 2
    q_sample          x_t from x_0 in one jump q(x_t | x_0)             Eq. 4, 9
    q_posterior       q(x_{t-1} | x_t, x_0): mean and beta_tilde        Eq. 6, 7
    predict_x0_from_eps   x_0 from predicted noise                      Eq. 15
    mean_from_eps     the reverse mean from predicted noise             Eq. 11
    v_target, predict_*_from_v   v-prediction (Salimans and Ho 2022)
    training_loss     Algorithm 1 with weights simple (Eq. 14), vlb (Eq. 12),
                      min_snr (Hang et al. 2023)                 (objective.py)
    vlb               the bound L of Eq. 3 split as in Eq. 5, with the
                      discretized decoder of Eq. 13, in nats and bits/dim (bound.py)

Timesteps are 0-indexed: code t = paper t - 1, so ``t = 0`` is the paper's
first step (alpha_bar_1 = 1 - beta_1) and ``t = T - 1`` the last. Where a
formula reads alpha_bar_{t-1}, the code reads ``schedule.alpha_bars_prev[t]``.

Arrays ``x`` are (N, D) or (N, ...); ``t`` is an int64 array of shape (N,) or
a Python int (the same step for every row). The coefficient of step t is
gathered per row and reshaped to (N, 1, ...) so it broadcasts over x (for an
int t, one value shaped (1, 1, ...), which broadcasts the same way). Every
coefficient is cast to x's dtype (float32 copies of the float64 tables are
cached), so float32 input gives float32 output with no float64 upcast.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend as B
from ..autograd import unwrap
from ..backend import xp
from ..checks import check_choice
from ..schedules import Schedule
from ..steps import timestep_rows
from .bound import VariationalBound
from .objective import LOSS_WEIGHTINGS, PREDICTION_TYPES, VARIANCES, TrainingObjective


class PMeanVariance(NamedTuple):
    """One reverse step p(x_{t-1} | x_t) = N(mean, variance), with its predictions."""

    mean: object  # (N, ...)
    variance: object  # (N, 1, ...), or (1, 1, ...) for one int t; broadcasts over the data axes
    log_variance: object  # the same shape
    x0: object  # predicted x_0, (N, ...)
    eps: object  # predicted noise, consistent with x0 (re-derived after clipping)


class GaussianDiffusion(TrainingObjective, VariationalBound):
    """The forward process, posterior, parameterisations, losses and bound of a schedule.

    prediction_type  what the network predicts: "eps" (Ho et al.), "x0", or
                     "v" (Salimans and Ho 2022).
    loss_weighting   "simple" (Eq. 14: every t weighs 1), "vlb" (the Eq. 12
                     weights, which make the loss the bound's L_{t-1} terms)
                     or "min_snr" (Hang et al. 2023, gamma = min_snr_gamma).
    variance         the reverse variance sigma_t^2 that the "vlb" weights
                     and ``vlb`` assume by default: "beta" (beta_t) or
                     "beta_tilde" (Eq. 7), Sec. 3.2.
    """

    def __init__(
        self,
        schedule,
        prediction_type="eps",
        loss_weighting="simple",
        min_snr_gamma=5.0,
        variance="beta",
    ):
        if not isinstance(schedule, Schedule):
            raise ValueError(
                f"schedule must be a Schedule (from make_schedule), got {type(schedule).__name__}"
            )
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
        check_choice("variance", variance, VARIANCES)
        if not (isinstance(min_snr_gamma, (int, float)) and min_snr_gamma > 0):
            raise ValueError(f"min_snr_gamma must be a number > 0, got {min_snr_gamma!r}")
        self.schedule = schedule
        self.T = schedule.T
        self.prediction_type = prediction_type
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.variance = variance
        if prediction_type == "eps" and float(schedule.alpha_bars[self.T - 1]) == 0.0:
            raise ValueError(
                "prediction_type 'eps' cannot be used with a zero-terminal-SNR schedule: at alpha_bar_T = 0 "
                "the noise does not determine x_0 (Eq. 15 divides by sqrt(alpha_bar_T) = 0), so sampling "
                "would start from NaN; use prediction_type 'v' or 'x0' (Lin et al. 2023)"
            )

        s = schedule
        # Tables the schedule does not hold, computed once in float64 (shape (T,)).
        self._extra = {
            "sqrt_betas": xp.sqrt(s.betas),  # Eq. 2
            "log_betas": xp.log(s.betas),
            # Eq. 11: the noise coefficient beta_t / sqrt(1 - alpha_bar_t).
            "eps_coef": s.betas * s.recip_sqrt_one_minus_alpha_bars,
            "log_one_minus_alpha_bars": xp.log(s.one_minus_alpha_bars),
            "loss_weights": self._weight_table(),
        }
        self._cache = {}

    # -- coefficient look-up -------------------------------------------------
    def _table(self, name, dtype):
        """The float64 table ``name`` cast once to ``dtype`` and cached."""
        key = (name, str(dtype))
        table = self._cache.get(key)
        if table is None:
            table = self._extra[name] if name in self._extra else getattr(self.schedule, name)
            if table.dtype != dtype:
                table = xp.astype(table, dtype)
            self._cache[key] = table
        return table

    def _gather(self, name, t, like):
        """Coefficient ``name`` at each row's step t, shaped (N, 1, ...) to broadcast over ``like``.

        t goes through ``steps.timestep_rows``: for one int t (a sampler's
        step, shared by every row) the result is one value shaped (1, 1, ...),
        which broadcasts the same way and costs one look-up instead of N.
        """
        steps = timestep_rows(t, like.shape[0], self.T)  # (N,) or (1,)
        values = xp.take(self._table(name, like.dtype), steps, axis=0)
        return xp.reshape(values, (steps.shape[0],) + (1,) * (like.ndim - 1))

    # -- forward process ---------------------------------------------------
    def q_step(self, x_prev, t, noise):
        """Eq. 2: one forward step, x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise.

        ``x_prev`` is the previous state (x_0, the data, when t = 0).
        """
        return self._gather("sqrt_alphas", t, x_prev) * x_prev + self._gather(
            "sqrt_betas", t, x_prev
        ) * noise

    def q_mean_variance(self, x0, t):
        """Eq. 4: the mean, variance and log-variance of q(x_t | x_0) (variances (N, 1, ...), or (1, 1, ...) for an int t)."""
        mean = self._gather("sqrt_alpha_bars", t, x0) * x0
        variance = self._gather("one_minus_alpha_bars", t, x0)
        log_variance = self._gather("log_one_minus_alpha_bars", t, x0)
        return mean, variance, log_variance

    def q_sample(self, x0, t, noise):
        """Eq. 4 and Eq. 9: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

        (The established libraries call this add_noise.)
        """
        return self._gather("sqrt_alpha_bars", t, x0) * x0 + self._gather(
            "sqrt_one_minus_alpha_bars", t, x0
        ) * noise

    def q_posterior(self, x0, x_t, t):
        """Eq. 6, 7: q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I).

        Returns (mean, variance, log_variance); variance and log_variance are
        (N, 1, ...) ((1, 1, ...) for one int t) and broadcast over the data axes. The log-variance is
        clipped at t = 0, where beta_tilde is 0 (see Schedule).
        """
        mean = (
            self._gather("posterior_mean_coef1", t, x_t) * x0
            + self._gather("posterior_mean_coef2", t, x_t) * x_t
        )
        variance = self._gather("posterior_variance", t, x_t)
        log_variance = self._gather("posterior_log_variance_clipped", t, x_t)
        return mean, variance, log_variance

    # -- parameterisations -------------------------------------------------
    def predict_x0_from_eps(self, x_t, t, eps):
        """Eq. 15: x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return self._gather("sqrt_recip_alpha_bars", t, x_t) * x_t - self._gather(
            "sqrt_recipm1_alpha_bars", t, x_t
        ) * eps

    def predict_eps_from_x0(self, x_t, t, x0):
        """Eq. 9 solved for the noise: eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        return (x_t - self._gather("sqrt_alpha_bars", t, x_t) * x0) * self._gather(
            "recip_sqrt_one_minus_alpha_bars", t, x_t
        )

    def mean_from_eps(self, x_t, t, eps):
        """Eq. 11: mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)."""
        return self._gather("sqrt_recip_alphas", t, x_t) * (
            x_t - self._gather("eps_coef", t, x_t) * eps
        )

    def v_target(self, x0, eps, t):
        """Salimans and Ho 2022: v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0."""
        return self._gather("sqrt_alpha_bars", t, x0) * eps - self._gather(
            "sqrt_one_minus_alpha_bars", t, x0
        ) * x0

    def predict_x0_from_v(self, x_t, t, v):
        """Salimans and Ho 2022: x0_hat = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
        return self._gather("sqrt_alpha_bars", t, x_t) * x_t - self._gather(
            "sqrt_one_minus_alpha_bars", t, x_t
        ) * v

    def predict_eps_from_v(self, x_t, t, v):
        """Salimans and Ho 2022: eps_hat = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""
        return self._gather("sqrt_one_minus_alpha_bars", t, x_t) * x_t + self._gather(
            "sqrt_alpha_bars", t, x_t
        ) * v

    def split_prediction(self, model_output, x_t, t, clip_x0=False):
        """(eps_hat, x0_hat) from a prediction of this diffusion's prediction_type.

        eps: x0_hat by Eq. 15; x0: eps_hat by Eq. 9; v: both by Salimans and
        Ho. With ``clip_x0`` the predicted x_0 is clipped to [-1, 1] and the
        noise is re-derived from the clipped x_0 (Eq. 9), so that the pair
        stays consistent with x_t: a sampler that mixes eps_hat and x0_hat
        (DDIM) then moves to the same point the posterior mean (Eq. 7) would.
        """
        output = B.asarray(unwrap(model_output))
        if self.prediction_type == "eps":
            eps, x0 = output, self.predict_x0_from_eps(x_t, t, output)
        elif self.prediction_type == "x0":
            eps, x0 = self.predict_eps_from_x0(x_t, t, output), output
        else:
            eps = self.predict_eps_from_v(x_t, t, output)
            x0 = self.predict_x0_from_v(x_t, t, output)
        if clip_x0:
            x0 = xp.clip(x0, -1.0, 1.0)
            eps = self.predict_eps_from_x0(x_t, t, x0)
        return eps, x0

    def reverse_variance(self, t, like, variance="beta"):
        """sigma_t^2 of Sec. 3.2 and its log, (N, 1, ...) ((1, 1, ...) for an int t): beta_t or beta_tilde_t (Eq. 7).

        With "beta_tilde" the variance is 0 at t = 0 (no noise is added at the
        last sampling step anyway) and its log is clipped (see Schedule).
        """
        check_choice("variance", variance, VARIANCES)
        if variance == "beta":
            return self._gather("betas", t, like), self._gather("log_betas", t, like)
        return (
            self._gather("posterior_variance", t, like),
            self._gather("posterior_log_variance_clipped", t, like),
        )

    def p_mean_variance(self, model_output, x_t, t, variance="beta", clip_x0=False):
        """p(x_{t-1} | x_t) of Eq. 1 from a model output, with sigma_t^2 = beta_t or beta_tilde_t.

        The mean is the posterior mean (Eq. 7) at the predicted x_0; for
        eps-prediction without clipping this is exactly Eq. 11 (Eq. 10 is the
        same identity), and it stays finite for v-prediction at a zero
        terminal SNR, where Eq. 11 divides by sqrt(alpha_T) = 0.
        Returns a PMeanVariance(mean, variance, log_variance, x0, eps).
        """
        eps, x0 = self.split_prediction(model_output, x_t, t, clip_x0=clip_x0)
        mean, _, _ = self.q_posterior(x0, x_t, t)
        var, log_var = self.reverse_variance(t, x_t, variance)
        return PMeanVariance(mean, var, log_var, x0, eps)

    # -- training (Algorithm 1) ---------------------------------------------
