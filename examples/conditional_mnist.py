"""Class-conditional MNIST with classifier-free guidance: how the weight w trades diversity for accuracy.

    python examples/train_classifier.py --data-dir DIR                  # the judge, runs/classifier.npz
    python examples/conditional_mnist.py --data-dir DIR                 # about 20 minutes on two cores
    python examples/conditional_mnist.py --checkpoint runs/conditional-mnist --guidance 0 1 3 5
    python examples/conditional_mnist.py --data digits --minutes 1 --out runs/conditional-digits

Trains the residual-MLP denoiser with labels (Ho and Salimans 2022: each
label is replaced by a learned null class with probability --label-dropout,
so one network learns eps(x, c) and eps(x, null)), with x0-prediction, the
cosine schedule and EMA as in examples/train_mnist.py, within --minutes; or
loads a finished run with --checkpoint (--resume continues the run in --out).

Then, for each guidance weight w, it draws --per-class digits of every class
with the guided model of Eq. 6, eps~ = (1 + w) eps(x, c) - w eps(x, null),
all from the same starting noise, and measures:
  accuracy   the fraction the classifier of examples/train_classifier.py
             (--classifier) reads as the asked digit;
  diversity  the mean pairwise L2 distance between samples of one class,
             divided by the same for real test images of that class, averaged
             over classes: 1.0 is as diverse as the data, lower is more alike.
Writes into --out: checkpoint.npz and losses.csv (when it trains),
samples_w{w}.png (a row per digit), guidance.png (the w side by side),
samples.npz and results.json.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import samplers, viz  # noqa: E402
from tinydiff import train as T  # noqa: E402

SHOWN_PER_CLASS = 10  # images per row in the figures


def mean_pairwise_distance(x):
    """Mean Euclidean distance over the m (m - 1) / 2 distinct pairs of rows of x (m, D)."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"mean_pairwise_distance needs at least 2 rows, got {x.shape[0]}")
    squared = np.sum(x * x, axis=1)
    d2 = squared[:, None] + squared[None, :] - 2.0 * (x @ x.T)  # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, (m, m)
    upper = np.triu_indices(x.shape[0], k=1)
    return float(np.mean(np.sqrt(np.maximum(d2[upper], 0.0))))


def diversity_ratios(samples, labels, real, real_labels, num_classes):
    """Per class: mean pairwise distance of the samples / that of the real images of the class."""
    ratios = []
    for k in range(num_classes):
        ratios.append(mean_pairwise_distance(samples[labels == k]) / mean_pairwise_distance(real[real_labels == k]))
    return np.array(ratios)


def reference_images(dataset, per_class=500, seed=0):
    """At most ``per_class`` real images of each class of ``dataset``, drawn by ``seed``: (x, labels)."""
    rng = np.random.default_rng(seed)
    keep = []
    for k in range(dataset.num_classes):
        index = np.flatnonzero(dataset.labels == k)
        keep.append(rng.choice(index, size=min(per_class, index.size), replace=False))
    keep = np.sort(np.concatenate(keep))
    return dataset.x[keep], dataset.labels[keep]


