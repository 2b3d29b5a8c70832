"""Which checker each solution notebook calls, and with what: read from the notebooks' autograded cells.

`reference_calls()` evaluates each test cell's `checks.<id>(...)` line against the exported reference code
(`utils.reference.*`), so tools can run every checker on the course's own solution without executing the
notebooks: the registry tests and the benchmark use it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat

from utils.grade import exercise_cells

ROOT = Path(__file__).resolve().parents[2]
_CALL = re.compile(r"^\s*checks\.(\w+)\((.*)\)\s*$")


@dataclass(frozen=True)
class CheckCall:
    notebook: str
    exercise: str
    points: float
    source: str  # the `checks.<id>(...)` line


def check_calls(solutions: Path = ROOT / "solutions") -> list[CheckCall]:
    calls = []
    for path in sorted(solutions.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for index, _ in exercise_cells(nb):
            cell = nb.cells[index]
            meta = cell.metadata["nbgrader"]
            line = next((ln for ln in cell.source.splitlines() if _CALL.match(ln)), "")
            calls.append(CheckCall(path.stem, meta["grade_id"], float(meta.get("points", 0)), line.strip()))
    return calls


def reference_namespace() -> dict:
    """Every public name of every exported reference module, plus `checks`."""
    import utils.reference as package
    from utils import checks

    namespace: dict = {"checks": checks}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"utils.reference.{info.name}")
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return namespace


def reference_calls() -> Iterator[tuple[CheckCall, Callable[[], None] | None]]:
    """(call, a thunk running it on the reference code), or None when the call needs notebook state."""
    namespace = reference_namespace()
    for call in check_calls():
        match = _CALL.match(call.source)
        if not match:
            yield call, None
            continue
        try:
            args = eval(f"({match.group(2)},)", dict(namespace))  # names only: the notebook's own test line
        except NameError:
            yield call, None
            continue
        checker = getattr(namespace["checks"], match.group(1))
        yield call, (lambda checker=checker, args=args: checker(*args))
