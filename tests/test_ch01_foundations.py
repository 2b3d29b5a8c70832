"""Chapter 01's checkers: the reference passes, every catalogued mistake is caught and named, valid
alternative implementations pass, stubs report "not implemented yet", and nothing reaches stderr."""

from __future__ import annotations

import math
import re

import einops
import pytest
import torch as t
import torch.nn.functional as F

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.checks.core import REGISTRY
from utils.reference import foundations as ref

pytestmark = pytest.mark.xdist_group("test_ch01_foundations")  # its module fixture is built once, on one xdist worker

EXERCISES = sorted(e for e, ex in REGISTRY.items() if ex.chapter == "01_foundations")
CATALOGUE = [(e, m) for e in EXERCISES for m in MISTAKES[e]]


@pytest.fixture(scope="module", autouse=True)
def _loaded(ref_cache):
    """Load the reference model once, before any checker is timed or its output captured."""
    return ref_cache


# ------------------------------------------------------------------------------ valid alternative implementations


def _decode_each(tokenizer, ids):
    return [[tokenizer.decode([i]) for i in row] for row in ids.tolist()]


def _mask(n_query, n_key):
    return t.arange(n_key)[None, :] > t.arange(n_query)[:, None]  # True where the key is in the future


def _sinusoids_exp_log(n_ctx, d_model):
    frequencies = t.exp(-math.log(10000.0) * t.arange(0, d_model, 2, dtype=t.float32) / d_model)
    angles = t.arange(n_ctx, dtype=t.float32)[:, None] * frequencies
    return t.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


def _sinusoids_loop(n_ctx, d_model):
    rows = []
    for pos in range(n_ctx):
        row = []
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return t.tensor(rows, dtype=t.float32)


def _sinusoids_where(n_ctx, d_model):
    dims = t.arange(d_model)
    angles = t.arange(n_ctx, dtype=t.float32)[:, None] / 10000.0 ** ((dims - dims % 2) / d_model)
    return t.where(dims % 2 == 0, angles.sin(), angles.cos())


def _residual_shorthand(cache, layer):
    parts = [cache["embed"], cache["pos_embed"]]
    for block in range(layer):
        parts += [cache["attn_out", block], cache["mlp_out", block]]
    return t.stack(parts)


