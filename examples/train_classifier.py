"""Train an MNIST classifier with tinydiff's own engine (an MLP at about 98% test accuracy).

    python examples/train_classifier.py --data-dir DIR [--out runs/classifier.npz]

The classifier is the judge of examples/conditional_mnist.py: it says which
digit a generated image shows. Its weights are saved like any checkpoint
(.npz with a JSON header, written atomically, loaded with allow_pickle=False)
by ``save_classifier`` and read back by ``load_classifier``.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import data, nn, optim  # noqa: E402
from tinydiff.autograd import no_grad  # noqa: E402
from tinydiff.train import read_npz, write_npz_atomic  # noqa: E402

FORMAT = "tinydiff-classifier"


def save_classifier(model, path, extra=None):
    header = {"format": FORMAT, "version": 1, "in_features": model.hidden[0].in_features,
              "hidden": [layer.out_features for layer in model.hidden], "classes": model.out.out_features,
              "activation": model.activation_name, **(extra or {})}
    return write_npz_atomic(path, header, model.state_dict())


def load_classifier(path):
    header, arrays = read_npz(path, expected_format=FORMAT, expected_version=1)
    model = nn.MLP(header["in_features"], header["hidden"], header["classes"], header["activation"])
    model.load_state_dict(arrays)
    return model, header


def predict(model, x, batch_size=2000):
    """Class predictions for host images x of shape (N, D) in [-1, 1]."""
    out = []
    with no_grad():
        for start in range(0, x.shape[0], batch_size):
            logits = model(B.asarray(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)))
            out.append(np.argmax(logits.numpy(), axis=1))
    return np.concatenate(out)


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "classifier.npz"), out_kind="file",
                                     out_help="the classifier's .npz (default runs/classifier.npz)", progress=False,
                                     data_dir=True)
    parser.add_argument("--data", default="mnist", choices=["mnist", "fashion-mnist", "digits"])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)

    train_set = data.load(args.data, data_dir=args.data_dir)
    test_set = data.load(args.data, split="test", data_dir=args.data_dir) if args.data != "digits" else train_set
    model = nn.MLP(train_set.dim, [512, 512], train_set.num_classes, "relu", rng=B.default_rng(args.seed))
    opt = optim.Adam(model.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(train_set) // args.batch_size
    total = args.epochs * steps_per_epoch
    start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        order = rng.permutation(len(train_set))
        for k in range(steps_per_epoch):
            index = order[k * args.batch_size:(k + 1) * args.batch_size]
            # light augmentation: a random shift of up to 2 pixels keeps the judge robust
            x = train_set.x[index]
            if train_set.image_shape is not None:
                h, w = train_set.image_shape
                dy, dx = rng.integers(-2, 3, size=2)
                x = np.roll(x.reshape(-1, h, w), (int(dy), int(dx)), axis=(1, 2)).reshape(len(index), -1)
            opt.lr = optim.warmup_cosine(step, args.lr, 100, total, args.lr * 0.05)
            loss = nn.cross_entropy(model(B.asarray(x)), B.asarray(train_set.labels[index]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        accuracy = (predict(model, test_set.x) == test_set.labels).mean()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}, test accuracy {accuracy:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    path = save_classifier(model, args.out, {"test_accuracy": float(accuracy), "data": args.data})
    print(f"wrote {path} (test accuracy {accuracy:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
