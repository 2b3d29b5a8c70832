"""Realistic wrong implementations of chapter 06's exercises, each with the hint it earns.

Each is written the way a learner would get it wrong, in the exercise's own signature. Tests feed every
entry to its checker and expect its hint in the message.
"""

from __future__ import annotations

import functools
import math

import einops
import torch as t
from torch import Tensor

from utils.checks.core import Mistake
from utils.reference import sampling as ref

# ------------------------------------------------------------------------------------------------ greedy


def _generate(model, input_ids, max_new_tokens, *, position=-1, context="crop_last", append="end", keep_kwargs=True,
              choose="sampler", **sampling_kwargs):
    tokens = input_ids
    n_ctx = model.cfg.n_ctx
    kwargs = sampling_kwargs if keep_kwargs else {}
    with t.no_grad():
        for _ in range(max_new_tokens):
            if context == "crop_last":
                seen = tokens[:, -n_ctx:]
            elif context == "crop_first":
                seen = tokens[:, :n_ctx]
            elif context == "newest":
                seen = tokens[:, -1:]
            else:
                seen = tokens
            logits = model(seen)[:, position]
            if choose == "argmax":
                next_token = logits.argmax(dim=-1)
            else:
                history = input_ids if choose == "prompt_only" else tokens
                next_token = ref.sample_next_token(history, logits, **kwargs)
            parts = [tokens, next_token[:, None]] if append == "end" else [next_token[:, None], tokens]
            tokens = t.cat(parts, dim=1)
    return tokens


def _new_tokens_only(model, input_ids, max_new_tokens, **kwargs):
    return _generate(model, input_ids, max_new_tokens, **kwargs)[:, input_ids.shape[1]:]


IGNORES_OPTIONS_HINT = ("your loop chooses the argmax itself (or passes temperature=0.0 of its own), so the "
                        "sampling options never reach sample_next_token; later sections sample through this loop "
                        "with top_p: call `sample_next_token(tokens, logits, **sampling_kwargs)`.")
DEFAULT_TEMPERATURE_HINT = ("your loop did not hand temperature=0.0 on to sample_next_token, so it sampled with the "
                            "default temperature 1.0, which needs section 2's functions: call "
                            "`sample_next_token(tokens, logits, **sampling_kwargs)`.")
SAMPLING_OPTIONS_HINT = ("These options decide every token with certainty: pass **sampling_kwargs on to "
                         "sample_next_token, with the whole sequence so far (`tokens`, not the prompt) as its input_ids.")
PROMPT_ONLY_HINT = ("you hand sample_next_token the prompt (`input_ids`) instead of the sequence so far, so the "
                    "frequency penalty never counts the generated tokens: pass `tokens`.")

GREEDY_MISTAKES = [
    Mistake("first_position", functools.partial(_generate, position=0),
            "you choose the next token from the logits at position 0; the prediction for the next token is at the "
            "last position, `model(tokens)[:, -1]`."),
    Mistake("only_newest_token", functools.partial(_generate, context="newest"),
            "you feed the model only the newest token each step, so it forgets the prompt; without a cache it must "
            "see the whole sequence (cropped to the last n_ctx tokens)."),
    Mistake("crop_keeps_oldest", functools.partial(_generate, context="crop_first"),
            "you crop to the first n_ctx tokens; keep the most recent ones, `tokens[:, -model.cfg.n_ctx:]`."),
    Mistake("prepends", functools.partial(_generate, append="start"),
            "you put the new token in front of the sequence; append it at the end, `t.cat([tokens, next_token[:, None]], dim=1)`."),
    Mistake("drops_sampling_kwargs", functools.partial(_generate, keep_kwargs=False),
            "you do not pass **sampling_kwargs on to sample_next_token, so temperature=0.0 (greedy) is ignored and "
            "tokens are sampled."),
    Mistake("returns_new_tokens_only", _new_tokens_only,
            "you return only the generated tokens; return the prompt followed by them, `[batch pos + max_new_tokens]`."),
    Mistake("hard_coded_argmax", functools.partial(_generate, choose="argmax"), IGNORES_OPTIONS_HINT),
]
# generate's mistakes that only sampling options reveal (checks.kv_generate(generate_with_cache, generate) runs them)
SAMPLING_LOOP_MISTAKES = [
    Mistake("hard_coded_argmax", functools.partial(_generate, choose="argmax"), IGNORES_OPTIONS_HINT),
    Mistake("sampler_sees_prompt_only", functools.partial(_generate, choose="prompt_only"), PROMPT_ONLY_HINT),
    Mistake("drops_sampling_kwargs", functools.partial(_generate, keep_kwargs=False),
            "you do not pass **sampling_kwargs on to sample_next_token, so the options are ignored."),
]
CROP_HINT = ("The sequence grew past model.cfg.n_ctx positions: feed the model only the last n_ctx tokens, "
             "`tokens[:, -model.cfg.n_ctx:]`.")

