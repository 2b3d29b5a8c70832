"""Chapter 04: the shipped induction model has its circuit, every checker accepts the reference and valid
alternatives, and rejects every catalogued mistake with its hint."""

from __future__ import annotations

import os
import re

import einops
import pytest
import torch as t

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.induction import (CHECKPOINT, EVAL_REPEAT, MAX_REPEATED_LOSS, MIN_INDUCTION_SCORE, MIN_PREVIOUS_TOKEN_SCORE,
                             circuit_metrics, has_circuit, load_induction_model, per_token_loss, repeated_tokens,
                             train_induction)
from utils.reference import interp as ref

pytestmark = pytest.mark.xdist_group("test_ch04_interpretability")  # its module fixture is built once, on one xdist worker

EXERCISES = ["head_detector", "decompose_resid", "direct_logit_attribution", "induction_score", "head_ablation"]
REFERENCE = {
    "head_detector": ref.head_detector_scores,
    "decompose_resid": ref.decompose_resid,
    "direct_logit_attribution": ref.direct_logit_attribution,
    "induction_score": ref.induction_score,
    "head_ablation": ref.head_ablation_effect,
}
CATALOGUE = [(exercise, mistake) for exercise in EXERCISES for mistake in MISTAKES[exercise]]


# --------------------------------------------------------------------------------------- the shipped model


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # every test here runs single-threaded (tests/conftest.py)
    yield


@pytest.fixture(scope="module")
def shipped_metrics():
    return circuit_metrics(load_induction_model())


def test_checkpoint_is_small_and_loads_strictly():
    assert CHECKPOINT.stat().st_size < 1_000_000
    model = load_induction_model()
    assert not model.training
    assert model.cfg.attn_only and model.cfg.n_layers == 2
    assert "blocks.1.attn.hook_pattern" in model.hook_dict and "blocks.0.ln1.hook_scale" not in model.hook_dict


def test_shipped_model_predicts_the_repeated_half(shipped_metrics):
    assert shipped_metrics["first_half_loss"] > 4.5  # log 200 = 5.3: the first copy is unpredictable
    assert shipped_metrics["repeated_loss"] < MAX_REPEATED_LOSS


def test_shipped_model_has_induction_heads(shipped_metrics):
    assert shipped_metrics["induction"][1].max() > MIN_INDUCTION_SCORE
    assert shipped_metrics["induction"][0].max() < 0.2  # layer 0 cannot do induction on its own


def test_shipped_model_has_a_previous_token_head_in_layer_0(shipped_metrics):
    assert shipped_metrics["previous"][0].max() > MIN_PREVIOUS_TOKEN_SCORE


def test_ablating_the_previous_token_head_breaks_induction(shipped_metrics):
    model = load_induction_model()
    tokens = repeated_tokens(16, EVAL_REPEAT, seed=3)
    with t.no_grad():
        effect = ref.head_ablation_effect(model, tokens, EVAL_REPEAT)
    prev_head = int(shipped_metrics["previous"][0].argmax())
    assert effect[0, prev_head] > 1.0  # nats: without it the repeated half is far harder


def test_head_ablation_leaves_no_hooks():
    model = load_induction_model()
    with t.no_grad():
        ref.head_ablation_effect(model, repeated_tokens(2, 10, seed=0), 10)
    assert not any(len(m._forward_hooks) for m in model.modules())


@pytest.mark.skipif(os.environ.get("TFS_RETRAIN") != "1", reason="retraining takes minutes: set TFS_RETRAIN=1")
def test_retraining_reproduces_the_circuit():
    assert has_circuit(circuit_metrics(train_induction(progress=False)))


def test_per_token_loss_is_cross_entropy():
    logits = t.randn(2, 5, 7)
    tokens = t.randint(0, 7, (2, 5))
    expected = t.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")
    t.testing.assert_close(per_token_loss(logits, tokens), expected.view(2, 4))


# --------------------------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes_with_one_line(exercise, capfd):
    CHECKERS[exercise](REFERENCE[exercise])
    out, err = capfd.readouterr()
    lines = [line for line in out.splitlines() if not line.startswith("Reference model:")]
    assert len(lines) == 1 and lines[0].startswith("✓"), out
    assert err == ""


