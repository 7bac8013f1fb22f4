"""The Gaussian diffusion of Ho et al. 2020: forward process, posterior, losses, bound.

``GaussianDiffusion(schedule)`` holds a Schedule and implements, equation by
equation:

    q_step            one forward step q(x_t | x_{t-1})                 Eq. 2
    q_sample          x_t from x_0 in one jump q(x_t | x_0)             Eq. 4, 9
    q_posterior       q(x_{t-1} | x_t, x_0): mean and beta_tilde        Eq. 6, 7
    predict_x0_from_eps   x_0 from predicted noise                      Eq. 15
    mean_from_eps     the reverse mean from predicted noise             Eq. 11
    v_target, predict_*_from_v   v-prediction (Salimans and Ho 2022)
    training_loss     Algorithm 1 with weights simple (Eq. 14), vlb (Eq. 12),
                      min_snr (Hang et al. 2023)
    vlb               the bound L of Eq. 3 split as in Eq. 5, with the
                      discretized decoder of Eq. 13, in nats and bits/dim

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

import math
import numbers
from typing import NamedTuple

from tinydiff import backend as B
from tinydiff.backend import xp
from tinydiff.schedules import Schedule, ScheduleWarning, _concat

PREDICTION_TYPES = ("eps", "x0", "v")
LOSS_WEIGHTINGS = ("simple", "vlb", "min_snr")
VARIANCES = ("beta", "beta_tilde")
DECODERS = ("discretized", "gaussian")

LOG_2PI = math.log(2.0 * math.pi)


def _as_array(value):
    """The backend array behind a model output (a Tensor's .data) or the array itself."""
    if B.is_array(value):
        return value
    data = getattr(value, "data", None)
    if data is not None and B.is_array(data):
        return data
    return B.asarray(value)


def _check_choice(argument, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"{argument} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )


def _sum_dims(x):
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    return xp.sum(xp.reshape(x, (x.shape[0], -1)), axis=1)


def data_dims(x):
    """The number of dimensions of one example, D = prod(shape[1:])."""
    return math.prod(x.shape[1:])


class PMeanVariance(NamedTuple):
    """One reverse step p(x_{t-1} | x_t) = N(mean, variance), with its predictions."""

    mean: object  # (N, ...)
    variance: object  # (N, 1, ...), or (1, 1, ...) for one int t; broadcasts over the data axes
    log_variance: object  # the same shape
    x0: object  # predicted x_0, (N, ...)
    eps: object  # predicted noise, consistent with x0 (re-derived after clipping)


class GaussianDiffusion:
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
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("loss_weighting", loss_weighting, LOSS_WEIGHTINGS)
        _check_choice("variance", variance, VARIANCES)
        if not (isinstance(min_snr_gamma, (int, float)) and min_snr_gamma > 0):
            raise ValueError(f"min_snr_gamma must be a number > 0, got {min_snr_gamma!r}")
        self.schedule = schedule
        self.T = schedule.T
        self.prediction_type = prediction_type
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.variance = variance
        if prediction_type == "eps" and float(schedule.alpha_bars[self.T - 1]) == 0.0:
            import warnings

            warnings.warn(
                "alpha_bar_T = 0 (zero terminal SNR): x_0 from eps (Eq. 15) is undefined "
                "at the last step; use prediction_type='v'",
                ScheduleWarning,
                stacklevel=2,
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

    def _one_step(self, t):
        """t as a range-checked Python int when it is one int (Python or NumPy); None for an array."""
        if not isinstance(t, numbers.Integral) or isinstance(t, bool):
            return None
        if not 0 <= t < self.T:
            raise ValueError(f"t must be in 0..{self.T - 1} (0-indexed: paper t - 1), got {t}")
        return int(t)

    def timesteps_array(self, t, n):
        """t as an int64 array of shape (n,): an int (Python or NumPy) is repeated, an array passed on."""
        step = self._one_step(t)
        return t if step is None else xp.full((n,), step, dtype=xp.int64)

    def _gather(self, name, t, like):
        """Coefficient ``name`` at each row's step t, shaped (N, 1, ...) like ``like``.

        For one int t (a sampler's step: every row shares it) the shape is
        (1, 1, ...), which broadcasts the same way and costs one look-up
        instead of N (p_mean_variance at N = 10,000: 75 us instead of 400).
        """
        n = like.shape[0]
        step = self._one_step(t)
        if step is not None:
            value = self._table(name, like.dtype)[step:step + 1]  # a view into the cached table: copy it,
            return xp.reshape(xp.astype(value, value.dtype, copy=True), (1,) * like.ndim)  # so writes stay local
        values = xp.take(self._table(name, like.dtype), t, axis=0)  # (N,)
        return xp.reshape(values, (n,) + (1,) * (like.ndim - 1))  # (N, 1, ...)

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
        output = _as_array(model_output)
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
        _check_choice("variance", variance, VARIANCES)
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
    def training_target(self, x0, noise, t):
        """What the network is trained to output: eps (noise), x_0, or v."""
        if self.prediction_type == "eps":
            return noise
        if self.prediction_type == "x0":
            return x0
        return self.v_target(x0, noise, t)

    def _weight_table(self):
        """Per-step loss weights (T,), float64, for this weighting and prediction type.

        simple (Eq. 14): 1 for every t.
        vlb (Eq. 12): the weight that makes the squared error equal the
          KL term L_{t-1} (Eq. 8) per data dimension. For x0-prediction it is
          |mu_tilde - mu_theta|^2 / (2 sigma^2) = coef1_t^2 / (2 sigma_t^2) (Eq. 7);
          for eps it is that / SNR_t, which is Eq. 12's
          beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)); for v it is
          that * (1 - alpha_bar_t). At t = 0 the same weight is the Gaussian
          decoder's -log p(x_0 | x_1) up to a constant.
        min_snr (Hang et al. 2023): min(SNR, gamma) / SNR for eps, min(SNR, gamma)
          for x0, min(SNR, gamma) / (SNR + 1) for v.
        Since the loss averages over dimensions and t is uniform, with "vlb"
        weights E[loss] * D * T = E[sum of the L_t] minus their parts that do
        not depend on the model (the variance terms of the KLs).
        """
        s = self.schedule
        if self.loss_weighting == "simple":
            return xp.ones((self.T,), dtype=s.betas.dtype)
        if self.loss_weighting == "min_snr":
            clipped = xp.minimum(s.snr, self.min_snr_gamma)
            if self.prediction_type == "eps":
                # min(SNR, gamma) / SNR = min(1, gamma / SNR): no 0/0 at SNR = 0.
                safe = xp.where(s.snr > 0, s.snr, 1.0)
                return xp.where(s.snr > 0, xp.minimum(1.0, self.min_snr_gamma / safe), 1.0)
            if self.prediction_type == "x0":
                return clipped
            return clipped / (s.snr + 1.0)
        log_sigma2 = (
            xp.log(s.betas) if self.variance == "beta" else s.posterior_log_variance_clipped
        )
        weight_x0 = s.posterior_mean_coef1**2 / (2.0 * xp.exp(log_sigma2))
        if self.prediction_type == "x0":
            return weight_x0
        if self.prediction_type == "v":
            return weight_x0 * s.one_minus_alpha_bars
        # / SNR_t; +inf where SNR_T = 0 (zero terminal SNR): eps is undefined there.
        positive = s.snr > 0
        return xp.where(positive, weight_x0 / xp.where(positive, s.snr, 1.0), math.inf)

    def loss_weights(self, t, dtype=None):
        """The loss weight of each row's step t, shape (N,), in ``dtype`` (default float32)."""
        dtype = B.default_dtype() if dtype is None else dtype
        return xp.take(self._table("loss_weights", dtype), t, axis=0)

    def training_loss(self, model, x0, rng, t=None, noise=None, model_kwargs=None):
        """Algorithm 1: the loss of one batch, a scalar Tensor to call backward on.

        t ~ Uniform{0..T-1} (0-indexed: the paper's Uniform{1..T}) and
        eps ~ N(0, I) are drawn from ``rng`` (in that order) unless given;
        x_t = q_sample(x0, t, eps) (Eq. 9); the model is called as
        model(x_t, t, **model_kwargs); the loss is the batch mean of
        weight_t * (mean over dimensions of (output - target)^2), with the
        target of training_target and the weights of loss_weights: with
        "simple" and eps-prediction this is Eq. 14.
        """
        from tinydiff.autograd import Tensor, mse

        n = x0.shape[0]
        if t is None:
            t = rng.integers(0, self.T, (n,))
        t = self.timesteps_array(t, n)
        if noise is None:
            noise = rng.normal(tuple(x0.shape), dtype=x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, t, **(model_kwargs or {}))
        if not isinstance(output, Tensor):
            output = Tensor(output)
        if tuple(output.shape) != tuple(x0.shape):
            raise ValueError(
                f"the model returned shape {tuple(output.shape)} for x_t of shape "
                f"{tuple(x0.shape)}; a denoiser must return a prediction of x_t's shape"
            )
        target = self.training_target(x0, noise, t)
        # One fused node (autograd.mse): mean over the batch of
        # weight_t * mean over dimensions of (output - target)^2.
        if self.loss_weighting == "simple":
            return mse(output, target)
        return mse(output, target, self.loss_weights(t, dtype=x0.dtype))

    # -- the variational bound (Eq. 3, 5) ------------------------------------
    def prior_kl(self, x0):
        """L_T of Eq. 5: KL(q(x_T | x_0) || N(0, I)) per example, in nats (N,)."""
        mean, _, log_variance = self.q_mean_variance(x0, self.T - 1)
        zero = xp.zeros_like(mean)
        return _sum_dims(normal_kl(mean, log_variance, zero, zero))

    def vlb_terms(self, model_output, x0, x_t, t, decoder="discretized", variance=None, clip_x0=False):
        """The bound's term at each row's step t, per example in nats (N,) (Eq. 5).

A row at code step t >= 1 (paper step t + 1) gets the paper's L_t, in
        paper indices KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})), a KL between
        Gaussians (Eq. 6, 7 against Eq. 1). A row at t = 0 (paper step 1) gets
        L_0 = -log p(x_0 | x_1): the discretized decoder of Eq. 13 (data on 256
        levels in [-1, 1]) or, with decoder="gaussian", the Gaussian density
        (real-valued data such as the 2D sets). So code step i gives L_i.
        """
        _check_choice("decoder", decoder, DECODERS)
        variance = self.variance if variance is None else variance
        p = self.p_mean_variance(model_output, x_t, t, variance=variance, clip_x0=clip_x0)
        kl = self._kl_term(p, x0, x_t, t)
        nll = self._decoder_term(p, x0, decoder)
        t = self.timesteps_array(t, x0.shape[0])
        return xp.where(t == 0, nll, kl)

    def _kl_term(self, p, x0, x_t, t):
        """L_{t-1} of Eq. 5: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), summed (N,)."""
        q_mean, _, q_log_variance = self.q_posterior(x0, x_t, t)
        return _sum_dims(normal_kl(q_mean, q_log_variance, p.mean, p.log_variance))

    def _decoder_term(self, p, x0, decoder):
        """L_0 of Eq. 5: -log p(x_0 | x_1), Eq. 13 or a Gaussian density, summed (N,)."""
        log_scale = 0.5 * p.log_variance
        if decoder == "discretized":
            return -_sum_dims(discretized_gaussian_log_likelihood(x0, p.mean, log_scale))
        return -_sum_dims(gaussian_log_likelihood(x0, p.mean, log_scale))

    def vlb(
        self,
        model,
        x0,
        rng,
        *,
        decoder="discretized",
        variance=None,
        clip_x0=False,
        batch_size=4096,
        model_kwargs=None,
        progress=False,
    ):
        """The variational bound L of Eq. 3 for each example, split as in Eq. 5.

        One x_t per (example, t) is drawn from q(x_t | x_0) with ``rng``, so
        the sum over t is an unbiased one-sample estimate of E_q[L]. Every
        step is evaluated, T model calls' worth of rows, packed into calls of
        about ``batch_size`` rows (several t per call).

        Returns a dict of backend arrays in x0's dtype:
          "terms"        (N, T): column i is the paper's L_i (i = 0 is the
                         decoder L_0, i >= 1 the KL L_i); plot its mean to
                         see where the bound is spent
          "prior"        (N,): L_T
          "total"        (N,): L_T + sum of the terms, nats per example
          "bits_per_dim" (N,): total / (D ln 2)
        """
        from tinydiff.autograd import no_grad

        _check_choice("decoder", decoder, DECODERS)
        variance = self.variance if variance is None else variance
        _check_choice("variance", variance, VARIANCES)
        n = x0.shape[0]
        per_call = max(1, int(batch_size) // max(n, 1))  # timesteps per model call
        chunks = [[0]] + [
            list(range(start, min(start + per_call, self.T)))
            for start in range(1, self.T, per_call)
        ]
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc="vlb")
        columns = []
        with no_grad():
            for steps in chunks:
                k = len(steps)
                x0_rep = _concat([x0] * k) if k > 1 else x0  # (k N, ...)
                t = _concat([xp.full((n,), s, dtype=xp.int64) for s in steps])  # (k N,)
                noise = rng.normal(tuple(x0_rep.shape), dtype=x0.dtype)
                x_t = self.q_sample(x0_rep, t, noise)
                output = _as_array(model(x_t, t, **(model_kwargs or {})))
                p = self.p_mean_variance(output, x_t, t, variance=variance, clip_x0=clip_x0)
                if steps[0] == 0:  # the decoder L_0 (chunk [0] holds only t = 0)
                    terms = self._decoder_term(p, x0_rep, decoder)
                else:
                    terms = self._kl_term(p, x0_rep, x_t, t)
                terms = xp.reshape(terms, (k, n))  # row j: step steps[j]
                columns.extend(terms[j, :] for j in range(k))
        terms = xp.stack(columns, axis=1)  # (N, T)
        prior = self.prior_kl(x0)
        total = prior + xp.sum(terms, axis=1)
        return {
            "terms": terms,
            "prior": prior,
            "total": total,
            "bits_per_dim": total / (data_dims(x0) * math.log(2.0)),
        }


# --------------------------------------------------------------------------
# Gaussian KL and log-likelihoods (elementwise)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, in nats.

    KL = log(s2 / s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2 (the Gaussian KL of
    PAPER.md), written with log-variances so a tiny variance does not underflow.
    Used for L_T and every L_{t-1} of Eq. 5.
    """
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + xp.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * xp.exp(-logvar2)
    )


# Chebyshev-fitted erfc (Press et al., Numerical Recipes, "erfcc"):
# erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0, with a relative
# error below 1.2e-7 everywhere. Written as a log it never underflows, which
# is what the far tails of Eq. 13 need. (The array API has no erf.)
_ERFC_COEFFICIENTS = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def _log_erfc(z):
    """log(erfc(z)) elementwise, accurate to about 1e-7 relative, for any real z."""
    a = xp.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    poly = _ERFC_COEFFICIENTS[-1]
    for c in reversed(_ERFC_COEFFICIENTS[:-1]):
        poly = c + t * poly  # Horner
    log_tail = xp.log(t) - a * a + poly  # log erfc(|z|)
    # erfc(-a) = 2 - erfc(a)
    return xp.where(z >= 0, log_tail, xp.log(2.0 - xp.exp(log_tail)))


def log_standard_normal_cdf(x):
    """log Phi(x) = log(erfc(-x / sqrt(2)) / 2), finite far into both tails."""
    return _log_erfc(-x * (1.0 / math.sqrt(2.0))) - math.log(2.0)


def discretized_gaussian_log_likelihood(x, mean, log_scale, bin_width=2.0 / 255.0):
    """Eq. 13: log of the N(mean, exp(log_scale)^2) mass on x's bin, per element.

    x holds data on 256 levels scaled to [-1, 1]; its bin is
    [x - 1/255, x + 1/255], widened to (-inf, x + 1/255] at x = -1 and
    [x - 1/255, +inf) at x = 1. In standard units (m = (x - mean) / sigma,
    h = half the bin width / sigma) the mass of an inner bin is taken
    - for a bin narrow next to the curvature of the density (h max(1, |m|) <=
      0.05), by the midpoint rule with its Hermite corrections,
      2 h phi(m) (1 + He2(m) h^2 / 3! + He4(m) h^4 / 5! + He6(m) h^6 / 7!),
      exact to about 1e-15: a difference of two nearly equal CDFs would lose
      the digits here;
    - otherwise as Phi(m + h) - Phi(m - h) on the side of the smaller tail and
      in logs (log Phi_big + log(1 - Phi_small / Phi_big)), so a bin many
      sigmas out neither underflows nor cancels (about 1e-6 relative).
    """
    inv_scale = xp.exp(-log_scale)
    m = (x - mean) * inv_scale  # bin centre, standardised
    h = (0.5 * bin_width) * inv_scale  # half bin width, standardised
    upper, lower = m + h, m - h
    log_cdf_upper = log_standard_normal_cdf(upper)  # log P(X <= upper): the x = -1 bin
    log_sf_lower = log_standard_normal_cdf(-lower)  # log P(X >= lower): the x = +1 bin

    # Wide inner bins: subtract CDFs left of the mean, survival functions right of it.
    left = m <= 0.0
    log_big = xp.where(left, log_cdf_upper, log_sf_lower)
    log_small = xp.where(left, log_standard_normal_cdf(lower), log_standard_normal_cdf(-upper))
    gap = -xp.expm1(log_small - log_big)  # 1 - Phi_small / Phi_big, in (0, 1]
    tiny = 1e-300 if str(x.dtype).endswith("float64") else 1e-37
    log_wide = log_big + xp.log(xp.maximum(gap, tiny))

    # Narrow inner bins: integral of phi over [m - h, m + h] by Taylor expansion.
    m2, h2 = m * m, h * h
    he2 = m2 - 1.0
    he4 = (m2 - 6.0) * m2 + 3.0
    he6 = ((m2 - 15.0) * m2 + 45.0) * m2 - 15.0
    series = 1.0 + h2 * (he2 / 6.0 + h2 * (he4 / 120.0 + h2 * he6 / 5040.0))
    log_narrow = xp.log(2.0 * h) - 0.5 * LOG_2PI - 0.5 * m2 + xp.log(xp.maximum(series, tiny))
    narrow = h * xp.maximum(xp.abs(m), 1.0) <= 0.05

    log_inner = xp.where(narrow, log_narrow, log_wide)
    return xp.where(x < -0.999, log_cdf_upper, xp.where(x > 0.999, log_sf_lower, log_inner))


def gaussian_log_likelihood(x, mean, log_scale):
    """log N(x; mean, exp(log_scale)^2) per element: the decoder L_0 for real-valued data."""
    z = (x - mean) * xp.exp(-log_scale)
    return -0.5 * LOG_2PI - log_scale - 0.5 * z * z
