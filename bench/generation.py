"""Greedy generation speed at GPT-2 small size (random weights): the course's KV cache (chapter 06,
`generate_with_cache`) against `transformers`' `generate(use_cache=True)` on a plain GPT2LMHeadModel with the
same weights, and against the course's own uncached `generate`, which re-reads the whole prefix for every
new token. (Not the bridge's `original_model`: TransformerLens wraps its sub-modules, and its `generate`
picked tokens that a full forward pass does not rank first; see `bench.models.plain_gpt2`.)

Every run is greedy, so the three must produce the same tokens; the section records whether they do, and
how far the cached logits drift from a full forward pass, because a fast wrong cache would be worthless.
"""

from __future__ import annotations

import time

import torch as t

from bench.timing import interleaved_medians

PROMPT_TOKENS = 16
NEW_TOKENS = 256  # the figure: cached against uncached at 256 new tokens
WARMUP_TOKENS = 4
LOGIT_CHECK_STEPS = 8
ROUNDS = 2


def _timed(label: str, fn) -> tuple[float, t.Tensor]:
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"[bench]   {label}: {seconds:.1f} s", flush=True)  # the uncached run is long: show progress
    return seconds, out


def hf_greedy(hf, prompt: t.Tensor, new_tokens: int) -> t.Tensor:
    """transformers' greedy decoding with its KV cache, never stopping early at an end-of-text token."""
    from transformers import GenerationConfig

    # No eos: the course's generate_with_cache has no stop token, and min_new_tokens would instead mask
    # the eos logit, which could change the greedy choice.
    config = GenerationConfig(max_new_tokens=new_tokens, do_sample=False, use_cache=True, eos_token_id=None,
                              pad_token_id=0, bos_token_id=None)
    return hf.generate(prompt, attention_mask=t.ones_like(prompt), generation_config=config)


def first_divergence(a: t.Tensor, b: t.Tensor, start: int) -> int | None:
    """Index of the first generated token where two greedy runs differ (None when they agree throughout)."""
    if a.shape != b.shape:
        return min(a.shape[1], b.shape[1]) - start
    differ = (a[0, start:] != b[0, start:]).nonzero()
    return int(differ[0, 0]) if len(differ) else None


def cached_logit_drift(ours, hf, tokens: t.Tensor, prompt_len: int, steps: int) -> float:
    """Max |logit difference| between the course's cache, fed one token at a time, and a full forward pass."""
    from utils.reference.sampling import forward_with_cache

    logits, cache = forward_with_cache(ours, tokens[:, :prompt_len])
    pieces = [logits]
    for pos in range(prompt_len, prompt_len + steps):
        logits, cache = forward_with_cache(ours, tokens[:, pos : pos + 1], cache)
        pieces.append(logits)
    full = hf(tokens[:, : prompt_len + steps]).logits
    return (t.cat(pieces, dim=1) - full).abs().max().item()


def run(results: dict, new_tokens: int = NEW_TOKENS) -> None:
    from bench.models import gpt2_small_trio
    from utils.reference.sampling import generate, generate_with_cache

    ours, _bridge, hf = gpt2_small_trio()
    prompt = t.randint(0, ours.cfg.d_vocab, (1, PROMPT_TOKENS), generator=t.Generator().manual_seed(0))
    with t.inference_mode():
        # Warm-up: first calls allocate buffers and, in transformers, build the generation machinery.
        generate_with_cache(ours, prompt, WARMUP_TOKENS, temperature=0.0)
        hf_greedy(hf, prompt, WARMUP_TOKENS)
        generate(ours, prompt, WARMUP_TOKENS, temperature=0.0)
        # The two cached runs take turns, twice, so that a burst of other work does not land on one of them;
        # the uncached run is long (its cost grows with the prefix) and runs once.
        outputs: dict[str, t.Tensor] = {}

        def keep(name: str, fn):
            return lambda: outputs.__setitem__(name, fn())

        seconds = interleaved_medians({
            "cached": keep("cached", lambda: generate_with_cache(ours, prompt, new_tokens, temperature=0.0)),
            "transformers": keep("transformers", lambda: hf_greedy(hf, prompt, new_tokens)),
        }, repeats=ROUNDS, warmup=0)
        cached_s, hf_s, cached, theirs = seconds["cached"], seconds["transformers"], outputs["cached"], outputs["transformers"]
        print(f"[bench]   course, KV cache: {cached_s:.1f} s; transformers generate: {hf_s:.1f} s", flush=True)
        uncached_s, uncached = _timed("course, uncached", lambda: generate(ours, prompt, new_tokens, temperature=0.0))
        drift = cached_logit_drift(ours, hf, cached, PROMPT_TOKENS, min(LOGIT_CHECK_STEPS, new_tokens))
    cfg = ours.cfg
    results["generation"] = {
        "model": f"GPT-2 small size ({cfg.n_layers} layers, d_model {cfg.d_model}), random weights, greedy, batch 1",
        "prompt_tokens": PROMPT_TOKENS, "new_tokens": new_tokens,
        "course_cached_tok_s": new_tokens / cached_s,
        "transformers_tok_s": new_tokens / hf_s,
        "course_uncached_tok_s": new_tokens / uncached_s,
        "same_tokens_as_transformers": first_divergence(cached, theirs, PROMPT_TOKENS) is None,
        "same_tokens_cached_uncached": first_divergence(cached, uncached, PROMPT_TOKENS) is None,
        "first_divergence_from_transformers": first_divergence(cached, theirs, PROMPT_TOKENS),
        # Random weights collapse greedy decoding onto few tokens: say how many, so a reader can judge the check.
        "distinct_new_tokens": int(cached[0, PROMPT_TOKENS:].unique().numel()),
        "cached_max_abs_logit_diff": drift,
    }
