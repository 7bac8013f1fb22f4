"""The command line: misuse is answered in one line with the right exit status,
and train -> sample -> plot works end to end on a tiny run."""

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinydiff.train as T
from tinydiff.__main__ import main


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


TINY = ["--steps", "30", "--T", "40", "--width", "16", "--depth", "2", "--batch-size", "32",
        "--n-data", "256", "--checkpoint-every", "10", "--no-progress"]


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--data", "cifar"], "--data: invalid choice"),
        (["train", "--data", "moons", "--steps", "-3"], "--steps must be a positive integer"),
        (["train", "--data", "moons", "--lr", "abc"], "--lr: expected a number"),
        (["train", "--data", "moons", "--prediction", "noise"], "--prediction: invalid choice"),
        (["sample"], "--checkpoint"),
        (["sample", "--checkpoint", "x", "--class", "a,b"], "--class"),
        (["sample", "--checkpoint", "x", "--sampler", "euler"], "--sampler: invalid choice"),
        (["plot", "colours"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_bad_checkpoints_exit_1_with_one_line(tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 100)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, header=np.array([{"evil": 1}], dtype=object))
    for path, needle in [(tmp_path / "missing.npz", "no checkpoint"), (garbage, "not an .npz"),
                         (pickled, "pickle")]:
        code, out, err = run_cli(["sample", "--checkpoint", str(path)], capsys)
        assert code == 1, err
        assert len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(["train", "--data", "moons", "--out", str(tmp_path / "none"), "--resume"], capsys)
    assert code == 1 and "no checkpoint.npz" in err


def test_train_sample_plot_end_to_end(tmp_path, capsys):
    out = str(tmp_path / "run")
    code, text, err = run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)
    assert code == 0, err
    assert os.path.exists(os.path.join(out, "checkpoint.npz")) and "trained 30 steps" in text
    code, text, err = run_cli(["sample", "--checkpoint", out, "--n", "50", "--sampler", "ddim", "--steps", "10",
                               "--no-progress"], capsys)
    assert code == 0, err
    samples = np.load(os.path.join(out, "samples.npy"), allow_pickle=False)
    assert samples.shape == (50, 2) and np.all(np.isfinite(samples))
    assert os.path.getsize(os.path.join(out, "samples.png")) > 1000
    for what in ("loss", "field", "vlb"):
        code, text, err = run_cli(["plot", what, "--checkpoint", out], capsys)
        assert code == 0, (what, err)
    code, text, err = run_cli(["plot", "schedules", "--out", str(tmp_path / "s.png")], capsys)
    assert code == 0 and os.path.exists(tmp_path / "s.png")


def test_conditional_sampling_needs_a_conditional_model(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)[0] == 0
    code, _, err = run_cli(["sample", "--checkpoint", out, "--class", "1", "--no-progress"], capsys)
    assert code == 2 and "--conditional" in err


def test_conditional_train_and_guided_sample(tmp_path, capsys):
    out = str(tmp_path / "run")
    code, _, err = run_cli(["train", "--data", "eightgaussians", "--conditional", "--out", out, *TINY], capsys)
    assert code == 0, err
    code, _, err = run_cli(["sample", "--checkpoint", out, "--class", "0,3", "--guidance", "2", "--n", "20",
                            "--sampler", "ddim", "--steps", "5", "--no-progress"], capsys)
    assert code == 0, err
    assert np.load(os.path.join(out, "samples.npy")).shape == (20, 2)
    code, _, err = run_cli(["sample", "--checkpoint", out, "--class", "9", "--no-progress"], capsys)
    assert code == 2 and "out of range" in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "tinydiff", "train", "--data", "moons", "--steps", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--steps" in result.stderr and "Traceback" not in result.stderr


def test_an_existing_run_is_not_overwritten_and_resume_can_extend(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)[0] == 0
    code, _, err = run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)
    assert code == 2 and "--resume" in err and len(err.strip().splitlines()) == 1
    code, text, err = run_cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "40", "--no-progress"],
                              capsys)
    assert code == 0, err
    assert "steps changes from 30 to 40" in text and "trained 10 steps" in text


def test_an_out_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["train", "--data", "moons", "--out", str(blocker / "run"), *TINY], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- train: flags generated from TrainConfig


@pytest.fixture
def captured_train(monkeypatch, tmp_path):
    """Replace T.train by a stub that records its arguments and returns a finished result."""
    calls = []

    def fake_train(config, out_dir, **kwargs):
        calls.append((config, out_dir, kwargs))
        return T.TrainResult(None, os.path.join(out_dir, "checkpoint.npz"), [(1, 0.5)], False, 0.1, None)

    monkeypatch.setattr(T, "train", fake_train)
    return calls


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(T.TrainConfig) if f.metadata.get("cli")],
                         ids=lambda f: f.name)
