"""Smoke tests of the examples and GPU scripts: they run, on tiny settings, and say what they did.

The timing benchmarks themselves (benchmarks/all.py, engine.py, sampling.py,
memory.py) are never run here: they are scripts to run by hand (cputime.py
only for a few steps, to check that its table and --against work).
The GPU scripts are run as a user without a GPU would run them (CuPy made
unimportable, so the test means the same on a machine that has one), and
benchmarks/gpu.py once more with NumPy standing in for CuPy, so every part
of the prepared GPU run is exercised before it meets a GPU.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(relative):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_without_cupy(relative, *args):
    """Run a script in a fresh interpreter in which ``import cupy`` fails."""
    code = (
        "import runpy, sys; sys.modules['cupy'] = None; "  # None in sys.modules: ImportError on import
        f"sys.argv = [{str(ROOT / relative)!r}] + {list(args)!r}; "
        f"runpy.run_path({str(ROOT / relative)!r}, run_name='__main__')"
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", TINYDIFF_BACKEND="numpy")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_compare_samplers_runs_and_reports_every_sampler(tmp_path, capsys):
    example = _load("examples/compare_samplers.py")
    out = tmp_path / "out"
    assert example.main(["--steps", "60", "--n", "64", "--ddim", "10,5", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = {line.split()[0] + (" " + line.split()[1] if line.startswith("DDIM") else ""): line.split()
             for line in printed.splitlines() if line.startswith(("DDPM ", "DDIM ", "real/real"))}
    assert set(table) == {"DDPM", "DDIM 10", "DDIM 5", "real/real"}, printed
    assert table["DDPM"][1] == "1000" and table["DDIM 10"][2] == "10" and table["DDIM 5"][2] == "5"
    floor = float(table["real/real"][1])
    assert 0 < floor < 1  # two draws of 64 moons points are close, not identical
    for key in ("DDPM", "DDIM 10", "DDIM 5"):  # the "/ floor" column is distance / floor
        distance, ratio = float(table[key][-2]), float(table[key][-1])
        assert ratio == pytest.approx(distance / floor, rel=0.01, abs=0.01)
    assert _png(out / "samplers.png")
    assert (out / "run" / "checkpoint.npz").exists()
    # The same comparison from the checkpoint just written, without training.
    again = tmp_path / "again"
    assert example.main(["--checkpoint", str(out / "run" / "checkpoint.npz"), "--n", "32", "--ddim", "4",
                         "--out", str(again)]) == 0
    assert "loaded" in capsys.readouterr().out and _png(again / "samplers.png")


def test_compare_samplers_refuses_bad_step_lists():
    example = _load("examples/compare_samplers.py")
    for bad in ("", "10,x", "0,5"):
        with pytest.raises(ValueError, match="--ddim"):
            example.parse_steps(bad)
    assert example.parse_steps("100, 50,10") == [100, 50, 10]


def test_train_toy2d_trains_samples_and_measures(tmp_path, capsys):
    example = _load("examples/train_toy2d.py")
    out = tmp_path / "toy"
    assert example.main(["--steps", "60", "--n", "64", "--sets", "moons,circles", "--sampler", "ddim",
                         "--ddim-steps", "10", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith(("moons ", "circles "))}
    assert set(rows) == {"moons", "circles"}, printed
    for cells in rows.values():
        distance, floor, ratio = float(cells[4]), float(cells[5]), float(cells[6])
        assert floor > 0 and ratio == pytest.approx(distance / floor, rel=0.01, abs=0.01)
    assert _png(out / "toy2d.png")
    for name in ("moons", "circles"):
        assert (out / name / "checkpoint.npz").exists() and (out / name / "losses.csv").exists()
    with pytest.raises(SystemExit):
        example.main(["--sets", "moons,nope", "--out", str(out)])


def test_spiral_before_after_trains_each_setting_and_draws_them_side_by_side(tmp_path, capsys):
    example = _load("examples/spiral_before_after.py")
    out = tmp_path / "spiral"
    assert example.main(["--steps", "40", "--n", "64", "--levers", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    labels = [label for label, _, _ in example.settings(levers=True)]
    rows = [line for line in printed.splitlines() if any(line.startswith(f"{label:14s} ") for label in labels)]
    assert len(labels) == 6 and len(rows) == 6, printed
    for line in rows:
        sw_ratio, precision = float(line.split()[-3]), float(line.split()[-2])
        assert sw_ratio > 0 and 0 <= precision <= 1, line
    before, after = example.settings(levers=False)[0][2], example.settings(levers=False)[-1][2]
    assert before == dict(schedule="linear", prediction="eps", steps=20_000, lr=1e-3) and after == {}
    assert "after = cosine schedule, v-prediction, 40 steps, lr 0.003" in printed  # the defaults, --steps applied
    assert _png(out / "before_after.png")


EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_refuses_an_empty_out_by_name(name, tmp_path, capsys, monkeypatch):
    """``--out ""`` would write into the current folder: argparse refuses it, naming --out, before any work."""
    monkeypatch.chdir(tmp_path)
    example = _load(f"examples/{name}.py")
    with pytest.raises(SystemExit) as stopped:
        example.main(["--out", ""])
    assert stopped.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "argument --out: must name a" in errors[0], errors
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_hand_written_networks_agree_with_tinydiff(capsys):
    """benchmarks/handwritten.py, the engine benchmark's yardstick, computes what tinydiff computes: the loss,
    every gradient and two Adam steps from the same weights and batches (engine.py's own check)."""
    engine = _load("benchmarks/engine.py")
    for key in ("mlp256", "resmlp128"):
        config = engine.CONFIGS[key]
        state = engine.initial_state(config)
        assert engine.check(config, state, engine.TinydiffSide(config, state), engine.HandSide(config, state))
    assert capsys.readouterr().out.count(": OK") == 2


@pytest.mark.parametrize("script", ["benchmarks/gpu.py", "examples/gpu.py"])
def test_gpu_scripts_exit_cleanly_without_cupy(script):
    completed = _run_without_cupy(script)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("no GPU:"), completed.stdout
    assert "not installed" in completed.stdout
    assert "Traceback" not in completed.stderr


def test_gpu_benchmark_runs_every_part_with_numpy_standing_in(tmp_path):
    """The whole prepared GPU run, NumPy in CuPy's place: every part runs and the JSON says so."""
    completed = _run_without_cupy("benchmarks/gpu.py", "--simulate", "--quick", "--n", "48", "--batches", "8",
                                  "--seconds", "0.02", "--out", str(tmp_path))
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "all parts ran" in completed.stdout
    import json

    results = json.loads((tmp_path / "gpu.json").read_text())
    assert results["failures"] == []
    # NumPy against itself: the agreement check must find identical numbers.
    assert all(c["ok"] and c["loss"] == 0.0 and c["grad"] == 0.0 for c in results["agreement"])
    assert [row["batch"] for row in results["training"]] == [8]
    assert set(results["sampling"]) == {"ddpm/numpy", "ddim/numpy", "ddpm/cupy", "ddim/cupy"}
    assert all(np.isfinite(v) and v > 0 for v in results["sampling"].values())
    transfers = results["transfers"]
    # to_numpy never runs inside the loops; DDIM reads its schedule once, before its loop.
    assert (transfers["to_numpy_train"], transfers["to_numpy_ddpm"], transfers["to_numpy_ddim"]) == (0, 0, 1)
    assert len(transfers["waits"]) == 6
    unet = results["unet"]  # the U-Net's step and sampler: no to_numpy inside (DDIM's one read is before its loop)
    assert (unet["to_numpy_train"], unet["to_numpy_ddim"]) == (0, 1) and unet["numpy"] > 0


def test_cputime_benchmark_runs_and_compares_a_checkout():
    """benchmarks/cputime.py on a few steps, against this same checkout through --against:
    its table must give both sides' CPU ms and a ratio for the row asked for."""
    env = dict(os.environ, TINYDIFF_BACKEND="numpy")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cputime.py"), "--configs", "mlp256",
                           "--steps-scale", "0.01", "--against", str(ROOT)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    row = [line.split() for line in done.stdout.splitlines() if line.startswith("mlp256 ")]
    assert len(row) == 1, done.stdout
    tiny, hand, ratio, other, other_ratio = row[0][1:]
    assert float(tiny) > 0 and float(hand) > 0 and float(other) > 0
    assert abs(float(ratio.rstrip("x")) - float(hand) / float(tiny)) < 0.01
    assert "BLAS pinned to 1 thread" in done.stdout and f"tinydiff imported from {ROOT / 'tinydiff'}" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cputime.py"), "--configs", "mlp9"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert bad.returncode == 2 and "--configs: unknown ['mlp9']" in bad.stderr


def test_mnist_parts_benchmark_prints_each_part():
    """benchmarks/mnist_parts.py at a tiny width, without PyTorch: a row per part, NumPy times > 0."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mnist_parts.py"), "--width", "64",
                           "--batch", "8", "--repeats", "2", "--no-torch"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1", TINYDIFF_BACKEND="numpy"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("forward", "input grad", "weight grad", "Adam update"))]
    assert len(rows) == 4, done.stdout
    numpy_ms = [float(row[52:].split()[0]) for row in rows]
    assert all(ms >= 0 for ms in numpy_ms) and numpy_ms[3] > 0 and all(row.split()[-1] == "-" for row in rows)
    assert "8x64 @ 64x64" in rows[0] and "M parameters" in rows[3]
