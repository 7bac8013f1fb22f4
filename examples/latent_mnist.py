"""Latent diffusion on MNIST against the pixel-space residual MLP at equal training time, and both in int8.

    python examples/latent_mnist.py --data-dir DIR                       # 20 minutes for each model
    python examples/latent_mnist.py --data-dir DIR --minutes 3 --out runs/latent-quick
    python examples/latent_mnist.py --data-dir DIR --pixel-run runs/mnist    # compare with a finished pixel run
    python examples/latent_mnist.py --data-dir DIR --only latent &           # the two side by side, same load,
    python examples/latent_mnist.py --data-dir DIR --only pixel; wait        # then scored together:
    python examples/latent_mnist.py --data-dir DIR --evaluate

Trains, each within --minutes of wall-clock time:

- the latent model in --out/latent: an autoencoder (its --ae-share of the
  time; tinydiff's own nn.Autoencoder, KL-regularised) to codes of
  --latent-dim numbers, then a residual MLP of --width on the scaled codes,
  both in one checkpoint, as ``tinydiff train --data mnist --latent-dim 32``
  does (tinydiff.train.latent);
- the pixel model in --out/pixel: the residual MLP of examples/train_mnist.py
  (width 1024, x0-prediction), unless --pixel-run names a finished one.

Then it draws --n digits from each by DDIM (--sample-steps, from the same
seed) and scores them with the classifier of examples/train_classifier.py
(--classifier): the Frechet distance on its features (examples/
evaluate_mnist.py) beside two floors, two draws of real test digits and the
autoencoder's reconstructions D(E(x)) of test digits, which no latent
sample can beat; the share of samples the classifier is at least 90% sure
of, and the classes they cover; and the sampling time per image. The same
is measured for each denoiser quantized to int8 (tinydiff.quantize) with
the same seed and noise, with the denoiser's relative output error per step
and the file sizes. Writes scores.json, samples.png and the two runs.
"""

import dataclasses
import os
import sys
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _common.py, beside this file
import _common  # noqa: E402  (it also finds tinydiff in this checkout)

import evaluate_mnist  # noqa: E402  (the classifier's features)
import numpy as np  # noqa: E402

from tinydiff import backend as B  # noqa: E402
from tinydiff import data, metrics, samplers  # noqa: E402
from tinydiff import quantize as Q  # noqa: E402
from tinydiff import train as T  # noqa: E402
from tinydiff.autograd import no_grad  # noqa: E402
from tinydiff.train import latent as L  # noqa: E402


def parse(argv):
    parser = _common.argument_parser(__doc__, out=os.path.join("runs", "latent-mnist"), data_dir=True)
    parser.add_argument("--minutes", type=float, default=20.0, help="training time of each model (default 20)")
    parser.add_argument("--ae-share", type=float, default=0.4, help="the autoencoder's share of it (default 0.4)")
    parser.add_argument("--latent-dim", type=int, default=32)
    parser.add_argument("--ae-kl", type=float, default=1e-4, help="KL weight of the autoencoder (0: plain)")
    parser.add_argument("--width", type=int, default=256, help="the latent denoiser's width (default 256)")
    parser.add_argument("--prediction", default="x0", choices=["eps", "x0", "v"],
                        help="what the latent denoiser predicts (default x0, as in pixel space: measured best)")
    parser.add_argument("--ae-steps", type=int, default=0, help="autoencoder steps (default: planned from --minutes)")
    parser.add_argument("--steps", type=int, default=0, help="latent diffusion steps (default: planned)")
    parser.add_argument("--pixel-steps", type=int, default=0, help="pixel diffusion steps (default: planned)")
    parser.add_argument("--pixel-run", default=None, help="a finished pixel-space run to compare with, not trained")
    parser.add_argument("--only", choices=["latent", "pixel"], default=None,
                        help="train this model alone and stop (two processes can train the two side by side, "
                             "under the same load); then score both with --evaluate")
    parser.add_argument("--evaluate", action="store_true", help="train nothing: score the two runs in --out")
    parser.add_argument("--n", type=int, default=2000, help="samples scored per model (default 2000)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps (default 50)")
    _common.add_classifier_argument(parser)
    args = parser.parse_args(argv)
    _common.check_at_least(parser, args, 2, "n", "latent_dim")
    if not 0 < args.ae_share < 1:
        parser.error(f"--ae-share must be in (0, 1), got {args.ae_share}")
    return args


