"""Checkers for chapter 04: head scores, residual decomposition, direct logit attribution, induction scores and
head ablation, on the course's shipped induction model and on the reference GPT-2 in the course's model."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from collections.abc import Callable, Sequence

import torch as t
from torch import Tensor, nn
from transformer_lens import ActivationCache

from utils.checks.core import (Mistake, checker, assert_matches, assert_unchanged, call_learner, close, describe, fail,
                               passed, snapshot)
from utils.checks.mistakes_ch04 import (ABLATION_MISTAKES, DECOMPOSE_MISTAKES, DLA_MISTAKES, HEAD_DETECTOR_MISTAKES,
                                        INDUCTION_MISTAKES)
from utils.induction import load_induction_model, repeated_tokens
from utils.reference import interp as ref
from utils.reference_model import REFERENCE_TEXT, reference_gpt2, reference_info

CHAPTER = "04_interpretability"


# ------------------------------------------------------------------------------------------------- inputs


@functools.cache
def _induction_run(batch: int, repeat_len: int, seed: int):
    """Tokens, logits and cache of the shipped induction model on `[BOS, r, r]` (computed once per input)."""
    model = load_induction_model()
    tokens = repeated_tokens(batch, repeat_len, seed)
    with t.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


@functools.cache
def _gpt2_run(which: str):
    """The reference GPT-2 in the course's model on the reference prompt, or on 2 random sequences of 12 tokens."""
    model = ref.gpt2_course_model()
    if which == "prompt":
        tokens = reference_gpt2().to_tokens(REFERENCE_TEXT)
    else:
        tokens = t.randint(0, model.cfg.d_vocab, (2, 12), generator=t.Generator().manual_seed(5))
    with t.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def _random_pattern(batch: int, n_heads: int, pos: int, seed: int) -> Tensor:
    """Causal attention patterns with random, non-uniform weights (no head role, every entry below the diagonal > 0)."""
    gen = t.Generator().manual_seed(seed)
    scores = 2.0 * t.randn(batch, n_heads, pos, pos, generator=gen)
    future = t.triu(t.ones(pos, pos, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


@contextlib.contextmanager
def _one_thread():
    """Run on one thread, then restore: the induction model's ops are too small to share, and on a busy
    machine two threads fighting over tiny ops make an ablation sweep tens of times slower."""
    threads = t.get_num_threads()
    t.set_num_threads(1)
    try:
        yield
    finally:
        t.set_num_threads(threads)


def _copy_cache(cache) -> ActivationCache:
    """A fresh ActivationCache with cloned tensors: the learner may read it any way, and cannot touch ours."""
    return ActivationCache({name: value.clone() for name, value in cache.items()}, cache.model)


# ---------------------------------------------------------------------------------------------- comparison


def _run_mistakes(mistakes: Sequence[Mistake], *args) -> list[tuple[Mistake, object]]:
    results = []
    for mistake in mistakes:
        try:
            with contextlib.redirect_stderr(io.StringIO()), t.no_grad():
                results.append((mistake, mistake.impl(*args)))
        except Exception:  # a wrong variant that cannot even run on this input matches nothing
            continue
    return results


def _check_dict(out, expected: dict[str, Tensor], what: str, context: str,
                mistake_outputs: Callable[[], list[tuple[Mistake, object]]], dims: Sequence[str] | None = None) -> None:
    """Keys first (exactly, with a list of the missing and unexpected ones), then every value in turn."""
    if not isinstance(out, dict):
        fail(f"{what}: returned {describe(out)} on {context}, expected a dict with keys {list(expected)}.")
    missing, unexpected = [k for k in expected if k not in out], [k for k in out if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {unexpected}"] if unexpected else [])
        fail(f"{what}: the keys differ on {context} ({'; '.join(parts)}). Expected, in order: {list(expected)}.")
    cached: list = []

    def outputs_for(key: str):
        if not cached:
            cached.append(mistake_outputs())
        return [(m, o[key]) for m, o in cached[0] if isinstance(o, dict) and key in o]

    for key, value in expected.items():
        assert_matches(out[key], value, f"{what}[{key!r}]", context=context,
                       mistakes=lambda key=key: outputs_for(key), dims=dims)


# ----------------------------------------------------------------------------------------------- checkers




@checker("head_detector", HEAD_DETECTOR_MISTAKES, chapter=CHAPTER)
def head_detector(head_detector_scores: Callable) -> None:
    """Current-, previous- and first-token scores on the induction model's patterns and on random patterns."""
    cases = []
    for layer in (0, 1):
        _, _, cache = _induction_run(3, 10, 11)
        cases.append((f"the induction model's layer-{layer} patterns ([BOS, r, r], batch 3, 21 positions)",
                      cache[f"blocks.{layer}.attn.hook_pattern"]))
    cases.append(("random causal patterns (batch 2, 3 heads, 7 positions)", _random_pattern(2, 3, 7, seed=3)))
    for context, pattern in cases:
        given = pattern.clone()
        before = snapshot(given)
        out = call_learner("head_detector_scores", head_detector_scores, given, context=context)
        assert_unchanged(before, [given], "head_detector_scores", ["pattern"])
        expected = ref.head_detector_scores(pattern)
        _check_dict(out, expected, "head_detector_scores", context,
                    lambda pattern=pattern: _run_mistakes(HEAD_DETECTOR_MISTAKES, pattern.clone()), dims=("n_heads",))
    passed(f"head_detector_scores matches the reference on {len(cases)} sets of patterns")


def _check_model_untouched(model: nn.Module, state_before: dict[str, Tensor], what: str, hint: str = "") -> None:
    if any(len(m._forward_hooks) or len(m._forward_pre_hooks) for m in model.modules()):
        fail(f"{what} left hooks on the model: every later forward pass is changed too. {hint}".rstrip())
    for name, value in model.state_dict().items():
        if not t.equal(value, state_before[name]):
            fail(f"{what} changed the model's parameter {name}. Ablate activations through a hook, never weights.")


@checker("decompose_resid", DECOMPOSE_MISTAKES, chapter=CHAPTER)
def decompose_resid(decompose_resid: Callable) -> None:
    """Components of the final residual stream on the induction model (no MLP) and the reference GPT-2 (MLPs)."""
    runs = [(load_induction_model(), _induction_run(2, 10, 12),
             "the induction model on [BOS, r, r] (batch 2, 21 positions)"),
            (ref.gpt2_course_model(), _gpt2_run("prompt"), f"the reference GPT-2 ({reference_info().kind}) on the reference prompt")]
    for model, (_, _, cache), context in runs:
        given = _copy_cache(cache)
        before = snapshot(*given.values())
        out = call_learner("decompose_resid", decompose_resid, model, given, context=context)
        assert_unchanged(before, list(given.values()), "decompose_resid", list(given.keys()))
        expected = ref.decompose_resid(model, cache)
        _check_dict(out, expected, "decompose_resid", context,
                    lambda model=model, cache=cache: _run_mistakes(DECOMPOSE_MISTAKES, model, _copy_cache(cache)),
                    dims=("batch", "pos", "d_model"))
    passed(f"decompose_resid splits the residual stream exactly, with and without MLPs ({len(runs)} models)")


@checker("direct_logit_attribution", DLA_MISTAKES, chapter=CHAPTER)
def direct_logit_attribution(direct_logit_attribution: Callable) -> None:
    """Attributions through ln_final with its scale frozen, on the reference GPT-2 in the course's model."""
    model = ref.gpt2_course_model()
    count = 0
    for which, context in (("prompt", "the reference prompt"), ("random", "2 random sequences of 12 tokens")):
        tokens, _, cache = _gpt2_run(which)
        components = ref.decompose_resid(model, cache)
        given_components = {k: v.clone() for k, v in components.items()}
        given_cache, given_tokens = _copy_cache(cache), tokens.clone()
        before = snapshot(*given_components.values(), given_tokens)
        out = call_learner("direct_logit_attribution", direct_logit_attribution, model,
                           given_components, given_cache, given_tokens, context=context)
        assert_unchanged(before, [*given_components.values(), given_tokens], "direct_logit_attribution",
                         [*components, "tokens"])
        expected = ref.direct_logit_attribution(model, components, cache, tokens)
        _check_dict(out, expected, "direct_logit_attribution", context,
                    lambda: _run_mistakes(DLA_MISTAKES, model, dict(components), _copy_cache(cache), tokens),
                    dims=("batch", "pos"))
        count += 1
    passed(f"direct_logit_attribution matches the reference ({reference_info().kind}) on {count} inputs")


def _explain_induction(pattern: Tensor, repeat_len: int) -> Callable[[Tensor], str]:
    """Which stripe and which queries the learner's scores average, when they average one near the right one."""
    right_offset, first, last = -(repeat_len - 1), repeat_len + 1, 2 * repeat_len

    def explain(out: Tensor) -> str:
        for offset in range(right_offset - 2, right_offset + 3):
            stripe = pattern.diagonal(offset=offset, dim1=-2, dim2=-1)  # entry i is query i - offset
            n = stripe.shape[-1]
            for start in range(n):
                for stop in range(start + 1, n + 1):
                    if not close(out, stripe[..., start:stop].mean((0, -1))):
                        continue
                    q0, q1 = start - offset, stop - 1 - offset
                    wrong = []
                    if offset != right_offset:
                        wrong.append(f"your scores read the diagonal at offset {offset} (key = query - {-offset}) "
                                     f"instead of -(repeat_len - 1) = {right_offset}, the token after the earlier "
                                     "occurrence")
                    if (q0, q1) != (first, last):
                        wrong.append(f"they average queries {q0}-{q1} instead of {first}-{last}, the second copy "
                                     "(position 0 is BOS)")
                    return "; ".join(wrong).capitalize() + "." if wrong else ""
        return ""

    return explain


@checker("induction_score", INDUCTION_MISTAKES, chapter=CHAPTER)
def induction_score(induction_score: Callable) -> None:
    """Induction scores on the induction model's patterns (two repeat lengths) and on random patterns.

    Layer 1, with its sharp induction stripe, comes first: an off-by-one there moves a score by ~0.5, where on
    layer 0 (every score ≈ 0.02) it moves it by ~1e-3, which reads like rounding."""
    cases = []
    for layer in (1, 0):
        for batch, repeat_len in ((3, 10), (2, 7)):
            _, _, cache = _induction_run(batch, repeat_len, 13)
            cases.append((f"the induction model's layer-{layer} patterns (batch {batch}, repeat_len {repeat_len})",
                          cache[f"blocks.{layer}.attn.hook_pattern"], repeat_len))
    cases.append(("random causal patterns (batch 2, 3 heads, repeat_len 5)", _random_pattern(2, 3, 11, seed=4), 5))
    for context, pattern, repeat_len in cases:
        given = pattern.clone()
        before = snapshot(given)
        out = call_learner("induction_score", induction_score, given, repeat_len, context=context)
        assert_unchanged(before, [given], "induction_score", ["pattern"])
        assert_matches(out, ref.induction_score(pattern, repeat_len), "induction_score", context=context,
                       mistakes=lambda pattern=pattern, repeat_len=repeat_len: _run_mistakes(
                           INDUCTION_MISTAKES, pattern.clone(), repeat_len),
                       dims=("n_heads",), explain=_explain_induction(pattern, repeat_len),
                       hint="The score of a head is the mean, over the batch and the second copy's queries, of "
                            "pattern[..., q, q - (repeat_len - 1)].")
    passed(f"induction_score matches the reference on {len(cases)} sets of patterns")


@checker("head_ablation", ABLATION_MISTAKES, chapter=CHAPTER)
def head_ablation(head_ablation_effect: Callable) -> None:
    """Loss increase on the repeated half for every zero-ablated head of the induction model."""
    with _one_thread():
        n = _head_ablation(head_ablation_effect)
    passed(f"head_ablation_effect matches the reference on {n} inputs")


def _head_ablation(head_ablation_effect: Callable) -> int:
    model = load_induction_model()
    hooks_hint = next(m.hint for m in ABLATION_MISTAKES if m.name == "hooks_left_on_the_model")
    cases = ((4, 10, 14), (2, 15, 15))
    for batch, repeat_len, seed in cases:
        context = f"the induction model on [BOS, r, r] (batch {batch}, repeat_len {repeat_len})"
        tokens = repeated_tokens(batch, repeat_len, seed)
        mine, given = copy.deepcopy(model), tokens.clone()
        state = {k: v.clone() for k, v in mine.state_dict().items()}
        out = call_learner("head_ablation_effect", head_ablation_effect, mine, given, repeat_len, context=context)
        _check_model_untouched(mine, state, "head_ablation_effect", hooks_hint)
        assert_unchanged([tokens], [given], "head_ablation_effect", ["tokens"])
        if isinstance(out, Tensor):
            out = out.detach()
        with t.no_grad():
            expected = ref.head_ablation_effect(model, tokens, repeat_len)
        assert_matches(out, expected, "head_ablation_effect", context=context, dims=("n_layers", "n_heads"),
                       mistakes=lambda tokens=tokens, repeat_len=repeat_len: _run_mistakes(
                           ABLATION_MISTAKES, copy.deepcopy(model), tokens, repeat_len))
    return len(cases)