def test_every_config_field_is_a_train_flag(field, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse prints the help and exits 0
        main(["train", "--help"])
    text = capsys.readouterr().out.replace("\n", " ")
    text = " ".join(text.split())
    assert stop.value.code == 0
    assert "--" + field.name.replace("_", "-") in text and field.metadata["help"].split(";")[0][:30] in text


def test_train_builds_the_config_from_the_given_flags_only(tmp_path, captured_train, capsys):
    out = str(tmp_path / "run")
    code, _, err = run_cli(["train", "--data", "moons", "--out", out, "--weight-decay", "0.01", "--no-cosine",
                            "--min-lr-ratio", "0.5", "--emb-dim", "32", "--activation", "tanh", "--no-progress"],
                           capsys)
    assert code == 0, err
    (config, out_dir, kwargs), = captured_train
    assert out_dir == out and kwargs["resume"] is False and kwargs["overrides"] is None
    expected = dataclasses.replace(T.TrainConfig(), weight_decay=0.01, cosine=False, min_lr_ratio=0.5, emb_dim=32,
                                   activation="tanh")
    assert config == expected  # every flag not given keeps TrainConfig's default (None stays None)
    captured_train.clear()
    assert run_cli(["train", "--data", "moons", "--out", out, "--conditional", "--cosine"], capsys)[0] == 0
    assert captured_train[0][0].conditional is True and captured_train[0][0].cosine is True


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--weight-decay", "-1"], "--weight-decay must be a number >= 0"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--ema", "1"], "--ema must be in [0, 1)"),
        (["--emb-dim", "7"], "--emb-dim must be even"),
        (["--superres", "1"], "--superres must be 0"),
        (["--batch-size", "x"], "--batch-size: expected an integer"),
        (["--out", ""], "--out: expected a path"),
    ],
)
def test_invalid_config_values_name_their_flag(args, needle, captured_train, capsys):
    code, _, err = run_cli(["train", "--data", "moons", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not captured_train


def test_resume_refuses_flags_that_cannot_change(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)[0] == 0
    code, _, err = run_cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "40", "--width", "8",
                            "--no-cosine"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--no-cosine, --width cannot be given" in err  # the flags as they were typed
    assert "only --steps, --lr, --grad-clip, --data-dir may change on resume" in err
    code, _, err = run_cli(["train", "--data", "circles", "--out", out, "--resume", "--steps", "40"], capsys)
    assert code == 2 and "trained on moons" in err
    code, text, err = run_cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "35", "--lr", "5e-4",
                               "--grad-clip", "0.5", "--no-progress"], capsys)
    assert code == 0, err
    assert "lr changes from 0.003 to 0.0005" in text and "grad_clip changes from 1.0 to 0.5" in text  # 2D default 3e-3
    saved = T.load_run(out).config
    assert (saved.steps, saved.lr, saved.grad_clip, saved.width) == (35, 5e-4, 0.5, 16)


