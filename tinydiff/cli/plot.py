"""The plot command: one picture a call, of the schedules, the forward process, or a trained run.

    schedules  beta_t, alpha_bar_t and the SNR of every schedule (--T)
    forward    q(x_t | x_0) on a data set (--data, --schedule, --T)
    loss       the run's loss curve, and its loss by timestep
    reverse    Algorithm 2 animated
    field      where a 2D model moves each point, at a few t
    vlb        the variational bound's terms by t (Eq. 5)

A flag the chosen picture does not use is refused, not ignored.
"""

from __future__ import annotations

import math
import os

from .common import UsageError, add_backend, log, non_empty_path, positive_int, run_folder, set_backend

PLOTS = ("schedules", "forward", "reverse", "field", "loss", "vlb")
# The flags a picture reads beyond --seed, --out and --backend; the pictures of a run read --checkpoint.
USES = {"schedules": {"T"}, "forward": {"data", "data_dir", "T", "schedule"}}
DEFAULTS = {"data": "moons", "T": 1000, "schedule": "linear"}


def add_parser(commands):
    from .. import data, schedules

    plot = commands.add_parser("plot", help="draw a picture: " + ", ".join(PLOTS))
    plot.add_argument("what", choices=PLOTS)
    plot.add_argument("--checkpoint", default=None, help="run folder or checkpoint (reverse, field, loss, vlb)")
    plot.add_argument("--data", default=None, choices=data.DATASETS, help="data for 'forward' (default moons)")
    plot.add_argument("--data-dir", default=None, help="folder with MNIST-format files (forward)")
    plot.add_argument("--T", type=positive_int, default=None, help="diffusion steps (schedules, forward; default 1000)")
    plot.add_argument("--schedule", default=None, choices=[s for s in schedules.SCHEDULES if s != "custom"],
                      help="beta schedule (forward; default linear)")
    plot.add_argument("--seed", type=int, default=0)
    plot.add_argument("--out", type=non_empty_path, metavar="FILE", default=None,
                      help="output file (default: a name in the current folder or run)")
    add_backend(plot)
    return plot


def forward_snapshots(x0, diffusion, timesteps, seed=0):
    """[(t, x_t)] of one noise draw pushed through q(x_t | x_0) (Eq. 4), as host arrays."""
    from .. import backend as B

    rng = B.default_rng(seed)
    x0_device = B.asarray(x0)
    noise = rng.normal(tuple(x0_device.shape))
    return [(t, B.to_numpy(diffusion.q_sample(x0_device, t, noise))) for t in timesteps]


def reverse_snapshots(trajectory):
    """[(t, x_t)] of a sampler's trajectory, as host arrays."""
    from .. import backend as B

    return [(int(t), B.to_numpy(x)) for t, x in zip(trajectory["t"], trajectory["x"])]


def check_flags(args):
    """Refuse the flags this picture would not read; fill the defaults of the ones it does."""
    uses = USES.get(args.what, {"checkpoint"})
    unused = [name for name in ("checkpoint", "data", "data_dir", "T", "schedule")
              if getattr(args, name) is not None and name not in uses]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise UsageError(f"tinydiff plot {args.what}: this picture does not use {flags}")
    if "checkpoint" in uses and not args.checkpoint:
        raise UsageError(f"tinydiff plot {args.what}: --checkpoint is required (a run folder or checkpoint.npz)")
    for name, value in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def plot_schedules(args):
    from .. import backend as B
    from .. import viz
    from ..schedules import make_schedule

    curves = {}
    for name in ("linear", "cosine", "quadratic", "sigmoid"):
        s = make_schedule(name, args.T)
        curves[name] = {"betas": B.to_numpy(s.betas), "alpha_bars": B.to_numpy(s.alpha_bars),
                        "snr": B.to_numpy(s.snr)}
    log(f"wrote {viz.plot_schedules(curves, args.out or 'schedules.png')}")


def plot_forward(args):
    from .. import data as data_module
    from .. import viz
    from ..diffusion import GaussianDiffusion
    from ..schedules import make_schedule

    out = args.out or f"forward_{args.data}.png"
    dataset = data_module.load(args.data, n=None if args.data in data_module.IMAGE_DATASETS else 1000,
                               seed=args.seed, data_dir=args.data_dir)
    diffusion = GaussianDiffusion(make_schedule(args.schedule, args.T))
    timesteps = [int(round(f * (args.T - 1))) for f in (0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)]
    if dataset.image_shape is None:
        snapshots = forward_snapshots(dataset.x, diffusion, timesteps, args.seed)
        log(f"wrote {viz.plot_forward_2d(snapshots, out)}")
        return
    snapshots = [(t, x.reshape((-1,) + dataset.image_shape))
                 for t, x in forward_snapshots(dataset.x[:6], diffusion, timesteps, args.seed)]
    log(f"wrote {viz.plot_forward_images(snapshots, out)}")


