"""What an executed test cell says about one exercise: passed, or which catalogued mistake its check named.

Shared by the class report (utils/grading/class_report.py, reading nbgrader's autograded notebooks) and the
live progress view (utils/progress.py, reading notebooks it executed with utils.grade). Both only read
outputs: nothing here runs a learner's code.

Every checker names a catalogued mistake the same way (utils/checks/core.py):
"... This matches a known mistake, <name with spaces>: <hint>". A failure without that sentence is
"unnamed", reported with the first line of its message.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from utils.grade import _first_line, cell_result

_NAMED = re.compile(r"This matches a known mistake, ([^:\n]+?):")

# Kinds of outcome, in the order reports list them.
PASSED, NAMED, UNNAMED, NOT_IMPLEMENTED, TIMED_OUT, NOT_RUN, FLAGGED, MISSING = (
    "passed", "named", "unnamed", "not implemented", "timed out", "not run", "flagged", "missing")
KINDS = (PASSED, NAMED, UNNAMED, NOT_IMPLEMENTED, TIMED_OUT, NOT_RUN, FLAGGED, MISSING)
# Labels of a MISSING outcome: the notebook could not be read, or was submitted but never autograded.
UNREADABLE, NOT_GRADED = "unreadable", "not graded"
# Errors the grader itself writes into cells it did not run (utils/grading/execute.py).
_NOT_RUN_ERRORS = {"KernelDied", "NotebookTimeout", "DeadKernelError"}


@dataclass(frozen=True)
class Outcome:
    exercise: str
    kind: str  # one of KINDS
    label: str  # the mistake's catalogue name for NAMED; otherwise the kind ("unnamed", ...)
    message: str  # first line of what the check (or the grader) said

    @property
    def ok(self) -> bool:
        return self.kind == PASSED

    @property
    def key(self) -> str:
        """How reports group failures: the mistake's name, or "unnamed: <first line>"."""
        if self.kind == NAMED:
            return self.label
        if self.kind == UNNAMED:
            return f"unnamed: {self.message}"
        return self.label  # the kind, or what is missing: "unreadable", "not graded"


@functools.cache
def catalogue_names() -> dict[str, dict[str, str]]:
    """{exercise: {name as printed (spaces): catalogue name}} for every registered checker's mistakes."""
    from utils.checks import REGISTRY

    return {ex: {m.name.replace("_", " "): m.name for m in entry.mistakes} for ex, entry in REGISTRY.items()}


def named_mistake(text: str, exercise: str) -> str | None:
    """The catalogue name of the first mistake a check message names, or None."""
    found = _NAMED.search(text)
    if not found:
        return None
    printed = found.group(1).strip()
    names = catalogue_names()
    if printed in names.get(exercise, {}):
        return names[exercise][printed]
    # a check may name a mistake of a sub-exercise (e.g. the block's check names an attention mistake)
    for other in names.values():
        if printed in other:
            return other[printed]
    return printed.replace(" ", "_")


def _errors(cell) -> list[dict]:
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def read_outcome(cell, exercise: str) -> Outcome:
    """Classify one executed test cell from its outputs alone."""
    if cell is None:
        return Outcome(exercise, MISSING, MISSING, "no such test cell in the notebook")
    errors = _errors(cell)
    if not errors:
        if cell.get("execution_count") is None and not cell.get("outputs"):
            return Outcome(exercise, NOT_RUN, NOT_RUN, "not run")
        return Outcome(exercise, PASSED, PASSED, cell_result(cell, exercise).message)
    # the first error decides, except that an integrity flag (appended after execution) overrides a pass
    flagged = next((e for e in errors if e.get("ename") == "GradingIntegrityError"), None)
    error = flagged or errors[0]
    name, value = str(error.get("ename", "")), str(error.get("evalue", ""))
    first = _first_line(value) or name
    if flagged:
        return Outcome(exercise, FLAGGED, FLAGGED, first)
    if name in _NOT_RUN_ERRORS:
        return Outcome(exercise, NOT_RUN, NOT_RUN, first)
    if name in ("NotImplementedError", "NotImplementedYet"):
        return Outcome(exercise, NOT_IMPLEMENTED, NOT_IMPLEMENTED, first or "not implemented yet")
    if name in ("CellTimeoutError", "KeyboardInterrupt", "TimeoutError") or "timed out" in first.lower():
        return Outcome(exercise, TIMED_OUT, TIMED_OUT, first or name)
    text = value + "\n" + "\n".join(str(line) for line in error.get("traceback", []))
    mistake = named_mistake(text, exercise)
    message = first if name == "AssertionError" else f"{name}: {first}"
    if mistake:
        return Outcome(exercise, NAMED, mistake, message)
    return Outcome(exercise, UNNAMED, UNNAMED, message)


def graded_cells(nb) -> dict[str, object]:
    """{exercise id: its autograded test cell} of an executed notebook."""
    from utils.grade import exercise_cells

    return {exercise: nb.cells[index] for index, exercise in exercise_cells(nb)}
