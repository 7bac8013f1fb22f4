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

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import samplers  # noqa: E402
from tinydiff import train as T  # noqa: E402

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
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "superres-mnist"), data_dir=True,
                                     backend=True)
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    parser.add_argument("--checkpoint", default=None, help="a trained super-resolution run: no training")
    parser.add_argument("--factor", type=int, default=2, help="downsampling factor (default 2: 28x28 from 14x14)")
    _common.add_training_arguments(parser)
    parser.add_argument("--n", type=int, default=64, help="test images to super-resolve (default 64)")
    _common.add_sampler_arguments(parser)
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 2, "factor")
    _common.check_at_least(parser, args, 1, "n")
    _common.check_resume(parser, args)
    _common.prepare(args)
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
        run = _common.train_within_budget(config, args).run
    run = T.use_ema_weights(run)
    factor, image_shape = run.config.superres, tuple(run.image_shape)

    dataset = _common.held_out_images(run.config.data, args.data_dir or run.config.data_dir)
    index = _common.pick_held_out(parser, dataset, args.n, args.seed)
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

    figure = _common.image_rows(os.path.join(args.out, "superres.png"),
                                {f"{h // factor}x{w // factor}": low, "sample": sample, "original": original},
                                image_shape, SHOWN, f"super-resolution x{factor}, {run.step} steps")
    arrays_path = _common.save_npz(os.path.join(args.out, "superres.npz"), low=low, sample=sample, original=original,
                                   labels=dataset.labels[index])
    results = {
        "data": run.config.data, "factor": factor, "train_steps": run.step, "T": run.diffusion.T,
        "sampler": args.sampler, "sample_steps": args.sample_steps if args.sampler == "ddim" else run.diffusion.T,
        "n": args.n, "seed": args.seed, "backend": args.backend, "seconds": seconds,
        "low_res_error": consistency, "different_digits_low_res_distance": scale,
        "output_original_distance": detail, "low_res_original_distance": blur,
    }
    results_path = _common.save_json(os.path.join(args.out, "results.json"), results)
    print(f"wrote {figure}, {arrays_path}, {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
