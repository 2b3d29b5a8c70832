"""The registry as a whole: every exercise of every chapter has a checker, a catalogue and a test cell, and
every checker passes the course's own reference code quietly, deterministically and without side effects."""

from __future__ import annotations

import pytest
import torch as t

from utils.checks import CHECKERS, MISTAKES
from utils.checks.catalogue import check_calls, reference_calls

FIXED_IDS = ["layer_norm", "embed", "pos_embed", "causal_mask", "attention", "mlp", "transformer_block", "unembed",
             "transformer", "temperature", "frequency_penalty", "top_k", "top_p"]
CALLS = check_calls()
REFERENCE_CALLS = [(call, thunk) for call, thunk in reference_calls() if thunk is not None]


@pytest.mark.parametrize("exercise", FIXED_IDS)
def test_fixed_ids_are_registered(exercise):
    assert exercise in CHECKERS


def test_every_test_cell_has_a_checker_and_every_checker_a_test_cell():
    cell_ids = {c.exercise for c in CALLS}
    assert cell_ids - set(CHECKERS) == set(), "test cells whose grade_id has no checker"
    assert set(CHECKERS) - cell_ids == set(), "checkers that no notebook calls"
    assert all(c.points > 0 for c in CALLS)


def test_exercise_ids_are_unique_across_the_course():
    ids = [c.exercise for c in CALLS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("exercise", sorted(MISTAKES))
def test_every_exercise_has_a_catalogue_of_at_least_four_mistakes(exercise):
    mistakes = MISTAKES[exercise]
    assert len(mistakes) >= 4, f"{exercise} has {len(mistakes)} catalogued mistakes"
    assert len({m.name for m in mistakes}) == len(mistakes)
    assert all(m.hint.strip() and m.impl is not None for m in mistakes)


@pytest.mark.parametrize("call, thunk", REFERENCE_CALLS, ids=[c.exercise for c, _ in REFERENCE_CALLS])
def test_reference_passes_quietly_and_leaves_the_rng_alone(call, thunk, capfd):
    t.manual_seed(1234)
    expected_next = t.rand(4)
    t.manual_seed(1234)
    thunk()
    assert t.equal(t.rand(4), expected_next), "a checker moved the learner's global random stream"
    out, err = capfd.readouterr()
    assert err == "", f"{call.exercise} wrote to stderr: {err[:500]}"
    ticks = [ln for ln in out.splitlines() if ln.startswith("✓")]
    assert len(ticks) == 1, f"{call.exercise} must print exactly one ✓ line, printed: {out[-500:]}"
    thunk()
    assert capfd.readouterr().out.splitlines()[-1] == ticks[0], "checkers are deterministic"


def test_a_check_requires_only_exercises_that_come_before_it_in_the_course():
    """A dependent check runs its dependencies' checks first, so each must be registered and taught earlier."""
    from utils.checks.core import REGISTRY

    order = {c.exercise: i for i, c in enumerate(CALLS)}
    dependents = {e: ex.requires for e, ex in REGISTRY.items() if ex.requires}
    assert {"sdp_attention", "gqa", "decoder"} <= set(dependents)
    for exercise, requires in dependents.items():
        for needed in requires:
            assert needed in REGISTRY, f"{exercise} requires an unknown exercise {needed!r}"
            assert REGISTRY[needed].chapter == REGISTRY[exercise].chapter
            assert order[needed] < order[exercise], f"{exercise} is taught before {needed}, which it requires"
