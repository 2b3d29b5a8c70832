"""The live progress view on a generated class of chapter 01 (the cheapest notebook to execute): a full, an
empty, a partial, a broken and a hostile learner, in the three folder layouts it accepts. Four notebooks are
executed once (a module fixture); a refresh re-executes only what changed, and no learner file is written."""

from __future__ import annotations

import shutil

import nbformat
import pytest

from tests.conftest import ROOT
from utils import progress
from utils.outcomes import MISSING, NAMED, NOT_IMPLEMENTED, NOT_RUN, PASSED

pytestmark = pytest.mark.xdist_group("test_progress")  # its module fixture is built once, on one xdist worker

CHAPTER = "01_foundations"
EXERCISES = progress.exercises_of(CHAPTER)
GLOBAL_MAX = '''def stable_softmax(x, dim=-1):
    exps = (x - x.max()).exp()  # the maximum of the whole tensor, not of each slice
    return exps / exps.sum(dim, keepdim=True)'''


def partial_notebook() -> nbformat.NotebookNode:
    """The release with two exercises done (one right, one with a catalogued mistake)."""
    nb = nbformat.read(ROOT / "chapters" / f"{CHAPTER}.ipynb", as_version=4)
    solution = nbformat.read(ROOT / "solutions" / f"{CHAPTER}.ipynb", as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution.cells if "nbgrader" in c.metadata}
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "next_token_strings_solution":
            cell.source = answers[grade_id]
        elif grade_id == "stable_softmax_solution":
            cell.source = GLOBAL_MAX
    return nb


def hostile_notebook() -> nbformat.NotebookNode:
    """The release with a cell that kills its own kernel right after the setup cell."""
    nb = nbformat.read(ROOT / "chapters" / f"{CHAPTER}.ipynb", as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("import os\nos._exit(3)"))
    return nb


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    folder = tmp_path_factory.mktemp("class")
    (folder / "alice").mkdir()
    shutil.copyfile(ROOT / "solutions" / f"{CHAPTER}.ipynb", folder / "alice" / f"{CHAPTER}.ipynb")  # full
    (folder / "bob" / CHAPTER).mkdir(parents=True)  # nbgrader's submitted/ layout, untouched release: empty
    shutil.copyfile(ROOT / "chapters" / f"{CHAPTER}.ipynb", folder / "bob" / CHAPTER / f"{CHAPTER}.ipynb")
    nbformat.write(partial_notebook(), str(folder / "carol.ipynb"))  # flat: chapter read from the setup cell
    (folder / "dave").mkdir()
    (folder / "dave" / f"{CHAPTER}.ipynb").write_text('{"cells": [', encoding="utf-8")  # broken JSON
    (folder / "eve").mkdir()
    nbformat.write(hostile_notebook(), str(folder / "eve" / f"{CHAPTER}.ipynb"))
    # ignored: an editor's checkpoint copy, and a notebook that is not a course chapter
    (folder / "alice" / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(ROOT / "chapters" / f"{CHAPTER}.ipynb", folder / "alice" / ".ipynb_checkpoints" / f"{CHAPTER}.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), str(folder / "alice" / "scratch.ipynb"))
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*.ipynb")}
    view = progress.Progress(folder, timeout=120)
    view.refresh()
    return folder, view, before


def test_discovers_each_learner_once(session):
    folder, _, _ = session
    found = {(s.student, s.chapter) for s in progress.discover(folder)}
    assert found == {(name, CHAPTER) for name in ("alice", "bob", "carol", "dave", "eve")}


def test_counts(session):
    _, view, _ = session
    rows = dict(view.rows(CHAPTER))
    assert view.executed == 5  # four executed, one unreadable
    assert all(o.kind == PASSED for o in rows["alice"].values())
    assert all(o.kind == NOT_IMPLEMENTED for o in rows["bob"].values())
    carol = rows["carol"]
    assert carol["next_token_strings"].kind == PASSED
    assert (carol["stable_softmax"].kind, carol["stable_softmax"].label) == (NAMED, "subtracted_the_maximum_of_the_whole_tensor")
    assert sum(o.ok for o in carol.values()) == 1
    assert all((o.kind, o.label) == (MISSING, "unreadable") for o in rows["dave"].values())
    assert all(o.kind == NOT_RUN for o in rows["eve"].values())
    assert [sum(r[e].ok for r in rows.values()) for e in EXERCISES] == [2] + [1] * (len(EXERCISES) - 1)


def test_learner_files_are_never_written(session):
    _, _, before = session
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before} == before


def test_table_and_html(session):
    _, view, _ = session
    text = progress.text_table(view)
    assert text.splitlines()[0] == f"{CHAPTER} (5 notebooks)"
    assert "✗ subtracted_the_max" in text and text.splitlines()[-1].split()[:3] == ["passed", "2/5", "1/5"]
    page = progress.html_page(view)
    assert page.count("<tr>") == 6 and "<script" not in page


def test_refresh_reruns_only_what_changed(session):
    folder, view, _ = session
    view.refresh()
    assert view.executed == 0
    (folder / "dave" / f"{CHAPTER}.ipynb").write_text("still not a notebook", encoding="utf-8")
    view.refresh()
    assert view.executed == 1  # the changed file only (unreadable: nothing runs)
    (folder / "eve" / f"{CHAPTER}.ipynb").unlink()
    view.refresh()
    assert sorted(s for s, _ in view.rows(CHAPTER)) == ["alice", "bob", "carol", "dave"]


def test_cli_on_a_folder_that_needs_no_kernel(tmp_path, capsys):
    assert progress.main([str(tmp_path / "absent")]) == 2
    (tmp_path / "zoe").mkdir()
    (tmp_path / "zoe" / f"{CHAPTER}.ipynb").write_bytes(b"\x00\xff not a notebook")
    page = tmp_path / "progress.html"
    assert progress.main([str(tmp_path), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"{CHAPTER} (1 notebooks)" in out and "✗ unreadable" in out and "1 notebooks run" in out
    assert "<td>zoe</td>" in page.read_text(encoding="utf-8")
