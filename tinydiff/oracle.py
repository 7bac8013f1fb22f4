"""The exact denoiser of Gaussian-mixture data: checks with no training.

If the data are a mixture of Gaussians, q(x_0) = sum_k w_k N(m_k, diag(v_k)),
then every noised marginal q(x_t) = integral q(x_t | x_0) q(x_0) dx_0 (Eq. 4) is
again a mixture, with the same weights, means sqrt(alpha_bar_t) m_k and
variances alpha_bar_t v_k + (1 - alpha_bar_t). The best possible denoiser
under the squared loss of Eq. 14 is the posterior mean E[eps | x_t], and for a
mixture it has a closed form (Bayes' rule for Gaussians, per component):

    r_k(x_t)        = w_k N(x_t; a m_k, a^2 v_k + s^2) / q(x_t)      responsibilities
    E[x_0 | x_t, k] = m_k + a v_k / (a^2 v_k + s^2) (x_t - a m_k)
    E[x_0 | x_t]    = sum_k r_k E[x_0 | x_t, k]
    E[eps | x_t]    = (x_t - a E[x_0 | x_t]) / s                     (Eq. 9)

with a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t). ``MixtureDenoiser``
is this function as a model(x_t, t). With it the samplers of tinydiff.samplers and
the bound of diffusion.py can be checked against the known data
distribution; ``distance_to_oracle`` measures how far a trained network is
from it at each t. Called with a Tensor, it joins the autograd graph with its
exact vector-Jacobian product (Tweedie: dE[x_0 | x_t]/dx_t = (a / s^2)
Cov[x_0 | x_t]), so the likelihood of the probability-flow ODE (tinydiff.ode)
can be checked against the true density too.

Timesteps are 0-indexed, as everywhere in tinydiff (code t = paper t - 1).
"""

from __future__ import annotations


from . import backend as B
from .autograd import Tensor, no_grad, record
from .backend import xp
from .diffusion import LOG_2PI
from .steps import timesteps_per_row



def _logsumexp(values, axis):
    """log sum exp along ``axis`` with the max shifted out (no overflow)."""
    top = xp.max(values, axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0.0)
    return xp.squeeze(top, axis=axis) + xp.log(xp.sum(xp.exp(values - top), axis=axis))