# ------------------------------------------------------------------------------------------- temperature

TEMPERATURE_IN_PLACE_HINT = ("Write `logits / temperature` (a new tensor), not `logits /= temperature`: "
                             "the caller's logits must stay unchanged.")


def _temperature_in_place(logits, temperature):
    logits /= temperature
    return logits


TEMPERATURE_MISTAKES = [
    Mistake("multiplied", lambda logits, temperature: logits * temperature,
            "you multiply the logits by the temperature; divide them, `logits / temperature`, so that T > 1 flattens "
            "the distribution."),
    Mistake("returns_probabilities", lambda logits, temperature: (logits / temperature).softmax(dim=-1),
            "you return probabilities; return the scaled logits, `logits / temperature` (the sampler applies softmax)."),
    Mistake("divides_probabilities", lambda logits, temperature: logits.softmax(dim=-1) / temperature,
            "you divide probabilities by the temperature; temperature divides the logits, before any softmax."),
    Mistake("power_of_logits", lambda logits, temperature: logits ** (1 / temperature),
            "you raise the logits to the power 1/T; that form, p ** (1/T), applies to probabilities. On logits, divide: "
            "`logits / temperature`."),
    Mistake("in_place", _temperature_in_place, TEMPERATURE_IN_PLACE_HINT),
]

# ------------------------------------------------------------------------------------- frequency penalty

PENALTY_IN_PLACE_HINT = ("Build a new tensor (`logits - freq_penalty * counts`) instead of subtracting into "
                         "`logits[b, token]`: the caller's logits must stay unchanged.")


def _counts(input_ids: Tensor, logits: Tensor) -> Tensor:
    ones = t.ones(input_ids.shape, dtype=logits.dtype)
    return t.zeros_like(logits).scatter_add(-1, input_ids, ones)


def _ctrl_penalty(input_ids, logits, freq_penalty):
    seen = _counts(input_ids, logits) > 0
    penalised = t.where(logits > 0, logits / freq_penalty, logits * freq_penalty)
    return t.where(seen, penalised, logits)


def _batch_counts(input_ids, logits, freq_penalty):
    counts = t.bincount(input_ids.flatten(), minlength=logits.shape[-1]).to(logits.dtype)
    return logits - freq_penalty * counts


def _first_row_counts(input_ids, logits, freq_penalty):
    counts = t.bincount(input_ids[0], minlength=logits.shape[-1]).to(logits.dtype)
    return logits - freq_penalty * counts


def _penalty_in_place(input_ids, logits, freq_penalty):
    for row, ids in enumerate(input_ids):
        for token in ids:
            logits[row, token] -= freq_penalty
    return logits


PENALTY_MISTAKES = [
    Mistake("multiplicative", _ctrl_penalty,
            "you scale the logits of repeated tokens (CTRL's repetition penalty); the frequency penalty is subtracted "
            "once per occurrence, `logits - freq_penalty * counts`."),
    Mistake("presence_not_frequency", lambda ids, logits, a: logits - a * (_counts(ids, logits) > 0).to(logits.dtype),
            "you penalise each repeated token once, whatever its count (a presence penalty); subtract "
            "freq_penalty once per occurrence."),
    Mistake("counts_over_batch", _batch_counts,
            "you count tokens over the whole batch; each row is its own text: count only row b's tokens for row b."),
    Mistake("penalises_probabilities", lambda ids, logits, a: logits.softmax(dim=-1) - a * _counts(ids, logits),
            "you subtract the penalty from softmax probabilities; subtract it from the logits and return logits."),
    Mistake("adds_penalty", lambda ids, logits, a: logits + a * _counts(ids, logits),
            "you add the penalty, which makes repeated tokens more likely; subtract it."),
    Mistake("in_place", _penalty_in_place, PENALTY_IN_PLACE_HINT),
    Mistake("counts_first_row_only", _first_row_counts,
            "you count the tokens of row 0 and penalise every row with them; count each row's own tokens."),
]

