"""Chapter 08: the induction circuit shows up where the chapter says it does, every checker accepts the reference
and valid alternatives (including float64 results), and rejects every catalogued mistake with its hint."""

from __future__ import annotations

import re

import einops
import pytest
import torch as t
import torch.nn.functional as F
from transformer_lens import FactoredMatrix

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.induction import EVAL_REPEAT, load_induction_model, repeated_tokens
from utils.reference import circuits as ref

REFERENCE = {
    "ablation": ref.ablated_loss_increase,
    "patch_residual": ref.patch_residual,
    "patch_head_outputs": ref.patch_head_outputs,
    "path_patch_keys": ref.path_patch_keys,
    "copying_scores": ref.copying_scores,
    "positional_patterns": ref.positional_patterns,
    "composition_scores": ref.composition_scores,
    "key_decomposition": ref.key_score_decomposition,
}
EXERCISES = list(REFERENCE)
CATALOGUE = [(exercise, mistake) for exercise in EXERCISES for mistake in MISTAKES[exercise]]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # every test here runs single-threaded (tests/conftest.py)
    yield


# --------------------------------------------------------------------------------- what the chapter relies on


@pytest.fixture(scope="module")
def patching():
    model = load_induction_model()
    prompts = ref.induction_patching_prompts(16, 20, 12, seed=0)
    with t.no_grad():
        metric = ref.normalised_metric(model(prompts["clean"]), model(prompts["corrupted"]), prompts["answers"],
                                       prompts["distractors"])
    return model, prompts, metric


def test_metric_is_0_on_corrupted_and_1_on_clean(patching):
    model, prompts, metric = patching
    with t.no_grad():
        assert metric(model(prompts["clean"])).item() == pytest.approx(1.0, abs=1e-5)
        assert metric(model(prompts["corrupted"])).item() == pytest.approx(0.0, abs=1e-5)


def test_prompts_differ_in_one_first_copy_position(patching):
    _, prompts, _ = patching
    differ = (prompts["clean"] != prompts["corrupted"]).any(0).nonzero().flatten().tolist()
    assert differ == [12]  # r[11] sits at position 12 (BOS is position 0)
    assert t.equal(prompts["clean"][:, 13], prompts["answers"])


def test_residual_patching_follows_the_information(patching):
    """Layer 0's input matters at the changed token, layer 1's at the token after it, the output at the end."""
    model, prompts, metric = patching
    with t.no_grad():
        result = ref.patch_residual(model, prompts["clean"], prompts["corrupted"], metric)
    assert result.argmax(-1).tolist() == [12, 13, result.shape[1] - 1]
    assert (result.max(-1).values > 0.9).all()


def test_previous_token_head_matters_through_the_induction_keys(patching):
    model, prompts, metric = patching
    with t.no_grad():
        heads = ref.patch_head_outputs(model, prompts["clean"], prompts["corrupted"], metric)
        previous = int(heads[0].argmax())
        induction = heads[1].topk(2).indices.tolist()
        keys = ref.path_patch_keys(model, prompts["clean"], prompts["corrupted"], metric, (0, previous), 1, induction)
    assert heads[0, previous] > 0.3 and keys > 0.3  # most of that head's effect goes through the keys


def test_k_composition_is_highest_for_the_circuit_heads():
    model = load_induction_model()
    with t.no_grad():
        scores = ref.composition_scores(model)
        copying = ref.copying_scores(model, 1)
    induction = copying.topk(2).indices
    best_writer = scores["K"][:, induction].mean(-1).argmax()
    tokens = repeated_tokens(8, EVAL_REPEAT, seed=5)
    with t.no_grad():
        _, cache = model.run_with_cache(tokens)
    first_copy_previous = cache["blocks.0.attn.hook_pattern"].diagonal(-1, -2, -1)[..., :EVAL_REPEAT].mean((0, -1))
    assert first_copy_previous[best_writer] > 0.9
    assert (copying[induction] > 0.9).all()


