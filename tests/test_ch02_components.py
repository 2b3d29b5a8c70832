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


class LayerNormStd(ref.LayerNorm):
    def forward(self, residual):
        centred = residual - residual.mean(dim=-1, keepdim=True)
        scale = self.hook_scale(t.sqrt(centred.std(dim=-1, keepdim=True, correction=0) ** 2 + self.cfg.layer_norm_eps))
        return self.hook_normalized(t.addcmul(self.b, centred / scale, self.w))


class LayerNormVarMean(ref.LayerNorm):
    def forward(self, residual):
        var, mean = t.var_mean(residual, dim=-1, keepdim=True, correction=0)
        scale = self.hook_scale((var + self.cfg.layer_norm_eps).sqrt())
        return self.hook_normalized((residual - mean) * scale.reciprocal() * self.w + self.b)


class LayerNormEinops(ref.LayerNorm):
    def forward(self, residual):
        mean = einops.reduce(residual, "batch pos d_model -> batch pos 1", "mean")
        var = einops.reduce((residual - mean) ** 2, "batch pos d_model -> batch pos 1", "mean")
        scale = self.hook_scale(t.sqrt(var + self.cfg.layer_norm_eps))
        normalized = self.hook_normalized((residual - mean) / scale * self.w + self.b)
        return normalized


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
        # The hooks hold [batch pos n_heads d_head]: transpose in, and back out for the matmuls.
        q = self.hook_q((x @ self.W_Q + self.b_Q[:, None]).transpose(1, 2)).transpose(1, 2)
        k = self.hook_k((x @ self.W_K + self.b_K[:, None]).transpose(1, 2)).transpose(1, 2)
        v = self.hook_v((x @ self.W_V + self.b_V[:, None]).transpose(1, 2)).transpose(1, 2)  # [batch n_heads pos d_head]
        scores = self.hook_attn_scores(self.apply_causal_mask(q @ k.transpose(-1, -2) / math.sqrt(self.cfg.d_head)))
        z = self.hook_z((self.hook_pattern(scores.softmax(dim=-1)) @ v).transpose(1, 2)).transpose(1, 2)
        return (z @ self.W_O).sum(dim=1) + self.b_O


class AttentionTorchEinsum(ref.Attention):
    """torch.einsum with letters kept to the course's names' initials, and the mask built with where."""

    def forward(self, normalized_resid_pre):
        x = normalized_resid_pre
        q, k, v = (hook(t.einsum("bpd,hde->bphe", x, W) + b) for hook, W, b in
                   ((self.hook_q, self.W_Q, self.b_Q), (self.hook_k, self.W_K, self.b_K), (self.hook_v, self.W_V, self.b_V)))
        pos = x.shape[1]
        scores = t.einsum("bqhe,bkhe->bhqk", q, k) * self.cfg.d_head**-0.5
        scores = self.hook_attn_scores(t.where(t.ones(pos, pos, dtype=t.bool).tril(), scores, self.IGNORE))
        pattern = self.hook_pattern(t.softmax(scores, dim=-1))
        z = self.hook_z(t.einsum("bhqk,bkhe->bqhe", pattern, v))
        return t.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class AttentionFlatHeads(ref.Attention):
    """One big projection per Q, K, V (heads concatenated), as in GPT-2's own c_attn, with an explicit softmax."""

    def forward(self, normalized_resid_pre):
        n_heads, d_head = self.cfg.n_heads, self.cfg.d_head

        def project(W, b):
            flat = einops.rearrange(W, "n_heads d_model d_head -> d_model (n_heads d_head)")
            out = normalized_resid_pre @ flat + b.flatten()
            return einops.rearrange(out, "batch pos (n_heads d_head) -> batch n_heads pos d_head", n_heads=n_heads)

        def hooked(hook, x):  # [batch n_heads pos d_head] through a hook that holds [batch pos n_heads d_head]
            return hook(x.transpose(1, 2)).transpose(1, 2)

        q, k, v = (hooked(hook, project(W, b)) for hook, W, b in
                   ((self.hook_q, self.W_Q, self.b_Q), (self.hook_k, self.W_K, self.b_K), (self.hook_v, self.W_V, self.b_V)))
        pos = q.shape[2]
        scores = (q @ k.transpose(-1, -2)) / d_head**0.5
        scores = self.hook_attn_scores(scores.masked_fill(t.ones(pos, pos, dtype=t.bool).triu(1), -1e9))
        weights = (scores - scores.amax(-1, keepdim=True)).exp()
        z = hooked(self.hook_z, self.hook_pattern(weights / weights.sum(-1, keepdim=True)) @ v)
        z_flat = einops.rearrange(z, "batch n_heads pos d_head -> batch pos (n_heads d_head)")
        return z_flat @ einops.rearrange(self.W_O, "n_heads d_head d_model -> (n_heads d_head) d_model") + self.b_O


