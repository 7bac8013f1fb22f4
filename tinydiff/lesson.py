"""What every lesson shares: arguments, steps, pauses, checks, figures.

A lesson is a script of ``# %%`` cells in lessons/ that runs top to bottom
with plain python and is also a notebook (``python -m tinydiff notebooks``).
It talks to the reader through one ``Lesson`` object:

    import _lesson        # lessons/_lesson.py: this module, found from the lessons folder
    lesson = _lesson.Lesson("03_posterior", "The posterior q(x_{t-1} | x_t, x_0)")

    lesson.step("The closed form",
                paper="mu~_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + ...   (Eq. 7)",
                code="tinydiff.diffusion.GaussianDiffusion.q_posterior")
    lesson.value("mu~_t", mean)
    lesson.check_close("posterior mean", mean, by_hand, rtol=1e-9, against="Bayes' rule")
    lesson.done()

Every step prints what the paper says (the equation in plain text), the
function that implements it, the numbers it computed, and checks. A check
that holds prints a line starting with "[ok]"; one that fails raises
``CheckFailed`` (an AssertionError) whose message names the lesson, the step,
the claim and the numbers. Run as a script, the lesson then prints
"CHECK FAILED: ..." and exits with status 1.

The command line of every lesson:

    --fast       small sizes, so the whole set of lessons runs in under a minute
    --step       pause after each step: Enter goes on, q quits
    --out DIR    where figures go (default runs/lessons/NN_name/)
    --seed N     the seed every generator of the lesson derives from (default 0)

Inside a Jupyter kernel (``in_kernel()``) a lesson behaves like a notebook:
the kernel's own command line is ignored and the options come from
``NOTEBOOK_ARGV`` (the first cell of a generated notebook sets it from its
``FAST`` variable), --step never pauses, a failed check is an ordinary error
of its cell, and every figure is shown inline under its cell as well as
written to its file. The module lives in the package, not in lessons/, so
that a notebook that finds an installed tinydiff (on Colab, say) finds the
lessons' helpers too.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from pathlib import Path

import numpy as np  # host-side formatting and comparisons only

# The folder that holds the tinydiff package (a checkout, or site-packages):
# what a child Python process needs on PYTHONPATH to import this same tinydiff.
ROOT = str(Path(__file__).resolve().parent.parent)
# A lesson's options inside a kernel, which has no command line of its own.
NOTEBOOK_ARGV: list = []
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg")  # the figures a notebook shows inline

WIDTH = 78  # printed line width
OK = "[ok]"
FAILED = "CHECK FAILED"


class CheckFailed(AssertionError):
    """A lesson's numerical claim did not hold; the message says which and by how much."""


def in_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook; not a script, not terminal IPython)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def _host(value):
    """A float64 host array (or float) from a number, a backend array or a Tensor."""
    if isinstance(value, (int, float)):
        return float(value)
    from .backend import to_numpy

    array = np.asarray(to_numpy(value), dtype=np.float64)
    return float(array) if array.ndim == 0 else array


