"""Checkers for chapter 06's loops and transforms: generate, temperature, the frequency penalty, and the KV cache.

Functions that return logits are compared as distributions (`log_softmax`, elementwise). Loops run small seeded
models and are compared token for token, as ids. The samplers (top-k, top-p) are in `ch06_samplers`, beam search
in `ch06_beam`. A loop is also run with sampling options that decide every token deterministically
(top_k = 1, or a tiny top_p, after a temperature and a frequency penalty), so a loop that drops the options, or
hands the sampler the prompt instead of the growing sequence, gives other tokens with certainty.
"""

from __future__ import annotations

import traceback

import torch as t
from torch import Tensor

from utils.checks import mistakes_ch06 as mistakes
from utils.checks.core import (
    Mistake,
    NotImplementedYet,
    assert_matches,
    call_learner,
    checker,
    close,
    describe,
    diff_report,
    fail,
    matching_mistake,
    passed,
)
from utils.checks.flops import count_flops
from utils.checks.spies import SpyZero as _SpyZero
from utils.checks.ids import assert_ids
from utils.checks.sampling_common import CHAPTER, one_row_message, prompts, safe, seeded, small_model, unchanged
from utils.reference import sampling as ref

# ------------------------------------------------------------------------------------------------ greedy


_SAMPLERS = ("apply_temperature", "apply_frequency_penalty", "sample_basic", "sample_top_k", "sample_top_p")


def _reached_a_sampler(exc: BaseException) -> bool:
    """The learner's loop failed inside (or looking up) one of section 2-3's functions."""
    cause = exc.__cause__ or exc
    names = {frame.name for frame in traceback.extract_tb(cause.__traceback__)}
    return bool(names & set(_SAMPLERS)) or any(name in str(cause) for name in _SAMPLERS)


@checker("greedy", mistakes.GREEDY_MISTAKES, chapter=CHAPTER)
def greedy(generate) -> None:
    """generate(model, input_ids, max_new_tokens, temperature=0.0) equals the reference's greedy tokens, hands
    temperature on to sample_next_token, and returns the prompt unchanged for max_new_tokens = 0."""
    model = small_model(d_vocab=500, n_ctx=24, seed=1)
    cases = [
        ("3 different prompts of 5 tokens, 6 new tokens", prompts(3, 5, 500, 2), 6),
        ("a prompt of 1 token, 5 new tokens", prompts(1, 1, 500, 3), 5),
        (f"a prompt of 12 tokens extended by 16, past n_ctx = {model.cfg.n_ctx}", prompts(2, 12, 500, 4), 16),
        ("2 prompts of 4 tokens with max_new_tokens = 0 (the prompt comes back unchanged)", prompts(2, 4, 500, 5), 0),
    ]
    for label, ids, n_new in cases:
        expected = ref.generate(model, ids, n_new, temperature=0.0)
        given, spy = ids.clone(), _SpyZero()
        try:
            t.manual_seed(0)  # a learner's loop that samples instead of being greedy is then reproducible below
            out = call_learner("generate", generate, model, given, n_new, temperature=spy, context=label)
        except (AssertionError, NotImplementedYet) as exc:
            if not spy.seen and n_new and _reached_a_sampler(exc):
                raise AssertionError(f"generate on {label}: {mistakes.DEFAULT_TEMPERATURE_HINT}") from exc.__cause__
            if isinstance(exc, NotImplementedYet):
                raise
            extra = f" {mistakes.CROP_HINT}" if "n_ctx" in label else ""
            raise AssertionError(f"{exc}{extra}") from exc.__cause__
        unchanged(ids, given, "generate", "input_ids", "Build a new tensor with t.cat instead of writing into input_ids.")
        assert_ids(out, expected, "generate", context=label, prompt_len=ids.shape[1],
                   mistakes=lambda ids=ids, n_new=n_new: [(m, seeded(m.impl, model, ids, n_new, temperature=0.0))
                                                          for m in mistakes.GREEDY_MISTAKES],
                   hint="Each step: run the model on the sequence so far, take the last position's logits, "
                        "choose with sample_next_token(tokens, logits, **sampling_kwargs), append.")
        if n_new and not spy.seen:
            fail(f"generate: the right greedy tokens on {label}, but temperature=0.0 never reached sample_next_token. "
                 f"This matches a known mistake, hard coded argmax: {mistakes.IGNORES_OPTIONS_HINT}")
    passed(f"generate matches greedy decoding on {len(cases)} inputs, including one longer than n_ctx and "
           "max_new_tokens = 0")


