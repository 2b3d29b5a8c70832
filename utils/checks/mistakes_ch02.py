"""Realistic wrong implementations of chapter 02's components, each with the hint it earns.

Each mistake subclasses the reference component and overrides only what a learner gets wrong, so the
catalogue reads as a list of misconceptions. Tests feed every entry to its checker and expect its hint.
A module mistake named `in_place` is caught earlier, by the shared check that inputs are left unchanged,
whose message says the same thing; its hint here documents it for readers of the catalogue.
"""

from __future__ import annotations

import math

import einops
import torch as t
import torch.nn.functional as F

from utils.checks.core import Mistake
from utils.checks.mistakes_ch02_stated import (  # noqa: F401  (STATED_ONLY is re-exported for the checkers)
    STATED_ONLY, _AttnOutThroughResidMid, _EmbedThroughData, _EmbedUnderNoGrad, _heads, _LayerNormWithoutHooks, _mix,
    _NormalizedBeforeAffine, _out, _PatternHookSkipped, _scores, _ScoresThroughHookPattern, _VarianceThroughHookScale,
    _WeightsDetached,
)
from utils.reference import components as ref


class _UnbiasedVariance(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (x.var(-1, keepdim=True, unbiased=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _EpsOutsideSqrt(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (x.var(-1, keepdim=True, unbiased=False).sqrt() + self.cfg.layer_norm_eps) * self.w + self.b


class _NoCentring(ref.LayerNorm):
    def forward(self, x):
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / (var + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _WrongAxis(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-2, keepdim=True)
        return centred / (centred.pow(2).mean(-2, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _NoAffine(ref.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], eps=self.cfg.layer_norm_eps)


class _NoEps(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / centred.pow(2).mean(-1, keepdim=True).sqrt() * self.w + self.b


class _BiasBeforeScale(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return (centred / (centred.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() + self.b) * self.w


class _InPlace(ref.LayerNorm):
    def forward(self, x):
        x -= x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


LAYER_NORM_MISTAKES = [
    Mistake("unbiased_variance", _UnbiasedVariance,
            "LayerNorm uses the biased variance (divide by d_model): use `var(unbiased=False)` or `.pow(2).mean()`."),
    Mistake("eps_outside_sqrt", _EpsOutsideSqrt,
            "epsilon belongs inside the square root: `(var + eps).sqrt()`, not `var.sqrt() + eps`."),
    Mistake("no_centring", _NoCentring, "subtract the mean before dividing: LayerNorm centres each vector first."),
    Mistake("wrong_axis", _WrongAxis,
            "normalise over d_model (`dim=-1`), one vector per position, not over positions or the batch."),
    Mistake("missing_w_and_b", _NoAffine, "after normalising, multiply by `self.w` and add `self.b`."),
    Mistake("missing_eps", _NoEps, "add `self.cfg.layer_norm_eps` to the variance before the square root."),
    Mistake("bias_before_scale", _BiasBeforeScale, "scale first, then shift: `normalized * self.w + self.b`."),
    Mistake("in_place", _InPlace, "don't modify the input in place (`x -= mean`); write `x = x - mean`."),
    Mistake("variance_through_hook_scale", _VarianceThroughHookScale,
            "`hook_scale` holds the denominator itself, `(var + eps).sqrt()`: chapter 04 divides by it to undo the LayerNorm."),
    Mistake("hook_normalized_before_w_and_b", _NormalizedBeforeAffine,
            "wrap the whole output, `self.hook_normalized(normalized * self.w + self.b)`, as TransformerLens does."),
    Mistake("hooks_not_called", _LayerNormWithoutHooks,
            "pass the scale through `self.hook_scale(...)` and the output through `self.hook_normalized(...)`: "
            "the hook points only record what goes through them."),
]


# -------------------------------------------------------------------------------------------------- Embed


class _EmbedScaled(ref.Embed):
    def forward(self, tokens):
        return self.W_E[tokens] * self.cfg.d_model**0.5


class _EmbedFlattened(ref.Embed):
    def forward(self, tokens):
        return self.W_E[tokens.flatten()]


class _EmbedFirstSequence(ref.Embed):
    def forward(self, tokens):
        return self.W_E[tokens[0]]


class _EmbedPositions(ref.Embed):
    def forward(self, tokens):
        batch, seq_len = tokens.shape
        return self.W_E[t.arange(seq_len)].expand(batch, seq_len, self.cfg.d_model)


class _EmbedOneHotWrongOrder(ref.Embed):
    def forward(self, tokens):
        one_hot = F.one_hot(tokens, self.cfg.d_vocab).to(self.W_E.dtype)
        return einops.einsum(one_hot, self.W_E, "batch pos d_vocab, d_vocab d_model -> batch d_model pos")


EMBED_MISTAKES = [
    Mistake("scaled_by_sqrt_d_model", _EmbedScaled,
            "GPT-2 does not multiply embeddings by sqrt(d_model) (the 2017 Transformer did): return `self.W_E[tokens]`."),
    Mistake("flattened_tokens", _EmbedFlattened,
            "indexing with `tokens.flatten()` loses the batch and position axes: index with `tokens` itself, "
            "`self.W_E[tokens]` is already [batch pos d_model]."),
    Mistake("first_sequence_only", _EmbedFirstSequence,
            "`self.W_E[tokens[0]]` embeds only the first sequence of the batch: index with the whole `tokens`."),
    Mistake("embeds_positions", _EmbedPositions,
            "Embed looks up each token's id, not its position: use `self.W_E[tokens]` (positions are PosEmbed's job)."),
    Mistake("one_hot_wrong_output_order", _EmbedOneHotWrongOrder,
            "the one-hot product is right but the output axes are out of order: write "
            "`-> batch pos d_model`, not `-> batch d_model pos`."),
    Mistake("indexed_through_data", _EmbedThroughData,
            "`self.W_E.data` is a copy outside autograd, so W_E would never train: index the parameter, `self.W_E[tokens]`."),
    Mistake("computed_under_no_grad", _EmbedUnderNoGrad,
            "leave gradients on in forward: under `t.no_grad()` the output is cut off from W_E and training cannot update it."),
]


# ----------------------------------------------------------------------------------------------- PosEmbed


class _PosByTokenIds(ref.PosEmbed):
    def forward(self, tokens):
        return self.W_pos[tokens]


class _PosNoBatch(ref.PosEmbed):
    def forward(self, tokens):
        return self.W_pos[: tokens.shape[1]]


class _PosOffByOne(ref.PosEmbed):
    def forward(self, tokens):
        batch, seq_len = tokens.shape
        return einops.repeat(self.W_pos[1 : seq_len + 1], "pos d_model -> batch pos d_model", batch=batch)


class _PosShapeBackwards(ref.PosEmbed):
    def forward(self, tokens):
        seq_len, batch = tokens.shape  # the wrong order: tokens is [batch pos]
        return einops.repeat(self.W_pos[:seq_len], "pos d_model -> batch pos d_model", batch=batch)


class _PosWholeTable(ref.PosEmbed):
    def forward(self, tokens):
        return einops.repeat(self.W_pos, "pos d_model -> batch pos d_model", batch=tokens.shape[0])


POS_EMBED_MISTAKES = [
    Mistake("indexed_by_token_ids", _PosByTokenIds,
            "PosEmbed indexes W_pos by position (0, 1, ..., pos-1), not by token id: use `self.W_pos[:seq_len]`, "
            "repeated over the batch."),
    Mistake("no_batch_axis", _PosNoBatch,
            "you return [pos d_model]: repeat it over the batch, e.g. "
            "`einops.repeat(self.W_pos[:seq_len], 'pos d_model -> batch pos d_model', batch=batch)`."),
    Mistake("positions_start_at_one", _PosOffByOne,
            "positions start at 0: the first token gets row `W_pos[0]`, so slice `self.W_pos[:seq_len]`."),
    Mistake("shape_unpacked_backwards", _PosShapeBackwards,
            "`tokens` is [batch pos]: unpack it as `batch, seq_len = tokens.shape` (the check uses batch ≠ pos to catch this)."),
    Mistake("whole_table", _PosWholeTable,
            "you return all n_ctx rows of W_pos: keep only the first seq_len rows, `self.W_pos[:seq_len]`."),
]


# ------------------------------------------------------------------------------------------- causal mask


def _square(scores):
    query_pos, key_pos = scores.shape[-2:]
    return t.ones(query_pos, key_pos, dtype=t.bool, device=scores.device)


class _MaskHidesDiagonal(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill(t.triu(_square(attn_scores), diagonal=0), self.IGNORE)


class _MaskFillsKeepMask(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        keep = t.tril(_square(attn_scores))
        return attn_scores.masked_fill(keep, self.IGNORE)


class _MaskHidesPast(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill(t.tril(_square(attn_scores), diagonal=-1), self.IGNORE)


class _MaskZero(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill(t.triu(_square(attn_scores), diagonal=1), 0.0)


class _MaskTiny(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill(t.triu(_square(attn_scores), diagonal=1), 1e-9)


class _MaskInPlace(ref.Attention):
    def apply_causal_mask(self, attn_scores):
        return attn_scores.masked_fill_(t.triu(_square(attn_scores), diagonal=1), self.IGNORE)


MASK_IN_PLACE_HINT = ("use `attn_scores.masked_fill(mask, self.IGNORE)`, which returns a new tensor, "
                      "not `masked_fill_`, which overwrites the caller's scores.")

CAUSAL_MASK_MISTAKES = [
    Mistake("hides_the_diagonal", _MaskHidesDiagonal,
            "a query may attend to its own position: mask strictly above the diagonal, `t.triu(ones, diagonal=1)`."),
    Mistake("fills_the_keep_mask", _MaskFillsKeepMask,
            "`t.tril(ones)` marks the keys to KEEP, but `masked_fill` fills where the mask is True: "
            "fill `t.triu(ones, diagonal=1)` instead (or invert the mask with `~`)."),
    Mistake("hides_the_past", _MaskHidesPast,
            "your mask hides earlier keys and keeps later ones: the future is above the diagonal, "
            "`t.triu(ones, diagonal=1)`, not `t.tril(..., diagonal=-1)`."),
    Mistake("fills_zero", _MaskZero,
            "a score of 0 still gets attention after softmax: fill masked scores with `self.IGNORE` (-inf)."),
    Mistake("fills_tiny_positive", _MaskTiny,
            "1e-9 is a tiny positive number, not a huge negative one: fill with `self.IGNORE` (-inf)."),
    Mistake("in_place", _MaskInPlace, MASK_IN_PLACE_HINT),
]


# ---------------------------------------------------------------------------------------------- Attention


class _AttentionVariant(ref.Attention):
    """The reference forward with hooks for one thing done wrong; each mistake overrides one step."""

    def qkv(self, x):
        return _heads(x, self.W_Q, self.b_Q), _heads(x, self.W_K, self.b_K), _heads(x, self.W_V, self.b_V)

    def scale(self, scores):
        return scores / math.sqrt(self.cfg.d_head)

    def pattern(self, scores):
        return self.apply_causal_mask(self.scale(scores)).softmax(dim=-1)

    def output(self, z):
        return _out(z, self.W_O, self.b_O)

    def forward(self, normalized_resid_pre):
        q, k, v = self.qkv(normalized_resid_pre)
        return self.output(_mix(self.pattern(_scores(q, k)), v))


class _NoScale(_AttentionVariant):
    def scale(self, scores):
        return scores


class _ScaleByDHead(_AttentionVariant):
    def scale(self, scores):
        return scores / self.cfg.d_head


class _ScaleBySqrtDModel(_AttentionVariant):
    def scale(self, scores):
        return scores / math.sqrt(self.cfg.d_model)


class _MaskAfterSoftmax(_AttentionVariant):
    def pattern(self, scores):
        return self.apply_causal_mask(self.scale(scores).softmax(dim=-1))


class _NoMask(_AttentionVariant):
    def pattern(self, scores):
        return self.scale(scores).softmax(dim=-1)


class _SoftmaxOverQueries(_AttentionVariant):
    def pattern(self, scores):
        return self.apply_causal_mask(self.scale(scores)).softmax(dim=-2)


class _NoQKVBiases(_AttentionVariant):
    def qkv(self, x):
        return _heads(x, self.W_Q, 0.0), _heads(x, self.W_K, 0.0), _heads(x, self.W_V, 0.0)


class _NoOutputBias(_AttentionVariant):
    def output(self, z):
        return _out(z, self.W_O, 0.0)


class _HeadsAveraged(_AttentionVariant):
    def output(self, z):
        per_head = einops.einsum(z, self.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos n_heads d_model")
        return per_head.mean(dim=2) + self.b_O


class _HeadsConcatenatedWrongOrder(_AttentionVariant):
    def output(self, z):
        z_flat = einops.rearrange(z, "batch pos n_heads d_head -> batch pos (d_head n_heads)")
        W_O_flat = einops.rearrange(self.W_O, "n_heads d_head d_model -> (n_heads d_head) d_model")
        return z_flat @ W_O_flat + self.b_O


class _ScoresTransposed(_AttentionVariant):
    def pattern(self, scores):
        return self.apply_causal_mask(self.scale(scores.transpose(-1, -2))).softmax(dim=-1)


class _KeysFromWQ(_AttentionVariant):
    def qkv(self, x):
        return _heads(x, self.W_Q, self.b_Q), _heads(x, self.W_Q, self.b_K), _heads(x, self.W_V, self.b_V)


ATTENTION_MISTAKES = [
    Mistake("no_scaling", _NoScale, "divide the attention scores by `math.sqrt(self.cfg.d_head)` before the mask and softmax."),
    Mistake("scaled_by_d_head", _ScaleByDHead, "scale by the square root of d_head, `math.sqrt(self.cfg.d_head)`, not by d_head."),
    Mistake("scaled_by_sqrt_d_model", _ScaleBySqrtDModel,
            "each head's dot product has d_head terms: scale by `math.sqrt(self.cfg.d_head)`, not sqrt(d_model)."),
    Mistake("mask_after_softmax", _MaskAfterSoftmax,
            "mask the scores BEFORE the softmax: `apply_causal_mask(scores)`, then `.softmax(dim=-1)`; masking "
            "probabilities with -inf gives NaN and rows that do not sum to 1."),
    Mistake("no_mask", _NoMask, "call `self.apply_causal_mask` on the scaled scores before the softmax: each position may only see earlier ones."),
    Mistake("softmax_over_queries", _SoftmaxOverQueries,
            "softmax over the key axis, `dim=-1`: each query's weights over the keys sum to 1, not each key's over the queries."),
    Mistake("query_key_value_biases_missing", _NoQKVBiases, "add `self.b_Q`, `self.b_K` and `self.b_V` to the queries, keys and values."),
    Mistake("output_bias_missing", _NoOutputBias, "add `self.b_O` after projecting with W_O (once, not once per head)."),
    Mistake("heads_averaged", _HeadsAveraged,
            "heads add their outputs into the residual stream: SUM over n_heads after W_O, do not average."),
    Mistake("heads_flattened_in_wrong_order", _HeadsConcatenatedWrongOrder,
            "when you flatten z, keep the same (n_heads d_head) order as W_O: `rearrange(z, '... n_heads d_head -> ... (n_heads d_head)')`, "
            "or contract both axes with einsum."),
    Mistake("scores_transposed", _ScoresTransposed,
            "your scores are indexed [key, query]: write the einsum output as `batch n_heads query_pos key_pos`, queries first."),
    Mistake("keys_computed_with_W_Q", _KeysFromWQ, "keys use `self.W_K` (and `self.b_K`), not W_Q: check the copied line."),
    Mistake("pattern_hook_not_called", _PatternHookSkipped,
            "pass the pattern through `self.hook_pattern(...)`: chapter 04 reads every head's pattern from it."),
    Mistake("scores_through_hook_pattern", _ScoresThroughHookPattern,
            "`hook_pattern` holds the probabilities, after the softmax: `pattern = self.hook_pattern(scores.softmax(dim=-1))`."),
]


# -------------------------------------------------------------------------------------------------- MLP


class _MLPVariant(ref.MLP):
    def act(self, pre):
        return F.gelu(pre, approximate="tanh")

    def forward(self, normalized_resid_mid, use_b_in=True, use_b_out=True):
        pre = normalized_resid_mid @ self.W_in + (self.b_in if use_b_in else 0.0)
        return self.act(pre) @ self.W_out + (self.b_out if use_b_out else 0.0)


class _ExactGelu(_MLPVariant):
    def act(self, pre):
        return F.gelu(pre)


class _Relu(_MLPVariant):
    def act(self, pre):
        return F.relu(pre)


class _NoActivation(_MLPVariant):
    def act(self, pre):
        return pre


class _NoBIn(_MLPVariant):
    def forward(self, normalized_resid_mid):
        return super().forward(normalized_resid_mid, use_b_in=False)


class _NoBOut(_MLPVariant):
    def forward(self, normalized_resid_mid):
        return super().forward(normalized_resid_mid, use_b_out=False)


class _BInAfterGelu(_MLPVariant):
    def forward(self, normalized_resid_mid):
        return (self.act(normalized_resid_mid @ self.W_in) + self.b_in) @ self.W_out + self.b_out


MLP_MISTAKES = [
    Mistake("exact_gelu", _ExactGelu,
            "GPT-2 uses the tanh approximation of GELU: `F.gelu(pre, approximate=\"tanh\")` (the default is the exact erf form)."),
    Mistake("relu", _Relu, "GPT-2's activation is GELU, not ReLU: `F.gelu(pre, approximate=\"tanh\")`."),
    Mistake("no_activation", _NoActivation, "apply GELU between the two linear maps; without it the MLP is one linear map."),
    Mistake("input_bias_missing", _NoBIn, "add `self.b_in` to the pre-activations, before the GELU."),
    Mistake("output_bias_missing", _NoBOut, "add `self.b_out` to the output."),
    Mistake("input_bias_after_gelu", _BInAfterGelu, "add `self.b_in` BEFORE the GELU: `gelu(x @ W_in + b_in)`."),
    Mistake("weights_detached", _WeightsDetached,
            "`.detach()` cuts the weights out of the graph, so W_in and W_out would never train: use `self.W_in` itself."),
]


# ------------------------------------------------------------------------------------------- TransformerBlock


class _PostLN(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_mid = self.ln1(resid_pre + self.attn(resid_pre))
        return self.ln2(resid_mid + self.mlp(resid_mid))


class _NoAttnResidual(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_mid = self.attn(self.ln1(resid_pre))
        return resid_mid + self.mlp(self.ln2(resid_mid))


class _NoMLPResidual(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
        return self.mlp(self.ln2(resid_mid))


class _Parallel(ref.TransformerBlock):
    def forward(self, resid_pre):
        return resid_pre + self.attn(self.ln1(resid_pre)) + self.mlp(self.ln2(resid_pre))


class _ResidualOfNormalised(ref.TransformerBlock):
    def forward(self, resid_pre):
        x = self.ln1(resid_pre)
        x = x + self.attn(x)
        y = self.ln2(x)
        return y + self.mlp(y)


class _LN1Twice(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
        return resid_mid + self.mlp(self.ln1(resid_mid))


class _BlockInPlace(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_pre += self.attn(self.ln1(resid_pre))
        resid_pre += self.mlp(self.ln2(resid_pre))
        return resid_pre


TRANSFORMER_BLOCK_MISTAKES = [
    Mistake("post_layer_norm", _PostLN,
            "GPT-2 is pre-LN: normalise the INPUT of each sub-layer and add its output to the un-normalised stream, "
            "`resid_mid = resid_pre + attn(ln1(resid_pre))`."),
    Mistake("missing_attention_residual", _NoAttnResidual,
            "add the attention output to the residual stream: `resid_mid = resid_pre + attn(ln1(resid_pre))`."),
    Mistake("missing_mlp_residual", _NoMLPResidual,
            "add the MLP output to the residual stream: `resid_post = resid_mid + mlp(ln2(resid_mid))`."),
    Mistake("parallel_attention_and_mlp", _Parallel,
            "the MLP reads resid_mid, which already contains the attention output: compute them one after the other."),
    Mistake("residual_of_normalised_stream", _ResidualOfNormalised,
            "the residual stream itself is never normalised: add to `resid_pre`, not to `ln1(resid_pre)`."),
    Mistake("first_layer_norm_used_twice", _LN1Twice, "the MLP reads `self.ln2(resid_mid)`: each sub-layer has its own LayerNorm."),
    Mistake("in_place", _BlockInPlace,
            "`resid_pre += ...` overwrites the caller's tensor: write `resid_mid = resid_pre + ...` instead."),
    Mistake("attention_output_through_hook_resid_mid", _AttnOutThroughResidMid,
            "`hook_resid_mid` holds the stream after the attention update, `resid_pre + attn_out`: wrap the sum, not the update."),
]


# ---------------------------------------------------------------------------------------------- Unembed


class _NoBU(ref.Unembed):
    def forward(self, normalized_resid_final):
        return normalized_resid_final @ self.W_U


class _TiedToWE(ref.Unembed):
    def forward(self, normalized_resid_final):
        from utils.reference_model import shared_params  # a notebook global (`gpt2.W_E`) in the learner's version

        return normalized_resid_final @ shared_params()["embed.W_E"].T + self.b_U


class _Softmax(ref.Unembed):
    def forward(self, normalized_resid_final):
        return (normalized_resid_final @ self.W_U + self.b_U).softmax(dim=-1)


class _LogSoftmax(ref.Unembed):
    def forward(self, normalized_resid_final):
        return (normalized_resid_final @ self.W_U + self.b_U).log_softmax(dim=-1)


class _LastPositionOnly(ref.Unembed):
    def forward(self, normalized_resid_final):
        return normalized_resid_final[:, -1] @ self.W_U + self.b_U


UNEMBED_MISTAKES = [
    Mistake("unembedding_bias_missing", _NoBU, "add the bias `self.b_U` (GPT-2's is zero, which is why the real-model case passes)."),
    Mistake("embedding_matrix_reused", _TiedToWE,
            "use this module's own `self.W_U`, not the embedding's W_E.T or any other matrix from outside the module "
            "(such as `gpt2.W_U`): GPT-2 ties W_U to W_E, but the course keeps them separate parameters, and the check "
            "also runs a small Unembed with random weights."),
    Mistake("returns_probabilities", _Softmax, "return logits, not probabilities: leave out the softmax."),
    Mistake("returns_log_probabilities", _LogSoftmax, "return logits, not log-probabilities: leave out the log_softmax."),
    Mistake("last_position_only", _LastPositionOnly,
            "return logits for EVERY position, [batch pos d_vocab]: training predicts each next token, not only the last."),
]

