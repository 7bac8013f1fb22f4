"""The spiral before and after: what made the 2D defaults draw its inner turns.

    python examples/spiral_before_after.py               # before and after, about 2 minutes on 2 cores
    python examples/spiral_before_after.py --levers      # and each lever on its own, about 6 minutes
    python examples/spiral_before_after.py --data checkerboard --n 4000

"Before" is the setting the 2D sets trained with until this round, the
paper's: the linear schedule, eps-prediction, 20,000 steps at a peak rate of
1e-3. Its spiral has a sharp outer arm and inner turns smeared into a disc.
"After" is today's default (``TrainConfig(data="spiral")``). With
``--levers`` the steps between them are trained too, one change at a time,
so a reader sees which lever did what.

Every setting trains the same MLP (width 128, 3 layers, batch 256, Adam with
warmup and cosine decay, EMA 0.999), is sampled with DDPM's 1000 steps, and
is scored against a fresh draw of the data by the sliced Wasserstein
distance as a multiple of its floor (two real draws; 1.0 is a perfect
sampler) and by precision (the fraction of samples on the data; real data
scores about 0.95). Writes --out/before_after.png and a run per setting.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

from tinydiff import backend as B  # noqa: E402
from tinydiff import data as data_module  # noqa: E402
from tinydiff import metrics, samplers, viz  # noqa: E402
from tinydiff import train as T  # noqa: E402

BEFORE = dict(schedule="linear", prediction="eps", steps=20_000, lr=1e-3)
# (label, what changed, TrainConfig overrides); an empty dict is today's default
LEVERS = [
    ("cosine", "the cosine schedule", dict(BEFORE, schedule="cosine")),
    ("v", "v-prediction", dict(BEFORE, prediction="v")),
    ("cosine + v", "both", dict(BEFORE, schedule="cosine", prediction="v")),
    ("+ 40k steps", "both, 40,000 steps", dict(BEFORE, schedule="cosine", prediction="v", steps=40_000)),
]


def settings(levers):
    before = [("before", "linear, eps, 20k steps, lr 1e-3", BEFORE)]
    after = [("after", "today's default", {})]
    return before + (LEVERS if levers else []) + after


def train_and_score(name, label, overrides, args):
    if args.steps is not None:
        overrides = dict(overrides, steps=args.steps)
    config = T.TrainConfig(data=name, seed=args.seed, **overrides)
    start = time.perf_counter()
    result = T.train(config, os.path.join(args.out, label.replace(" ", "").replace("+", "plus-")),
                     progress=not args.no_progress, log=lambda *a, **k: None)
    seconds = time.perf_counter() - start
    run = T.use_ema_weights(result.run)
    samples = B.to_numpy(samplers.ddpm(run.model, run.diffusion, (args.n, 2), B.default_rng(args.seed)))
    fresh = data_module.load(name, n=args.n, seed=args.seed + 11).x
    other = data_module.load(name, n=args.n, seed=args.seed + 12).x
    floor = metrics.sliced_wasserstein(other, fresh)
    return {"label": label, "samples": samples, "data": fresh, "seconds": seconds, "config": run.config,
            "sw_ratio": metrics.sliced_wasserstein(samples, fresh) / floor,
            "precision": metrics.precision(samples, fresh), "real_precision": metrics.precision(other, fresh)}


def plot(rows, name, path):
    """The data, then a column per setting: its samples on the same axes, its scores in the title."""
    fig = _common.figure(2.6 * (len(rows) + 1), 3.0)
    view, size = _common.square_view(rows[0]["data"]), _common.point_size(len(rows[0]["data"]))
    panels = [(f"{name}: data", rows[0]["data"], viz.DATA_COLOR)]
    panels += [(f"{r['label']}\nSW {r['sw_ratio']:.2f}x floor, precision {r['precision']:.2f}", r["samples"],
                viz.POINT_COLOR) for r in rows]
    for k, (title, points, color) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        _common.scatter_panel(ax, [(points, color, 0.7)], view, size)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize="small")
    return _common.save_figure(fig, path, f"{name}, {len(rows[0]['samples']):,} DDPM samples per setting")


def main(argv=None):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "before_after"))
    parser.add_argument("--data", default="spiral", choices=data_module.DATASETS_2D)
    parser.add_argument("--levers", action="store_true", help="also train each lever on its own")
    parser.add_argument("--n", type=int, default=10_000, help="samples per setting (default 10,000)")
    parser.add_argument("--steps", type=int, default=None,
                        help="train every setting this many steps instead of its own (a quick look)")
    args = parser.parse_args(argv)
    if args.n < 2 or (args.steps is not None and args.steps < 1):
        parser.error(f"--n must be at least 2 and --steps at least 1, got {args.n} and {args.steps}")
    rows = []
    print(f"{'setting':14s} {'changed':34s} {'train s':>8s} {'SW/floor':>9s} {'precision':>10s} {'real':>6s}")
    for label, changed, overrides in settings(args.levers):
        r = train_and_score(args.data, label, overrides, args)
        rows.append(r)
        print(f"{label:14s} {changed:34s} {r['seconds']:8.1f} {r['sw_ratio']:9.2f} {r['precision']:10.3f} "
              f"{r['real_precision']:6.3f}", flush=True)
    after = rows[-1]["config"]
    print(f"after = {after.schedule} schedule, {after.prediction}-prediction, {after.steps:,} steps, lr {after.lr:g}")
    print(f"wrote {plot(rows, args.data, os.path.join(args.out, 'before_after.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
