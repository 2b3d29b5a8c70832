"""Realistic wrong versions of chapter 01's functions, each with the hint it earns.

Each entry is written the way a learner would write it; the tests feed every one to its checker and expect
its hint in the message.
"""

from __future__ import annotations

import math

import einops
import torch as t

from utils.checks.core import Mistake
from utils.reference import foundations as ref

# ------------------------------------------------------------------------------------------- 1. inputs, outputs


def _first_position(logits, tokenizer, k=5):
    ids = logits[:, 0].topk(k, dim=-1).indices
    return [[tokenizer.decode([i]) for i in row] for row in ids.tolist()]


def _ascending(logits, tokenizer, k=5):
    ids = logits[:, -1].argsort(dim=-1)[:, :k]
    return [[tokenizer.decode([i]) for i in row] for row in ids.tolist()]


def _raw_token_strings(logits, tokenizer, k=5):
    ids = logits[:, -1].topk(k, dim=-1).indices
    return [tokenizer.convert_ids_to_tokens(row) for row in ids.tolist()]


def _decoded_together(logits, tokenizer, k=5):
    ids = logits[:, -1].topk(k, dim=-1).indices
    return [tokenizer.decode(row) for row in ids.tolist()]


def _softmax_over_positions(logits, tokenizer, k=5):
    probs = logits.softmax(dim=1)
    ids = probs[:, -1].topk(k, dim=-1).indices
    return [[tokenizer.decode([i]) for i in row] for row in ids.tolist()]


NEXT_TOKEN_STRINGS_MISTAKES = [
    Mistake("first_position", _first_position,
            "you used the prediction after the first position (`logits[:, 0]`); the next token is predicted at the last position, `logits[:, -1]`."),
    Mistake("ascending_order", _ascending,
            "you took the k *least* likely tokens: sort descending (`topk`, or `argsort(descending=True)`)."),
    Mistake("raw_token_strings", _raw_token_strings,
            "these are byte-level token strings (`Ġ` marks a space): decode each id with `tokenizer.decode([id])`."),
    Mistake("decoded_together", _decoded_together,
            "you decoded the k ids into one string; return a list of k strings, one `tokenizer.decode([id])` per id."),
    Mistake("softmax_over_positions", _softmax_over_positions,
            "softmax over positions (dim=1) changes the ranking; softmax (if any) runs over the vocabulary, dim=-1."),
]


def _no_shift(logits, tokens):
    return logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0]


def _shift_backwards(logits, tokens):
    return logits[:, 1:].log_softmax(-1).gather(-1, tokens[:, :-1, None])[..., 0]


def _probabilities(logits, tokens):
    return logits[:, :-1].softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]


def _log_of_softmax(logits, tokens):
    return logits[:, :-1].softmax(-1).log().gather(-1, tokens[:, 1:, None])[..., 0]


def _over_positions(logits, tokens):
    return logits[:, :-1].log_softmax(1).gather(-1, tokens[:, 1:, None])[..., 0]


def _negated(logits, tokens):
    return -ref.token_log_probs(logits, tokens)


TOKEN_LOG_PROBS_MISTAKES = [
    Mistake("no_shift", _no_shift,
            "position i's logits predict token i+1: use `logits[:, :-1]` with `tokens[:, 1:]` (pos - 1 values per sequence)."),
    Mistake("shifted_the_wrong_way", _shift_backwards,
            "you paired logits at i+1 with token i; pair `logits[:, :-1]` with `tokens[:, 1:]`."),
    Mistake("probabilities_not_logs", _probabilities, "these are probabilities: use `log_softmax`, not `softmax`."),
    Mistake("log_of_softmax", _log_of_softmax,
            "`softmax(...).log()` gives -inf when a probability rounds to 0: use `log_softmax(dim=-1)`."),
    Mistake("normalised_over_positions", _over_positions,
            "normalise over the vocabulary (`log_softmax(dim=-1)`), not over positions."),
    Mistake("negated", _negated, "these are negative log-probabilities (the loss): drop the minus sign."),
]

# -------------------------------------------------------------------------------------------------- 2. einops


