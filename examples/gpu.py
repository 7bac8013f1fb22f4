"""The same training on NumPy and on CuPy: how much the GPU buys, measured.

    python examples/gpu.py                          # the 8x8 digits, 500 steps on each backend
    python examples/gpu.py --data moons --steps 2000
    python examples/gpu.py --out runs/gpu           # also keep both runs and their samples

Nothing in tinydiff's core changes between the two runs: the autograd
engine, the denoiser, Adam and the samplers all compute through
``tinydiff.backend.xp``, which is NumPy in the first run and CuPy in the
second (``set_backend("cupy")``). The data set is moved to the GPU once;
batches, timesteps and noise are drawn there, so nothing crosses between
host and device inside the loop.

The CuPy run is preceded by a short untimed one: CuPy compiles each kernel
the first time it meets it, which would otherwise be charged to training.
Without CuPy or a GPU the script says so and exits cleanly.
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import data as data_module  # noqa: E402
from tinydiff import samplers  # noqa: E402
from tinydiff import train as T  # noqa: E402

GPU_BACKEND = "cupy"


def gpu_problem():
    """None when CuPy can run on a GPU here, else the reason it cannot."""
    try:
        with B.using(GPU_BACKEND):
            pass
    except B.BackendError as error:
        return str(error)
    except Exception as error:  # a CUDA install that imports but cannot start
        return f"CuPy could not start ({type(error).__name__}: {error})"
    return None


def train_on(backend, args, out_dir):
    """Train on ``backend`` into out_dir; returns (steps/s, seconds, final loss, samples, sampling seconds)."""
    with B.using(backend):
        config = T.TrainConfig(data=args.data, steps=args.steps, seed=args.seed,
                               checkpoint_every=10**9, log_every=50)
        if backend != "numpy" and args.warmup:
            # Untimed: CuPy compiles every kernel on first use.
            warm = T.TrainConfig(data=args.data, steps=args.warmup, seed=args.seed, checkpoint_every=10**9)
            T.train(warm, os.path.join(out_dir, "warmup"), progress=False, log=lambda *a: None)
        result = T.train(config, os.path.join(out_dir, backend), progress=args.progress,
                         log=lambda *a: None)
        rate = len(result.losses) / max(result.seconds, 1e-9)
        final_loss = float(np.mean([loss for _, loss in result.losses[-10:]]))
        run = T.use_ema_weights(result.run)
        start = time.perf_counter()
        samples = samplers.ddim(run.model, run.diffusion, (args.samples, run.data_dim), B.default_rng(args.seed),
                                steps=args.sample_steps, clip_x0=run.image_shape is not None)
        samples = B.to_numpy(samples)  # the one transfer back to the host (it waits for the GPU)
        sampling_seconds = time.perf_counter() - start
        return rate, result.seconds, final_loss, samples, sampling_seconds, run.image_shape


def save_samples(samples, image_shape, name, path, title):
    from tinydiff import viz

    if image_shape is not None:
        images = np.clip(samples, -1, 1).reshape((-1,) + tuple(image_shape))
        return viz.image_grid(images, path, title=title)
    data = data_module.load(name, n=2000, seed=1).x
    return viz.plot_samples_2d(samples, data, path, title=title)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=None, progress=False,
                                     out_help="keep both runs and sample pictures here (default: a temp folder)")
    parser.add_argument("--data", default="digits", choices=data_module.DATASETS_2D + ("digits",),
                        help="digits (8x8 images, residual MLP) or a 2D set (MLP); default digits")
    parser.add_argument("--steps", type=int, default=500, help="training steps on each backend (default 500)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed CuPy steps first (kernel compilation)")
    parser.add_argument("--samples", type=int, default=100, help="samples drawn after training (default 100)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar (needs tqdm; off: it costs time)")
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 1, "steps", "samples", "sample_steps")

    problem = gpu_problem()
    if problem is not None:
        print(f"no GPU: {problem}")
        print("This example compares NumPy with CuPy on an NVIDIA GPU; there is nothing to compare here.")
        return 0

    with tempfile.TemporaryDirectory(prefix="tinydiff-gpu-") as scratch:
        out_dir = args.out or scratch
        results = {}
        for backend in ("numpy", GPU_BACKEND):
            print(f"training on {backend}: {args.data}, {args.steps} steps ...", flush=True)
            results[backend] = train_on(backend, args, out_dir)
            if args.out:
                rate, _, _, samples, _, image_shape = results[backend]
                path = save_samples(samples, image_shape, args.data,
                                    os.path.join(args.out, f"samples-{backend}.png"),
                                    f"{args.data}, {args.steps} steps on {backend}")
                print(f"  wrote {path}")

    print(f"\n{'backend':8s} {'steps/s':>9} {'train s':>8} {'final loss':>11} {'sample s':>9}")
    for backend, (rate, seconds, loss, _, sample_seconds, _) in results.items():
        print(f"{backend:8s} {rate:9.1f} {seconds:8.1f} {loss:11.4f} {sample_seconds:9.2f}")
    cpu, gpu = results["numpy"], results[GPU_BACKEND]
    print(f"\nspeed-up of {GPU_BACKEND} over numpy: training {gpu[0] / cpu[0]:.1f}x, "
          f"sampling ({args.samples} samples, DDIM {args.sample_steps}) {cpu[4] / gpu[4]:.1f}x")
    print("(the losses differ a little: CuPy draws its own random numbers from the same seed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
