"""Checkers for chapter 07's components: RMSNorm, RoPE, SwiGLU and grouped-query attention, each against
`transformers`' own Llama modules (a small `LlamaForCausalLM` with seeded random weights,
built offline by `utils.llama_reference`).

Module checkers load the reference model's parameters, converted to the course's names, into the learner's
class and compare with the `transformers` sub-module itself on random inputs (batch, pos and every head count
differ). Expected outputs are computed once per process; learner code only ever receives clones. The decoder,
the name map and the cache are checked in `ch07_modern_decoder.py`.
"""

from __future__ import annotations

import contextlib
import functools
import io

import torch as t
from torch import Tensor, nn

from utils.checks.core import (
    Case, assert_matches, assert_unchanged, call_learner, check_module, checker, describe, fail, learner_part, passed,
    uses_passing,
)
from utils.checks.mistakes_ch07 import GQA_MISTAKES, RMS_NORM_MISTAKES, ROTARY_MISTAKES, SWIGLU_MISTAKES
from utils.llama_reference import SIZES, llama_config, randomize_, reference_llama
from utils.reference import modern as ref

CHAPTER = "07_modern_decoder"
RESID_DIMS = ("batch", "pos", "d_model")


def _gen(seed: int) -> t.Generator:
    return t.Generator().manual_seed(seed)


def decoder_config(**overrides) -> ref.DecoderConfig:
    return ref.DecoderConfig(**{**SIZES, **overrides})


@functools.cache
def _converted() -> dict[str, Tensor]:
    return ref.convert_llama_weights(reference_llama().state_dict(), decoder_config())


def _params(prefix: str) -> dict[str, Tensor]:
    start = prefix + "."
    return {name[len(start):]: p for name, p in _converted().items() if name.startswith(start)}


@functools.cache
def _names(Cls: type) -> list[str]:
    return list(Cls(decoder_config()).state_dict())


def _require_class(Cls, what: str, exercise: str) -> None:
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. checks.{exercise}({what}); got {describe(Cls)}.")


def _require_function(fn, call: str) -> None:
    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass the function itself, e.g. {call}; got {describe(fn)}.")


def _quietly(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args, **kwargs)


def _uses_passing(part, check, what: str, parent: str, exercise: str) -> None:
    """Another exercise's check on a part the learner's code uses (`core.uses_passing`: an input modified in
    place, with right values, does not block the parent)."""
    uses_passing(part, check, what, parent, exercise)


