"""Every solution notebook runs offline with all its exercises passing; every learner notebook runs with
errors only from its `NotImplementedError` stubs and the checks that call them."""

from __future__ import annotations

import pytest

from utils.grade import run_notebook

from .conftest import ROOT, SOLUTION_NOTEBOOKS

STUB_ERRORS = {"NotImplementedError", "NotImplementedYet"}


def errors(nb) -> list[tuple[int, str, str]]:
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((index, out.get("ename", ""), out.get("evalue", "")[:300]))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_notebook_passes_every_exercise(path, executed_solution):
    nb, rows = executed_solution(path)  # shared with the browser test: each solution runs once per session
    assert not errors(nb), errors(nb)
    failing = [(r.exercise, r.message) for r in rows if not r.ok]
    assert not failing, failing
    assert rows, "no exercises found"


@pytest.mark.slow
@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_learner_notebook_fails_only_on_stubs(path):
    nb, rows = run_notebook(ROOT / "chapters" / path.name)
    unexpected = [e for e in errors(nb) if e[1] not in STUB_ERRORS]
    assert not unexpected, f"errors other than NotImplementedError: {unexpected}"
    assert all(not r.ok and r.message == "not implemented yet" for r in rows), [(r.exercise, r.message) for r in rows]
