"""Checkers for chapter 07, the assembled model: the decoder with transformers' weights, the strict name map, and
generation with a KV cache under RoPE, all against `transformers`' own `LlamaForCausalLM` (logits and greedy tokens).

The component checkers and the helpers they share are in `ch07_modern.py`.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch as t
from torch import Tensor, nn

from utils.checks.ch06_sampling import KV_CHUNKS, run_in_chunks
from utils.checks.ch07_modern import (
    CHAPTER, _check_gqa, _converted, _gen, _names, _no_grad, _quietly, _require_class, _require_function, _safe,
    _uses_passing, decoder_config, rms_norm, swiglu,
)
from utils.checks.core import (
    Mistake, NotImplementedYet, assert_matches, assert_unchanged, call_learner, check_names, checker, close,
    construct, describe, fail, load_params, passed, snapshot,
)
from utils.checks.mistakes_ch07 import DECODER_MISTAKES, KV_ROPE_MISTAKES, NAME_MAP_MISTAKES
from utils.llama_reference import SIZES, llama_greedy, llama_logits, reference_llama
from utils.reference import modern as ref

# -------------------------------------------------------------------------------------------------- decoder


def _token_cases() -> list[tuple[str, Tensor]]:
    gen = _gen(6)
    return [("2 random sequences of length 9", t.randint(0, SIZES["d_vocab"], (2, 9), generator=gen)),
            ("1 sequence of length 24", t.randint(0, SIZES["d_vocab"], (1, 24), generator=gen)),
            ("3 sequences of length 1", t.randint(0, SIZES["d_vocab"], (3, 1), generator=gen))]


@functools.cache
def _expected_logits(index: int) -> Tensor:
    return llama_logits(_token_cases()[index][1])


GREEDY_PROMPT_SEED, GREEDY_NEW = 8, 8


def _greedy_prompt() -> Tensor:
    return t.randint(0, SIZES["d_vocab"], (2, 5), generator=_gen(GREEDY_PROMPT_SEED))


@functools.cache
def _expected_greedy() -> Tensor:
    return llama_greedy(_greedy_prompt(), GREEDY_NEW)


@t.no_grad()
def _greedy(model: nn.Module, tokens: Tensor, n_new: int) -> Tensor:
    for _ in range(n_new):
        tokens = t.cat([tokens, model(tokens)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return tokens


def _loaded(Cls: type, what: str, params: dict[str, Tensor] | None = None) -> nn.Module:
    model = construct(Cls, decoder_config(), what)
    check_names(model, _names(ref.LlamaStyleDecoder), what)
    load_params(model, _converted() if params is None else params, what)
    return model.eval()


_PARTS = (("ln1", "RMSNorm", "rms_norm"), ("attn", "GroupedQueryAttention", "gqa"), ("mlp", "SwiGLU", "swiglu"))


def _parts_pass(model: nn.Module) -> None:
    checks = {"rms_norm": rms_norm.__wrapped__, "gqa": _check_gqa, "swiglu": swiglu.__wrapped__}
    block = model.blocks[0] if isinstance(getattr(model, "blocks", None), nn.ModuleList) and len(model.blocks) else None
    for attr, what, exercise in _PARTS:
        sub = getattr(block, attr, None)
        if isinstance(sub, nn.Module) and type(sub).__module__ != ref.__name__:
            _uses_passing(type(sub), checks[exercise], type(sub).__name__, "LlamaStyleDecoder", exercise)


def _compare_logits(model: nn.Module, what: str, mistakes: list[Mistake], wrong_model) -> None:
    for index, (label, tokens) in enumerate(_token_cases()):
        given = tokens.clone()
        with t.no_grad():
            out = call_learner(f"{what} forward", model, given, context=label)
        assert_unchanged([tokens], [given], f"{what} forward", ["tokens"])

        def outcomes(tokens=tokens):
            found = []
            for mistake in mistakes:
                with contextlib.suppress(Exception):
                    found.append((mistake, _quietly(_no_grad(wrong_model(mistake)), tokens.clone())))
            return found

        assert_matches(out, _expected_logits(index), f"{what}: logits against LlamaForCausalLM", context=label,
                       mistakes=outcomes, dims=("batch", "pos", "d_vocab"),
                       hint="embed -> every block in order -> ln_final -> unembed, nothing else.")


def _compare_greedy(model: nn.Module, what: str) -> int:
    prompt = _greedy_prompt()
    got = call_learner(f"{what} forward", _greedy, model, prompt.clone(), GREEDY_NEW, context="greedy generation")
    expected = _expected_greedy()
    if not t.equal(got, expected):
        row, pos = (int(i) for i in (got != expected).nonzero()[0])
        fail(f"{what}: greedy token {pos} of row {row} is {got[row, pos].item()}, LlamaForCausalLM.generate chooses "
             f"{expected[row, pos].item()} (2 prompts of 5 tokens, {GREEDY_NEW} new).")
    return GREEDY_NEW


@checker("decoder", DECODER_MISTAKES, chapter=CHAPTER, requires=("rms_norm", "gqa", "swiglu"))
def decoder(LlamaStyleDecoder: type) -> None:
    """With transformers' weights loaded by name, the decoder gives LlamaForCausalLM's logits and greedy tokens."""
    _require_class(LlamaStyleDecoder, "LlamaStyleDecoder", "decoder")
    what = "LlamaStyleDecoder"
    model = _loaded(LlamaStyleDecoder, what)
    _parts_pass(model)

    def wrong_model(mistake: Mistake):
        return _loaded(mistake.impl, mistake.name)

    _compare_logits(model, what, DECODER_MISTAKES, wrong_model)
    n_new = _compare_greedy(model, what)
    passed(f"LlamaStyleDecoder gives LlamaForCausalLM's logits on {len(_token_cases())} inputs and its {n_new} greedy tokens")

# ------------------------------------------------------------------------------------------------- name map


@functools.cache
def _reference_decoder() -> ref.LlamaStyleDecoder:
    with t.random.fork_rng(devices=[]):
        model = ref.LlamaStyleDecoder(decoder_config())
    model.load_state_dict(_converted(), strict=True)
    return model.eval()


def _same_dict(a, b) -> bool:
    return (isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b)
            and all(isinstance(a[k], Tensor) and a[k].shape == b[k].shape and close(a[k], b[k]) for k in a))


def _named_map(out, hf_state, cfg) -> str:
    for mistake in NAME_MAP_MISTAKES:
        if _same_dict(out, _safe(mistake.impl, dict(hf_state), cfg)):
            return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
    return ""


@checker("name_map", NAME_MAP_MISTAKES, chapter=CHAPTER)
def name_map(convert_llama_weights) -> None:
    """The converted weights load strictly into the decoder and give LlamaForCausalLM's logits; an unknown or a
    missing transformers name is a KeyError that names it; the caller's dict is left alone."""
    _require_function(convert_llama_weights, "checks.name_map(convert_llama_weights)")
    what = "convert_llama_weights"
    cfg = decoder_config()
    hf_state = {k: v.clone() for k, v in reference_llama().state_dict().items()}
    before = snapshot(*hf_state.values())
    given = dict(hf_state)
    out = call_learner(what, convert_llama_weights, given, cfg, context="LlamaForCausalLM's complete state dict")
    if set(given) != set(hf_state):
        fail(f"{what} added or removed names in the caller's state dict: build a new dict instead.")
    assert_unchanged(before, list(hf_state.values()), what, list(hf_state))
    want = _reference_decoder().state_dict()
    if not isinstance(out, dict):
        fail(f"{what}: returned {describe(out)}, expected a dict {{TransformerLens name: tensor}}.")
    missing, unexpected = sorted(set(want) - set(out)), sorted(set(out) - set(want))
    if missing or unexpected:
        fail(f"{what}: the names differ from LlamaStyleDecoder's (missing {missing[:4]}, unexpected {unexpected[:4]})."
             + _named_map(out, hf_state, cfg))
    for name in want:
        if not isinstance(out[name], Tensor) or tuple(out[name].shape) != tuple(want[name].shape):
            fail(f"{what}: `{name}` is {describe(out[name])}, expected shape {tuple(want[name].shape)}."
                 + (_named_map(out, hf_state, cfg) or " nn.Linear stores [out, in]: transpose, and split the heads."))
    model = copy.deepcopy(_reference_decoder())
    model.load_state_dict(out, strict=True)
    label, tokens = _token_cases()[0]
    with t.no_grad():
        logits = model(tokens)
    assert_matches(logits, _expected_logits(0), f"{what}: the decoder's logits with your weights", context=label,
                   mistakes=lambda: [], hint=_named_map(out, hf_state, cfg).strip()
                   or "Check each transpose and each head split against the table of names and shapes.")
    probes = [("an unexpected `model.layers.0.self_attn.q_proj.bias`",
               {**hf_state, "model.layers.0.self_attn.q_proj.bias": t.zeros(cfg.n_heads * cfg.d_head)},
               "model.layers.0.self_attn.q_proj.bias"),
              ("`model.layers.1.mlp.up_proj.weight` missing",
               {k: v for k, v in hf_state.items() if k != "model.layers.1.mlp.up_proj.weight"},
               "model.layers.1.mlp.up_proj.weight")]
    for label, bad, key in probes:
        try:
            accepted = _quietly(convert_llama_weights, bad, cfg)
        except NotImplementedError as exc:
            raise NotImplementedYet(f"{what} is not implemented yet.") from exc
        except Exception as exc:  # the error we want: it must name the offending key
            if key not in str(exc):
                fail(f"{what} raised {type(exc).__name__} for a state dict with {label}, but its message does not "
                     f"name `{key}`: list the missing and unexpected names.")
            continue
        named = _named_map(accepted, bad, cfg)
        fail(f"{what} accepted a state dict with {label} without an error.{named or ' A strict map raises a KeyError listing it.'}")
    passed(f"convert_llama_weights maps all {len(want)} tensors strictly; LlamaForCausalLM's logits reproduced")

