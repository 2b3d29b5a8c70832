"""`make class-report` on a generated class: fake autograded notebooks whose test cells carry crafted outputs
(as nbgrader leaves them), so nothing is executed and nbgrader is not needed. The class has a full, an
empty, a partial, a broken (the kernel died), a hostile, an unreadable, an ungraded and a replaced submission."""

from __future__ import annotations

import csv
import re

import nbformat
import pytest
from nbformat.notebooknode import NotebookNode

from tests.conftest import ROOT
from utils.grading import class_report
from utils.outcomes import FLAGGED, NAMED, NOT_IMPLEMENTED, NOT_RUN, PASSED, UNNAMED, read_outcome

pytestmark = pytest.mark.xdist_group("test_class_report")  # its module fixture is built once, on one xdist worker

CHAPTER = "02_components"
EXERCISES = class_report.exercises_of(CHAPTER)
NAMED_MESSAGE = ("LayerNorm: 38% of values differ, max |diff| 2.1e-02 at (0, 3, 17): got 0.41210, expected 0.43377. "
                 "This matches a known mistake, unbiased variance: LayerNorm uses the biased variance.")
UNNAMED_MESSAGE = "Embed: output shape (2, 5) on 2 random sequences, expected (2, 5, 64).\n  second line"
HOSTILE = "<script>alert('x')</script> | col"
FAKE_NAME = "Embed: wrong. This matches a known mistake, no such mistake: a name the catalogue does not have"


def ok(name):
    return [NotebookNode(output_type="stream", name="stdout", text=f"✓ {name} matches the reference\n")]


def error(ename, evalue):
    return [NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])]


