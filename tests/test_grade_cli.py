"""`python -m utils.grade`: a table per notebook, one clear line for bad input, the learner's file untouched."""

from __future__ import annotations

import subprocess
import sys

import nbformat

from .conftest import ROOT


def grade(path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "utils.grade", str(path), *extra], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def learner_copy(tmp_path, source_name: str, body: str | None = None):
    """A small notebook in the course's format: the setup cell, optionally one exercise, and its check."""
    nb = nbformat.read(ROOT / "chapters" / "02_components.ipynb", as_version=4)
    keep = [c for c in nb.cells if c.metadata.get("tfs", {}).get("generated") == "setup"]
    imports = [c for c in nb.cells if c.metadata.get("tfs", {}).get("export") and "import" in c.source
               and not c.metadata.get("nbgrader", {}).get("solution")][:2]
    solution = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "layer_norm_solution")
    check = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "layer_norm")
    if body is not None:
        solution = nbformat.v4.new_code_cell(body, metadata=solution.metadata)
    nb.cells = keep + imports + [solution, check]
    path = tmp_path / source_name
    nbformat.write(nb, str(path))
    return path


def test_table_for_a_stub_and_exit_code(tmp_path):
    path = learner_copy(tmp_path, "stub.ipynb")
    before = path.read_bytes()
    proc = grade(path)
    assert proc.returncode == 1
    assert "layer_norm" in proc.stdout and "✗" in proc.stdout and "not implemented yet" in proc.stdout
    assert "0 of 1 exercises pass" in proc.stdout
    assert path.read_bytes() == before, "the learner's notebook must never be written"


def test_a_looping_cell_times_out_with_one_line(tmp_path):
    path = learner_copy(tmp_path, "loop.ipynb", "while True:\n    pass")
    proc = grade(path, "--timeout", "20")
    assert proc.returncode == 1
    assert "✗" in proc.stdout
    assert "was stopped after 20 s" in proc.stdout and "Traceback" not in proc.stdout


def test_unreadable_notebook_gives_one_clear_line(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text("{ this is not json")
    proc = grade(bad)
    assert proc.returncode == 2
    assert proc.stdout.strip().count("\n") == 0 and "cannot be read as a notebook" in proc.stdout
    assert bad.read_text() == "{ this is not json"


def _solution_source(grade_id: str) -> str:
    nb = nbformat.read(ROOT / "solutions" / "02_components.ipynb", as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_the_whole_diagnosis_is_shown_not_its_first_160_characters(tmp_path):
    body = _solution_source("layer_norm_solution").replace(
        "centred.pow(2).mean(dim=-1, keepdim=True)", "residual.var(dim=-1, keepdim=True, unbiased=True)")
    assert body != _solution_source("layer_norm_solution")
    proc = grade(learner_copy(tmp_path, "unbiased.ipynb", body))
    assert proc.returncode == 1
    flat = " ".join(proc.stdout.split())
    assert "This matches a known mistake" in flat and "unbiased" in flat.lower()


def test_a_failing_cell_after_the_exercises_is_reported_and_fails_the_run(tmp_path):
    path = learner_copy(tmp_path, "demo.ipynb", _solution_source("layer_norm_solution"))
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print(trained_model)"))  # a demo whose setup never ran
    nbformat.write(nb, str(path))
    proc = grade(path)
    assert "1 of 1 exercises pass; 1 other cell failed" in proc.stdout
    assert f"cell {len(nb.cells) - 1} failed: NameError: name 'trained_model' is not defined" in proc.stdout
    assert proc.returncode == 1


def test_help_documents_tfs_fast_and_full():
    proc = subprocess.run([sys.executable, "-m", "utils.grade", "--help"], capture_output=True, text=True, cwd=ROOT)
    flat = " ".join(proc.stdout.split())
    assert proc.returncode == 0 and "TFS_FAST=1" in flat and "--full" in flat and "TFS_FAST=0" in flat


def test_a_check_cell_that_writes_to_stderr_is_not_reported_as_a_pass(tmp_path):
    path = learner_copy(tmp_path, "stderr.ipynb", _solution_source("layer_norm_solution"))
    nb = nbformat.read(path, as_version=4)
    nb.cells[-1].source += "\nimport sys\nprint('DeprecationWarning: something', file=sys.stderr)"
    nbformat.write(nb, str(path))
    proc = grade(path)
    assert proc.returncode == 1
    assert "0 of 1 exercises pass" in proc.stdout
    assert "wrote to stderr, which nbgrader scores as failed: DeprecationWarning: something" in " ".join(proc.stdout.split())