# ---------------------------------------------------------------------------------------- cache under RoPE


def _kv_tokens() -> Tensor:
    return t.randint(0, SIZES["d_vocab"], (2, 16), generator=_gen(9))


@functools.cache
def _kv_expected() -> Tensor:
    return llama_logits(_kv_tokens())


def _cache_heads(cache, what: str) -> None:
    cfg = decoder_config()
    keys = getattr(cache, "keys", None)
    if not isinstance(keys, list) or len(keys) != cfg.n_layers or not all(isinstance(k, Tensor) for k in keys):
        fail(f"{what}: the cache's `keys` must be a list of {cfg.n_layers} tensors (one per layer); got {describe(keys)}.")
    want = (2, KV_CHUNKS[-1][1], cfg.n_kv_heads, cfg.d_head)
    if tuple(keys[0].shape) != want:
        named = ""
        if keys[0].dim() == 4 and keys[0].shape[2] == cfg.n_heads:
            m = next(m for m in KV_ROPE_MISTAKES if m.name == "cache_expanded_heads")
            named = f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}"
        fail(f"{what}: the cache holds keys of shape {tuple(keys[0].shape)} after 16 positions, expected {want} "
             f"[batch pos n_kv_heads d_head].{named}")


@checker("kv_rope", KV_ROPE_MISTAKES, chapter=CHAPTER)
def kv_rope(forward_with_rope_cache) -> None:
    """Chunked cached logits equal LlamaForCausalLM's full pass; the cache keeps n_kv_heads heads; cached greedy
    tokens equal transformers' generate and the uncached loop."""
    _require_function(forward_with_rope_cache, "checks.kv_rope(forward_with_rope_cache)")
    what = "forward_with_rope_cache"
    model = copy.deepcopy(_reference_decoder())
    tokens = _kv_tokens()
    with t.no_grad():
        got, cache = run_in_chunks(forward_with_rope_cache, model, tokens, what, learner=True)

    def wrong():
        found = []
        for mistake in KV_ROPE_MISTAKES:
            with contextlib.suppress(Exception):
                found.append((mistake, _quietly(_no_grad(run_in_chunks), mistake.impl, model, tokens, mistake.name, False)[0]))
        return found

    chunks = ", ".join(str(b - a) for a, b in KV_CHUNKS)
    assert_matches(got, _kv_expected(), f"{what} logits", mistakes=wrong, dims=("batch", "pos", "d_vocab"),
                   context=f"16 positions fed in chunks of {chunks}, compared with LlamaForCausalLM's full pass",
                   hint="Rotate the new q and k at start = cache.n_positions, concatenate the cached (already rotated) "
                        "keys and values before the new ones, and shift the causal mask's diagonal by that start.")
    _cache_heads(cache, what)
    prompt = _greedy_prompt()
    with t.no_grad():
        logits, cache = call_learner(what, forward_with_rope_cache, model, prompt.clone(), None, context="a 5-token prompt")
        generated = prompt
        for step in range(GREEDY_NEW):
            generated = t.cat([generated, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
            if step + 1 < GREEDY_NEW:
                logits, cache = call_learner(what, forward_with_rope_cache, model, generated[:, -1:], cache,
                                             context=f"generated token {step + 1}")
    expected = _expected_greedy()
    if not t.equal(generated, expected):
        row, pos = (int(i) for i in (generated != expected).nonzero()[0])
        fail(f"{what}: cached greedy token {pos} of row {row} is {generated[row, pos].item()}; uncached and "
             f"transformers' generate choose {expected[row, pos].item()}.")
    passed(f"forward_with_rope_cache matches LlamaForCausalLM over {len(KV_CHUNKS)} chunks with an n_kv_heads cache, and "
           f"its {GREEDY_NEW} cached greedy tokens equal transformers' generate")