@pytest.mark.parametrize("exercise, mistake", CATALOGUE, ids=[f"{e}-{m.name}" for e, m in CATALOGUE])
def test_mistake_is_caught_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


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


def _detector_loops(pattern):
    batch, n_heads, pos, _ = pattern.shape
    q = t.arange(pos)
    return {"current": pattern[:, :, q, q].mean((0, 2)),
            "previous": pattern[:, :, q[1:], q[1:] - 1].mean((0, 2)),
            "first": pattern[:, :, :, 0].mean((0, 2))}


def _detector_einops(pattern):
    pos = pattern.shape[-1]
    eye = t.eye(pos)
    below = t.diag(t.ones(pos - 1), diagonal=-1)
    current = einops.einsum(pattern, eye, "batch n_heads query_pos key_pos, query_pos key_pos -> n_heads") / (pattern.shape[0] * pos)
    previous = einops.einsum(pattern, below, "batch n_heads query_pos key_pos, query_pos key_pos -> n_heads") / (pattern.shape[0] * (pos - 1))
    first = einops.reduce(pattern[..., 0], "batch n_heads query_pos -> n_heads", "mean")
    return {"current": current, "previous": previous, "first": first}


def _detector_trace(pattern):
    flat = pattern.flatten(0, 1)  # [(batch n_heads) query_pos key_pos]
    batch, n_heads, pos, _ = pattern.shape
    current = flat.diagonal(dim1=-2, dim2=-1).sum(-1).view(batch, n_heads).mean(0) / pos
    previous = t.stack([pattern[:, :, i, i - 1] for i in range(1, pos)], -1).mean(dim=(0, 2))
    return {"current": current, "previous": previous, "first": pattern.select(-1, 0).mean(dim=(0, 2))}


def _decompose_loops(model, cache):
    out = {"embed": cache["hook_embed"], "pos_embed": cache["hook_pos_embed"]}
    for layer, block in enumerate(model.blocks):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        for head in range(model.cfg.n_heads):
            out[f"L{layer}H{head}"] = z[:, :, head] @ block.attn.W_O[head]
        out[f"L{layer} b_O"] = block.attn.b_O + t.zeros_like(out["embed"])
        if f"blocks.{layer}.hook_mlp_out" in cache:
            out[f"L{layer} MLP"] = cache[f"blocks.{layer}.hook_mlp_out"]
    return out


def _decompose_broadcast(model, cache):
    out = {"embed": cache["hook_embed"].clone(), "pos_embed": cache["hook_pos_embed"].clone()}
    for layer in range(model.cfg.n_layers):
        attn = model.blocks[layer].attn
        z = cache[f"blocks.{layer}.attn.hook_z"]
        per_head = (z[..., None] * attn.W_O).sum(-2)  # [batch pos n_heads d_model]
        out.update({f"L{layer}H{h}": per_head[:, :, h] for h in range(model.cfg.n_heads)})
        out[f"L{layer} b_O"] = attn.b_O.expand(*z.shape[:2], -1)
        try:
            out[f"L{layer} MLP"] = cache[f"blocks.{layer}.hook_mlp_out"]
        except KeyError:
            pass
    return out


def _decompose_tl_stack(model, cache):
    """Heads via einops with a different dimension order, as a learner who reads TransformerLens would write it."""
    out = {"embed": cache["hook_embed"], "pos_embed": cache["hook_pos_embed"]}
    for layer in range(model.cfg.n_layers):
        z = cache[f"blocks.{layer}.attn.hook_z"]
        stacked = einops.einsum(z, model.blocks[layer].attn.W_O,
                                "batch pos n_heads d_head, n_heads d_head d_model -> batch pos n_heads d_model")
        for head in range(model.cfg.n_heads):
            out[f"L{layer}H{head}"] = stacked[:, :, head, :]
        out[f"L{layer} b_O"] = einops.repeat(model.blocks[layer].attn.b_O, "d_model -> batch pos d_model",
                                            batch=z.shape[0], pos=z.shape[1])
        if f"blocks.{layer}.hook_mlp_out" in cache:
            out[f"L{layer} MLP"] = cache[f"blocks.{layer}.hook_mlp_out"]
    return out