def _no_grad(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with t.no_grad():
            return fn(*args, **kwargs)
    return run

# ------------------------------------------------------------------------------------------------ RMSNorm


@functools.cache
@_no_grad
def _rms_cases() -> list[Case]:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    hf = reference_llama().model
    gen = _gen(1)
    cfg = decoder_config()
    shifted = t.randn(3, 7, cfg.d_model, generator=gen) + 0.5  # a non-zero mean: centring shows
    tiny = 0.05 * t.randn(2, 5, cfg.d_model, generator=gen)  # mean square 0.0025, comparable to eps = 0.1
    big_eps = LlamaRMSNorm(cfg.d_model, eps=0.1)
    big_eps.weight.copy_(hf.layers[0].input_layernorm.weight)
    last = t.randn(4, 1, cfg.d_model, generator=gen)
    return [
        Case("transformers' layer-0 input_layernorm, inputs of mean 0.5", cfg, _params("blocks.0.ln1"), (shifted,),
             hf.layers[0].input_layernorm(shifted)),
        Case("small inputs with rms_norm_eps=0.1", decoder_config(rms_norm_eps=0.1), _params("blocks.0.ln1"), (tiny,),
             big_eps(tiny)),
        Case("transformers' final norm on 4 sequences of length 1", cfg, _params("ln_final"), (last,), hf.norm(last)),
    ]


@checker("rms_norm", RMS_NORM_MISTAKES, chapter=CHAPTER)
def rms_norm(RMSNorm: type) -> None:
    """RMSNorm equals transformers' LlamaRMSNorm, including where epsilon dominates the mean square."""
    _require_class(RMSNorm, "RMSNorm", "rms_norm")
    n = check_module(RMSNorm, what="RMSNorm", names=["w"], cases=_rms_cases(), mistakes=RMS_NORM_MISTAKES,
                     dims=RESID_DIMS, hint="x / sqrt(mean(x**2 over d_model) + eps) * w: no mean subtracted, no bias.")
    passed(f"RMSNorm matches transformers' LlamaRMSNorm on {n} inputs")

# ------------------------------------------------------------------------------------------------- rotary


@functools.cache
@_no_grad
def _rotary_cases() -> list[tuple[str, Tensor, int, float, Tensor]]:
    """(label, x [batch pos heads d_head], start, theta, transformers' rotation of x)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    gen = _gen(2)
    cases = []
    for label, shape, start, theta in (
        ("x [2, 5, 3, 16] at positions 0..4", (2, 5, 3, 16), 0, 10000.0),
        ("x [1, 4, 2, 16] at positions 7..10 (start=7, as under a cache)", (1, 4, 2, 16), 7, 10000.0),
        ("x [2, 3, 1, 8] at positions 3..5 with theta=500", (2, 3, 1, 8), 3, 500.0),
    ):
        x = t.randn(*shape, generator=gen)
        rotary = LlamaRotaryEmbedding(llama_config(d_head=shape[-1], rope_theta=theta))
        positions = t.arange(start, start + shape[1])[None]
        cos, sin = rotary(x, positions)
        heads_first = x.transpose(1, 2)  # transformers rotates [batch heads pos d_head]
        expected, _ = apply_rotary_pos_emb(heads_first, heads_first, cos, sin)
        cases.append((label, x, start, theta, expected.transpose(1, 2).contiguous()))
    return cases


def _check_rotary(apply_rotary) -> int:
    _require_function(apply_rotary, "checks.rotary(apply_rotary)")
    for label, x, start, theta, expected in _rotary_cases():
        given = x.clone()
        out = call_learner("apply_rotary", apply_rotary, given, start, theta, context=label)
        assert_unchanged([x], [given], "apply_rotary", ["x"])
        assert_matches(out, expected, "apply_rotary", context=label, dims=("batch", "pos", "n_heads", "d_head"),
                       mistakes=lambda x=x, s=start, th=theta: [(m, _safe(m.impl, x.clone(), s, th)) for m in ROTARY_MISTAKES],
                       hint="Pair dimension i with i + d_head/2, angle (start + position) * theta^(-2i/d_head).")
    return len(_rotary_cases())


def _safe(fn, *args):
    """A catalogued mistake that cannot run on this input matches nothing."""
    try:
        with t.no_grad():
            return _quietly(fn, *args)
    except Exception:  # noqa: BLE001 - a failing wrong variant only means it is not the learner's
        return None


@checker("rotary", ROTARY_MISTAKES, chapter=CHAPTER)
def rotary(apply_rotary) -> None:
    """apply_rotary equals transformers' Llama apply_rotary_pos_emb (rotate_half), with a start offset and any theta."""
    n = _check_rotary(apply_rotary)
    passed(f"apply_rotary matches transformers' Llama rotary embedding on {n} inputs (offsets and theta included)")

# ------------------------------------------------------------------------------------------------- SwiGLU


@functools.cache
@_no_grad
def _swiglu_cases() -> list[Case]:
    hf = reference_llama().model
    cfg = decoder_config()
    gen = _gen(3)
    x0, x1 = t.randn(3, 7, cfg.d_model, generator=gen), t.randn(2, 1, cfg.d_model, generator=gen)
    return [Case("transformers' layer-0 LlamaMLP on 3 random sequences of length 7", cfg, _params("blocks.0.mlp"), (x0,),
                 hf.layers[0].mlp(x0)),
            Case("transformers' layer-1 LlamaMLP on 2 sequences of length 1", cfg, _params("blocks.1.mlp"), (x1,),
                 hf.layers[1].mlp(x1))]


@checker("swiglu", SWIGLU_MISTAKES, chapter=CHAPTER)
def swiglu(SwiGLU: type) -> None:
    """SwiGLU equals transformers' LlamaMLP: down(silu(gate(x)) * up(x))."""
    _require_class(SwiGLU, "SwiGLU", "swiglu")
    n = check_module(SwiGLU, what="SwiGLU", names=_names(ref.SwiGLU), cases=_swiglu_cases(), mistakes=SWIGLU_MISTAKES,
                     dims=RESID_DIMS, hint="(silu(x @ W_gate) * (x @ W_in)) @ W_out, no biases.")
    passed(f"SwiGLU matches transformers' LlamaMLP on {n} inputs")

# ------------------------------------------------------------------------------------------------ attention


def _causal_mask(pos: int) -> Tensor:
    return t.full((pos, pos), float("-inf")).triu(1)[None, None]


@functools.cache
@_no_grad
def _gqa_cases() -> list[Case]:
    from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

    hf = reference_llama().model
    gen = _gen(4)
    cases = []

    def run(attn, rotary, x):
        positions = t.arange(x.shape[1])[None]
        out, _ = attn(x, position_embeddings=rotary(x, positions), attention_mask=_causal_mask(x.shape[1]))
        return out

    cfg = decoder_config()
    for layer, shape in ((0, (3, 7)), (1, (2, 12)), (0, (3, 1))):
        x = t.randn(*shape, cfg.d_model, generator=gen)
        cases.append(Case(f"transformers' layer-{layer} LlamaAttention ({cfg.n_heads} query heads, {cfg.n_kv_heads} kv heads) "
                          f"on x [{shape[0]}, {shape[1]}, {cfg.d_model}]", cfg, _params(f"blocks.{layer}.attn"), (x,),
                          run(hf.layers[layer].self_attn, hf.rotary_emb, x)))
    # Multi-query attention (one kv head) with another theta: the sizes must come from cfg.
    mqa_sizes = dict(n_kv_heads=1, rope_theta=500.0)
    hf_cfg = llama_config(**mqa_sizes)
    mqa = LlamaAttention(hf_cfg, layer_idx=0)
    randomize_(mqa, seed=5)
    state = {f"model.layers.0.self_attn.{k}": v for k, v in mqa.state_dict().items()}
    full = {**reference_llama().state_dict(), **state}
    params = {k[len("blocks.0.attn."):]: v for k, v in ref.convert_llama_weights(full, decoder_config(**mqa_sizes)).items()
              if k.startswith("blocks.0.attn.")}
    x = t.randn(2, 6, cfg.d_model, generator=gen)
    cases.insert(1, Case("multi-query attention (n_kv_heads=1, rope_theta=500) on x [2, 6, 64]",
                         decoder_config(**mqa_sizes), params, (x,), run(mqa, LlamaRotaryEmbedding(hf_cfg), x)))
    return cases


def _check_gqa(GroupedQueryAttention: type) -> int:
    _require_class(GroupedQueryAttention, "GroupedQueryAttention", "gqa")
    rope = learner_part(GroupedQueryAttention, "apply_rotary")
    if rope is not None:
        _uses_passing(rope, _check_rotary, "apply_rotary", "GroupedQueryAttention", "rotary")
    return check_module(GroupedQueryAttention, what="GroupedQueryAttention", names=_names(ref.GroupedQueryAttention),
                        cases=_gqa_cases(), mistakes=GQA_MISTAKES, dims=RESID_DIMS,
                        hint="q with n_heads heads, k and v with n_kv_heads; rotate q and k (start 0, cfg.rope_theta); "
                             "k, v .repeat_interleave(n_heads // n_kv_heads, dim=2); scores / sqrt(d_head); causal mask; "
                             "softmax; weighted v; W_O summed over heads.")


@checker("gqa", GQA_MISTAKES, chapter=CHAPTER, requires=("rotary",))
def gqa(GroupedQueryAttention: type) -> None:
    """GroupedQueryAttention equals transformers' LlamaAttention (GQA and multi-query, RoPE, no biases)."""
    n = _check_gqa(GroupedQueryAttention)
    passed(f"GroupedQueryAttention matches transformers' LlamaAttention on {n} inputs")
