"""Checkers for chapter 02: each GPT-2 component against TransformerLens's GPT-2 and the course's reference.

Every module checker compares the learner's class on two kinds of input:
- the reference model's own sub-module (`reference_forward("blocks.0.attn")`, ...) on activations cached from
  the reference prompt, with the reference's parameters loaded by name;
- the course's reference component with random, non-trivial parameters (every bias and gain non-zero) in a
  small config chosen so that batch, pos, n_heads and d_head all differ, at lengths 5, n_ctx and 1.
The case that tells the catalogued mistakes apart best comes first, so a wrong variant is named on it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math

import einops
import torch as t
from torch import Tensor, nn

from utils.checks.core import (
    Case,
    NotImplementedYet,
    call_learner,
    check_module,
    check_names,
    checker,
    construct,
    describe,
    dtype_problem,
    fail,
    input_modified,
    load_params,
    passed,
    uses_passing,
)
from utils.checks.mistakes_ch02 import (
    ATTENTION_MISTAKES,
    CAUSAL_MASK_MISTAKES,
    EMBED_MISTAKES,
    LAYER_NORM_MISTAKES,
    MASK_IN_PLACE_HINT,
    MLP_MISTAKES,
    POS_EMBED_MISTAKES,
    STATED_ONLY,
    TRANSFORMER_BLOCK_MISTAKES,
    UNEMBED_MISTAKES,
)
from utils.checks.requirements import Hook, check_gradients, check_hooks, rows_note
from utils.reference import components as ref
from utils.reference_model import (
    course_config,
    reference_cache,
    reference_forward,
    reference_info,
    reference_params,
    resolve_kind,
)

CHAPTER = "02_components"
# A masked score must vanish after softmax. -inf (the IGNORE buffer) does so exactly; so does any score at or
# below -1e4, since exp(-1e4 - max) underflows to 0 in float32 for scores of any realistic size.
MASKED_AT_MOST = -1e4


def _per_reference(build):
    """Cache what `build` returns for each reference kind: the cases are deterministic, and building them
    (reference forwards, random parameters) would otherwise dominate a check's time. The cached tensors are
    never handed to learner code: `run_module` gives it clones."""
    cached = functools.cache(lambda kind, args, kwargs: build(*args, **dict(kwargs)))

    @functools.wraps(build)
    def get(*args, **kwargs):
        return cached(resolve_kind(), args, tuple(sorted(kwargs.items())))

    return get


def small_config(**overrides) -> ref.Config:
    """A config whose sizes all differ (d_model 48, 3 heads of 16, d_mlp 96, n_ctx 12, 500 tokens), so that
    an axis mix-up shows as a wrong shape, and small enough that a check takes milliseconds."""
    fields = dict(d_model=48, debug=False, layer_norm_eps=1e-5, d_vocab=500, init_range=0.02, n_ctx=12,
                  d_head=16, d_mlp=96, n_heads=3, n_layers=1)
    return ref.Config(**{**fields, **overrides})


def _random_params(Cls: type, cfg: ref.Config, seed: int) -> dict[str, Tensor]:
    """Non-trivial parameters for `Cls`: every weight, bias and gain random, so that none can be forgotten."""
    gen = t.Generator().manual_seed(seed)
    module = Cls(cfg)
    return {name: t.randn(p.shape, generator=gen) * (0.5 if p.dim() <= 1 else 0.2)
            + (1.0 if name.rsplit(".", 1)[-1] == "w" else 0.0)
            for name, p in module.named_parameters()}


def _reference_output(Cls: type, cfg: ref.Config, params: dict[str, Tensor], *inputs: Tensor) -> Tensor:
    module = Cls(cfg)
    module.load_state_dict({**module.state_dict(), **params})
    with t.no_grad():
        return module(*inputs)


def _random_case(Cls: type, cfg: ref.Config, label: str, x: Tensor, seed: int, params=None) -> Case:
    params = _random_params(Cls, cfg, seed) if params is None else params
    return Case(label, cfg, params, (x,), _reference_output(Cls, cfg, params, x))


def _gpt2_case(label: str, prefix: str, x: Tensor) -> Case:
    return Case(label, course_config(), reference_params(prefix), (x,), reference_forward(prefix)(x))


@functools.cache
def _names(Cls: type) -> list[str]:
    return list(Cls(small_config()).state_dict().keys())


def _require_class(Cls, what: str, exercise: str) -> None:
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. checks.{exercise}({what}); got {describe(Cls)}.")


def _gen(seed: int) -> t.Generator:
    return t.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------- stated beyond the values

LAYER_NORM_HOOKS = [Hook("hook_scale", "the scale sqrt(var + eps), shape [batch pos 1]"),
                    Hook("hook_normalized", "the output, after w and b")]
ATTENTION_HOOKS = [Hook("hook_q", "the queries x W_Q + b_Q, [batch pos n_heads d_head]"),
                   Hook("hook_k", "the keys x W_K + b_K, [batch pos n_heads d_head]"),
                   Hook("hook_v", "the values x W_V + b_V, [batch pos n_heads d_head]"),
                   Hook("hook_attn_scores", "the scaled scores after the causal mask, [batch n_heads query_pos key_pos]"),
                   Hook("hook_pattern", "the pattern: softmax of the masked scores over key_pos"),
                   Hook("hook_z", "the pattern-weighted values, [batch pos n_heads d_head]")]
MLP_HOOKS = [Hook("hook_pre", "the pre-activations x W_in + b_in, [batch pos d_mlp]"),
             Hook("hook_post", "the GELU of the pre-activations, [batch pos d_mlp]")]
BLOCK_HOOKS = [Hook("hook_resid_pre", "the block's input resid_pre"),
               Hook("hook_attn_out", "the attention output attn(ln1(resid_pre))"),
               Hook("hook_resid_mid", "resid_mid = resid_pre + attn_out"),
               Hook("hook_mlp_out", "the MLP output mlp(ln2(resid_mid))"),
               Hook("hook_resid_post", "resid_post = resid_mid + mlp_out")]


def _layer_norm_extras(cfg: ref.Config, x: Tensor):
    def extras(want: dict[str, Tensor]) -> dict[str, Tensor]:
        centred = x - x.mean(-1, keepdim=True)
        var = centred.pow(2).mean(-1, keepdim=True)
        return {"the variance, without eps and the square root": var,
                "var + eps, without the square root": var + cfg.layer_norm_eps,
                "the normalised vector before w and b": centred / want["hook_scale"]}
    return extras


def _attention_extras(cfg: ref.Config):
    def extras(want: dict[str, Tensor]) -> dict[str, Tensor]:
        q, k = want["hook_q"], want["hook_k"]
        raw = einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")
        scaled = raw / math.sqrt(cfg.d_head)
        return {"the scores before the causal mask": scaled, "the scores before scaling by 1/sqrt(d_head)": raw,
                "the softmax of the scores without the mask": scaled.softmax(-1)}
    return extras


def _block_extras(want: dict[str, Tensor]) -> dict[str, Tensor]:
    return {"resid_pre + mlp_out (the MLP output added to the block's input)": want["hook_resid_pre"] + want["hook_mlp_out"]}


def _loaded_module(Cls: type, case: Case, what: str) -> nn.Module:
    module = construct(Cls, case.cfg, what)
    load_params(module, case.params, what)
    return module.eval()


def _stated(Cls: type, RefCls: type, case: Case, what: str, hooks, extras) -> None:
    if hooks:
        check_hooks(_loaded_module(Cls, case, what), _loaded_module(RefCls, case, what), case.inputs, what, hooks,
                    case.label, extras)
    check_gradients(_loaded_module(Cls, case, what), _loaded_module(RefCls, case, what), case.inputs, what, case.label)


def _check_stated(Cls: type, RefCls: type, case: Case, what: str, hooks=(), extras=None, mistakes=()) -> None:
    """What the exercise states beyond the output values, on `case`: its hooks, then gradients to every parameter.
    A failure that a catalogued mistake fails with too, word for word, names that mistake."""
    try:
        _stated(Cls, RefCls, case, what, hooks, extras)
    except AssertionError as exc:
        for mistake in (m for m in mistakes if m.name in STATED_ONLY):  # the learner's values are right
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    _stated(mistake.impl, RefCls, case, what, hooks, extras)
            except AssertionError as other:
                if str(other) == str(exc):
                    raise AssertionError(f"{exc} This matches a known mistake, {mistake.name.replace('_', ' ')}: "
                                         f"{mistake.hint}") from exc.__cause__
            except Exception:  # a mistake that cannot run here matches nothing
                continue
        raise


def _check_values(Cls: type, **kwargs) -> int:
    """`check_module`, plus which rows of a batch differ when only some do ("first row for all" bugs)."""
    outputs: list = []

    def call(module, *inputs):
        out = module(*inputs)
        if type(module) is Cls:
            outputs.append(out)
        return out

    try:
        return check_module(Cls, call=call, **kwargs)
    except AssertionError as exc:
        case = kwargs["cases"][len(outputs) - 1] if 0 < len(outputs) <= len(kwargs["cases"]) else None
        note = rows_note(outputs[-1], case.expected) if case is not None and "of values differ" in str(exc) else ""
        if not note:
            raise
        raise AssertionError(f"{exc}{note}") from exc.__cause__


# --------------------------------------------------------------------------------------------- LayerNorm


@_per_reference
def _layer_norm_cases(gpt2_case: bool = True) -> list[Case]:
    cfg = course_config()
    _, _, cache = reference_cache()
    resid = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    gen = _gen(1)
    big_eps = ref.Config(**{**vars(cfg), "layer_norm_eps": 0.1})
    small = 0.05 * t.randn(3, 7, cfg.d_model, generator=gen) + 2.0  # small variance, non-zero mean
    batch = t.randn(3, 7, cfg.d_model, generator=gen)
    params = _random_params(ref.LayerNorm, cfg, seed=2)
    return [
        *([_gpt2_case("GPT-2's ln_final on the reference prompt", "ln_final", resid)] if gpt2_case else []),
        _random_case(ref.LayerNorm, big_eps, "small-variance inputs with layer_norm_eps=0.1", small, 2, params),
        _random_case(ref.LayerNorm, cfg, "a batch of 3 random sequences of length 7", batch, 2, params),
    ]


def _check_layer_norm(LayerNorm: type, gpt2_case: bool = True) -> int:
    cases = _layer_norm_cases(gpt2_case)
    n = _check_values(LayerNorm, what="LayerNorm", names=["w", "b"], cases=cases, mistakes=LAYER_NORM_MISTAKES,
                      hint="Normalise over the last dimension (d_model) only, with the biased variance and eps inside the square root.")
    batch = cases[-1]
    _check_stated(LayerNorm, ref.LayerNorm, batch, "LayerNorm", LAYER_NORM_HOOKS,
                  _layer_norm_extras(batch.cfg, batch.inputs[0]), LAYER_NORM_MISTAKES)
    return n


@checker("layer_norm", LAYER_NORM_MISTAKES, chapter=CHAPTER)
def layer_norm(LayerNorm: type) -> None:
    """LayerNorm equals GPT-2's final LayerNorm, including where epsilon dominates the variance."""
    n = _check_layer_norm(LayerNorm)
    passed(f"LayerNorm matches the reference ({reference_info().kind}) on {n} inputs")