def test_key_shares_add_up_to_the_stripe_score_and_name_the_previous_token_head():
    model = load_induction_model()
    tokens = repeated_tokens(8, EVAL_REPEAT, seed=6)
    with t.no_grad():
        _, cache = model.run_with_cache(tokens)
        induction = ref.copying_scores(model, 1).topk(2).indices.tolist()
    pos = t.arange(EVAL_REPEAT + 1, 2 * EVAL_REPEAT + 1)
    first_copy_previous = cache["blocks.0.attn.hook_pattern"].diagonal(-1, -2, -1)[..., :EVAL_REPEAT].mean((0, -1))
    for head in induction:
        shares = ref.key_score_decomposition(model, cache, 1, head, EVAL_REPEAT)
        q, k = cache["blocks.1.attn.hook_q"][:, pos, head], cache["blocks.1.attn.hook_k"][:, pos - EVAL_REPEAT + 1, head]
        stripe = float((q * k).sum(-1).mean() / model.cfg.d_head ** 0.5)
        assert sum(shares.values()) == pytest.approx(stripe, abs=1e-3)
        heads = {name: value for name, value in shares.items() if re.fullmatch(r"L0H\d", name)}
        assert first_copy_previous[int(max(heads, key=heads.get)[3:])] > 0.9


# --------------------------------------------------------------------------------------------- the checkers


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes_with_one_line(exercise, capfd):
    CHECKERS[exercise](REFERENCE[exercise])
    out, err = capfd.readouterr()
    assert len(out.splitlines()) == 1 and out.startswith("✓"), out
    assert err == ""


@pytest.mark.parametrize("exercise, mistake", CATALOGUE, ids=[f"{e}-{m.name}" for e, m in CATALOGUE])
def test_mistake_is_caught_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


def test_a_wrong_answer_that_is_no_mistake_is_not_named():
    def off_by_a_little(*args):
        return ref.copying_scores(*args) + 0.01

    with pytest.raises(AssertionError) as info:
        CHECKERS["copying_scores"](off_by_a_little)
    assert "known mistake" not in str(info.value) and "copying_scores" in str(info.value)


def test_key_shares_with_a_missing_component_name_it():
    def no_b_O(*args):
        shares = ref.key_score_decomposition(*args)
        del shares["L0 b_O"]
        return shares

    with pytest.raises(AssertionError, match=r"missing \['L0 b_O'\].*biases included"):
        CHECKERS["key_decomposition"](no_b_O)


def test_key_shares_that_add_up_but_are_split_wrongly_say_so():
    def swapped(*args):
        shares = ref.key_score_decomposition(*args)
        shares["L0H0"], shares["L0H1"] = shares["L0H1"], shares["L0H0"]
        return shares

    with pytest.raises(AssertionError, match=r"so the total is right.*'L0H0' is head 0's own output") as info:
        CHECKERS["key_decomposition"](swapped)
    assert "known mistake" not in str(info.value)


def test_integer_output_is_refused_with_the_expected_dtype():
    def counts(model, layer):
        return (ref.copying_scores(model, layer) * model.cfg.d_vocab).round().long()

    with pytest.raises(AssertionError, match="expected floating point"):
        CHECKERS["copying_scores"](counts)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_catalogue_has_four_mistakes_or_more(exercise):
    assert len(MISTAKES[exercise]) >= 4


@pytest.mark.parametrize("exercise", EXERCISES)
def test_stub_is_not_implemented_yet(exercise, capfd):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](stub)
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------------ valid alternatives


def _ablation_where(model, tokens, repeat_len, layer, head, method, reference_tokens):
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(reference_tokens)
    ref_z = cache[name]
    replacement = {"zero": t.zeros_like(ref_z), "mean": einops.reduce(ref_z, "batch pos n d -> 1 pos n d", "mean"),
                   "resample": ref_z}[method]
    is_head = (t.arange(model.cfg.n_heads) == head)[:, None]
    losses = []
    for hooks in ([], [(name, lambda z, hook: t.where(is_head, replacement, z))]):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        losses.append(F.cross_entropy(logits[:, repeat_len + 1:-1].flatten(0, 1), tokens[:, repeat_len + 2:].flatten()))
    return losses[1] - losses[0]


