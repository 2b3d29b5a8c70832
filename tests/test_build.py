"""One source: chapters/ and utils/reference/ are exactly what solutions/ generates."""

from __future__ import annotations

import nbformat
import pytest

from utils import build
from utils.course import CHAPTERS

from .conftest import ROOT, SOLUTION_NOTEBOOKS


def test_generated_files_are_in_sync_with_solutions():
    outputs = build.plan(SOLUTION_NOTEBOOKS)
    stale = [str(p.relative_to(ROOT)) for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run `make build`: stale generated files {stale}"


def test_every_solution_has_a_chapter_and_nothing_else_is_there():
    assert {p.name for p in (ROOT / "chapters").glob("*.ipynb")} == {p.name for p in SOLUTION_NOTEBOOKS}
    assert {p.stem for p in SOLUTION_NOTEBOOKS} <= set(CHAPTERS)


def test_every_reference_module_is_generated():
    generated = {p.name for p in build.plan(SOLUTION_NOTEBOOKS) if p.parent == build.REFERENCE}
    on_disk = {p.name for p in build.REFERENCE.glob("*.py")} - {"__init__.py"}
    assert on_disk == generated, "utils/reference/ holds a file no solution exports (or misses one)"


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_has_stubs_and_no_solutions(path):
    chapter = nbformat.read(ROOT / "chapters" / path.name, as_version=4)
    solution = nbformat.read(path, as_version=4)
    solution_cells = [c for c in solution.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solution_cells, "a solution notebook without exercises"
    text = "\n".join(c.source for c in chapter.cells)
    for marker in ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS"):
        assert marker not in text
    stubs = [c for c in chapter.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert len(stubs) == len(solution_cells)
    for cell in stubs:
        if cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source, cell.metadata["nbgrader"]["grade_id"]
    assert all(not c.get("outputs") for c in chapter.cells if c.cell_type == "code")
    assert all(not c.get("outputs") for c in solution.cells if c.cell_type == "code"), "commit sources clean"


def test_header_cells_come_from_one_place():
    from utils.course import REPO_URL, setup_cell_source

    for path in SOLUTION_NOTEBOOKS:
        nb = nbformat.read(ROOT / "chapters" / path.name, as_version=4)
        assert REPO_URL.split("github.com/")[1] in nb.cells[0].source and "colab-badge" in nb.cells[0].source
        assert nb.cells[1].source == setup_cell_source()


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    """--check must fail (exit 1, naming the file) when a generated file drifts, and write nothing."""
    src = tmp_path / "solutions" / "02_components.ipynb"
    src.parent.mkdir()
    src.write_text((ROOT / "solutions" / "02_components.ipynb").read_text())
    monkeypatch.setattr(build, "ROOT", tmp_path)
    monkeypatch.setattr(build, "CHAPTERS", tmp_path / "chapters")
    monkeypatch.setattr(build, "REFERENCE", tmp_path / "reference")
    assert build.main(["--check", str(src)]) == 1
    assert "stale: chapters/02_components.ipynb" in capsys.readouterr().out
    assert not (tmp_path / "chapters").exists()
    assert build.main([str(src)]) == 0
    assert build.main(["--check", str(src)]) == 0
    assert (tmp_path / "reference" / "components.py").read_text() == (ROOT / "utils/reference/components.py").read_text()