# ------------------------------------------------------------------------------------------------ Embed


@_per_reference
def _token_cases(Cls: type, prefix: str, low_ids: bool) -> list[Case]:
    """Tokens for Embed and PosEmbed. With `low_ids`, ids stay below n_ctx, so that PosEmbed indexed by
    token id still runs (and is named) instead of failing with an index error."""
    cfg = small_config()
    gen = _gen(3)
    high = cfg.n_ctx if low_ids else cfg.d_vocab
    tokens, _, _ = reference_cache()
    return [
        _random_case(Cls, cfg, "3 random sequences of length 5 (random weights)",
                     t.randint(0, high, (3, 5), generator=gen), seed=4),
        _gpt2_case(f"GPT-2's {prefix} on the reference prompt", prefix, tokens),
        _random_case(Cls, cfg, f"2 sequences of length n_ctx={cfg.n_ctx}",
                     t.randint(0, high, (2, cfg.n_ctx), generator=gen), seed=5),
        _random_case(Cls, cfg, "4 sequences of length 1", t.randint(0, high, (4, 1), generator=gen), seed=6),
    ]


def _check_embed(Embed: type) -> int:
    _require_class(Embed, "Embed", "embed")
    cases = _token_cases(ref.Embed, "embed", False)
    n = _check_values(Embed, what="Embed", names=["W_E"], cases=cases,
                      mistakes=EMBED_MISTAKES, hint="Each token id selects one row of W_E: `self.W_E[tokens]`.")
    _check_stated(Embed, ref.Embed, cases[0], "Embed", mistakes=EMBED_MISTAKES)
    return n