def _ablation_hooks_context_float64(model, tokens, repeat_len, layer, head, method, reference_tokens):
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(reference_tokens)
    source = cache[name][:, :, head]
    if method == "zero":
        source = source * 0
    elif method == "mean":
        source = source.mean(0).expand_as(source)

    def ablate(z, hook):
        return t.cat([z[:, :, :head], source[:, :, None], z[:, :, head + 1:]], dim=2)

    def loss(logits):
        return ref.per_token_loss(logits, tokens)[:, repeat_len + 1:].double().mean()

    clean = loss(model(tokens))
    with model.hooks(fwd_hooks=[(name, ablate)]):
        ablated = loss(model(tokens))
    return ablated - clean


def _ablation_python_float(*args):
    return float(ref.ablated_loss_increase(*args))


def _resid_one_hook_by_name(model, clean_tokens, corrupted_tokens, metric):
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(clean_tokens)
    rows = []
    for name in names:
        row = []
        for pos in range(clean_tokens.shape[1]):
            keep = (t.arange(clean_tokens.shape[1]) == pos)[None, :, None]
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
                (lambda hook_name, name=name: hook_name == name,
                 lambda resid, hook, keep=keep: t.where(keep, cache[hook.name], resid))])
            row.append(metric(logits))
        rows.append(t.stack(row))
    return t.stack(rows)


def _resid_hooks_context(model, clean_tokens, corrupted_tokens, metric):
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(clean_tokens)
    out = t.empty(len(names), clean_tokens.shape[1], dtype=t.float64)
    for row, name in enumerate(names):
        for pos in range(clean_tokens.shape[1]):
            def patch(resid, hook, pos=pos):
                patched = resid.clone()
                patched[:, pos, :] = cache[hook.name][:, pos, :]
                return patched

            with model.hooks(fwd_hooks=[(name, patch)]):
                out[row, pos] = metric(model(corrupted_tokens)).double()
    return out


def _resid_add_difference(model, clean_tokens, corrupted_tokens, metric):
    n = model.cfg.n_layers
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupted_cache = model.run_with_cache(corrupted_tokens)
    out = t.zeros(len(names), clean_tokens.shape[1])
    for row, name in enumerate(names):
        difference = clean_cache[name] - corrupted_cache[name]
        for pos in range(clean_tokens.shape[1]):
            onehot = F.one_hot(t.tensor(pos), clean_tokens.shape[1]).float()[None, :, None]
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
                (name, lambda resid, hook, d=difference * onehot: resid + d)])
            out[row, pos] = metric(logits)
    return out


def _heads_through_attn_out(model, clean_tokens, corrupted_tokens, metric):
    """Patch each head by adding its (clean - corrupted) z W_O to the layer's output: the same intervention."""
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupted_cache = model.run_with_cache(corrupted_tokens)
    out = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        W_O = model.blocks[layer].attn.W_O
        for head in range(model.cfg.n_heads):
            dz = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, head] - corrupted_cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
            delta = dz @ W_O[head]
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
                (f"blocks.{layer}.hook_attn_out", lambda a, hook, d=delta: a + d)])
            out[layer, head] = metric(logits)
    return out


def _heads_masked(model, clean_tokens, corrupted_tokens, metric):
    _, cache = model.run_with_cache(clean_tokens)
    scores = []
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            mask = t.zeros(1, 1, model.cfg.n_heads, 1)
            mask[..., head, :] = 1.0
            name = f"blocks.{layer}.attn.hook_z"
            logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
                (name, lambda z, hook, m=mask: m * cache[hook.name] + (1 - m) * z)])
            scores.append(metric(logits))
    return t.stack(scores).reshape(model.cfg.n_layers, model.cfg.n_heads)


def _heads_float64_context(model, clean_tokens, corrupted_tokens, metric):
    _, cache = model.run_with_cache(clean_tokens)
    out = t.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=t.float64)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def patch(z, hook, head=head):
                z = z.clone()
                z[..., head, :] = cache[hook.name][..., head, :]
                return z

            with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch)]):
                out[layer, head] = metric(model(corrupted_tokens))
    return out


