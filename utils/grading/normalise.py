"""Repair what nbgrader rejects in a submission, from the release, before nbgrader reads it.

nbgrader trusts the nbgrader metadata a submitted notebook carries, and a small, innocent edit breaks it:
Jupyter's copy and paste duplicates a cell's `grade_id`, an extension leaves `"nbgrader": {}`, a keypress
turns an answer cell into markdown, a learner renames a test cell's id or unticks its "grade". nbgrader
then blanks the metadata and stops the whole run (`SchemaTooOldError`), or grades the cell as ungraded and
exports 0 without a word. The release is the authority on what each cell is, so `normalise` makes the
submission agree with it:

- nbgrader metadata that is not a dict, is empty, has no grade_id, or names a grade_id the release does
  not have (renamed, or pasted from another notebook) is removed: the cell stays, as ordinary code;
- a grade_id that appears more than once keeps its metadata on the last copy, as nbgrader's own
  DeduplicateIds does; the other copies become ordinary cells and still run;
- every cell with a release grade_id gets the release's metadata and cell type (answer code turned into
  markdown runs as code again, with the learner's source);
- a locked cell of the release (setup, test) that the submission lacks is put back right after the
  nearest release cell before it that the submission still has (matched by grade_id, or by its exact
  source for cells without one), so a test cell returns below its exercise;
- cell ids and `nbformat_minor` follow the release (4.4 has no ids; 4.5 needs unique ones).

`NormaliseSubmission` runs this as nbgrader's first sanitize step, in memory: the submitted file is never
written. Every repair is logged on one line starting with `REPAIR_TAG`, which the grading run collects.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade, is_locked

REPAIR_TAG = "tfs-repair:"
META_FIELDS = ("grade", "solution", "locked", "points")  # what decides how a cell is graded


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    if isinstance(meta, dict) and isinstance(meta.get("grade_id"), str) and meta["grade_id"]:
        return meta["grade_id"]
    return None


def _set_type(cell: NotebookNode, cell_type: str) -> None:
    cell.cell_type = cell_type
    if cell_type == "code":
        cell.pop("attachments", None)
        cell.setdefault("outputs", [])
        cell.setdefault("execution_count", None)
    else:
        cell.pop("outputs", None)
        cell.pop("execution_count", None)


def _clean_structure(nb: NotebookNode, repairs: list[str]) -> None:
    """Cell fields a hand-edited or old file may lack or carry wrongly."""
    for index, cell in enumerate(nb.cells):
        if not isinstance(cell.get("metadata"), dict):
            cell.metadata = NotebookNode()
        if cell.cell_type not in ("code", "markdown", "raw"):
            repairs.append(f"cell {index} has cell type {cell.cell_type!r}: kept as markdown")
            _set_type(cell, "markdown")
        else:
            _set_type(cell, cell.cell_type)
        if cell.cell_type == "code" and not isinstance(cell.outputs, list):
            cell.outputs = []


def _strip_metadata(nb: NotebookNode, known: dict, repairs: list[str]) -> None:
    """Remove nbgrader metadata that names no release cell, and duplicated ids but the last copy."""
    last = {}
    for index, cell in enumerate(nb.cells):
        if "nbgrader" not in cell.metadata:
            continue
        grade_id = _grade_id(cell)
        if grade_id is None:
            meta = cell.metadata.nbgrader
            what = "empty" if meta in ({}, None) else "without a grade_id"
            repairs.append(f"cell {index}: removed {what} nbgrader metadata")
            del cell.metadata["nbgrader"]
        elif grade_id not in known:
            repairs.append(f"cell {index}: removed nbgrader metadata with grade_id {grade_id!r}, which the "
                           "release does not have (renamed, or from another notebook)")
            del cell.metadata["nbgrader"]
        else:
            last[grade_id] = index
    for index, cell in enumerate(nb.cells):
        grade_id = _grade_id(cell)
        if grade_id is not None and last[grade_id] != index:
            repairs.append(f"cell {index}: a copy of {grade_id!r}; the last copy (cell {last[grade_id]}) is "
                           "graded, this one runs as an ordinary cell")
            del cell.metadata["nbgrader"]


def _restore_metadata(nb: NotebookNode, known: dict, repairs: list[str]) -> None:
    for index, cell in enumerate(nb.cells):
        grade_id = _grade_id(cell)
        if grade_id is None:
            continue
        released = known[grade_id]
        if cell.cell_type != released.cell_type:
            repairs.append(f"cell {index} ({grade_id!r}) was {cell.cell_type}: restored to {released.cell_type}, "
                           "as released")
            _set_type(cell, released.cell_type)
        meta = cell.metadata.nbgrader
        changed = [f"{k}={meta.get(k)!r}" for k in META_FIELDS if meta.get(k) != released.metadata.nbgrader.get(k)]
        if changed:
            repairs.append(f"cell {index} ({grade_id!r}): nbgrader metadata restored from the release "
                           f"(was {', '.join(changed)})")
        cell.metadata.nbgrader = copy.deepcopy(released.metadata.nbgrader)


def _positions(nb: NotebookNode, release: NotebookNode) -> dict[int, int]:
    """release cell index -> index in nb of the same cell: by grade_id, else by identical type and source."""
    by_id = {_grade_id(c): i for i, c in enumerate(nb.cells) if _grade_id(c)}
    by_source: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(nb.cells):
        if not _grade_id(c):
            by_source.setdefault((c.cell_type, c.source.strip()), []).append(i)
    found = {}
    for r, cell in enumerate(release.cells):
        grade_id = _grade_id(cell)
        if grade_id:
            if grade_id in by_id:
                found[r] = by_id[grade_id]
        elif by_source.get((cell.cell_type, cell.source.strip())):
            found[r] = by_source[(cell.cell_type, cell.source.strip())].pop(0)
    return found


def _restore_deleted(nb: NotebookNode, release: NotebookNode, repairs: list[str]) -> None:
    present = {_grade_id(c) for c in nb.cells} - {None}
    for r, cell in enumerate(release.cells):
        grade_id = _grade_id(cell)
        if not grade_id or grade_id in present or not (is_grade(cell) or is_locked(cell)):
            continue
        found = _positions(nb, release)
        before = [found[j] for j in range(r - 1, -1, -1) if j in found]
        after = [found[j] for j in range(r + 1, len(release.cells)) if j in found]
        at = before[0] + 1 if before else (after[0] if after else len(nb.cells))
        restored = copy.deepcopy(cell)
        restored.pop("id", None)
        nb.cells.insert(at, restored)
        present.add(grade_id)
        repairs.append(f"restored deleted cell {grade_id!r} at cell {at}, where the release has it")


def _match_format(nb: NotebookNode, release: NotebookNode, repairs: list[str]) -> None:
    minor = release.get("nbformat_minor", 4)
    if nb.get("nbformat_minor") != minor:
        repairs.append(f"nbformat 4.{nb.get('nbformat_minor')} read as 4.{minor}, the release's")
    nb.nbformat, nb.nbformat_minor = 4, minor
    seen: set[str] = set()
    for cell in nb.cells:
        if minor < 5:
            cell.pop("id", None)
        elif not isinstance(cell.get("id"), str) or cell.id in seen:
            cell.id = nbformat.v4.nbbase.random_cell_id()
        if minor >= 5:
            seen.add(cell.id)


def normalise(nb: NotebookNode, release: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """A copy of `nb` that nbgrader grades as the release defines it, and the repairs made, in words."""
    nb = copy.deepcopy(nb)
    known = {_grade_id(c): c for c in release.cells if _grade_id(c)}
    repairs: list[str] = []
    _clean_structure(nb, repairs)
    _strip_metadata(nb, known, repairs)
    _restore_metadata(nb, known, repairs)
    _restore_deleted(nb, release, repairs)
    _match_format(nb, release, repairs)
    return nb, repairs


def release_notebook(coursedir: CourseDirectory, assignment: str, notebook: str) -> NotebookNode:
    path = Path(coursedir.format_path(coursedir.release_directory, ".", assignment)) / f"{notebook}.ipynb"
    if not path.exists():
        path = Path(__file__).resolve().parents[2] / "chapters" / f"{notebook}.ipynb"
    return nbformat.read(str(path), as_version=4)


class NormaliseSubmission(NbGraderPreprocessor):
    """nbgrader's first sanitize step: `normalise` against the release, each repair logged."""

    def preprocess(self, nb, resources):
        info = resources["nbgrader"]
        release = release_notebook(CourseDirectory(config=self.config), info["assignment"], info["notebook"])
        nb, repairs = normalise(nb, release)
        for repair in repairs:
            self.log.warning("%s %s/%s: %s", REPAIR_TAG, info["student"], info["notebook"], repair)
        return nb, resources