class GaussianMixture:
    """A mixture of K Gaussians in D dimensions with diagonal covariances (float64).

    weights    (K,), positive; normalised to sum to 1
    means      (K, D), or (K,) for D = 1
    variances  (K,) for isotropic components, or (K, D) diagonal; > 0

    Samples and inputs are (N, D) arrays (D = 1 for 1-D data: shape (N, 1)).
    """

    def __init__(self, weights, means, variances):
        weights = B.asarray(weights, dtype=B.float64())
        means = B.asarray(means, dtype=B.float64())
        variances = B.asarray(variances, dtype=B.float64())
        if weights.ndim != 1 or weights.shape[0] < 1:
            raise ValueError(f"weights must have shape (K,) with K >= 1, got {tuple(weights.shape)}")
        k = int(weights.shape[0])
        if means.ndim == 1 and int(means.shape[0]) == k:
            means = xp.reshape(means, (k, 1))  # 1-D data: (K,) -> (K, 1)
        if means.ndim != 2 or int(means.shape[0]) != k:
            raise ValueError(f"means must have shape (K, D) or (K,) with K = {k}, got {tuple(means.shape)}")
        d = int(means.shape[1])
        if variances.ndim == 1 and int(variances.shape[0]) == k:
            variances = xp.reshape(variances, (k, 1)) * xp.ones((1, d), dtype=B.float64())  # (K, D)
        if tuple(variances.shape) != (k, d):
            raise ValueError(
                f"variances must have shape (K,) = ({k},) or (K, D) = ({k}, {d}), got {tuple(variances.shape)}"
            )
        if bool(xp.any(xp.isnan(weights))) or bool(xp.any(weights <= 0.0)):
            raise ValueError("weights must be positive numbers (they are normalised to sum to 1)")
        if bool(xp.any(xp.isnan(variances))) or bool(xp.any(variances <= 0.0)):
            raise ValueError("variances must be positive numbers")
        if bool(xp.any(xp.isnan(means))):
            raise ValueError("means must not contain NaN")
        self.weights = weights / xp.sum(weights)
        self.means = means
        self.variances = variances
        self.n_components = k
        self.dim = d

    def __repr__(self):
        return f"GaussianMixture(K={self.n_components}, D={self.dim})"

    def sample(self, n, rng, dtype=None):
        """n draws as an (n, D) array (default float32); component by inverse CDF, then Gaussian.

        Draws n uniforms then an (n, D) normal array from ``rng``, so row i
        depends only on the generator's state, not on n.
        """
        dtype = B.default_dtype() if dtype is None else dtype
        u = rng.uniform((n,), dtype=B.float64())
        z = rng.normal((n, self.dim), dtype=B.float64())
        cumsum = xp.cumulative_sum if hasattr(xp, "cumulative_sum") else xp.cumsum
        edges = cumsum(self.weights)[:-1]  # (K - 1,) inner CDF edges
        component = xp.sum(xp.astype(xp.reshape(u, (n, 1)) >= edges, xp.int64), axis=1)  # (n,)
        mean = xp.take(self.means, component, axis=0)  # (n, D)
        std = xp.sqrt(xp.take(self.variances, component, axis=0))
        return xp.astype(mean + std * z, dtype)

    def component_log_prob(self, x, scale=1.0, extra_variance=0.0):
        """log w_k + log N(x; scale m_k, scale^2 v_k + extra_variance), shape (N, K).

        scale = sqrt(alpha_bar_t) and extra_variance = 1 - alpha_bar_t give the
        components of the noised marginal q(x_t) (Eq. 4); scale and
        extra_variance may be floats or (N, 1, 1) arrays (one per row).
        """
        x = xp.astype(x, B.float64())
        n = x.shape[0]
        x = xp.reshape(x, (n, 1, self.dim))  # (N, 1, D)
        mean = scale * xp.reshape(self.means, (1, self.n_components, self.dim))  # (.., K, D)
        var = scale * scale * xp.reshape(self.variances, (1, self.n_components, self.dim)) + extra_variance
        log_normal = -0.5 * xp.sum(LOG_2PI + xp.log(var) + (x - mean) ** 2 / var, axis=2)  # (N, K)
        return xp.log(self.weights) + log_normal

    def log_prob(self, x):
        """log q(x) per row, shape (N,), float64 (a stable logsumexp over components)."""
        return _logsumexp(self.component_log_prob(x), axis=1)

    def mean(self):
        """The mixture's mean, (D,)."""
        return xp.sum(xp.reshape(self.weights, (-1, 1)) * self.means, axis=0)

    def variance(self):
        """The mixture's per-dimension variance, (D,) (law of total variance)."""
        mu = self.mean()
        second = xp.sum(
            xp.reshape(self.weights, (-1, 1)) * (self.variances + self.means**2), axis=0
        )
        return second - mu**2

    def posterior_components(self, x_t, alpha_bar):
        """Bayes' rule per component: responsibilities r_k (N, K), E[x_0 | x_t, k] (N, K, D), Var[x_0 | x_t, k].

        x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps; alpha_bar is a float
        or an (N,) array (one per row). Var[x_0 | x_t, k] = v_k s^2 / (a^2 v_k + s^2)
        is (1, K, D) or (N, K, D). All float64.
        """
        x_t = xp.astype(x_t, B.float64())
        n = x_t.shape[0]
        if not isinstance(alpha_bar, (int, float)):
            alpha_bar = xp.reshape(xp.astype(alpha_bar, B.float64()), (n, 1, 1))  # (N, 1, 1)
        a = alpha_bar**0.5
        s2 = 1.0 - alpha_bar
        logits = self.component_log_prob(x_t, a, s2)  # (N, K)
        resp = xp.exp(logits - xp.reshape(_logsumexp(logits, axis=1), (n, 1)))  # (N, K)
        v = xp.reshape(self.variances, (1, self.n_components, self.dim))  # (1, K, D)
        m = xp.reshape(self.means, (1, self.n_components, self.dim))
        x = xp.reshape(x_t, (n, 1, self.dim))
        # Bayes' rule per component: E[x_0 | x_t, k] = m_k + a v_k / (a^2 v_k + s^2) (x_t - a m_k)
        x0_k = m + a * v / (a * a * v + s2) * (x - a * m)  # (N, K, D)
        return resp, x0_k, v * s2 / (a * a * v + s2)

    def posterior_x0(self, x_t, alpha_bar):
        """E[x_0 | x_t] when x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps.

        alpha_bar is a float or an (N,) array (one per row). Returns (N, D) float64.
        """
        resp, x0_k, _ = self.posterior_components(x_t, alpha_bar)
        n = x0_k.shape[0]
        return xp.sum(xp.reshape(resp, (n, self.n_components, 1)) * x0_k, axis=1)  # (N, D)

    def posterior_covariance_times(self, x_t, alpha_bar, u):
        """Cov[x_0 | x_t] u per row, (N, D): the law of total covariance over the components.

        Cov = sum_k r_k (Var_k + mu_k mu_k^T) - mu mu^T with mu_k = E[x_0 | x_t, k],
        mu = E[x_0 | x_t]; multiplied by u without forming the D x D matrix.
        """
        resp, x0_k, var_k = self.posterior_components(x_t, alpha_bar)
        n = x0_k.shape[0]
        r = xp.reshape(resp, (n, self.n_components, 1))  # (N, K, 1)
        u = xp.reshape(xp.astype(u, B.float64()), (n, 1, self.dim))  # (N, 1, D)
        mu = xp.sum(r * x0_k, axis=1, keepdims=True)  # (N, 1, D)
        second = xp.sum(r * (var_k * u + x0_k * xp.sum(x0_k * u, axis=2, keepdims=True)), axis=1)  # (N, D)
        return second - xp.reshape(mu * xp.sum(mu * u, axis=2, keepdims=True), (n, self.dim))


