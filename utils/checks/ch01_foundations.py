"""Checkers for chapter 01: tokens and logits, einops, attention maths, positions, the residual stream.

Every exercise is a function. `_check_function` runs it on copies of each case's inputs, then checks
exceptions, in-place modification, shape, dtype (float64 accepted for floats), NaN/inf and values, naming the
catalogued mistake whose output equals the learner's, or else saying where the output differs by the
dimension names of the exercise's output.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch as t
import torch.nn.functional as F
from torch import Tensor

from utils.checks import mistakes_ch01 as M
from utils.checks.core import (Mistake, assert_matches, call_learner, checker, describe, fail, input_modified, learner_part,
                               passed, snapshot, uses_passing)
from utils.reference import foundations as ref

CHAPTER = "01_foundations"


@dataclass
class FnCase:
    """One call of a function exercise: a label for messages, the arguments and the expected output."""

    label: str
    args: tuple
    expected: Any
    kwargs: dict = field(default_factory=dict)
    dims: tuple[str, ...] | None = None  # the output's dimension names, for messages


def _copies(args: Sequence[Any]) -> tuple:
    return tuple(a.clone() if isinstance(a, Tensor) else a for a in args)


def _quietly(fn: Callable, *args, **kwargs) -> Any:
    """Run a catalogued mistake: it may fail on some inputs, which only means it matches nothing there."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return fn(*args, **kwargs)
    except Exception:  # a wrong variant that cannot run on this input is simply not the learner's mistake
        return None


def _modifies_input(impl: Callable, args: Sequence[Any], kwargs: dict, index: int) -> bool:
    copies = _copies(args)
    _quietly(impl, *copies, **kwargs)
    return isinstance(args[index], Tensor) and not t.equal(args[index], copies[index])


def _assert_not_modified(before: list, after: Sequence[Any], what: str, names: Sequence[str], mistakes: Sequence[Mistake],
                         case: FnCase | None = None) -> None:
    for index, (old, new, name) in enumerate(zip(before, after, names)):
        if old is not None and not t.equal(old, new):
            same = next((m for m in mistakes if case is not None and _modifies_input(m.impl, case.args, case.kwargs, index)), None)
            extra = f" This matches a known mistake, {same.name.replace('_', ' ')}: {same.hint}" if same else ""
            input_modified(f"{what} modified its input `{name}` in place; callers still need it. Use out-of-place "
                           f"operations (`x = x - m`, `masked_fill`), not `x -= m` or `masked_fill_`.{extra}")
            return


def _check_function(
    fn: Callable,
    *,
    what: str,
    arg_names: Sequence[str],
    cases: Sequence[FnCase],
    mistakes: Sequence[Mistake],
    normalize: Callable[[Any], Any] = lambda out: out,
    check_dtype: bool = True,
    hint: str = "",
    dims: tuple[str, ...] | None = None,
) -> int:
    """Compare `fn` with each case's expected tensor; returns the number of cases."""
    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass your function itself, e.g. checks.{what}({what}); got {describe(fn)}.")
    for case in cases:
        args = _copies(case.args)
        before = snapshot(*args)
        out = call_learner(what, fn, *args, context=case.label, **case.kwargs)
        _assert_not_modified(before, args, what, arg_names, mistakes, case)

        def mistake_outputs(case=case):
            return [(m, normalize(_quietly(m.impl, *_copies(case.args), **case.kwargs))) for m in mistakes]

        assert_matches(normalize(out), case.expected, what, context=case.label, mistakes=mistake_outputs,
                       hint=hint, check_dtype=check_dtype, dims=case.dims or dims)
    return len(cases)


def _gen(seed: int) -> t.Generator:
    return t.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------- 1. inputs and outputs


def _is_string_lists(out: Any) -> bool:
    return isinstance(out, list) and all(isinstance(row, list) and all(isinstance(s, str) for s in row) for row in out)


