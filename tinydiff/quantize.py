"""Post-training int8 quantization of a trained denoiser's linear layers, and its checkpoint format.

Each weight matrix W (out, in) of a ``Linear`` is stored as int8 numbers q
and one float32 scale per output channel (row), symmetric around zero:

    s_o = max_i |W_oi| / 127                       one scale per output channel
    q_oi = round(W_oi / s_o), clipped to [-127, 127]
    W_oi ~ q_oi s_o                                the dequantised weight

and the layer computes

    y = x W^T + b ~ (x q^T) * s + b                (s multiplies column o of x q^T)

so the matrix product runs on the small integers and the scale is applied
once per output. The rounding error of a weight is at most s_o / 2, so a
row with one large weight quantizes its small ones coarsely: that is why
the scale is per channel rather than per matrix. Everything else (biases,
LayerNorm, embeddings) stays float32: a tenth of the parameters of the
MNIST model, and the parts whose errors would shift every row alike.

``quantize(model)`` swaps every Linear of a model for a QuantizedLinear in
place; ``save_int8`` / ``load_int8`` write and read the int8 checkpoint
(an .npz with a JSON header, atomic, loaded with allow_pickle=False), about
a quarter of the float32 one. Quantization is a transform of a trained
network's weights: the mathematics never knows about it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import autograd as A
from . import backend as B
from .autograd import Tensor
from .backend import xp
from .nn import Linear, Module

INT8_FORMAT = "tinydiff-int8"
INT8_VERSION = 1
QMAX = 127  # symmetric int8: -127..127 (-128 unused, so q and -q are both representable)


def quantize_weight(weight):
    """(q, s): int8 q (out, in) and float32 per-row scales s (out,) with W ~ q * s[:, None]."""
    w = B.asarray(weight, dtype=B.default_dtype())
    s = xp.max(xp.abs(w), axis=1) / QMAX  # (out,)
    s = xp.where(s > 0, s, 1.0)  # an all-zero row: any scale represents it exactly
    q = xp.clip(xp.round(w / xp.reshape(s, (-1, 1))), -QMAX, QMAX)
    return xp.astype(q, xp.int8), xp.astype(s, B.default_dtype())


class QuantizedLinear(Module):
    """y = (x q^T) * s + b: a Linear whose weight is int8 with one float32 scale per output channel."""

    def __init__(self, q, scale, bias=None):
        self.q, self.scale, self.bias_data = q, scale, bias
        self.q_values = None  # q as floats for the matrix product, made at the first call
        self.out_features, self.in_features = (int(n) for n in q.shape)

    @classmethod
    def from_linear(cls, layer: Linear):
        q, scale = quantize_weight(layer.weight.data)
        bias = None if layer.bias is None else xp.astype(layer.bias.data, B.default_dtype(), copy=True)
        return cls(q, scale, bias)

    @property
    def weight(self):
        """The dequantised weight q * s (for code that slices a layer's weight, as MLPDenoiser's sampling path does)."""
        return Tensor(xp.astype(self.q, B.default_dtype()) * xp.reshape(self.scale, (-1, 1)))

    @property
    def bias(self):
        return None if self.bias_data is None else Tensor(self.bias_data)

    def forward(self, x):
        x = A.unwrap(x)
        if getattr(self, "q_values", None) is None or self.q_values.dtype != x.dtype:
            # NumPy (and CuPy's matmul) have no int8 matrix product, so the integers are held as
            # floats for it: exactly the same values, made once. The file keeps the int8 bytes.
            self.q_values = xp.astype(self.q, x.dtype)
        products = x @ self.q_values.T  # (N, out): the product on the integers' values
        y = products * self.scale  # each output column times its scale
        if self.bias_data is not None:
            y = y + self.bias_data
        return Tensor(y)


def _swap_linears(module):
    """Replace every Linear below ``module`` by its QuantizedLinear (in place); returns how many."""
    count = 0
    for name, value in list(vars(module).items()):
        if isinstance(value, Linear):
            setattr(module, name, QuantizedLinear.from_linear(value))
            count += 1
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Linear):
                    value[i] = QuantizedLinear.from_linear(item)
                    count += 1
                elif isinstance(item, Module):
                    count += _swap_linears(item)
        elif isinstance(value, Module):
            count += _swap_linears(value)
    return count


def quantize(model):
    """Quantize every Linear of a trained model to int8 (in place, for inference); returns the model."""
    if _swap_linears(model) == 0:
        raise ValueError(f"quantize: {type(model).__name__} has no Linear layer to quantize")
    return model


def quantized_arrays(model, prefix=""):
    """{name: array} of a quantized model: .q (int8) and .scale, .bias of each QuantizedLinear, and
    every remaining float parameter (LayerNorm, embeddings)."""
    arrays = {}
    for name, value in vars(model).items():
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            key = prefix + name + ("" if i is None else f".{i}")
            if isinstance(item, QuantizedLinear):
                arrays[key + ".q"], arrays[key + ".scale"] = item.q, item.scale
                if item.bias_data is not None:
                    arrays[key + ".bias"] = item.bias_data
            elif isinstance(item, Module):
                arrays.update(quantized_arrays(item, key + "."))
            elif isinstance(item, Tensor) and item.requires_grad:
                arrays[key] = item.data
    return arrays


def load_quantized_arrays(model, arrays):
    """Copy the arrays of ``quantized_arrays`` into a model already passed through ``quantize``."""
    expected = quantized_arrays(model)
    problems = sorted(set(expected) ^ set(arrays))
    if problems:
        raise ValueError(f"int8 checkpoint does not fit the model: {', '.join(problems[:6])}")
    for key, target in expected.items():
        value = arrays[key]
        if tuple(value.shape) != tuple(target.shape) or str(value.dtype) != str(B.to_numpy(target).dtype):
            raise ValueError(f"int8 checkpoint: {key} has shape {tuple(value.shape)} {value.dtype}, "
                             f"expected {tuple(target.shape)} {B.to_numpy(target).dtype}")
        target[...] = B.asarray(value, dtype=target.dtype)
    return model


def save_int8(run, path) -> str:
    """Write the run's quantized model (it must have been through ``quantize``) as an int8 checkpoint."""
    from .train.checkpoint import write_npz_atomic

    header = {"format": INT8_FORMAT, "version": INT8_VERSION, "config": dataclasses.asdict(run.config),
              "data_dim": run.data_dim, "num_classes": run.num_classes, "step": run.step,
              "image_shape": list(run.image_shape) if run.image_shape else None}
    return write_npz_atomic(path, header, {"model/" + k: v for k, v in quantized_arrays(run.model).items()})


