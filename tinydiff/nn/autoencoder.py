"""The autoencoder of latent diffusion: an MLP encoder and decoder, plain or variational.

Latent diffusion (Rombach et al. 2022) trains the diffusion model not on the
pixels x but on the codes z = E(x) of an autoencoder, and turns its samples
into images with the decoder D. The autoencoder is trained first, alone:

    x_hat = D(E(x)) ~ x                         a plain autoencoder: E(x) is one vector z

or, with a KL-regularised latent (Rombach et al.'s "KL-reg", Sec. 3.1; the
variational autoencoder of Kingma and Welling 2014), the encoder gives a
Gaussian q(z | x) = N(mu, diag sigma^2) through mu and log sigma^2, a code
is drawn by the reparameterization

    z = mu + sigma * eps,  eps ~ N(0, I)                 (Kingma and Welling 2014, Sec. 2.4)

and the loss adds a small multiple of

    KL(q(z | x) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)   (their Appendix B)

which keeps the codes near a standard normal and smooth: nearby codes
decode to nearby images, which is what a diffusion model sampling in the
latent space needs.

The latent is scaled before diffusion by one number, ``scale_factor``
s = 1 / std(z) computed over the encoded training set, so that the
diffusion model's data have unit variance (Rombach et al. Sec. 4.3.2: "we
rescale the latents to unit standard deviation"). It is plain data on the
module, set by the training loop and saved with the weights; ``to_latent``
and ``from_latent`` apply it. The networks are MLPs on flattened images,
like the denoisers; nothing here knows about diffusion.
"""

from __future__ import annotations

from .. import autograd as A
from ..checks import check_int
from .denoisers import MLP
from .layers import Linear, activation, rng_or_default
from .module import Module


def reparameterize(mean, log_variance, noise):
    """z = mu + sigma * eps with sigma = exp(log sigma^2 / 2) (Kingma and Welling 2014, Sec. 2.4).

    ``noise`` is eps ~ N(0, I) of mean's shape, drawn by the caller (the
    module holds no random state). The gradient reaches mu and log sigma^2
    through this sum, which is the point of the trick.
    """
    return mean + A.exp(0.5 * log_variance) * noise


def kl_to_standard_normal(mean, log_variance):
    """KL(N(mu, diag sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2), per example,
    averaged over the batch (Kingma and Welling 2014, Appendix B). A 0-d Tensor, in nats."""
    n = mean.shape[0]
    per_dimension = mean * mean + A.exp(log_variance) - 1.0 - log_variance  # (N, latent_dim)
    return per_dimension.sum() * (0.5 / n)


class Autoencoder(Module):
    """E: x -> (Linear, act) x depth -> mu [, log sigma^2];  D: z -> (Linear, act) x depth -> x_hat.

    data_dim     D, the length of a flattened image
    latent_dim   the length of a code z (16-32 for MNIST's 784 pixels)
    width, depth the hidden layers of the encoder and (mirrored) of the decoder
    variational  True: a second head gives log sigma^2 of q(z | x) (a VAE); False: z = mu
    """

    @staticmethod
    def parameter_count(data_dim, latent_dim, width=512, depth=2, variational=True):
        """The number of parameters __init__ makes, computed without making them (to check sizes first)."""
        trunk = data_dim * width + width + (depth - 1) * (width * width + width)
        heads = (2 if variational else 1) * (width * latent_dim + latent_dim)
        decoder = latent_dim * width + width + (depth - 1) * (width * width + width) + width * data_dim + data_dim
        return trunk + heads + decoder

    def __init__(self, data_dim, latent_dim, width=512, depth=2, activation_name="silu", variational=True,
                 rng=None):
        for name, value in (("data_dim", data_dim), ("latent_dim", latent_dim), ("width", width), ("depth", depth)):
            check_int(f"Autoencoder: {name}", value, minimum=1)
        rng = rng_or_default(rng)
        self.data_dim, self.latent_dim, self.variational = data_dim, latent_dim, bool(variational)
        self.act = activation(activation_name)
        self.activation_name = activation_name
        self.encoder = [Linear(data_dim if i == 0 else width, width, rng=rng) for i in range(depth)]
        self.mean = Linear(width, latent_dim, rng=rng)
        self.log_variance = Linear(width, latent_dim, rng=rng) if variational else None
        self.decoder = MLP(latent_dim, [width] * depth, data_dim, activation_name, rng=rng)
        self.scale_factor = None  # s = 1 / std(z) over the encoded training set, set once by the training loop

    def encode(self, x):
        """(mu, log sigma^2) of q(z | x), each (N, latent_dim); log sigma^2 is None for a plain autoencoder."""
        h = x
        for layer in self.encoder:
            h = self.act(layer(h))  # (N, width)
        return self.mean(h), (None if self.log_variance is None else self.log_variance(h))

    def decode(self, z):
        """x_hat = D(z): (N, latent_dim) -> (N, data_dim)."""
        return self.decoder(z)

    def forward(self, x):
        """The reconstruction D(mu(x)) (the mean code: no noise)."""
        return self.decode(self.encode(x)[0])

    def loss(self, x, noise=None, kl_weight=0.0):
        """(loss, reconstruction, kl): mean over pixels of (x - D(z))^2 + kl_weight * KL (nats per image).

        A plain autoencoder decodes z = mu and its kl is None. A variational
        one decodes z = mu + sigma * eps with ``noise`` = eps ~ N(0, I) of
        shape (N, latent_dim) (needed), and adds the KL term when kl_weight > 0.
        """
        mean, log_variance = self.encode(x)
        if log_variance is None:
            z, kl = mean, None
        else:
            if noise is None:
                raise ValueError("Autoencoder.loss: a variational autoencoder needs noise = eps ~ N(0, I) of shape "
                                 f"(N, {self.latent_dim}) for z = mu + sigma * eps")
            z, kl = reparameterize(mean, log_variance, noise), kl_to_standard_normal(mean, log_variance)
        reconstruction = A.mse(self.decode(z), x)
        loss = reconstruction if kl is None or not kl_weight else reconstruction + kl_weight * kl
        return loss, reconstruction, kl

    def to_latent(self, x):
        """The diffusion model's data: s * mu(x), the mean code scaled to unit variance (needs scale_factor)."""
        return self.encode(x)[0] * self._scale()

    def from_latent(self, z):
        """An image from a diffusion sample: D(z / s)."""
        return self.decode(z * (1.0 / self._scale()))

    def _scale(self):
        if self.scale_factor is None:
            raise ValueError("Autoencoder: scale_factor is not set yet (it is computed from the encoded training "
                             "set once the autoencoder is trained)")
        return self.scale_factor
