"""Submissions whose notebook structure, not code, is what goes wrong: the edits Jupyter makes in passing
(copy and paste, a keypress that changes a cell's type, an extension's empty metadata) and the ones a
learner makes by hand (a renamed grade_id, "grade" unticked, a deleted test cell). Each is a full solution
otherwise, so each must score full marks; `normalise` repairs them from the release.

Also the submissions that cannot be graded at all, and must say why: `NOT_GRADED` maps each to a phrase of
its cause.
"""

from __future__ import annotations

import copy
import json

import nbformat
from nbgrader.utils import is_grade

from tests.grading_corpus import Case, Layout, clean


def _ids(nb) -> list:
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]


def _at(nb, grade_id: str) -> int:
    return _ids(nb).index(grade_id)


def _test_ids(layout: Layout) -> list[str]:
    return [g for _, ids in layout.groups for g in ids]


def after_markdown(layout: Layout) -> str:
    """A test cell whose cell before it in the release has no grade_id (a hint), else the last test."""
    release = layout.release
    for i, cell in enumerate(release.cells):
        if is_grade(cell) and i and not release.cells[i - 1].metadata.get("nbgrader", {}).get("grade_id"):
            return cell.metadata.nbgrader["grade_id"]
    return _test_ids(layout)[-1]


def duplicated_answer(layout: Layout):
    nb = clean(layout.solution)
    at = layout.first()[0]
    nb.cells.insert(at + 1, copy.deepcopy(nb.cells[at]))  # Jupyter's copy keeps the grade_id
    return nb


def duplicated_test(layout: Layout):
    nb = clean(layout.solution)
    at = _at(nb, layout.last()[1][0])
    nb.cells.insert(at + 1, copy.deepcopy(nb.cells[at]))
    return nb


def empty_metadata(layout: Layout):
    nb = clean(layout.solution)
    for cell in nb.cells[:3] + [nb.cells[layout.first()[0] + 2]]:
        if "nbgrader" not in cell.metadata:
            cell.metadata["nbgrader"] = {}
    return nb


def stale_metadata(layout: Layout):
    """Old nbgrader schema on a test cell; a pasted cell that carries another notebook's grade_id."""
    nb = clean(layout.solution)
    meta = nb.cells[_at(nb, layout.first()[1][0])].metadata.nbgrader
    meta["schema_version"] = 1
    meta.pop("cell_type", None)
    pasted = nbformat.v4.new_code_cell("pasted_from_elsewhere = 1")
    pasted.pop("id", None)
    pasted.metadata["nbgrader"] = {"grade": True, "grade_id": "ex_from_another_course", "locked": True,
                                   "points": 5, "solution": False, "schema_version": 3}
    nb.cells.insert(layout.first()[0], pasted)
    return nb


def answer_as_markdown(layout: Layout):
    nb = clean(layout.solution)  # nbformat 4.4, as the release
    cell = nb.cells[layout.last()[0]]
    cell.cell_type = "markdown"
    cell.pop("outputs", None)
    cell.pop("execution_count", None)
    return nb


def test_not_graded(layout: Layout):
    nb = clean(layout.solution)
    nb.cells[_at(nb, layout.first()[1][0])].metadata.nbgrader["grade"] = False
    return nb


def renamed_test_id(layout: Layout):
    nb = clean(layout.solution)
    nb.cells[_at(nb, layout.last()[1][0])].metadata.nbgrader["grade_id"] = "my_own_name"
    return nb


def deleted_test_after_markdown(layout: Layout):
    nb = clean(layout.solution)
    del nb.cells[_at(nb, after_markdown(layout))]
    return nb


def nbformat_45_duplicate_ids(layout: Layout) -> bytes:
    """Raw bytes: nbformat.writes would repair the duplicate id before the grader ever saw it."""
    nb = json.loads(nbformat.writes(clean(layout.solution)))
    nb["nbformat_minor"] = 5
    for i, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{i}"
    nb["cells"][3]["id"] = nb["cells"][2]["id"]
    return json.dumps(nb).encode()


def combined(*edits):
    """One submission with every edit in `edits` (each applied to the previous one's notebook)."""
    def build(layout: Layout):
        nb = layout.solution
        for edit in edits:
            nb = edit(Layout(nb, layout.release, layout.points, layout.groups))
        return nb
    return build


def _badge_metadata_emptied(layout: Layout):
    nb = clean(layout.solution)
    nb.cells[0].metadata["nbgrader"] = {}
    return nb


# answer_as_markdown first: it finds the last answer cell by its index in the solution
everything_at_once = combined(answer_as_markdown, duplicated_answer, test_not_graded, renamed_test_id,
                              deleted_test_after_markdown, _badge_metadata_emptied)


def wrong_file_name(layout: Layout) -> dict[str, bytes]:
    return {"my_work.ipynb": nbformat.writes(clean(layout.solution)).encode()}


def symlink_in_folder(layout: Layout) -> dict[str, object]:
    return {None: nbformat.writes(clean(layout.solution)).encode(), "data.txt": ("symlink", "/etc/passwd")}


def not_a_cell_list(layout: Layout) -> bytes:
    nb = json.loads(nbformat.writes(clean(layout.release)))
    nb["cells"][3]["source"] = 42
    return json.dumps(nb).encode()


def metadata_cases() -> list[Case]:
    return [Case("duplicated_answer_cell", duplicated_answer),
            Case("duplicated_test_cell", duplicated_test),
            Case("empty_nbgrader_metadata", empty_metadata),
            Case("stale_nbgrader_metadata", stale_metadata),
            Case("answer_cell_turned_markdown", answer_as_markdown),
            Case("test_cell_grade_false", test_not_graded),
            Case("renamed_test_grade_id", renamed_test_id),
            Case("deleted_test_cell_after_markdown", deleted_test_after_markdown),
            Case("nbformat_45_duplicate_cell_ids", nbformat_45_duplicate_ids),
            Case("every_metadata_problem_at_once", everything_at_once)]


def graded_metadata_cases() -> list[Case]:
    """The same classes in fewer notebooks, for the end-to-end run (each kernel costs seconds): every class
    above is in one of them; `metadata_cases` are each checked without a kernel in test_grading_repairs."""
    return [Case("duplicated_cells", combined(duplicated_answer, duplicated_test)),
            Case("edited_metadata", combined(empty_metadata, stale_metadata, test_not_graded, renamed_test_id)),
            Case("answer_cell_turned_markdown", answer_as_markdown),
            Case("deleted_test_cell_after_markdown", deleted_test_after_markdown),
            Case("nbformat_45_duplicate_cell_ids", nbformat_45_duplicate_ids)]


# submissions that cannot be graded: (case, phrase that must be in the reported cause)
NOT_GRADED = {
    "invalid_json": "not a valid notebook: NotJSONError",
    "cell_source_not_text": "not a valid notebook",
    "notebook_under_another_name": "no 02_components.ipynb in the submission folder (it holds my_work.ipynb)",
    "symlink_in_submission_folder": "symbolic links (data.txt -> /etc/passwd)",
}


def not_graded_cases() -> list[Case]:
    return [Case("cell_source_not_text", not_a_cell_list),
            Case("notebook_under_another_name", wrong_file_name),
            Case("symlink_in_submission_folder", symlink_in_folder)]
