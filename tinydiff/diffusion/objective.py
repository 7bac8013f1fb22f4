"""The training objective of Algorithm 1: targets, per-step loss weights, the loss.

A mixin of GaussianDiffusion (process.py), which supplies the schedule and
the coefficient look-ups (``_gather``, ``_table``) these methods use.
"""

from __future__ import annotations

import math

from .. import backend as B
from ..autograd import Tensor, mse
from ..backend import xp
from ..steps import timestep_rows, timesteps_per_row

PREDICTION_TYPES = ("eps", "x0", "v")  # what the network predicts
LOSS_WEIGHTINGS = ("simple", "vlb", "min_snr")
VARIANCES = ("beta", "beta_tilde")  # the reverse variance sigma_t^2 of Sec. 3.2


class TrainingObjective:
    """Algorithm 1's loss with the weightings simple (Eq. 14), vlb (Eq. 12) and min_snr."""

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
        return xp.take(self._table("loss_weights", dtype), timestep_rows(t, T=self.T), axis=0)

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
        n = x0.shape[0]
        if t is None:
            t = rng.integers(0, self.T, (n,))
        t = timesteps_per_row(t, n, self.T)
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
