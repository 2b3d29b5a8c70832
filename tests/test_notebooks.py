"""Every solution notebook runs with all its exercises passing; every learner notebook runs with errors only
from its `NotImplementedError` stubs and the checks that call them. Both offline (the random stand-in) and on
the path most learners take: real GPT-2 small in the Hugging Face cache (the faithful snapshot of
tests/gpt2_snapshot.py, tied embeddings and all)."""

from __future__ import annotations

import pytest

from utils.grade import run_notebook

from utils.models.course_gpt import CHECKPOINT as COURSE_GPT

from .conftest import ROOT, SOLUTION_NOTEBOOKS

STUB_ERRORS = {"NotImplementedError", "NotImplementedYet"}


def errors(nb) -> list[tuple[int, str, str]]:
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append((index, out.get("ename", ""), out.get("evalue", "")[:300]))
    return found


# Chapter 05 trains its own model on its own corpus and never loads the reference: one run says all (so for 07).
NO_REFERENCE = {"05_training", "07_modern_decoder"}  # 07 compares with transformers' Llama, never GPT-2
# "course-gpt": every check and every shown prediction uses the trained course GPT (TFS_REFERENCE=course-gpt).
REFERENCES = ("offline", "real-gpt2", *(("course-gpt",) if COURSE_GPT.exists() else ()))
# The offline solution runs are shared with the browser test (conftest's executed_solution): one xdist worker.
SHARED = pytest.mark.xdist_group("offline-solutions")


def cases(shared: bool = False) -> list:
    return [pytest.param(path, ref, id=f"{ref}-{path.stem}", marks=[SHARED] if shared and ref == "offline" else [])
            for ref in REFERENCES for path in SOLUTION_NOTEBOOKS if not (ref != "offline" and path.stem in NO_REFERENCE)]


@pytest.fixture
def use_reference(request, monkeypatch):
    def use(reference: str) -> None:
        if reference == "real-gpt2":
            request.getfixturevalue("real_gpt2_env")  # kernels inherit the environment that points at the snapshot
        elif reference == "course-gpt":
            monkeypatch.setenv("TFS_REFERENCE", "course-gpt")
    return use


def announced(nb, reference: str) -> None:
    """Every `Reference model:` line names the model the run asked for."""
    lines = reference_lines(nb)
    want = {"real-gpt2": "GPT-2 small, real weights", "course-gpt": "the course GPT"}[reference]
    assert lines and all(want in line for line in lines), lines


def reference_lines(nb) -> list[str]:
    return [line for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout"
            for line in o.get("text", "").splitlines() if line.startswith("Reference model:")]


@pytest.mark.slow
@pytest.mark.parametrize("path, reference", cases(shared=True))
def test_solution_notebook_passes_every_exercise(path, reference, use_reference, executed_solution):
    use_reference(reference)
    # offline runs are shared with the browser test: each solution runs once per session
    nb, rows = executed_solution(path) if reference == "offline" else run_notebook(path)
    if reference != "offline":
        announced(nb, reference)
    assert not errors(nb), errors(nb)
    failing = [(r.exercise, r.message) for r in rows if not r.ok]
    assert not failing, failing
    assert rows, "no exercises found"


@pytest.mark.slow
@pytest.mark.parametrize("path, reference", cases())
def test_learner_notebook_fails_only_on_stubs(path, reference, use_reference):
    use_reference(reference)
    nb, rows = run_notebook(ROOT / "chapters" / path.name)
    unexpected = [e for e in errors(nb) if e[1] not in STUB_ERRORS]
    assert not unexpected, f"errors other than NotImplementedError: {unexpected}"
    assert all(not r.ok and r.message == "not implemented yet" for r in rows), [(r.exercise, r.message) for r in rows]