# ------------------------------------------------------------------------------- functions returning logits


def _check_logit_function(fn, what: str, cases, catalogue: list[Mistake], in_place_hint: str, hint: str,
                          one_row: tuple[tuple, str]) -> int:
    """Compare the distributions a learner's logits define (log_softmax of each row) with the reference's.
    float64 logits are accepted (compared in the reference's float32); integer ones are not logits."""
    for label, args, names, expected in cases:
        given = [a.clone() if isinstance(a, Tensor) else a for a in args]

        def row_message():
            row_args, shapes = one_row
            return one_row_message(fn, what, row_args, {}, shapes,
                                   lambda out: isinstance(out, Tensor) and out.shape == expected.shape[-1:])

        try:
            out = call_learner(what, fn, *given, context=label)
        except AssertionError as exc:
            message = row_message() if exc.__cause__ is not None else None
            if message:
                raise AssertionError(message) from exc.__cause__
            raise
        for original, copy, name in zip(args, given, names):
            if isinstance(original, Tensor):
                unchanged(original, copy, what, name, in_place_hint)
        if isinstance(out, Tensor) and out.shape != expected.shape and out.shape == expected.shape[-1:]:
            fail(row_message() or f"{what}: output shape {tuple(out.shape)} on {label}, expected {tuple(expected.shape)}.")
        if isinstance(out, Tensor) and not out.is_floating_point():
            fail(f"{what}: returned dtype {str(out.dtype).replace('torch.', '')} on {label}; logits are floating-point "
                 "(float32, float64 accepted).")
        if isinstance(out, Tensor) and out.shape == expected.shape:
            out = out.to(expected.dtype).log_softmax(dim=-1)

        def wrong(args=args):
            found = []
            for mistake in catalogue:
                result = safe(mistake.impl, *[a.clone() if isinstance(a, Tensor) else a for a in args])
                if isinstance(result, Tensor) and result.is_floating_point():
                    result = result.log_softmax(dim=-1)
                found.append((mistake, result))
            return found

        assert_matches(out, expected.log_softmax(dim=-1), f"{what} (compared as log_softmax of each row)",
                       context=label, mistakes=wrong, hint=hint)
    return len(cases)


@checker("temperature", mistakes.TEMPERATURE_MISTAKES, chapter=CHAPTER)
def temperature(apply_temperature) -> None:
    """apply_temperature(logits, T) gives softmax(logits / T) on differing rows, for T below and above 1."""
    gen = t.Generator().manual_seed(10)
    logits = 3 * t.randn(3, 50, generator=gen)
    cases = [(f"3 different rows of logits, temperature {T}", (logits, T), ("logits", "temperature"),
              ref.apply_temperature(logits, T)) for T in (2.0, 0.5)]
    n = _check_logit_function(apply_temperature, "apply_temperature", cases, mistakes.TEMPERATURE_MISTAKES,
                              mistakes.TEMPERATURE_IN_PLACE_HINT, "Divide the logits by the temperature.",
                              ((logits[0].clone(), 2.0), "takes `[batch d_vocab]` logits and returns `[batch d_vocab]`"))
    passed(f"apply_temperature gives the right distributions on {n} inputs")


