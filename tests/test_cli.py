"""The command line: misuse is answered in one line with the right exit status,
and train -> sample -> plot works end to end on a tiny run."""

import os
import subprocess
import sys

import numpy as np
import pytest

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
        (["train", "--data", "moons", "--steps", "-3"], "--steps: expected a positive integer"),
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
    resume = [a for a in TINY if a not in ("--steps", "30")]
    code, text, err = run_cli(["train", "--data", "moons", "--out", out, "--resume", "--steps", "40", *resume], capsys)
    assert code == 0, err
    assert "extending the run from 30 to 40 steps" in text and "trained 10 steps" in text


def test_an_out_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["train", "--data", "moons", "--out", str(blocker / "run"), *TINY], capsys)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