@checker("next_token_strings", M.NEXT_TOKEN_STRINGS_MISTAKES, chapter=CHAPTER)
def next_token_strings(fn: Callable) -> None:
    """The k most likely next tokens after the last position, decoded, on the reference model's logits and on
    random logits whose rankings differ between positions and rows."""
    from utils.reference_model import reference_cache
    from utils.tokenizer import gpt2_tokenizer

    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass your function itself, e.g. checks.next_token_strings(next_token_strings); got {describe(fn)}.")
    tokenizer = gpt2_tokenizer()
    _, ref_logits, _ = reference_cache()
    random_logits = 3 * t.randn(3, 4, tokenizer.vocab_size, generator=_gen(11))
    cases = [("the reference model's logits, k=5", ref_logits, 5), ("random logits for 3 sequences, k=3", random_logits, 3),
             ("random logits for 3 sequences, k=1", random_logits, 1)]
    for label, logits, k in cases:
        expected = ref.next_token_strings(logits, tokenizer, k)
        logits_copy = logits.clone()
        out = call_learner("next_token_strings", fn, logits_copy, tokenizer, k, context=label)
        _assert_not_modified([logits], [logits_copy], "next_token_strings", ["logits"], ())
        if out == expected:
            continue
        found = next((m for m in M.NEXT_TOKEN_STRINGS_MISTAKES if _quietly(m.impl, logits.clone(), tokenizer, k) == out), None)
        named = f" This matches a known mistake, {found.name.replace('_', ' ')}: {found.hint}" if found else ""
        if not _is_string_lists(out) or len(out) != len(expected) or any(len(row) != k for row in out):
            fail(f"next_token_strings: on {label}, expected a list of {len(expected)} lists of {k} strings, got "
                 f"{str(out)[:120]}.{named}")
        row = next(i for i, (a, b) in enumerate(zip(out, expected)) if a != b)
        fail(f"next_token_strings: on {label}, sequence {row}: got {out[row]}, expected {expected[row]}.{named}")
    passed("next_token_strings gives the most likely next tokens on 3 inputs")


@checker("token_log_probs", M.TOKEN_LOG_PROBS_MISTAKES, chapter=CHAPTER)
def token_log_probs(fn: Callable) -> None:
    """Log-probabilities of each next token on the reference model's output, and on logits so spread out
    that the chosen tokens' probabilities underflow to 0 in float32 (log_softmax stays finite)."""
    from utils.reference_model import reference_cache

    tokens, logits, _ = reference_cache()
    spread = 100 * t.randn(2, 6, 11, generator=_gen(12))
    # Each next token is the least likely one: probability ~e^-400, which softmax rounds to 0.
    unlikely = t.cat([t.zeros(2, 1, dtype=t.long), spread[:, :-1].argmin(-1)], dim=1)
    cases = [
        FnCase("the reference model's logits and tokens", (logits, tokens), ref.token_log_probs(logits, tokens)),
        FnCase("spread-out logits where the next tokens are very unlikely", (spread, unlikely), ref.token_log_probs(spread, unlikely)),
    ]
    n = _check_function(fn, what="token_log_probs", arg_names=["logits", "tokens"], cases=cases,
                        dims=("batch", "pos"), mistakes=M.TOKEN_LOG_PROBS_MISTAKES,
                        hint="Pair logits[:, :-1] with tokens[:, 1:] and use log_softmax over the vocabulary.")
    passed(f"token_log_probs matches the reference on {n} inputs")


# ------------------------------------------------------------------------------------------------- 2. einops


@checker("split_heads", M.SPLIT_HEADS_MISTAKES, chapter=CHAPTER)
def split_heads(fn: Callable) -> None:
    """d_model split into consecutive chunks, one per head, on shapes where every axis has a different size."""
    gen = _gen(21)
    cases = []
    for label, shape, n_heads in [("x [2, 5, 12] with n_heads=3", (2, 5, 12), 3), ("x [1, 3, 24] with n_heads=4", (1, 3, 24), 4)]:
        x = t.randn(shape, generator=gen)
        cases.append(FnCase(label, (x, n_heads), ref.split_heads(x, n_heads)))
    n = _check_function(fn, what="split_heads", arg_names=["x", "n_heads"], cases=cases,
                        dims=("batch", "pos", "n_heads", "d_head"), mistakes=M.SPLIT_HEADS_MISTAKES)
    passed(f"split_heads matches the reference on {n} inputs")


