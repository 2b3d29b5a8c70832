"""Chapter 02's checkers: the reference passes, every catalogued mistake is rejected and named, valid
alternative implementations pass, stubs read "not implemented yet", and nothing reaches stderr."""

from __future__ import annotations

import math
import re

import einops
import pytest
import torch as t
import torch.nn.functional as F

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.checks.mistakes_ch02 import ATTENTION_MISTAKES
from utils.reference import components as ref
from utils.reference_model import reference_cache, shared_params

EXERCISES = ["layer_norm", "embed", "pos_embed", "causal_mask", "attention", "mlp", "transformer_block", "unembed"]
REFERENCE = {
    "layer_norm": ref.LayerNorm, "embed": ref.Embed, "pos_embed": ref.PosEmbed, "causal_mask": ref.Attention,
    "attention": ref.Attention, "mlp": ref.MLP, "transformer_block": ref.TransformerBlock, "unembed": ref.Unembed,
}
CATALOGUE = [(exercise, mistake) for exercise in EXERCISES for mistake in MISTAKES[exercise]]


def expected_message(exercise: str, mistake) -> str:
    # Module exercises catch an in-place update with the shared "inputs unchanged" check, before values.
    if mistake.name == "in_place" and exercise != "causal_mask":
        return r"modified its input .* in place\. Use out-of-place operations"
    return re.escape(mistake.hint)


# ------------------------------------------------------------------------------------------ alternatives


class LayerNormFunctional(ref.LayerNorm):
    def forward(self, residual):
        return F.layer_norm(residual, (self.cfg.d_model,), self.w, self.b, self.cfg.layer_norm_eps)


class LayerNormVarMean(ref.LayerNorm):
    def forward(self, residual):
        var, mean = t.var_mean(residual, dim=-1, keepdim=True, correction=0)
        return (residual - mean) * t.rsqrt(var + self.cfg.layer_norm_eps) * self.w + self.b


class LayerNormEinops(ref.LayerNorm):
    def forward(self, residual):
        mean = einops.reduce(residual, "batch pos d_model -> batch pos 1", "mean")
        var = einops.reduce((residual - mean) ** 2, "batch pos d_model -> batch pos 1", "mean")
        return (residual - mean) / t.sqrt(var + self.cfg.layer_norm_eps) * self.w + self.b


class EmbedFunctional(ref.Embed):
    def forward(self, tokens):
        return F.embedding(tokens, self.W_E)


class EmbedOneHot(ref.Embed):
    def forward(self, tokens):
        one_hot = F.one_hot(tokens, self.cfg.d_vocab).to(self.W_E.dtype)
        return einops.einsum(one_hot, self.W_E, "batch pos d_vocab, d_vocab d_model -> batch pos d_model")


class EmbedIndexSelect(ref.Embed):
    def forward(self, tokens):
        return self.W_E.index_select(0, tokens.reshape(-1)).reshape(*tokens.shape, self.cfg.d_model)


class PosEmbedExpand(ref.PosEmbed):
    def forward(self, tokens):
        batch, seq_len = tokens.shape
        return self.W_pos[t.arange(seq_len)].expand(batch, seq_len, self.cfg.d_model)


class PosEmbedRepeat(ref.PosEmbed):
    def forward(self, tokens):
        return self.W_pos[: tokens.shape[1]].unsqueeze(0).repeat(tokens.shape[0], 1, 1)


class PosEmbedFunctional(ref.PosEmbed):
    def forward(self, tokens):
        positions = t.arange(tokens.shape[-1]).expand(tokens.shape)
        return F.embedding(positions, self.W_pos)