def fmt(value, digits=6) -> str:
    """A number (or a short array) in ``digits`` significant digits."""
    value = _host(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if value.size == 1:
        return f"{float(value.reshape(-1)[0]):.{digits}g}"
    if value.size <= 8:
        return "[" + ", ".join(f"{v:.{digits}g}" for v in value.reshape(-1)) + "]"
    flat = value.reshape(-1)
    head = ", ".join(f"{v:.{digits}g}" for v in flat[:4])
    return f"[{head}, ... ({value.size} values)]"


def sample_variance(samples):
    """(sample variance, its standard error) of 1-D draws of any distribution.

    The standard error comes from the draws' fourth moment,
    SE = sqrt(Var((x - mean)^2) / N), so it is right for non-Gaussian data too.
    """
    x = np.asarray(_host(samples), dtype=np.float64).reshape(-1)
    squared = (x - x.mean()) ** 2
    return float(x.var(ddof=1)), float(math.sqrt(squared.var(ddof=1) / x.size))


def build_parser(description, add_arguments=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true",
                        help="small sizes (the whole set of lessons runs in under a minute)")
    parser.add_argument("--step", action="store_true", help="pause after each step (Enter: next, q: quit)")
    parser.add_argument("--out", default=None, help="folder for figures (default runs/lessons/NN_name/)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every generator (default 0)")
    if add_arguments is not None:
        add_arguments(parser)
    return parser


class Lesson:
    """One lesson run: its options, its steps, its checks and where its figures go.

    name           "NN_name", the file name without .py (names the default --out)
    title          one line, printed at the top
    add_arguments  optional function(parser) adding lesson-specific options
    argv           the arguments to parse (default sys.argv[1:]; NOTEBOOK_ARGV in a kernel)
    """

    def __init__(self, name, title, add_arguments=None, argv=None):
        self.name, self.title = name, title
        self.in_kernel = in_kernel()
        parser = build_parser(f"Lesson {name}: {title}", add_arguments)
        if argv is None:
            argv = list(NOTEBOOK_ARGV) if self.in_kernel else sys.argv[1:]
        self.args = parser.parse_args(argv)
        self.fast = bool(self.args.fast)
        self.seed = int(self.args.seed)
        self.pausing = bool(self.args.step) and not self.in_kernel  # a notebook runs its cells itself
        self.out = Path(self.args.out) if self.args.out else Path("runs") / "lessons" / name
        self.step_number = 0
        self.step_title = ""
        self.checks = 0
        self.figures = []
        self._start = time.perf_counter()
        if not self.in_kernel:  # in a kernel a failed check is the error of its cell
            _install_excepthook(self)
        rule = "=" * WIDTH
        quick = "FAST = True in the first cell" if self.in_kernel else "--fast"
        mode = "fast (small sizes)" if self.fast else f"full sizes ({quick} for a quick run)"
        print(rule)
        print(f"Lesson {name}: {title}")
        print(f"mode: {mode}; seed {self.seed}; figures in {self.out}")
        print(rule, flush=True)

    # -- sizes and randomness ---------------------------------------------
    def pick(self, fast, full):
        """``fast`` with --fast, else ``full``: the one place sizes are chosen."""
        return fast if self.fast else full

    def rng(self, key=0):
        """A tinydiff generator (current backend) seeded by (--seed, key)."""
        from . import backend as B

        return B.default_rng((self.seed, key))

    # -- structure --------------------------------------------------------
    def step(self, title, paper=None, code=None):
        """Start a step: pause after the previous one (--step), then print its header.

        paper  what the paper says, the equation in plain text (one string or
               several lines); code  the module.function that implements it.
        """
        self._pause()
        self.step_number += 1
        self.step_title = title
        print()
        print(f"-- Step {self.step_number}: {title} " + "-" * max(0, WIDTH - 12 - len(title)))
        if paper:
            self._block("paper:", paper)
        if code:
            self._block("code: ", code)
        sys.stdout.flush()

    def _block(self, label, text):
        lines = text if isinstance(text, (list, tuple)) else str(text).strip().splitlines()
        for i, line in enumerate(lines):
            print(f"{label if i == 0 else ' ' * len(label)} {line}")

    def _pause(self):
        if not self.pausing or self.step_number == 0:
            return
        try:
            answer = input(f"[step {self.step_number} done] Enter: next step, q: quit > ")
        except EOFError:  # no terminal on stdin: stop asking, run to the end
            self.pausing = False
            print()
            return
        if answer.strip().lower() in ("q", "quit", "exit"):
            print(f"stopped after step {self.step_number}; {self.checks} checks passed so far")
            sys.exit(0)

    def say(self, text):
        """A paragraph of explanation, wrapped and indented."""
        for paragraph in textwrap.dedent(text).strip().split("\n\n"):
            print(textwrap.fill(" ".join(paragraph.split()), WIDTH, initial_indent="  ",
                                subsequent_indent="  "))
        sys.stdout.flush()

    def value(self, label, value, note=""):
        """One computed number (or short array), aligned under the others."""
        text = value if isinstance(value, str) else fmt(value)
        print(f"  {label:<34} {text}" + (f"   {note}" if note else ""), flush=True)

    def table(self, header, rows, digits=5):
        """A small table: header a list of column names, rows lists of values."""
        cells = [[str(h) for h in header]]
        for row in rows:
            cells.append([v if isinstance(v, str) else fmt(v, digits) for v in row])
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        for j, row in enumerate(cells):
            print("  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
            if j == 0:
                print("  " + "  ".join("-" * w for w in widths))
        sys.stdout.flush()

    # -- figures ----------------------------------------------------------
    def path(self, filename) -> str:
        """Where a figure called ``filename`` goes (the --out folder is created)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return str(self.out / filename)

    def saved(self, path):
        """Report a figure written by tinydiff.viz (which returns its path); in a kernel, show it."""
        self.figures.append(str(path))
        print(f"  figure: {path}", flush=True)
        if self.in_kernel and str(path).lower().endswith(FIGURE_SUFFIXES):
            from IPython.display import Image, display

            display(Image(filename=str(path)))  # inline, under the cell; the file stays written
        return path

    # -- checks -----------------------------------------------------------
    def _fail(self, message):
        where = f"lesson {self.name}, step {self.step_number} ({self.step_title})"
        raise CheckFailed(f"{where}: {message}")

    def _passed(self, message):
        self.checks += 1
        print(f"  {OK} {message}", flush=True)

    def check(self, condition, message, numbers=""):
        """Claim ``message``; ``numbers`` (a string) shows the evidence either way."""
        detail = f" ({numbers})" if numbers else ""
        if not bool(condition):
            self._fail(f"expected {message}, but it does not hold{detail}")
        self._passed(message + detail)

    def check_close(self, what, value, expected, *, rtol=0.0, atol=0.0, against="the closed form"):
        """|value - expected| <= atol + rtol |expected| elementwise (arrays: the worst element)."""
        a, b = _host(value), _host(expected)
        a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a_arr.shape != b_arr.shape and a_arr.size != 1 and b_arr.size != 1:
            self._fail(f"{what}: shapes differ, {a_arr.shape} against {b_arr.shape}")
        diff = np.abs(a_arr - b_arr)
        allowed = atol + rtol * np.abs(b_arr)
        excess = np.broadcast_to(diff - allowed, np.broadcast(a_arr, b_arr).shape)
        if not np.all(np.isfinite(a_arr)) or not np.all(np.isfinite(b_arr)):
            self._fail(f"{what}: non-finite values (value {fmt(a)}, {against} {fmt(b)})")
        worst = int(np.argmax(excess)) if excess.size else 0
        d = float(np.broadcast_to(diff, excess.shape).reshape(-1)[worst])
        tol = float(np.broadcast_to(allowed, excess.shape).reshape(-1)[worst])
        if excess.size > 1:
            text = f"{what} ({excess.size} values) against {against}: max |difference| {d:.3g} <= {tol:.3g}"
        else:
            text = f"{what} {fmt(a)} against {against} {fmt(b)}: |difference| {d:.3g} <= {tol:.3g}"
        if excess.size and float(excess.max()) > 0:
            self._fail(text.replace("<=", "> allowed"))
        self._passed(text)

    def check_mc(self, what, estimate, expected, stderr, *, k=4.0, against="the closed form"):
        """A Monte Carlo estimate within ``k`` standard errors of the exact value."""
        estimate, expected, stderr = float(_host(estimate)), float(_host(expected)), float(_host(stderr))
        if not (math.isfinite(estimate) and math.isfinite(expected) and stderr > 0):
            self._fail(f"{what}: estimate {estimate}, exact {expected}, standard error {stderr}")
        z = (estimate - expected) / stderr
        text = (f"Monte Carlo {what} {fmt(estimate, 5)} against {against} {fmt(expected, 5)}: "
                f"within {k:g} standard errors (SE {stderr:.2g}, z = {z:+.2f})")
        if abs(z) > k:
            self._fail(text.replace("within", "NOT within"))
        self._passed(text)

    def check_less(self, what_a, a, what_b, b):
        """a < b, both shown."""
        a, b = float(_host(a)), float(_host(b))
        self.check(a < b, f"{what_a} < {what_b}", f"{fmt(a, 5)} < {fmt(b, 5)}")

    def check_raises(self, error_type, function, message):
        """``function()`` raises ``error_type``; returns the exception."""
        try:
            function()
        except error_type as error:
            self._passed(f"{message} ({type(error).__name__} raised)")
            return error
        self._fail(f"expected {message}: {error_type.__name__} was not raised")

    # -- the end ----------------------------------------------------------
    def done(self):
        """Print the summary line the tests look for."""
        seconds = time.perf_counter() - self._start
        print()
        print("=" * WIDTH)
        figures = f"; {len(self.figures)} figure(s) in {self.out}" if self.figures else ""
        print(f"lesson {self.name}: all {self.checks} checks passed in {seconds:.1f} s{figures}")
        print("=" * WIDTH, flush=True)


def _install_excepthook(lesson):
    """Print a failed check as one clear message (exit status 1), not a traceback."""
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if issubclass(kind, CheckFailed):
            sys.stdout.flush()
            print(f"\n{FAILED}: {error}", file=sys.stderr, flush=True)
            return
        previous(kind, error, traceback)

    sys.excepthook = hook


__all__ = ["FAILED", "NOTEBOOK_ARGV", "OK", "ROOT", "WIDTH", "CheckFailed", "Lesson", "build_parser", "fmt",
           "in_kernel", "sample_variance"]
