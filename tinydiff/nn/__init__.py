"""Neural-network building blocks and the denoisers, with PyTorch's interfaces.

    module.py     Module, Parameter, Sequential
    layers.py     Linear, LayerNorm, Embedding, activations, the sinusoidal timestep
                  embedding (Sec. 4), the class embedding of classifier-free guidance,
                  cross_entropy
    denoisers.py  MLPDenoiser (2-D data), ResMLPDenoiser (images), MLP
"""

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

__all__ = [
    "ACTIVATIONS", "ClassConditioning", "Denoiser", "Embedding", "LayerNorm", "Linear", "MLP", "MLPDenoiser",
    "Module", "Parameter", "ResMLPDenoiser", "ResidualBlock", "Sequential", "TimestepEmbedding", "activation",
    "cross_entropy", "rng_or_default", "timestep_embedding",
]