@checker("embed", EMBED_MISTAKES, chapter=CHAPTER)
def embed(Embed: type) -> None:
    """Embed equals GPT-2's token embedding: row W_E[token] for every token."""
    n = _check_embed(Embed)
    passed(f"Embed matches the reference ({reference_info().kind}) on {n} inputs")


# --------------------------------------------------------------------------------------------- PosEmbed


def _check_pos_embed(PosEmbed: type) -> int:
    _require_class(PosEmbed, "PosEmbed", "pos_embed")
    cases = _token_cases(ref.PosEmbed, "pos_embed", True)
    n = _check_values(PosEmbed, what="PosEmbed", names=["W_pos"], cases=cases, mistakes=POS_EMBED_MISTAKES,
                      hint="Position p gets row W_pos[p] whatever its token, repeated for every sequence in the batch.")
    _check_stated(PosEmbed, ref.PosEmbed, cases[0], "PosEmbed", mistakes=POS_EMBED_MISTAKES)
    return n


@checker("pos_embed", POS_EMBED_MISTAKES, chapter=CHAPTER)
def pos_embed(PosEmbed: type) -> None:
    """PosEmbed equals GPT-2's learned positional embedding, for lengths 1 to n_ctx."""
    n = _check_pos_embed(PosEmbed)
    passed(f"PosEmbed matches the reference ({reference_info().kind}) on {n} inputs")


