"""Latent diffusion: the autoencoder's gradients and KL term, the scale factor, two-stage training and
sampling end to end, exact resume in either stage, refusal of corrupt checkpoints, and sample --int8."""

import json
import os
import signal

import numpy as np
import pytest
from conftest import as_f64, host

from tinydiff import backend as B
from tinydiff import data, nn
from tinydiff import train as T
from tinydiff.__main__ import main
from tinydiff.autograd import Tensor
from tinydiff.diffusion import normal_kl
from tinydiff.gradcheck import gradcheck
from tinydiff.train import latent as L


def quiet(*_):
    pass


def tiny_latent(**overrides):
    """A latent run on the 8x8 digits that trains both stages in about a second."""
    values = dict(data="digits", n_data=256, latent_dim=4, ae_steps=30, ae_width=16, ae_depth=1, ae_kl=1e-3,
                  steps=30, batch_size=32, width=16, depth=1, emb_dim=8, T=40, warmup=5, checkpoint_every=10,
                  log_every=5, ema=0.9, seed=5)
    values.update(overrides)
    return T.TrainConfig(**values)


def _bind(model, tensors):
    """Swap a model's parameters for given tensors (so gradcheck can vary them)."""
    for (name, _), tensor in zip(list(model.named_parameters()), tensors):
        owner = model
        *path, attr = name.split(".")
        for part in path:
            owner = owner[int(part)] if isinstance(owner, list) else getattr(owner, part)
        setattr(owner, attr, tensor)


@pytest.mark.parametrize("variational", [False, True], ids=["plain", "vae"])
def test_autoencoder_loss_passes_gradcheck(variational, backend):
    model = nn.Autoencoder(data_dim=5, latent_dim=2, width=3, depth=2, variational=variational, rng=B.default_rng(0))
    params = [as_f64(host(p.data)) for p in model.parameters()]
    x = as_f64(np.random.default_rng(1).normal(size=(3, 5)))
    noise = as_f64(np.random.default_rng(2).normal(size=(3, 2))) if variational else None

    def loss(x_in, *weights):
        _bind(model, weights)
        return model.loss(x_in, noise, kl_weight=0.3)[0]  # reconstruction + 0.3 KL: every path is checked

    assert gradcheck(loss, [Tensor(x)] + [Tensor(p) for p in params])


def test_kl_term_matches_monte_carlo_and_the_gaussian_kl(backend):
    rng = np.random.default_rng(3)
    mean, log_variance = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)) - 0.5
    kl = float(host(nn.kl_to_standard_normal(Tensor(as_f64(mean)), Tensor(as_f64(log_variance))).data))
    # the Gaussian KL of the bound (diffusion.normal_kl), written independently, per element
    elementwise = host(normal_kl(as_f64(mean), as_f64(log_variance), as_f64(np.zeros((3, 4))), as_f64(np.zeros((3, 4)))))
    assert kl == pytest.approx(elementwise.sum(axis=1).mean(), rel=1e-12)
    # Monte Carlo: E_q[log q(z) - log p(z)] with z = mu + sigma eps drawn by the reparameterization
    eps = rng.normal(size=(200_000, 3, 4))
    z = host(nn.reparameterize(Tensor(as_f64(mean)), Tensor(as_f64(log_variance)), as_f64(eps)).data)
    sigma = np.exp(0.5 * log_variance)
    np.testing.assert_allclose(z.mean(axis=0), mean, atol=5 * sigma.max() / np.sqrt(2e5))  # z has q's moments
    np.testing.assert_allclose(z.std(axis=0), sigma, rtol=0.01)
    log_ratio = (-0.5 * eps**2 - 0.5 * log_variance) - (-0.5 * z**2)  # log q(z) - log p(z); the 2 pi terms cancel
    per_draw = log_ratio.sum(axis=2).mean(axis=1)  # (draws,): sum over dimensions, mean over the batch
    assert abs(per_draw.mean() - kl) < 5 * per_draw.std() / np.sqrt(per_draw.size)


def test_scale_factor_makes_the_codes_unit_variance():
    dataset = data.load("digits")
    config = tiny_latent(ae_kl=0.0).resolved(True)
    stage = L.new_stage(config, dataset)
    raw = host(stage.mean_codes(dataset.x)).astype(np.float64)
    assert abs(raw.std() - 1) > 0.05  # the raw codes are not unit variance by chance
    scale = L.fit_scale_factor(stage, dataset.x)
    codes = host(stage.encode(dataset.x)).astype(np.float64)
    assert scale == pytest.approx(1 / raw.std(), rel=1e-12)
    assert codes.std() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(host(stage.autoencoder.from_latent(Tensor(B.asarray(codes[:5], dtype=B.default_dtype()))).data),
                               host(stage.autoencoder.decode(Tensor(B.asarray(raw[:5], dtype=B.default_dtype()))).data),
                               atol=1e-5)  # decoding undoes the scale