def autograded(outputs: dict[str, list]) -> NotebookNode:
    """The learner notebook with each test cell's outputs set as given (missing: not executed)."""
    nb = nbformat.read(ROOT / "chapters" / f"{CHAPTER}.ipynb", as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if cell.cell_type == "code" and grade_id in outputs:
            cell.outputs, cell.execution_count = outputs[grade_id], 1
    return nb


def not_implemented():
    return error("NotImplementedYet", "LayerNorm.forward is not implemented yet: replace the stub.")


CLASS = {
    "full": {e: ok(e) for e in EXERCISES},
    "empty": {e: not_implemented() for e in EXERCISES},
    "partial": {EXERCISES[0]: error("AssertionError", NAMED_MESSAGE), EXERCISES[1]: error("AssertionError", UNNAMED_MESSAGE),
                EXERCISES[2]: ok(EXERCISES[2]), **{e: not_implemented() for e in EXERCISES[3:]}},
    # the kernel died in the third test cell: the grader marks it and every later cell (utils/grading/execute.py)
    "broken": {**{e: ok(e) for e in EXERCISES[:2]},
               **{e: error("KernelDied", "not run: the kernel died in cell 20.") for e in EXERCISES[2:]}},
    # a pass that the integrity scan overrode, a message with markup, and a test cell the notebook never ran
    "hostile": {EXERCISES[0]: ok(EXERCISES[0]) + error("GradingIntegrityError", "cell 5 imports utils.reference"),
                EXERCISES[1]: error("AssertionError", HOSTILE), EXERCISES[2]: error("AssertionError", FAKE_NAME)},
}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    for student, outputs in CLASS.items():
        folder = root / "autograded" / student / CHAPTER
        folder.mkdir(parents=True)
        nbformat.write(autograded(outputs), str(folder / f"{CHAPTER}.ipynb"))
        (root / "submitted" / student / CHAPTER).mkdir(parents=True)
    (root / "autograded" / "garbled" / CHAPTER).mkdir(parents=True)
    (root / "autograded" / "garbled" / CHAPTER / f"{CHAPTER}.ipynb").write_text("{not json", encoding="utf-8")
    (root / "submitted" / "late" / CHAPTER).mkdir(parents=True)  # collected, never autograded
    # an unreadable upload: collection kept it as .invalid and graded the untouched release instead
    (root / "autograded" / "mangled" / CHAPTER).mkdir(parents=True)
    nbformat.write(autograded({e: not_implemented() for e in EXERCISES}),
                   str(root / "autograded" / "mangled" / CHAPTER / f"{CHAPTER}.ipynb"))
    (root / "submitted" / "mangled" / CHAPTER).mkdir(parents=True)
    (root / "submitted" / "mangled" / CHAPTER / f"{CHAPTER}.ipynb.invalid").write_bytes(b"\x00")
    out = root / "class-report"
    assert class_report.main([CHAPTER, "--root", str(root), "--out", str(out)]) == 0
    return root, out, class_report.read_chapter(root, CHAPTER)


def test_every_student_has_a_row(course):
    _, _, report = course
    assert sorted(report.rows) == sorted([*CLASS, "garbled", "late", "mangled"])
    assert all(list(row) == EXERCISES for row in report.rows.values())


def test_counts_per_exercise(course):
    _, _, report = course
    first, second, third = EXERCISES[:3]
    assert report.passed(first) == 2  # full and broken; hostile's pass was flagged
    assert report.passed(second) == 2  # full and broken
    assert report.passed(third) == 2  # full and partial
    assert report.passed(EXERCISES[-1]) == 1  # full only
    fails = report.failures(first)
    assert fails["unbiased_variance"] == 1 and fails[FLAGGED] == 1 and fails[NOT_IMPLEMENTED] == 2
    assert fails["unreadable"] == 1 and fails["not graded"] == 1  # garbled, and late
    assert sum(fails.values()) + report.passed(first) == len(report.rows)
    fails = report.failures(second)
    assert fails["unnamed: Embed: output shape (2, 5) on 2 random sequences, expected (2, 5, 64)."] == 1
    assert fails[f"unnamed: {HOSTILE}"] == 1
    assert report.failures(third)["no_such_mistake"] == 1  # named though not in the catalogue: reported as said
    assert report.failures(EXERCISES[-1])[NOT_RUN] == 2  # broken (kernel died) and hostile (never ran)


def test_outcome_kinds_from_outputs():
    cell = NotebookNode(cell_type="code", outputs=error("AssertionError", NAMED_MESSAGE), execution_count=3)
    assert read_outcome(cell, "layer_norm").kind == NAMED and read_outcome(cell, "layer_norm").label == "unbiased_variance"
    cell.outputs = ok("LayerNorm")
    assert read_outcome(cell, "layer_norm").kind == PASSED
    cell.outputs = error("ValueError", "bad\nsecond")
    assert (read_outcome(cell, "layer_norm").kind, read_outcome(cell, "layer_norm").message) == (UNNAMED, "ValueError: bad")


def test_csv_files(course):
    _, out, report = course
    with open(out / "students.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report.rows) * len(EXERCISES)
    assert sum(int(r["passed"]) for r in rows) == sum(report.passed(e) for e in EXERCISES)
    named = [r for r in rows if r["mistake"] == "unbiased_variance"]
    assert [(r["student"], r["exercise"]) for r in named] == [("partial", EXERCISES[0])]
    with open(out / "exercises.csv", encoding="utf-8") as f:
        totals = {}
        for r in csv.DictReader(f):
            totals[r["exercise"]] = totals.get(r["exercise"], 0) + int(r["count"])
    assert totals == {e: len(report.rows) for e in EXERCISES}


def test_markdown_and_html_are_safe_and_offline(course):
    _, out, _ = course
    text = (out / "report.md").read_text(encoding="utf-8")
    assert f"| {EXERCISES[0]} | 2 of 8 |" in text
    assert "- mangled: the submitted file was not a readable notebook" in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    student_lines = [ln for ln in text.splitlines() if ln.startswith("| ") and ln.endswith(f" of {len(EXERCISES)} |")]
    assert len(student_lines) == 8
    # a pipe inside a message is escaped, so every student row keeps one column per exercise
    assert all(len(re.findall(r"(?<!\\)\|", ln)) == len(EXERCISES) + 3 for ln in student_lines)
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "alert('x')</script>" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "plotly.js must be inlined, not loaded from a CDN"
    assert "Plotly.newPlot" in page and len(page) > 1_000_000  # the inlined bundle is several MB


def test_no_submissions_is_reported(tmp_path, capsys):
    assert class_report.main(["--root", str(tmp_path)]) == 2
    assert "make autograde" in capsys.readouterr().out


def test_figure_bars_add_up_to_the_class(course):
    _, _, report = course
    fig = class_report.figure(report)
    by_name = {bar.name: list(bar.y) for bar in fig.data}
    assert by_name["passed"] == [report.passed(e) for e in EXERCISES]
    assert by_name["unbiased_variance"][0] == 1 and by_name["unnamed"][1] == 2
    assert [sum(ys[i] for ys in by_name.values()) for i in range(len(EXERCISES))] == [len(report.rows)] * len(EXERCISES)