# ------------------------------------------------------------------------------------------- causal mask


def _future(scores: Tensor) -> Tensor:
    query_pos, key_pos = scores.shape[-2:]
    return t.ones(query_pos, key_pos, dtype=t.bool).triu(diagonal=1).expand(scores.shape)


def _same_masking(a: Tensor, b: Tensor) -> bool:
    """Equal as far as softmax can tell: the same entries masked (≤ -1e4), the others exactly equal."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        return False
    masked_a, masked_b = a <= MASKED_AT_MOST, b <= MASKED_AT_MOST
    if not t.equal(masked_a, masked_b):
        return False
    keep = ~masked_a & ~t.isnan(a) & ~t.isnan(b)
    return t.equal(a[keep].double(), b[keep].double()) and t.equal(t.isnan(a), t.isnan(b))


@_per_reference
def _mask_cases() -> list[tuple[str, ref.Config, Tensor]]:
    cfg, small = course_config(), small_config()
    gen = _gen(7)
    _, _, cache = reference_cache()
    q, k = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_k"]
    real = einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")
    return [
        ("random scores [batch=2, n_heads=3, 5, 5]", small, 3 * t.randn(2, 3, 5, 5, generator=gen)),
        ("GPT-2's layer-0 scores on the reference prompt", cfg, real / math.sqrt(cfg.d_head)),
        (f"random scores of length n_ctx={small.n_ctx}", small, 3 * t.randn(2, 3, small.n_ctx, small.n_ctx, generator=gen)),
        ("random scores of length 1", small, 3 * t.randn(4, 3, 1, 1, generator=gen)),
    ]


def _apply_mask(Cls: type, cfg: ref.Config, scores: Tensor, what: str, label: str, names=None) -> tuple[Tensor, Tensor]:
    module = construct(Cls, cfg, what)
    if names is not None:
        check_names(module, names, what)
    given = scores.clone()
    with t.no_grad():
        out = call_learner(f"{what}.apply_causal_mask", module.apply_causal_mask, given, context=label)
    return out, given


def _check_causal_mask(Attention: type) -> int:
    _require_class(Attention, "Attention", "causal_mask")
    what = "Attention.apply_causal_mask"
    cases = _mask_cases()
    for label, cfg, scores in cases:
        out, given = _apply_mask(Attention, cfg, scores, "Attention", label, names=_names(ref.Attention))
        if not t.equal(given, scores):
            input_modified(f"{what} modified its input attn_scores in place: {MASK_IN_PLACE_HINT}")

        def named() -> str:
            for mistake in CAUSAL_MASK_MISTAKES:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        wrong, _ = _apply_mask(mistake.impl, cfg, scores, mistake.name, label)
                except Exception:  # a mistake that cannot run on this input matches nothing
                    continue
                if _same_masking(out, wrong):
                    return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
            return " Fill the scores where key_pos > query_pos with self.IGNORE and return every other score unchanged."

        if not isinstance(out, Tensor):
            fail(f"{what}: returned {describe(out)} on {label}, expected a Tensor of shape {tuple(scores.shape)}.")
        if out.shape != scores.shape:
            fail(f"{what}: output shape {tuple(out.shape)} on {label}, expected {tuple(scores.shape)}." + named())
        if problem := dtype_problem(out, scores):
            fail(f"{what}: output dtype {str(out.dtype).replace('torch.', '')} on {label}, {problem}.")
        out = out.to(scores.dtype)  # float64 accepted (the course's dtype policy): the kept scores are float32 values
        if t.isnan(out).any():
            fail(f"{what}: output has NaN values on {label}." + named())
        future = _future(scores)
        masked = out <= MASKED_AT_MOST
        leaked = future & ~masked
        if leaked.any():
            b, h, qp, kp = (int(i) for i in leaked.nonzero()[0])
            fail(f"{what}: {int(leaked.sum())} future scores are not masked on {label} (first at {(b, h, qp, kp)}: "
                 f"query {qp} sees key {kp}, value {out[b, h, qp, kp].item():.5f}; expected ≤ {MASKED_AT_MOST:g} or -inf)." + named())
        hidden = ~future & masked
        if hidden.any():
            b, h, qp, kp = (int(i) for i in hidden.nonzero()[0])
            fail(f"{what}: {int(hidden.sum())} scores of keys at or before their query are masked on {label} "
                 f"(first at {(b, h, qp, kp)}: query {qp}, key {kp})." + named())
        if not t.equal(out[~future], scores[~future]):
            diff = (out[~future].double() - scores[~future].double()).abs().max().item()
            fail(f"{what}: the scores you keep must be returned unchanged, but they differ by up to {diff:.1e} "
                 f"on {label}. Change only the masked entries.")
    return len(cases)


@checker("causal_mask", CAUSAL_MASK_MISTAKES, chapter=CHAPTER)
def causal_mask(Attention: type) -> None:
    """Attention.apply_causal_mask hides exactly the keys after each query; it needs no forward.

    Masked scores may be -inf (self.IGNORE) or any value ≤ -1e4: softmax turns both into exactly 0."""
    n = _check_causal_mask(Attention)
    passed(f"Attention.apply_causal_mask masks exactly the future on {n} inputs")


# --------------------------------------------------------------------------------------------- Attention


@_per_reference
def _residual_cases(Cls: type, prefix: str, hook: str, seed: int, scale: float = 1.0, gpt2_case: bool = True) -> list[Case]:
    """Random [2, 5] (batch ≠ pos ≠ n_heads), the reference prompt (input: the cached activation `hook`),
    length n_ctx, and length 1. Without `gpt2_case`, only the small random ones: what a check run for another
    exercise needs (the reference-size module, 7M parameters in a GPT-2 block, is the costly part)."""
    _, _, cache = reference_cache()
    x_real = cache[hook]
    cfg = small_config()
    gen = _gen(seed)
    d = cfg.d_model
    cases = [
        _random_case(Cls, cfg, "2 random sequences of length 5 (random weights)", scale * t.randn(2, 5, d, generator=gen), seed),
        _random_case(Cls, cfg, f"2 random sequences of length n_ctx={cfg.n_ctx}", scale * t.randn(2, cfg.n_ctx, d, generator=gen), seed + 1),
        _random_case(Cls, cfg, "3 random sequences of length 1", scale * t.randn(3, 1, d, generator=gen), seed + 2),
    ]
    if not gpt2_case:
        return cases
    return [cases[0], _gpt2_case(f"GPT-2's {prefix} on the reference prompt", prefix, x_real), *cases[1:]]


def _uses_passing(Cls: type, check, what: str, parent: str, exercise: str) -> None:
    """Another exercise's check, run quietly on a sub-component, so a failure is reported where it belongs
    (`core.uses_passing`: a part whose only fault is modifying its input in place does not block `parent`)."""
    uses_passing(Cls, check, what, parent, exercise)


def _check_attention(Attention: type, gpt2_case: bool = True) -> int:
    _require_class(Attention, "Attention", "attention")
    _uses_passing(Attention, _check_causal_mask, "apply_causal_mask", "Attention.forward", "causal_mask")
    cases = _residual_cases(ref.Attention, "blocks.0.attn", "blocks.0.ln1.hook_out", seed=10, gpt2_case=gpt2_case)
    n = _check_values(Attention, what="Attention", names=_names(ref.Attention), cases=cases, mistakes=ATTENTION_MISTAKES,
                      hint="Compare each step with the equations: q, k, v with biases; scores / sqrt(d_head); mask; "
                           "softmax over keys; weighted sum of v; W_O summed over heads; b_O.")
    _check_stated(Attention, ref.Attention, cases[0], "Attention", ATTENTION_HOOKS, _attention_extras(cases[0].cfg),
                  ATTENTION_MISTAKES)
    return n


@checker("attention", ATTENTION_MISTAKES, chapter=CHAPTER)
def attention(Attention: type) -> None:
    """Attention equals GPT-2's causal multi-head self-attention (layer 0) and the reference with random weights."""
    n = _check_attention(Attention)
    passed(f"Attention matches the reference ({reference_info().kind}) on {n} inputs")