# ------------------------------------------------------------------------------------------------- top-k


def _categorical(logits: Tensor) -> Tensor:
    return t.distributions.Categorical(logits=logits).sample()


def _keep_top(logits: Tensor, n: int, largest: bool = True) -> Tensor:
    kept = logits.topk(n, dim=-1, largest=largest).indices
    mask = t.ones_like(logits, dtype=t.bool).scatter(-1, kept, False)
    return logits.masked_fill(mask, float("-inf"))


TOP_K_MISTAKES = [
    Mistake("keeps_k_minus_1", lambda logits, k: _categorical(_keep_top(logits, max(k - 1, 1))),
            "you keep k - 1 tokens (an off-by-one in a slice or a strict comparison with the k-th value); keep "
            "exactly the k largest, `logits.topk(k)`."),
    Mistake("keeps_k_plus_1", lambda logits, k: _categorical(_keep_top(logits, k + 1)),
            "you keep k + 1 tokens; keep exactly the k largest (a logit equal to the k-th value is kept, one "
            "below it is not)."),
    Mistake("smallest_k", lambda logits, k: _categorical(_keep_top(logits, k, largest=False)),
            "you keep the k smallest logits (an ascending sort); keep the k largest: `topk` (largest=True) or "
            "`sort(descending=True)`."),
    Mistake("samples_unfiltered", lambda logits, k: (logits.topk(k), _categorical(logits))[1],
            "you compute the top k but sample from the unfiltered logits; sample from the k kept logits only."),
    Mistake("positions_not_ids", lambda logits, k: _categorical(logits.topk(k).values),
            "you return positions in the top-k list (0 to k - 1) instead of vocabulary ids; map them back with "
            "`top_ids.gather(-1, choice[:, None])`."),
    Mistake("uniform_among_top_k", lambda logits, k: logits.topk(k).indices.gather(
                -1, t.randint(0, k, (logits.shape[0], 1))).squeeze(-1),
            "you pick uniformly among the k kept tokens; sample them in proportion to softmax of their logits."),
    Mistake("greedy", lambda logits, k: logits.argmax(dim=-1),
            "you always return the most likely token; sample among the k largest."),
    Mistake("ids_from_first_row", lambda logits, k: logits.topk(k).indices[0][_categorical(logits.topk(k).values)],
            "you map every row's choice back through row 0's ids (`top_ids[0]`); each row has its own: "
            "`top_ids.gather(-1, choice[:, None])`."),
]

# ------------------------------------------------------------------------------------------------- top-p


def _top_p(logits, top_p, min_tokens_to_keep=1, *, inclusive=False, at_most=False, sort=True, on_logits=False, use_min=True,
           descending=True):
    if sort:
        values, order = logits.sort(dim=-1, descending=descending)
    else:
        values, order = logits, t.arange(logits.shape[-1]).expand(logits.shape)
    weights = values if on_logits else values.softmax(dim=-1)
    cumulative = weights.cumsum(dim=-1)
    measured = cumulative if inclusive else cumulative - weights
    keep = measured <= top_p if at_most else measured < top_p
    rank = t.arange(logits.shape[-1])
    keep = keep | (rank < (min_tokens_to_keep if use_min else 1))
    choice = _categorical(values.masked_fill(~keep, float("-inf")))
    return order.gather(-1, choice[:, None]).squeeze(-1)


TOP_P_BOUNDARY_HINT = ("you keep a token whose preceding mass equals top_p: the token that reaches top_p is the "
                       "crossing token and the last one kept; keep a token only while the mass before it is *below* "
                       "top_p (`<`, not `<=`)")