ALTERNATIVES = {
    "next_token_strings": [
        lambda logits, tokenizer, k=5: _decode_each(tokenizer, logits[:, -1].argsort(dim=-1, descending=True)[:, :k]),
        lambda logits, tokenizer, k=5: [tokenizer.batch_decode([[i] for i in row])
                                        for row in logits.softmax(-1)[:, -1].topk(k).indices.tolist()],
        lambda logits, tokenizer, k=5: [[tokenizer.decode([int(i)]) for i in t.sort(row, descending=True).indices[:k]]
                                        for row in logits[:, logits.shape[1] - 1]],
    ],
    "token_log_probs": [
        lambda logits, tokens: -F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none"),
        lambda logits, tokens: t.distributions.Categorical(logits=logits[:, :-1]).log_prob(tokens[:, 1:]),
        lambda logits, tokens: (logits - logits.logsumexp(-1, keepdim=True))[
            t.arange(tokens.shape[0])[:, None], t.arange(tokens.shape[1] - 1)[None, :], tokens[:, 1:]],
    ],
    "split_heads": [
        lambda x, n_heads: x.view(x.shape[0], x.shape[1], n_heads, -1),
        lambda x, n_heads: x.unflatten(-1, (n_heads, -1)),
        lambda x, n_heads: t.stack(x.chunk(n_heads, dim=-1), dim=2),
    ],
    "merge_heads": [
        lambda z: z.reshape(z.shape[0], z.shape[1], -1),
        lambda z: z.flatten(-2),
        lambda z: t.cat(z.unbind(dim=2), dim=-1),
    ],
    "project_heads": [
        lambda x, W: t.einsum("bpm,hmd->bphd", x, W),
        lambda x, W: (x[:, :, None, None, :] @ W)[..., 0, :],
        lambda x, W: einops.rearrange(
            x @ einops.rearrange(W, "n_heads d_model d_head -> d_model (n_heads d_head)"),
            "batch pos (n_heads d_head) -> batch pos n_heads d_head", n_heads=W.shape[0]),
    ],
    "combine_heads": [
        lambda z, W_O: t.einsum("bphd,hdm->bpm", z, W_O),
        lambda z, W_O: z.flatten(-2) @ W_O.flatten(0, 1),
        lambda z, W_O: (z.unsqueeze(-2) @ W_O).squeeze(-2).sum(dim=2),
    ],
    "pairwise_sq_distances": [
        lambda x: (x * x).sum(-1)[:, None] + (x * x).sum(-1)[None, :] - 2 * x @ x.T,
        lambda x: (x.unsqueeze(1) - x.unsqueeze(0)).norm(dim=-1) ** 2,
        lambda x: einops.reduce((einops.rearrange(x, "pos d_model -> pos 1 d_model") - x) ** 2,
                                "query_pos key_pos d_model -> query_pos key_pos", "sum"),
    ],
    "stable_softmax": [
        lambda x, dim=-1: t.softmax(x, dim=dim),
        lambda x, dim=-1: (x - x.logsumexp(dim, keepdim=True)).exp(),
        lambda x, dim=-1: F.softmax(x - x.max(dim, keepdim=True).values, dim=dim),
    ],
    "attention_scores": [
        lambda q, k: t.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1]),
        lambda q, k: q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / q.shape[-1] ** 0.5,
        lambda q, k: einops.einsum(q / math.sqrt(q.shape[-1]), k,
                                   "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos"),
    ],
    "mask_future": [
        lambda s: t.where(_mask(*s.shape[-2:]), t.tensor(float("-inf")), s),
        lambda s: s.masked_fill(_mask(*s.shape[-2:]), -1e5),  # TransformerLens's IGNORE value
        lambda s: s + t.triu(t.full(s.shape[-2:], -1e9), diagonal=1),
    ],
    "sdp_attention": [
        lambda q, k, v, causal=True: F.scaled_dot_product_attention(q, k, v, is_causal=causal),
        lambda q, k, v, causal=True: t.softmax(
            (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(_mask(q.shape[-2], k.shape[-2]) & causal, -1e9),
            dim=-1) @ v,
        lambda q, k, v, causal=True: einops.einsum(
            ref.stable_softmax(ref.mask_future(q @ k.mT / math.sqrt(q.shape[-1])) if causal else q @ k.mT / math.sqrt(q.shape[-1])),
            v, "batch n_heads query_pos key_pos, batch n_heads key_pos d_head -> batch n_heads query_pos d_head"),
    ],
    "equivariance_error": [
        lambda attend, x, perm: (attend(x[:, perm])[:, perm.argsort()] - attend(x)).abs().max(),
        lambda attend, x, perm: t.max(t.abs(attend(x)[:, perm] - attend(x[:, perm]))),
        lambda attend, x, perm: (attend(x[:, perm]) - attend(x)[:, perm]).abs().amax().item(),
    ],
    "sinusoidal_positions": [_sinusoids_exp_log, _sinusoids_loop, _sinusoids_where],
    "cosine_similarity_matrix": [
        lambda v: F.cosine_similarity(v[:, None, :], v[None, :, :], dim=-1),
        lambda v: F.normalize(v, dim=-1) @ F.normalize(v, dim=-1).T,
        lambda v: (v @ v.T) / (v.norm(dim=-1)[:, None] * v.norm(dim=-1)[None, :]),
    ],
    "residual_components": [
        _residual_shorthand,
        lambda cache, layer: t.cat([cache[name][None] for name in ["hook_embed", "hook_pos_embed"]
                                    + [f"blocks.{b}.hook_{p}_out" for b in range(layer) for p in ("attn", "mlp")]]),
        lambda cache, layer: t.stack([cache["hook_embed"], cache["hook_pos_embed"],
                                      *(cache[f"blocks.{b}.hook_{p}_out"] for b in range(layer) for p in ("attn", "mlp"))]),
    ],
    "accumulated_resid": [
        lambda c: t.stack([c[: 2 + 2 * layer].sum(0) for layer in range((c.shape[0] - 2) // 2 + 1)]),
        lambda c: c.cumsum(0).index_select(0, t.arange(1, c.shape[0], 2)),
        lambda c: einops.rearrange(c, "(layer two) batch pos d_model -> layer two batch pos d_model", two=2)
        .sum(1).cumsum(0),
    ],
}
CASES = [(e, i) for e in EXERCISES for i in range(len(ALTERNATIVES.get(e, [])))]


def _stub(*args, **kwargs):
    raise NotImplementedError()


# ----------------------------------------------------------------------------------------------------- tests


def test_every_exercise_has_a_catalogue_and_alternatives():
    assert len(EXERCISES) == 16
    for exercise in EXERCISES:
        assert len(MISTAKES[exercise]) >= 4, exercise
        assert len(ALTERNATIVES[exercise]) >= 3, exercise


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes(exercise, capfd):
    CHECKERS[exercise](getattr(ref, exercise))
    out, err = capfd.readouterr()
    assert err == ""
    assert out.startswith("✓ ") and out.count("\n") == 1


@pytest.mark.parametrize("exercise,mistake", CATALOGUE, ids=[f"{e}-{m.name}" for e, m in CATALOGUE])
def test_mistake_is_caught_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("exercise,index", CASES, ids=[f"{e}-{i}" for e, i in CASES])
def test_alternative_implementation_passes(exercise, index, capfd):
    CHECKERS[exercise](ALTERNATIVES[exercise][index])
    out, err = capfd.readouterr()
    assert err == "" and out.startswith("✓ ")


@pytest.mark.parametrize("exercise", EXERCISES)
def test_stub_is_not_implemented_yet(exercise, capfd):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](_stub)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("exercise", ["stable_softmax", "split_heads", "residual_components"])
def test_a_class_instead_of_a_function_is_explained(exercise):
    with pytest.raises(AssertionError, match="Pass your function itself"):
        CHECKERS[exercise](int)


def test_checkers_leave_the_global_random_stream_alone():
    t.manual_seed(123)
    expected = t.rand(3)
    t.manual_seed(123)
    for exercise in EXERCISES:
        CHECKERS[exercise](getattr(ref, exercise))
    assert t.equal(t.rand(3), expected)


def test_reference_functions_agree_with_pytorch():
    gen = t.Generator().manual_seed(0)
    x = 50 * t.randn(4, 9, generator=gen)
    assert t.allclose(ref.stable_softmax(x, dim=0), t.softmax(x, dim=0), atol=1e-6)
    q, k, v = t.randn(3, 2, 3, 6, 4, generator=gen).unbind(0)
    assert t.allclose(ref.sdp_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)
    assert t.equal(ref.merge_heads(ref.split_heads(x[None], n_heads=3)), x[None])


def test_residual_parts_add_up(ref_cache, gpt2):
    _, _, cache = ref_cache
    n_layers = gpt2.cfg.n_layers
    streams = ref.accumulated_resid(ref.residual_components(cache, n_layers))
    assert streams.shape[0] == n_layers + 1
    for layer in range(n_layers):
        assert t.allclose(streams[layer], cache[f"blocks.{layer}.hook_resid_pre"], atol=1e-5)
    assert t.allclose(streams[-1], cache[f"blocks.{n_layers - 1}.hook_resid_post"], atol=1e-5)


def test_in_place_input_modification_is_reported():
    def subtracts_in_place(x, dim=-1):
        x -= x.amax(dim, keepdim=True)
        return x.exp() / x.exp().sum(dim, keepdim=True)

    with pytest.raises(AssertionError, match="modified its input `x` in place"):
        CHECKERS["stable_softmax"](subtracts_in_place)


def test_a_mistake_outside_the_catalogue_is_not_named_and_is_placed_by_head():
    def heads_reversed(x, n_heads):
        return x.view(x.shape[0], x.shape[1], n_heads, -1).flip(2)

    with pytest.raises(AssertionError) as info:
        CHECKERS["split_heads"](heads_reversed)
    message = str(info.value)
    assert "known mistake" not in message
    assert ", head 0, d_head " in message and "the differences are only at head 0, 2" in message  # head 1 stays put


def test_float64_results_are_accepted_and_integer_ones_rejected():
    CHECKERS["stable_softmax"](lambda x, dim=-1: ref.stable_softmax(x.double(), dim=dim))
    with pytest.raises(AssertionError, match=r"output dtype int64 .*expected floating-point values \(float32"):
        CHECKERS["stable_softmax"](lambda x, dim=-1: (100 * ref.stable_softmax(x, dim=dim)).long())
