"""Chapter 06's beam search checker: scoring on searches without a ban first, then the n-gram ban on its own.

A search with a ban is judged only after the searches without one agree, so a ban failure is told about the
ban: which returned sequence repeats which n-gram, or that the ban forbade more than repeated n-grams.
"""

from __future__ import annotations

from torch import Tensor

from utils.checks import mistakes_ch06 as mistakes
from utils.checks.core import assert_matches, call_learner, checker, describe, fail, passed
from utils.checks.ids import assert_ids, diagnose_ids, id_dtype_problem, matching_ids
from utils.checks.sampling_common import CHAPTER, prompts, safe, small_model, unchanged
from utils.reference import sampling as ref

# label, prompt seed, prompt length, num_beams, max_new_tokens, num_return_sequences, no_repeat_ngram_size
SCORE_CASES = [
    ("3 beams, 6 new tokens, all 3 returned", 40, 5, 3, 6, 3, 0),
    ("4 beams, 10 new tokens, 2 returned", 41, 6, 4, 10, 2, 0),
]
BAN_CASES = [
    ("4 beams, 10 new tokens, 2 returned, no_repeat_ngram_size = 2", 41, 6, 4, 10, 2, 2),
    ("2 beams, 8 new tokens, no_repeat_ngram_size = 1", 42, 4, 2, 8, 1, 1),
]
SCORE_HINT = "Score = sum of log_softmax log-probabilities; keep the num_beams best (beam, token) pairs overall."


def _as_pair(out, what: str, label: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, Tensor) for x in out)):
        fail(f"{what}: returned {describe(out)} on {label}, expected a tuple (scores, tokens) of two tensors.")
    return out[0], out[1]


def repeated_ngram(row: list[int], n: int) -> tuple[tuple[int, ...], int, int] | None:
    """The first n-gram that occurs twice in `row`, with the positions where it starts, or None."""
    first: dict[tuple[int, ...], int] = {}
    for start in range(len(row) - n + 1):
        gram = tuple(row[start:start + n])
        if gram in first:
            return gram, first[gram], start
        first[gram] = start
    return None


def _ban_message(tokens: Tensor, expected: Tensor, n: int, label: str, prompt_len: int) -> str:
    where = diagnose_ids(tokens, expected, prompt_len=prompt_len, row="returned sequence")
    for i, row in enumerate(tokens.tolist()):
        found = repeated_ngram(row, n)
        if found is not None:
            gram, a, b = found
            return (f"beam_search tokens on {label}: returned sequence {i} repeats the {n}-gram {list(gram)} (at "
                    f"positions {a} and {b}), which the ban forbids ({where}). {mistakes.NGRAM_REPEATS_HINT}")
    return (f"beam_search tokens on {label}: {where}. No returned sequence repeats a {n}-gram, so your ban forbids "
            f"more than it should. {mistakes.NGRAM_TOO_MUCH_HINT}")


@checker("beam_search", mistakes.BEAM_MISTAKES, chapter=CHAPTER)
def beam_search(beam_search) -> None:
    """beam_search returns the reference's best sequences and summed log-probabilities, best first; with
    no_repeat_ngram_size, no returned sequence repeats an n-gram."""
    model = small_model(d_vocab=24, n_ctx=32, seed=5)
    for label, seed, pos, beams, n_new, n_return, ngram in SCORE_CASES + BAN_CASES:
        prompt = prompts(1, pos, 24, seed)[0]
        args = (prompt, beams, n_new, n_return, ngram)
        exp_scores, exp_tokens = ref.beam_search(model, *args)
        given = prompt.clone()
        out = call_learner("beam_search", beam_search, model, given, *args[1:], context=label)
        unchanged(prompt, given, "beam_search", "prompt", "Build new tensors instead of writing into the prompt.")
        scores, tokens = _as_pair(out, "beam_search", label)

        def wrong(part: int, args=args):
            found = []
            for mistake in mistakes.BEAM_MISTAKES:
                result = safe(mistake.impl, model, *args)
                found.append((mistake, result[part] if isinstance(result, tuple) else None))
            return found

        if ngram and tokens.shape == exp_tokens.shape and not id_dtype_problem(tokens, "beam_search"):
            if not _same_ids(tokens, exp_tokens):
                named = matching_ids(tokens, wrong(1))
                message = _ban_message(tokens, exp_tokens, ngram, label, pos)
                if named is not None:
                    message += f" This matches a known mistake, {named.name.replace('_', ' ')}: {named.hint}"
                fail(message)
        assert_ids(tokens, exp_tokens, "beam_search tokens", context=label, prompt_len=pos, mistakes=lambda: wrong(1),
                   hint=SCORE_HINT, row="returned sequence")
        if not scores.is_floating_point():
            fail(f"beam_search scores: dtype {scores.dtype} on {label}; scores are summed log-probabilities, floats.")
        assert_matches(scores.float(), exp_scores, "beam_search scores", context=label, mistakes=lambda: wrong(0),
                       hint=SCORE_HINT, check_dtype=False)
    passed(f"beam_search returns the best beams and their scores on {len(SCORE_CASES)} searches, and respects "
           f"no_repeat_ngram_size on {len(BAN_CASES)} more")


def _same_ids(a: Tensor, b: Tensor) -> bool:
    return bool((a.long() == b.long()).all())