TOP_P_MISTAKES = [
    Mistake("drops_crossing_token", functools.partial(_top_p, inclusive=True),
            "you drop the token that crosses top_p; keep a token while the probability mass *before* it is below "
            "top_p, so the crossing token is kept (compare `cumsum - probs` with top_p)."),
    Mistake("unsorted_cumsum", functools.partial(_top_p, sort=False),
            "you take the cumulative sum in vocabulary order; sort each row by probability, descending, first."),
    Mistake("ignores_min_tokens_to_keep", functools.partial(_top_p, use_min=False),
            "you ignore min_tokens_to_keep; always keep at least the min_tokens_to_keep most likely tokens."),
    Mistake("threshold_on_logits", functools.partial(_top_p, on_logits=True),
            "you add up logits, not probabilities; apply softmax to the sorted logits before the cumulative sum."),
    Mistake("ascending_sort", functools.partial(_top_p, descending=False),
            "you sort in ascending order, so the nucleus is made of the least likely tokens; sort with "
            "`descending=True`."),
    Mistake("keeps_boundary_token", functools.partial(_top_p, at_most=True), TOP_P_BOUNDARY_HINT + "."),
    Mistake("samples_unfiltered", lambda logits, top_p, min_tokens_to_keep=1: _categorical(logits),
            "you sample from the unfiltered logits; set the logits outside the nucleus to -inf before sampling."),
]

# ------------------------------------------------------------------------------------------- beam search


def _beam(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0, *,
          score="sum", survivors="global", order="best", ngram_shift=0, ngram_prompt=True):
    tokens, scores = prompt[None], t.zeros(1)
    n_prompt = prompt.shape[0]
    with t.no_grad():
        for step in range(max_new_tokens):
            logits = model(tokens)[:, -1]
            logprobs = logits if score == "logits" else logits.log_softmax(dim=-1)
            if no_repeat_ngram_size:
                size = no_repeat_ngram_size + ngram_shift
                seen = tokens if ngram_prompt else tokens[:, n_prompt:]
                banned = ref.banned_next_tokens(seen, size, logprobs.shape[-1]) if seen.shape[1] else t.zeros_like(logprobs, dtype=t.bool)
                logprobs = logprobs.masked_fill(banned, float("-inf"))
            d_vocab = logprobs.shape[-1]
            if score == "product":
                candidates = (scores[:, None] * logprobs.exp()).flatten() if step else logprobs.exp().flatten()
            elif score == "last":
                candidates = logprobs.flatten()
            else:
                candidates = (scores[:, None] + logprobs).flatten()
            if survivors == "one_per_beam" and step > 0:
                best = logprobs.argmax(dim=-1)
                flat = t.arange(tokens.shape[0]) * d_vocab + best
                new_scores = candidates[flat]
            else:
                new_scores, flat = candidates.topk(num_beams)
            beam, token = flat // d_vocab, flat % d_vocab
            tokens, scores = t.cat([tokens[beam], token[:, None]], dim=1), new_scores
    ranking = scores.argsort(descending=(order == "best"))
    scores, tokens = scores[ranking], tokens[ranking]
    return scores[:num_return_sequences], tokens[:num_return_sequences]


NGRAM_REPEATS_HINT = ("Before choosing the survivors, set to -inf the log-probability of every token that would complete "
                      "an n-gram already in that beam, prompt included: its n - 1 predecessors equal the first n - 1 "
                      "tokens of an earlier n-gram.")
NGRAM_TOO_MUCH_HINT = ("Ban only tokens that would complete an n-gram already in that beam (the last n - 1 tokens "
                       "match the start of an earlier n-gram); with n = 1, every token already present.")

