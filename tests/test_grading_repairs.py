"""The grading flow's pure parts, without a kernel: `normalise` against the release, what collection takes
and skips, and the cause taken from an nbgrader log. (tests/test_grading.py grades the same problems end to
end, sandboxed.)"""

from __future__ import annotations

import copy
import json
import os

import nbformat
import pytest
from nbgrader.nbgraderformat import MetadataValidator

from tests.grading_corpus import Layout, clean
from tests.grading_corpus.metadata import after_markdown, metadata_cases
from utils.grading.autograde import failure_cause, unreadable
from utils.grading.collect import find_submissions
from utils.grading.config import REPO
from utils.grading.normalise import normalise

pytestmark = pytest.mark.xdist_group("test_grading_repairs")  # its module fixture is built once, on one xdist worker

CHAPTER = "02_components"


@pytest.fixture(scope="module")
def lay() -> Layout:
    read = lambda folder: nbformat.read(str(REPO / folder / f"{CHAPTER}.ipynb"), as_version=4)  # noqa: E731
    return Layout.of(read("solutions"), read("chapters"))


def graded_cells(nb) -> list[tuple]:
    return [(c.metadata.nbgrader["grade_id"], c.cell_type, c.metadata.nbgrader["grade"], c.metadata.nbgrader["locked"])
            for c in nb.cells if "nbgrader" in c.metadata]


@pytest.mark.parametrize("case", metadata_cases(), ids=lambda c: c.name)
def test_normalised_submission_has_the_release_structure_and_passes_nbgrader_checks(lay, case):
    submitted = case.build(lay)
    if isinstance(submitted, bytes):  # written as is, so that nbformat does not repair it first
        assert b'"id": "cell-2"' in submitted and submitted.count(b'"id": "cell-2"') == 2
        submitted = nbformat.from_dict(json.loads(submitted))
    before = json.dumps(submitted, sort_keys=True)
    nb, repairs = normalise(submitted, lay.release)
    assert json.dumps(submitted, sort_keys=True) == before  # works on a copy
    assert repairs
    assert graded_cells(nb) == graded_cells(lay.release)
    MetadataValidator().validate_nb(nb)  # what raised SchemaTooOldError / ValidationError in nbgrader
    nbformat.validate(nb)


def test_clean_submission_needs_no_repair(lay):
    for nb in (clean(lay.solution), clean(lay.release)):
        assert normalise(nb, lay.release)[1] == []