def test_two_stages_train_and_sample_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "run")
    code = main(["train", "--data", "digits", "--latent-dim", "4", "--ae-steps", "60", "--ae-width", "32",
                 "--ae-depth", "1", "--steps", "30", "--T", "40", "--width", "16", "--depth", "1", "--batch-size", "32",
                 "--n-data", "256", "--checkpoint-every", "20", "--no-progress", "--out", out])
    assert code == 0, capsys.readouterr().err
    run = T.load_run(out)
    assert run.latent.step == 60 and run.step == 30 and run.data_dim == 4 and run.pixel_shape == (8, 8)
    assert run.image_shape is None and run.latent.autoencoder.scale_factor > 0
    codes = host(run.latent.encode(T.load_data(run.config).x)).astype(np.float64)
    assert codes.std() == pytest.approx(1.0, abs=1e-5)  # the stored scale makes the training codes unit variance
    ae_steps, ae_losses = _ae_losses(out)
    assert list(ae_steps) == list(range(1, 61)) and ae_losses[-10:].mean() < 0.8 * ae_losses[:10].mean()
    header, arrays = T.read_checkpoint(out)
    assert header["autoencoder"]["step"] == 60 and any(k.startswith("autoencoder/weights/") for k in arrays)
    code = main(["sample", "--checkpoint", out, "--n", "12", "--sampler", "ddim", "--steps", "10", "--no-progress",
                 "--out", str(tmp_path / "s")])
    assert code == 0
    samples = np.load(tmp_path / "s" / "samples.npy", allow_pickle=False)
    assert samples.shape == (12, 64) and samples.dtype == np.float32 and -1 <= samples.min() and samples.max() <= 1
    assert os.path.getsize(tmp_path / "s" / "samples.png") > 1000
    # the command's samples are the decoded codes of the same sampler and seed
    from tinydiff.cli.sample import sample_run

    codes = sample_run(T.use_ema_weights(T.load_run(out)), 12, "ddim", steps=10, progress=False)
    np.testing.assert_array_equal(samples, run.latent.decode(codes))


def _ae_losses(out):
    rows = [line.split(",") for line in open(os.path.join(out, L.AE_LOSSES)).read().splitlines()[1:]]
    return np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def _state(run):
    """Every number a run holds: both stages' weights and optimizer moments, the EMA, the scale factor."""
    state = {"model/" + k: host(v).copy() for k, v in run.model.state_dict().items()}
    state.update({k: host(v).copy() for k, v in run.latent.arrays().items()})
    state["ema"] = host(run.ema.state_dict()["shadow"]).copy()
    state["scale"] = np.array(run.latent.autoencoder.scale_factor)
    return state


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_resume_in_stage_one_is_exact(tmp_path, monkeypatch):
    straight = T.train(tiny_latent(), tmp_path / "straight", progress=False, log=quiet)
    original, calls = nn.Autoencoder.loss, {"n": 0}

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C during stage 1: the step finishes, then it saves
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nn.Autoencoder, "loss", interrupting)
    messages = []
    first = T.train(tiny_latent(), tmp_path / "split", progress=False, log=messages.append)
    assert first.stopped_early and first.stop_signal == signal.SIGINT
    assert first.run.latent.step == 13 and first.run.step == 0 and any("stage 1" in m for m in messages)
    assert T.load_run(tmp_path / "split").latent.step == 13
    monkeypatch.setattr(nn.Autoencoder, "loss", original)
    second = T.train(tiny_latent(), tmp_path / "split", resume=True, progress=False, log=quiet)
    assert second.run.latent.step == 30 and second.run.step == 30
    _assert_identical(_state(straight.run), _state(second.run))
    assert list(_ae_losses(tmp_path / "split")[0]) == list(range(1, 31))  # every step logged once
    np.testing.assert_array_equal(_ae_losses(tmp_path / "split")[1], _ae_losses(tmp_path / "straight")[1])


def test_resume_in_stage_two_is_exact(tmp_path):
    straight = T.train(tiny_latent(), tmp_path / "straight", progress=False, log=quiet)
    first = T.train(tiny_latent(), tmp_path / "split", progress=False, stop_at=15, log=quiet)
    assert first.run.step == 15 and first.run.latent.step == 30
    second = T.train(tiny_latent(), tmp_path / "split", resume=True, progress=False, log=quiet)
    assert second.run.step == 30
    _assert_identical(_state(straight.run), _state(second.run))


