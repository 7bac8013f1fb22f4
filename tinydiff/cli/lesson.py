"""The lesson command: run one of the numbered scripts in lessons/ (``lesson 03``, ``lesson list``)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from .common import UsageError, log


def add_parser(commands):
    lesson = commands.add_parser("lesson", help="run a lesson script, e.g. 'lesson 03'")
    lesson.add_argument("name", help="lesson number or name, e.g. 03 or posterior; 'list' lists them")
    lesson.add_argument("rest", nargs=argparse.REMAINDER, help="--fast, --step, --out DIR")
    return lesson


def lessons_dir():
    """lessons/ beside the tinydiff package (in the source tree)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tinydiff/
    return os.path.join(os.path.dirname(package), "lessons")


def command_lesson(args):
    folder = lessons_dir()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no lessons folder at {folder}: the lessons ship with the source tree "
                                "(git clone, then pip install -e .)")
    scripts = sorted(f for f in os.listdir(folder) if f.endswith(".py") and f[:2].isdigit())
    if args.name == "list":
        for script in scripts:
            log(script[:-3])
        return 0
    matches = [s for s in scripts if s.startswith(args.name) or s[3:-3] == args.name]
    if len(matches) != 1:
        raise UsageError(f"tinydiff lesson: no single lesson matches {args.name!r}; "
                         f"choose from {', '.join(s[:-3] for s in scripts)}")
    return subprocess.call([sys.executable, os.path.join(folder, matches[0]), *args.rest])