class MaskWhere(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        query_pos, key_pos = attn_scores.shape[-2:]
        keep = t.tril(t.ones(query_pos, key_pos, dtype=t.bool))
        return t.where(keep, attn_scores, self.IGNORE)


class MaskLargeNegative(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        query_pos, key_pos = attn_scores.shape[-2:]
        future = t.arange(key_pos)[None, :] > t.arange(query_pos)[:, None]
        return attn_scores.masked_fill(future, -1e9)


class MaskAdded(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        query_pos, key_pos = attn_scores.shape[-2:]
        return attn_scores + t.full((query_pos, key_pos), float("-inf")).triu(diagonal=1)


class AttentionMatmul(ref.Attention):
    """Heads as a batch axis and plain matmuls."""

    def forward(self, normalized_resid_pre):
        x = normalized_resid_pre.unsqueeze(1)  # [batch 1 pos d_model] against [n_heads d_model d_head]
        q = x @ self.W_Q + self.b_Q[:, None]
        k = x @ self.W_K + self.b_K[:, None]
        v = x @ self.W_V + self.b_V[:, None]  # [batch n_heads pos d_head]
        scores = self.apply_causal_mask(q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head))
        z = scores.softmax(dim=-1) @ v
        return (z @ self.W_O).sum(dim=1) + self.b_O


class AttentionSDPA(ref.Attention):
    """PyTorch's fused attention with its own causal mask."""

    def forward(self, normalized_resid_pre):
        x = normalized_resid_pre.unsqueeze(1)
        q, k, v = (x @ W + b[:, None] for W, b in ((self.W_Q, self.b_Q), (self.W_K, self.b_K), (self.W_V, self.b_V)))
        z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return einops.einsum(z, self.W_O, "batch n_heads pos d_head, n_heads d_head d_model -> batch pos d_model") + self.b_O


class AttentionFlatHeads(ref.Attention):
    """One big projection per Q, K, V (heads concatenated), as in GPT-2's own c_attn, with an explicit softmax."""

    def forward(self, normalized_resid_pre):
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head

        def project(W, b):
            flat = einops.rearrange(W, "n_heads d_model d_head -> d_model (n_heads d_head)")
            out = normalized_resid_pre @ flat + b.flatten()
            return einops.rearrange(out, "batch pos (n_heads d_head) -> batch n_heads pos d_head", n_heads=n_heads)

        q, k, v = project(self.W_Q, self.b_Q), project(self.W_K, self.b_K), project(self.W_V, self.b_V)
        pos = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) / d_head**0.5
        scores = scores.masked_fill(t.ones(pos, pos, dtype=t.bool).triu(1), -1e9)
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        z = (weights / weights.sum(-1, keepdim=True)) @ v
        z_flat = einops.rearrange(z, "batch n_heads pos d_head -> batch pos (n_heads d_head)")
        return z_flat @ einops.rearrange(self.W_O, "n_heads d_head d_model -> (n_heads d_head) d_model") + self.b_O


class MLPLinear(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = F.linear(normalized_resid_mid, self.W_in.T, self.b_in)
        return F.linear(F.gelu(pre, approximate="tanh"), self.W_out.T, self.b_out)


class MLPTanhFormula(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = normalized_resid_mid @ self.W_in + self.b_in
        post = 0.5 * pre * (1 + t.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre**3)))
        return post @ self.W_out + self.b_out


class MLPNewGelu(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = t.addmm(self.b_in, normalized_resid_mid.reshape(-1, self.cfg.d_model), self.W_in)
        post = t.nn.GELU(approximate="tanh")(pre)
        return t.addmm(self.b_out, post, self.W_out).reshape(normalized_resid_mid.shape)


class BlockPlain(ref.TransformerBlock):
    def forward(self, resid_pre):
        x = resid_pre + self.attn(self.ln1(resid_pre))
        return x + self.mlp(self.ln2(x))


class BlockExpanded(ref.TransformerBlock):
    def forward(self, resid_pre):
        attn_out = self.attn(self.ln1(resid_pre))
        return resid_pre + attn_out + self.mlp(self.ln2(resid_pre + attn_out))


class BlockLoop(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid = resid_pre
        for norm, layer in ((self.ln1, self.attn), (self.ln2, self.mlp)):
            resid = resid + layer(norm(resid))
        return resid


class UnembedMatmul(ref.Unembed):
    def forward(self, normalized_resid_final):
        return normalized_resid_final @ self.W_U + self.b_U


class UnembedLinear(ref.Unembed):
    def forward(self, normalized_resid_final):
        return F.linear(normalized_resid_final, self.W_U.T, self.b_U)


class UnembedTensordot(ref.Unembed):
    def forward(self, normalized_resid_final):
        return t.tensordot(normalized_resid_final, self.W_U, dims=([-1], [0])) + self.b_U


ALTERNATIVES = {
    "layer_norm": [LayerNormFunctional, LayerNormVarMean, LayerNormEinops],
    "embed": [EmbedFunctional, EmbedOneHot, EmbedIndexSelect],
    "pos_embed": [PosEmbedExpand, PosEmbedRepeat, PosEmbedFunctional],
    "causal_mask": [MaskWhere, MaskLargeNegative, MaskAdded],
    "attention": [AttentionMatmul, AttentionSDPA, AttentionFlatHeads],
    "mlp": [MLPLinear, MLPTanhFormula, MLPNewGelu],
    "transformer_block": [BlockPlain, BlockExpanded, BlockLoop],
    "unembed": [UnembedMatmul, UnembedLinear, UnembedTensordot],
}


# ------------------------------------------------------------------------------------------------ stubs


def _stub(Base, method: str = "forward"):
    def raise_stub(self, *args):
        raise NotImplementedError()

    return type(f"Stub{Base.__name__}", (Base,), {method: raise_stub})


STUBS = {exercise: _stub(cls) for exercise, cls in REFERENCE.items()}
STUBS["causal_mask"] = _stub(ref.Attention, "apply_causal_mask")


class BlockWithWrongAttention(ref.TransformerBlock):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.attn = ATTENTION_MISTAKES[0].impl(cfg)  # no 1/sqrt(d_head)


class BlockWithStubMLP(ref.TransformerBlock):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.mlp = STUBS["mlp"](cfg)


class AttentionWithBadMask(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill(t.ones(attn_scores.shape[-2:], dtype=t.bool).triu(0), self.IGNORE)


class UnembedOutsideMatrix(ref.Unembed):
    """The reference's own W_U from outside the module (a notebook global): right on GPT-2's case only, and a
    shape error on the small random case, as W_E.T is under a reference that ties W_U = W_E.T."""

    def forward(self, normalized_resid_final):
        return normalized_resid_final @ shared_params()["unembed.W_U"] + self.b_U


# ------------------------------------------------------------------------------------------------ tests


def test_every_exercise_is_registered():
    assert set(EXERCISES) <= set(CHECKERS)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes_with_one_line(exercise, capfd):
    reference_cache()  # loading the model prints its own line; the check itself prints one
    capfd.readouterr()
    CHECKERS[exercise](REFERENCE[exercise])
    out, err = capfd.readouterr()
    assert err == ""
    assert out.startswith("✓ ") and out.count("\n") == 1


@pytest.mark.parametrize("exercise", EXERCISES)
def test_catalogue_has_at_least_four_mistakes(exercise):
    assert len(MISTAKES[exercise]) >= 4


@pytest.mark.parametrize(("exercise", "mistake"), CATALOGUE, ids=[f"{e}-{m.name}" for e, m in CATALOGUE])
def test_mistake_is_rejected_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=expected_message(exercise, mistake)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("exercise", "impl"),
    [(e, cls) for e, classes in ALTERNATIVES.items() for cls in classes],
    ids=[cls.__name__ for classes in ALTERNATIVES.values() for cls in classes],
)
def test_alternative_implementation_passes(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    out, err = capfd.readouterr()
    assert err == "" and "✓" in out


@pytest.mark.parametrize("exercise", EXERCISES)
def test_stub_is_not_implemented_yet(exercise, capfd):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](STUBS[exercise])
    assert capfd.readouterr().err == ""


def test_block_blames_the_failing_sub_component():
    with pytest.raises(AssertionError, match=r"TransformerBlock uses your _NoScale, which does not pass checks\.attention yet"):
        CHECKERS["transformer_block"](BlockWithWrongAttention)


def test_block_with_a_stub_sub_component_is_not_implemented_yet():
    with pytest.raises(NotImplementedYet, match=r"TransformerBlock uses your StubMLP, which is not implemented yet"):
        CHECKERS["transformer_block"](BlockWithStubMLP)


def test_attention_blames_its_causal_mask():
    with pytest.raises(AssertionError, match=r"Attention\.forward uses your apply_causal_mask, which does not pass checks\.causal_mask"):
        CHECKERS["attention"](AttentionWithBadMask)


def test_causal_mask_needs_no_forward():
    CHECKERS["causal_mask"](STUBS["attention"])


@pytest.mark.parametrize("not_a_class", [ref.LayerNorm(ref.Config()), "LayerNorm"])
def test_passing_an_instance_is_explained(not_a_class):
    with pytest.raises(AssertionError, match="Pass the class itself"):
        CHECKERS["layer_norm"](not_a_class)


def test_checks_leave_reference_cache_and_rng_unchanged():
    _, logits, cache = reference_cache()
    before = {name: cache[name].clone() for name in ("blocks.0.ln1.hook_out", "ln_final.hook_out", "blocks.0.attn.hook_q")}
    logits_before = logits.clone()
    t.manual_seed(1234)
    expected_draw = t.rand(3)
    t.manual_seed(1234)
    for exercise in EXERCISES:
        CHECKERS[exercise](REFERENCE[exercise])
    assert t.equal(t.rand(3), expected_draw)  # the learner's random stream is not moved
    assert t.equal(logits, logits_before)
    for name, value in before.items():
        assert t.equal(cache[name], value)


def test_checks_are_deterministic():
    """A correct implementation passes every rerun: no check draws from an unseeded generator."""
    for _ in range(3):
        for exercise in ("attention", "mlp", "unembed"):
            CHECKERS[exercise](ALTERNATIVES[exercise][0])


def test_config_rejects_heads_that_do_not_split_d_model():
    with pytest.raises(ValueError, match=re.escape("n_heads * d_head must equal d_model, got 12 * 32 = 384 != 768")):
        ref.Config(n_heads=12, d_head=32)


def test_config_defaults_are_gpt2_small():
    cfg = ref.Config()
    assert (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers, cfg.n_ctx, cfg.d_vocab) == (
        768, 12, 64, 3072, 12, 1024, 50257)


def test_an_error_equal_to_a_catalogued_mistakes_is_named():
    """A learner error is named when a catalogued mistake raises the same one on the same case, instead of
    surfacing as a bare matrix-shape error (real GPT-2 ties W_U = W_E.T, so its case cannot catch W_E.T)."""
    hint = next(m.hint for m in MISTAKES["unembed"] if m.name == "embedding_matrix_reused")
    with pytest.raises(AssertionError) as info:
        CHECKERS["unembed"](UnembedOutsideMatrix)
    message = str(info.value)
    assert "Unembed.forward raised RuntimeError on 2 random sequences of length 5" in message
    assert f"This matches a known mistake, embedding matrix reused: {hint}" in message