# --------------------------------------------------------------------------------------------------- MLP


def _gelu_probe(cfg: ref.Config, seed: int) -> Case:
    """W_out copies the first d_model hidden units to the output, so each output is one GELU value. Exact
    and tanh GELU differ by up to 5e-4 near x = ±2.7, where GELU itself is about -0.01: a clear relative gap
    that a random W_out would average away below the tolerance."""
    gen = _gen(seed)
    params = _random_params(ref.MLP, cfg, seed)
    params["W_in"] = 0.5 * t.randn(cfg.d_model, cfg.d_mlp, generator=gen)
    params["W_out"] = t.eye(cfg.d_mlp, cfg.d_model)
    params["b_out"] = t.zeros(cfg.d_model)
    x = t.randn(2, 5, cfg.d_model, generator=gen)
    return Case("pre-activations around ±2.7, where the two GELUs differ most", cfg, params, (x,),
                _reference_output(ref.MLP, cfg, params, x))


@_per_reference
def _mlp_cases(gpt2_case: bool = True) -> list[Case]:
    cases = _residual_cases(ref.MLP, "blocks.0.mlp", "blocks.0.ln2.hook_out", seed=20, gpt2_case=gpt2_case)
    return [cases[0], _gelu_probe(small_config(), seed=23), *cases[1:]]


