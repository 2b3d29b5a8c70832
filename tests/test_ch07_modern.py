"""Chapter 07's checkers: the reference passes, every catalogued mistake is rejected and named, valid alternative
implementations pass, stubs read "not implemented yet", nothing reaches stderr, and the course's decoder
reproduces transformers' LlamaForCausalLM."""

from __future__ import annotations

import math
import re

import einops
import pytest
import torch as t
import torch.nn.functional as F

from utils.checks import CHECKERS, MISTAKES, NotImplementedYet
from utils.llama_reference import SIZES, llama_greedy, llama_logits, reference_llama
from utils.reference import modern as ref

EXERCISES = ["rms_norm", "rotary", "swiglu", "gqa", "decoder", "name_map", "kv_rope"]
REFERENCE = {"rms_norm": ref.RMSNorm, "rotary": ref.apply_rotary, "swiglu": ref.SwiGLU, "gqa": ref.GroupedQueryAttention,
             "decoder": ref.LlamaStyleDecoder, "name_map": ref.convert_llama_weights, "kv_rope": ref.forward_with_rope_cache}
CATALOGUE = [(exercise, mistake) for exercise in EXERCISES for mistake in MISTAKES[exercise]]


def expected_message(mistake) -> str:
    if mistake.name == "in_place":  # caught earlier, by the shared "inputs unchanged" check
        return r"modified its input .* in place\. Use out-of-place operations"
    return re.escape(mistake.hint)

# ------------------------------------------------------------------------------------------ alternatives


class RMSNormRsqrt(ref.RMSNorm):
    def forward(self, residual):
        return residual * t.rsqrt(residual.square().mean(-1, keepdim=True) + self.cfg.rms_norm_eps) * self.w


class RMSNormNormDivided(ref.RMSNorm):
    """The vector norm, rescaled: ||x|| / sqrt(d_model) is the root mean square."""

    def forward(self, residual):
        d = residual.shape[-1]
        ms = residual.norm(dim=-1, keepdim=True).pow(2) / d
        return self.w * residual / t.sqrt(ms + self.cfg.rms_norm_eps)


class RMSNormTorch(ref.RMSNorm):
    def forward(self, residual):
        return F.rms_norm(residual, (self.cfg.d_model,), self.w, self.cfg.rms_norm_eps)


def rotary_complex(x, start=0, theta=10000.0):
    """Complex multiplication on (x_i, x_{i+d/2}) viewed as one complex number."""
    d_half = x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (t.arange(0, x.shape[-1], 2).float() / x.shape[-1])
    angles = t.arange(start, start + x.shape[1]).float()[:, None] * inv_freq
    z = t.complex(x[..., :d_half], x[..., d_half:]) * t.polar(t.ones_like(angles), angles)[:, None, :]
    return t.cat([z.real, z.imag], dim=-1)


