"""The training loop: exact resume, atomic checkpoints that refuse bad files,
NaN stops, Ctrl-C saves, and a short run under array_api_strict."""

import os
import signal

import numpy as np
import pytest

from tinydiff import backend as B
from tinydiff import train as T


def tiny_config(**overrides):
    values = dict(data="moons", n_data=512, steps=40, batch_size=32, width=16, depth=2, emb_dim=8,
                  T=50, warmup=5, checkpoint_every=10, log_every=5, ema=0.9, seed=3,
                  schedule="linear", prediction="eps")  # the paper's setting, not the 2D defaults
    values.update(overrides)
    return T.TrainConfig(**values)


def params_of(run):
    return {name: B.to_numpy(p.data).copy() for name, p in run.model.named_parameters()}


def test_resume_continues_exactly(tmp_path):
    straight = T.train(tiny_config(), tmp_path / "straight", progress=False, log=lambda *_: None)
    first = T.train(tiny_config(), tmp_path / "split", progress=False, stop_at=20, log=lambda *_: None)
    assert first.run.step == 20
    second = T.train(tiny_config(), tmp_path / "split", resume=True, progress=False, log=lambda *_: None)
    assert second.run.step == 40
    a, b = params_of(straight.run), params_of(second.run)
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert np.array_equal(B.to_numpy(straight.run.ema.state_dict()["shadow"]), B.to_numpy(second.run.ema.state_dict()["shadow"]))
    # the loss log holds every step once
    steps, losses = T.read_losses(tmp_path / "split")
    assert list(steps) == list(range(1, 41))
    s_steps, s_losses = T.read_losses(tmp_path / "straight")
    assert np.allclose(losses, s_losses)


def test_training_lowers_the_loss(tmp_path):
    result = T.train(tiny_config(steps=300, width=64, T=100, lr=3e-3), tmp_path, progress=False,
                     log=lambda *_: None)
    losses = np.array([v for _, v in result.losses])
    assert losses[-50:].mean() < 0.8 * losses[:20].mean()


def test_checkpoint_round_trip_and_header(tmp_path):
    result = T.train(tiny_config(steps=10), tmp_path, progress=False, log=lambda *_: None)
    header, arrays = T.read_checkpoint(result.checkpoint)
    assert header["step"] == 10 and header["config"]["seed"] == 3
    assert "ema/shadow" in arrays and "optimizer/exp_avg" in arrays
    loaded = T.load_run(tmp_path)  # a folder works too
    assert loaded.step == 10
    assert all(np.array_equal(a, b) for a, b in zip(params_of(loaded).values(), params_of(result.run).values()))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # no temporary left behind


def test_bad_checkpoints_are_refused_with_a_message(tmp_path):
    with pytest.raises(T.CheckpointError, match="no checkpoint at"):
        T.load_run(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file")
    with pytest.raises(T.CheckpointError, match="corrupt or truncated"):
        T.load_run(garbage)
    good = T.train(tiny_config(steps=5), tmp_path / "run", progress=False, log=lambda *_: None).checkpoint
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(good, "rb").read()[:2000])
    with pytest.raises(T.CheckpointError, match="truncated"):
        T.load_run(truncated)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, header=np.array([{"format": "tinydiff-checkpoint"}], dtype=object))
    with pytest.raises(T.CheckpointError, match="pickle"):
        T.load_run(pickled)
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(T.CheckpointError, match="not a tinydiff checkpoint"):
        T.load_run(other)
    # a checkpoint whose arrays do not fit its configuration
    mangled = tmp_path / "mangled.npz"
    with np.load(good, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    out_shape = arrays["model/out.weight"].shape
    arrays["model/out.weight"] = np.zeros((7, 7), dtype=np.float32)  # a size the header does not describe
    np.savez(mangled, **arrays)
    with pytest.raises(T.CheckpointError, match="describes a model of 482 parameters, but the file holds 499"):
        T.load_run(mangled)
    arrays["model/out.weight"] = np.zeros(out_shape[::-1], dtype=np.float32)  # the right size, the wrong shape
    np.savez(mangled, **arrays)
    with pytest.raises(T.CheckpointError, match="out.weight"):
        T.load_run(mangled)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    result = T.train(tiny_config(steps=5), tmp_path, progress=False, log=lambda *_: None)
    before = open(result.checkpoint, "rb").read()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        T.save_checkpoint(result.run, result.checkpoint)
    assert open(result.checkpoint, "rb").read() == before  # the old file is intact
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_nan_loss_stops_with_the_step_and_the_last_checkpoint(tmp_path, monkeypatch):
    from tinydiff.diffusion import GaussianDiffusion

    original = GaussianDiffusion.training_loss
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        from tinydiff.autograd import is_grad_enabled

        calls["n"] += is_grad_enabled()  # training steps only (a checkpoint's probe runs without a graph)
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] == 17 and is_grad_enabled() else loss

    monkeypatch.setattr(GaussianDiffusion, "training_loss", poisoned)
    with pytest.raises(T.TrainingError) as error:
        T.train(tiny_config(), tmp_path, progress=False, log=lambda *_: None)
    message = str(error.value)
    assert "step 17" in message and "checkpoint.npz (step 10)" in message
    assert T.load_run(tmp_path).step == 10