BEAM_MISTAKES = [
    Mistake("scores_not_summed", functools.partial(_beam, score="last"),
            "your scores are the last token's log-probability; a beam's score accumulates: "
            "`scores[:, None] + logprobs`."),
    Mistake("multiplies_probabilities", functools.partial(_beam, score="product"),
            "you multiply probabilities; work in log space and add log-probabilities (products of many "
            "probabilities underflow, and the scores to return are log-probabilities)."),
    Mistake("sums_logits", functools.partial(_beam, score="logits"),
            "you add raw logits; normalise each step with `log_softmax(dim=-1)` first, so beams compare fairly."),
    Mistake("one_child_per_beam", functools.partial(_beam, survivors="one_per_beam"),
            "each beam keeps only its own best token; the survivors are the best num_beams extensions overall, "
            "so one strong beam may supply several and a weak one none."),
    Mistake("worst_first", functools.partial(_beam, order="worst"),
            "you return the lowest-scoring beams first; sort by score, descending, and return the best."),
    Mistake("ngram_off_by_one", functools.partial(_beam, ngram_shift=1),
            "your ban checks n-grams one token too long; a token is banned when it and the previous n - 1 tokens "
            "form an n-gram already in the beam."),
    Mistake("ngram_ignores_prompt", functools.partial(_beam, ngram_prompt=False),
            "your n-gram ban ignores the prompt; n-grams of the prompt count too (as in Hugging Face's "
            "no_repeat_ngram_size)."),
]

# ---------------------------------------------------------------------------------------------- KV cache


