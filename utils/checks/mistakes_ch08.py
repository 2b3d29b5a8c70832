"""Realistic wrong implementations of chapter 08's exercises, each with the hint it earns.

Each mistake is the reference with the one thing a learner gets wrong; tests feed every entry to its checker and
expect its hint in the message (named only when the learner's output equals the mistake's).
"""

from __future__ import annotations

import einops
import torch as t
from torch import Tensor

from utils.checks.core import Mistake
from utils.induction import per_token_loss

# ------------------------------------------------------------------------------------------------ ablation


def _ablation(model, tokens, repeat_len, layer, head, method, reference_tokens, *, mean_dims=(0,),
              source="reference", target="head", start=None, subtract=True):
    name = f"blocks.{layer}.attn.hook_z"
    start = repeat_len + 1 if start is None else start

    def repeated_loss(logits):
        return per_token_loss(logits, tokens)[:, start:].mean()

    _, own_cache = model.run_with_cache(tokens)
    _, reference_cache = model.run_with_cache(reference_tokens)
    z_source = {"reference": reference_cache, "tokens": own_cache}
    mean_z = z_source[source if source != "resample_own" else "reference"][name]
    resample_z = z_source["tokens" if source == "resample_own" else "reference"][name]
    if method == "zero":
        replacement = t.zeros_like(mean_z)
    elif method == "mean":
        replacement = mean_z.mean(dim=mean_dims, keepdim=True).expand_as(mean_z)
    else:
        replacement = resample_z

    def ablate(z, hook):
        z = z.clone()
        if target == "head":
            z[:, :, head] = replacement[:, :, head]
        elif target == "position":
            z[:, head] = replacement[:, head]
        else:
            z = replacement.clone()
        return z

    ablated = repeated_loss(model.run_with_hooks(tokens, fwd_hooks=[(name, ablate)]))
    return ablated - (repeated_loss(model(tokens)) if subtract else 0.0)


ABLATION_MISTAKES = [
    Mistake("mean_over_positions_too", lambda *a: _ablation(*a, mean_dims=(0, 1)),
            "your mean ablation averaged z over the positions as well as the batch: a head does different things at "
            "different positions (BOS, the first copy, the second), so keep one mean per position: mean over dim 0 only."),
    Mistake("mean_of_the_evaluated_tokens", lambda *a: _ablation(*a, source="tokens"),
            "you took the mean from the run on `tokens`, the sequences you evaluate: take it from the run on "
            "`reference_tokens`, so the replacement carries no information about the evaluated sequences."),
    Mistake("resample_from_the_evaluated_tokens", lambda *a: _ablation(*a, source="resample_own"),
            "your resample ablation changed nothing (increase 0): you resampled z from the run on `tokens` itself. "
            "Take the head's z from the run on `reference_tokens`."),
    Mistake("a_position_not_a_head", lambda *a: _ablation(*a, target="position"),
            "you replaced a position, not a head: hook_z is [batch pos n_heads d_head], so replace z[:, :, head]."),
    Mistake("every_head_of_the_layer", lambda *a: _ablation(*a, target="layer"),
            "you replaced the z of every head of the layer: replace only z[:, :, head]."),
    Mistake("loss_over_every_position", lambda *a: _ablation(*a, start=0),
            "you averaged the loss over every position: measure the repeated half only, "
            "per_token_loss(logits, tokens)[:, repeat_len + 1:]."),
    Mistake("ablated_loss_not_the_increase", lambda *a: _ablation(*a, subtract=False),
            "you returned the ablated loss itself: subtract the clean loss on the repeated half."),
]

# ------------------------------------------------------------------------------------- activation patching