@checker("frequency_penalty", mistakes.PENALTY_MISTAKES, chapter=CHAPTER)
def frequency_penalty(apply_frequency_penalty) -> None:
    """apply_frequency_penalty subtracts freq_penalty once per occurrence, counting each row separately."""
    d_vocab = 60
    gen = t.Generator().manual_seed(11)
    logits = 2 * t.randn(3, d_vocab, generator=gen)
    # Repeats (counts 1 to 3), the first and last vocabulary ids, and rows that share no counts.
    input_ids = t.tensor([
        [0, 5, 5, 5, 7, 59, 7, 12, 30, 31],
        [59, 59, 2, 3, 4, 4, 5, 6, 0, 0],
        [10, 11, 12, 13, 14, 15, 16, 17, 18, 10],
    ])
    cases = [(f"3 different rows of 10 tokens, freq_penalty {a}", (input_ids, logits, a),
              ("input_ids", "logits", "freq_penalty"), ref.apply_frequency_penalty(input_ids, logits, a))
             for a in (0.7, 2.0)]
    n = _check_logit_function(apply_frequency_penalty, "apply_frequency_penalty", cases, mistakes.PENALTY_MISTAKES,
                              mistakes.PENALTY_IN_PLACE_HINT,
                              "Subtract freq_penalty * counts, where counts[b, i] is how often token i occurs in row b.",
                              ((input_ids[0].clone(), logits[0].clone(), 0.7),
                               "takes `[batch pos]` input_ids with `[batch d_vocab]` logits and returns "
                               "`[batch d_vocab]`, counting each row's own tokens"))
    passed(f"apply_frequency_penalty gives the right distributions on {n} inputs")


# ---------------------------------------------------------------------------------------------- KV cache

KV_CHUNKS = [(0, 5), (5, 6), (6, 9), (9, 10), (10, 16)]  # prefill, one token, three at once, one, six


def run_in_chunks(forward, model, tokens, what: str, learner: bool, lengths: list | None = None) -> tuple[Tensor, object]:
    """Feed `tokens` through `forward(model, chunk, cache)` in the KV_CHUNKS pieces; returns all logits and the
    final cache, and appends to `lengths` the number of positions each returned cache holds (None if it cannot
    tell). Chapter 07's RoPE cache check uses it too."""
    cache, outs = None, []
    for start, stop in KV_CHUNKS:
        label = f"positions {start}..{stop - 1} with {start} cached"
        chunk = tokens[:, start:stop].clone()
        if learner:
            out = call_learner(what, forward, model, chunk, cache, context=label)
        else:
            out = forward(model, chunk, cache)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor)):
            if learner:
                fail(f"{what}: returned {describe(out)} on {label}, expected a tuple (logits, cache).")
            raise ValueError("not (logits, cache)")
        logits, cache = out
        if lengths is not None:
            lengths.append(_cached_positions(cache))
        outs.append(logits)
    return t.cat(outs, dim=1), cache


def _cached_positions(cache) -> int | None:
    try:
        return int(cache.keys[0].shape[1])
    except (AttributeError, IndexError, TypeError):
        return None


def _without_positions(model):
    """A copy of `model` whose positional embeddings are all zero: there, a position bug cannot show."""
    copy = small_model(model.cfg.d_vocab, model.cfg.n_ctx, seed=0)
    copy.load_state_dict(model.state_dict())
    with t.no_grad():
        copy.pos_embed.W_pos.zero_()
    return copy


def _kv_diagnosis(forward, model, tokens, got: Tensor, expected: Tensor, lengths: list) -> str:
    """Where the chunked logits first diverge (prefill or a cached step), and the one fix that location points at."""
    bad = next(i for i, (a, b) in enumerate(KV_CHUNKS) if not close(got[:, a:b], expected[:, a:b]))
    start, stop = KV_CHUNKS[bad]
    what = f"positions {start}..{stop - 1}"
    diff = diff_report(got[:, start:stop], expected[:, start:stop])
    if bad == 0:
        first_ok = close(got[:, :1], expected[:, :1])
        return (f"the prefill ({what}, no cache) already differs from the full forward pass ({diff}): this part "
                "needs no cache, so compare it with chapter 03's forward pass. " + (
                    "Position 0 is right and later ones are not: the attention across positions (the 1/sqrt(d_head) "
                    "scale or the causal mask) is wrong." if first_ok else
                    "Position 0 is wrong too: something outside attention (embeddings, LayerNorm, MLP, unembed)."))
    prefix = f"the prefill matches, and the logits first differ at {what} with {start} cached ({diff}). "
    held = lengths[bad - 1]
    if held is not None and held != start:
        return (prefix + f"After positions {KV_CHUNKS[bad - 1][0]}..{start - 1} your returned cache holds {held} "
                f"position(s), expected {start}: {mistakes.CACHE_LENGTH_HINT}")
    flat = _without_positions(model)
    with t.no_grad():
        flat_expected = flat(tokens)
        flat_got = safe(run_in_chunks, forward, flat, tokens, "forward_with_cache", False)
    if flat_got is not None and close(flat_got[0], flat_expected):
        return prefix + "With all positional embeddings zero they match: " + mistakes.POSITION_HINT
    if stop - start > 1 and any(b - a == 1 for a, b in KV_CHUNKS[1:bad]):  # one new token matched, several do not
        return prefix + "Chunks of one new token match and chunks of several do not: " + mistakes.MASK_OFFSET_HINT
    return prefix + mistakes.CACHED_ATTENTION_HINT