@checker("merge_heads", M.MERGE_HEADS_MISTAKES, chapter=CHAPTER)
def merge_heads(fn: Callable) -> None:
    """Heads concatenated in order: merge_heads undoes split_heads."""
    gen = _gen(22)
    cases = []
    for label, shape in [("z [2, 5, 3, 4]", (2, 5, 3, 4)), ("z [1, 3, 4, 6]", (1, 3, 4, 6))]:
        z = t.randn(shape, generator=gen)
        cases.append(FnCase(label, (z,), ref.merge_heads(z)))
    n = _check_function(fn, what="merge_heads", arg_names=["z"], cases=cases,
                        dims=("batch", "pos", "d_model"), mistakes=M.MERGE_HEADS_MISTAKES)
    passed(f"merge_heads matches the reference on {n} inputs")


@checker("project_heads", M.PROJECT_HEADS_MISTAKES, chapter=CHAPTER)
def project_heads(fn: Callable) -> None:
    """x @ W[h] for every head, on shapes where n_heads, d_head, d_model and pos all differ."""
    gen = _gen(23)
    cases = []
    for label, (batch, pos, d_model, n_heads, d_head) in [("x [2, 5, 12], W [3, 12, 4]", (2, 5, 12, 3, 4)),
                                                          ("x [1, 3, 8], W [2, 8, 6]", (1, 3, 8, 2, 6))]:
        x, W = t.randn(batch, pos, d_model, generator=gen), t.randn(n_heads, d_model, d_head, generator=gen)
        cases.append(FnCase(label, (x, W), ref.project_heads(x, W)))
    n = _check_function(fn, what="project_heads", arg_names=["x", "W"], cases=cases,
                        dims=("batch", "pos", "n_heads", "d_head"), mistakes=M.PROJECT_HEADS_MISTAKES)
    passed(f"project_heads matches the reference on {n} inputs")


@checker("combine_heads", M.COMBINE_HEADS_MISTAKES, chapter=CHAPTER)
def combine_heads(fn: Callable) -> None:
    """sum_h z[h] @ W_O[h], on shapes where every axis has a different size."""
    gen = _gen(24)
    cases = []
    for label, (batch, pos, n_heads, d_head, d_model) in [("z [2, 5, 3, 4], W_O [3, 4, 12]", (2, 5, 3, 4, 12)),
                                                          ("z [1, 3, 2, 6], W_O [2, 6, 12]", (1, 3, 2, 6, 12))]:
        z, W_O = t.randn(batch, pos, n_heads, d_head, generator=gen), t.randn(n_heads, d_head, d_model, generator=gen)
        cases.append(FnCase(label, (z, W_O), ref.combine_heads(z, W_O)))
    n = _check_function(fn, what="combine_heads", arg_names=["z", "W_O"], cases=cases,
                        dims=("batch", "pos", "d_model"), mistakes=M.COMBINE_HEADS_MISTAKES)
    passed(f"combine_heads matches the reference on {n} inputs")


@checker("pairwise_sq_distances", M.PAIRWISE_SQ_DISTANCES_MISTAKES, chapter=CHAPTER)
def pairwise_sq_distances(fn: Callable) -> None:
    """All squared distances between rows, with pos != d_model so that a wrong reduction shows in the shape."""
    gen = _gen(25)
    cases = []
    for label, shape in [("x [10, 16]", (10, 16)), ("x [7, 3]", (7, 3))]:
        x = t.randn(shape, generator=gen)
        cases.append(FnCase(label, (x,), ref.pairwise_sq_distances(x)))
    n = _check_function(fn, what="pairwise_sq_distances", arg_names=["x"], cases=cases,
                        dims=("query_pos", "key_pos"), mistakes=M.PAIRWISE_SQ_DISTANCES_MISTAKES)
    passed(f"pairwise_sq_distances matches the reference on {n} inputs")


# ------------------------------------------------------------------------------------------------ 3. attention