def plot_loss(args, run, folder):
    from .. import train as T
    from .. import viz

    steps, losses = T.read_losses(folder)
    out = args.out or os.path.join(folder, "loss.png")
    viz.plot_loss(steps, losses, out)
    x0 = T.load_data(run.config).x
    if run.latent is not None:  # a latent run's denoiser works on the codes s mu(x) of the images
        x0 = run.latent.encode(x0)
    centres, bucket_losses = T.loss_by_timestep(run, x0)
    out_by_t = os.path.splitext(out)[0] + "_by_t.png"
    viz.plot_loss_by_t(centres, bucket_losses, out_by_t, T=run.diffusion.T)
    log(f"wrote {out} and {out_by_t}")


def plot_reverse(args, run, folder):
    from .. import train as T
    from .. import viz
    from .sample import sample_run

    _, trajectory = sample_run(run, 64 if run.image_shape else 1000, "ddpm", seed=args.seed,
                               return_trajectory=True, every=max(1, run.diffusion.T // 40))
    reverse = reverse_snapshots(trajectory)
    out = args.out or os.path.join(folder, "reverse.gif")
    if run.image_shape is not None:
        frames = [(t, x[:16].reshape((-1,) + run.image_shape)) for t, x in reverse]
        viz.animate_reverse_images(frames, out, nrow=4)
    else:
        viz.animate_reverse_2d(reverse, out, data=T.load_data(run.config).x[:1000])
    log(f"wrote {out}")


def plot_field(args, run, folder):
    from .. import backend as B
    from .. import train as T
    from .. import viz
    from ..autograd import no_grad
    from ..steps import timesteps_per_row

    if run.image_shape is not None or run.data_dim != 2:
        raise UsageError("tinydiff plot field: needs a model trained on a 2D set")

    def field(points, t):
        x = B.asarray(points)
        tt = timesteps_per_row(int(t), points.shape[0])
        with no_grad():
            output = run.model(x, tt)
        _, x0_hat = run.diffusion.split_prediction(output.data, x, tt)
        return B.to_numpy(x0_hat) - points  # where the model would move each point

    out = args.out or os.path.join(folder, "field.png")
    T_ = run.diffusion.T
    viz.plot_vector_field(field, out, [0, T_ // 10, T_ // 4, T_ // 2], data=T.load_data(run.config).x[:2000])
    log(f"wrote {out}")


def plot_vlb(args, run, folder):
    from .. import backend as B
    from .. import train as T
    from .. import viz

    dataset = T.load_data(run.config)
    x0 = B.asarray(dataset.x[:64])
    decoder = "discretized" if run.image_shape is not None else "gaussian"
    levels = dataset.levels or 256
    bound = run.diffusion.vlb(run.model, x0, B.default_rng(args.seed), decoder=decoder, levels=levels)
    terms = B.to_numpy(bound["terms"]).mean(axis=0)
    out = args.out or os.path.join(folder, "vlb.png")
    viz.plot_vlb_terms(terms, out, prior=float(B.to_numpy(bound["prior"]).mean()))
    bits = float(B.to_numpy(bound["bits_per_dim"]).mean())
    assumed = (f"the decoder L_0 of Eq. 13 on the data's {levels} levels" if decoder == "discretized"
               else "a Gaussian decoder L_0 (real-valued 2D data: a density, so bits/dim may be negative)")
    log(f"bound: {float(B.to_numpy(bound['total']).mean()):.3f} nats per example, {bits:.3f} bits per dimension "
        f"({assumed}; 64 examples, one x_t per step)")
    if decoder == "discretized" and bits > math.log2(levels):
        log(f"note: {bits:.2f} bits/dim is more than the {math.log2(levels):.2f} of a uniform guess over "
            f"{levels} levels: the model (its decoder at t = 1 above all) is undertrained")
    log(f"wrote {out}")


FROM_DATA = {"schedules": plot_schedules, "forward": plot_forward}
FROM_RUN = {"loss": plot_loss, "reverse": plot_reverse, "field": plot_field, "vlb": plot_vlb}


def command_plot(args):
    from .. import train as T

    check_flags(args)
    set_backend(args.backend)
    if args.what in FROM_DATA:
        FROM_DATA[args.what](args)
        return 0
    run = T.use_ema_weights(T.load_run(args.checkpoint))
    if run.latent is not None and args.what in ("reverse", "vlb"):
        raise UsageError(f"tinydiff plot {args.what}: not drawn for a latent-diffusion run (its process runs on the "
                         "autoencoder's codes, not on images); plot loss works, and sample draws decoded images")
    FROM_RUN[args.what](args, run, run_folder(args.checkpoint))
    return 0
