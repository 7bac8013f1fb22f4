"""Where the MNIST step's time goes, NumPy against PyTorch: the matrix products and Adam.

The residual-MLP step (engine.py's resmlp128) is matrix products plus one
optimizer update. This script times the two parts on their own, the same
work on each side, so the gap between the whole steps can be read off:

- each product shape of a width-1024 layer at batch 128: forward x W^T,
  the input gradient g W and the weight gradient g^T x, as NumPy (``@``)
  and as PyTorch (``F.linear``, ``@``) compute them;
- one Adam update of all the denoiser's parameters (6.3M at the defaults):
  ``tinydiff.optim.Adam`` on its flat buffer against PyTorch's Adam (fused
  where the version has it) on one tensor of the same size.

Sides alternate within each repetition; the table gives medians.

    python benchmarks/mnist_parts.py              # about 10 s
    python benchmarks/mnist_parts.py --repeats 50
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

import engine  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import nn, optim  # noqa: E402


def _time(function, inner):
    start = time.perf_counter()
    for _ in range(inner):
        function()
    return (time.perf_counter() - start) / inner


def product_cases(batch, width, torch):
    """(label, numpy callable, torch callable or None) for the three products of one layer."""
    rng = np.random.default_rng(0)
    x, g = (rng.standard_normal((batch, width), dtype=np.float32) for _ in range(2))
    weight = rng.standard_normal((width, width), dtype=np.float32)
    bias = rng.standard_normal(width, dtype=np.float32)
    cases = [
        (f"forward x W^T + b  ({batch}x{width} @ {width}x{width})", lambda: x @ weight.T + bias),
        (f"input grad g W     ({batch}x{width} @ {width}x{width})", lambda: g @ weight),
        (f"weight grad g^T x  ({width}x{batch} @ {batch}x{width})", lambda: g.T @ x),
    ]
    if torch is None:
        return [(label, fn, None) for label, fn in cases]
    tx, tg, tw, tb = (torch.from_numpy(a) for a in (x, g, weight, bias))
    F = torch.nn.functional
    torch_fns = [lambda: F.linear(tx, tw, tb), lambda: tg @ tw, lambda: tg.t() @ tx]
    return [(label, fn, tfn) for (label, fn), tfn in zip(cases, torch_fns)]


def adam_case(size, torch):
    """(label, tinydiff step, torch step or None) for one Adam update of ``size`` parameters."""
    rng = np.random.default_rng(1)
    parameter = nn.Parameter(B.asarray(rng.standard_normal(size, dtype=np.float32)))
    gradient = B.asarray(rng.standard_normal(size, dtype=np.float32))
    adam = optim.Adam([parameter], lr=1e-3)

    def tiny_step():
        parameter.grad = gradient
        adam.step()

    torch_step = None
    if torch is not None:
        weight = torch.nn.Parameter(torch.from_numpy(rng.standard_normal(size, dtype=np.float32)))
        weight.grad = torch.from_numpy(np.asarray(B.to_numpy(gradient)).copy())
        torch_adam, _ = engine.torch_adam(torch, [weight])
        torch_step = torch_adam.step
    return (f"Adam update, {size / 1e6:.1f}M parameters", tiny_step, torch_step)


def run(batch=128, width=1024, repeats=20, inner=5, torch=None):
    """[(label, numpy ms, torch ms or None)], medians over ``repeats`` alternating repetitions."""
    B.keep_freed_memory()  # as train() does
    size = nn.ResMLPDenoiser(width=width).num_parameters()
    rows = []
    with (torch.no_grad() if torch is not None else contextlib.nullcontext()):
        for label, numpy_fn, torch_fn in [*product_cases(batch, width, torch), adam_case(size, torch)]:
            numpy_fn()
            if torch_fn is not None:
                torch_fn()
            times = {"numpy": [], "torch": []}
            for r in range(repeats):
                order = [("numpy", numpy_fn), ("torch", torch_fn)]
                for name, fn in (order if r % 2 == 0 else order[::-1]):
                    if fn is not None:
                        times[name].append(_time(fn, inner))
            rows.append((label, 1e3 * statistics.median(times["numpy"]),
                         1e3 * statistics.median(times["torch"]) if times["torch"] else None))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128, help="rows of a batch (default 128)")
    parser.add_argument("--width", type=int, default=1024, help="hidden width of the residual MLP (default 1024)")
    parser.add_argument("--repeats", type=int, default=20, help="alternating repetitions (default 20)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    args = parser.parse_args(argv)
    for name in ("batch", "width", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    B.set_backend("numpy")
    torch = None if args.no_torch else engine.torch_or_none()
    if torch is not None:
        torch.set_num_threads(engine.core_count())
    engine.header(engine.blas_summary(), f"{torch.__version__}, {torch.get_num_threads()} threads" if torch is not None
                  else "left out" if args.no_torch else "not installed (optional)")
    rows = run(args.batch, args.width, args.repeats, torch=torch)
    print()
    print(f"{'part of the step':52s} {'NumPy ms':>9} {'torch ms':>9} {'torch/NumPy':>11}")
    for label, numpy_ms, torch_ms in rows:
        torch_text = f"{torch_ms:9.3f} {numpy_ms / torch_ms:10.2f}x" if torch_ms else f"{'-':>9} {'-':>11}"
        print(f"{label:52s} {numpy_ms:9.3f} {torch_text}")
    print("torch/NumPy: PyTorch's speed over NumPy's for the same work (above 1: PyTorch faster)")
    print("Adam, NumPy side: tinydiff.optim.Adam (chunked passes over the flat buffer); torch side: its Adam, fused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