def test_ctrl_c_saves_and_resume_finishes(tmp_path, monkeypatch):
    from tinydiff.diffusion import GaussianDiffusion

    original = GaussianDiffusion.training_loss
    calls = {"n": 0}

    def interrupting(self, *args, **kwargs):
        from tinydiff.autograd import is_grad_enabled

        calls["n"] += is_grad_enabled()  # training steps only (a checkpoint's probe runs without a graph)
        if calls["n"] == 13:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "training_loss", interrupting)
    messages = []
    result = T.train(tiny_config(), tmp_path, progress=False, log=messages.append)
    assert result.stopped_early and result.run.step == 13
    assert T.load_run(tmp_path).step == 13
    assert any("--resume" in m for m in messages)
    monkeypatch.setattr(GaussianDiffusion, "training_loss", original)
    assert T.train(tiny_config(), tmp_path, resume=True, progress=False, log=lambda *_: None).run.step == 40


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        tiny_config(steps=0).validate()
    with pytest.raises(ValueError, match="ema must be in"):
        tiny_config(ema=1.5).validate()
    with pytest.raises(ValueError, match="data must be one of"):
        tiny_config(data="cifar").validate()
    with pytest.raises(ValueError, match="needs labels"):
        T.new_run(tiny_config(data="swissroll", conditional=True))


def test_conditional_training_runs(tmp_path):
    result = T.train(tiny_config(data="eightgaussians", conditional=True, steps=10), tmp_path,
                     progress=False, log=lambda *_: None)
    assert result.run.num_classes == 8 and result.run.model.classes is not None
    loaded = T.load_run(tmp_path)
    assert loaded.config.conditional and loaded.model.classes is not None


def test_short_run_under_array_api_strict(tmp_path):
    with B.using("array_api_strict"):
        result = T.train(tiny_config(steps=12), tmp_path, progress=False, log=lambda *_: None)
        assert result.run.step == 12
        assert "array_api_strict" in type(result.run.model.parameters()[0].data).__module__
        resumed = T.load_run(tmp_path)
        assert resumed.step == 12
    header, _ = T.read_checkpoint(result.checkpoint)
    assert header["backend"] == "array_api_strict"


@pytest.mark.parametrize("kind,kwargs", [
    ("mlp", dict()), ("mlp", dict(conditional=True, superres=2)),
    ("resmlp", dict()), ("resmlp", dict(conditional=True, superres=2, depth=3)),
])
def test_parameter_count_matches_the_built_model(kind, kwargs):
    config = T.TrainConfig(data="digits", model=kind, width=24, emb_dim=8, **kwargs).resolved()
    model = T.build_model(config, data_dim=64, num_classes=10)
    assert T.run.parameter_count(config, 64, 10) == model.num_parameters()


def test_a_custom_betas_file_and_zero_terminal_snr_reach_the_schedule(tmp_path):
    betas = np.linspace(2e-4, 0.04, 50)
    path = tmp_path / "betas.txt"
    np.savetxt(path, betas)
    quiet = dict(progress=False, log=lambda *_: None)
    result = T.train(tiny_config(betas_file=str(path), schedule=None), tmp_path / "custom", **quiet)
    np.testing.assert_allclose(B.to_numpy(result.run.diffusion.schedule.betas), betas, rtol=1e-12)
    reloaded = T.load_run(result.checkpoint)  # the betas travel in the checkpoint: the file is not needed
    path.unlink()
    np.testing.assert_allclose(B.to_numpy(reloaded.diffusion.schedule.betas), betas, rtol=1e-12)
    with pytest.raises(ValueError, match="holds 50 betas, and T is 40"):
        np.savetxt(path, betas)
        T.train(tiny_config(betas_file=str(path), schedule=None, T=40), tmp_path / "wrong", **quiet)
    zero = T.train(tiny_config(zero_terminal_snr=True, prediction="v"), tmp_path / "zero", **quiet).run
    assert float(B.to_numpy(zero.diffusion.schedule.alpha_bars)[-1]) == 0.0
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        T.train(tiny_config(zero_terminal_snr=True), tmp_path / "eps", **quiet)  # eps, the 2D default
    assert not (tmp_path / "eps").exists() and not (tmp_path / "wrong").exists()


def test_a_failed_checkpoint_write_names_the_file_the_step_and_the_last_good_one(tmp_path, monkeypatch):
    from tinydiff.train import log  # TrainingLog writes the checkpoints

    calls = {"n": 0}
    real = log.save_checkpoint

    def full_disk(run, path):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(run, path)

    monkeypatch.setattr(log, "save_checkpoint", full_disk)
    with pytest.raises(T.TrainingError) as error:
        T.train(tiny_config(), tmp_path, progress=False, log=lambda *_: None)
    message = str(error.value)
    assert "checkpoint.npz at step 20 (No space left on device)" in message and "(step 10)" in message
    assert T.load_run(tmp_path).step == 10  # the last good checkpoint is intact


def test_the_bound_uses_the_data_s_own_number_of_levels():
    from tinydiff.diffusion import GaussianDiffusion
    from tinydiff.schedules import make_schedule

    diffusion = GaussianDiffusion(make_schedule("linear", 50), prediction_type="x0")
    x0 = B.asarray(np.array([[-1.0, -0.5, 0.25, 1.0]]), dtype=B.float64())

    def perfect(x_t, t):
        return x0  # predicts x0 exactly: the decoder's cost is the mass of each bin around the mean

    coarse = diffusion.vlb(perfect, x0, B.default_rng(0), levels=17)["terms"][0, 0]
    fine = diffusion.vlb(perfect, x0, B.default_rng(0), levels=256)["terms"][0, 0]
    assert float(coarse) < float(fine)  # wider bins hold more of the decoder's mass: fewer nats
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        diffusion.vlb(perfect, x0, B.default_rng(0), levels=1)
