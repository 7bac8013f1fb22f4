"""tinydiff: denoising diffusion probabilistic models in plain NumPy, to read next to the paper.

Start with ``python -m tinydiff demo``, the lessons in lessons/, and the
paper-to-code table in README.md.
"""

from . import backend
from .autograd import Tensor, concatenate, no_grad, stack
from .backend import default_rng, set_backend, to_numpy

__version__ = "0.1.0"

__all__ = [
    "Tensor",
    "backend",
    "concatenate",
    "default_rng",
    "no_grad",
    "set_backend",
    "stack",
    "to_numpy",
]
