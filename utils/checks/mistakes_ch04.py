"""Realistic wrong implementations of chapter 04's exercises, each with the hint it earns.

Each mistake is the reference with the one thing a learner gets wrong; tests feed every entry to its checker
and expect its hint in the message.
"""

from __future__ import annotations

import einops
import torch as t
from torch import Tensor

from utils.checks.core import Mistake
from utils.induction import per_token_loss

# ------------------------------------------------------------------------------------------ head detector


def _scores(current: Tensor, previous: Tensor, first: Tensor) -> dict[str, Tensor]:
    return {"current": current, "previous": previous, "first": first}


def _current(pattern: Tensor) -> Tensor:
    return pattern.diagonal(0, -2, -1).mean((0, -1))


def _previous(pattern: Tensor) -> Tensor:
    return pattern.diagonal(-1, -2, -1).mean((0, -1))


def _first(pattern: Tensor) -> Tensor:
    return pattern[..., :, 0].mean((0, -1))


def _previous_above_diagonal(pattern):
    return _scores(_current(pattern), pattern.diagonal(1, -2, -1).mean((0, -1)), _first(pattern))


def _previous_counts_query_zero(pattern):
    previous = pattern.diagonal(-1, -2, -1).sum(-1).mean(0) / pattern.shape[-2]
    return _scores(_current(pattern), previous, _first(pattern))


def _first_token_row(pattern):
    return _scores(_current(pattern), _previous(pattern), pattern[..., 0, :].mean((0, -1)))


def _no_batch_mean(pattern):
    return _scores(pattern.diagonal(0, -2, -1).mean(-1), pattern.diagonal(-1, -2, -1).mean(-1),
                   pattern[..., :, 0].mean(-1))


def _sum_over_queries(pattern):
    return _scores(pattern.diagonal(0, -2, -1).sum(-1).mean(0), pattern.diagonal(-1, -2, -1).sum(-1).mean(0),
                   pattern[..., :, 0].sum(-1).mean(0))


HEAD_DETECTOR_MISTAKES = [
    Mistake("previous_token_above_the_diagonal", _previous_above_diagonal,
            "your previous-token scores are all zero: the causal mask zeroes everything above the diagonal, and the "
            "previous token sits below the diagonal: key = query - 1 is `diagonal(offset=-1)`."),
    Mistake("previous_token_mean_includes_query_0", _previous_counts_query_zero,
            "you divided the previous-token sum by every query, including query 0, which has no previous token. "
            "Average over queries 1 and after: `diagonal(offset=-1).mean(...)`."),
    Mistake("first_token_row_instead_of_column", _first_token_row,
            "you read row 0 (where query 0 looks) instead of column 0: attention to the first token is "
            "`pattern[..., :, 0]`, column 0, not row 0."),
    Mistake("no_mean_over_the_batch", _no_batch_mean,
            "each score still has a batch dimension: average over the batch as well as the queries, to shape [n_heads]."),
    Mistake("sum_instead_of_mean", _sum_over_queries,
            "you summed over the queries instead of averaging: a score is a mean attention weight, between 0 and 1."),
]

# -------------------------------------------------------------------------------------- residual decomposition


def _decompose(model, cache, *, z_name="hook_z", w_o_layer=None, head_bias=False, embed_name="hook_embed",
               split_attn_out=False) -> dict[str, Tensor]:
    components = {"embed": cache[embed_name] if embed_name == "hook_embed" else cache["blocks.0.hook_resid_pre"],
                  "pos_embed": cache["hook_pos_embed"]}
    n_heads = model.cfg.n_heads
    for layer, block in enumerate(model.blocks):
        W_O = model.blocks[w_o_layer if w_o_layer is not None else layer].attn.W_O
        z = cache[f"blocks.{layer}.attn.{z_name}"]
        per_head = einops.einsum(z, W_O, "batch pos n_heads d_head, n_heads d_head d_model -> n_heads batch pos d_model")
        for head in range(n_heads):
            if split_attn_out:
                components[f"L{layer}H{head}"] = cache[f"blocks.{layer}.hook_attn_out"] / n_heads
            else:
                components[f"L{layer}H{head}"] = per_head[head] + (block.attn.b_O if head_bias else 0.0)
        components[f"L{layer} b_O"] = block.attn.b_O.expand_as(components["pos_embed"])
        if f"blocks.{layer}.hook_mlp_out" in cache:
            components[f"L{layer} MLP"] = cache[f"blocks.{layer}.hook_mlp_out"]
    return components