@checker("stable_softmax", M.STABLE_SOFTMAX_MISTAKES, chapter=CHAPTER)
def stable_softmax(fn: Callable) -> None:
    """Softmax along `dim`: a square matrix (exposes a max without keepdim), logits of ±1000 in rows far
    apart (exposes overflow and a global maximum) and a 3-d tensor with dim=1."""
    gen = _gen(31)
    square = 3 * t.randn(5, 5, generator=gen)
    extreme = t.tensor([[1000.0, -1000.0, 999.0, 0.0, 500.0, -3.0],
                        [-1000.0, -1001.0, -1003.0, -1000.5, -1010.0, -1002.0],
                        [0.5, -0.2, 1.0, 2.0, -1.0, 0.0]])
    cube = 2 * t.randn(2, 3, 7, generator=gen)
    cases = [
        FnCase("a random 5×5 matrix, dim=-1", (square,), ref.stable_softmax(square, dim=-1), {"dim": -1}),
        FnCase("logits of ±1000, one row entirely near -1000, dim=-1", (extreme,), ref.stable_softmax(extreme, dim=-1), {"dim": -1}),
        FnCase("a [2, 3, 7] tensor with dim=1", (cube,), ref.stable_softmax(cube, dim=1), {"dim": 1}),
    ]
    n = _check_function(fn, what="stable_softmax", arg_names=["x"], cases=cases, mistakes=M.STABLE_SOFTMAX_MISTAKES,
                        hint="Subtract x.amax(dim, keepdim=True), exponentiate, divide by the sum along dim.")
    passed(f"stable_softmax matches the reference on {n} inputs, including logits of ±1000")


@checker("attention_scores", M.ATTENTION_SCORES_MISTAKES, chapter=CHAPTER)
def attention_scores(fn: Callable) -> None:
    """q·k/sqrt(d_head) per head, for self-attention and for fewer queries than keys."""
    gen = _gen(32)
    cases = []
    for label, (batch, n_query, n_key, n_heads, d_head) in [("q, k [2, 5, 3, 8]", (2, 5, 5, 3, 8)),
                                                            ("q [1, 3, 2, 4] and k [1, 6, 2, 4]", (1, 3, 6, 2, 4))]:
        q = t.randn(batch, n_query, n_heads, d_head, generator=gen)
        k = t.randn(batch, n_key, n_heads, d_head, generator=gen)
        cases.append(FnCase(label, (q, k), ref.attention_scores(q, k)))
    n = _check_function(fn, what="attention_scores", arg_names=["q", "k"], cases=cases,
                        dims=("batch", "n_heads", "query_pos", "key_pos"), mistakes=M.ATTENTION_SCORES_MISTAKES)
    passed(f"attention_scores matches the reference on {n} inputs")


def _masked_as_minus_inf(out: Any) -> Any:
    """Any score at or below -1e4 counts as masked: -inf, -1e9 and TransformerLens's -1e5 all pass."""
    if isinstance(out, Tensor) and out.is_floating_point():
        return t.where(out <= -1e4, t.full_like(out, float("-inf")), out)
    return out


@checker("mask_future", M.MASK_FUTURE_MISTAKES, chapter=CHAPTER)
def mask_future(fn: Callable) -> None:
    """Future keys (key_pos > query_pos) masked, everything else untouched, the input unchanged."""
    gen = _gen(33)
    cases = []
    for label, shape in [("scores [2, 3, 5, 5]", (2, 3, 5, 5)), ("scores [1, 2, 4, 4]", (1, 2, 4, 4))]:
        scores = t.randn(shape, generator=gen)
        cases.append(FnCase(label, (scores,), ref.mask_future(scores)))
    n = _check_function(fn, what="mask_future", arg_names=["attn_scores"], cases=cases,
                        dims=("batch", "n_heads", "query_pos", "key_pos"), mistakes=M.MASK_FUTURE_MISTAKES,
                        normalize=_masked_as_minus_inf)
    passed(f"mask_future masks exactly the future keys on {n} inputs")


@checker("sdp_attention", M.SDP_ATTENTION_MISTAKES, chapter=CHAPTER, requires=("mask_future", "stable_softmax"))
def sdp_attention(fn: Callable) -> None:
    """Equal to torch.nn.functional.scaled_dot_product_attention, with and without the causal mask. Your own
    mask_future and stable_softmax, when sdp_attention calls them, must pass their checks first."""
    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass your function itself, e.g. checks.sdp_attention(sdp_attention); got {describe(fn)}.")
    for part, check in (("mask_future", mask_future), ("stable_softmax", stable_softmax)):
        used = learner_part(fn, part)
        if used is not None:
            uses_passing(used, check, part, "sdp_attention", part)
    gen = _gen(34)
    cases = []
    for label, shape, causal in [("q, k, v [2, 3, 5, 8], causal=True", (2, 3, 5, 8), True),
                                 ("q, k, v [2, 3, 5, 8], causal=False", (2, 3, 5, 8), False),
                                 ("q, k, v [1, 2, 7, 4], causal=True", (1, 2, 7, 4), True)]:
        q, k, v = (t.randn(shape, generator=gen) for _ in range(3))
        cases.append(FnCase(label, (q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=causal), {"causal": causal}))
    n = _check_function(fn, what="sdp_attention", arg_names=["q", "k", "v"], cases=cases,
                        dims=("batch", "n_heads", "query_pos", "d_head"), mistakes=M.SDP_ATTENTION_MISTAKES)
    passed(f"sdp_attention matches torch's scaled_dot_product_attention on {n} inputs")


