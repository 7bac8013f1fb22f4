"""The Gaussian diffusion of Ho et al. 2020: forward process, posterior, losses, bound.

    process.py      GaussianDiffusion: Eq. 2, 4, 6, 7, 9, 11, 15; v-prediction; p(x_{t-1} | x_t)
    objective.py    the loss of Algorithm 1: Eq. 12, 14, min-SNR weights
    bound.py        the bound L of Eq. 3, 5 with the decoder of Eq. 13; bits per dimension
    likelihoods.py  the Gaussian KL, the discretized Gaussian likelihood (Eq. 13)
"""

from .bound import DECODERS, data_dims
from .likelihoods import (
    LOG_2PI,
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    log_standard_normal_cdf,
    normal_kl,
)
from .objective import LOSS_WEIGHTINGS, PREDICTION_TYPES, VARIANCES
from .process import GaussianDiffusion, PMeanVariance

__all__ = [
    "DECODERS", "LOG_2PI", "LOSS_WEIGHTINGS", "PREDICTION_TYPES", "VARIANCES", "GaussianDiffusion", "PMeanVariance",
    "data_dims", "discretized_gaussian_log_likelihood", "gaussian_log_likelihood", "log_standard_normal_cdf",
    "normal_kl",
]