def _check_mlp(MLP: type, gpt2_case: bool = True) -> int:
    _require_class(MLP, "MLP", "mlp")
    cases = _mlp_cases(gpt2_case)
    n = _check_values(MLP, what="MLP", names=_names(ref.MLP), cases=cases, mistakes=MLP_MISTAKES,
                      hint="gelu_tanh(x @ W_in + b_in) @ W_out + b_out, with F.gelu(..., approximate=\"tanh\").")
    _check_stated(MLP, ref.MLP, cases[0], "MLP", MLP_HOOKS, mistakes=MLP_MISTAKES)
    return n


@checker("mlp", MLP_MISTAKES, chapter=CHAPTER)
def mlp(MLP: type) -> None:
    """MLP equals GPT-2's MLP (layer 0), with the tanh GELU, on real and random inputs."""
    n = _check_mlp(MLP)
    passed(f"MLP matches the reference ({reference_info().kind}) on {n} inputs")


# ----------------------------------------------------------------------------------------- TransformerBlock

_SUB_CHECKS = (("ln1", _check_layer_norm, "layer_norm"), ("attn", _check_attention, "attention"),
               ("ln2", _check_layer_norm, "layer_norm"), ("mlp", _check_mlp, "mlp"))


def _check_transformer_block(TransformerBlock: type) -> int:
    _require_class(TransformerBlock, "TransformerBlock", "transformer_block")
    block = construct(TransformerBlock, small_config(), "TransformerBlock")
    checked: set[type] = set()
    for attr, check, exercise in _SUB_CHECKS:
        sub = getattr(block, attr, None)
        if not isinstance(sub, nn.Module):
            fail(f"TransformerBlock: self.{attr} is {describe(sub)}, expected a module; keep the given __init__.")
        if type(sub) not in checked:  # on the small random cases: the block's own GPT-2 case covers the real size
            _uses_passing(type(sub), functools.partial(check, gpt2_case=False), type(sub).__name__, "TransformerBlock", exercise)
            checked.add(type(sub))
    last = course_config().n_layers - 1
    cases = _residual_cases(ref.TransformerBlock, f"blocks.{last}", f"blocks.{last}.hook_resid_pre", seed=30, scale=2.0)
    n = _check_values(TransformerBlock, what="TransformerBlock", names=_names(ref.TransformerBlock), cases=cases,
                      mistakes=TRANSFORMER_BLOCK_MISTAKES,
                      hint="resid_mid = resid_pre + attn(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)).")
    _check_stated(TransformerBlock, ref.TransformerBlock, cases[0], "TransformerBlock", BLOCK_HOOKS, _block_extras,
                  TRANSFORMER_BLOCK_MISTAKES)
    return n


