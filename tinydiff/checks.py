"""Argument checks shared by every layer: one message style, naming the argument.

Each check returns the value (converted where that is the point, such as an
int from a NumPy integer) or raises ValueError saying which argument, what
it must be, and what it was.
"""

from __future__ import annotations

import numbers


def check_choice(argument, value, allowed):
    """``value`` if it is one of ``allowed``; otherwise ValueError listing the choices."""
    if value not in allowed:
        raise ValueError(f"{argument} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def check_int(argument, value, minimum=None, maximum=None, allow_none=False):
    """``value`` as a Python int within [minimum, maximum] (bools are refused)."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok:
        value = int(value)
        ok = (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = _bounds(minimum, maximum)
        none = "None or " if allow_none else ""
        raise ValueError(f"{argument} must be {none}an integer{bounds}, got {value!r}")
    return value


def _bounds(minimum, maximum):
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def physical_memory():
    """This machine's memory in bytes, or None where the system does not say."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(nbytes, what, advice):
    """Refuse, before anything is allocated, work that needs more memory than the machine has."""
    total = physical_memory()
    if total and nbytes > total:
        raise ValueError(f"{what} needs about {nbytes / 2**30:,.1f} GB, more than this machine's "
                         f"{total / 2**30:,.1f} GB; {advice}")
    return nbytes
