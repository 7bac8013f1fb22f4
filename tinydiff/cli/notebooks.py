"""The notebooks command: every lesson as a Jupyter notebook, made from its script and optionally run.

    python -m tinydiff notebooks [NAME ...] [--out DIR] [--execute] [--timeout S] [--source REQ]

The scripts in lessons/ stay the source of truth; the notebooks are made
from them (never committed) by jupytext, from the optional extra
``pip install -e ".[notebooks]"`` (jupytext, nbclient, ipykernel). A
script's comment cells (``# %% [markdown]``) become markdown cells, LaTeX
and all, and its code cells become the code cells, unchanged. One cell is
added, the first code cell (``setup_cell``): it holds ``FAST``, the
notebook's fast/full choice, makes sure tinydiff can be imported (on Colab,
by pip installing ``TINYDIFF_SOURCE``), and hands the lesson its options.
Inside the kernel the lesson behaves like a notebook (``tinydiff.lesson``):
no pauses, figures inline.

``--execute`` runs each notebook on a Python kernel through nbclient, in
the notebook's folder, and saves it with its outputs. A cell that fails is
reported with its source and traceback; the other notebooks still run, and
the command exits 1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time

from .. import files
from .common import EXIT_FAILURE, UsageError, log, positive_int
from .lesson import lessons_dir

EXTRA = 'pip install -e ".[notebooks]"'
KERNEL = "python3"
TIMEOUT = 600  # seconds one cell may run
SETUP_TAG = "tinydiff-setup"  # the tag of the added cell, so a reader (or a test) can tell it apart
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # colours in a kernel's traceback

SETUP = '''\
# Setup, added by `python -m tinydiff notebooks` (the lesson script has no such cell): run it first.
FAST = True  # True: the small sizes of the script's --fast (seconds); False: the lesson's full sizes
TINYDIFF_SOURCE = {source!r}  # what pip installs where tinydiff is missing (a git URL, a path, a wheel)

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("tinydiff") is None:  # not installed: the checkout around us, else pip
    here = Path.cwd().resolve()
    checkout = next((p for p in (here, *here.parents) if (p / "tinydiff" / "__init__.py").is_file()), None)
    if checkout is not None:
        sys.path.insert(0, str(checkout))
    elif TINYDIFF_SOURCE is None:
        raise ModuleNotFoundError("tinydiff is not installed: set TINYDIFF_SOURCE above to where pip finds it")
    else:
        import subprocess

        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", TINYDIFF_SOURCE], check=True)
        importlib.invalidate_caches()

import tinydiff.lesson

tinydiff.lesson.NOTEBOOK_ARGV = ["--fast"] if FAST else []  # a kernel has no command line of its own
sys.modules["_lesson"] = tinydiff.lesson  # what the lesson's `import _lesson` finds (lessons/_lesson.py re-exports it)'''


def add_parser(commands):
    parser = commands.add_parser("notebooks", help="write every lesson as a Jupyter notebook (--execute runs them)")
    parser.add_argument("names", nargs="*", metavar="NAME", help="lessons to convert, e.g. 02 sampling (default all)")
    parser.add_argument("--out", default=os.path.join("runs", "notebooks"), help="folder (default runs/notebooks)")
    parser.add_argument("--execute", action="store_true", help="run each notebook on a Python kernel, save outputs")
    parser.add_argument("--timeout", type=positive_int, default=None,
                        help=f"seconds one cell may run, with --execute (default {TIMEOUT})")
    parser.add_argument("--source", default=None,
                        help="pip requirement the first cell installs where tinydiff is missing, e.g. on Colab "
                             "(default: this checkout's git remote 'origin', if it is an https or ssh URL)")
    return parser


def require(execute):
    """Refuse (exit 2, one line) when the extra is missing: jupytext, and to run them nbclient and ipykernel."""
    needed = ["jupytext"] + (["nbclient", "ipykernel"] if execute else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"tinydiff notebooks: {' and '.join(missing)} not installed; {EXTRA} installs "
                         "jupytext, nbclient and ipykernel")


def default_source(folder):
    """The checkout's own repository (git remote 'origin') as a pip requirement, or None.

    An ssh URL (git@host:owner/name) is rewritten to https: a notebook on
    Colab has no ssh key.
    """
    try:
        result = subprocess.run(["git", "-C", folder, "remote", "get-url", "origin"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    url = result.stdout.strip() if result.returncode == 0 else ""
    ssh = re.fullmatch(r"(?:ssh://)?git@([^:/]+)[:/](.+)", url)
    if ssh:
        url = f"https://{ssh.group(1)}/{ssh.group(2)}"
    return f"git+{url}" if url.startswith("https://") else None


def lesson_scripts(folder, names=()):
    """The lesson scripts (NN_name.py) in ``folder``; with ``names``, those that match one of them."""
    scripts = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f[:2].isdigit())
    chosen = []
    for name in names:
        matches = [s for s in scripts if s.startswith(name) or s[3:-3] == name]
        if len(matches) != 1:
            raise UsageError(f"tinydiff notebooks: no single lesson matches {name!r}; "
                             f"choose from {', '.join(s[:-3] for s in scripts)}")
        chosen += [m for m in matches if m not in chosen]
    return [os.path.join(folder, s) for s in (chosen or scripts)]


def setup_cell(source=None) -> str:
    """The source of the first code cell: FAST, TINYDIFF_SOURCE, tinydiff importable, the lesson's options."""
    return SETUP.format(source=source)


