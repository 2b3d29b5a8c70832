"""The comparison every checker shares (utils/checks/compare.py, core.py): a mistake is named only when the
learner's output equals it, messages say where the output differs in the exercise's dimension names, the dtype
policy holds in both directions, and a dependency that only modifies its input in place does not cascade."""

from __future__ import annotations

import inspect
import textwrap

import pytest
import torch as t

from utils.checks import CHECKERS, NotImplementedYet
from utils.checks.core import InputModified, Mistake, assert_matches, learner_part
from utils.reference import foundations as ref

WRONG_MEAN = Mistake("forgot_the_mean", None, "divide by the count, not only sum.")
WRONG_SIGN = Mistake("negated", None, "drop the minus sign.")
DIMS = ("batch", "n_heads", "query_pos", "key_pos")


def _expected() -> t.Tensor:
    return t.randn(2, 3, 4, 4, generator=t.Generator().manual_seed(0))


def _message(actual, expected, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        assert_matches(actual, expected, "scores", **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------------- naming a mistake


def test_a_mistake_whose_values_match_is_named():
    expected = _expected()
    message = _message(-expected, expected, mistakes=[(WRONG_MEAN, 2 * expected), (WRONG_SIGN, -expected)])
    assert "This matches a known mistake, negated: drop the minus sign." in message
    assert "forgot the mean" not in message


def test_an_output_that_matches_no_mistake_gets_no_name_even_with_a_mistakes_shape():
    expected = _expected()
    learner = expected + 0.5  # wrong, and like no catalogued variant
    message = _message(learner, expected, mistakes=[(WRONG_MEAN, 2 * expected), (WRONG_SIGN, -expected)],
                       hint="Scale the dot products by 1/sqrt(d_head).")
    assert "known mistake" not in message
    assert message.endswith("Scale the dot products by 1/sqrt(d_head).")


def test_a_wrong_shape_shared_with_a_mistake_is_not_named_on_shape_alone():
    expected = _expected()
    per_batch = expected.mean(0)  # the shape a "no batch dimension" mistake would have, but other values
    message = _message(per_batch + 1.0, expected, mistakes=[(WRONG_MEAN, per_batch)], dims=DIMS, hint="Keep the batch.")
    assert "known mistake" not in message
    assert "output shape (3, 4, 4), expected (2, 3, 4, 4) [batch n_heads query_pos key_pos]" in message
    assert message.endswith("Keep the batch.")
    # The same shape and the mistake's values: named.
    assert "known mistake, forgot the mean" in _message(per_batch.clone(), expected, mistakes=[(WRONG_MEAN, per_batch)])


def test_an_extra_unreduced_dimension_is_pointed_out():
    expected = t.rand(4)
    message = _message(t.rand(3, 4), expected, dims=("n_heads",))
    assert "keeps an extra first dimension of size 3" in message


def test_explain_runs_only_when_no_mistake_matches():
    expected = _expected()
    message = _message(expected * 3, expected, mistakes=[(WRONG_SIGN, -expected)],
                       explain=lambda out: "Your scores are 3 times too large.", hint="Divide by sqrt(d_head).")
    assert "Your scores are 3 times too large. Divide by sqrt(d_head)." in message
    named = _message(-expected, expected, mistakes=[(WRONG_SIGN, -expected)], explain=lambda out: "NOT SHOWN")
    assert "NOT SHOWN" not in named and "known mistake, negated" in named


# --------------------------------------------------------------------------------------- where it differs


def test_the_largest_difference_is_placed_by_dimension_name_and_confined_differences_are_named():
    expected = _expected()
    learner = expected.clone()
    learner[:, 2, 1:3] += 0.3  # head 2, queries 1-2, every batch and key
    message = _message(learner, expected, dims=DIMS)
    assert "at (batch " in message and ", head 2, query " in message
    assert "the differences are only at head 2, query 1-2" in message
    assert "batch 0" not in message.split("only at")[1]  # every batch differs: not listed as a restriction


def test_the_allowed_difference_is_shown_so_a_real_gap_does_not_read_as_rounding():
    expected = t.full((4,), 0.02)
    message = _message(expected + 1.4e-3, expected, dims=("n_heads",))
    assert "max |diff| 1.4e-03 (allowed 1.2e-04)" in message


# ---------------------------------------------------------------------------------------------- dtypes


def test_float64_is_accepted_for_a_float32_reference_and_still_compared():
    expected = _expected()
    assert_matches(expected.double(), expected, "scores")
    assert "values differ" in _message(expected.double() + 1.0, expected)


def test_float32_is_accepted_for_a_float64_reference():
    expected = _expected().double()
    assert_matches(expected.float(), expected, "scores")


@pytest.mark.parametrize("dtype", [t.int64, t.int32, t.bool])
def test_integers_or_booleans_where_floats_are_expected_fail_naming_float32(dtype):
    expected = t.rand(2, 3)
    message = _message((expected > 0.5).to(dtype), expected)
    assert f"output dtype {str(dtype)[6:]}" in message
    assert "expected floating-point values (float32; float64 is accepted too)" in message


def test_half_precision_is_rejected():
    expected = t.rand(2, 3)
    assert "expected floating-point values in float32" in _message(expected.half(), expected)


def test_floats_where_token_ids_are_expected_fail_naming_int64():
    ids = t.tensor([[50256, 11, 262]])
    message = _message(ids.float(), ids)
    assert "output dtype float32" in message and "expected integer ids (int64; int32 is accepted too)" in message


def test_int32_ids_are_accepted_and_ids_are_compared_exactly():
    ids = t.tensor([[50256, 11, 262]])
    assert_matches(ids.int(), ids, "tokens")
    off_by_one = ids.clone()
    off_by_one[0, 0] = 50255  # within rtol 1e-3 of 50256 as a float: as an id it is another token
    message = _message(off_by_one, ids, dims=("batch", "pos"))
    assert "first at (batch 0, position 0): got 50255, expected 50256" in message


def test_check_dtype_false_skips_the_policy():
    expected = t.tensor([1.0, 2.0])
    assert_matches(t.tensor([1, 2]), expected, "counts", check_dtype=False)


# ----------------------------------------------------------------------------------------- dependencies


def _notebook(source: str, **names):
    """Functions defined as in a notebook cell (module `__main__`), seeing `names` as their globals."""
    namespace = {"__name__": "__main__", "t": t, "math": __import__("math"), **names}
    exec(textwrap.dedent(source), namespace)
    return namespace


SDP = """
def sdp_attention(q, k, v, causal=True):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        scores = mask_future(scores)
    return stable_softmax(scores) @ v
"""


def _mask_in_place(attn_scores):
    n_query, n_key = attn_scores.shape[-2:]
    return attn_scores.masked_fill_(t.ones(n_query, n_key, dtype=t.bool).triu(1), float("-inf"))


def _mask_diagonal_too(attn_scores):
    n_query, n_key = attn_scores.shape[-2:]
    return attn_scores.masked_fill(t.ones(n_query, n_key, dtype=t.bool).triu(0), float("-inf"))


def _mask_diagonal_too_in_place(attn_scores):
    n_query, n_key = attn_scores.shape[-2:]
    return attn_scores.masked_fill_(t.ones(n_query, n_key, dtype=t.bool).triu(0), float("-inf"))


def _learner_sdp(mask_future):
    return _notebook(SDP, mask_future=mask_future, stable_softmax=ref.stable_softmax)["sdp_attention"]


def test_an_in_place_mask_fails_its_own_check():
    with pytest.raises(InputModified, match="mask_future modified its input `attn_scores` in place"):
        CHECKERS["mask_future"](_mask_in_place)


def test_an_in_place_mask_with_right_values_does_not_cascade(capfd):
    CHECKERS["sdp_attention"](_learner_sdp(_mask_in_place))
    out = capfd.readouterr().out.strip()
    assert out.startswith("✓ sdp_attention matches")
    assert "note: your mask_future modifies its input in place, which checks.mask_future reports" in out


def test_a_wrong_mask_blocks_the_dependent_check_and_says_so():
    with pytest.raises(AssertionError, match=r"sdp_attention uses your mask_future, which does not pass "
                                             r"checks\.mask_future yet: .*fix mask_future first") as info:
        CHECKERS["sdp_attention"](_learner_sdp(_mask_diagonal_too))
    assert "This matches a known mistake, masks the diagonal" in str(info.value)


def test_a_mask_wrong_in_place_and_in_values_still_blocks():
    with pytest.raises(AssertionError, match=r"uses your mask_future, which does not pass checks\.mask_future yet"):
        CHECKERS["sdp_attention"](_learner_sdp(_mask_diagonal_too_in_place))


def test_an_unfinished_dependency_is_not_implemented_yet():
    def stub(attn_scores):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="sdp_attention uses your mask_future, which is not implemented yet"):
        CHECKERS["sdp_attention"](_learner_sdp(stub))


def test_learner_part_finds_only_what_the_learner_code_uses():
    sdp = _learner_sdp(_mask_in_place)
    assert learner_part(sdp, "mask_future") is _mask_in_place
    assert learner_part(sdp, "stable_softmax") is None  # the course's reference: nothing to check first
    assert learner_part(ref.sdp_attention, "mask_future") is None  # the reference itself is never checked
    unused = _notebook("def f(x):\n    return x\n", mask_future=_mask_in_place)["f"]
    assert learner_part(unused, "mask_future") is None


def test_learner_part_reads_a_classes_methods_and_its_learner_bases():
    namespace = _notebook("""
        class Base:
            def helper(self, x):
                return apply_rotary(x)

        class Attention(Base):
            pass
    """, apply_rotary=_mask_in_place)
    assert learner_part(namespace["Attention"], "apply_rotary") is _mask_in_place


def test_sdp_attention_source_calls_the_parts_it_declares():
    """The reference's own sdp_attention uses mask_future and stable_softmax, the exercises it `requires`."""
    names = inspect.getsource(ref.sdp_attention)
    assert "mask_future" in names and "stable_softmax" in names
    assert CHECKERS["sdp_attention"].requires == ("mask_future", "stable_softmax")