def side_by_side(panels, per_row):
    """Images of several panels (each (rows * per_row, H, W), row-major) as one grid, a grey column between.

    Returns (images, images per row) for ``viz.image_grid``.
    """
    h, w = panels[0].shape[1:]
    gap = np.zeros((1, h, w), dtype=np.float32)  # 0 draws mid-grey
    rows = panels[0].shape[0] // per_row
    out = []
    for r in range(rows):
        for i, panel in enumerate(panels):
            if i:
                out.append(gap)
            out.append(panel[r * per_row:(r + 1) * per_row])
    return np.concatenate(out), len(panels) * per_row + len(panels) - 1


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "conditional-mnist"), data_dir=True,
                                     backend=True)
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    parser.add_argument("--checkpoint", default=None, help="a trained conditional run (folder or .npz): no training")
    _common.add_training_arguments(parser)
    parser.add_argument("--label-dropout", type=float, default=0.1, help="p of the null label while training")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 3.0], help="weights w (default 0 1 3)")
    parser.add_argument("--per-class", type=int, default=100, help="samples per digit and w for the measures")
    _common.add_sampler_arguments(parser)
    _common.add_classifier_argument(parser)
    args = parser.parse_args(argv)
    if any(not w >= 0 for w in args.guidance):
        parser.error(f"--guidance: every weight w must be >= 0, got {args.guidance}")
    if args.per_class < 2:
        parser.error(f"--per-class must be >= 2 (diversity needs pairs), got {args.per_class}")
    _common.check_resume(parser, args)
    _common.prepare(args)
    progress = not args.no_progress

    run = None
    if args.checkpoint:
        run = T.load_run(args.checkpoint)
        if not run.config.conditional:
            parser.error(f"--checkpoint {args.checkpoint} is not class-conditional; train one with this script")
        print(f"loaded {args.checkpoint} (step {run.step})")
    # The real images and the judge before training, so a wrong classifier stops the run now, not in 20 minutes.
    if run is not None:
        data_name, data_dir = run.config.data, args.data_dir or run.config.data_dir
    elif args.resume:
        saved = T.read_checkpoint(args.out)[0]["config"]  # the run in --out keeps its own data set
        data_name, data_dir = saved["data"], args.data_dir or saved["data_dir"]
    else:
        data_name, data_dir = args.data, args.data_dir
    held_out = _common.held_out_images(data_name, data_dir)
    real, real_labels = reference_images(held_out, seed=args.seed)
    judge = _common.load_judge(args.classifier, held_out.dim, data_name)
    judge_real = None
    if judge is not None:
        judge_real = float(np.mean(_common.judge_predict(judge, real) == real_labels))
        print(f"classifier accuracy on the real images: {judge_real:.3f}")

    if run is None:
        config = T.TrainConfig(
            data=args.data, data_dir=args.data_dir, conditional=True, label_dropout=args.label_dropout,
            steps=args.steps or None, batch_size=args.batch_size, lr=args.lr, model="resmlp", width=args.width,
            depth=args.blocks, T=args.T, prediction="x0", schedule="cosine", ema=args.ema, seed=args.seed,
            warmup=500, checkpoint_every=1000,
        )
        run = _common.train_within_budget(config, args).run
    run = T.use_ema_weights(run)

    classes = run.num_classes
    labels = np.repeat(np.arange(classes), args.per_class)  # class k fills rows k*per_class ...
    shown = min(SHOWN_PER_CLASS, args.per_class)
    first = np.concatenate([np.arange(k * args.per_class, k * args.per_class + shown) for k in range(classes)])
    image_shape = tuple(run.image_shape)
    rows, panels, arrays, written = [], [], {"labels": labels}, []
    for w in args.guidance:
        model = samplers.classifier_free_guidance(run.model, w)  # Eq. 6
        rng = B.default_rng(args.seed)  # the same x_T for every w: the rows differ by w alone
        common = dict(clip_x0=True, progress=progress, batch_size=1000, model_kwargs={"y": B.asarray(labels)})
        start = time.perf_counter()
        if args.sampler == "ddim":
            samples = samplers.ddim(model, run.diffusion, (labels.shape[0], run.data_dim), rng,
                                    steps=args.sample_steps, **common)
        else:
            samples = samplers.ddpm(model, run.diffusion, (labels.shape[0], run.data_dim), rng, **common)
        samples = np.clip(B.to_numpy(samples), -1.0, 1.0)
        seconds = time.perf_counter() - start
        row = {"w": w, "seconds": seconds, "accuracy": None, "accuracy_per_class": None}
        if judge is not None:
            correct = _common.judge_predict(judge, samples) == labels
            row["accuracy"] = float(np.mean(correct))
            row["accuracy_per_class"] = [float(np.mean(correct[labels == k])) for k in range(classes)]
        ratios = diversity_ratios(samples, labels, real, real_labels, classes)
        row["diversity_ratio"] = float(np.mean(ratios))
        row["diversity_ratio_per_class"] = [float(r) for r in ratios]
        rows.append(row)
        name = f"w{w:g}"
        arrays[name] = samples
        images = samples[first].reshape((-1,) + image_shape)  # (classes * shown, H, W)
        panels.append(images)
        written.append(viz.image_grid(images, os.path.join(args.out, f"samples_{name}.png"), nrow=shown,
                                      row_labels=list(range(classes)), title=f"w = {w:g}"))

    grid, per_row = side_by_side(panels, shown)
    written.append(viz.image_grid(grid, os.path.join(args.out, "guidance.png"), nrow=per_row,
                                  row_labels=list(range(classes)),
                                  title="guidance w = " + ", ".join(f"{w:g}" for w in args.guidance)
                                  + " (left to right)"))
    written.append(_common.save_npz(os.path.join(args.out, "samples.npz"), **arrays))

    print(f"\n{'w':>5} {'accuracy':>9} {'diversity':>10} {'seconds':>8}   "
          f"({args.per_class} per digit, {args.sampler}"
          f"{' ' + str(args.sample_steps) if args.sampler == 'ddim' else ''}; diversity 1.0 = as diverse as the data)")
    for row in rows:
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        print(f"{row['w']:>5g} {accuracy:>9} {row['diversity_ratio']:>10.3f} {row['seconds']:>8.1f}")

    results = {
        "data": run.config.data, "train_steps": run.step, "T": run.diffusion.T, "sampler": args.sampler,
        "sample_steps": args.sample_steps if args.sampler == "ddim" else run.diffusion.T,
        "per_class": args.per_class, "seed": args.seed, "backend": args.backend,
        "classifier": args.classifier if judge is not None else None,
        "classifier_accuracy_on_real": judge_real, "real_images": int(real.shape[0]),
        "guidance": rows,
    }
    written.append(_common.save_json(os.path.join(args.out, "results.json"), results))
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
