"""``python -m tinydiff``: the command line, which lives in tinydiff/cli/."""

import sys

from .cli import UsageError, build_parser, main

__all__ = ["UsageError", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