DECOMPOSE_MISTAKES = [
    Mistake("values_instead_of_z", lambda model, cache: _decompose(model, cache, z_name="hook_v"),
            "you multiplied the values (hook_v) by W_O: a head writes z, the values averaged by its attention pattern "
            "(blocks.{layer}.attn.hook_z)."),
    Mistake("first_layer_W_O_everywhere", lambda model, cache: _decompose(model, cache, w_o_layer=0),
            "every layer used layer 0's W_O: each layer has its own, model.blocks[layer].attn.W_O."),
    Mistake("b_O_added_to_every_head", lambda model, cache: _decompose(model, cache, head_bias=True),
            "b_O belongs to the layer, not to any head: it is added once per layer, so keep it only under "
            "'L{layer} b_O' and leave it out of each head's z W_O."),
    Mistake("resid_pre_as_the_embedding", lambda model, cache: _decompose(model, cache, embed_name="resid_pre"),
            "'embed' holds blocks.0.hook_resid_pre, which already includes the positional embedding: use "
            "cache['hook_embed'] so that pos_embed is not counted twice."),
    Mistake("attention_output_split_evenly", lambda model, cache: _decompose(model, cache, split_attn_out=True),
            "you divided hook_attn_out evenly between the heads: split it by head through z and W_O "
            "(z[:, :, h] @ W_O[h]), since each head writes something different."),
]

# ------------------------------------------------------------------------------------ direct logit attribution


def _dla(model, components, cache, tokens, *, centre=True, frozen=True, use_scale=True, use_w=True,
         next_token=True, unembed="W_U") -> dict[str, Tensor]:
    targets = tokens[:, 1:] if next_token else tokens[:, :-1]
    matrix = model.unembed.W_U.T if unembed == "W_U" else model.embed.W_E
    directions = matrix[targets] * (model.ln_final.w if use_w else 1.0)
    scale = cache["ln_final.hook_scale"][:, :-1]
    out = {}
    for name, component in components.items():
        c = component[:, :-1]
        if centre:
            c = c - c.mean(-1, keepdim=True)
        if not frozen:
            c = c / (c.pow(2).mean(-1, keepdim=True) + model.cfg.layer_norm_eps).sqrt()
        elif use_scale:
            c = c / scale
        out[name] = (c * directions).sum(-1)
    return out


DLA_MISTAKES = [
    Mistake("no_centring", lambda *a: _dla(*a, centre=False),
            "you left out LayerNorm's centring: subtract each component's mean over d_model first "
            "(centring is linear, so it applies to every component)."),
    Mistake("scale_not_divided", lambda *a: _dla(*a, use_scale=False),
            "you did not divide by the frozen scale: divide every centred component by cache['ln_final.hook_scale']."),
    Mistake("scale_recomputed_per_component", lambda *a: _dla(*a, frozen=False),
            "you normalised each component by its own scale, which is not a frozen scale: divide every component by "
            "the scale of the full residual stream, cache['ln_final.hook_scale'], so the attributions add up."),
    Mistake("ln_final_w_missing", lambda *a: _dla(*a, use_w=False),
            "you left out ln_final.w: the direction of token τ seen through LayerNorm is w * W_U[:, τ]."),
    Mistake("current_token_instead_of_next", lambda *a: _dla(*a, next_token=False),
            "off by one: you attributed the logit of the current token; the logits at position p predict "
            "tokens[:, p + 1], so use tokens[:, 1:]."),
    Mistake("embedding_instead_of_unembedding", lambda *a: _dla(*a, unembed="W_E"),
            "you used the embedding W_E: the logits come from the unembedding, model.unembed.W_U[:, token] "
            "(GPT-2 ties them; this reference does not, to catch exactly this)."),
]

# -------------------------------------------------------------------------------------------- induction score