def _path_linear_delta(model, clean_tokens, corrupted_tokens, metric, sender, receiver_layer, receiver_heads):
    """No LayerNorm in this model: the keys change by exactly delta W_K, so add that to the corrupted keys."""
    layer, head = sender
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupted_cache = model.run_with_cache(corrupted_tokens)
    dz = clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, head] - corrupted_cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    delta_k = einops.einsum(dz @ model.blocks[layer].attn.W_O[head], model.blocks[receiver_layer].attn.W_K,
                            "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head")
    mask = t.zeros(model.cfg.n_heads, 1)
    mask[receiver_heads] = 1.0
    return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[
        (f"blocks.{receiver_layer}.attn.hook_k", lambda k, hook: k + mask * delta_k)]))


def _path_from_components(model, clean_tokens, corrupted_tokens, metric, sender, receiver_layer, receiver_heads):
    """Rebuild the key input from the corrupted stream with the sender's slice swapped, one head at a time."""
    layer, head = sender
    _, clean_cache = model.run_with_cache(clean_tokens)
    _, corrupted_cache = model.run_with_cache(corrupted_tokens)
    W_O = model.blocks[layer].attn.W_O[head]
    swapped = (corrupted_cache[f"blocks.{receiver_layer}.hook_resid_pre"]
               - corrupted_cache[f"blocks.{layer}.attn.hook_z"][:, :, head] @ W_O
               + clean_cache[f"blocks.{layer}.attn.hook_z"][:, :, head] @ W_O)
    attn = model.blocks[receiver_layer].attn

    def patch(k, hook):
        k = k.clone()
        for h in receiver_heads:
            k[:, :, h] = model.blocks[receiver_layer].ln1(swapped) @ attn.W_K[h] + attn.b_K[h]
        return k

    return metric(model.run_with_hooks(corrupted_tokens, fwd_hooks=[(f"blocks.{receiver_layer}.attn.hook_k", patch)]))


def _path_float64(*args):
    return ref.path_patch_keys(*args).double()


def _copying_factored(model, layer):
    attn = model.blocks[layer].attn
    scores = []
    for head in range(model.cfg.n_heads):
        full = (FactoredMatrix(model.embed.W_E @ attn.W_V[head], attn.W_O[head] @ model.unembed.W_U)).AB
        scores.append((full.argmax(-1) == t.arange(full.shape[0])).float().mean())
    return t.stack(scores)


def _copying_diagonal_is_max(model, layer):
    attn = model.blocks[layer].attn
    full = (model.embed.W_E @ attn.W_V) @ (attn.W_O @ model.unembed.W_U)  # [n_heads d_vocab d_vocab]
    own = full.diagonal(dim1=-2, dim2=-1)
    return (own >= full.max(-1).values).double().mean(-1)


def _copying_loop_over_tokens(model, layer):
    attn = model.blocks[layer].attn
    out = t.zeros(model.cfg.n_heads)
    for head in range(model.cfg.n_heads):
        ov = attn.W_V[head] @ attn.W_O[head] @ model.unembed.W_U  # [d_model d_vocab]
        logits = model.embed.W_E @ ov
        out[head] = sum(int(logits[tok].argmax() == tok) for tok in range(logits.shape[0])) / logits.shape[0]
    return out


def _positional_minus_large(model, layer):
    attn = model.blocks[layer].attn
    W_pos = model.pos_embed.W_pos
    scores = t.stack([(W_pos @ attn.W_Q[h]) @ (W_pos @ attn.W_K[h]).T for h in range(model.cfg.n_heads)])
    n = W_pos.shape[0]
    scores = scores / t.sqrt(t.tensor(float(attn.cfg.d_head))) + t.triu(t.full((n, n), -1e9), diagonal=1)
    return F.softmax(scores, dim=-1)


def _positional_factored(model, layer):
    attn = model.blocks[layer].attn
    W_pos = model.pos_embed.W_pos
    qk = FactoredMatrix(attn.W_Q, attn.W_K.transpose(-1, -2))  # [n_heads d_model d_model]
    scores = (W_pos @ qk @ W_pos.T).AB / attn.cfg.d_head ** 0.5
    return scores.masked_fill(~t.tril(t.ones_like(scores[0], dtype=t.bool)), float("-inf")).softmax(-1)