def _dla_layer_norm_formula(model, components, cache, tokens):
    scale = cache["ln_final.hook_scale"][:, :-1]
    w_u = model.unembed.W_U[:, tokens[:, 1:]]  # [d_model batch pos-1]
    out = {}
    for name, c in components.items():
        normalised = (c[:, :-1] - c[:, :-1].mean(-1, keepdim=True)) / scale * model.ln_final.w
        out[name] = einops.einsum(normalised, w_u, "batch pos d_model, d_model batch pos -> batch pos")
    return out


def _dla_logits_then_gather(model, components, cache, tokens):
    scale = cache["ln_final.hook_scale"]
    out = {}
    for name, c in components.items():
        centred = c - c.mean(-1, keepdim=True)
        logits = (centred / scale * model.ln_final.w) @ model.unembed.W_U  # [batch pos d_vocab]
        out[name] = logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]
    return out


def _dla_stacked(model, components, cache, tokens):
    stacked = t.stack(list(components.values()))[:, :, :-1]  # [component batch pos-1 d_model]
    centred = stacked - stacked.mean(-1, keepdim=True)
    directions = (model.ln_final.w[:, None] * model.unembed.W_U).T[tokens[:, 1:]]
    values = (centred / cache["ln_final.hook_scale"][:, :-1] * directions).sum(-1)
    return dict(zip(components, values))


def _induction_loops(pattern, repeat_len):
    queries = t.arange(1 + repeat_len, 1 + 2 * repeat_len)
    return pattern[:, :, queries, queries - repeat_len + 1].mean((0, 2))


def _induction_mask(pattern, repeat_len):
    pos = pattern.shape[-1]
    mask = t.zeros(pos, pos)
    for q in range(1 + repeat_len, pos):
        mask[q, q - repeat_len + 1] = 1.0
    return (pattern * mask).sum((-2, -1)).mean(0) / repeat_len


def _induction_einops(pattern, repeat_len):
    second = pattern[:, :, 1 + repeat_len:, 2:2 + repeat_len]  # second copy's queries, first copy's next tokens
    return einops.reduce(second.diagonal(dim1=-2, dim2=-1), "batch n_heads query_pos -> n_heads", "mean")


def _ablation_multiply(model, tokens, repeat_len):
    def loss_of(logits):
        return per_token_loss(logits, tokens)[:, repeat_len + 1:].mean()

    clean = loss_of(model(tokens))
    rows = []
    for layer in range(model.cfg.n_layers):
        row = []
        for head in range(model.cfg.n_heads):
            keep = t.ones(model.cfg.n_heads, 1)
            keep[head] = 0.0
            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", lambda z, hook, k=keep: z * k)])
            row.append(loss_of(logits) - clean)
        rows.append(t.stack(row))
    return t.stack(rows)


