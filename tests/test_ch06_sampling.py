"""Chapter 06's checkers: the reference passes, every catalogued mistake is rejected with its hint, valid
alternative implementations (other ways of sampling, looping, masking) pass, stubs read "not implemented yet"."""

from __future__ import annotations

import math
import re

import einops
import pytest
import torch as t
import torch.nn.functional as F

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.reference import sampling as ref

REFERENCE = {
    "greedy": ref.generate,
    "temperature": ref.apply_temperature,
    "frequency_penalty": ref.apply_frequency_penalty,
    "top_k": ref.sample_top_k,
    "top_p": ref.sample_top_p,
    "beam_search": ref.beam_search,
    "kv_cache": ref.forward_with_cache,
    "kv_generate": ref.generate_with_cache,
}
CATALOGUE = [(exercise, mistake) for exercise in REFERENCE for mistake in MISTAKES[exercise]]


@pytest.mark.parametrize("exercise", REFERENCE)
def test_reference_passes_with_one_line(exercise, capfd):
    CHECKERS[exercise](REFERENCE[exercise])
    out, err = capfd.readouterr()
    assert out.count("\n") == 1 and out.startswith("✓ "), out
    assert err == ""


@pytest.mark.parametrize("exercise", REFERENCE)
def test_every_exercise_has_at_least_four_mistakes(exercise):
    assert len(MISTAKES[exercise]) >= 4


@pytest.mark.parametrize(("exercise", "mistake"), CATALOGUE, ids=[f"{e}-{m.name}" for e, m in CATALOGUE])
def test_mistake_is_rejected_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


def _stub(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("exercise", REFERENCE)
def test_stub_is_not_implemented_yet(exercise):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](_stub)


def test_checks_leave_the_global_random_stream_alone():
    t.manual_seed(123)
    expected = t.rand(3)
    t.manual_seed(123)
    CHECKERS["top_p"](ref.sample_top_p)
    assert t.equal(t.rand(3), expected)


# ------------------------------------------------------------------------------------------------ greedy


@t.no_grad()
def generate_list_loop(model, input_ids, max_new_tokens, **sampling_kwargs):
    rows = input_ids.tolist()
    for _ in range(max_new_tokens):
        context = t.tensor([row[max(0, len(row) - model.cfg.n_ctx):] for row in rows])
        next_token = ref.sample_next_token(t.tensor(rows), model(context)[:, -1, :], **sampling_kwargs)
        rows = [row + [int(tok)] for row, tok in zip(rows, next_token)]
    return t.tensor(rows)


def generate_preallocated(model, input_ids, max_new_tokens, **sampling_kwargs):
    batch, pos = input_ids.shape
    out = t.zeros(batch, pos + max_new_tokens, dtype=t.long)
    out[:, :pos] = input_ids
    with t.no_grad():
        for step in range(pos, pos + max_new_tokens):
            window = out[:, max(0, step - model.cfg.n_ctx):step]
            out[:, step] = ref.sample_next_token(out[:, :step], model(window)[:, -1].log_softmax(-1), **sampling_kwargs)
    return out


def generate_recursive(model, input_ids, max_new_tokens, **sampling_kwargs):
    if max_new_tokens == 0:
        return input_ids.clone()
    with t.no_grad():
        logits = model(input_ids[:, -model.cfg.n_ctx:]).select(1, -1)
    next_token = ref.sample_next_token(input_ids, logits, **sampling_kwargs)
    return generate_recursive(model, t.cat([input_ids, next_token.unsqueeze(1)], 1), max_new_tokens - 1, **sampling_kwargs)


# ------------------------------------------------------------------------------------- temperature, penalty


def temperature_reciprocal(logits, temperature):
    return logits * (1.0 / temperature)


def temperature_log_softmax(logits, temperature):
    return F.log_softmax(logits / temperature, dim=-1)  # a shift per row: the same distribution


def temperature_centred(logits, temperature):
    scaled = t.div(logits, temperature)
    return scaled - scaled.max(dim=-1, keepdim=True).values


def penalty_bincount(input_ids, logits, freq_penalty):
    counts = t.stack([t.bincount(row, minlength=logits.shape[-1]) for row in input_ids]).to(logits.dtype)
    return logits - freq_penalty * counts


def penalty_one_hot(input_ids, logits, freq_penalty):
    return logits - freq_penalty * F.one_hot(input_ids, logits.shape[-1]).sum(dim=1).float()