def _positional_float64(model, layer):
    attn = model.blocks[layer].attn
    W_pos = model.pos_embed.W_pos.double()
    q = einops.einsum(W_pos, attn.W_Q.double(), "pos d_model, n_heads d_model d_head -> n_heads pos d_head")
    k = einops.einsum(W_pos, attn.W_K.double(), "pos d_model, n_heads d_model d_head -> n_heads pos d_head")
    scores = q @ k.transpose(-1, -2) / attn.cfg.d_head ** 0.5
    n = W_pos.shape[0]
    return scores.masked_fill(t.ones(n, n, dtype=t.bool).triu(1), float("-inf")).softmax(-1)


def _composition_factored(model, early=0, late=1):
    a, b = model.blocks[early].attn, model.blocks[late].attn
    ov_early = FactoredMatrix(a.W_V, a.W_O)
    qk, ov_late = FactoredMatrix(b.W_Q, b.W_K.transpose(-1, -2)), FactoredMatrix(b.W_V, b.W_O)
    out = {}
    for mode, reader in {"Q": qk, "K": qk.T, "V": ov_late}.items():
        product = ov_early.AB[:, None] @ reader.AB[None, :]
        out[mode] = t.linalg.matrix_norm(product) / (ov_early.norm()[:, None] * reader.norm()[None, :])
    return out


def _composition_loops(model, early=0, late=1):
    a, b = model.blocks[early].attn, model.blocks[late].attn
    n = model.cfg.n_heads
    out = {mode: t.zeros(n, n) for mode in "QKV"}
    for i in range(n):
        writer = a.W_V[i] @ a.W_O[i]
        for j in range(n):
            qk = b.W_Q[j] @ b.W_K[j].T
            for mode, reader in (("Q", qk), ("K", qk.T), ("V", b.W_V[j] @ b.W_O[j])):
                out[mode][i, j] = (writer @ reader).norm() / (writer.norm() * reader.norm())
    return out


def _composition_trace_float64(model, early=0, late=1):
    """||AB||_F^2 = tr(B^T A^T A B), in float64."""
    a, b = model.blocks[early].attn, model.blocks[late].attn
    writer = (a.W_V @ a.W_O).double()
    qk = (b.W_Q @ b.W_K.transpose(-1, -2)).double()
    out = {}
    for mode, reader in {"Q": qk, "K": qk.transpose(-1, -2), "V": (b.W_V @ b.W_O).double()}.items():
        gram = writer.transpose(-1, -2) @ writer  # [n_heads d_model d_model]
        sq = einops.einsum(reader, gram, reader, "late i j, early i k, late k j -> early late")
        out[mode] = sq.sqrt() / (writer.pow(2).sum((-1, -2)).sqrt()[:, None] * reader.pow(2).sum((-1, -2)).sqrt()[None])
    return out


def _stripe_parts(model, cache):
    parts = [cache["hook_embed"], cache["hook_pos_embed"]]
    parts += [cache["blocks.0.attn.hook_z"][:, :, h] @ model.blocks[0].attn.W_O[h] for h in range(model.cfg.n_heads)]
    return parts + [model.blocks[0].attn.b_O.expand_as(parts[0])]


def _names(model):
    return ["embed", "pos_embed", *[f"L0H{h}" for h in range(model.cfg.n_heads)], "L0 b_O", "b_K"]


def _keys_einsum_tensors(model, cache, layer, head, repeat_len):
    """0-d float64 tensors; the stacked components projected with one einsum."""
    attn = model.blocks[layer].attn
    q_pos = t.arange(repeat_len + 1, 2 * repeat_len + 1)
    stacked = t.stack(_stripe_parts(model, cache))[:, :, q_pos - repeat_len + 1].double()  # [comp batch query d_model]
    q = cache[f"blocks.{layer}.attn.hook_q"][:, q_pos, head].double()
    per = einops.einsum(stacked, attn.W_K[head].double(), q, "c b s m, m d, b s d -> c b s").mean((1, 2))
    values = [*per, (attn.b_K[head].double() * q).sum(-1).mean()]
    return dict(zip(_names(model), (v / attn.cfg.d_head ** 0.5 for v in values)))