class MixtureDenoiser:
    """The exact denoiser of GaussianMixture data, called as model(x_t, t).

    Returns E[eps | x_t], E[x_0 | x_t] or E[v | x_t] (whichever the
    diffusion's prediction_type asks for, or ``prediction_type``) as a
    backend array of x_t's dtype: the minimiser of the training loss, the
    best any network can do. Computed in float64. Called with a Tensor x_t it
    returns a Tensor whose vector-Jacobian product is exact (Tweedie's
    identity), so it can be differentiated like a network.
    """

    def __init__(self, mixture, diffusion, prediction_type=None):
        self.mixture = mixture
        self.diffusion = diffusion
        self.prediction_type = prediction_type or diffusion.prediction_type
        if self.prediction_type not in ("eps", "x0", "v"):
            raise ValueError(f"prediction_type must be one of 'eps', 'x0', 'v', got {self.prediction_type!r}")

    def __call__(self, x_t, t, **unused):
        if isinstance(x_t, Tensor):
            return self._differentiable(x_t, t)
        alpha_bar, a, s = self._coefficients(t, x_t.shape[0])
        x0 = self.mixture.posterior_x0(x_t, alpha_bar)  # (N, D) float64
        x = xp.astype(x_t, B.float64())
        if self.prediction_type == "x0":
            out = x0
        else:
            eps = (x - a * x0) / s  # Eq. 9 in expectation
            out = eps if self.prediction_type == "eps" else a * eps - s * x0  # v is linear
        return xp.astype(out, x_t.dtype)

    def _coefficients(self, t, n):
        """alpha_bar_t (N,), and a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t) shaped (N, 1), float64."""
        t = timesteps_per_row(t, n, self.diffusion.T)
        alpha_bar = xp.take(self.diffusion.schedule.alpha_bars, t, axis=0)  # (N,) float64
        return alpha_bar, xp.reshape(xp.sqrt(alpha_bar), (n, 1)), xp.reshape(xp.sqrt(1.0 - alpha_bar), (n, 1))

    def _differentiable(self, x_t, t):
        """The same output for a Tensor x_t, joined to the graph with its exact vector-Jacobian product.

        Tweedie's second identity: d E[x_0 | x_t] / dx_t = (a / s^2) Cov[x_0 | x_t],
        a symmetric matrix, so g^T dx0/dx_t = (a / s^2) Cov g; eps = (x_t - a x0) / s
        and v = a eps - s x0 follow linearly. So the ODE likelihood (tinydiff.ode)
        can take the divergence of the exact denoiser as it does a network's.
        """
        x = x_t.data
        out = self(x, t)
        alpha_bar, a, s = self._coefficients(t, x.shape[0])

        def vjp(g):
            g = xp.astype(g, B.float64())
            dx0 = a / (s * s) * self.mixture.posterior_covariance_times(x, alpha_bar, g)  # g^T dx0/dx_t
            deps = (g - a * dx0) / s
            grad = {"x0": dx0, "eps": deps, "v": a * deps - s * dx0}[self.prediction_type]
            return (xp.astype(grad, x.dtype),)

        return record(out, (x_t,), vjp, "mixture_denoiser")


def true_nll(mixture, x0):
    """-log q(x_0) per example in nats, (N,): what the bound L of Eq. 3 bounds from above."""
    return -mixture.log_prob(x0)


def distance_to_oracle(model, oracle, diffusion, x0, rng, timesteps, model_kwargs=None):
    """How far a model is from the exact denoiser at each t.

    For each t in ``timesteps`` (0-indexed), x_t = q_sample(x0, t, eps) with
    fresh noise, and the mean over examples and dimensions of
      distance     (model(x_t, t) - oracle(x_t, t))^2
      model_loss   (model(x_t, t) - target)^2
      oracle_loss  (oracle(x_t, t) - target)^2, the irreducible part
    with the target of diffusion.training_target. In expectation
    model_loss = distance + oracle_loss, since the oracle is the conditional
    mean of the target: what training can still remove is the distance.
    Returns a dict of lists of floats keyed "t", "distance", "model_loss",
    "oracle_loss".
    """
    result = {"t": [], "distance": [], "model_loss": [], "oracle_loss": []}
    n = x0.shape[0]
    with no_grad():
        for step in timesteps:
            step = int(step)
            t = timesteps_per_row(step, n, diffusion.T)
            noise = rng.normal(tuple(x0.shape), dtype=x0.dtype)
            x_t = diffusion.q_sample(x0, t, noise)
            out = model(x_t, t, **(model_kwargs or {}))
            out = out if B.is_array(out) else out.data
            best = oracle(x_t, t)
            target = diffusion.training_target(x0, noise, t)
            result["t"].append(step)
            result["distance"].append(float(xp.mean((out - best) ** 2)))
            result["model_loss"].append(float(xp.mean((out - target) ** 2)))
            result["oracle_loss"].append(float(xp.mean((best - target) ** 2)))
    return result
