"""Training: the configuration, one step of Algorithm 1, the loop, checkpoints and resume.

    config = TrainConfig(data="moons", steps=5000)
    result = train(config, out_dir="runs/moons")

    config.py      TrainConfig: every setting, its default and its help text
    run.py         Run, new_run, load_run: model, diffusion, optimizer, EMA, generator
    loop.py        train_step (Algorithm 1 on one screen) and train (the loop around it)
    log.py         TrainingLog: losses.csv, the progress line, the NaN stop, checkpoint writes
    checkpoint.py  .npz with a JSON header, written atomically, read without pickle
    folder.py      the run folder's lock, loss log and writability check
    latent.py      latent diffusion (latent_dim > 0): stage 1 trains nn.Autoencoder, its
                   scale factor, stage 2 on its codes; both in the one checkpoint

Nothing is lost: a checkpoint is written every ``checkpoint_every`` steps and
at the end, atomically (a crash leaves the old file or the new one), and only
when its weights are finite; ``resume=True`` continues exactly (N steps
straight and N/2 + N/2 give the same parameters, bit for bit on NumPy); a NaN
loss stops with a message naming the step and the last good checkpoint;
Ctrl-C and SIGTERM save and return.

On several processes (``mpiexec -n N``), every rank calls
``train(config, out_dir, communicator=tinydiff.distributed.connect())``:
each computes the loss of its rows of every batch, one all-reduce sums the
gradients, and the result is the one process's to float32 round-off.
"""

from ..data import low_resolution
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CheckpointError,
    read_checkpoint,
    read_checkpoint_header,
    read_npz,
    save_checkpoint,
    write_npz_atomic,
)
from .config import MODELS, TrainConfig
from .folder import RunFolderError, read_losses
from .loop import (
    RESUME_OVERRIDES,
    TrainingError,
    TrainResult,
    drop_labels,
    learning_rate,
    steps_for_budget,
    train,
    train_step,
)
from .run import Run, build_diffusion, build_model, load_data, load_run, loss_by_timestep, new_run, use_ema_weights

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "MODELS", "RESUME_OVERRIDES", "Run",
    "RunFolderError", "TrainConfig", "TrainResult", "TrainingError", "build_diffusion", "build_model",
    "drop_labels", "learning_rate", "load_data", "load_run", "loss_by_timestep", "low_resolution", "new_run",
    "read_checkpoint", "read_checkpoint_header", "read_losses", "read_npz", "save_checkpoint", "steps_for_budget",
    "train", "train_step", "use_ema_weights", "write_npz_atomic",
]