def make_notebook(script, source=None):
    """The lesson script as a notebook (nbformat 4): its cells unchanged, the setup cell first among the code."""
    import jupytext
    import nbformat

    notebook = jupytext.read(script, fmt="py:percent")
    first_code = next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    setup = nbformat.v4.new_code_cell(setup_cell(source), metadata={"tags": [SETUP_TAG]})
    notebook.cells.insert(first_code, setup)
    notebook.metadata = {
        "kernelspec": {"name": KERNEL, "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }
    for index, cell in enumerate(notebook.cells):  # stable ids: the same script makes the same file
        cell.id = f"cell-{index}"
    nbformat.validate(notebook)
    return notebook


def execute(notebook, folder, timeout):
    """Run every cell on a Python kernel whose working folder is ``folder``; outputs go into ``notebook``."""
    from nbclient import NotebookClient

    client = NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL, coalesce_streams=True,
                            resources={"metadata": {"path": os.fspath(folder)}})
    client.execute()
    return notebook


def write(notebook, path):
    import nbformat

    return files.write_text(path, nbformat.writes(notebook) + "\n")


def run_one(script, args, source):
    """Make (and with --execute run) one notebook; returns the error text, or None when it ran."""
    name = os.path.basename(script)[:-3]
    path = os.path.join(args.out, name + ".ipynb")
    notebook = make_notebook(script, source)
    if not args.execute:
        write(notebook, path)
        log(f"wrote {path}")
        return None
    from nbclient.exceptions import CellControlSignal, DeadKernelError

    start = time.perf_counter()
    try:
        execute(notebook, args.out, args.timeout or TIMEOUT)
    except (CellControlSignal, DeadKernelError) as error:  # a cell raised or timed out, or the kernel died
        write(notebook, path)  # the outputs up to the failure, to open and read
        return f"tinydiff notebooks: {path} failed:\n{ANSI.sub('', str(error)).strip()}"
    write(notebook, path)
    log(f"wrote {path} (executed in {time.perf_counter() - start:.1f} s)")
    return None


def command_notebooks(args):
    if args.timeout is not None and not args.execute:
        raise UsageError("tinydiff notebooks: --timeout applies only with --execute")
    require(args.execute)
    folder = lessons_dir()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no lessons folder at {folder}: the lessons ship with the source tree "
                                "(git clone, then pip install -e .)")
    scripts = lesson_scripts(folder, args.names)
    source = args.source if args.source is not None else default_source(folder)
    os.makedirs(args.out, exist_ok=True)
    failures = [error for error in (run_one(script, args, source) for script in scripts) if error]
    for error in failures:
        print(error, file=sys.stderr, flush=True)
    if failures:
        print(f"tinydiff notebooks: {len(failures)} of {len(scripts)} notebooks failed", file=sys.stderr)
        return EXIT_FAILURE
    return 0