def load_int8(path):
    """A Run whose model is the int8 one stored at ``path`` (no optimizer state: for sampling)."""
    from .train import checkpoint as C
    from .train import run as R

    header, arrays = C.read_npz(path, INT8_FORMAT, INT8_VERSION)
    full = {"model/" + k: v for k, v in C.arrays_under(arrays, "model").items()}
    try:
        config = R.config_from_header(header["config"])
        model = quantize(R.build_model(config, header["data_dim"], header["num_classes"]))
        load_quantized_arrays(model, C.arrays_under(full, "model"))
    except (KeyError, TypeError, ValueError) as error:
        raise C.CheckpointError(f"{path}: not a usable int8 checkpoint ({error})") from None
    image_shape = tuple(header["image_shape"]) if header.get("image_shape") else None
    return R.Run(config, model, R.build_diffusion(config), None, None, B.default_rng(config.seed),
                 int(header["step"]), header["data_dim"], header["num_classes"], image_shape)


def output_error(reference, quantized, x, t):
    """Relative error of the quantized model's output against the float one on (x, t): |q - f| / |f| (RMS)."""
    with A.no_grad():
        f = B.to_numpy(A.unwrap(reference(x, t)))
        q = B.to_numpy(A.unwrap(quantized(x, t)))
    return float(np.sqrt(np.mean((q - f) ** 2)) / max(np.sqrt(np.mean(f**2)), 1e-30))