def _resid_names(n_layers: int, post: bool) -> list[str]:
    kind = "post" if post else "pre"
    return [f"blocks.{layer}.hook_resid_{kind}" for layer in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


def _patch_resid(model, clean, corrupted, metric, *, noising=False, span="one", post=False, source="clean",
                 persistent=False):
    run_on, take_from = (clean, corrupted) if noising else (corrupted, clean)
    _, cache = model.run_with_cache(take_from if source == "clean" else run_on)
    names = _resid_names(model.cfg.n_layers, post)
    out = t.zeros(len(names), clean.shape[1])
    for row, name in enumerate(names):
        for pos in range(clean.shape[1]):
            def patch(resid, hook, pos=pos, name=name):
                resid = resid.clone()
                where = {"one": slice(pos, pos + 1), "upto": slice(0, pos + 1), "all": slice(None)}[span]
                resid[:, where] = cache[name][:, where]
                return resid

            if persistent:
                model.add_hook(name, patch)
                logits = model(run_on)
            else:
                logits = model.run_with_hooks(run_on, fwd_hooks=[(name, patch)])
            out[row, pos] = metric(logits)
    return out


PATCH_RESIDUAL_MISTAKES = [
    Mistake("patched_corrupted_into_clean", lambda *a: _patch_resid(*a, noising=True),
            "you ran the clean prompt and patched in the corrupted activation (noising). This exercise restores: run "
            "`corrupted_tokens` and patch in the clean run's residual stream, so 1 means the patch restored everything."),
    Mistake("every_position_up_to_pos", lambda *a: _patch_resid(*a, span="upto"),
            "you patched positions 0 .. pos, not position pos alone: set resid[:, pos] only."),
    Mistake("every_position", lambda *a: _patch_resid(*a, span="all"),
            "every entry of a row is the same: you patched the whole residual stream at that layer. Set resid[:, pos] only."),
    Mistake("resid_post_rows", lambda *a: _patch_resid(*a, post=True),
            "your rows are shifted by one layer: row l patches blocks.{l}.hook_resid_pre (the stream before layer l), "
            "and only the last row is the final blocks.{n_layers - 1}.hook_resid_post."),
    Mistake("cache_from_the_corrupted_run", lambda *a: _patch_resid(*a, source="corrupted"),
            "every entry is 0: you patched in activations cached from the corrupted run itself. Cache the clean run."),
    Mistake("hooks_left_on_the_model", lambda *a: _patch_resid(*a, persistent=True),
            "hooks stay on the model: model.add_hook keeps a hook until model.reset_hooks(), so the patches pile up. "
            "Use model.run_with_hooks(tokens, fwd_hooks=[...])."),
]


def _patch_heads(model, clean, corrupted, metric, *, noising=False, target="head", hook="hook_z", persistent=False):
    run_on, take_from = (clean, corrupted) if noising else (corrupted, clean)
    _, cache = model.run_with_cache(take_from)
    out = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.{hook}"
        for head in range(model.cfg.n_heads):
            def patch(x, hook, head=head, name=name):
                x = x.clone()
                if hook.name.endswith("hook_pattern"):
                    x[:, head] = cache[name][:, head]
                elif target == "position":
                    x[:, head] = cache[name][:, head]
                elif target == "layer":
                    x = cache[name].clone()
                else:
                    x[:, :, head] = cache[name][:, :, head]
                return x

            if persistent:
                model.add_hook(name, patch)
                logits = model(run_on)
            else:
                logits = model.run_with_hooks(run_on, fwd_hooks=[(name, patch)])
            out[layer, head] = metric(logits)
    return out


PATCH_HEADS_MISTAKES = [
    Mistake("patched_corrupted_into_clean", lambda *a: _patch_heads(*a, noising=True),
            "you ran the clean prompt and patched in the corrupted head output (noising): run `corrupted_tokens` and "
            "patch in the clean run's z."),
    Mistake("a_position_not_a_head", lambda *a: _patch_heads(*a, target="position"),
            "you patched a position, not a head: hook_z is [batch pos n_heads d_head], so patch z[:, :, head]."),
    Mistake("every_head_of_the_layer", lambda *a: _patch_heads(*a, target="layer"),
            "every head of a layer has the same score: you patched the whole layer's z. Patch z[:, :, head] only."),
    Mistake("pattern_instead_of_z", lambda *a: _patch_heads(*a, hook="hook_pattern"),
            "you patched the head's attention pattern (hook_pattern), which keeps the corrupted values: patch its "
            "output, hook_z, which carries both where it looked and what it read."),
    Mistake("values_instead_of_z", lambda *a: _patch_heads(*a, hook="hook_v"),
            "you patched the values (hook_v), which the corrupted pattern then mixes: patch the head's output, hook_z."),
    Mistake("hooks_left_on_the_model", lambda *a: _patch_heads(*a, persistent=True),
            "hooks stay on the model: model.add_hook keeps a hook until model.reset_hooks(), so the patches pile up. "
            "Use model.run_with_hooks(tokens, fwd_hooks=[...])."),
]

# ---------------------------------------------------------------------------------------------- path patching


def _path(model, clean, corrupted, metric, sender, receiver_layer, receiver_heads, *, target="k", whole=False,
          subtract=True, clean_base=False, every=False, noising=False):
    run_on, take_from = (clean, corrupted) if noising else (corrupted, clean)
    sender_layer, sender_head = sender
    z_name = f"blocks.{sender_layer}.attn.hook_z"
    _, source_cache = model.run_with_cache(take_from)
    _, base_cache = model.run_with_cache(run_on)
    if whole:
        def patch_z(z, hook):
            z = z.clone()
            z[:, :, sender_head] = source_cache[z_name][:, :, sender_head]
            return z
        return metric(model.run_with_hooks(run_on, fwd_hooks=[(z_name, patch_z)]))
    W_O = model.blocks[sender_layer].attn.W_O[sender_head]
    new_z = source_cache[z_name][:, :, sender_head]
    delta = (new_z - base_cache[z_name][:, :, sender_head]) @ W_O if subtract else new_z @ W_O
    block = model.blocks[receiver_layer]
    resid = (source_cache if clean_base else base_cache)[f"blocks.{receiver_layer}.hook_resid_pre"]
    x = block.ln1(resid if clean_base else resid + delta)
    W, b = getattr(block.attn, f"W_{target.upper()}"), getattr(block.attn, f"b_{target.upper()}")
    new = einops.einsum(x, W, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + b
    heads = list(range(model.cfg.n_heads)) if every else receiver_heads

    def patch(act, hook):
        act = act.clone()
        act[:, :, heads] = new[:, :, heads]
        return act

    return metric(model.run_with_hooks(run_on, fwd_hooks=[(f"blocks.{receiver_layer}.attn.hook_{target}", patch)]))


PATH_MISTAKES = [
    Mistake("whole_head_patched", lambda *a: _path(*a, whole=True),
            "you patched the sender's z itself, so every later path sees it (queries, keys and values of every "
            "layer-1 head): that is activation patching. Patch only the receivers' keys (hook_k), computed from "
            "resid_pre + the sender's (clean - corrupted) output."),
    Mistake("clean_output_added_without_subtracting", lambda *a: _path(*a, subtract=False),
            "you added the sender's clean output to the corrupted stream, which already holds its corrupted output: "
            "add the difference (clean - corrupted) z W_O, so the sender's contribution is replaced, not doubled."),
    Mistake("queries_not_keys", lambda *a: _path(*a, target="q"),
            "you patched the receivers' queries (hook_q, W_Q): the path under test is sender -> receiver keys, "
            "so recompute hook_k with W_K and b_K."),
    Mistake("values_not_keys", lambda *a: _path(*a, target="v"),
            "you patched the receivers' values (hook_v, W_V): recompute their keys, hook_k with W_K and b_K."),
    Mistake("whole_clean_stream_into_the_keys", lambda *a: _path(*a, clean_base=True),
            "you computed the receivers' keys from the clean resid_pre, which carries every clean path at once "
            "(embeddings and all layer-0 heads): start from the corrupted resid_pre and swap in the sender's output only."),
    Mistake("every_receiver_layer_head", lambda *a: _path(*a, every=True),
            "you patched the keys of every head of the receiver layer: patch only the heads in `receiver_heads`, "
            "the others keep their corrupted keys."),
    Mistake("patched_corrupted_into_clean", lambda *a: _path(*a, noising=True),
            "you ran the clean prompt and patched in the corrupted sender (noising): run `corrupted_tokens` and "
            "give the receivers' keys the sender's clean output."),
]

# --------------------------------------------------------------------------------------- circuits from weights


def _copying(model, layer, *, axis=-1, circuit="ov", weights_layer=None, unembed="W_U"):
    attn = model.blocks[layer if weights_layer is None else weights_layer].attn
    W_E = model.embed.W_E
    W_U = model.unembed.W_U if unembed == "W_U" else W_E.T
    scores = t.zeros(model.cfg.n_heads)
    for head in range(model.cfg.n_heads):
        if circuit == "ov":
            full = W_E @ attn.W_V[head] @ attn.W_O[head] @ W_U
        elif circuit == "qk":
            full = W_E @ attn.W_Q[head] @ attn.W_K[head].T @ W_E.T
        else:
            full = W_E @ W_U
        scores[head] = (full.argmax(dim=axis) == t.arange(full.shape[0])).float().mean()
    return scores


COPYING_MISTAKES = [
    Mistake("argmax_over_the_wrong_axis", lambda m, layer: _copying(m, layer, axis=0),
            "you took the argmax over the rows (dim 0): a row of W_E W_V W_O W_U is the token attended to, its columns "
            "the logits it raises, so ask whether the row's own token is its top column: argmax(dim=-1)."),
    Mistake("qk_instead_of_ov", lambda m, layer: _copying(m, layer, circuit="qk"),
            "you used the QK circuit (W_E W_Q W_K^T W_E^T), which says where a head attends; copying is about what "
            "it writes: the OV circuit W_E W_V W_O W_U."),
    Mistake("direct_path_only", lambda m, layer: _copying(m, layer, circuit="direct"),
            "every head has the same score: you left the head out (W_E W_U is the direct path). Put W_V[h] W_O[h] "
            "between the embedding and the unembedding."),
    Mistake("layer_0_weights_everywhere", lambda m, layer: _copying(m, layer, weights_layer=0),
            "you read layer 0's W_V and W_O whatever the layer: use model.blocks[layer].attn."),
    Mistake("embedding_as_unembedding", lambda m, layer: _copying(m, layer, unembed="W_E"),
            "you used W_E^T as the unembedding: this model's embedding and unembedding are separate matrices; "
            "use model.unembed.W_U."),
]


def _positional(model, layer, *, scale=True, mask=True, dim=-1, swap=False, biases=False):
    attn = model.blocks[layer].attn
    W_pos = model.pos_embed.W_pos
    q = einops.einsum(W_pos, attn.W_Q, "pos d_model, n_heads d_model d_head -> n_heads pos d_head")
    k = einops.einsum(W_pos, attn.W_K, "pos d_model, n_heads d_model d_head -> n_heads pos d_head")
    if biases:
        q, k = q + attn.b_Q[:, None], k + attn.b_K[:, None]
    scores = q @ k.transpose(-1, -2)
    if swap:
        scores = scores.transpose(-1, -2)
    if scale:
        scores = scores / attn.cfg.d_head ** 0.5
    if mask:
        n = W_pos.shape[0]
        scores = scores.masked_fill(t.triu(t.ones(n, n, dtype=t.bool), diagonal=1), float("-inf"))
    return scores.softmax(dim=dim)


POSITIONAL_MISTAKES = [
    Mistake("no_scaling", lambda m, layer: _positional(m, layer, scale=False),
            "you did not divide the scores by sqrt(d_head) before the softmax, as the model's attention does."),
    Mistake("no_causal_mask", lambda m, layer: _positional(m, layer, mask=False),
            "your patterns give weight to later keys: mask every key after its query (triu, diagonal=1) with -inf "
            "before the softmax."),
    Mistake("softmax_over_queries", lambda m, layer: _positional(m, layer, dim=-2),
            "your softmax normalised each column (over queries): a pattern's row, one query, sums to 1: softmax(dim=-1)."),
    Mistake("query_and_key_swapped", lambda m, layer: _positional(m, layer, swap=True),
            "your scores are transposed: rows are queries, so scores = (W_pos W_Q) (W_pos W_K)^T, "
            "query_pos before key_pos."),
    Mistake("biases_included", lambda m, layer: _positional(m, layer, biases=True),
            "you added b_Q and b_K: this pattern is defined from W_pos, W_Q and W_K alone, to isolate what position "
            "by itself makes a head do."),
]


def _composition(model, early=0, late=1, *, swap_qk=False, normalise=True, reverse=False, transpose=False, ord="fro"):
    def ov(layer):
        attn = model.blocks[layer].attn
        return attn.W_V @ attn.W_O

    def qk(layer):
        attn = model.blocks[layer].attn
        return attn.W_Q @ attn.W_K.transpose(-1, -2)

    writer = ov(early)
    q_reader, k_reader = qk(late), qk(late).transpose(-1, -2)
    if swap_qk:
        q_reader, k_reader = k_reader, q_reader
    out = {}
    for mode, reader in {"Q": q_reader, "K": k_reader, "V": ov(late)}.items():
        product = reader[None, :] @ writer[:, None] if reverse else writer[:, None] @ reader[None, :]
        score = t.linalg.matrix_norm(product, ord=ord)
        if normalise:
            score = score / (t.linalg.matrix_norm(writer, ord=ord)[:, None] * t.linalg.matrix_norm(reader, ord=ord)[None, :])
        out[mode] = score.T if transpose else score
    return out


COMPOSITION_MISTAKES = [
    Mistake("q_and_k_swapped", lambda m, *a: _composition(m, *a, swap_qk=True),
            "your Q and K scores are swapped: a query reads x_query W_Q, so Q-composition is W_OV W_QK; a key enters "
            "as x_key W_K, through the transpose: K-composition is W_OV W_QK^T."),
    Mistake("not_normalised", lambda m, *a: _composition(m, *a, normalise=False),
            "you returned ||W_A W_B||_F without dividing by ||W_A||_F ||W_B||_F: unnormalised, the score measures the "
            "weights' size rather than how much the two heads' subspaces line up."),
    Mistake("reader_times_writer", lambda m, *a: _composition(m, *a, reverse=True),
            "you multiplied in the wrong order (W_B W_A): with row vectors, the early head writes x W_OV first, then "
            "the late head reads it: W_OV^early @ W_B^late."),
    Mistake("late_heads_as_rows", lambda m, *a: _composition(m, *a, transpose=True),
            "your table is transposed: rows are the early layer's heads (writers), columns the late layer's (readers)."),
    Mistake("spectral_norm", lambda m, *a: _composition(m, *a, ord=2),
            "you used the spectral norm (ord=2): the composition score uses Frobenius norms, "
            "t.linalg.matrix_norm(M) (ord='fro')."),
]


# --------------------------------------------------------------------------------------- key decomposition


REDUCTIONS = {"mean": lambda s: s.mean(), "sum": lambda s: s.sum(),  # s: [batch, query]
              "sum_queries": lambda s: s.sum(-1).mean(), "sum_batch": lambda s: s.sum(0).mean()}


def _key_shares(model, cache, layer, head, repeat_len, *, key_offset=1, scale=True, key_weights="W_K",
                keys_at_queries=False, reduce="mean", query_bias=True, last_query=0):
    """The reference's shares, with one thing changed (`key_offset=0`: the earlier occurrence itself)."""
    attn = model.blocks[layer].attn
    pos = t.arange(repeat_len + 1, 2 * repeat_len + 1 + last_query)
    key_pos = pos if keys_at_queries else pos - repeat_len + key_offset
    if query_bias:
        q = cache[f"blocks.{layer}.attn.hook_q"][:, pos, head]
    else:
        q = cache[f"blocks.{layer}.hook_resid_pre"][:, pos] @ attn.W_Q[head]
    W = getattr(attn, key_weights)[head]
    parts = {"embed": cache["hook_embed"], "pos_embed": cache["hook_pos_embed"]}
    for h in range(model.cfg.n_heads):
        parts[f"L0H{h}"] = cache["blocks.0.attn.hook_z"][:, :, h] @ model.blocks[0].attn.W_O[h]
    parts["L0 b_O"] = model.blocks[0].attn.b_O.expand_as(parts["embed"])
    norm = attn.cfg.d_head ** 0.5 if scale else 1.0

    def share(per_query: Tensor) -> float:
        score = per_query.sum(-1)  # [batch, query]
        return float(REDUCTIONS[reduce](score) / norm)

    shares = {name: share((part[:, key_pos] @ W) * q) for name, part in parts.items()}
    shares["b_K"] = share(attn.b_K[head] * q)
    return shares


KEY_DECOMPOSITION_MISTAKES = [
    Mistake("keys_at_the_earlier_occurrence", lambda *a: _key_shares(*a, key_offset=0),
            "you read the keys at the earlier occurrence of the current token (query position - repeat_len); an "
            "induction head attends to the token *after* it, query position - (repeat_len - 1), the position whose "
            "previous token matches."),
    Mistake("keys_at_the_query_positions", lambda *a: _key_shares(*a, keys_at_queries=True),
            "you took every component at the query positions: the key side of the score lives at the attended "
            "position, key_pos = pos - (repeat_len - 1), while q stays at pos."),
    Mistake("not_scaled", lambda *a: _key_shares(*a, scale=False),
            "your shares are sqrt(d_head) times too large: the attention score is q . k / sqrt(d_head), and each "
            "share is that score's part, so divide by attn.cfg.d_head ** 0.5."),
    Mistake("keys_through_W_Q", lambda *a: _key_shares(*a, key_weights="W_Q"),
            "you projected the components with W_Q: a key is x W_K, so use attn.W_K[head] for every component."),
    Mistake("summed_over_batch_and_queries", lambda *a: _key_shares(*a, reduce="sum"),
            "you summed over the batch and the query positions: each share is a mean, so that the shares add up to "
            "the head's mean score on the stripe."),
    Mistake("summed_over_queries", lambda *a: _key_shares(*a, reduce="sum_queries"),
            "you summed over the query positions (and averaged over the batch): each share is a mean over both, "
            "so that the shares add up to the head's mean score on the stripe; use .mean() over queries too."),
    Mistake("summed_over_batch", lambda *a: _key_shares(*a, reduce="sum_batch"),
            "you summed over the batch (and averaged over the query positions): each share is a mean over both, "
            "so that the shares add up to the head's mean score on the stripe; use .mean() over the batch too."),
    Mistake("keys_one_position_late", lambda *a: _key_shares(*a, key_offset=2),
            "your keys sit one position too late (query position - (repeat_len - 2)): the induction stripe's key is "
            "query position - (repeat_len - 1), the token just after the earlier occurrence."),
    Mistake("last_query_left_out", lambda *a: _key_shares(*a, last_query=-1),
            "your queries stop one short: the second copy's queries are repeat_len + 1 up to and including "
            "2 * repeat_len, t.arange(repeat_len + 1, 2 * repeat_len + 1) (arange leaves out its end)."),
    Mistake("query_without_b_Q", lambda *a: _key_shares(*a, query_bias=False),
            "your query leaves out b_Q (you recomputed it as resid_pre @ W_Q): take the head's real query, "
            "cache[f'blocks.{layer}.attn.hook_q'][:, pos, head], which includes the bias."),
]