class MLPLinear(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = self.hook_pre(F.linear(normalized_resid_mid, self.W_in.T, self.b_in))
        return F.linear(self.hook_post(F.gelu(pre, approximate="tanh")), self.W_out.T, self.b_out)


class MLPTanhFormula(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = self.hook_pre(normalized_resid_mid @ self.W_in + self.b_in)
        post = self.hook_post(0.5 * pre * (1 + t.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre**3))))
        return post @ self.W_out + self.b_out


class MLPNewGelu(ref.MLP):
    def forward(self, normalized_resid_mid):
        shape = (*normalized_resid_mid.shape[:-1], self.cfg.d_mlp)
        pre = self.hook_pre(t.addmm(self.b_in, normalized_resid_mid.reshape(-1, self.cfg.d_model), self.W_in).reshape(shape))
        post = t.nn.GELU(approximate="tanh")(pre)
        post = self.hook_post(post).reshape(-1, self.cfg.d_mlp)
        return t.addmm(self.b_out, post, self.W_out).reshape(normalized_resid_mid.shape)


class BlockPlain(ref.TransformerBlock):
    def forward(self, resid_pre):
        x = self.hook_resid_pre(resid_pre)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln1(x))))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln2(x))))


class BlockExpanded(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)


class BlockLoop(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid = self.hook_resid_pre(resid_pre)
        steps = ((self.ln1, self.attn, self.hook_attn_out, self.hook_resid_mid),
                 (self.ln2, self.mlp, self.hook_mlp_out, self.hook_resid_post))
        for norm, layer, hook_out, hook_resid in steps:
            resid = hook_resid(resid + hook_out(layer(norm(resid))))
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
    "layer_norm": [LayerNormStd, LayerNormVarMean, LayerNormEinops],
    "embed": [EmbedFunctional, EmbedOneHot, EmbedIndexSelect],
    "pos_embed": [PosEmbedExpand, PosEmbedRepeat, PosEmbedFunctional],
    "causal_mask": [MaskWhere, MaskLargeNegative, MaskAdded],
    "attention": [AttentionMatmul, AttentionTorchEinsum, AttentionFlatHeads],
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


def test_an_in_place_mask_fails_its_own_check_but_not_attention(capsys):
    """Its values are right and Attention's scores are its own intermediate: checks.causal_mask reports the rule,
    checks.attention passes with a note instead of being blocked."""
    from utils.checks.mistakes_ch02 import CAUSAL_MASK_MISTAKES
    in_place = next(m.impl for m in CAUSAL_MASK_MISTAKES if m.name == "in_place")
    with pytest.raises(AssertionError, match=r"modified its input attn_scores in place"):
        CHECKERS["causal_mask"](in_place)
    CHECKERS["attention"](in_place)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("✓") and "modifies its input in place" in line and "checks.causal_mask" in line


class MaskFloat64(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        future = t.ones(attn_scores.shape[-2:], dtype=t.bool).triu(1)
        return attn_scores.double().masked_fill(future, float("-inf"))


class MaskBool(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return t.ones(attn_scores.shape[-2:], dtype=t.bool).tril().expand(attn_scores.shape)


def test_causal_mask_follows_the_dtype_policy(capfd):
    """float64 is accepted as everywhere else; a boolean mask instead of masked scores is told why not."""
    CHECKERS["causal_mask"](MaskFloat64)
    assert capfd.readouterr().out.startswith("✓")
    with pytest.raises(AssertionError, match=r"output dtype bool .*expected floating-point values \(float32; float64 is accepted"):
        CHECKERS["causal_mask"](MaskBool)


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


# ------------------------------------------------------------------------------- stated beyond the values


class EmbedFirstRowForAll(ref.Embed):
    """Right shape, but every sequence is embedded as the first one."""

    def forward(self, tokens):
        return self.W_E[tokens[:1]].expand(tokens.shape[0], -1, -1)


def _mistake(exercise: str, name: str):
    return next(m.impl for m in MISTAKES[exercise] if m.name == name)


STATED = [  # (exercise, implementation, what the message must say)
    ("layer_norm", _mistake("layer_norm", "hooks_not_called"), "LayerNorm.forward never passes a tensor through self.hook_scale"),
    ("layer_norm", _mistake("layer_norm", "variance_through_hook_scale"),
     "self.hook_scale carries the variance, without eps and the square root"),
    ("layer_norm", _mistake("layer_norm", "hook_normalized_before_w_and_b"),
     "self.hook_normalized carries the normalised vector before w and b"),
    ("attention", _mistake("attention", "pattern_hook_not_called"), "never passes a tensor through self.hook_pattern"),
    ("attention", _mistake("attention", "scores_through_hook_pattern"),
     "self.hook_pattern carries what `hook_attn_scores` should carry"),
    ("transformer_block", _mistake("transformer_block", "attention_output_through_hook_resid_mid"),
     "self.hook_resid_mid carries what `hook_attn_out` should carry"),
    ("embed", _mistake("embed", "indexed_through_data"), "the output carries no gradient on 3 random sequences of length 5 "
     "(random weights) (your forward reads a parameter's `.data`)"),
    ("embed", _mistake("embed", "computed_under_no_grad"), "(part of your forward runs with gradients off (`with t.no_grad()`))"),
    ("mlp", _mistake("mlp", "weights_detached"), "parameter `W_in` gets no gradient from the output (and 1 more: `W_out`)"),
    ("embed", EmbedFirstRowForAll, "Rows 1, 2 differ while row 0 matches"),
]


@pytest.mark.parametrize(("exercise", "impl", "message"), STATED, ids=[f"{e}-{i.__name__}" for e, i, _ in STATED])
def test_stated_requirement_fails_with_a_specific_message(exercise, impl, message, capfd):
    with pytest.raises(AssertionError) as info:
        CHECKERS[exercise](impl)
    assert message in str(info.value)
    assert capfd.readouterr().err == ""


class LayerNormHookIgnored(ref.LayerNorm):
    def forward(self, residual):
        centred = residual - residual.mean(dim=-1, keepdim=True)
        scale = (centred.pow(2).mean(dim=-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt()
        self.hook_scale(scale)  # recorded, but what it returns is dropped
        return self.hook_normalized(centred / scale * self.w + self.b)


class LayerNormScaleHookedTwice(ref.LayerNorm):
    def forward(self, residual):
        centred = residual - residual.mean(dim=-1, keepdim=True)
        var = self.hook_scale(centred.pow(2).mean(dim=-1, keepdim=True))
        scale = self.hook_scale((var + self.cfg.layer_norm_eps).sqrt())
        return self.hook_normalized(centred / scale * self.w + self.b)


def test_a_hook_whose_return_value_is_dropped_fails():
    with pytest.raises(AssertionError, match=re.escape("replacing the value self.hook_scale returns does not change the output")):
        CHECKERS["layer_norm"](LayerNormHookIgnored)


def test_a_hook_that_runs_twice_fails():
    with pytest.raises(AssertionError, match=re.escape("LayerNorm.forward passes 2 tensors through self.hook_scale in one call")):
        CHECKERS["layer_norm"](LayerNormScaleHookedTwice)


def test_a_hook_removed_from_init_is_named():
    class LayerNormNoHookPoint(ref.LayerNorm):
        def __init__(self, cfg):
            super().__init__(cfg)
            del self.hook_scale

        def forward(self, residual):
            centred = residual - residual.mean(dim=-1, keepdim=True)
            return self.hook_normalized(centred / (centred.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b)

    with pytest.raises(AssertionError, match=re.escape("LayerNorm: self.hook_scale is missing, expected a HookPoint")):
        CHECKERS["layer_norm"](LayerNormNoHookPoint)
