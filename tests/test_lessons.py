"""The lessons: every one runs with --fast and its checks pass; a failed check fails loudly.

Each lesson runs as a subprocess, the way a reader runs it
(``python lessons/NN_name.py --fast --out DIR``), with MPLBACKEND=Agg and
one BLAS thread (on a small shared machine, threads fighting over two
cores make the small matrix products of a lesson several times slower).
The whole file takes about 30 to 40 seconds on two cores.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(p.name for p in LESSONS_DIR.glob("[0-9][0-9]_*.py"))
REQUIRED = ["00_autograd", "01_schedules", "02_forward", "03_posterior", "04_denoiser", "05_objective",
            "06_sampling", "07_parameterizations", "08_bound", "09_ddim", "10_guidance", "11_mnist", "12_gpu",
            "13_unet", "14_ode", "15_latent"]
SUMMARY = re.compile(r"^lesson (\S+): all (\d+) checks passed", re.MULTILINE)


def lesson_env():
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    env.pop("TINYDIFF_BACKEND", None)  # the lessons start from numpy
    env.pop("TINYDIFF_DATA", None)  # lesson 11 uses the shipped digits
    return env


def run_script(path, *args, cwd, stdin=None, timeout=120):
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd, env=lesson_env(), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def load_helper():
    spec = importlib.util.spec_from_file_location("_lesson", LESSONS_DIR / "_lesson.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_required_lesson_exists():
    assert [name[:-3] for name in LESSONS] == REQUIRED


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_runs_fast_and_its_checks_pass(name, tmp_path):
    out = tmp_path / "figures"
    result = run_script(LESSONS_DIR / name, "--fast", "--out", str(out), cwd=tmp_path)
    text = result.stdout + result.stderr
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{text[-3000:]}"
    assert "CHECK FAILED" not in text and "Traceback" not in text, text[-3000:]
    summary = SUMMARY.search(result.stdout)
    assert summary, f"{name} printed no summary line:\n{result.stdout[-2000:]}"
    assert summary.group(1) == name[:-3]
    checks = int(summary.group(2))
    assert checks >= 3, f"{name} checks only {checks} claims"
    assert result.stdout.count("  [ok] ") == checks  # every check printed its line
    steps = re.findall(r"^-- Step (\d+): ", result.stdout, re.MULTILINE)
    assert len(steps) >= 3 and [int(s) for s in steps] == list(range(1, len(steps) + 1))
    assert result.stdout.count("paper: ") >= len(steps) and result.stdout.count("code:  ") >= len(steps)
    for figure in re.findall(r"^  figure: (.+)$", result.stdout, re.MULTILINE):
        path = Path(figure)
        assert path.exists() and path.stat().st_size > 0, figure
        assert out in path.parents, f"{figure} is not under --out {out}"
    assert not (tmp_path / "runs").exists(), "a lesson wrote to the default folder despite --out"


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_is_a_percent_notebook(name):
    """jupytext opens `# %%` scripts as notebooks; each step has a markdown cell above it."""
    source = (LESSONS_DIR / name).read_text()
    assert source.startswith("# %% [markdown]\n# # Lesson "), "the first cell is the lesson's title"
    cells = re.split(r"^# %%", source, flags=re.MULTILINE)[1:]
    markdown = [c for c in cells if c.startswith(" [markdown]")]
    code = [c for c in cells if not c.startswith(" [markdown]")]
    steps = source.count("lesson.step(")
    assert steps >= 3 and len(markdown) >= steps + 1 and len(code) >= steps
    for cell in markdown:  # markdown cells hold only comment lines
        lines = [line for line in cell.splitlines()[1:] if line.strip()]
        assert all(line.startswith("#") for line in lines), cell[:200]
    assert "lesson.done()" in code[-1]


def test_failing_checks_raise_with_a_clear_message(tmp_path):
    L = load_helper()
    lesson = L.Lesson("99_demo", "checks that fail", argv=["--fast", "--out", str(tmp_path)])
    lesson.step("a wrong claim", paper="1 = 2", code="nowhere")
    lesson.check(True, "a true claim")
    lesson.check_close("a value", 1.0 + 1e-12, 1.0, atol=1e-9)
    lesson.check_mc("a mean", 0.51, 0.5, 0.01)
    assert lesson.checks == 3
    with pytest.raises(L.CheckFailed, match=r"lesson 99_demo, step 1 \(a wrong claim\): expected 1 = 2"):
        lesson.check(False, "1 = 2")
    with pytest.raises(L.CheckFailed, match=r"variance 0.9 against the closed form 1.*> allowed"):
        lesson.check_close("variance", 0.9, 1.0, rtol=0.01)
    with pytest.raises(L.CheckFailed, match=r"NOT within 4 standard errors .*z = \+5\.00"):
        lesson.check_mc("mean", 0.55, 0.5, 0.01)
    with pytest.raises(L.CheckFailed, match=r"non-finite"):
        lesson.check_close("a NaN", float("nan"), 1.0, atol=1.0)
    with pytest.raises(L.CheckFailed, match=r"ValueError was not raised"):
        lesson.check_raises(ValueError, lambda: None, "a refusal")
    with pytest.raises(L.CheckFailed, match=r"expected 2 < 1"):
        lesson.check_less("2", 2.0, "1", 1.0)
    assert lesson.checks == 3  # failures are not counted as passed
    assert isinstance(L.CheckFailed("x"), AssertionError)


def test_sample_variance_standard_error():
    L = load_helper()
    import numpy as np

    x = np.random.default_rng(0).normal(size=40000)
    variance, se = L.sample_variance(x)
    assert abs(variance - 1.0) < 4 * se
    assert abs(se - np.sqrt(2 / 40000)) < 0.1 * np.sqrt(2 / 40000)  # Gaussian: sqrt(2 / N)


def test_a_failed_check_exits_nonzero_without_a_traceback(tmp_path):
    script = tmp_path / "failing_lesson.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(LESSONS_DIR)!r})\n"
        "import _lesson\n"
        "lesson = _lesson.Lesson('98_failing', 'a lesson whose check fails')\n"
        "lesson.step('Monte Carlo against a closed form', paper='Var = 0.8125', code='none')\n"
        "lesson.check_mc('variance', 0.9, 0.8125, 0.002)\n"
        "print('NOT REACHED')\n"
    )
    result = run_script(script, "--fast", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 1
    assert "NOT REACHED" not in result.stdout
    assert "CHECK FAILED: lesson 98_failing, step 1 (Monte Carlo against a closed form)" in result.stderr
    assert "NOT within 4 standard errors" in result.stderr
    assert "Traceback" not in result.stderr


def test_step_mode_pauses_and_q_quits(tmp_path):
    lesson = LESSONS_DIR / "00_autograd.py"
    quit_early = run_script(lesson, "--fast", "--step", "--out", str(tmp_path), cwd=tmp_path, stdin="q\n")
    assert quit_early.returncode == 0, quit_early.stderr
    assert "[step 1 done] Enter: next step, q: quit" in quit_early.stdout
    assert "stopped after step 1" in quit_early.stdout and "-- Step 2:" not in quit_early.stdout
    go_on = run_script(lesson, "--fast", "--step", "--out", str(tmp_path), cwd=tmp_path, stdin="\n" * 20)
    assert go_on.returncode == 0, go_on.stderr
    assert go_on.stdout.count("Enter: next step") >= 3 and SUMMARY.search(go_on.stdout)


def test_default_out_folder_is_runs_lessons_name(tmp_path):
    L = load_helper()
    lesson = L.Lesson("05_objective", "defaults", argv=[])
    assert not lesson.fast and not lesson.pausing and lesson.seed == 0
    assert lesson.out == Path("runs") / "lessons" / "05_objective"
    assert lesson.pick("small", "big") == "big"
    fast = L.Lesson("05_objective", "defaults", argv=["--fast", "--out", str(tmp_path), "--seed", "3"])
    assert fast.pick("small", "big") == "small" and fast.seed == 3
    assert fast.path("a.png") == str(tmp_path / "a.png")
