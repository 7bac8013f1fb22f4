"""Super-resolution: MNIST 28x28 digits drawn from their 14x14 versions by a conditioned denoiser.

    python examples/superres_mnist.py --data-dir DIR                    # about 20 minutes on two cores
    python examples/superres_mnist.py --checkpoint runs/superres-mnist --n 32
    python examples/superres_mnist.py --data digits --minutes 1 --out runs/superres-digits

Trains (within --minutes) the residual-MLP denoiser eps_theta(x_t, t, low)
with TrainConfig(superres=--factor): the low-resolution image (each factor x
factor block averaged, then blown back up to full size, ``train.low_resolution``)
is an extra input to the network, passed as model_kwargs={"extra": low}.
Training is Algorithm 1 unchanged, only the model sees one more input: it
learns the distribution of high-resolution images given the low-resolution
one (the conditional model of SR3, Saharia et al. 2021, with an MLP in place
of the U-Net). x0-prediction, the cosine schedule and EMA as in
examples/train_mnist.py. Or loads a finished run with --checkpoint.

Then it upsamples --n test digits and writes superres.png (rows: the
low-resolution input, blown up; the super-resolved sample; the original) and
prints how far the output, averaged back down, is from its input (mean
absolute difference on the [-1, 1] scale), next to the same distance between
the low-resolution images of two different digits, for scale.
Writes into --out: checkpoint.npz and losses.csv (when it trains),
superres.png, superres.npz (low, sample, original) and results.json.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from tinydiff import backend as B
from tinydiff import samplers, viz
from tinydiff import train as T

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the other examples, for their helpers
from conditional_mnist import held_out_images  # noqa: E402

SHOWN = 16  # columns in the figure


def low_resolution(x, image_shape, factor):
    """Host images x (N, H*W) averaged over factor x factor blocks and blown back up: (N, H*W)."""
    return B.to_numpy(T.low_resolution(B.asarray(x), image_shape, factor))


def different_digit_distance(low, labels, pairs=2000, seed=0):
    """Mean |low_i - low_j| over random pairs (i, j) of images of different digits: the scale of a miss."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, low.shape[0], pairs)
    j = rng.integers(0, low.shape[0], pairs)
    different = labels[i] != labels[j]
    return float(np.mean(np.abs(low[i[different]] - low[j[different]])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=os.path.join("runs", "superres-mnist"))
    parser.add_argument("--checkpoint", default=None, help="a trained super-resolution run: no training")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--factor", type=int, default=2, help="downsampling factor (default 2: 28x28 from 14x14)")
    parser.add_argument("--minutes", type=float, default=19.0, help="training time budget (default 19)")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps the learning-rate schedule plans for (default: as many as fit in --minutes)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--T", type=int, default=1000, help="diffusion steps (default 1000)")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--n", type=int, default=64, help="test images to super-resolve (default 64)")
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--sample-steps", type=int, default=100, help="DDIM steps (default 100)")
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy", "array_api_strict"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.checkpoint and args.resume:
        parser.error("--checkpoint loads a finished run and --resume continues the one in --out: pick one")
    if args.factor < 2:
        parser.error(f"--factor must be an integer >= 2, got {args.factor}")
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    if args.resume and not os.path.exists(os.path.join(args.out, "checkpoint.npz")):
        parser.error(f"--resume: no checkpoint.npz in {args.out}; train without --resume first")
    B.set_backend(args.backend)  # before any array is made
    os.makedirs(args.out, exist_ok=True)
    progress = not args.no_progress

    if args.checkpoint:
        run = T.load_run(args.checkpoint)
        if not run.config.superres:
            parser.error(f"--checkpoint {args.checkpoint} is not a super-resolution run; train one with this script")
        print(f"loaded {args.checkpoint} (step {run.step})")
    else:
        config = T.TrainConfig(
            data=args.data, data_dir=args.data_dir, superres=args.factor, steps=args.steps or None,
            batch_size=args.batch_size, lr=args.lr, model="resmlp", width=args.width, depth=args.blocks, T=args.T,
            prediction="x0", schedule="cosine", ema=args.ema, seed=args.seed,
            warmup=500, checkpoint_every=1000,
        )
        start = time.perf_counter()
        if not args.steps and not args.resume:  # end the cosine decay when the time budget ends
            config = dataclasses.replace(config, steps=T.steps_for_budget(config, args.minutes * 60))
            config = dataclasses.replace(config, warmup=min(500, config.steps // 10))
            print(f"planning {config.steps} steps for {args.minutes:g} minutes (timed here)")
        result = T.train(config, args.out, resume=args.resume, progress=progress,
                         max_seconds=args.minutes * 60 - (time.perf_counter() - start))
        run = result.run
        print(f"trained to step {run.step} in {(time.perf_counter() - start) / 60:.1f} min "
              f"({len(result.losses) / max(result.seconds, 1e-9):.1f} steps/s)")
    run = T.use_ema_weights(run)
    factor, image_shape = run.config.superres, tuple(run.image_shape)

    dataset = held_out_images(run.config.data, args.data_dir or run.config.data_dir)
    if args.n > len(dataset):
        parser.error(f"--n {args.n} is more than the {len(dataset)} held-out images")
    index = np.sort(np.random.default_rng(args.seed).choice(len(dataset), size=args.n, replace=False))
    original = dataset.x[index]  # (n, H*W)
    low = low_resolution(original, image_shape, factor)  # (n, H*W), constant on each block

    common = dict(clip_x0=True, progress=progress, batch_size=1000, model_kwargs={"extra": B.asarray(low)})
    rng = B.default_rng(args.seed)
    start = time.perf_counter()
    if args.sampler == "ddim":
        sample = samplers.ddim(run.model, run.diffusion, original.shape, rng, steps=args.sample_steps, **common)
    else:
        sample = samplers.ddpm(run.model, run.diffusion, original.shape, rng, **common)
    sample = np.clip(B.to_numpy(sample), -1.0, 1.0)
    seconds = time.perf_counter() - start

    consistency = float(np.mean(np.abs(low_resolution(sample, image_shape, factor) - low)))
    all_low = low_resolution(dataset.x, image_shape, factor)
    scale = different_digit_distance(all_low, dataset.labels, seed=args.seed)
    h, w = image_shape
    print(f"super-resolved {args.n} images ({h // factor}x{w // factor} -> {h}x{w}) in {seconds:.1f} s")
    print(f"mean |downsampled output - low-res input|: {consistency:.4f}  "
          f"(two different digits' low-res images: {scale:.4f})")
    detail = float(np.mean(np.abs(sample - original)))
    blur = float(np.mean(np.abs(low - original)))
    print(f"mean |output - original|: {detail:.4f}  (|blown-up low-res - original|: {blur:.4f}; "
          f"the output is one plausible digit, not the original)")

    shown = min(SHOWN, args.n)
    rows = np.concatenate([low[:shown], sample[:shown], original[:shown]])  # (3 * shown, H*W)
    figure = viz.image_grid(rows.reshape((-1,) + image_shape), os.path.join(args.out, "superres.png"), nrow=shown,
                            row_labels=[f"{h // factor}x{w // factor}", "sample", "original"],
                            title=f"super-resolution x{factor}, {run.step} steps")
    arrays_path = os.path.join(args.out, "superres.npz")
    np.savez(arrays_path, low=low, sample=sample, original=original, labels=dataset.labels[index])
    results = {
        "data": run.config.data, "factor": factor, "train_steps": run.step, "T": run.diffusion.T,
        "sampler": args.sampler, "sample_steps": args.sample_steps if args.sampler == "ddim" else run.diffusion.T,
        "n": args.n, "seed": args.seed, "backend": args.backend, "seconds": seconds,
        "low_res_error": consistency, "different_digits_low_res_distance": scale,
        "output_original_distance": detail, "low_res_original_distance": blur,
    }
    results_path = os.path.join(args.out, "results.json")
    with open(results_path, "w") as file:
        json.dump(results, file, indent=2)
    print(f"wrote {figure}, {arrays_path}, {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
