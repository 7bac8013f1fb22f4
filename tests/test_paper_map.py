"""The paper-to-code table of README.md is true: every equation it names has a
function in the named module whose docstring names that equation."""

import importlib
import inspect
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def paper_to_code_rows():
    """(paper references, module) for each row of the table under '## Paper to code'."""
    text = open(README, encoding="utf-8").read()
    section = text.split("## Paper to code", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("paper", "") or set(cells[0]) <= set("-: "):
            continue
        rows.append((cells[0], cells[-1].strip("`")))
    return rows


def references(paper_cell):
    """The searchable names in a 'paper' cell: 'Eq. 6, 7' -> ['Eq. 6', 'Eq. 7']; others as written."""
    names = []
    for part in re.split(r";", paper_cell):
        part = part.strip()
        match = re.match(r"(?:(.*?)\s+)?Eq\.\s*([\d,\s]+)$", part)
        if match:
            prefix = match.group(1) or ""
            for number in re.findall(r"\d+", match.group(2)):
                names.append((prefix, f"Eq. {number}"))
        elif part:
            names.append(("", part))
    return names


def docstrings(module):
    """Every function and method docstring of a module or package (and its own docstring).

    For a package, the names it exports from its own submodules count.
    """
    found = [module.__doc__ or ""]
    for _, obj in inspect.getmembers(module):
        home = getattr(obj, "__module__", None) or ""
        if home != module.__name__ and not home.startswith(module.__name__ + "."):
            continue
        if inspect.isfunction(obj):
            found.append(obj.__doc__ or "")
        elif inspect.isclass(obj):
            found.append(obj.__doc__ or "")
            for _, member in inspect.getmembers(obj, inspect.isfunction):
                found.append(member.__doc__ or "")
    return found


def test_the_table_is_there_and_names_modules():
    rows = paper_to_code_rows()
    assert len(rows) >= 10
    for _, module in rows:
        importlib.import_module(f"tinydiff.{module}")


@pytest.mark.parametrize("paper,module", paper_to_code_rows())
def test_every_named_equation_has_a_function_naming_it(paper, module):
    docs = docstrings(importlib.import_module(f"tinydiff.{module}"))
    for prefix, name in references(paper):
        if name.startswith("Eq. "):
            pattern = re.compile(re.escape(name) + r"(?!\d)")
            hits = [d for d in docs if pattern.search(d) and (not prefix or prefix.split()[0] in d)]
        else:
            hits = [d for d in docs if name in d]
        assert hits, f"no docstring in tinydiff.{module} names {prefix + ' ' if prefix else ''}{name}"


def test_the_check_can_fail():
    docs = docstrings(importlib.import_module("tinydiff.schedules"))
    assert not [d for d in docs if re.search(r"Eq\. 99(?!\d)", d)]