def _keys_from_score_matrix(model, cache, layer, head, repeat_len):
    """Each component's full score matrix q K_c^T, then its induction diagonal."""
    attn = model.blocks[layer].attn
    q = cache[f"blocks.{layer}.attn.hook_q"][:, :, head]  # [batch pos d_head]
    keys = [part @ attn.W_K[head] for part in _stripe_parts(model, cache)] + [attn.b_K[head].expand(*q.shape)]
    out = {}
    for name, k in zip(_names(model), keys):
        scores = (q @ k.transpose(-1, -2)) / attn.cfg.d_head ** 0.5  # [batch query key]
        stripe = scores.diagonal(offset=-(repeat_len - 1), dim1=-2, dim2=-1)[:, 2:]  # queries repeat_len+1 ...
        out[name] = stripe.mean().item()
    return out


def _keys_loop_per_query(model, cache, layer, head, repeat_len):
    """A plain loop over the stripe's queries, accumulating Python floats."""
    attn, n = model.blocks[layer].attn, 0
    parts = dict(zip(_names(model), _stripe_parts(model, cache)))
    totals = dict.fromkeys(_names(model), 0.0)
    for query in range(repeat_len + 1, 2 * repeat_len + 1):
        q = cache[f"blocks.{layer}.attn.hook_q"][:, query, head]  # [batch d_head]
        for name, part in parts.items():
            totals[name] += float(((part[:, query - repeat_len + 1] @ attn.W_K[head]) * q).sum())
        totals["b_K"] += float((attn.b_K[head] * q).sum())
        n += q.shape[0]
    return {name: value / n / attn.cfg.d_head ** 0.5 for name, value in totals.items()}


ALTERNATIVES = [
    ("ablation", _ablation_where), ("ablation", _ablation_hooks_context_float64), ("ablation", _ablation_python_float),
    ("patch_residual", _resid_one_hook_by_name), ("patch_residual", _resid_hooks_context),
    ("patch_residual", _resid_add_difference),
    ("patch_head_outputs", _heads_through_attn_out), ("patch_head_outputs", _heads_masked),
    ("patch_head_outputs", _heads_float64_context),
    ("path_patch_keys", _path_linear_delta), ("path_patch_keys", _path_from_components), ("path_patch_keys", _path_float64),
    ("copying_scores", _copying_factored), ("copying_scores", _copying_diagonal_is_max),
    ("copying_scores", _copying_loop_over_tokens),
    ("positional_patterns", _positional_minus_large), ("positional_patterns", _positional_factored),
    ("positional_patterns", _positional_float64),
    ("composition_scores", _composition_factored), ("composition_scores", _composition_loops),
    ("composition_scores", _composition_trace_float64),
    ("key_decomposition", _keys_einsum_tensors), ("key_decomposition", _keys_from_score_matrix),
    ("key_decomposition", _keys_loop_per_query),
]


@pytest.mark.parametrize("exercise, impl", ALTERNATIVES, ids=[f"{e}-{f.__name__}" for e, f in ALTERNATIVES])
def test_valid_alternative_passes(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    assert capfd.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- plotting


def test_pattern_heatmap_labels_axes_by_token_and_hovers_positions():
    from utils.plotting import pattern_heatmap

    labels = ["BOS", "7", "9", "7", "9"]  # repeated tokens stay separate positions
    pattern = t.softmax(t.randn(5, 5).masked_fill(t.triu(t.ones(5, 5, dtype=t.bool), 1), float("-inf")), -1)
    fig = pattern_heatmap(pattern, labels, title="demo")
    heatmap = fig.data[0]
    assert heatmap.z.shape == (5, 5)
    assert list(fig.layout.xaxis.ticktext) == labels and list(fig.layout.xaxis.tickvals) == [0, 1, 2, 3, 4]
    assert heatmap.customdata[4][1] == "query 4: 9<br>key 1: 7"
    with pytest.raises(ValueError, match="one label per position"):
        pattern_heatmap(pattern, labels[:4])
