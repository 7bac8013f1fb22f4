"""The lessons as notebooks: made from the scripts, run on a real Python kernel, their checks printed.

``python -m tinydiff notebooks`` turns every script in lessons/ into a
notebook; these tests run it on whatever lessons/ holds. They need the
notebooks extra (jupytext, nbclient, ipykernel; ``pip install -e
".[notebooks]"``, which .ci/run installs) and are skipped only without it,
except the test of the message that names the extra. Executing every
notebook in fast mode took 23 to 34 s on two cores (each lesson runs in 1 to
3 s, plus about a second to start its kernel).
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tinydiff.cli import main, notebooks

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted(p.name for p in (ROOT / "lessons").glob("[0-9][0-9]_*.py"))
EXTRA = ("jupytext", "nbclient", "ipykernel")
HAVE_EXTRA = all(importlib.util.find_spec(name) is not None for name in EXTRA)
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason='the notebooks extra is missing: pip install -e ".[notebooks]"')
SUMMARY = re.compile(r"^lesson (\S+): all (\d+) checks passed", re.MULTILINE)


@pytest.fixture
def kernel_env(monkeypatch):
    """What the kernels inherit: the lessons start from numpy and the shipped digits, one BLAS thread."""
    monkeypatch.delenv("TINYDIFF_BACKEND", raising=False)
    monkeypatch.delenv("TINYDIFF_DATA", raising=False)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")


def read(path):
    import nbformat

    return nbformat.read(str(path), as_version=4)


def is_setup(cell):
    return notebooks.SETUP_TAG in cell.metadata.get("tags", [])


def stdout_of(notebook):
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.output_type == "stream")


def round_trip_problems(script):
    """What of ``script`` would not survive script -> .ipynb -> script: [] when all of it does.

    The notebook is the one the command makes (through its JSON file), the
    added setup cell taken out again; every code cell must also compile on
    its own, since a notebook runs them one at a time.
    """
    import jupytext
    import nbformat

    text = Path(script).read_text()
    notebook = nbformat.reads(nbformat.writes(notebooks.make_notebook(script)), as_version=4)
    cells = [cell for cell in notebook.cells if not is_setup(cell)]
    plain = nbformat.v4.new_notebook(cells=cells, metadata={"jupytext": {"notebook_metadata_filter": "-all",
                                                                         "cell_metadata_filter": "-all"}})
    back = jupytext.writes(plain, fmt="py:percent")
    problems = []
    if back != text:
        lines, back_lines = text.splitlines(), back.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(lines, back_lines)) if a != b), min(len(lines), len(back_lines)))
        problems.append(f"line {line + 1} comes back changed: {lines[line:line + 1]} -> {back_lines[line:line + 1]}")
    for index, cell in enumerate(cells):
        if cell.cell_type == "code":
            try:
                compile(cell.source, f"cell {index}", "exec")
            except SyntaxError as error:
                problems.append(f"cell {index} does not compile on its own: {error}")
    return problems


# -- without the extra ---------------------------------------------------


@pytest.mark.parametrize("missing, flags", [("jupytext", []), ("nbclient", ["--execute"]), ("ipykernel", ["--execute"])])
def test_without_the_extra_it_exits_2_with_one_line(missing, flags, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it fails, find_spec finds nothing
    out = tmp_path / "notebooks"
    assert main(["notebooks", "--out", str(out), *flags]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and missing in error and 'pip install -e ".[notebooks]"' in error, error
    assert not out.exists()


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["notebooks", "--out", str(tmp_path), "--timeout", "30"]) == 2  # ignored without --execute
    assert "--timeout applies only with --execute" in capsys.readouterr().err
    if HAVE_EXTRA:
        assert main(["notebooks", "--out", str(tmp_path), "no-such-lesson"]) == 2
        assert "no single lesson matches 'no-such-lesson'" in capsys.readouterr().err


# -- the round trip and the cells -----------------------------------------


@needs_extra
@pytest.mark.parametrize("name", LESSONS)
def test_every_lesson_survives_the_round_trip(name):
    assert round_trip_problems(ROOT / "lessons" / name) == []


@needs_extra
@pytest.mark.parametrize("script, problem", [
    ("# %% [markdown]\n# # Title\nx = 1\n\n# %%\ny = 2\n", "line 3 comes back changed"),  # code in a comment cell
    ("import os\n\n# %%\nx = 1\n", "line 1 comes back changed"),  # code above the first marker
    ("# %%\n%matplotlib inline\nx = 1\n", "line 2 comes back changed"),  # a bare magic
    ("# %%\ndef f():\n    x = 1\n# %%\n    return x\n", "does not compile on its own"),  # a marker in a function
])
def test_the_round_trip_check_catches_cells_that_break(script, problem, tmp_path):
    path = tmp_path / "99_broken.py"
    path.write_text(script)
    problems = round_trip_problems(path)
    assert problems and any(problem in p for p in problems), problems


@needs_extra
@pytest.mark.parametrize("name", LESSONS)
def test_markdown_cells_are_the_comment_cells_latex_intact(name):
    text = (ROOT / "lessons" / name).read_text()
    notebook = notebooks.make_notebook(ROOT / "lessons" / name)
    markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    assert len(markdown) == text.count("# %% [markdown]\n")
    for source in markdown:  # each one, commented again line by line, is verbatim in the script
        commented = "\n".join("# " + line if line else "#" for line in source.split("\n"))
        assert "# %% [markdown]\n" + commented + "\n" in text, source[:300]
    assert any("$" in s for s in markdown) or name == "12_gpu.py"  # the equations came along
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert is_setup(code[0]) and not any(is_setup(cell) for cell in code[1:])
    assert "\nFAST = True  # " in "\n" + code[0].source  # the one visible fast/full choice
    assert notebook.metadata["kernelspec"]["language"] == "python"


def test_the_source_of_the_install_cell(tmp_path):
    assert "TINYDIFF_SOURCE = None  #" in notebooks.setup_cell(None)
    assert "TINYDIFF_SOURCE = 'git+https://example.org/t.git'  #" in notebooks.setup_cell("git+https://example.org/t.git")
    if shutil.which("git") is None:
        pytest.skip("needs git")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert notebooks.default_source(str(tmp_path)) is None  # no remote: nothing to install from
    for remote, expected in [("git@github.com:me/tinydiff.git", "git+https://github.com/me/tinydiff.git"),
                             ("https://example.org/x/tinydiff", "git+https://example.org/x/tinydiff")]:
        subprocess.run(["git", "-C", str(tmp_path), "remote", "remove", "origin"], capture_output=True)
        subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", remote], check=True)
        assert notebooks.default_source(str(tmp_path)) == expected


def run_setup_cell(cwd, source, tmp_path):
    """The setup cell in a Python that has numpy but no tinydiff (-S: site-packages without its .pth files)."""
    import numpy

    site = str(Path(numpy.__file__).resolve().parent.parent)
    code = notebooks.setup_cell(source) + "\nimport _lesson\nprint('LESSON', _lesson.__name__, _lesson.NOTEBOOK_ARGV)\n"
    script = tmp_path / "setup_cell.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=site, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([sys.executable, "-S", str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_setup_cell_finds_tinydiff_in_a_checkout_else_installs_it(tmp_path):
    inside = run_setup_cell(ROOT / "lessons", None, tmp_path)  # a notebook inside a checkout, not installed
    assert inside.returncode == 0, inside.stderr
    assert "LESSON tinydiff.lesson ['--fast']" in inside.stdout
    nowhere = run_setup_cell(tmp_path, None, tmp_path)  # outside a checkout, nothing to install from
    assert nowhere.returncode == 1
    assert "ModuleNotFoundError: tinydiff is not installed: set TINYDIFF_SOURCE" in nowhere.stderr
    missing = tmp_path / "no-such-tinydiff"  # outside, with a source: pip is asked for exactly it
    colab = run_setup_cell(tmp_path, str(missing), tmp_path)
    assert colab.returncode == 1 and "CalledProcessError" in colab.stderr
    assert f"'install', '--quiet', '{missing}'" in colab.stderr


# -- on a real kernel --------------------------------------------------------

KERNEL_LESSON = '''\
# %% [markdown]
# # Lesson 97: in a kernel

# %%
import sys

import _lesson
import numpy as np

from tinydiff import viz

hook = sys.excepthook
lesson = _lesson.Lesson("97_kernel", "a lesson inside a kernel")
asked = _lesson.Lesson("97_kernel", "with --step", argv=["--fast", "--step", "--out", "stepped"])
print("KERNEL", _lesson.in_kernel(), lesson.fast, asked.pausing, sys.excepthook == hook)

# %%
for title in ("one", "two", "three"):
    asked.step(title)  # would wait for input() if --step paused here
    lesson.check(True, f"step {title} ran")
lesson.saved(viz.image_grid(np.eye(8)[None], lesson.path("eye.png")))
lesson.done()
'''
FAILING_LESSON = '''\
# %% [markdown]
# # Lesson 98: a check that fails

# %%
import _lesson

lesson = _lesson.Lesson("98_failing", "a check that fails")
lesson.step("a wrong claim", paper="1 = 2", code="nowhere")
lesson.check(1 == 2, "one equals two")
print("NOT REACHED")
'''


@needs_extra
def test_in_a_kernel_a_lesson_behaves_like_a_notebook(tmp_path, monkeypatch, capsys, kernel_env):
    lessons = tmp_path / "lessons"
    lessons.mkdir()
    (lessons / "97_kernel.py").write_text(KERNEL_LESSON)
    (lessons / "98_failing.py").write_text(FAILING_LESSON)
    monkeypatch.setattr(notebooks, "lessons_dir", lambda: str(lessons))
    out = tmp_path / "out"
    assert main(["notebooks", "--out", str(out), "--execute", "--timeout", "120"]) == 1
    error = capsys.readouterr().err
    assert f"{out / '98_failing.ipynb'} failed:" in error and "1 of 2 notebooks failed" in error
    assert 'lesson.check(1 == 2, "one equals two")' in error  # the cell ...
    assert "CheckFailed" in error and "expected one equals two" in error  # ... and its traceback
    assert "\x1b[" not in error
    failed = stdout_of(read(out / "98_failing.ipynb"))  # saved up to the failure
    assert "-- Step 1: a wrong claim" in failed and "NOT REACHED" not in failed

    notebook = read(out / "97_kernel.ipynb")
    text = stdout_of(notebook)
    assert "KERNEL True True False True" in text  # in a kernel; FAST; no pauses; no exit hook
    assert "mode: fast (small sizes)" in text and text.count("  [ok] step ") == 3
    assert "lesson 97_kernel: all 3 checks passed" in text
    images = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.output_type == "display_data" and "image/png" in output.data]
    assert len(images) == 1  # inline, and written to its file too
    assert (out / "runs" / "lessons" / "97_kernel" / "eye.png").stat().st_size > 0


@needs_extra
def test_every_lesson_runs_as_a_notebook_and_its_checks_print(tmp_path, capsys, kernel_env):
    out = tmp_path / "notebooks"
    status = main(["notebooks", "--out", str(out), "--execute", "--timeout", "300"])
    log = capsys.readouterr()
    assert status == 0, f"a notebook failed:\n{log.err[-6000:]}"
    assert sorted(p.name for p in out.glob("*.ipynb")) == [name[:-3] + ".ipynb" for name in LESSONS]
    for name in LESSONS:
        notebook = read(out / (name[:-3] + ".ipynb"))
        outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
        assert not [output for output in outputs if output.output_type == "error"], name
        text = stdout_of(notebook)
        assert "mode: fast (small sizes)" in text and "Traceback" not in text, text[-2000:]
        summary = SUMMARY.search(text)
        assert summary and summary.group(1) == name[:-3], f"{name} printed no summary:\n{text[-2000:]}"
        checks = int(summary.group(2))
        assert checks >= 3 and text.count("  [ok] ") == checks, f"{name}: {checks} checks"
        figures = re.findall(r"^  figure: (.+\.png)$", text, re.MULTILINE)
        images = [output for output in outputs if output.output_type == "display_data" and "image/png" in output.data]
        assert len(images) == len(figures), f"{name}: {len(figures)} figures, {len(images)} shown inline"
        for figure in figures:
            assert (out / figure).stat().st_size > 0, figure  # written too, beside the notebook