# ------------------------------------------------------------------------------------------------ 4. positions


def _one_head(seed: int, d_model: int, causal: bool, positions: Tensor | None = None, sign: float = 1.0) -> Callable[[Tensor], Tensor]:
    """A fixed single-head self-attention over [batch, pos, d_model], optionally with positions added."""
    gen = _gen(seed)
    W_Q, W_K, W_V = (t.randn(1, 1, d_model, d_model, generator=gen) / math.sqrt(d_model) for _ in range(3))

    def attend(x: Tensor) -> Tensor:
        if positions is not None:
            x = x + positions[: x.shape[1]]
        q, k, v = (x[:, None] @ W for W in (W_Q, W_K, W_V))
        return sign * ref.sdp_attention(q, k, v, causal=causal)[:, 0]

    # the same function as data, for grading outside the learner's process (utils/grading/trusted.py)
    attend.probe_spec = {"W_Q": W_Q, "W_K": W_K, "W_V": W_V, "positions": positions, "causal": causal, "sign": sign}
    return attend


def _as_scalar(out: Any) -> Any:
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return t.tensor(float(out))
    if isinstance(out, Tensor) and out.numel() == 1:
        return out.detach().reshape(()).float()
    return out


@checker("equivariance_error", M.EQUIVARIANCE_ERROR_MISTAKES, chapter=CHAPTER)
def equivariance_error(fn: Callable) -> None:
    """The gap is rounding error for attention without positions and large with a mask or positions; the
    permutation is not its own inverse, so an inverted permutation shows."""
    d_model, n_pos = 16, 6
    x = t.randn(2, n_pos, d_model, generator=_gen(41))
    perm = t.tensor([2, 0, 5, 1, 3, 4])  # its inverse is [1, 3, 0, 4, 5, 2]
    attends = [
        ("attention without positions or mask", _one_head(42, d_model, causal=False)),
        ("causal attention", _one_head(43, d_model, causal=True)),
        ("attention with sinusoidal positions", _one_head(44, d_model, causal=False, positions=ref.sinusoidal_positions(n_pos, d_model))),
        ("causal attention with its output negated", _one_head(43, d_model, causal=True, sign=-1.0)),
    ]
    cases = [FnCase(label, (attend, x, perm), ref.equivariance_error(attend, x, perm)) for label, attend in attends]
    n = _check_function(fn, what="equivariance_error", arg_names=["attend", "x", "perm"], cases=cases,
                        mistakes=M.EQUIVARIANCE_ERROR_MISTAKES, normalize=_as_scalar, check_dtype=False)
    passed(f"equivariance_error matches the reference on {n} attention functions")


@checker("sinusoidal_positions", M.SINUSOIDAL_POSITIONS_MISTAKES, chapter=CHAPTER)
def sinusoidal_positions(fn: Callable) -> None:
    """The original Transformer's encodings for a few sizes, interleaved sin/cos from position 0."""
    cases = [FnCase(f"n_ctx={n_ctx}, d_model={d_model}", (n_ctx, d_model), ref.sinusoidal_positions(n_ctx, d_model))
             for n_ctx, d_model in [(50, 16), (7, 6), (128, 64)]]
    n = _check_function(fn, what="sinusoidal_positions", arg_names=["n_ctx", "d_model"], cases=cases,
                        dims=("pos", "d_model"), mistakes=M.SINUSOIDAL_POSITIONS_MISTAKES)
    passed(f"sinusoidal_positions matches the original Transformer's encodings for {n} sizes")