def _rewrite(source, target, edit):
    """Copy a checkpoint with edit(header, arrays) applied (written as np.savez does, no pickle)."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(arrays.pop("header").tobytes().decode("utf-8"))
    edit(header, arrays)
    np.savez(target, header=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays)
    return target


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("latent")
    T.train(tiny_latent(), folder, progress=False, log=quiet)
    return folder


def _drop_entry(header, arrays):
    del header["autoencoder"]


def _bad_scale(header, arrays):
    header["autoencoder"]["scale_factor"] = -1.0


def _wrong_size(header, arrays):
    arrays["autoencoder/weights/mean.weight"] = np.zeros((3, 3), dtype=np.float32)


def _pixel_shape(header, arrays):
    header["image_shape"] = [2, 2]  # the denoiser's 4 numbers claimed to be a 2x2 image


@pytest.mark.parametrize("edit,needle", [
    (_drop_entry, "needs the header field 'autoencoder'"),
    (_bad_scale, "scale_factor must be null or a positive number"),
    (_wrong_size, "describes an autoencoder of"),
    (_pixel_shape, "a latent run's denoiser works on latent_dim = 4"),
])
def test_a_corrupt_latent_checkpoint_is_refused(latent_run, tmp_path, edit, needle):
    bad = _rewrite(latent_run / "checkpoint.npz", tmp_path / "bad.npz", edit)
    with pytest.raises(T.CheckpointError, match=needle):
        T.load_run(bad)


def test_a_truncated_latent_checkpoint_is_refused(latent_run, tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((latent_run / "checkpoint.npz").read_bytes()[:3000])
    with pytest.raises(T.CheckpointError, match="truncated"):
        T.load_run(truncated)


def test_a_pixel_space_checkpoint_holds_no_autoencoder(tmp_path):
    result = T.train(tiny_latent(latent_dim=0), tmp_path, progress=False, log=quiet)
    header, arrays = T.read_checkpoint(result.checkpoint)
    assert "autoencoder" not in header and not [k for k in arrays if k.startswith("autoencoder/")]
    assert result.run.latent is None and result.run.image_shape == (8, 8)
    assert not os.path.exists(tmp_path / L.AE_LOSSES)


def test_latent_dim_needs_images(tmp_path, capsys):
    code = main(["train", "--data", "moons", "--latent-dim", "2", "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and "latent_dim needs image data" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "r")


def test_sample_int8_writes_the_int8_checkpoint_once_and_stays_close(latent_run, tmp_path, capsys):
    common = ["sample", "--checkpoint", str(latent_run), "--n", "32", "--sampler", "ddim", "--steps", "10",
              "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "f32")]) == 0
    assert main([*common, "--int8", "--out", str(tmp_path / "int8")]) == 0
    text = capsys.readouterr().out
    int8_file = latent_run / "checkpoint-int8.npz"
    assert int8_file.exists() and "the float32 weights are" in text
    made = os.path.getmtime(int8_file)
    assert main([*common, "--int8", "--out", str(tmp_path / "again")]) == 0
    assert os.path.getmtime(int8_file) == made  # fresh: loaded, not written again
    a, b = (np.load(tmp_path / name / "samples.npy") for name in ("f32", "int8"))
    c = np.load(tmp_path / "again" / "samples.npy")
    np.testing.assert_array_equal(b, c)  # the loaded int8 model is the one that was written
    assert 0 < np.abs(a - b).mean() < 0.05  # same seed and noise: int8 moves the images a little
    os.utime(latent_run / "checkpoint.npz", (made + 10, made + 10))  # the checkpoint is newer: stale
    assert main([*common, "--int8", "--out", str(tmp_path / "stale")]) == 0
    assert os.path.getmtime(int8_file) > made
    code = main([*common, "--int8", "--no-ema", "--out", str(tmp_path / "x")])
    assert code == 2 and "--int8 quantizes the EMA weights" in capsys.readouterr().err


def test_plot_draws_the_loss_of_a_latent_run_and_refuses_what_it_cannot_draw(latent_run, tmp_path, capsys):
    assert main(["plot", "loss", "--checkpoint", str(latent_run), "--out", str(tmp_path / "loss.png")]) == 0
    assert os.path.getsize(tmp_path / "loss_by_t.png") > 1000  # the loss by t, on the codes
    for what in ("vlb", "reverse"):
        assert main(["plot", what, "--checkpoint", str(latent_run)]) == 2
        assert "not drawn for a latent-diffusion run" in capsys.readouterr().err
