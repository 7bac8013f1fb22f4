"""Score MNIST samples by the Frechet distance on our own classifier's features, beside the real-against-real floor.

    python examples/evaluate_mnist.py runs/mnist/samples.npy [more.npy ...] --data-dir DIR
    python examples/evaluate_mnist.py a.npy b.npy --n 2000 --classifier runs/classifier.npz --out runs/evaluate

Each samples file is a .npy array of N flattened images (N, 784) in [-1, 1]
(what examples/train_mnist.py and ``python -m tinydiff sample`` write), read
without pickle. The features are the 512 numbers of the penultimate layer of
the MNIST classifier trained by examples/train_classifier.py (what FID does
with the Inception network, here with a network trained on the same digits).
The distance is FID's formula, ``tinydiff.metrics.frechet_distance``, between
the first --n samples and --n test images; the floor is the same distance
between two disjoint draws of --n test images, what a perfect sampler would
score at that n. A distance means little without it. The scores are also
written to --out/scores.json.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import metrics  # noqa: E402
from tinydiff.autograd import no_grad  # noqa: E402


def penultimate_features(classifier, images, batch_size=1000):
    """The classifier's last hidden layer (after its activation) for host images (N, D) in [-1, 1]: (N, hidden)."""
    out = []
    with no_grad():
        for start in range(0, images.shape[0], batch_size):
            h = B.asarray(np.ascontiguousarray(images[start:start + batch_size], dtype=np.float32))
            for layer in classifier.hidden:
                h = classifier.act(layer(h))
            out.append(B.to_numpy(h.data).astype(np.float64))
    return np.concatenate(out)


def load_samples(parser, path, n, dim):
    """The first n samples of a .npy file as host float32 (n, dim), clipped to [-1, 1]; refused by name if unfit."""
    try:
        samples = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        parser.error(f"{path}: not a readable .npy array ({error})")
    samples = samples.reshape(samples.shape[0], -1) if samples.ndim >= 2 else samples
    if samples.ndim != 2 or samples.shape[1] != dim or samples.shape[0] < n:
        parser.error(f"{path}: needs at least --n {n} images of {dim} pixels, got shape {samples.shape}")
    if not np.all(np.isfinite(samples[:n])):
        parser.error(f"{path}: holds NaN or inf values")
    return np.clip(samples[:n].astype(np.float32), -1.0, 1.0)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "evaluate"), progress=False, data_dir=True)
    parser.add_argument("samples", nargs="+", help=".npy files of samples (N, 784) in [-1, 1]")
    parser.add_argument("--n", type=int, default=2000, help="samples and real images compared (default 2000)")
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist"])
    _common.add_classifier_argument(parser)
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 2, "n")
    test = _common.held_out_images(args.data, args.data_dir)
    if 2 * args.n > len(test):
        parser.error(f"--n {args.n}: the floor needs two disjoint draws of {args.n} from {len(test)} test images")
    classifier = _common.load_judge(args.classifier, test.dim, args.data)
    if classifier is None:
        parser.error("the Frechet distance needs the classifier's features: give --classifier")
    order = np.random.default_rng(args.seed).permutation(len(test))
    real_a = penultimate_features(classifier, test.x[order[:args.n]])
    real_b = penultimate_features(classifier, test.x[order[args.n:2 * args.n]])
    floor = metrics.frechet_distance(real_a, real_b)
    scores = {"n": args.n, "floor": floor, "samples": {}}
    print(f"Frechet distance on the classifier's penultimate layer ({real_a.shape[1]} features), n = {args.n}")
    print(f"{'samples':<48} {'distance':>10} {'/ floor':>8}")
    print(f"{'real/real (two test draws): the floor':<48} {floor:10.3f} {1.0:8.2f}")
    for path in args.samples:
        samples = load_samples(parser, path, args.n, test.dim)
        distance = metrics.frechet_distance(penultimate_features(classifier, samples), real_a)
        scores["samples"][path] = distance
        print(f"{path[-48:]:<48} {distance:10.3f} {distance / floor:8.2f}")
    _common.prepare(args)
    print(f"wrote {_common.save_json(os.path.join(args.out, 'scores.json'), scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