@checker("kv_cache", mistakes.KV_CACHE_MISTAKES, chapter=CHAPTER)
def kv_cache(forward_with_cache) -> None:
    """Logits computed chunk by chunk with the cache equal one full forward pass; one new token costs one position."""
    model = small_model(d_vocab=500, n_ctx=24, seed=6)
    tokens = prompts(2, 16, 500, 7)
    lengths: list = []
    with t.no_grad():
        expected = model(tokens)
        got, _ = run_in_chunks(forward_with_cache, model, tokens, "forward_with_cache", learner=True, lengths=lengths)

    def wrong():
        found = []
        for mistake in mistakes.KV_CACHE_MISTAKES:
            found.append((mistake, (safe(run_in_chunks, mistake.impl, model, tokens, mistake.name, False) or (None,))[0]))
        return found

    chunks = ", ".join(f"{b - a}" for a, b in KV_CHUNKS)
    context = f"16 positions fed in chunks of {chunks}, compared with one full forward pass"
    if isinstance(got, Tensor) and got.shape == expected.shape and got.is_floating_point() and not close(got, expected):
        named = matching_mistake(got, wrong())
        message = f"forward_with_cache logits on {context}: "
        if named is not None:
            fail(message + f"{_kv_diagnosis_location(got, expected)}. This matches a known mistake, "
                 f"{named.name.replace('_', ' ')}: {named.hint}")
        fail(message + _kv_diagnosis(forward_with_cache, model, tokens, got, expected, lengths))
    assert_matches(got, expected, "forward_with_cache logits", mistakes=wrong, context=context,
                   hint=mistakes.CACHED_ATTENTION_HINT)
    # Cost of one new token after 15 cached positions, against the reference doing the same.
    with t.no_grad():
        _, ref_cache = ref.forward_with_cache(model, tokens[:, :15])
        _, learner_cache = call_learner("forward_with_cache", forward_with_cache, model, tokens[:, :15].clone(),
                                        context="15 positions, no cache")
        _, ref_flops = count_flops(ref.forward_with_cache, model, tokens[:, 15:], ref_cache)
        _, full_flops = count_flops(model, tokens)
        _, got_flops = count_flops(call_learner, "forward_with_cache", forward_with_cache, model, tokens[:, 15:].clone(),
                                   learner_cache, context="one new token after 15 cached")
    if got_flops > 1.5 * ref_flops:
        fail(f"forward_with_cache: one new token after 15 cached positions cost {got_flops / 1e6:.2f} MFLOP; with a "
             f"cache it needs about {ref_flops / 1e6:.2f} (a full pass over 16 positions: {full_flops / 1e6:.2f}). "
             "Process only the new positions: the cache already holds the earlier keys and values.")
    passed(f"forward_with_cache matches the full forward pass over {len(KV_CHUNKS)} chunks, and one new token costs "
           f"{got_flops / full_flops:.0%} of a full pass")


def _kv_diagnosis_location(got: Tensor, expected: Tensor) -> str:
    bad = next(i for i, (a, b) in enumerate(KV_CHUNKS) if not close(got[:, a:b], expected[:, a:b]))
    start, stop = KV_CHUNKS[bad]
    stage = "in the prefill (no cache)" if bad == 0 else f"with {start} cached"
    return f"first differ at positions {start}..{stop - 1} {stage} ({diff_report(got[:, start:stop], expected[:, start:stop])})"


# ------------------------------------------------------------------------------------ generate with cache

