"""Realistic wrong implementations of chapter 07's pieces, each with the hint it earns.

Module mistakes subclass the reference and override only what a learner gets wrong; function mistakes have the
learner's signature. Attention-like mistakes share one parametrised forward (`_attend`), each switch being one
misconception, so that every catalogue entry differs from the reference in exactly one way.
"""

from __future__ import annotations

import math

import einops
import torch as t
import torch.nn.functional as F

from utils.checks.core import Mistake
from utils.reference import modern as ref

# ------------------------------------------------------------------------------------------------ RMSNorm


class _MeanSubtracted(ref.RMSNorm):
    def forward(self, residual):
        centred = residual - residual.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + self.cfg.rms_norm_eps).sqrt() * self.w


class _EpsOutsideRoot(ref.RMSNorm):
    def forward(self, residual):
        return residual / (residual.pow(2).mean(-1, keepdim=True).sqrt() + self.cfg.rms_norm_eps) * self.w


class _NoEps(ref.RMSNorm):
    def forward(self, residual):
        return residual / residual.pow(2).mean(-1, keepdim=True).sqrt() * self.w


class _NoGain(ref.RMSNorm):
    def forward(self, residual):
        return residual * t.rsqrt(residual.pow(2).mean(-1, keepdim=True) + self.cfg.rms_norm_eps)


class _SumNotMean(ref.RMSNorm):
    def forward(self, residual):
        return residual / (residual.pow(2).sum(-1, keepdim=True) + self.cfg.rms_norm_eps).sqrt() * self.w


class _OverPositions(ref.RMSNorm):
    def forward(self, residual):
        return residual / (residual.pow(2).mean(-2, keepdim=True) + self.cfg.rms_norm_eps).sqrt() * self.w


class _RmsInPlace(ref.RMSNorm):
    def forward(self, residual):
        residual /= (residual.pow(2).mean(-1, keepdim=True) + self.cfg.rms_norm_eps).sqrt()
        return residual * self.w


RMS_NORM_MISTAKES = [
    Mistake("mean_subtracted", _MeanSubtracted,
            "you subtract the mean, as LayerNorm does; RMSNorm divides the raw vector by its root mean square."),
    Mistake("eps_outside_root", _EpsOutsideRoot,
            "epsilon belongs inside the square root: `(x.pow(2).mean(-1, keepdim=True) + eps).sqrt()`."),
    Mistake("missing_eps", _NoEps, "add `self.cfg.rms_norm_eps` to the mean square before the square root."),
    Mistake("missing_gain", _NoGain, "after normalising, multiply by the learned gain `self.w`."),
    Mistake("sum_not_mean", _SumNotMean,
            "the root *mean* square divides the sum of squares by d_model: use `.mean(dim=-1)`, not `.sum(dim=-1)`."),
    Mistake("over_positions", _OverPositions,
            "normalise each position's vector over d_model (`dim=-1`), not over positions."),
    Mistake("in_place", _RmsInPlace, "don't modify the input in place (`x /= rms`); write `x / rms`."),
]

# ------------------------------------------------------------------------------------------- rotary (RoPE)