@checker("transformer_block", TRANSFORMER_BLOCK_MISTAKES, chapter=CHAPTER)
def transformer_block(TransformerBlock: type) -> None:
    """TransformerBlock equals GPT-2's last block: pre-LN attention and MLP, each added to the residual stream."""
    n = _check_transformer_block(TransformerBlock)
    passed(f"TransformerBlock matches the reference ({reference_info().kind}) on {n} inputs")


# ----------------------------------------------------------------------------------------------- Unembed


def _check_unembed(Unembed: type) -> int:
    _require_class(Unembed, "Unembed", "unembed")
    # A small random case first: its W_U is independent of W_E and its b_U non-zero, so it catches W_E.T in place
    # of W_U (by the shape error a GPT-2-sized W_E.T raises there) and a missing b_U, which GPT-2's own tied,
    # zero-bias unembedding cannot; and a mistake is named there without building reference-size modules.
    cases = _residual_cases(ref.Unembed, "unembed", "ln_final.hook_out", seed=40)
    n = _check_values(Unembed, what="Unembed", names=["W_U", "b_U"], cases=cases, mistakes=UNEMBED_MISTAKES,
                      hint="logits = x @ W_U + b_U, for every position.")
    _check_stated(Unembed, ref.Unembed, cases[0], "Unembed", mistakes=UNEMBED_MISTAKES)
    return n


@checker("unembed", UNEMBED_MISTAKES, chapter=CHAPTER)
def unembed(Unembed: type) -> None:
    """Unembed equals GPT-2's unembedding, and adds its bias (non-zero in the random case)."""
    n = _check_unembed(Unembed)
    passed(f"Unembed matches the reference ({reference_info().kind}) on {n} inputs")