@pytest.mark.parametrize("number,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_run_stopped_by_a_signal_exits_128_plus_its_number(number, status, tmp_path, monkeypatch, capsys):
    def stopped(config, out_dir, **kwargs):
        return T.TrainResult(None, os.path.join(out_dir, "checkpoint.npz"), [(5, 0.5)], True, 0.1, int(number))

    monkeypatch.setattr(T, "train", stopped)
    code, text, _ = run_cli(["train", "--data", "moons", "--out", str(tmp_path / "run")], capsys)
    assert code == status and f"stopped by {number.name}" in text


@pytest.mark.parametrize("error", [T.RunFolderError("runs/x is locked by process 123"),
                                   T.TrainingError("loss became nan at step 7")])
def test_run_folder_and_training_errors_exit_1_in_one_line(error, tmp_path, monkeypatch, capsys):
    def failing(config, out_dir, **kwargs):
        raise error

    monkeypatch.setattr(T, "train", failing)
    code, _, err = run_cli(["train", "--data", "moons", "--out", str(tmp_path / "run")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and str(error) in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_saves_the_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "tinydiff", "train", "--data", "moons", "--steps", "1000000", "--T", "40",
               "--width", "16", "--depth", "1", "--n-data", "256", "--checkpoint-every", "100000", "--log-every", "1",
               "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "MPLBACKEND": "Agg"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "losses.csv").exists() or (out / "losses.csv").stat().st_size < 40:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "stopped by SIGINT" in stdout and "Traceback" not in stderr
    assert T.load_run(out).step > 0


# ---------------------------------------------------------------- sample


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A tiny class-conditional run on the 8x8 digits (images: the data is in [-1, 1])."""
    out = str(tmp_path_factory.mktemp("digits") / "run")
    code = main(["train", "--data", "digits", "--conditional", "--steps", "30", "--T", "40", "--width", "16",
                 "--depth", "1", "--batch-size", "16", "--n-data", "128", "--checkpoint-every", "10", "--no-progress",
                 "--out", out])
    assert code == 0
    return out


def _samples(run, capsys, *args, out):
    code, _, err = run_cli(["sample", "--checkpoint", run, "--n", "16", "--no-progress", "--out", str(out), *args],
                           capsys)
    assert code == 0, err
    return np.load(os.path.join(out, "samples.npy"), allow_pickle=False)


def test_image_samples_are_clipped_to_the_data_range_by_default(digits_run, tmp_path, capsys):
    default = _samples(digits_run, capsys, out=tmp_path / "default")
    assert default.shape == (16, 64) and default.dtype == np.float32
    assert default.min() >= -1 and default.max() <= 1
    clipped = _samples(digits_run, capsys, "--clip-x0", out=tmp_path / "clip")
    unclipped = _samples(digits_run, capsys, "--no-clip-x0", out=tmp_path / "noclip")
    np.testing.assert_array_equal(default, clipped)  # --clip-x0 is the default for images
    assert not np.array_equal(default, unclipped)
    assert unclipped.min() >= -1 and unclipped.max() <= 1  # the written samples are in range either way
    assert not [name for name in os.listdir(tmp_path / "default") if name.endswith(".part")]


def test_2d_samples_are_not_clipped_by_default(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli(["train", "--data", "moons", "--out", out, *TINY], capsys)[0] == 0
    default = _samples(out, capsys, "--sampler", "ddim", "--steps", "5", out=tmp_path / "a")
    unclipped = _samples(out, capsys, "--sampler", "ddim", "--steps", "5", "--no-clip-x0", out=tmp_path / "b")
    np.testing.assert_array_equal(default, unclipped)


def test_class_all_draws_one_row_per_class(digits_run, tmp_path, capsys):
    samples = _samples(digits_run, capsys, "--class", "all", "--n", "20", "--sampler", "ddim", "--steps", "3",
                       out=tmp_path / "twenty")
    assert samples.shape == (20, 64)
    code, _, err = run_cli(["sample", "--checkpoint", digits_run, "--class", "all", "--sampler", "ddim", "--steps",
                            "3", "--no-progress", "--out", str(tmp_path / "default")], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "default" / "samples.npy").shape == (10 * 8, 64)  # 8 per class by default
    assert os.path.getsize(tmp_path / "default" / "samples.png") > 1000


def test_n_must_be_a_multiple_of_the_number_of_classes(digits_run, capsys):
    code, _, err = run_cli(["sample", "--checkpoint", digits_run, "--class", "0,1", "--n", "7", "--no-progress"],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--n 7" in err and "--class 0,1" in err


def test_spacing_chooses_the_ddim_steps(digits_run, tmp_path, capsys):
    common = ["--sampler", "ddim", "--steps", "4"]
    default = _samples(digits_run, capsys, *common, out=tmp_path / "default")
    drawn = {spacing: _samples(digits_run, capsys, *common, "--spacing", spacing, out=tmp_path / spacing)
             for spacing in ("linspace", "leading", "trailing")}
    np.testing.assert_array_equal(default, drawn["linspace"])
    assert not np.array_equal(drawn["leading"], drawn["linspace"])
    assert not np.array_equal(drawn["trailing"], drawn["linspace"])


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--eta", "0.5"], "--eta"),
        (["--steps", "20"], "--steps"),
        (["--spacing", "leading"], "--spacing"),
        (["--sampler", "ddpm", "--eta", "1", "--steps", "10"], "--steps, --eta"),
        (["--sampler", "ddim", "--variance", "beta_tilde"], "--variance"),
        (["--sampler", "ddim", "--eta", "1.5"], "--eta: expected a number in [0, 1]"),
        (["--sampler", "ddim", "--eta", "-0.1"], "--eta: expected a number in [0, 1]"),
        (["--guidance", "2"], "--guidance needs --class"),
        (["--class", "1,1"], "each class once"),
        (["--out", ""], "--out: expected a path"),
    ],
)
def test_sample_refuses_flags_that_would_be_ignored(args, needle, capsys):
    code, _, err = run_cli(["sample", "--checkpoint", "no-such-run", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


# ---------------------------------------------------------------- demo and plot


def test_demo_refuses_a_folder_that_holds_a_run(tmp_path, capsys):
    (tmp_path / "checkpoint.npz").write_bytes(b"a run")
    code, _, err = run_cli(["demo", "--out", str(tmp_path), "--steps", "10", "--no-progress"], capsys)
    assert code == 2 and "already holds a run" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "checkpoint.npz").read_bytes() == b"a run"
    code, _, err = run_cli(["demo", "--out", ""], capsys)
    assert code == 2 and "--out" in err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["schedules", "--checkpoint", "run"], "--checkpoint"),
        (["forward", "--checkpoint", "run"], "--checkpoint"),
        (["loss", "--checkpoint", "run", "--T", "10"], "--T"),
        (["vlb", "--checkpoint", "run", "--data", "mnist", "--schedule", "cosine"], "--data, --schedule"),
        (["loss"], "--checkpoint is required"),
        (["schedules", "--out", ""], "--out: expected a path"),
    ],
)
def test_plot_refuses_flags_the_picture_does_not_use(args, needle, capsys):
    code, _, err = run_cli(["plot", *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


def test_main_stays_importable_from_the_module_entry_point():
    import tinydiff.__main__ as entry
    import tinydiff.cli as cli

    assert entry.main is cli.main