def train_latent(args, dataset):
    """Both stages within --minutes: the steps of each planned from short timed runs of each."""
    start, budget = time.perf_counter(), args.minutes * 60
    config = T.TrainConfig(data="mnist", data_dir=args.data_dir, latent_dim=args.latent_dim, ae_kl=args.ae_kl,
                           width=args.width, prediction=args.prediction, seed=args.seed, checkpoint_every=2000,
                           warmup=500).resolved(True)
    ae_steps = args.ae_steps or L.autoencoder_steps_for_budget(config, args.ae_share * budget, dataset)
    codes = dataclasses.replace(dataset, x=np.random.default_rng(0).normal(size=(4096, args.latent_dim)).astype(
        np.float32), image_shape=None)  # stage 2 runs as fast on any codes: time it on these
    left = budget - args.ae_share * budget - (time.perf_counter() - start)
    steps = args.steps or T.steps_for_budget(dataclasses.replace(config, latent_dim=0), left, codes)
    config = dataclasses.replace(config, ae_steps=ae_steps, steps=steps)
    print(f"latent: planning {ae_steps} autoencoder steps and {steps} diffusion steps for {args.minutes:g} minutes")
    result = T.train(config, os.path.join(args.out, "latent"), progress=not args.no_progress, dataset=dataset,
                     max_seconds=budget - (time.perf_counter() - start))
    print(f"latent: trained to step {result.run.latent.step} + {result.run.step} in "
          f"{(time.perf_counter() - start) / 60:.1f} min")
    return result.run


def train_pixel(args, dataset):
    """examples/train_mnist.py's model within --minutes (or the finished --pixel-run)."""
    if args.pixel_run:
        return T.load_run(args.pixel_run)
    config = T.TrainConfig(data="mnist", data_dir=args.data_dir, model="resmlp", width=1024, depth=2, prediction="x0",
                           schedule="cosine", seed=args.seed, warmup=500, checkpoint_every=1000)
    config = dataclasses.replace(config, steps=args.pixel_steps or None)
    plan = SimpleNamespace(out=os.path.join(args.out, "pixel"), minutes=args.minutes, steps=args.pixel_steps,
                           resume=False, no_progress=args.no_progress)
    return _common.train_within_budget(config, plan, dataset, fewest_steps=1000).run


def draw(run, args):
    """(images (n, 784) in [-1, 1], wall seconds, CPU seconds): DDIM from --seed, decoded in a latent run."""
    wall, cpu = time.perf_counter(), time.process_time()
    clip = run.latent is None  # pixels are clipped at every step; codes are not bounded
    z = samplers.ddim(run.model, run.diffusion, (args.n, run.data_dim), B.default_rng(args.seed),
                      steps=args.sample_steps, clip_x0=clip, progress=False)
    images = run.latent.decode(z) if run.latent is not None else np.clip(B.to_numpy(z), -1, 1)
    return images, time.perf_counter() - wall, time.process_time() - cpu


def cpu_per_image(run, args, n=500, repeats=3):
    """The least CPU seconds per image of ``repeats`` DDIM draws of n samples (decoding included): the steadier
    measure of sampling cost on a shared machine (run it with one BLAS thread for the figures of README.md)."""
    times = []
    for repeat in range(repeats):
        cpu = time.process_time()
        z = samplers.ddim(run.model, run.diffusion, (n, run.data_dim), B.default_rng(repeat), steps=args.sample_steps,
                          clip_x0=run.latent is None, progress=False)
        run.latent.decode(z) if run.latent is not None else B.to_numpy(z)
        times.append((time.process_time() - cpu) / n)
    return min(times)


def judge_scores(classifier, images, real_features):
    """Frechet distance to the real features, the share the classifier is >= 90% sure of, classes covered."""
    features = evaluate_mnist.penultimate_features(classifier, images)
    with no_grad():
        logits = B.to_numpy(classifier(B.asarray(images.astype(np.float32))).data).astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    shares = np.bincount(p.argmax(axis=1), minlength=10) / len(images)
    return {"frechet": metrics.frechet_distance(features, real_features), "confident": float((p.max(1) >= 0.9).mean()),
            "classes_over_5pct": int((shares >= 0.05).sum()), "smallest_class_share": float(shares.min())}


def int8_copy(run, path):
    """The run with its denoiser quantized (written to path); (run, int8 bytes, float32 weight bytes)."""
    float_bytes = sum(B.to_numpy(v).nbytes for v in run.model.state_dict().values())
    copy = dataclasses.replace(run, model=Q.quantize(_clone(run)))
    Q.save_int8(copy, path)
    return copy, os.path.getsize(path), float_bytes


def _clone(run):
    model = T.build_model(run.config, run.data_dim, run.num_classes)
    model.load_state_dict(run.model.state_dict())
    return model