# Options that decide every token with certainty whatever the way of sampling (top_k = 1, or a top_p so small
# that only the most likely token is kept), yet give other tokens than greedy decoding, than the same options
# without the temperature, and than a penalty that counts only the prompt: chosen and verified in the tests.
SAMPLING_OPTIONS = [dict(temperature=0.5, top_k=1, frequency_penalty=3.0),
                    dict(temperature=2.0, top_p=1e-3, frequency_penalty=0.5)]


def _sampling_cases():
    ids = prompts(2, 6, 500, 9)
    return [(f"2 different prompts of 6 tokens, 12 new tokens, {', '.join(f'{k}={v}' for k, v in opts.items())}",
             ids, 12, opts) for opts in SAMPLING_OPTIONS]


def _check_loop(loop, what: str, model, label: str, ids: Tensor, n_new: int, options: dict,
                catalogue: list[Mistake], hint: str) -> None:
    expected = ref.generate(model, ids, n_new, **options)
    given = ids.clone()
    t.manual_seed(0)
    out = call_learner(what, loop, model, given, n_new, **options, context=label)
    unchanged(ids, given, what, "input_ids", "Build a new tensor with t.cat instead.")
    assert_ids(out, expected, what, context=label, prompt_len=ids.shape[1], hint=hint,
               mistakes=lambda: [(m, seeded(m.impl, model, ids, n_new, **options)) for m in catalogue])


@checker("kv_generate", mistakes.KV_GENERATE_MISTAKES, chapter=CHAPTER)
def kv_generate(generate_with_cache, generate=None) -> None:
    """generate_with_cache gives generate's tokens, greedy and with sampling options, for about (prompt + new)
    positions' work. With `generate` given, that loop is checked with the same sampling options."""
    model = small_model(d_vocab=500, n_ctx=128, seed=8)
    cases = [("2 different prompts of 6 tokens, 10 new tokens", prompts(2, 6, 500, 9), 10),
             ("a prompt of 1 token, 8 new tokens", prompts(1, 1, 500, 10), 8)]
    for label, ids, n_new in cases:
        with t.no_grad():
            expected, uncached = count_flops(ref.generate, model, ids, n_new, temperature=0.0)
            _, cached = count_flops(ref.generate_with_cache, model, ids, n_new, temperature=0.0)
        given = ids.clone()
        out, flops = count_flops(call_learner, "generate_with_cache", generate_with_cache, model, given, n_new,
                                 temperature=0.0, context=label)
        unchanged(ids, given, "generate_with_cache", "input_ids", "Build a new tensor with t.cat instead.")
        assert_ids(out, expected, "generate_with_cache", context=f"{label}, compared with generate",
                   prompt_len=ids.shape[1],
                   mistakes=lambda ids=ids, n_new=n_new: [(m, safe(m.impl, model, ids, n_new, temperature=0.0))
                                                          for m in mistakes.KV_GENERATE_MISTAKES],
                   hint="Run forward_with_cache on the prompt once, then on each new token with the returned cache.")
        if flops > 1.5 * cached:
            fail(f"generate_with_cache: on {label} your call did {flops / 1e6:.1f} MFLOP, the work of "
                 f"{flops / uncached:.0%} of generate without a cache ({uncached / 1e6:.1f} MFLOP); with a cache it "
                 f"needs about {cached / 1e6:.1f}. {mistakes.NO_CACHE_HINT}")
    loops = [("generate_with_cache", generate_with_cache, mistakes.KV_GENERATE_MISTAKES)]
    if generate is not None:
        loops.append(("generate", generate, mistakes.SAMPLING_LOOP_MISTAKES))
    zero = prompts(2, 4, 500, 12)
    for what, loop, catalogue in loops:
        _check_loop(loop, what, model, "2 prompts of 4 tokens with max_new_tokens = 0 (the prompt comes back unchanged)",
                    zero, 0, {"temperature": 0.0}, catalogue, "With max_new_tokens = 0 return input_ids as it is.")
        for label, ids, n_new, options in _sampling_cases():
            _check_loop(loop, what, model, label, ids, n_new, options, catalogue, mistakes.SAMPLING_OPTIONS_HINT)
    also = " (and generate's)" if generate is not None else ""
    passed(f"generate_with_cache gives generate's tokens on {len(cases)} greedy inputs for {flops / uncached:.0%} of "
           f"its work, and follows the sampling options{also} on {len(SAMPLING_OPTIONS)} more")
