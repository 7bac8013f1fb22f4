"""Neural-network building blocks and the denoisers, with PyTorch's interfaces.

    module.py     Module, Parameter, Sequential
    layers.py     Linear, LayerNorm, Embedding, activations, the sinusoidal timestep
                  embedding (Sec. 4), the class embedding of classifier-free guidance,
                  cross_entropy
    denoisers.py  MLPDenoiser (2-D data), ResMLPDenoiser (images), MLP
    conv.py       Conv2d, GroupNorm, Dropout, Downsample, Upsample (NCHW images)
    unet.py       ResBlock, AttentionBlock, UNet: the paper's U-Net (Appendix B)
    autoencoder.py  Autoencoder (plain or variational) of latent diffusion, its KL term
"""

from .autoencoder import Autoencoder, kl_to_standard_normal, reparameterize
from .conv import Conv2d, Downsample, Dropout, GroupNorm, Upsample
from .denoisers import MLP, Denoiser, MLPDenoiser, ResidualBlock, ResMLPDenoiser
from .layers import (
    ACTIVATIONS,
    ClassConditioning,
    Embedding,
    LayerNorm,
    Linear,
    TimestepEmbedding,
    activation,
    cross_entropy,
    rng_or_default,
    timestep_embedding,
)
from .module import Module, Parameter, Sequential
from .unet import AttentionBlock, ResBlock, UNet, norm_groups, unet_plan

__all__ = [
    "Autoencoder", "kl_to_standard_normal", "reparameterize",
    "AttentionBlock", "Conv2d", "Downsample", "Dropout", "GroupNorm", "ResBlock", "UNet", "Upsample", "norm_groups",
    "unet_plan",
    "ACTIVATIONS", "ClassConditioning", "Denoiser", "Embedding", "LayerNorm", "Linear", "MLP", "MLPDenoiser",
    "Module", "Parameter", "ResMLPDenoiser", "ResidualBlock", "Sequential", "TimestepEmbedding", "activation",
    "cross_entropy", "rng_or_default", "timestep_embedding",
]
