"""Every section's questions have answers: a collapsed block right after them, one answer per question, in the
solution notebook (the source) and in the learner notebook generated from it."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.conftest import ROOT, SOLUTION_NOTEBOOKS

SUMMARY = "<details><summary>Answers</summary>"


def questions_cells(nb) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "**Questions" in c.source]


def question_count(text: str) -> int:
    """Questions are written inline, "(1) … (2) …", or as a numbered list after the **Questions** line."""
    after = text.split("**Questions", 1)[1]
    inline = re.findall(r"\((\d)\)", after)
    listed = re.findall(r"^\s*(\d+)\.\s", after, re.M)
    return max(len(set(inline)), len(listed))


def answer_count(text: str) -> int:
    return len(re.findall(r"^(\d+)\.\s", text, re.M))


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_questions_cell_is_followed_by_its_answers(path):
    nb = nbformat.read(path, as_version=4)
    found = questions_cells(nb)
    assert found, f"{path.name}: no questions cells (the chapter's sections end with questions)"
    for index in found:
        following = nb.cells[index + 1] if index + 1 < len(nb.cells) else None
        assert following is not None and following.cell_type == "markdown", \
            f"{path.name}: cell {index} has questions but no markdown answers cell after it"
        text = following.source.strip()
        assert text.startswith(SUMMARY) and text.endswith("</details>"), \
            f"{path.name}: cell {index + 1} after the questions is not a collapsed answers block"
        n_questions = question_count(nb.cells[index].source)
        assert n_questions >= 1
        assert answer_count(text) == n_questions, \
            f"{path.name}: cell {index} asks {n_questions} questions, cell {index + 1} answers {answer_count(text)}"
        assert len(text) > 200 * n_questions // 2, f"{path.name}: the answers in cell {index + 1} are too short"


@pytest.mark.parametrize("path", SOLUTION_NOTEBOOKS, ids=lambda p: p.stem)
def test_learner_notebook_carries_the_answers(path):
    source = nbformat.read(path, as_version=4)
    learner = nbformat.read(ROOT / "chapters" / path.name, as_version=4)
    want = [source.cells[i + 1].source for i in questions_cells(source)]
    got = [learner.cells[i + 1].source for i in questions_cells(learner)]
    assert got == want


def test_question_counting_reads_both_styles():
    assert question_count("**Questions.** (1) a? (2) b? (3) c?") == 3
    assert question_count("**Questions**\n1. a?\n2. b?\n") == 2
    assert answer_count("<details>\n\n1. x\n   more\n2. y\n\n</details>") == 2
