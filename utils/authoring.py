"""Cells with the right metadata, for course authors who write solution notebooks from a script.

`solutions/*.ipynb` stays the single source: these helpers only save typing nbgrader's metadata by hand.

    cells = [md("# Chapter"), exported("components", "class LayerNorm(nn.Module): ..."),
             solution("layer_norm", "..."), test("layer_norm", "checks.layer_norm(LayerNorm)", points=2)]
    write_notebook("solutions/02_components.ipynb", cells)

Conventions the build, the checkers and the grader rely on:
- a solution cell's `grade_id` is `<exercise>_solution`; its answer sits between `### BEGIN SOLUTION` and
  `### END SOLUTION` (nbgrader replaces that region with a stub raising `NotImplementedError`);
- a test cell's `grade_id` is the exercise id of `utils.checks.CHECKERS` and it calls that checker;
- `"tfs": {"export": MODULE}` puts the cell, solution included, into `utils/reference/MODULE.py`.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

_SCHEMA = 3


def md(text: str):
    return nbformat.v4.new_markdown_cell(text.strip("\n"))


def code(source: str):
    return nbformat.v4.new_code_cell(source.strip("\n"))


def _nbgrader(cell, grade_id: str, *, solution: bool, grade: bool, locked: bool, points: float | None = None):
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": _SCHEMA, "solution": solution}
    if points is not None:
        meta["points"] = points
    cell.metadata["nbgrader"] = meta
    return cell


def solution(exercise: str, source: str, export: str | None = None, suffix: str = "solution"):
    """A code cell the learner completes. `export` also copies it into `utils/reference/<export>.py`."""
    cell = _nbgrader(code(source), f"{exercise}_{suffix}", solution=True, grade=False, locked=False)
    cell.metadata["tfs"] = {"exercise": exercise, **({"export": export} if export else {})}
    return cell


def exported(module: str, source: str):
    """Given code (no exercise) that the reference package needs too, e.g. imports and the Config."""
    cell = code(source)
    cell.metadata["tfs"] = {"export": module}
    return cell


def test(exercise: str, source: str, points: float = 1):
    """The autograded cell that checks `exercise`: one line calling its checker, plus hidden tests if any."""
    cell = _nbgrader(code(source), exercise, solution=False, grade=True, locked=True, points=points)
    cell.metadata["tfs"] = {"exercise": exercise}
    return cell


def write_notebook(path: str | Path, cells: list) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nb.nbformat_minor = 4  # no cell ids: stable diffs
    nb.cells = cells
    for cell in nb.cells:
        cell.pop("id", None)
    nbformat.write(nb, str(path), version=4)