def _forward(model, tokens, cache=None, *, positions="offset", extend="cat", mask="offset", scale=True):
    start = 0 if cache is None else cache.n_positions
    pos = model.pos_embed.W_pos[: tokens.shape[1]] if positions == "restart" else model.pos_embed.W_pos[start:start + tokens.shape[1]]
    residual = model.embed(tokens) + pos
    keys, values = [], []
    for layer, block in enumerate(model.blocks):
        attn, x = block.attn, block.ln1(residual)

        def project(w, b):
            return einops.einsum(x, w, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + b

        q, k_new, v_new = project(attn.W_Q, attn.b_Q), project(attn.W_K, attn.b_K), project(attn.W_V, attn.b_V)
        past_k = None if cache is None else cache.keys[layer]
        past_v = None if cache is None else cache.values[layer]
        k = k_new if past_k is None else t.cat([past_k, k_new], dim=1)
        v = v_new if past_v is None else t.cat([past_v, v_new], dim=1)
        scores = einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")
        if scale:
            scores = scores / math.sqrt(attn.cfg.d_head)
        n_past = k.shape[1] - q.shape[1]
        if mask != "none":
            diagonal = n_past + 1 if mask == "offset" else 1
            future = t.triu(t.ones(q.shape[1], k.shape[1], dtype=t.bool), diagonal=diagonal)
            scores = scores.masked_fill(future, attn.IGNORE)
        z = einops.einsum(scores.softmax(-1), v, "batch n_heads query_pos key_pos, batch key_pos n_heads d_head -> batch query_pos n_heads d_head")
        residual = residual + einops.einsum(z, attn.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model") + attn.b_O
        if hasattr(block, "mlp"):
            residual = residual + block.mlp(block.ln2(residual))
        if extend == "replace":
            k, v = k_new, v_new
        keys.append(k)
        values.append(v)
    new_cache = ref.KVCache(keys, values)
    if extend == "keep" and cache is not None:
        new_cache = cache
    return model.unembed(model.ln_final(residual)), new_cache


CACHE_LENGTH_HINT = ("return, for every layer, the cached keys and values followed by the new positions' "
                     "(`t.cat([past_k, k], dim=1)`), so the cache grows by the number of new tokens.")
POSITION_HINT = ("the new tokens' positional embeddings are wrong; they are positions c, c + 1, … with "
                 "c = cache.n_positions: use `model.pos_embed.W_pos[c : c + n]`.")
MASK_OFFSET_HINT = ("the causal mask ignores the cached keys; with c cached, query i is position c + i and sees keys "
                    "0 … c + i: `t.triu(ones(query_pos, key_pos), diagonal=c + 1)` marks the future ones.")
CACHED_ATTENTION_HINT = ("each new query must attend over the cached keys and values followed by the new ones "
                         "(`t.cat([past_k, k], dim=1)`, in that order, on the position axis), with the causal mask's "
                         "diagonal moved by the number cached.")

KV_CACHE_MISTAKES = [
    Mistake("positions_restart", functools.partial(_forward, positions="restart"),
            "your positional embeddings restart at 0 for every call; the new tokens are positions c, c + 1, … with "
            "c = cache.n_positions: use `model.pos_embed.W_pos[c : c + n]`."),
    Mistake("cache_not_extended", functools.partial(_forward, extend="keep"),
            "you return the cache you were given, so the new positions' keys and values are lost; return the "
            "cache with them concatenated (dim=1)."),
    Mistake("cache_replaced", functools.partial(_forward, extend="replace"),
            "your returned cache holds only the new positions' keys and values; concatenate them after the cached "
            "ones, `t.cat([past_k, k], dim=1)`."),
    Mistake("mask_not_offset", functools.partial(_forward, mask="plain"),
            "your causal mask ignores the cached positions: with c cached keys, query i is position c + i, so use "
            "`t.triu(..., diagonal=c + 1)` on the [query_pos key_pos] scores."),
    Mistake("no_mask", functools.partial(_forward, mask="none"),
            "you apply no causal mask; when several new tokens are processed at once, each may only see keys up to "
            "its own position."),
    Mistake("no_scale", functools.partial(_forward, scale=False),
            "you do not divide the attention scores by sqrt(d_head)."),
]

# ------------------------------------------------------------------------------------ generate with cache

NO_CACHE_HINT = ("After the prompt, feed forward_with_cache only the newest token, `next_token[:, None]`, with the "
                 "cache it returned last time.")


def _cached_generate(model, input_ids, max_new_tokens, *, mode="right", **sampling_kwargs):
    with t.no_grad():
        if mode == "no_cache":
            return ref.generate(model, input_ids, max_new_tokens, **sampling_kwargs)
        logits, cache = ref.forward_with_cache(model, input_ids)
        prompt_cache = cache
        tokens = input_ids
        for step in range(max_new_tokens):
            position = 0 if (mode == "first_logits" and step == 0) else -1
            if mode == "ignore_options":
                next_token = logits[:, position].argmax(dim=-1)
            else:
                history = input_ids if mode == "prompt_only" else tokens
                next_token = ref.sample_next_token(history, logits[:, position], **sampling_kwargs)
            tokens = t.cat([tokens, next_token[:, None]], dim=1)
            if mode == "not_reassigned":
                logits, _ = ref.forward_with_cache(model, next_token[:, None], prompt_cache)
            elif mode == "dropped":
                logits, _ = ref.forward_with_cache(model, next_token[:, None])
            elif mode in ("ignore_options", "prompt_only"):
                logits, cache = ref.forward_with_cache(model, next_token[:, None], cache)
            elif mode == "whole_sequence":
                logits, cache = ref.forward_with_cache(model, tokens, cache)
            else:
                logits, cache = ref.forward_with_cache(model, next_token[:, None], cache)
    return tokens


KV_GENERATE_MISTAKES = [
    Mistake("no_cache", functools.partial(_cached_generate, mode="no_cache"), NO_CACHE_HINT),
    Mistake("cache_not_reassigned", functools.partial(_cached_generate, mode="not_reassigned"),
            "you do not keep the cache forward_with_cache returns (`logits, _ = ...`), so every step sees only the "
            "prompt: write `logits, cache = forward_with_cache(model, next_token[:, None], cache)`."),
    Mistake("cache_dropped", functools.partial(_cached_generate, mode="dropped"),
            "you call forward_with_cache without the cache after the prompt, so each new token is processed alone at "
            "position 0; pass the cache."),
    Mistake("feeds_whole_sequence", functools.partial(_cached_generate, mode="whole_sequence"),
            "you feed the whole sequence together with the cache, so cached positions are processed again as new "
            "ones; feed only the newest token."),
    Mistake("first_position_logits", functools.partial(_cached_generate, mode="first_logits"),
            "after the prompt you take the logits of position 0; the next token comes from the last position, "
            "`logits[:, -1]`."),
    Mistake("ignores_sampling_options", functools.partial(_cached_generate, mode="ignore_options"),
            IGNORES_OPTIONS_HINT),
    Mistake("sampler_sees_prompt_only", functools.partial(_cached_generate, mode="prompt_only"), PROMPT_ONLY_HINT),
]
