"""Bits per dimension of MNIST test digits: the exact likelihood through the probability-flow ODE, and the bound.

    python examples/likelihood_mnist.py --checkpoint runs/mnist --data-dir DIR
    python examples/likelihood_mnist.py --checkpoint runs/mnist --data-dir DIR --n 500 --ode-steps 100 --probes 2

Two numbers for the same test images and the same trained network:

- the ODE: log p(x_0) by integrating the probability-flow ODE from the data to
  the noise with the instantaneous change of variables (Song et al. 2021,
  Sec. 4.3; tinydiff.ode.log_likelihood), the divergence by Hutchinson's
  estimator from the network's vector-Jacobian products, on uniformly
  dequantised pixels (+7 bits per dimension for 256 levels on [-1, 1], as
  Song et al. report), with its standard error over the images;
- the bound L of Eq. 3 with the discretized decoder of Eq. 13 (Ho et al.
  2020; GaussianDiffusion.vlb), which bounds the NLL of the ancestral model
  from above.

Both are upper bounds on the NLL of the discrete digits, of two different
models (the ODE's and the ancestral one) made from one network. Writes
likelihood_mnist.png (each image's bits/dim by both, and their means) and
likelihood.json into --out.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import ode  # noqa: E402
from tinydiff import train as T  # noqa: E402


def measure(run, images, args, log=print):
    """Per-image bits/dim by the ODE and by the bound, with the seconds each took."""
    x = B.asarray(images)
    start = time.perf_counter()
    by_ode = ode.log_likelihood(run.model, run.diffusion, x, B.default_rng(args.seed), steps=args.ode_steps,
                                probes=args.probes, levels=256, batch_size=args.batch_size,
                                progress=not args.no_progress)
    ode_seconds = time.perf_counter() - start
    log(f"ODE: {ode_seconds:.0f} s", flush=True)
    start = time.perf_counter()
    bound = run.diffusion.vlb(run.model, x, B.default_rng(args.seed + 1), decoder="discretized", clip_x0=False,
                              batch_size=args.batch_size * 8, progress=not args.no_progress)
    bound_seconds = time.perf_counter() - start
    log(f"bound: {bound_seconds:.0f} s", flush=True)
    return (B.to_numpy(by_ode["bits_per_dim"]).astype(np.float64), B.to_numpy(bound["bits_per_dim"]).astype(np.float64),
            ode_seconds, bound_seconds)


def plot(ode_bpd, bound_bpd, path, title):
    fig = _common.figure(5.2, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    low, high = np.percentile(np.concatenate([ode_bpd, bound_bpd]), [0.5, 99.5])
    bins = np.linspace(low, high, 40)
    for values, label, color in ((ode_bpd, "probability-flow ODE (exact, Hutchinson)", "tab:blue"),
                                 (bound_bpd, "variational bound L (Eq. 3, 13)", "tab:red")):
        ax.hist(values, bins=bins, alpha=0.55, color=color,
                label=f"{label}: {values.mean():.3f} +- {values.std(ddof=1) / math.sqrt(len(values)):.3f}")
        ax.axvline(values.mean(), color=color, linewidth=1.2)
    ax.set_xlabel("bits per dimension (test image, 8-bit, dequantised for the ODE)")
    ax.set_ylabel("images")
    ax.legend(fontsize="x-small")
    return _common.save_figure(fig, path, title)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "likelihood-mnist"), data_dir=True)
    parser.add_argument("--checkpoint", required=True, help="an MNIST run (folder or checkpoint.npz)")
    parser.add_argument("--n", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--ode-steps", type=int, default=50, help="Heun steps of the ODE (default 50)")
    parser.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image (default 1)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per model call (default 100)")
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 2, "n")
    _common.check_at_least(parser, args, 1, "ode_steps", "probes", "batch_size")
    _common.prepare(args)
    run = T.use_ema_weights(T.load_run(args.checkpoint))
    if run.image_shape is None:
        parser.error(f"--checkpoint holds a 2D model ({run.config.data}); this example measures image models")
    test = _common.held_out_images(run.config.data, args.data_dir)
    index = _common.pick_held_out(parser, test, args.n, args.seed)
    print(f"{run.config.data}, model at step {run.step}: {args.n} test images, ODE in {args.ode_steps} Heun steps "
          f"with {args.probes} Hutchinson probe(s), the bound over all {run.diffusion.T} steps", flush=True)
    ode_bpd, bound_bpd, ode_seconds, bound_seconds = measure(run, test.x[index], args)
    rows = [("probability-flow ODE", ode_bpd, ode_seconds), ("variational bound L", bound_bpd, bound_seconds)]
    print(f"\n{'bits/dim':24s} {'mean':>8} {'SE':>7} {'seconds':>8}")
    for label, values, seconds in rows:
        print(f"{label:24s} {values.mean():8.3f} {values.std(ddof=1) / math.sqrt(len(values)):7.3f} {seconds:8.0f}")
    difference = bound_bpd - ode_bpd
    print(f"{'bound - ODE (paired)':24s} {difference.mean():8.3f} {difference.std(ddof=1) / math.sqrt(args.n):7.3f}")
    path = plot(ode_bpd, bound_bpd, os.path.join(args.out, "likelihood_mnist.png"),
                f"{run.config.data} test set, model at step {run.step}: bits/dim of {args.n} images")
    json_path = _common.save_json(os.path.join(args.out, "likelihood.json"), {
        "n": args.n, "ode_steps": args.ode_steps, "probes": args.probes, "step": run.step,
        "ode_bits_per_dim": float(ode_bpd.mean()), "bound_bits_per_dim": float(bound_bpd.mean()),
        "ode_se": float(ode_bpd.std(ddof=1) / math.sqrt(args.n)),
        "bound_se": float(bound_bpd.std(ddof=1) / math.sqrt(args.n))})
    print(f"\nwrote {path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