def _stripe(pattern: Tensor, offset: int) -> Tensor:
    return pattern.diagonal(offset=offset, dim1=-2, dim2=-1)


INDUCTION_MISTAKES = [
    Mistake("duplicate_token_offset", lambda p, L: _stripe(p, -L)[..., -L:].mean((0, -1)),
            "an offset of -repeat_len is the earlier occurrence of the same token (a duplicate-token head). The "
            "induction head attends to the token after it: offset -(repeat_len - 1)."),
    Mistake("queries_of_the_first_copy_included", lambda p, L: _stripe(p, -(L - 1)).mean((0, -1)),
            "you averaged the whole stripe, including queries of the first copy where no earlier occurrence exists: "
            "keep the last repeat_len entries, the queries of the second copy."),
    Mistake("positive_offset", lambda p, L: _stripe(p, L - 1)[..., -L:].mean((0, -1)),
            "your scores are all zero: a positive offset reads above the diagonal, where the causal mask leaves "
            "nothing. The key comes before the query: offset -(repeat_len - 1)."),
    Mistake("bos_forgotten", lambda p, L: _stripe(p, -(L - 1))[..., 1:L + 1].mean((0, -1)),
            "your queries are shifted by one: the sequence starts with BOS, so the second copy occupies positions "
            "1 + repeat_len .. 2 * repeat_len, the last repeat_len queries."),
    Mistake("no_mean_over_the_batch", lambda p, L: _stripe(p, -(L - 1))[..., -L:].mean(-1),
            "the score still has a batch dimension: average over the batch as well as the queries, to shape [n_heads]."),
]

# ------------------------------------------------------------------------------------------------- ablation


def _ablation(model, tokens, repeat_len, *, start=None, target="head", subtract=True, persistent=False):
    start = repeat_len + 1 if start is None else start

    def repeated_loss(logits):
        return per_token_loss(logits, tokens)[:, start:].mean()

    clean = repeated_loss(model(tokens))
    effect = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def ablate(z, hook, head=head):
                z = z.clone()
                if target == "head":
                    z[:, :, head] = 0.0
                elif target == "position":
                    z[:, head] = 0.0
                else:
                    z = t.zeros_like(z)
                return z

            name = f"blocks.{layer}.attn.hook_z" if target != "layer" else f"blocks.{layer}.hook_attn_out"
            if persistent:
                model.add_hook(name, ablate)
                logits = model(tokens)
            else:
                logits = model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)])
            effect[layer, head] = repeated_loss(logits) - (clean if subtract else 0.0)
    return effect


ABLATION_MISTAKES = [
    Mistake("loss_over_every_position", lambda m, tok, L: _ablation(m, tok, L, start=0),
            "you averaged the loss over every position: measure the repeated half only, "
            "per_token_loss(logits, tokens)[:, repeat_len + 1:]."),
    Mistake("second_copy_first_token_included", lambda m, tok, L: _ablation(m, tok, L, start=L),
            "your repeated half starts one position early: the second copy's first token cannot be predicted, so "
            "use per_token_loss(...)[:, repeat_len + 1:]."),
    Mistake("a_position_not_a_head", lambda m, tok, L: _ablation(m, tok, L, target="position"),
            "you zeroed a position, not a head: hook_z is [batch pos n_heads d_head], so zero z[:, :, head]."),
    Mistake("whole_layer_ablated", lambda m, tok, L: _ablation(m, tok, L, target="layer"),
            "you ablated the whole attention layer (hook_attn_out) for every head: zero one head's slice of "
            "blocks.{layer}.attn.hook_z."),
    Mistake("ablated_loss_not_the_increase", lambda m, tok, L: _ablation(m, tok, L, subtract=False),
            "you returned the ablated loss itself: subtract the clean loss on the repeated half to get the increase."),
    Mistake("hooks_left_on_the_model", lambda m, tok, L: _ablation(m, tok, L, persistent=True),
            "hooks stay on the model: model.add_hook keeps a hook until model.reset_hooks(), so the ablations pile "
            "up. Use model.run_with_hooks(tokens, fwd_hooks=[...]), which removes them."),
]