@checker("cosine_similarity_matrix", M.COSINE_SIMILARITY_MATRIX_MISTAKES, chapter=CHAPTER)
def cosine_similarity_matrix(fn: Callable) -> None:
    """Cosine similarity of every pair of rows, on rows of very different lengths."""
    gen = _gen(45)
    cases = []
    for label, shape in [("vectors [8, 16]", (8, 16)), ("vectors [5, 3]", (5, 3))]:
        lengths = t.rand(shape[0], 1, generator=gen) * 4 + 0.5  # rows of different lengths expose a missing norm
        vectors = t.randn(shape, generator=gen) * lengths
        cases.append(FnCase(label, (vectors,), ref.cosine_similarity_matrix(vectors)))
    n = _check_function(fn, what="cosine_similarity_matrix", arg_names=["vectors"], cases=cases,
                        mistakes=M.COSINE_SIMILARITY_MATRIX_MISTAKES)
    passed(f"cosine_similarity_matrix matches the reference on {n} inputs")


# ------------------------------------------------------------------------------------------- 5. residual stream


def _cache_copy(cache):
    """A fresh ActivationCache with cloned tensors: the learner's code can neither see nor change the original."""
    from transformer_lens import ActivationCache

    return ActivationCache({name: value.clone() for name, value in cache.items()}, cache.model)


@checker("residual_components", M.RESIDUAL_COMPONENTS_MISTAKES, chapter=CHAPTER)
def residual_components(fn: Callable) -> None:
    """The parts of the reference model's stream before each layer; they must also add up to the cached stream."""
    from utils.reference_model import reference_cache, reference_gpt2, reference_info

    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass your function itself, e.g. checks.residual_components(residual_components); got {describe(fn)}.")
    _, _, cache = reference_cache()
    n_layers = reference_gpt2().cfg.n_layers
    for layer in sorted({0, 1, n_layers}):
        label = f"the reference cache with layer={layer}"
        mine = _cache_copy(cache)
        out = call_learner("residual_components", fn, mine, layer, context=label)
        changed = [name for name, value in cache.items() if not t.equal(value, mine[name])]
        if changed:
            fail(f"residual_components modified the cache in place ({changed[0]}); read from it without writing.")
        expected = ref.residual_components(cache, layer)

        def mistake_outputs(layer=layer):
            return [(m, _quietly(m.impl, _cache_copy(cache), layer)) for m in M.RESIDUAL_COMPONENTS_MISTAKES]

        assert_matches(out, expected, "residual_components", context=label, mistakes=mistake_outputs,
                       dims=("component", "batch", "pos", "d_model"),
                       hint="Stack [embed, pos_embed, attn_out 0, mlp_out 0, ...] for the blocks before `layer`.")
        stream = cache[f"blocks.{layer}.hook_resid_pre"] if layer < n_layers else cache[f"blocks.{n_layers - 1}.hook_resid_post"]
        assert_matches(out.sum(0), stream, "residual_components (summed)", context=label,
                       hint="Your components match the reference but do not add up to the cached stream: please report this.")
    passed(f"residual_components decomposes the stream ({reference_info().kind}) before layers 0, 1 and after the last; the parts add up")


@checker("accumulated_resid", M.ACCUMULATED_RESID_MISTAKES, chapter=CHAPTER)
def accumulated_resid(fn: Callable) -> None:
    """Running sums equal to the reference model's own cached streams, and on random components of 3 layers."""
    from utils.reference_model import reference_cache, reference_gpt2

    _, _, cache = reference_cache()
    n_layers = reference_gpt2().cfg.n_layers
    streams = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n_layers)]
    cached = t.stack(streams + [cache[f"blocks.{n_layers - 1}.hook_resid_post"]])
    random_parts = t.randn(2 + 2 * 3, 2, 4, 8, generator=_gen(51))
    cases = [
        FnCase("the reference model's components (compared with its cached resid_pre / resid_post)",
               (ref.residual_components(cache, n_layers),), cached),
        FnCase("random components of a 3-layer model, [8, 2, 4, 8]", (random_parts,), ref.accumulated_resid(random_parts)),
    ]
    n = _check_function(fn, what="accumulated_resid", arg_names=["components"], cases=cases,
                        dims=("layer", "batch", "pos", "d_model"), mistakes=M.ACCUMULATED_RESID_MISTAKES,
                        hint="Entry L is the sum of the first 2 + 2L components: `components.cumsum(0)[1::2]`.")
    passed(f"accumulated_resid rebuilds the cached stream at every layer and matches the reference on {n} inputs")