def step_errors(run, quantized, args):
    """The int8 denoiser's relative output error at a few t, on x_t made from test digits (their codes, in a
    latent run): |f_int8(x_t, t) - f(x_t, t)| / |f(x_t, t)|, root mean squares."""
    rng = np.random.default_rng(args.seed)
    x0 = data.load("mnist", split="test", data_dir=args.data_dir).x[:512]
    x0 = B.to_numpy(run.latent.encode(x0)) if run.latent is not None else x0
    errors = {}
    for t in (0, run.diffusion.T // 4, run.diffusion.T // 2, run.diffusion.T - 1):
        x_t = run.diffusion.q_sample(B.asarray(x0.astype(np.float32)), t, B.asarray(rng.normal(size=x0.shape).astype(
            np.float32)))
        errors[t] = Q.output_error(run.model, quantized.model, x_t, np.full((512,), t))
    return errors


def evaluate(name, run, args, classifier, real_features, scores):
    images, wall, cpu = draw(run, args)
    row = {"name": name, **judge_scores(classifier, images, real_features), "seconds_per_image": wall / args.n,
           "cpu_seconds_per_image": cpu / args.n, "least_cpu_seconds_per_image": cpu_per_image(run, args),
           "denoiser_parameters": run.model.num_parameters()}
    scores["models"].append(row)
    print(f"{name:<16} Frechet {row['frechet']:8.2f}  confident {row['confident']:.3f}  classes {row['classes_over_5pct']}"
          f"  smallest class {row['smallest_class_share']:.3f}  {1000 * row['seconds_per_image']:.2f} ms/image "
          f"({1000 * row['cpu_seconds_per_image']:.2f} ms CPU; least of 3: {1000 * row['least_cpu_seconds_per_image']:.3f})",
          flush=True)
    return images, row


def main(argv=None):
    args = parse(argv)
    _common.prepare(args)
    dataset = data.load("mnist", data_dir=args.data_dir)
    test = data.load("mnist", split="test", data_dir=args.data_dir)
    classifier = _common.load_judge(args.classifier, test.dim, "mnist")
    if classifier is None:
        raise SystemExit("this comparison needs the classifier (--classifier): train it with examples/train_classifier.py")
    runs = {}
    for name, trainer in (("latent", train_latent), ("pixel", train_pixel)):
        if args.evaluate:
            runs[name] = T.load_run(args.pixel_run if name == "pixel" and args.pixel_run else os.path.join(args.out, name))
        elif args.only in (None, name):
            cpu = time.process_time()
            runs[name] = trainer(args, dataset)
            print(f"{name}: {(time.process_time() - cpu) / 60:.1f} min of CPU time in this process", flush=True)
    if args.only:
        return 0
    latent_run, pixel_run = (T.use_ema_weights(runs[name]) for name in ("latent", "pixel"))

    order = np.random.default_rng(args.seed).permutation(len(test))
    real = evaluate_mnist.penultimate_features(classifier, test.x[order[:args.n]])
    other = test.x[order[args.n:2 * args.n]]
    scores = {"minutes": args.minutes, "n": args.n, "sample_steps": args.sample_steps, "models": [],
              "latent_steps": [latent_run.latent.step, latent_run.step], "pixel_steps": pixel_run.step,
              "floor_real": judge_scores(classifier, other, real),
              "floor_reconstruction": judge_scores(classifier, latent_run.latent.reconstruct(other), real),
              "reconstruction_mse": L.reconstruction_error(latent_run.latent, test.x)}
    print(f"floors: real/real Frechet {scores['floor_real']['frechet']:.2f}, autoencoder reconstructions "
          f"{scores['floor_reconstruction']['frechet']:.2f} (MSE per pixel {scores['reconstruction_mse']:.4f})")
    panels = {}
    for name, run in (("pixel", pixel_run), ("latent", latent_run)):
        panels[name], _ = evaluate(name, run, args, classifier, real, scores)
        quantized, size, float_bytes = int8_copy(run, os.path.join(args.out, f"{name}-int8.npz"))
        panels[name + " int8"], row = evaluate(name + " int8", quantized, args, classifier, real, scores)
        row.update(int8_bytes=size, float32_weight_bytes=float_bytes, per_step_error=step_errors(run, quantized, args),
                   mean_abs_pixel_change=float(np.abs(panels[name + " int8"] - panels[name]).mean()))
        print(f"{'':<16} int8 file {size / 1e6:.2f} MB against {float_bytes / 1e6:.2f} MB of float32 weights; "
              f"relative output error by t {', '.join(f'{t}: {e:.4f}' for t, e in row['per_step_error'].items())}; "
              f"mean |pixel change| {row['mean_abs_pixel_change']:.4f}")
    _common.save_json(os.path.join(args.out, "scores.json"), scores)
    _common.image_rows(os.path.join(args.out, "samples.png"), panels, test.image_shape, 10,
                       f"MNIST: pixel ({pixel_run.step} steps), latent ({latent_run.latent.step} + {latent_run.step} "
                       f"steps, {latent_run.data_dim} numbers), and in int8")
    print(f"wrote {os.path.join(args.out, 'scores.json')} and {os.path.join(args.out, 'samples.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
