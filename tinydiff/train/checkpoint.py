"""Checkpoints: an .npz of arrays with a JSON header, written atomically, read without pickle.

A file from elsewhere can hold only arrays and JSON: it is loaded with
allow_pickle=False, and its header is checked before anything is built.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from .. import backend as B
from ..files import atomic_write

CHECKPOINT_FORMAT = "tinydiff-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated, or not a tinydiff checkpoint."""


def _json_array(value) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode("utf-8"), dtype=np.uint8)


def write_npz_atomic(path, header: dict, arrays: dict) -> str:
    """Write arrays and a JSON header to ``path`` as .npz, atomically (see tinydiff.files).

    A crash leaves the old file or the new one, never half of one. Any
    model's weights can be saved this way.
    """
    payload = {"header": _json_array(header)}
    payload.update({name: B.to_numpy(value) for name, value in arrays.items()})
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    with atomic_write(path, "wb") as file:
        np.savez(file, **payload)
    return os.fspath(path)


def _checkpoint_path(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        candidate = os.path.join(path, "checkpoint.npz")
        if not os.path.exists(candidate):
            raise CheckpointError(f"{path} is a folder without checkpoint.npz in it")
        path = candidate
    return path


def _load_arrays(path, only=None):
    """The arrays of an .npz file (only the entries named in ``only``, when given), without pickle."""
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise CheckpointError(f"{path} is not an .npz archive (corrupt or truncated, or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files if only is None or name in only}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise CheckpointError(f"{path} holds pickled objects; refusing to load it (only arrays are allowed)") from None
        raise CheckpointError(f"{path} is not a readable .npz checkpoint ({error})") from None
    except Exception as error:  # zipfile.BadZipFile, EOFError, OSError, ...
        raise CheckpointError(f"{path} is not a readable .npz checkpoint (corrupt or truncated: {error})") from None


def _parse_header(path, arrays, expected_format, expected_version):
    """The JSON header of a checkpoint's arrays, checked (CheckpointError naming the file)."""
    if "header" not in arrays or arrays["header"].dtype != np.uint8:
        raise CheckpointError(f"{path} is an .npz file but not a tinydiff checkpoint (no JSON header)")
    try:
        header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: the checkpoint header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the checkpoint header is not a JSON object")
    if header.get("format") != expected_format:
        raise CheckpointError(f"{path} is not a {expected_format} file (format {header.get('format')!r})")
    if header.get("version") != expected_version:
        raise CheckpointError(f"{path} has version {header.get('version')}, this tinydiff reads {expected_version}")
    return header


def read_npz(path, expected_format=CHECKPOINT_FORMAT, expected_version=CHECKPOINT_VERSION) -> tuple[dict, dict]:
    """(header, arrays) of a file written by write_npz_atomic; CheckpointError for anything else.

    A folder is taken to mean the checkpoint.npz inside it.
    """
    path = _checkpoint_path(path)
    arrays = _load_arrays(path)
    return _parse_header(path, arrays, expected_format, expected_version), arrays


def read_checkpoint_header(path) -> dict:
    """The JSON header of a training checkpoint alone (the weights are not read)."""
    path = _checkpoint_path(path)
    return _parse_header(path, _load_arrays(path, only=("header",)), CHECKPOINT_FORMAT, CHECKPOINT_VERSION)


def checkpoint_header(run) -> dict:
    """The JSON header of a run's checkpoint: configuration, step, generator state, shapes."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": dataclasses.asdict(run.config),
        "step": run.step,
        "rng_state": run.rng.state(),
        "optimizer": {"step_count": run.optimizer.step_count, "lr": run.optimizer.lr},
        "ema": None if run.ema is None else {"updates": run.ema.updates, "decay": run.ema.decay},
        "data_dim": run.data_dim,
        "num_classes": run.num_classes,
        "image_shape": list(run.image_shape) if run.image_shape else None,
        "backend": B.get_backend(),
    }


def checkpoint_arrays(run) -> dict:
    """The arrays of a run's checkpoint: model/..., optimizer/..., ema/shadow."""
    arrays = {"model/" + name: value for name, value in run.model.state_dict().items()}
    for name, value in run.optimizer.state_dict().items():
        if name not in ("step_count", "lr"):
            arrays["optimizer/" + name] = value
    if run.ema is not None:
        arrays["ema/shadow"] = run.ema.state_dict()["shadow"]
    return arrays


def save_checkpoint(run, path) -> str:
    """Write a run (model, optimizer, EMA, step, generator, config) to ``path`` atomically.

    A latent run's autoencoder (train.latent.LatentStage) goes into the same
    file: an "autoencoder" header entry and "autoencoder/..." arrays.
    """
    header, arrays = checkpoint_header(run), checkpoint_arrays(run)
    if getattr(run, "latent", None) is not None:
        header["autoencoder"], arrays = run.latent.header(), {**arrays, **run.latent.arrays()}
    return write_npz_atomic(path, header, arrays)


def read_checkpoint(path) -> tuple[dict, dict]:
    """(header, arrays) of a training checkpoint; CheckpointError for anything else."""
    return read_npz(path)


def arrays_under(arrays, prefix) -> dict:
    """The entries of ``arrays`` whose names start with ``prefix``/, with the prefix removed."""
    start = len(prefix) + 1
    return {name[start:]: value for name, value in arrays.items() if name.startswith(prefix + "/")}