def _inv_freq(d_head: int, theta: float, exponent_factor: float = 2.0):
    return theta ** (-t.arange(0, d_head // 2, dtype=t.float32) * exponent_factor / d_head)


def _angles(x, start: int, inv_freq):
    positions = t.arange(start, start + x.shape[1], dtype=t.float32)
    return t.outer(positions, inv_freq)[:, None, :]


def _rotate_halves(x, angles, sign: float = 1.0):
    d_half = x.shape[-1] // 2
    cos, sin = angles.cos(), sign * angles.sin()
    first, second = x[..., :d_half], x[..., d_half:]
    return t.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def _rope_interleaved(x, start=0, theta=10000.0):
    """Meta's original layout: pairs (x0, x1), (x2, x3), ..."""
    angles = _angles(x, start, _inv_freq(x.shape[-1], theta))
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = t.stack([even * angles.cos() - odd * angles.sin(), odd * angles.cos() + even * angles.sin()], dim=-1)
    return rotated.flatten(-2)


def _rope_no_offset(x, start=0, theta=10000.0):
    return _rotate_halves(x, _angles(x, 0, _inv_freq(x.shape[-1], theta)))


def _rope_backwards(x, start=0, theta=10000.0):
    return _rotate_halves(x, _angles(x, start, _inv_freq(x.shape[-1], theta)), sign=-1.0)


def _rope_mixed_conventions(x, start=0, theta=10000.0):
    """rotate_half (halves) with cos/sin laid out for adjacent pairs (repeat_interleave instead of cat)."""
    angles = _angles(x, start, _inv_freq(x.shape[-1], theta)).repeat_interleave(2, dim=-1)
    d_half = x.shape[-1] // 2
    rotated_half = t.cat([-x[..., d_half:], x[..., :d_half]], dim=-1)
    return x * angles.cos() + rotated_half * angles.sin()


def _rope_exponent(x, start=0, theta=10000.0):
    return _rotate_halves(x, _angles(x, start, _inv_freq(x.shape[-1], theta, exponent_factor=1.0)))


def _rope_fixed_theta(x, start=0, theta=10000.0):
    return _rotate_halves(x, _angles(x, start, _inv_freq(x.shape[-1], 10000.0)))


ROTARY_MISTAKES = [
    Mistake("adjacent_pairs", _rope_interleaved,
            "you rotate adjacent pairs (x0, x1), (x2, x3), ... (the interleaved convention of Meta's original code); "
            "transformers' Llama pairs dimension i with i + d_head/2: rotate the two halves."),
    Mistake("no_position_offset", _rope_no_offset,
            "positions start at `start`, not 0: use `t.arange(start, start + pos)` (a cached forward pass starts later)."),
    Mistake("rotated_backwards", _rope_backwards,
            "the rotation goes the other way: first half `x1*cos - x2*sin`, second half `x2*cos + x1*sin`."),
    Mistake("mixed_conventions", _rope_mixed_conventions,
            "you rotate halves but lay out cos/sin for adjacent pairs (`repeat_interleave`): with rotate_half, "
            "repeat the frequencies with `t.cat([freqs, freqs], -1)`."),
    Mistake("frequency_exponent", _rope_exponent,
            "the frequencies are theta^(-2i/d_head) for i = 0 .. d_head/2 - 1 (`arange(0, d_head, 2) / d_head`): "
            "you dropped the factor 2."),
    Mistake("theta_ignored", _rope_fixed_theta, "use the `theta` argument, not a hard-coded 10000."),
]

# --------------------------------------------------------------------------------------------------- SwiGLU


def _proj(x, W):
    return einops.einsum(x, W, "batch pos d_model, d_model d_mlp -> batch pos d_mlp")


def _down(h, W):
    return einops.einsum(h, W, "batch pos d_mlp, d_mlp d_model -> batch pos d_model")


class _SiluOnUp(ref.SwiGLU):
    def forward(self, x):
        return _down(_proj(x, self.W_gate) * F.silu(_proj(x, self.W_in)), self.W_out)


class _SiluAfterProduct(ref.SwiGLU):
    def forward(self, x):
        return _down(F.silu(_proj(x, self.W_gate) * _proj(x, self.W_in)), self.W_out)


class _SigmoidGate(ref.SwiGLU):
    def forward(self, x):
        return _down(t.sigmoid(_proj(x, self.W_gate)) * _proj(x, self.W_in), self.W_out)


class _GeluGate(ref.SwiGLU):
    def forward(self, x):
        return _down(F.gelu(_proj(x, self.W_gate)) * _proj(x, self.W_in), self.W_out)


class _NoGate(ref.SwiGLU):
    def forward(self, x):
        return _down(F.silu(_proj(x, self.W_in)), self.W_out)


SWIGLU_MISTAKES = [
    Mistake("silu_on_up_branch", _SiluOnUp,
            "SiLU goes on the gate `x @ W_gate` (gate_proj), not on `x @ W_in` (up_proj): gate and up are swapped."),
    Mistake("silu_after_product", _SiluAfterProduct,
            "apply SiLU to the gate alone, then multiply: `silu(x @ W_gate) * (x @ W_in)`."),
    Mistake("sigmoid_gate", _SigmoidGate,
            "SiLU is `z * sigmoid(z)` (`F.silu`); a sigmoid gate is the original GLU, not SwiGLU."),
    Mistake("gelu_gate", _GeluGate, "Llama's gate uses SiLU (`F.silu`), not GPT-2's GELU: that would be GeGLU."),
    Mistake("no_gate", _NoGate,
            "you dropped the gate: the hidden layer is the product `silu(x @ W_gate) * (x @ W_in)`."),
]

# ------------------------------------------------------------------------------------------ attention (GQA)


def _attend(attn, x, past_k=None, past_v=None, *, tile=False, rope_q=True, rope_k=True, rope_v=False,
            scale=None, causal=True, offset=True, shift_mask=True, rerotate=False, expand_cache=False):
    """The reference attention with one switch per misconception; returns (out, cached k, cached v)."""
    cfg = attn.cfg
    start = 0 if past_k is None else past_k.shape[1]
    at = start if offset else 0
    q = einops.einsum(x, attn.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head")
    k = einops.einsum(x, attn.W_K, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
    v = einops.einsum(x, attn.W_V, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
    group = cfg.n_heads // cfg.n_kv_heads
    expand = (lambda z: z.repeat(1, 1, group, 1)) if tile else (lambda z: z.repeat_interleave(group, dim=2))
    if expand_cache:
        k, v = expand(k), expand(v)
    if rope_q:
        q = ref.apply_rotary(q, at, cfg.rope_theta)
    if rope_k and not rerotate:
        k = ref.apply_rotary(k, at, cfg.rope_theta)
    if rope_v:
        v = ref.apply_rotary(v, at, cfg.rope_theta)
    if past_k is not None:
        k, v = t.cat([past_k, k], dim=1), t.cat([past_v, v], dim=1)
    if rerotate:  # rotates the whole key sequence from 0 again, cached (already rotated) keys included
        k = ref.apply_rotary(k, 0, cfg.rope_theta)
    k_all, v_all = (k, v) if expand_cache else (expand(k), expand(v))
    scores = einops.einsum(q, k_all, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")
    scores = scores / (scale if scale is not None else math.sqrt(cfg.d_head))
    if causal:
        diagonal = start + 1 if shift_mask else 1
        future = t.triu(t.ones(q.shape[1], k.shape[1], dtype=t.bool), diagonal=diagonal)
        scores = scores.masked_fill(future, attn.IGNORE)
    z = einops.einsum(scores.softmax(-1), v_all, "batch n_heads query_pos key_pos, batch key_pos n_heads d_head -> batch query_pos n_heads d_head")
    out = einops.einsum(z, attn.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model")
    return out, k, v


def _gqa(name: str, **switches):
    def forward(self, x):
        return _attend(self, x, **switches)[0]

    return type(name, (ref.GroupedQueryAttention,), {"forward": forward})


class _ScaledByDModel(ref.GroupedQueryAttention):
    def forward(self, x):
        return _attend(self, x, scale=math.sqrt(self.cfg.d_model))[0]


GQA_MISTAKES = [
    Mistake("kv_heads_tiled", _gqa("_KvHeadsTiled", tile=True),
            "you tiled the key/value heads with `repeat` (a, b, a, b); query head h reads kv head h // group, so expand "
            "with `repeat_interleave(group, dim=2)` (a, a, b, b)."),
    Mistake("rope_on_values", _gqa("_RopeOnValues", rope_v=True),
            "rotate queries and keys only: RoPE is never applied to the values."),
    Mistake("rope_on_queries_only", _gqa("_RopeQueriesOnly", rope_k=False),
            "rotate the keys too: the score depends on relative position only when both q and k are rotated."),
    Mistake("no_rope", _gqa("_NoRope", rope_q=False, rope_k=False),
            "apply `apply_rotary` to q and k (positions from 0): without it the model has no notion of position."),
    Mistake("scaled_by_sqrt_d_model", _ScaledByDModel, "divide the scores by sqrt(d_head), not sqrt(d_model)."),
    Mistake("no_causal_mask", _gqa("_NoCausalMask", causal=False),
            "mask the future: fill scores where key_pos > query_pos with `self.IGNORE` before the softmax."),
]

# ------------------------------------------------------------------------------------------------ decoder


class _PostNorm(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = self.embed(tokens)
        for block in self.blocks:
            residual = block.ln1(residual + block.attn(residual))
            residual = block.ln2(residual + block.mlp(residual))
        return self.unembed(self.ln_final(residual))


class _ParallelBlock(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = self.embed(tokens)
        for block in self.blocks:
            residual = residual + block.attn(block.ln1(residual)) + block.mlp(block.ln2(residual))
        return self.unembed(self.ln_final(residual))


class _NoFinalNorm(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = self.embed(tokens)
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(residual)


class _ScaledEmbedding(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = self.embed(tokens) * self.cfg.d_model**0.5
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _TiedUnembed(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = self.embed(tokens)
        for block in self.blocks:
            residual = block(residual)
        return self.ln_final(residual) @ self.embed.W_E.T


DECODER_MISTAKES = [
    Mistake("post_norm", _PostNorm,
            "Llama is pre-norm: normalise the input of each sub-layer and add its output to the un-normalised stream, "
            "`resid = resid + attn(ln1(resid))`."),
    Mistake("parallel_block", _ParallelBlock,
            "the MLP reads resid_mid, after attention has been added (GPT-J's parallel block reads resid_pre for both)."),
    Mistake("no_final_norm", _NoFinalNorm, "apply `self.ln_final` to the last block's output before the unembedding."),
    Mistake("embeddings_scaled", _ScaledEmbedding,
            "Llama does not multiply embeddings by sqrt(d_model) (Gemma does): use `self.embed(tokens)` as it is."),
    Mistake("tied_unembedding", _TiedUnembed,
            "this model's unembedding is its own matrix: use `self.unembed` (W_U), not `W_E.T`."),
]

# ------------------------------------------------------------------------------------------------ name map


def _convert(hf_state, cfg, *, heads="(n_heads d_head)", kv_heads_from=None, swap_gate_up=False, swap_norms=False,
             tied=False, o_split="d_model (n_heads d_head) -> n_heads d_head d_model", strict=True):
    expected = ref.llama_names(cfg)
    if strict:
        missing, unexpected = sorted(set(expected) - set(hf_state)), sorted(set(hf_state) - set(expected))
        if missing or unexpected:
            raise KeyError(f"missing {missing}, unexpected {unexpected}")
    split_in = f"{heads} d_model -> n_heads d_model d_head"
    n_kv = cfg.n_heads if kv_heads_from == "n_heads" else cfg.n_kv_heads
    out = {"embed.W_E": hf_state["model.embed_tokens.weight"], "ln_final.w": hf_state["model.norm.weight"],
           "unembed.W_U": (hf_state["model.embed_tokens.weight"] if tied else hf_state["lm_head.weight"]).T}
    for i in range(cfg.n_layers):
        hf, tl = f"model.layers.{i}.", f"blocks.{i}."
        ln1, ln2 = "input_layernorm", "post_attention_layernorm"
        if swap_norms:
            ln1, ln2 = ln2, ln1
        out[tl + "ln1.w"], out[tl + "ln2.w"] = hf_state[hf + ln1 + ".weight"], hf_state[hf + ln2 + ".weight"]
        out[tl + "attn.W_Q"] = einops.rearrange(hf_state[hf + "self_attn.q_proj.weight"], split_in, n_heads=cfg.n_heads)
        out[tl + "attn.W_K"] = einops.rearrange(hf_state[hf + "self_attn.k_proj.weight"], split_in, n_heads=n_kv)
        out[tl + "attn.W_V"] = einops.rearrange(hf_state[hf + "self_attn.v_proj.weight"], split_in, n_heads=n_kv)
        out[tl + "attn.W_O"] = einops.rearrange(hf_state[hf + "self_attn.o_proj.weight"], o_split, n_heads=cfg.n_heads)
        gate, up = ("up_proj", "gate_proj") if swap_gate_up else ("gate_proj", "up_proj")
        out[tl + "mlp.W_gate"] = hf_state[hf + f"mlp.{gate}.weight"].T
        out[tl + "mlp.W_in"] = hf_state[hf + f"mlp.{up}.weight"].T
        out[tl + "mlp.W_out"] = hf_state[hf + "mlp.down_proj.weight"].T
    return {name: value.clone() for name, value in out.items()}


def _mapper(**switches):
    return lambda hf_state, cfg: _convert(hf_state, cfg, **switches)


NAME_MAP_MISTAKES = [
    Mistake("heads_split_inner", _mapper(heads="(d_head n_heads)"),
            "q_proj's output features are the heads one after another (feature h * d_head + e): split them as "
            "`(n_heads d_head)`, head outermost, not `(d_head n_heads)`."),
    Mistake("kv_split_into_n_heads", _mapper(kv_heads_from="n_heads"),
            "k_proj and v_proj have n_kv_heads heads: split them with `n_heads=cfg.n_kv_heads`."),
    Mistake("gate_up_swapped", _mapper(swap_gate_up=True),
            "W_gate is `gate_proj` (the SiLU branch) and W_in is `up_proj`; you swapped them."),
    Mistake("norms_swapped", _mapper(swap_norms=True),
            "ln1 is `input_layernorm` (before attention) and ln2 is `post_attention_layernorm` (before the MLP)."),
    Mistake("unembedding_from_embedding", _mapper(tied=True),
            "this checkpoint's embeddings are untied: W_U is `lm_head.weight.T`, not `embed_tokens.weight.T`."),
    Mistake("o_proj_split_like_q", _mapper(o_split="(n_heads d_head) d_model -> n_heads d_head d_model"),
            "o_proj.weight is [d_model, n_heads * d_head] (nn.Linear stores [out, in]): split its *input* features, "
            "`d_model (n_heads d_head) -> n_heads d_head d_model`."),
    Mistake("unexpected_names_ignored", _mapper(strict=False),
            "a strict map rejects names it does not know (here a q_proj bias) with a KeyError that lists them."),
]

# ---------------------------------------------------------------------------------------- cache under RoPE


def _cached_forward(**switches):
    def forward_with_rope_cache(model, tokens, cache=None):
        residual = model.embed(tokens)
        keys, values = [], []
        for layer, block in enumerate(model.blocks):
            past_k = None if cache is None else cache.keys[layer]
            past_v = None if cache is None else cache.values[layer]
            attn_out, k, v = _attend(block.attn, block.ln1(residual), past_k, past_v, **switches)
            residual = residual + attn_out
            residual = residual + block.mlp(block.ln2(residual))
            keys.append(k)
            values.append(v)
        return model.unembed(model.ln_final(residual)), ref.GQACache(keys, values)

    return forward_with_rope_cache


KV_ROPE_MISTAKES = [
    Mistake("no_position_offset", _cached_forward(offset=False),
            "the new tokens are rotated from position 0: rotate them at their true positions, "
            "`apply_rotary(q, start, theta)` with start = the number of cached positions."),
    Mistake("mask_not_shifted", _cached_forward(shift_mask=False),
            "with c cached positions, query i of the chunk is position c + i: shift the causal mask's diagonal by c "
            "(`t.triu(..., diagonal=c + 1)`)."),
    Mistake("cached_keys_rotated_again", _cached_forward(rerotate=True),
            "the cached keys are already rotated: rotate only the new keys (at start = c), then concatenate."),
    Mistake("cache_expanded_heads", _cached_forward(expand_cache=True),
            "store k and v with n_kv_heads heads, before `repeat_interleave`: caching all n_heads heads gives the "
            "right logits but throws away the memory GQA saves."),
    Mistake("rope_on_cached_values", _cached_forward(rope_v=True),
            "rotate queries and keys only: values (cached or new) are never rotated."),
]