def test_deleted_test_cell_goes_back_below_the_cell_it_follows(lay):
    grade_id = after_markdown(lay)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in lay.release.cells]
    at = ids.index(grade_id)
    assert "nbgrader" not in lay.release.cells[at - 1].metadata  # the case the old code put at index 0
    nb = clean(lay.solution)
    del nb.cells[at]
    fixed, _ = normalise(nb, lay.release)
    assert fixed.cells[at].metadata.nbgrader["grade_id"] == grade_id
    assert fixed.cells[at - 1].source == lay.release.cells[at - 1].source
    # several gone at once, the answer cell before one of them too: release order is kept
    first_tests = lay.first()[1]
    nb = clean(lay.solution)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in
                {grade_id, *first_tests, lay.release.cells[lay.first()[0]].metadata.nbgrader["grade_id"]}]
    fixed, _ = normalise(nb, lay.release)
    got = [c.metadata.nbgrader["grade_id"] for c in fixed.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert got == [g for g in ids if g and lay.release.cells[ids.index(g)].metadata.nbgrader["grade"]]


def test_duplicates_keep_the_last_copy_graded_and_every_copy_runs(lay):
    nb = clean(lay.solution)
    at = lay.first()[0]
    nb.cells[at:at + 2] = nb.cells[at:at + 2] + copy.deepcopy(nb.cells[at:at + 2])  # answer + test pasted again
    fixed, repairs = normalise(nb, lay.release)
    assert len(fixed.cells) == len(nb.cells) and len(repairs) == 2
    assert "nbgrader" not in fixed.cells[at].metadata and "nbgrader" in fixed.cells[at + 2].metadata


# ------------------------------------------------------------------------------------------- collection


def write(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_collection_takes_download_names_when_unambiguous_and_says_what_it_skipped(tmp_path):
    write(tmp_path / "ada" / f"{CHAPTER} (1).ipynb")
    write(tmp_path / "bob" / f"{CHAPTER}-Copy1.ipynb")
    write(tmp_path / "cy" / CHAPTER / f"{CHAPTER}.ipynb")
    write(tmp_path / "dee" / f"{CHAPTER}.ipynb")
    write(tmp_path / "dee" / f"{CHAPTER} (2).ipynb")  # two candidates: none is taken
    write(tmp_path / "eve" / "notes.txt")
    write(tmp_path / "eve" / "homework.ipynb")
    write(tmp_path / "real" / f"{CHAPTER}.ipynb")
    (tmp_path / "fay").mkdir()
    (tmp_path / "fay" / f"{CHAPTER}.ipynb").symlink_to(tmp_path / "real" / f"{CHAPTER}.ipynb")
    (tmp_path / "gus").symlink_to(tmp_path / "real", target_is_directory=True)
    write(tmp_path / "bad name!" / f"{CHAPTER}.ipynb")
    write(tmp_path / "stray.ipynb")
    found = find_submissions(tmp_path, [CHAPTER, "03_assembly"])
    assert sorted((s, c, p.name) for s, c, p in found.collected) == [
        ("ada", CHAPTER, f"{CHAPTER} (1).ipynb"), ("bob", CHAPTER, f"{CHAPTER}-Copy1.ipynb"),
        ("cy", CHAPTER, f"{CHAPTER}.ipynb"), ("real", CHAPTER, f"{CHAPTER}.ipynb")]
    why = {str(p.relative_to(tmp_path)): reason for p, reason in found.skipped}
    assert why[f"dee/{CHAPTER}.ipynb"].startswith("ambiguous: 2 candidates") and f"dee/{CHAPTER} (2).ipynb" in why
    assert why["eve/notes.txt"] == "not a notebook"
    assert why["eve/homework.ipynb"].startswith("not named after a chapter")
    assert why["eve"].startswith("no notebook of")
    assert why[f"fay/{CHAPTER}.ipynb"].startswith("a symbolic link (to ") and "not followed" in why["gus"]
    assert why["bad name!"].startswith("not a valid student id")
    assert why["stray.ipynb"].startswith("not a student's folder")


def test_unreadable_and_symlinks_are_causes_not_edits(tmp_path):
    nb = write(tmp_path / "s" / f"{CHAPTER}.ipynb", '{"cells": [')
    assert unreadable(nb).startswith(f"{CHAPTER}.ipynb is not a valid notebook: NotJSONError")
    assert nb.read_text() == '{"cells": ['
    nb.write_text(nbformat.writes(nbformat.v4.new_notebook()))
    assert unreadable(nb) == ""
    os.symlink("/etc/passwd", tmp_path / "s" / "data.txt")
    assert "symbolic links (data.txt -> /etc/passwd)" in unreadable(nb)
    assert "no 03_assembly.ipynb in the submission folder" in unreadable(tmp_path / "s" / "03_assembly.ipynb")


def test_failure_cause_is_the_exception_not_the_log_tail():
    log = "\n".join([
        "[AutogradeApp | INFO] Sanitizing /c/submitted/ann/02_components/02_components.ipynb",
        "[AutogradeApp | ERROR] There was an error processing assignment: /c/submitted/ann/02_components",
        "[AutogradeApp | ERROR] Traceback (most recent call last):",
        '  File "x.py", line 1, in convert',
        "    raise ValidationError(msg)",
        "nbgrader.nbgraderformat.common.ValidationError: Notebook failed to validate",
        *[f"[AutogradeApp | INFO] noise {i}" for i in range(200)],
        "[AutogradeApp | ERROR] Please see the error log for details on the specific errors on the above failures."])
    assert failure_cause(log, 1) == "nbgrader.nbgraderformat.common.ValidationError: Notebook failed to validate"
    assert failure_cause("", 2) == "nbgrader exited with status 2 without an error message"


def test_class_report_shows_why_a_submission_was_not_graded(tmp_path):
    from utils.grading import class_report
    from utils.grading.autograde import Outcome, write_status

    (tmp_path / "submitted" / "bob" / CHAPTER).mkdir(parents=True)
    write_status(tmp_path, Outcome(CHAPTER, "bob", False, 0.0, f"{CHAPTER}.ipynb is not a valid notebook: NotJSONError"))
    report = class_report.read_chapter(tmp_path, CHAPTER)
    assert report.notes["bob"] == f"NOT GRADED: {CHAPTER}.ipynb is not a valid notebook: NotJSONError"