def penalty_comparison(input_ids, logits, freq_penalty):
    vocab = t.arange(logits.shape[-1])
    counts = (input_ids[:, :, None] == vocab).sum(dim=1)
    out = logits.clone()
    out -= freq_penalty * counts  # in place on a copy: the caller's logits are untouched
    return out


# ------------------------------------------------------------------------------------------------- top-k


def top_k_mask_multinomial(logits, k):
    kth = logits.topk(k, dim=-1).values[:, -1:]
    probs = logits.masked_fill(logits < kth, float("-inf")).softmax(dim=-1)
    return t.multinomial(probs, 1).squeeze(-1)


def top_k_gumbel(logits, k):
    top = logits.topk(k, dim=-1)
    gumbel = -t.log(-t.log(t.rand(top.values.shape)))
    return top.indices.gather(-1, (top.values + gumbel).argmax(-1, keepdim=True)).squeeze(-1)


def top_k_sorted_loop(logits, k):
    out = []
    for row in logits:  # ARENA's 1-D form, applied row by row
        values, ids = row.sort(descending=True)
        out.append(ids[t.distributions.Categorical(logits=values[:k]).sample()])
    return t.stack(out)


# ------------------------------------------------------------------------------------------------- top-p


def top_p_searchsorted_loop(logits, top_p, min_tokens_to_keep=1):
    out = []
    for row in logits:  # ARENA's form: the first index where the cumulative sum reaches top_p, plus one
        probs, ids = row.softmax(-1).sort(descending=True)
        n_keep = max(int(t.searchsorted(probs.cumsum(-1), top_p, side="left")) + 1, min_tokens_to_keep)
        choice = t.multinomial(probs[:n_keep] / probs[:n_keep].sum(), 1)
        out.append(ids[choice].squeeze())
    return t.stack(out)


def top_p_huggingface(logits, top_p, min_tokens_to_keep=1):
    # Hugging Face's TopPLogitsWarper: sort ascending and remove the tail whose total is <= 1 - top_p.
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - top_p)
    remove[..., -min_tokens_to_keep:] = False
    remove = remove.scatter(1, order, remove)
    return t.distributions.Categorical(logits=logits.masked_fill(remove, -math.inf)).sample()


def top_p_gumbel(logits, top_p, min_tokens_to_keep=1):
    sorted_logits, order = t.sort(logits, dim=-1, descending=True)
    probs = F.softmax(sorted_logits, dim=-1)
    keep = t.cat([t.zeros_like(probs[:, :1]), probs.cumsum(-1)[:, :-1]], dim=-1) < top_p
    keep[:, :min_tokens_to_keep] = True
    gumbel = -t.log(-t.log(t.rand(probs.shape)))
    rank = t.where(keep, sorted_logits + gumbel, t.full_like(probs, -math.inf)).argmax(-1)
    return order[t.arange(logits.shape[0]), rank]


# ------------------------------------------------------------------------------------------- beam search


def _banned_set(row: list[int], n: int) -> set[int]:
    if n <= 0 or len(row) < n:
        return set()
    prefix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return {row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix}


@t.no_grad()
def beam_python(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0):
    beams = [(0.0, prompt.tolist())]
    for _ in range(max_new_tokens):
        logprobs = F.log_softmax(model(t.tensor([row for _, row in beams])).select(1, -1), dim=-1)
        candidates = []
        for (score, row), lp in zip(beams, logprobs):
            banned = _banned_set(row, no_repeat_ngram_size)
            candidates += [(score + float(lp[tok]), row + [tok]) for tok in range(lp.shape[0]) if tok not in banned]
        beams = sorted(candidates, key=lambda c: -c[0])[:num_beams]
    best = beams[:num_return_sequences]
    return t.tensor([s for s, _ in best]), t.tensor([r for _, r in best])


@t.no_grad()
def beam_two_stage(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0):
    # Hugging Face's order: each beam's best 2 * num_beams tokens first, then the best of those overall.
    tokens, scores = prompt.unsqueeze(0), t.zeros(1)
    for _ in range(max_new_tokens):
        logprobs = model(tokens)[:, -1].softmax(-1).log()
        banned = ref.banned_next_tokens(tokens, no_repeat_ngram_size, logprobs.shape[-1])
        logprobs = t.where(banned, t.full_like(logprobs, -math.inf), logprobs)
        top = (scores[:, None] + logprobs).topk(min(2 * num_beams, logprobs.shape[-1]), dim=-1)
        flat_scores, flat = top.values.flatten(), top.indices.flatten()
        best = flat_scores.argsort(descending=True)[:num_beams]
        beam = best // top.values.shape[1]
        tokens = t.cat([tokens[beam], flat[best][:, None]], dim=-1)
        scores = flat_scores[best]
    return scores[:num_return_sequences], tokens[:num_return_sequences]