def rotary_rotate_half(x, start=0, theta=10000.0):
    """transformers' own formulation: x * cos + rotate_half(x) * sin, with cos/sin over the whole head."""
    d = x.shape[-1]
    freqs = t.outer(t.arange(start, start + x.shape[1]).float(), theta ** (-t.arange(0, d, 2).float() / d))
    emb = t.cat([freqs, freqs], dim=-1)[:, None, :]
    rotated_half = t.cat([-x[..., d // 2:], x[..., : d // 2]], dim=-1)
    return x * emb.cos() + rotated_half * emb.sin()


def rotary_matrix(x, start=0, theta=10000.0):
    """An explicit block rotation matrix per position, applied with einops."""
    d = x.shape[-1]
    half = d // 2
    angles = t.outer(t.arange(start, start + x.shape[1]).double(), theta ** (-2 * t.arange(half).double() / d))
    rotation = t.zeros(x.shape[1], d, d, dtype=t.float64)
    idx = t.arange(half)
    rotation[:, idx, idx] = angles.cos()
    rotation[:, idx + half, idx + half] = angles.cos()
    rotation[:, idx, idx + half] = -angles.sin()
    rotation[:, idx + half, idx] = angles.sin()
    out = einops.einsum(rotation, x.double(), "pos d_out d_head, batch pos n_heads d_head -> batch pos n_heads d_out")
    return out.to(x.dtype)


class SwiGLULinear(ref.SwiGLU):
    def forward(self, x):
        return F.linear(F.silu(F.linear(x, self.W_gate.T)) * F.linear(x, self.W_in.T), self.W_out.T)


class SwiGLUFused(ref.SwiGLU):
    """Gate and up in one matrix product, then split, as many fast implementations do."""

    def forward(self, x):
        gate, up = (x @ t.cat([self.W_gate, self.W_in], dim=1)).chunk(2, dim=-1)
        return (gate * t.sigmoid(gate) * up) @ self.W_out


class SwiGLUModule(ref.SwiGLU):
    def forward(self, x):
        return t.matmul(t.nn.SiLU()(t.matmul(x, self.W_gate)) * t.matmul(x, self.W_in), self.W_out)


class GQASdpa(ref.GroupedQueryAttention):
    """PyTorch's fused attention, heads first, with its own causal mask and enable_gqa-style expansion by einops."""

    def forward(self, x):
        cfg = self.cfg
        q = ref.apply_rotary(einops.einsum(x, self.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"), 0, cfg.rope_theta)
        k = ref.apply_rotary(einops.einsum(x, self.W_K, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head"), 0, cfg.rope_theta)
        v = einops.einsum(x, self.W_V, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
        group = cfg.n_heads // cfg.n_kv_heads
        k, v = (einops.repeat(z, "batch pos n_kv_heads d_head -> batch (n_kv_heads group) pos d_head", group=group) for z in (k, v))
        z = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=True)
        return einops.einsum(z, self.W_O, "batch n_heads pos d_head, n_heads d_head d_model -> batch pos d_model")


class GQAGrouped(ref.GroupedQueryAttention):
    """No expansion at all: queries reshaped into [kv head, group] and scored against their own kv head."""

    def forward(self, x):
        cfg = self.cfg
        group = cfg.n_heads // cfg.n_kv_heads
        q = ref.apply_rotary(einops.einsum(x, self.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"), 0, cfg.rope_theta)
        k = ref.apply_rotary(einops.einsum(x, self.W_K, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head"), 0, cfg.rope_theta)
        v = einops.einsum(x, self.W_V, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
        q = einops.rearrange(q, "batch pos (n_kv_heads group) d_head -> batch pos n_kv_heads group d_head", group=group)
        scores = einops.einsum(q, k, "batch query_pos n_kv_heads group d_head, batch key_pos n_kv_heads d_head -> batch n_kv_heads group query_pos key_pos")
        pos = x.shape[1]
        scores = scores.masked_fill(t.ones(pos, pos, dtype=t.bool).triu(1), -1e9) / math.sqrt(cfg.d_head)
        z = einops.einsum(scores.softmax(-1), v, "batch n_kv_heads group query_pos key_pos, batch key_pos n_kv_heads d_head -> batch query_pos n_kv_heads group d_head")
        z = einops.rearrange(z, "batch pos n_kv_heads group d_head -> batch pos (n_kv_heads group) d_head")
        return einops.einsum(z, self.W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model")


class GQAMatmulIndex(ref.GroupedQueryAttention):
    """Plain matmuls, kv heads picked by index h // group, an additive mask."""

    def forward(self, x):
        cfg = self.cfg
        xs = x.unsqueeze(1)
        q = ref.apply_rotary((xs @ self.W_Q).transpose(1, 2), 0, cfg.rope_theta).transpose(1, 2)
        k = ref.apply_rotary((xs @ self.W_K).transpose(1, 2), 0, cfg.rope_theta).transpose(1, 2)
        v = xs @ self.W_V  # [batch n_kv_heads pos d_head]
        which = t.arange(cfg.n_heads) // (cfg.n_heads // cfg.n_kv_heads)
        k, v = k[:, which], v[:, which]
        pos = x.shape[1]
        scores = q @ k.transpose(-1, -2) / cfg.d_head**0.5 + t.full((pos, pos), float("-inf")).triu(1)
        return ((scores.softmax(-1) @ v) @ self.W_O).sum(dim=1)


class DecoderFunctional(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        residual = F.embedding(tokens, self.embed.W_E)
        for block in self.blocks:
            residual = block(residual)
        return self.ln_final(residual) @ self.unembed.W_U


class DecoderUnrolled(ref.LlamaStyleDecoder):
    """The block written out, as a learner might instead of calling it."""

    def forward(self, tokens):
        residual = self.embed(tokens)
        for block in self.blocks:
            residual = residual + block.attn(block.ln1(residual))
            residual = residual + block.mlp(block.ln2(residual))
        return self.unembed(self.ln_final(residual))


class DecoderReduce(ref.LlamaStyleDecoder):
    def forward(self, tokens):
        import functools

        residual = functools.reduce(lambda r, block: block(r), self.blocks, self.embed(tokens))
        return self.unembed(self.ln_final(residual))


def convert_by_table(hf_state, cfg):
    """A table of (TransformerLens name, transformers name, how) built first, then applied."""
    def heads(n):
        return lambda w: w.reshape(n, cfg.d_head, cfg.d_model).transpose(1, 2)

    table = [("embed.W_E", "model.embed_tokens.weight", None), ("ln_final.w", "model.norm.weight", None),
             ("unembed.W_U", "lm_head.weight", t.t)]
    for i in range(cfg.n_layers):
        table += [(f"blocks.{i}.{tl}", f"model.layers.{i}.{hf}.weight", how) for tl, hf, how in (
            ("ln1.w", "input_layernorm", None), ("ln2.w", "post_attention_layernorm", None),
            ("attn.W_Q", "self_attn.q_proj", heads(cfg.n_heads)), ("attn.W_K", "self_attn.k_proj", heads(cfg.n_kv_heads)),
            ("attn.W_V", "self_attn.v_proj", heads(cfg.n_kv_heads)),
            ("attn.W_O", "self_attn.o_proj", lambda w: w.T.reshape(cfg.n_heads, cfg.d_head, cfg.d_model)),
            ("mlp.W_gate", "mlp.gate_proj", t.t), ("mlp.W_in", "mlp.up_proj", t.t), ("mlp.W_out", "mlp.down_proj", t.t))]
    known = {hf for _, hf, _ in table}
    problems = sorted(known ^ set(hf_state))
    if problems:
        raise KeyError(f"names that do not match the Llama layout: {problems}")
    return {tl: (how(hf_state[hf]) if how else hf_state[hf]).clone() for tl, hf, how in table}


def convert_by_regex(hf_state, cfg):
    """Rename by patterns, then reshape by the last name component; unknown names collected and reported."""
    rules = [(r"model\.embed_tokens\.weight", "embed.W_E"), (r"model\.norm\.weight", "ln_final.w"),
             (r"lm_head\.weight", "unembed.W_U"),
             (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.ln1.w"),
             (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.ln2.w"),
             (r"model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.weight", r"blocks.\1.attn.W_\2"),
             (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blocks.\1.mlp.W_gate"),
             (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blocks.\1.mlp.W_in"),
             (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blocks.\1.mlp.W_out")]
    out, unknown = {}, []
    for name, value in hf_state.items():
        for pattern, target in rules:
            if re.fullmatch(pattern, name):
                new = re.sub(pattern, target, name)
                new = re.sub(r"W_([qkvo])$", lambda m: "W_" + m.group(1).upper(), new)
                leaf = new.rsplit(".", 1)[-1]
                if leaf in ("W_Q", "W_K", "W_V"):
                    value = einops.rearrange(value, "(n_heads d_head) d_model -> n_heads d_model d_head", d_head=cfg.d_head)
                elif leaf == "W_O":
                    value = einops.rearrange(value, "d_model (n_heads d_head) -> n_heads d_head d_model", d_head=cfg.d_head)
                elif leaf.startswith("W_") and leaf != "W_E":
                    value = value.T
                out[new] = value.clone()
                break
        else:
            unknown.append(name)
    missing = sorted(set(ref.llama_names(cfg)) - set(hf_state))
    if unknown or missing:
        raise KeyError(f"unknown {unknown}, missing {missing}")
    return out


def convert_via_module(hf_state, cfg):
    """Let a real LlamaForCausalLM check the names (load_state_dict strict), then read its modules."""
    from transformers import LlamaForCausalLM

    from utils.llama_reference import llama_config
    hf = LlamaForCausalLM(llama_config())
    result = hf.load_state_dict(hf_state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(f"missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    out = {"embed.W_E": hf.model.embed_tokens.weight, "ln_final.w": hf.model.norm.weight, "unembed.W_U": hf.lm_head.weight.T}
    for i, layer in enumerate(hf.model.layers):
        a, m = layer.self_attn, layer.mlp
        out |= {f"blocks.{i}.ln1.w": layer.input_layernorm.weight, f"blocks.{i}.ln2.w": layer.post_attention_layernorm.weight,
                f"blocks.{i}.attn.W_Q": a.q_proj.weight.view(cfg.n_heads, cfg.d_head, -1).transpose(1, 2),
                f"blocks.{i}.attn.W_K": a.k_proj.weight.view(cfg.n_kv_heads, cfg.d_head, -1).transpose(1, 2),
                f"blocks.{i}.attn.W_V": a.v_proj.weight.view(cfg.n_kv_heads, cfg.d_head, -1).transpose(1, 2),
                f"blocks.{i}.attn.W_O": a.o_proj.weight.T.reshape(cfg.n_heads, cfg.d_head, -1),
                f"blocks.{i}.mlp.W_gate": m.gate_proj.weight.T, f"blocks.{i}.mlp.W_in": m.up_proj.weight.T,
                f"blocks.{i}.mlp.W_out": m.down_proj.weight.T}
    return {k: v.detach().clone() for k, v in out.items()}


def _cached_attention(attn, x, past_k, past_v):
    """Caches the keys *before* the rotation and rotates the whole key sequence each step: slower, equally right."""
    cfg = attn.cfg
    start = 0 if past_k is None else past_k.shape[1]
    q = ref.apply_rotary(einops.einsum(x, attn.W_Q, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head"), start, cfg.rope_theta)
    k_raw = einops.einsum(x, attn.W_K, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
    v = einops.einsum(x, attn.W_V, "batch pos d_model, n_kv_heads d_model d_head -> batch pos n_kv_heads d_head")
    if past_k is not None:
        k_raw, v = t.cat([past_k, k_raw], 1), t.cat([past_v, v], 1)
    k = ref.apply_rotary(k_raw, 0, cfg.rope_theta)
    group = cfg.n_heads // cfg.n_kv_heads
    mask = t.ones(q.shape[1], k.shape[1], dtype=t.bool).tril(diagonal=start)
    z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(group, 1),
                                       v.transpose(1, 2).repeat_interleave(group, 1), attn_mask=mask)
    return einops.einsum(z, attn.W_O, "batch n_heads pos d_head, n_heads d_head d_model -> batch pos d_model"), k_raw, v


def cache_unrotated_keys(model, tokens, cache=None):
    residual, keys, values = model.embed(tokens), [], []
    for layer, block in enumerate(model.blocks):
        out, k, v = _cached_attention(block.attn, block.ln1(residual), cache and cache.keys[layer], cache and cache.values[layer])
        residual = residual + out
        residual = residual + block.mlp(block.ln2(residual))
        keys.append(k)
        values.append(v)
    return model.unembed(model.ln_final(residual)), ref.GQACache(keys, values)


def cache_with_positions_tensor(model, tokens, cache=None):
    """Positions as an explicit tensor, kv heads by index, cached keys rotated (like transformers' cache)."""
    cfg = model.cfg
    start = 0 if cache is None else cache.n_positions
    residual, keys, values = model.embed(tokens), [], []
    query_pos = t.arange(start, start + tokens.shape[1])
    for layer, block in enumerate(model.blocks):
        attn, x = block.attn, block.ln1(residual)
        q = ref.apply_rotary(t.einsum("bpm,hmd->bphd", x, attn.W_Q), start, cfg.rope_theta)
        k = ref.apply_rotary(t.einsum("bpm,hmd->bphd", x, attn.W_K), start, cfg.rope_theta)
        v = t.einsum("bpm,hmd->bphd", x, attn.W_V)
        if cache is not None:
            k, v = t.cat([cache.keys[layer], k], 1), t.cat([cache.values[layer], v], 1)
        which = t.arange(cfg.n_heads) // (cfg.n_heads // cfg.n_kv_heads)
        scores = t.einsum("bqhd,bkhd->bhqk", q, k[:, :, which]) / cfg.d_head**0.5
        scores = scores.masked_fill(t.arange(k.shape[1])[None, :] > query_pos[:, None], float("-inf"))
        z = t.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v[:, :, which])
        residual = residual + t.einsum("bqhd,hdm->bqm", z, attn.W_O)
        residual = residual + block.mlp(block.ln2(residual))
        keys.append(k)
        values.append(v)
    return model.unembed(model.ln_final(residual)), ref.GQACache(keys, values)


def cache_via_reference_pieces(model, tokens, cache=None):
    """The reference's attention_with_rope_cache, reused, with the residual stream built by a loop over zip()."""
    past = zip(cache.keys, cache.values) if cache is not None else [(None, None)] * len(model.blocks)
    residual, keys, values = model.embed(tokens), [], []
    for block, (past_k, past_v) in zip(model.blocks, past):
        attn_out, k, v = ref.attention_with_rope_cache(block.attn, block.ln1(residual), past_k, past_v)
        residual = residual + attn_out
        residual = residual + block.mlp(block.ln2(residual))
        keys, values = keys + [k], values + [v]
    return model.unembed(model.ln_final(residual)), ref.GQACache(keys, values)


ALTERNATIVES = {
    "rms_norm": [RMSNormRsqrt, RMSNormNormDivided, RMSNormTorch],
    "rotary": [rotary_complex, rotary_rotate_half, rotary_matrix],
    "swiglu": [SwiGLULinear, SwiGLUFused, SwiGLUModule],
    "gqa": [GQASdpa, GQAGrouped, GQAMatmulIndex],
    "decoder": [DecoderFunctional, DecoderUnrolled, DecoderReduce],
    "name_map": [convert_by_table, convert_by_regex, convert_via_module],
    "kv_rope": [cache_unrotated_keys, cache_with_positions_tensor, cache_via_reference_pieces],
}

# ------------------------------------------------------------------------------------------------ stubs


def _stub_class(Base):
    def raise_stub(self, *args):
        raise NotImplementedError()

    return type(f"Stub{Base.__name__}", (Base,), {"forward": raise_stub})


def _stub_function(*args, **kwargs):
    raise NotImplementedError()


STUBS = {e: (_stub_class(c) if isinstance(c, type) else _stub_function) for e, c in REFERENCE.items()}

# ------------------------------------------------------------------------------------------------ tests


def test_every_exercise_is_registered():
    assert set(EXERCISES) <= set(CHECKERS)


@pytest.mark.parametrize("exercise", EXERCISES)
def test_reference_passes_with_one_line(exercise, capfd):
    reference_llama()
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
    with pytest.raises(AssertionError, match=expected_message(mistake)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    ("exercise", "impl"),
    [(e, impl) for e, impls in ALTERNATIVES.items() for impl in impls],
    ids=[impl.__name__ for impls in ALTERNATIVES.values() for impl in impls],
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


def test_attention_blames_a_wrong_rotary():
    """A learner's attention calls the learner's apply_rotary: a wrong one is reported as the rotary's fault."""
    namespace = {"apply_rotary": MISTAKES["rotary"][0].impl}
    exec("def forward(self, x):\n    return apply_rotary(x)\n", namespace)
    Attention = type("LearnerAttention", (ref.GroupedQueryAttention,), {"forward": namespace["forward"]})
    with pytest.raises(AssertionError, match=r"GroupedQueryAttention uses your apply_rotary, which does not pass checks\.rotary"):
        CHECKERS["gqa"](Attention)


def _rotary_in_place(x, start=0, theta=10000.0):
    """Right values, but written back into its input: wrong by the in-place rule only."""
    return x.copy_(ref.apply_rotary(x, start, theta))


def _attention_calling(apply_rotary):
    """The reference attention's forward, defined as in a notebook cell that also defines `apply_rotary`."""
    import inspect
    import textwrap

    import utils.reference.modern as modern

    namespace = {**vars(modern), "__name__": "__main__", "apply_rotary": apply_rotary}
    exec(textwrap.dedent(inspect.getsource(ref.GroupedQueryAttention.forward)), namespace)
    return type("LearnerAttention", (ref.GroupedQueryAttention,), {"forward": namespace["forward"], "__module__": "__main__"})


def test_a_rotary_wrong_only_in_place_does_not_fail_the_attention(capfd):
    with pytest.raises(AssertionError, match=r"apply_rotary modified its input `x` in place"):
        CHECKERS["rotary"](_rotary_in_place)
    CHECKERS["gqa"](_attention_calling(_rotary_in_place))
    out = capfd.readouterr().out.strip()
    assert out.startswith("✓ GroupedQueryAttention matches")
    assert "note: your apply_rotary modifies its input in place, which checks.rotary reports" in out


def test_a_rotary_wrong_in_values_still_blocks_the_attention():
    with pytest.raises(AssertionError, match=r"GroupedQueryAttention uses your apply_rotary, which does not pass "
                                             r"checks\.rotary yet: .*This matches a known mistake"):
        CHECKERS["gqa"](_attention_calling(MISTAKES["rotary"][0].impl))


def test_decoder_blames_a_failing_component():
    class Decoder(ref.LlamaStyleDecoder):
        def __init__(self, cfg):
            super().__init__(cfg)
            for block in self.blocks:
                block.mlp = LearnerSwiGLU(cfg)

    class LearnerSwiGLU(MISTAKES["swiglu"][0].impl):
        pass

    LearnerSwiGLU.__module__ = "__main__"
    with pytest.raises(AssertionError, match=r"LlamaStyleDecoder uses your LearnerSwiGLU, which does not pass checks\.swiglu"):
        CHECKERS["decoder"](Decoder)


def test_course_decoder_reproduces_transformers_llama():
    """The numbers the chapter reports: logits within 1e-5 of LlamaForCausalLM, greedy tokens identical, with and
    without the cache."""
    cfg = ref.DecoderConfig(**SIZES)
    model = ref.LlamaStyleDecoder(cfg).eval()
    model.load_state_dict(ref.convert_llama_weights(reference_llama().state_dict(), cfg), strict=True)
    tokens = t.randint(0, cfg.d_vocab, (2, 24), generator=t.Generator().manual_seed(1))
    with t.no_grad():
        assert (model(tokens) - llama_logits(tokens)).abs().max().item() < 1e-5
    prompt = tokens[:, :6]
    cached = ref.generate_greedy(model, prompt, 12, use_cache=True)
    assert t.equal(cached, ref.generate_greedy(model, prompt, 12, use_cache=False))
    assert t.equal(cached, llama_greedy(prompt, 12))


def test_config_rejects_uneven_groups_and_odd_heads():
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        ref.DecoderConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="d_head must be even"):
        ref.DecoderConfig(d_head=15)


def test_checks_are_deterministic_and_leave_the_rng_alone():
    t.manual_seed(1234)
    expected = t.rand(3)
    t.manual_seed(1234)
    for _ in range(2):
        for exercise in ("rotary", "gqa", "kv_rope"):
            CHECKERS[exercise](ALTERNATIVES[exercise][0])
    assert t.equal(t.rand(3), expected)


def test_names_and_rotation_are_transformer_lens_own():
    """TransformerLens's bridge around the same Llama: every name of the course's decoder is one of its
    `tl_parameters()` with the same values (W_K, W_V expanded to n_heads by repeat_interleave), and its
    hook_rot_q / hook_rot_k equal apply_rotary of its hook_q / hook_k."""
    from utils.llama_reference import transformer_lens_bridge

    cfg = ref.DecoderConfig(**SIZES)
    bridge = transformer_lens_bridge()
    tl_params = bridge.tl_parameters()
    mine = ref.convert_llama_weights(reference_llama().state_dict(), cfg)
    group = cfg.n_heads // cfg.n_kv_heads
    assert set(mine) <= set(tl_params)
    for name, value in mine.items():
        expected = value.repeat_interleave(group, dim=0) if name.endswith(("W_K", "W_V")) else value
        assert t.equal(tl_params[name], expected), name
    assert all(bool((tl_params[n] == 0).all()) for n in set(tl_params) - set(mine))
    tokens = t.randint(0, cfg.d_vocab, (2, 7), generator=t.Generator().manual_seed(3))
    with t.no_grad():
        logits, cache = bridge.run_with_cache(tokens)
    assert (logits - llama_logits(tokens)).abs().max().item() < 1e-5
    for which in ("q", "k"):
        rotated = ref.apply_rotary(cache[f"blocks.0.attn.hook_{which}"], 0, cfg.rope_theta)
        assert (rotated - cache[f"blocks.0.attn.hook_rot_{which}"]).abs().max().item() < 1e-5
    # booting the bridge must not have touched the reference model the checks use
    assert set(reference_llama().state_dict()) == set(ref.llama_names(cfg))