def _head_axis_inside(x, n_heads):
    return einops.rearrange(x, "batch pos (d_head n_heads) -> batch pos n_heads d_head", n_heads=n_heads)


def _heads_before_positions(x, n_heads):
    return einops.rearrange(x, "batch pos (n_heads d_head) -> batch n_heads pos d_head", n_heads=n_heads)


def _reshape_scramble(x, n_heads):
    batch, pos, d_model = x.shape
    return x.reshape(batch, n_heads, pos, d_model // n_heads)


def _sizes_swapped(x, n_heads):
    return einops.rearrange(x, "batch pos (n_heads d_head) -> batch pos n_heads d_head", d_head=n_heads)


SPLIT_HEADS_MISTAKES = [
    Mistake("head_axis_inside", _head_axis_inside,
            "`(d_head n_heads)` interleaves the heads; head 0 owns the first d_head entries: write `(n_heads d_head)`."),
    Mistake("heads_before_positions", _heads_before_positions,
            "keep the layout [batch, pos, n_heads, d_head]: heads after positions."),
    Mistake("reshape_scramble", _reshape_scramble,
            "`reshape(batch, n_heads, pos, d_head)` reinterprets memory and mixes positions into heads; use einops.rearrange."),
    Mistake("sizes_swapped", _sizes_swapped,
            "you gave `d_head=n_heads`; pass `n_heads=n_heads` so that each head gets d_model // n_heads entries."),
]


def _merge_head_axis_inside(z):
    return einops.rearrange(z, "batch pos n_heads d_head -> batch pos (d_head n_heads)")


def _summed_heads(z):
    return z.sum(dim=2)


def _averaged_heads(z):
    return z.mean(dim=2)


def _merge_as_if_heads_first(z):
    batch, pos = z.shape[:2]
    return z.transpose(1, 2).reshape(batch, pos, -1)


MERGE_HEADS_MISTAKES = [
    Mistake("head_axis_inside", _merge_head_axis_inside,
            "`(d_head n_heads)` interleaves the heads: write `(n_heads d_head)` so that merge undoes split_heads."),
    Mistake("summed_the_heads", _summed_heads,
            "you summed the heads: merging concatenates them into n_heads * d_head entries."),
    Mistake("averaged_the_heads", _averaged_heads,
            "you averaged the heads: merging concatenates them into n_heads * d_head entries."),
    Mistake("as_if_heads_came_before_positions", _merge_as_if_heads_first,
            "`transpose(1, 2)` assumes [batch, n_heads, pos, d_head]; here heads are already axis 2: `z.reshape(batch, pos, -1)`."),
]


def _heads_first_output(x, W):
    return einops.einsum(x, W, "batch pos d_model, n_heads d_model d_head -> batch n_heads pos d_head")


def _summed_over_heads(x, W):
    return einops.einsum(x, W, "batch pos d_model, n_heads d_model d_head -> batch pos d_head")


def _reshaped_weights(x, W):
    n_heads, d_model, d_head = W.shape
    return (x @ W.reshape(d_model, n_heads * d_head)).reshape(*x.shape[:2], n_heads, d_head)


def _first_head_only(x, W):
    projected = x @ W[0]
    return einops.repeat(projected, "batch pos d_head -> batch pos n_heads d_head", n_heads=W.shape[0])


PROJECT_HEADS_MISTAKES = [
    Mistake("heads_before_positions", _heads_first_output,
            "put the output axes in the order [batch, pos, n_heads, d_head]."),
    Mistake("summed_over_heads", _summed_over_heads,
            "keep `n_heads` in the output: each head's projection is separate."),
    Mistake("reshaped_W_to_d_model_by_heads", _reshaped_weights,
            "you reshaped W to [d_model, n_heads·d_head], which scrambles it; use einsum, or rearrange "
            "`\"n_heads d_model d_head -> d_model (n_heads d_head)\"`."),
    Mistake("first_head_only", _first_head_only,
            "every head used `W[0]`; each head h needs its own `W[h]`: keep `n_heads` as an einsum axis."),
]


def _not_summed(z, W_O):
    return einops.einsum(z, W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos n_heads d_model")


def _averaged(z, W_O):
    return einops.einsum(z, W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model") / z.shape[2]


def _mismatched_merge(z, W_O):
    merged = einops.rearrange(z, "batch pos n_heads d_head -> batch pos (d_head n_heads)")
    return merged @ einops.rearrange(W_O, "n_heads d_head d_model -> (n_heads d_head) d_model")


def _combine_first_head(z, W_O):
    return einops.einsum(z, W_O[0], "batch pos n_heads d_head, d_head d_model -> batch pos d_model")


COMBINE_HEADS_MISTAKES = [
    Mistake("did_not_sum_over_heads", _not_summed,
            "you kept one output per head: sum over the head axis (drop `n_heads` from the einsum's output)."),
    Mistake("averaged_the_heads", _averaged, "heads add their outputs: sum over heads, do not average."),
    Mistake("mismatched_merge_order", _mismatched_merge,
            "z was merged as `(d_head n_heads)` but W_O as `(n_heads d_head)`: the orders must agree."),
    Mistake("one_W_O_for_all_heads", _combine_first_head,
            "every head used `W_O[0]`; head h needs its own `W_O[h]`: keep `n_heads` as an einsum axis."),
]


def _euclidean(x):
    return (x[:, None] - x[None]).pow(2).sum(-1).sqrt()


def _absolute(x):
    return (x[:, None] - x[None]).abs().sum(-1)


def _unsquared(x):
    return (x[:, None] - x[None]).sum(-1)


def _summed_over_positions(x):
    return (x[:, None] - x[None]).pow(2).sum(0)


def _dot_products(x):
    return x @ x.T


PAIRWISE_SQ_DISTANCES_MISTAKES = [
    Mistake("euclidean_distance", _euclidean,
            "that is the Euclidean distance, not its square: leave out `.sqrt()`."),
    Mistake("absolute_differences", _absolute, "square the differences (`.pow(2)`), do not take their absolute value."),
    Mistake("unsquared_differences", _unsquared, "square each difference before summing."),
    Mistake("summed_over_positions", _summed_over_positions,
            "you summed over a position axis: sum over d_model (`dim=-1`)."),
    Mistake("dot_products", _dot_products,
            "`x @ x.T` is similarity, not distance: ||a - b||^2 = ||a||^2 + ||b||^2 - 2 a·b."),
]

# ------------------------------------------------------------------------------------------------- 3. attention


def _naive_softmax(x, dim=-1):
    exps = x.exp()
    return exps / exps.sum(dim, keepdim=True)


def _subtract_min(x, dim=-1):
    exps = (x - x.amin(dim, keepdim=True)).exp()
    return exps / exps.sum(dim, keepdim=True)


def _subtract_mean(x, dim=-1):
    exps = (x - x.mean(dim, keepdim=True)).exp()
    return exps / exps.sum(dim, keepdim=True)


def _global_max(x, dim=-1):
    exps = (x - x.max()).exp()
    return exps / exps.sum(dim, keepdim=True)


def _last_axis_always(x, dim=-1):
    exps = (x - x.amax(-1, keepdim=True)).exp()
    return exps / exps.sum(-1, keepdim=True)


def _max_without_keepdim(x, dim=-1):
    exps = (x - x.max(dim).values).exp()
    return exps / exps.sum(dim, keepdim=True)


STABLE_SOFTMAX_MISTAKES = [
    Mistake("naive_exp", _naive_softmax,
            "`exp(x)` overflows to inf for large logits (inf / inf = NaN): subtract the maximum along `dim` first."),
    Mistake("subtracted_the_minimum", _subtract_min,
            "subtracting the minimum makes every exponent ≥ 0, so large ones overflow: subtract the maximum."),
    Mistake("subtracted_the_mean", _subtract_mean,
            "after subtracting the mean, entries far above it still overflow: subtract the maximum."),
    Mistake("subtracted_the_maximum_of_the_whole_tensor", _global_max,
            "subtracting the maximum of the whole tensor underflows every exponent of a slice far below it (0 / 0 = NaN): "
            "take the maximum along `dim` with `keepdim=True`."),
    Mistake("ignored_dim", _last_axis_always,
            "you always normalised the last axis: use the `dim` argument for the max and the sum."),
    Mistake("max_without_keepdim", _max_without_keepdim,
            "`x.max(dim).values` without keepdim broadcasts along the wrong axis: use `x.amax(dim, keepdim=True)`."),
]


def _scores(q, k):
    return einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")


ATTENTION_SCORES_MISTAKES = [
    Mistake("no_scale", lambda q, k: _scores(q, k), "no 1/sqrt(d_head) scale: divide the dot products by `math.sqrt(d_head)`."),
    Mistake("divided_by_d_head", lambda q, k: _scores(q, k) / q.shape[-1],
            "you divided by d_head; divide by its square root, `math.sqrt(d_head)`."),
    Mistake("divided_by_sqrt_d_model", lambda q, k: _scores(q, k) / math.sqrt(q.shape[-1] * q.shape[-2]),
            "you divided by sqrt(d_model); each head's scores are scaled by sqrt(d_head)."),
    Mistake("multiplied_by_sqrt_d_head", lambda q, k: _scores(q, k) * math.sqrt(q.shape[-1]),
            "you multiplied by sqrt(d_head); divide by it."),
    Mistake("keys_and_queries_swapped", lambda q, k: _scores(k, q) / math.sqrt(q.shape[-1]),
            "keys and queries swapped: the output is [batch, n_heads, query_pos, key_pos], one row per query."),
]


def _future(scores, diagonal=1):
    n_query, n_key = scores.shape[-2:]
    return t.triu(t.ones(n_query, n_key, dtype=t.bool), diagonal=diagonal)


def _masks_diagonal(scores):
    return scores.masked_fill(_future(scores, diagonal=0), float("-inf"))


def _masks_past(scores):
    return scores.masked_fill(_future(scores).T, float("-inf"))


def _filled_with_zero(scores):
    return scores.masked_fill(_future(scores), 0.0)


def _returned_pattern(scores):
    return scores.masked_fill(_future(scores), float("-inf")).softmax(-1)


def _in_place_mask(scores):
    return scores.masked_fill_(_future(scores), float("-inf"))


IN_PLACE_HINT = "Use `masked_fill` or `t.where`, which return a new tensor, not `masked_fill_`."

MASK_FUTURE_MISTAKES = [
    Mistake("masks_the_diagonal", _masks_diagonal,
            "a position may attend to itself: mask only keys strictly after the query, `t.triu(..., diagonal=1)`."),
    Mistake("masks_the_past", _masks_past,
            "future keys lie above the diagonal (key_pos > query_pos): use `triu`, not `tril`."),
    Mistake("filled_with_zero", _filled_with_zero,
            "a score of 0 still gets weight after softmax: fill with `float('-inf')`."),
    Mistake("returned_the_pattern", _returned_pattern,
            "return the masked scores, not their softmax: the softmax comes later."),
    Mistake("in_place", _in_place_mask, IN_PLACE_HINT),
]


def _sdpa(q, k, v, causal, *, scale=True, softmax_dim=-1, mask_after=False, diagonal=1):
    scores = q @ k.transpose(-1, -2)
    if scale:
        scores = scores / math.sqrt(q.shape[-1])
    future = _future(scores, diagonal)
    if causal and not mask_after:
        scores = scores.masked_fill(future, float("-inf"))
    pattern = scores.softmax(softmax_dim)
    if causal and mask_after:
        pattern = pattern.masked_fill(future, 0.0)
    return pattern @ v


SDP_ATTENTION_MISTAKES = [
    Mistake("no_scale", lambda q, k, v, causal=True: _sdpa(q, k, v, causal, scale=False),
            "no 1/sqrt(d_head) scale: divide the scores by `math.sqrt(d_head)`."),
    Mistake("softmax_over_queries", lambda q, k, v, causal=True: _sdpa(q, k, v, causal, softmax_dim=-2),
            "softmax over queries: each query's weights over the keys must sum to 1, so use `dim=-1`."),
    Mistake("mask_applied_after_softmax", lambda q, k, v, causal=True: _sdpa(q, k, v, causal, mask_after=True),
            "mask applied after softmax: rows no longer sum to 1. Fill future scores with -inf, then softmax."),
    Mistake("masks_the_diagonal", lambda q, k, v, causal=True: _sdpa(q, k, v, causal, diagonal=0),
            "the mask hides the diagonal, so position 0 sees nothing (NaN): mask with `diagonal=1`."),
    Mistake("ignores_causal", lambda q, k, v, causal=True: _sdpa(q, k, v, True),
            "ignores `causal`: mask only when `causal` is true."),
]

# ------------------------------------------------------------------------------------------------- 4. positions


def _inverse_permutation(attend, x, perm):
    return (attend(x[:, perm]) - attend(x)[:, perm.argsort()]).abs().max()


def _output_not_permuted(attend, x, perm):
    return (attend(x[:, perm]) - attend(x)).abs().max()


def _mean_not_max(attend, x, perm):
    return (attend(x[:, perm]) - attend(x)[:, perm]).abs().mean()


def _no_abs(attend, x, perm):
    return (attend(x[:, perm]) - attend(x)[:, perm]).max()


EQUIVARIANCE_ERROR_MISTAKES = [
    Mistake("inverse_permutation", _inverse_permutation,
            "you permuted the output with the inverse permutation: apply the same `perm` to both, `attend(x)[:, perm]`."),
    Mistake("did_not_permute_the_output", _output_not_permuted,
            "you did not permute the output; equivariance compares `attend(x[:, perm])` with `attend(x)[:, perm]`."),
    Mistake("mean_not_max", _mean_not_max, "return the largest absolute difference (`.abs().max()`), not the mean."),
    Mistake("no_absolute_value", _no_abs,
            "take the absolute value before the max: a large negative difference counts too."),
]


def _angles(n_ctx, d_model, exponent_index):
    positions = t.arange(n_ctx, dtype=t.float32)[:, None]
    return positions / 10000.0 ** (exponent_index / d_model)


def _interleave(first, second):
    out = t.empty(first.shape[0], 2 * first.shape[1])
    out[:, 0::2], out[:, 1::2] = first, second
    return out


def _concatenated(n_ctx, d_model):
    angles = _angles(n_ctx, d_model, t.arange(0, d_model, 2, dtype=t.float32))
    return t.cat([angles.sin(), angles.cos()], dim=-1)


def _sin_cos_swapped(n_ctx, d_model):
    angles = _angles(n_ctx, d_model, t.arange(0, d_model, 2, dtype=t.float32))
    return _interleave(angles.cos(), angles.sin())


def _exponent_i(n_ctx, d_model):
    angles = _angles(n_ctx, d_model, t.arange(d_model // 2, dtype=t.float32))
    return _interleave(angles.sin(), angles.cos())


def _from_one(n_ctx, d_model):
    return ref.sinusoidal_positions(n_ctx + 1, d_model)[1:]


def _multiplied(n_ctx, d_model):
    positions = t.arange(n_ctx, dtype=t.float32)[:, None]
    angles = positions * 10000.0 ** (t.arange(0, d_model, 2, dtype=t.float32) / d_model)
    return _interleave(angles.sin(), angles.cos())


SINUSOIDAL_POSITIONS_MISTAKES = [
    Mistake("sines_and_cosines_in_two_halves", _concatenated,
            "sines and cosines in two halves: the paper interleaves them, `pe[:, 0::2] = sin`, `pe[:, 1::2] = cos`."),
    Mistake("sin_and_cos_swapped", _sin_cos_swapped, "even dimensions hold the sine, odd dimensions the cosine."),
    Mistake("exponent_uses_i_not_2i", _exponent_i,
            "the exponent is 2i / d_model with 2i the even dimension index: `t.arange(0, d_model, 2) / d_model`."),
    Mistake("positions_counted_from_1", _from_one, "positions start at 0: `t.arange(n_ctx)`."),
    Mistake("multiplied_by_the_frequency_term", _multiplied,
            "divide the position by 10000^(2i/d_model); you multiplied by it."),
]


def _plain_dots(vectors):
    return vectors @ vectors.T


def _columns_normalised(vectors):
    unit = vectors / vectors.norm(dim=0, keepdim=True)
    return unit @ unit.T


def _one_side(vectors):
    return (vectors / vectors.norm(dim=-1, keepdim=True)) @ vectors.T


def _distance(vectors):
    return 1 - ref.cosine_similarity_matrix(vectors)


def _squared_norms(vectors):
    squared = vectors.pow(2).sum(-1)
    return vectors @ vectors.T / (squared[:, None] * squared[None, :])


COSINE_SIMILARITY_MATRIX_MISTAKES = [
    Mistake("plain_dot_products", _plain_dots, "plain dot products: divide each row by its norm first."),
    Mistake("normalised_the_columns", _columns_normalised, "normalise each row (`dim=-1`): rows are the vectors."),
    Mistake("normalised_one_side_only", _one_side, "normalise both vectors of each pair, not only the first."),
    Mistake("cosine_distance", _distance, "that is 1 - cos (a distance): return the similarity itself."),
    Mistake("divided_by_squared_norms", _squared_norms,
            "divide by the norms ||a|| ||b||, not the squared norms."),
]

# ------------------------------------------------------------------------------------------- 5. residual stream


def _stack(cache, names):
    return t.stack([cache[name] for name in names])


def _missing_pos_embed(cache, layer):
    names = ["hook_embed"] + [f"blocks.{l}.hook_{part}_out" for l in range(layer) for part in ("attn", "mlp")]
    return _stack(cache, names)


def _cumulative_streams(cache, layer):
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{l}.hook_{part}" for l in range(layer) for part in ("resid_mid", "resid_post")]
    return _stack(cache, names)


def _mlp_first(cache, layer):
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{l}.hook_{part}_out" for l in range(layer) for part in ("mlp", "attn")]
    return _stack(cache, names)


def _one_layer_too_many(cache, layer):
    return ref.residual_components(cache, layer + 1)


def _attention_only(cache, layer):
    names = ["hook_embed", "hook_pos_embed"] + [f"blocks.{l}.hook_attn_out" for l in range(layer)]
    return _stack(cache, names)


RESIDUAL_COMPONENTS_MISTAKES = [
    Mistake("missing_pos_embed", _missing_pos_embed, "the positional embedding (`hook_pos_embed`) is part of the stream too."),
    Mistake("cumulative_streams_instead_of_outputs", _cumulative_streams,
            "`hook_resid_mid`/`hook_resid_post` are running sums, not parts: use `hook_attn_out` and `hook_mlp_out`."),
    Mistake("MLP_before_attention", _mlp_first, "within a block attention writes first: attn_out, then mlp_out."),
    Mistake("one_layer_too_many", _one_layer_too_many,
            "the stream before layer L holds the outputs of layers 0 .. L-1 only: `range(layer)`."),
    Mistake("attention_outputs_only", _attention_only, "every block adds its MLP output (`hook_mlp_out`) too."),
]


ACCUMULATED_RESID_MISTAKES = [
    Mistake("every_component", lambda components: components.cumsum(0),
            "a running sum after every component includes resid_mid: keep the entries before each layer, `[1::2]`."),
    Mistake("starts_from_the_token_embedding_alone", lambda components: components.cumsum(0)[0::2],
            "the first stream is embed + pos_embed: start at index 1, `cumsum(0)[1::2]`."),
    Mistake("total_only", lambda components: components.sum(0),
            "you returned only the final stream: return the stream before every layer and after the last, `cumsum(0)[1::2]`."),
    Mistake("running_sum_over_positions", lambda components: components.cumsum(1)[1::2],
            "the running sum goes over components (dim=0), not positions."),
    Mistake("skips_the_embeddings", lambda components: components.cumsum(0)[3::2],
            "entry 0 is the stream before layer 0 (embed + pos_embed): `cumsum(0)[1::2]`."),
]
