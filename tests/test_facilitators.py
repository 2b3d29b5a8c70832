"""docs/facilitators.md: its generated session plans and mistake tables match the notebooks, the measured
timings and the checkers' catalogues; the section timing helper groups cells and reads nbclient's timestamps."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from tests.conftest import ROOT, SOLUTION_NOTEBOOKS
from utils import facilitators, session_timing
from utils.authoring import code, md

GUIDE = (ROOT / "docs" / "facilitators.md").read_text(encoding="utf-8")


def test_generated_blocks_are_up_to_date():
    assert facilitators.render(GUIDE) == GUIDE, "run `python -m utils.facilitators` and commit docs/facilitators.md"


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_a_plan_and_a_mistake_table(path):
    for kind in ("plan", "mistakes"):
        assert f"<!-- generated: {kind} {path.stem} -->" in GUIDE


def test_named_mistakes_are_catalogue_entries():
    from utils.checks import REGISTRY

    names = {m.name for entry in REGISTRY.values() for m in entry.mistakes}
    rows = [ln for ln in GUIDE.splitlines() if ln.startswith("| `")]
    named = [n for ln in rows for n in re.findall(r"`(\w+)`: ", ln)]
    assert len(named) >= 3 * 20 and set(named) <= names


def test_every_section_with_exercises_was_measured():
    timings = json.loads(session_timing.TIMINGS.read_text(encoding="utf-8"))
    for path in SOLUTION_NOTEBOOKS:
        measured = {s["title"] for s in timings[path.stem]["sections"]}
        nb = nbformat.read(path, as_version=4)
        for part in session_timing.sections(nb):
            if part.exercises:
                assert part.title in measured, f"{path.stem}: section {part.title!r} has no measured time"
        assert timings[path.stem]["cells_with_errors"] == [], f"{path.stem}: the timed run had errors"


def test_sections_group_cells_and_announced_minutes():
    nb = nbformat.v4.new_notebook()
    nb.cells = [md("# Title"), md("## 1. First"), md("### Exercise 1.1 — Something\nDifficulty ●○ · ~10 min"),
                code("x = 1"), md("### Checkpoint 1.2 — Look\nDifficulty ●○ · ~5 min"), md("## 2. Second"), code("y")]
    parts = session_timing.sections(nb)
    assert [p.title for p in parts] == ["Introduction", "1. First", "2. Second"]
    assert parts[1].cells == [1, 2, 3, 4] and parts[1].announced_min == 15
    assert parts[1].exercises == [("1.1", "Something", 10), ("1.2", "Look", 5)]


def test_cell_seconds_from_nbclient_timestamps():
    cell = code("x")
    cell.metadata["execution"] = {"iopub.execute_input": "2026-12-02T13:00:00.250000Z",
                                  "shell.execute_reply": "2026-12-02T13:00:02.000000Z"}
    assert session_timing._seconds(cell) == pytest.approx(1.75)
    assert session_timing._seconds(code("y")) == 0.0