def _ablation_add_hook_and_reset(model, tokens, repeat_len):
    def loss_of(logits):
        return t.nn.functional.cross_entropy(logits[:, repeat_len + 1:-1].flatten(0, 1), tokens[:, repeat_len + 2:].flatten())

    clean = loss_of(model(tokens))
    effect = t.empty(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def ablate(z, hook):
                return t.cat([z[:, :, :head], t.zeros_like(z[:, :, head:head + 1]), z[:, :, head + 1:]], dim=2)

            model.add_hook(f"blocks.{layer}.attn.hook_z", ablate)
            effect[layer, head] = loss_of(model(tokens)) - clean
            model.reset_hooks()
    return effect


def _ablation_masked_fill(model, tokens, repeat_len):
    clean = per_token_loss(model(tokens), tokens)[:, repeat_len + 1:].mean()
    effect = []
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            mask = t.arange(model.cfg.n_heads)[:, None] == head
            logits = model.run_with_hooks(
                tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", lambda z, hook, m=mask: z.masked_fill(m, 0.0))])
            effect.append(per_token_loss(logits, tokens)[:, repeat_len + 1:].mean() - clean)
    return t.stack(effect).view(model.cfg.n_layers, model.cfg.n_heads)


ALTERNATIVES = [
    ("head_detector", _detector_loops), ("head_detector", _detector_einops), ("head_detector", _detector_trace),
    ("decompose_resid", _decompose_loops), ("decompose_resid", _decompose_broadcast),
    ("decompose_resid", _decompose_tl_stack),
    ("direct_logit_attribution", _dla_layer_norm_formula), ("direct_logit_attribution", _dla_logits_then_gather),
    ("direct_logit_attribution", _dla_stacked),
    ("induction_score", _induction_loops), ("induction_score", _induction_mask), ("induction_score", _induction_einops),
    ("head_ablation", _ablation_multiply), ("head_ablation", _ablation_add_hook_and_reset),
    ("head_ablation", _ablation_masked_fill),
]


@pytest.mark.parametrize("exercise, impl", ALTERNATIVES, ids=[f"{e}-{f.__name__}" for e, f in ALTERNATIVES])
def test_valid_alternative_passes(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------------- dtypes and messages


def _as_float64(out):
    return {k: v.double() for k, v in out.items()} if isinstance(out, dict) else out.double()


@pytest.mark.parametrize("exercise", EXERCISES)
def test_float64_results_are_accepted_by_every_analysis_check(exercise, capfd):
    CHECKERS[exercise](lambda *args: _as_float64(REFERENCE[exercise](*args)))
    assert capfd.readouterr().out.splitlines()[-1].startswith("✓")


@pytest.mark.parametrize("exercise", ["induction_score", "head_ablation"])
def test_integer_results_fail_naming_the_float_dtype(exercise):
    with pytest.raises(AssertionError, match=r"output dtype int64 .*expected floating-point values \(float32; float64 is "
                                             r"accepted too\)"):
        CHECKERS[exercise](lambda *args: (100 * REFERENCE[exercise](*args)).long())


def test_an_off_by_one_offset_fails_first_on_the_induction_layer_and_says_which_diagonal():
    """Layer 0's scores are all ≈ 0.02, where an off-by-one moves them by ~1e-3; layer 1 comes first."""
    def offset_one_short(pattern, repeat_len):
        return pattern.diagonal(offset=-(repeat_len - 2), dim1=-2, dim2=-1)[..., -repeat_len:].mean((0, -1))

    with pytest.raises(AssertionError) as info:
        CHECKERS["induction_score"](offset_one_short)
    message = str(info.value)
    assert "layer-1 patterns" in message and "known mistake" not in message
    assert "offset -8 (key = query - 8) instead of -(repeat_len - 1) = -9" in message
    assert "queries" not in message.split("Your scores")[1].split(".")[0]  # the queries were right: not blamed


def test_an_off_by_one_query_range_says_which_queries():
    def skips_the_first_query(pattern, repeat_len):
        return pattern.diagonal(offset=-(repeat_len - 1), dim1=-2, dim2=-1)[..., -(repeat_len - 1):].mean((0, -1))

    with pytest.raises(AssertionError, match=r"average queries 12-20 instead of 11-20, the second copy") as info:
        CHECKERS["induction_score"](skips_the_first_query)
    assert "known mistake" not in str(info.value) and "offset" not in str(info.value).split("layer-1 patterns")[1]


def test_a_wrong_head_detector_score_is_placed_by_head():
    def previous_two_back(pattern):
        out = ref.head_detector_scores(pattern)
        return {**out, "previous": pattern.diagonal(-2, -2, -1).mean((0, -1))}

    with pytest.raises(AssertionError, match=r"head_detector_scores\['previous'\]: .* at \(head \d\)") as info:
        CHECKERS["head_detector"](previous_two_back)
    assert "known mistake" not in str(info.value)


# ---------------------------------------------------------------------------------------------- plotting


def test_attention_view_is_self_contained():
    from utils.plotting import attention_patterns, token_labels

    tokens = repeated_tokens(1, 5, seed=0)[0]
    pattern = t.softmax(t.randn(2, 11, 11).masked_fill(t.triu(t.ones(11, 11, dtype=t.bool), 1), float("-inf")), -1)
    html = attention_patterns(pattern, token_labels(tokens, bos=200))._repr_html_()
    assert "unpkg.com" not in html and len(html) > 100_000  # the JavaScript bundle is inline, not fetched
