"""What every lesson imports: ``import _lesson``, then ``_lesson.Lesson(...)``.

The helpers themselves (arguments, steps, pauses, checks, figures) live in
the package, in ``tinydiff/lesson.py``, whose docstring describes them: a
notebook made from a lesson (``python -m tinydiff notebooks``) must find
them wherever tinydiff is installed, on Colab as well as in a checkout.
This file is what a lesson run as a script finds beside itself: it makes
the tinydiff of this checkout importable even when it is not installed,
then re-exports the helpers under the names the lessons use.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The lessons ship with the source tree: make `import tinydiff` find the
# package next to this folder even when it is not installed.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tinydiff.lesson import (  # noqa: E402
    FAILED,
    OK,
    ROOT,
    WIDTH,
    CheckFailed,
    Lesson,
    build_parser,
    fmt,
    in_kernel,
    sample_variance,
)

__all__ = ["FAILED", "OK", "ROOT", "WIDTH", "CheckFailed", "Lesson", "build_parser", "fmt", "in_kernel",
           "sample_variance"]
