"""Fill in hidden halves of MNIST digits with an unconditional model: RePaint (Lugmayr et al. 2022).

    python examples/inpaint_mnist.py --checkpoint runs/mnist --data-dir DIR
    python examples/inpaint_mnist.py --checkpoint runs/mnist --mask left --resamplings 10 --jump-length 10

--checkpoint is any unconditional run: a folder from examples/train_mnist.py
or ``python -m tinydiff train`` (a class-conditional run works too: without a
label it is the unconditional model of its null class). No retraining: the
model never saw a mask. Each test image loses one half (--mask left, right,
top, bottom, or all to take the four in turn), and ``samplers.inpaint``
regenerates it: at every reverse step the known half is the data noised to
that step (Eq. 4), the hidden half comes from the model's step (Algorithm 2),
and every --jump-length steps the pair is pushed back up --jump-length levels
and denoised again, --resamplings times in all, so the halves agree.

Prints how many known pixels came back exactly (all of them, by
construction) and, with a classifier from examples/train_classifier.py
(--classifier), the fraction of filled images read as the original digit,
next to the same for the originals and for the half-grey masked inputs.
Writes into --out: inpaint.png (rows: original, masked input, filled),
inpaint.npz (original, mask, filled, labels) and results.json.
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

MASKS = ("left", "right", "top", "bottom")
SHOWN = 16  # columns in the figure


def half_mask(image_shape, hidden):
    """A flattened mask (H*W,) of one image: 1 where the pixel is known, 0 on the ``hidden`` half."""
    if hidden not in MASKS:
        raise ValueError(f"hidden must be one of {', '.join(MASKS)}, got {hidden!r}")
    h, w = image_shape
    mask = np.ones((h, w), dtype=np.float32)
    if hidden == "left":
        mask[:, :w // 2] = 0.0
    elif hidden == "right":
        mask[:, w // 2:] = 0.0
    elif hidden == "top":
        mask[:h // 2, :] = 0.0
    else:
        mask[h // 2:, :] = 0.0
    return mask.reshape(h * w)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "inpaint-mnist"), data_dir=True,
                                     backend=True)
    parser.add_argument("--checkpoint", default=os.path.join("runs", "mnist"),
                        help="an unconditional run, folder or checkpoint.npz (default runs/mnist)")
    parser.add_argument("--mask", default="all", choices=MASKS + ("all",),
                        help="the half to hide and fill; all takes left, right, top, bottom in turn")
    parser.add_argument("--n", type=int, default=64, help="test images to fill (default 64)")
    parser.add_argument("--resamplings", type=int, default=10, help="RePaint r (1: plain replacement)")
    parser.add_argument("--jump-length", type=int, default=10, help="RePaint j, levels per jump back")
    _common.add_classifier_argument(parser)
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 1, "n", "resamplings", "jump_length")
    if not os.path.exists(args.checkpoint):
        parser.error(f"--checkpoint: nothing at {args.checkpoint}; train a model first, for example\n"
                     f"    python examples/train_mnist.py --data-dir DIR --out {args.checkpoint}")
    _common.prepare(args)

    run = T.use_ema_weights(T.load_run(args.checkpoint))
    if run.config.superres:
        parser.error(f"--checkpoint {args.checkpoint} is a super-resolution run (it needs a low-resolution "
                     f"image as input); inpainting needs an unconditional model")
    if run.image_shape is None:
        parser.error(f"--checkpoint {args.checkpoint} was trained on 2D points ({run.config.data}), not images")
    print(f"loaded {args.checkpoint} ({run.config.data}, step {run.step}, T = {run.diffusion.T})")
    judge = _common.load_judge(args.classifier, run.data_dim, run.config.data)  # before the long part: a bad one stops now

    dataset = _common.held_out_images(run.config.data, args.data_dir or run.config.data_dir)
    index = _common.pick_held_out(parser, dataset, args.n, args.seed)
    original, labels = dataset.x[index], dataset.labels[index]  # (n, H*W) in [-1, 1]
    hidden = [MASKS[i % 4] if args.mask == "all" else args.mask for i in range(args.n)]
    mask = np.stack([half_mask(run.image_shape, side) for side in hidden])  # (n, H*W), 1 = known
    masked = original * mask  # the hidden half at 0, which draws grey

    start = time.perf_counter()
    filled = samplers.inpaint(run.model, run.diffusion, B.asarray(original), B.asarray(mask), B.default_rng(args.seed),
                              jump_length=args.jump_length, resamplings=args.resamplings, clip_x0=True,
                              progress=not args.no_progress)
    filled = B.to_numpy(filled)
    seconds = time.perf_counter() - start
    known = mask == 1.0
    exact = int(np.sum(filled[known] == original[known]))
    total = int(np.sum(known))
    print(f"inpainted {args.n} images in {seconds:.1f} s (RePaint r = {args.resamplings}, j = {args.jump_length})")
    print(f"known pixels returned exactly: {exact} of {total}" + ("" if exact == total else "  <- NOT ALL"))

    results = {
        "checkpoint": args.checkpoint, "data": run.config.data, "train_steps": run.step, "T": run.diffusion.T,
        "n": args.n, "mask": args.mask, "resamplings": args.resamplings, "jump_length": args.jump_length,
        "seed": args.seed, "backend": args.backend, "seconds": seconds,
        "known_pixels": total, "known_pixels_exact": exact,
        "classifier": None, "accuracy_original": None, "accuracy_masked": None, "accuracy_filled": None,
    }
    if judge is not None:
        for name, images in (("original", original), ("masked", masked), ("filled", np.clip(filled, -1, 1))):
            results[f"accuracy_{name}"] = float(np.mean(_common.judge_predict(judge, images) == labels))
        results["classifier"] = args.classifier
        print(f"classified as the original digit: originals {results['accuracy_original']:.3f}, "
              f"masked inputs {results['accuracy_masked']:.3f}, filled {results['accuracy_filled']:.3f}")

    figure = _common.image_rows(os.path.join(args.out, "inpaint.png"),
                                {"original": original, "masked": masked, "filled": filled}, run.image_shape, SHOWN,
                                f"RePaint, mask {args.mask}, r = {args.resamplings}, j = {args.jump_length}")
    arrays_path = _common.save_npz(os.path.join(args.out, "inpaint.npz"), original=original, mask=mask,
                                   filled=filled, labels=labels)
    results_path = _common.save_json(os.path.join(args.out, "results.json"), results)
    print(f"wrote {figure}, {arrays_path}, {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