@t.no_grad()
def beam_einops(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0):
    tokens, scores = einops.rearrange(prompt, "pos -> 1 pos"), t.zeros(1, dtype=t.float64)
    for _ in range(max_new_tokens):
        logprobs = model(tokens)[:, -1].log_softmax(-1).double()
        for b, row in enumerate(tokens.tolist()):
            for tok in _banned_set(row, no_repeat_ngram_size):
                logprobs[b, tok] = -math.inf
        d_vocab = logprobs.shape[-1]
        total = einops.rearrange(scores[:, None] + logprobs, "beam d_vocab -> (beam d_vocab)")
        scores, flat = total.sort(descending=True)
        scores, flat = scores[:num_beams], flat[:num_beams]
        tokens = t.cat([tokens[flat // d_vocab], (flat % d_vocab)[:, None]], 1)
    return scores[:num_return_sequences].float(), tokens[:num_return_sequences]


# ---------------------------------------------------------------------------------------------- KV cache


def _attention_matmul(attn, x, past_k, past_v):
    batch, pos, _ = x.shape
    n_heads, d_head = attn.cfg.n_heads, attn.cfg.d_head

    def project(w, b):  # [n_heads d_model d_head] as one [d_model, n_heads*d_head] matrix
        return (x @ w.permute(1, 0, 2).reshape(x.shape[-1], -1)).reshape(batch, pos, n_heads, d_head) + b

    q, k, v = project(attn.W_Q, attn.b_Q), project(attn.W_K, attn.b_K), project(attn.W_V, attn.b_V)
    if past_k is not None:
        k, v = t.cat([past_k, k], 1), t.cat([past_v, v], 1)
    start = k.shape[1] - pos
    query_at = t.arange(start, start + pos)[:, None]
    visible = t.arange(k.shape[1])[None, :] <= query_at  # absolute positions: key <= query
    scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / math.sqrt(d_head)  # [batch n_heads query_pos key_pos]
    scores = t.where(visible, scores, attn.IGNORE)
    z = (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2)  # [batch pos n_heads d_head]
    return z.reshape(batch, pos, -1) @ attn.W_O.reshape(-1, x.shape[-1]) + attn.b_O, k, v


def kv_matmul(model, tokens, cache=None):
    start = cache.n_positions if cache is not None else 0
    positions = t.arange(start, start + tokens.shape[1])
    residual = model.embed.W_E[tokens] + model.pos_embed.W_pos[positions]
    keys, values = [], []
    for i, block in enumerate(model.blocks):
        out, k, v = _attention_matmul(block.attn, block.ln1(residual), cache and cache.keys[i], cache and cache.values[i])
        residual = residual + out
        residual = residual + block.mlp(block.ln2(residual))
        keys.append(k)
        values.append(v)
    return model.unembed(model.ln_final(residual)), ref.KVCache(keys, values)


def kv_sdpa(model, tokens, cache=None):
    start = 0 if cache is None else cache.n_positions
    residual = model.embed(tokens) + model.pos_embed.W_pos[start:start + tokens.shape[1]]
    new_cache = ref.KVCache([], []) if cache is None else cache  # extended in place, layer by layer
    for i, block in enumerate(model.blocks):
        attn, x = block.attn, block.ln1(residual)
        q, k, v = (einops.einsum(x, w, "batch pos d_model, n_heads d_model d_head -> batch n_heads pos d_head")
                   + einops.rearrange(b, "n_heads d_head -> n_heads 1 d_head")
                   for w, b in ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V)))
        if cache is None:
            new_cache.keys.append(k.transpose(1, 2))
            new_cache.values.append(v.transpose(1, 2))
        else:
            new_cache.keys[i] = t.cat([new_cache.keys[i], k.transpose(1, 2)], 1)
            new_cache.values[i] = t.cat([new_cache.values[i], v.transpose(1, 2)], 1)
        all_k, all_v = new_cache.keys[i].transpose(1, 2), new_cache.values[i].transpose(1, 2)
        mask = t.ones(q.shape[2], all_k.shape[2], dtype=t.bool).tril(diagonal=all_k.shape[2] - q.shape[2])
        z = F.scaled_dot_product_attention(q, all_k, all_v, attn_mask=mask)
        residual = residual + einops.einsum(z, attn.W_O, "batch n_heads pos d_head, n_heads d_head d_model -> batch pos d_model") + attn.b_O
        residual = residual + block.mlp(block.ln2(residual))
    return model.unembed(model.ln_final(residual)), new_cache


def kv_tuple_cache(model, tokens, cache=None):
    # The reference's attention, with the model's own modules for embeddings (a different route to the same sums).
    logits, new_cache = ref.forward_with_cache(model, tokens, cache)
    return (logits.clone(), new_cache)


def kv_recomputes_everything(model, tokens, cache=None):
    """Correct logits, but the 'cache' stores tokens and the whole prefix is recomputed: not a cache."""
    seen = tokens if cache is None else t.cat([cache.keys[0], tokens], dim=1)
    return model(seen)[:, -tokens.shape[1]:], ref.KVCache([seen], [seen])


def kv_generate_token_by_token_prefill(model, input_ids, max_new_tokens, **sampling_kwargs):
    with t.no_grad():
        cache = None
        for i in range(input_ids.shape[1]):
            logits, cache = ref.forward_with_cache(model, input_ids[:, i:i + 1], cache)
        tokens = input_ids
        for _ in range(max_new_tokens):
            next_token = ref.sample_next_token(tokens, logits[:, -1], **sampling_kwargs)
            tokens = t.cat([tokens, next_token[:, None]], 1)
            logits, cache = ref.forward_with_cache(model, next_token[:, None], cache)  # one step more than needed
    return tokens


def kv_generate_list(model, input_ids, max_new_tokens, **sampling_kwargs):
    with t.no_grad():
        logits, cache = ref.forward_with_cache(model, input_ids)
        new = []
        while len(new) < max_new_tokens:
            so_far = t.cat([input_ids, *new], 1) if new else input_ids
            new.append(ref.sample_next_token(so_far, logits[:, -1], **sampling_kwargs)[:, None])
            if len(new) < max_new_tokens:
                logits, cache = ref.forward_with_cache(model, new[-1], cache)
    return t.cat([input_ids, *new], dim=1)


def kv_generate_with_matmul_forward(model, input_ids, max_new_tokens, **sampling_kwargs):
    with t.no_grad():
        logits, cache = kv_matmul(model, input_ids)
        tokens = input_ids
        for step in range(max_new_tokens):
            next_token = ref.sample_next_token(tokens, logits[:, -1], **sampling_kwargs)
            tokens = t.cat([tokens, next_token[:, None]], 1)
            if step < max_new_tokens - 1:
                logits, cache = kv_matmul(model, next_token[:, None], cache)
    return tokens


ALTERNATIVES = {
    "greedy": [generate_list_loop, generate_preallocated, generate_recursive],
    "temperature": [temperature_reciprocal, temperature_log_softmax, temperature_centred],
    "frequency_penalty": [penalty_bincount, penalty_one_hot, penalty_comparison],
    "top_k": [top_k_mask_multinomial, top_k_gumbel, top_k_sorted_loop],
    "top_p": [top_p_searchsorted_loop, top_p_huggingface, top_p_gumbel],
    "beam_search": [beam_python, beam_two_stage, beam_einops],
    "kv_cache": [kv_matmul, kv_sdpa, kv_tuple_cache],
    "kv_generate": [kv_generate_token_by_token_prefill, kv_generate_list, kv_generate_with_matmul_forward],
}
ALTERNATIVE_CASES = [(exercise, fn) for exercise, fns in ALTERNATIVES.items() for fn in fns]


@pytest.mark.parametrize(("exercise", "impl"), ALTERNATIVE_CASES, ids=[f"{e}-{f.__name__}" for e, f in ALTERNATIVE_CASES])
def test_valid_alternative_passes(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    out, err = capfd.readouterr()
    assert out.startswith("✓ ") and err == ""


def test_a_cache_that_recomputes_the_prefix_is_rejected_for_its_cost():
    with pytest.raises(AssertionError, match="Process only the new positions"):
        CHECKERS["kv_cache"](kv_recomputes_everything)


def test_sampler_returning_a_column_is_told_to_squeeze():
    with pytest.raises(AssertionError, match=re.escape("squeeze(-1)")):
        CHECKERS["top_k"](lambda logits, k: t.multinomial(logits.topk(k).values.softmax(-1), 1))


def test_greedy_prompt_past_n_ctx_without_cropping_gets_the_crop_hint():
    def no_crop(model, input_ids, max_new_tokens, **kwargs):
        tokens = input_ids
        for _ in range(max_new_tokens):
            tokens = t.cat([tokens, ref.sample_next_token(tokens, model(tokens)[:, -1], **kwargs)[:, None]], 1)
        return tokens

    with pytest.raises(AssertionError, match="feed the model only the last n_ctx tokens"):
        CHECKERS["greedy"](no_crop)


# ------------------------------------------------------------- stated requirements, each with its own message

from utils.checks import mistakes_ch06 as catalogue  # noqa: E402
from utils.checks.ch06_sampling import SAMPLING_OPTIONS, _sampling_cases  # noqa: E402
from utils.checks.sampling_common import small_model  # noqa: E402


def _loop(choose):
    """A generate loop whose next token is `choose(tokens_so_far, input_ids, logits, kwargs)`."""
    @t.no_grad()
    def generate(model, input_ids, max_new_tokens, **sampling_kwargs):
        tokens = input_ids
        for _ in range(max_new_tokens):
            logits = model(tokens[:, -model.cfg.n_ctx:])[:, -1]
            tokens = t.cat([tokens, choose(tokens, input_ids, logits, sampling_kwargs)[:, None]], dim=1)
        return tokens
    return generate


def test_generate_that_hard_codes_argmax_is_told_the_options_never_reach_the_sampler():
    with pytest.raises(AssertionError, match="temperature=0.0 never reached sample_next_token") as info:
        CHECKERS["greedy"](_loop(lambda tokens, ids, logits, kw: logits.argmax(-1)))
    assert "**sampling_kwargs" in str(info.value)


def test_generate_that_drops_the_options_in_a_fresh_notebook_is_told_so_not_shown_a_name_error():
    def notebook_sampler(input_ids, logits, temperature=1.0, **kwargs):  # section 2 not written yet
        if temperature == 0.0:
            return logits.argmax(-1)
        raise NameError("name 'apply_temperature' is not defined")

    with pytest.raises(AssertionError, match="did not hand temperature=0.0 on to sample_next_token"):
        CHECKERS["greedy"](_loop(lambda tokens, ids, logits, kw: notebook_sampler(tokens, logits)))


def test_generate_that_always_appends_a_token_fails_on_max_new_tokens_zero():
    def at_least_one(model, input_ids, max_new_tokens, **kwargs):
        return ref.generate(model, input_ids, max(max_new_tokens, 1), **kwargs)

    with pytest.raises(AssertionError, match=r"output shape \(2, 5\) on 2 prompts of 4 tokens with max_new_tokens = 0"):
        CHECKERS["greedy"](at_least_one)


def test_ids_are_compared_as_ids_naming_row_position_and_both_ids():
    def float_ids(model, input_ids, max_new_tokens, **kwargs):
        return ref.generate(model, input_ids, max_new_tokens, **kwargs).float()

    with pytest.raises(AssertionError, match="returned dtype float32.*token ids are integer tensors"):
        CHECKERS["greedy"](float_ids)

    def off_by_one_id(model, input_ids, max_new_tokens, **kwargs):
        out = ref.generate(model, input_ids, max_new_tokens, **kwargs).clone()
        out[1, -1] = (out[1, -1] + 1) % model.cfg.d_vocab
        return out

    with pytest.raises(AssertionError) as info:
        CHECKERS["greedy"](off_by_one_id)
    message = str(info.value)
    assert re.search(r"row 1 of 3 differ; first at row 1, position 10 \(new token 6\): got id \d+, expected id \d+", message)
    assert "max |diff|" not in message and "." not in message.split("got id ")[1].split(",")[0]


def test_first_row_for_all_generation_names_the_row():
    with pytest.raises(AssertionError, match="Row 1 continues exactly as row 0 should"):
        CHECKERS["greedy"](_loop(lambda tokens, ids, logits, kw: logits[:1].argmax(-1).expand(len(logits))
                                 if kw.get("temperature") == 0.0 else logits.argmax(-1)))


def test_sampling_options_decide_tokens_and_tell_the_wrong_loops_apart():
    """The kv_generate probes are deterministic and give other tokens than each wrong loop (on some row)."""
    model = small_model(d_vocab=500, n_ctx=128, seed=8)
    wrong = {"greedy": lambda ids, n, o: ref.generate(model, ids, n, temperature=0.0),
             "no temperature": lambda ids, n, o: ref.generate(model, ids, n, **{**o, "temperature": 1.0}),
             "no penalty": lambda ids, n, o: ref.generate(model, ids, n, **{**o, "frequency_penalty": 0.0}),
             "prompt only": lambda ids, n, o: catalogue.SAMPLING_LOOP_MISTAKES[1].impl(model, ids, n, **o)}
    for name, run in wrong.items():
        assert any(not t.equal(run(ids, n, o), ref.generate(model, ids, n, **o)) for _, ids, n, o in _sampling_cases()), name
    for _, ids, n, options in _sampling_cases():
        t.manual_seed(1)
        first = ref.generate(model, ids, n, **options)
        t.manual_seed(2)
        assert t.equal(first, ref.generate(model, ids, n, **options))
    assert len(SAMPLING_OPTIONS) == 2


def test_kv_generate_checks_generate_with_the_sampling_options_too(capfd):
    CHECKERS["kv_generate"](ref.generate_with_cache, ref.generate)
    assert "(and generate's)" in capfd.readouterr().out
    for alternative in (generate_list_loop, generate_recursive):
        CHECKERS["kv_generate"](kv_generate_list, alternative)


@pytest.mark.parametrize(("loop", "message"), [
    (_loop(lambda tokens, ids, logits, kw: logits.argmax(-1)), "hard coded argmax"),
    (_loop(lambda tokens, ids, logits, kw: ref.sample_next_token(ids, logits, **kw)), "sampler sees prompt only"),
], ids=["hard-coded-argmax", "prompt-instead-of-sequence"])
def test_generate_that_ignores_the_options_fails_in_kv_generate(loop, message):
    with pytest.raises(AssertionError, match=message) as info:
        CHECKERS["kv_generate"](ref.generate_with_cache, loop)
    assert str(info.value).startswith("generate on 2 different prompts of 6 tokens, 12 new tokens, temperature=")


def test_top_p_min_tokens_off_by_one_is_told_it_kept_one_too_many_not_that_it_dropped_anything():
    def min_inclusive(logits, top_p, min_tokens_to_keep=1):
        values, order = logits.sort(dim=-1, descending=True)
        probs = values.softmax(-1)
        keep = (probs.cumsum(-1) - probs < top_p) | (t.arange(logits.shape[-1]) <= min_tokens_to_keep)
        choice = t.distributions.Categorical(logits=values.masked_fill(~keep, -math.inf)).sample()
        return order.gather(-1, choice[:, None]).squeeze(-1)

    with pytest.raises(AssertionError) as info:
        CHECKERS["top_p"](min_inclusive)
    message = str(info.value)
    assert "kept the 4 most likely token(s), one too many" in message and "min_tokens_to_keep" in message
    assert "drop" not in message


def test_top_p_with_at_most_is_told_about_the_crossing_token():
    with pytest.raises(AssertionError) as info:
        CHECKERS["top_p"](catalogue.TOP_P_MISTAKES[[m.name for m in catalogue.TOP_P_MISTAKES].index("keeps_boundary_token")].impl)
    message = str(info.value)
    assert "row 0 kept 2 token(s), expected exactly 1" in message and "crossing token" in message and "`<`" in message


def top_p_one_row(logits, top_p, min_tokens_to_keep=1):  # ARENA's shape: logits [d_vocab]
    probs, ids = logits.softmax(-1).sort(descending=True)
    n_keep = max(int(t.searchsorted(probs.cumsum(-1), top_p, side="left")) + 1, min_tokens_to_keep)
    return ids[t.multinomial(probs[:n_keep], 1)].squeeze()


def top_k_one_row(logits, k):
    values, ids = logits.topk(k)
    return ids[t.distributions.Categorical(logits=values).sample()]


def penalty_one_row(input_ids, logits, freq_penalty):
    return logits - freq_penalty * t.bincount(input_ids, minlength=logits.shape[-1])


@pytest.mark.parametrize(("exercise", "impl"), [("top_p", top_p_one_row), ("top_k", top_k_one_row),
                                                ("frequency_penalty", penalty_one_row)])
def test_a_one_row_function_is_told_it_handles_one_row(exercise, impl):
    with pytest.raises(AssertionError, match=r"your function handles one row \(`\[d_vocab\]` logits\)") as info:
        CHECKERS[exercise](impl)
    assert "[batch d_vocab]" in str(info.value) and "bincount" not in str(info.value)


@t.no_grad()
def beam_without_ban(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0):
    return ref.beam_search(model, prompt, num_beams, max_new_tokens, num_return_sequences, 0)


@t.no_grad()
def beam_bans_every_seen_token(model, prompt, num_beams, max_new_tokens, num_return_sequences=1, no_repeat_ngram_size=0):
    return ref.beam_search(model, prompt, num_beams, max_new_tokens, num_return_sequences, min(no_repeat_ngram_size, 1))


def test_beam_search_ban_failures_are_about_the_ban_not_the_scores():
    with pytest.raises(AssertionError) as info:
        CHECKERS["beam_search"](beam_without_ban)
    message = str(info.value)
    assert "no_repeat_ngram_size = 2" in message and re.search(r"repeats the 2-gram \[\d+, \d+\]", message)
    assert "Score =" not in message
    with pytest.raises(AssertionError) as info:
        CHECKERS["beam_search"](beam_bans_every_seen_token)
    assert "forbids more than it should" in str(info.value) and "Score =" not in str(info.value)


def _forward_variant(*, position_shift=0, mask_shift=0, repeat_new=False):
    """The reference forward_with_cache with one change a catalogue does not list."""
    def attention(attn, x, past_k, past_v):
        if mask_shift and past_k is not None:  # each query also sees the key after its own
            return _attention_matmul_shifted(attn, x, past_k, past_v, mask_shift)
        return ref.attention_with_cache(attn, x, past_k, past_v)

    def forward(model, tokens, cache=None):
        start = 0 if cache is None else cache.n_positions
        pos = start + (position_shift if cache is not None else 0)
        residual = model.embed(tokens) + model.pos_embed.W_pos[pos:pos + tokens.shape[1]]
        keys, values = [], []
        for layer, block in enumerate(model.blocks):
            past_k = None if cache is None else cache.keys[layer]
            past_v = None if cache is None else cache.values[layer]
            out, k, v = attention(block.attn, block.ln1(residual), past_k, past_v)
            residual = residual + out
            residual = residual + block.mlp(block.ln2(residual))
            keys.append(t.cat([k, k[:, -1:]], 1) if repeat_new else k)
            values.append(t.cat([v, v[:, -1:]], 1) if repeat_new else v)
        return model.unembed(model.ln_final(residual)), ref.KVCache(keys, values)
    return forward


def _attention_matmul_shifted(attn, x, past_k, past_v, shift):
    batch, pos, _ = x.shape
    q = einops.einsum(x, attn.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + attn.b_Q
    k = einops.einsum(x, attn.W_K, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + attn.b_K
    v = einops.einsum(x, attn.W_V, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + attn.b_V
    k, v = t.cat([past_k, k], 1), t.cat([past_v, v], 1)
    n_past = k.shape[1] - pos
    scores = einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")
    future = t.triu(t.ones(pos, k.shape[1], dtype=t.bool), diagonal=n_past + 1 + shift)
    z = einops.einsum((scores / attn.cfg.d_head**0.5).masked_fill(future, attn.IGNORE).softmax(-1), v,
                      "batch n_heads query_pos key_pos, batch key_pos n_heads d_head -> batch query_pos n_heads d_head")
    return einops.einsum(z, attn.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model") + attn.b_O, k, v


@pytest.mark.parametrize(("variant", "expected", "absent"), [
    (dict(position_shift=1), "With all positional embeddings zero they match", "diagonal"),
    (dict(mask_shift=1), "Chunks of one new token match and chunks of several do not", "W_pos"),
    (dict(repeat_new=True), "your returned cache holds 6 position(s), expected 5", "W_pos"),
], ids=["positions", "mask", "cache-length"])
def test_kv_cache_failure_says_where_it_diverges_and_gives_one_fix(variant, expected, absent):
    with pytest.raises(AssertionError) as info:
        CHECKERS["kv_cache"](_forward_variant(**variant))
    message = str(info.value)
    assert "the prefill matches, and the logits first differ at positions" in message
    assert expected in message and absent not in message
