"""The variational bound of Eq. 3, split as in Eq. 5: L_T, the KL terms L_{t-1}, the decoder L_0.

A mixin of GaussianDiffusion (process.py), which supplies the forward
process, the posterior and p_mean_variance these methods use.
"""

from __future__ import annotations

import math

from .. import backend as B
from ..autograd import no_grad, unwrap
from ..backend import xp
from ..checks import check_choice, check_int
from ..steps import timestep_rows
from .objective import VARIANCES
from .likelihoods import discretized_gaussian_log_likelihood, gaussian_log_likelihood, normal_kl

DECODERS = ("discretized", "gaussian")


def _sum_dims(x):
    """Sum over every axis but the first: (N, ...) -> (N,)."""
    return xp.sum(xp.reshape(x, (x.shape[0], -1)), axis=1)


def data_dims(x):
    """The number of dimensions of one example, D = prod(shape[1:])."""
    return math.prod(x.shape[1:])



class VariationalBound:
    """The bound's terms and total, in nats and bits per dimension."""

    def prior_kl(self, x0):
        """L_T of Eq. 5: KL(q(x_T | x_0) || N(0, I)) per example, in nats (N,)."""
        mean, _, log_variance = self.q_mean_variance(x0, self.T - 1)
        zero = xp.zeros_like(mean)
        return _sum_dims(normal_kl(mean, log_variance, zero, zero))

    def vlb_terms(self, model_output, x0, x_t, t, decoder="discretized", variance=None, clip_x0=False, levels=256):
        """The bound's term at each row's step t, per example in nats (N,) (Eq. 5).

A row at code step t >= 1 (paper step t + 1) gets the paper's L_t, in
        paper indices KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})), a KL between
        Gaussians (Eq. 6, 7 against Eq. 1). A row at t = 0 (paper step 1) gets
        L_0 = -log p(x_0 | x_1): the discretized decoder of Eq. 13 (data on 256
        levels in [-1, 1]) or, with decoder="gaussian", the Gaussian density
        (real-valued data such as the 2D sets). So code step i gives L_i.
        """
        check_choice("decoder", decoder, DECODERS)
        variance = self.variance if variance is None else variance
        p = self.p_mean_variance(model_output, x_t, t, variance=variance, clip_x0=clip_x0)
        kl = self._kl_term(p, x0, x_t, t)
        nll = self._decoder_term(p, x0, decoder, levels)
        return xp.where(timestep_rows(t, x0.shape[0], self.T) == 0, nll, kl)

    def _kl_term(self, p, x0, x_t, t):
        """L_{t-1} of Eq. 5: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)), summed (N,)."""
        q_mean, _, q_log_variance = self.q_posterior(x0, x_t, t)
        return _sum_dims(normal_kl(q_mean, q_log_variance, p.mean, p.log_variance))

    def _decoder_term(self, p, x0, decoder, levels=256):
        """L_0 of Eq. 5: -log p(x_0 | x_1), Eq. 13 on ``levels`` values in [-1, 1] or a Gaussian density, summed (N,)."""
        log_scale = 0.5 * p.log_variance
        if decoder == "discretized":
            bin_width = 2.0 / (levels - 1)  # Eq. 13's 2/255 for 8-bit images
            return -_sum_dims(discretized_gaussian_log_likelihood(x0, p.mean, log_scale, bin_width))
        return -_sum_dims(gaussian_log_likelihood(x0, p.mean, log_scale))

    def _terms_at(self, model, x0, steps, rng, decoder, variance, clip_x0, model_kwargs, levels):
        """The bound's terms at several steps in one model call: (k, N), row j for steps[j]."""
        k, n = len(steps), x0.shape[0]
        x0_rep = xp.concat([x0] * k, axis=0) if k > 1 else x0  # (k N, ...)
        t = xp.concat([xp.full((n,), s, dtype=xp.int64) for s in steps], axis=0)  # (k N,)
        x_t = self.q_sample(x0_rep, t, rng.normal(tuple(x0_rep.shape), dtype=x0.dtype))
        output = B.asarray(unwrap(model(x_t, t, **(model_kwargs or {}))))
        p = self.p_mean_variance(output, x_t, t, variance=variance, clip_x0=clip_x0)
        if steps[0] == 0:  # the decoder L_0 (the first chunk holds only t = 0)
            terms = self._decoder_term(p, x0_rep, decoder, levels)
        else:
            terms = self._kl_term(p, x0_rep, x_t, t)
        return xp.reshape(terms, (k, n))

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
        levels=256,
    ):
        """The variational bound L of Eq. 3 for each example, split as in Eq. 5.

        One x_t per (example, t) is drawn from q(x_t | x_0) with ``rng``, so
        the sum over t is an unbiased one-sample estimate of E_q[L]. Every
        step is evaluated, T model calls' worth of rows, packed into calls of
        about ``batch_size`` rows (several t per call). The discretized
        decoder assumes data on ``levels`` values in [-1, 1] (Eq. 13: 256).

        Returns a dict of backend arrays in x0's dtype:
          "terms"        (N, T): column i is the paper's L_i (i = 0 is the
                         decoder L_0, i >= 1 the KL L_i); plot its mean to
                         see where the bound is spent
          "prior"        (N,): L_T
          "total"        (N,): L_T + sum of the terms, nats per example
          "bits_per_dim" (N,): total / (D ln 2)
        """
        check_choice("decoder", decoder, DECODERS)
        variance = self.variance if variance is None else variance
        check_choice("variance", variance, VARIANCES)
        check_int("levels", levels, minimum=2)
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
                terms = self._terms_at(model, x0, steps, rng, decoder, variance, clip_x0, model_kwargs, levels)
                k = len(steps)
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


