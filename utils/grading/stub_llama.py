"""Chapter 07's decoder inside the grading sandbox, built from transformers' own Llama modules.

Copied into the sandbox as `utils/checks/_llama.py`. The kv_rope check hands the learner's
`forward_with_rope_cache` the chapter's decoder, loaded with the reference Llama's converted weights. The
sandbox must not hold the course's decoder (it is the answer to the chapter's other exercises), so the stub
builds a stand-in with the same parameter names and sub-modules (`embed`, `blocks[i].ln1/attn/ln2/mlp`,
`ln_final`, `unembed`, `cfg`) whose forward passes are transformers' `LlamaForCausalLM`, the model every
check of the chapter compares with. Its parameters are the recorded ones, so code that reads `attn.W_Q` sees
the checker's numbers.
"""

from __future__ import annotations

import einops
import torch as t
from torch import nn


class _Part(nn.Module):
    """A module with the course's parameter names whose forward is a transformers module (not a sub-module,
    so that the course's names are the only ones it shows)."""

    def __init__(self, cfg, hf: nn.Module, **params: t.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        for name, value in params.items():
            setattr(self, name, nn.Parameter(value, requires_grad=False))  # the stub's own copy of the plan's tensor
        object.__setattr__(self, "_hf", hf)

    def forward(self, x: t.Tensor) -> t.Tensor:
        return self._hf(x)


class _Attention(_Part):
    """Causal grouped-query attention with RoPE from position 0, as transformers' LlamaAttention computes it."""

    def __init__(self, cfg, hf: nn.Module, rotary: nn.Module, **params: t.Tensor) -> None:
        super().__init__(cfg, hf, **params)
        object.__setattr__(self, "_rotary", rotary)
        self.register_buffer("IGNORE", t.tensor(float("-inf")), persistent=False)

    def forward(self, x: t.Tensor) -> t.Tensor:
        n = x.shape[1]
        position_embeddings = self._rotary(x, t.arange(n)[None])
        mask = t.full((n, n), float("-inf"), dtype=x.dtype).triu(1)[None, None]
        return self._hf(x, position_embeddings=position_embeddings, attention_mask=mask)[0]


class _Block(nn.Module):
    def __init__(self, cfg, **parts: nn.Module) -> None:
        super().__init__()
        self.cfg = cfg
        for name, part in parts.items():
            setattr(self, name, part)

    def forward(self, resid_pre: t.Tensor) -> t.Tensor:
        resid_mid = resid_pre + self.attn(self.ln1(resid_pre))
        return resid_mid + self.mlp(self.ln2(resid_mid))


class LlamaStyleDecoder(nn.Module):
    """The stand-in decoder: the course's names over a LlamaForCausalLM with the same weights."""

    def __init__(self, cfg, state: dict[str, t.Tensor]) -> None:
        from transformers import LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        from utils.llama_reference import llama_config

        super().__init__()
        self.cfg = cfg
        sizes = {k: getattr(cfg, k) for k in ("d_model", "n_heads", "n_kv_heads", "d_head", "d_mlp", "n_layers",
                                               "d_vocab", "n_ctx", "rms_norm_eps", "rope_theta")}
        config = llama_config(**sizes)
        with t.random.fork_rng(devices=[]):
            hf = LlamaForCausalLM(config).eval()
        hf.load_state_dict(to_transformers(state, cfg), strict=True)
        hf.requires_grad_(False)
        object.__setattr__(self, "_hf", hf)
        rotary = LlamaRotaryEmbedding(config)
        layers = hf.model.layers
        self.embed = _Part(cfg, hf.model.embed_tokens, W_E=state["embed.W_E"])
        self.blocks = nn.ModuleList([_Block(
            cfg,
            ln1=_Part(cfg, layer.input_layernorm, w=state[f"blocks.{i}.ln1.w"]),
            attn=_Attention(cfg, layer.self_attn, rotary, **{w: state[f"blocks.{i}.attn.{w}"] for w in ("W_Q", "W_K", "W_V", "W_O")}),
            ln2=_Part(cfg, layer.post_attention_layernorm, w=state[f"blocks.{i}.ln2.w"]),
            mlp=_Part(cfg, layer.mlp, **{w: state[f"blocks.{i}.mlp.{w}"] for w in ("W_gate", "W_in", "W_out")}),
        ) for i, layer in enumerate(layers)])
        self.ln_final = _Part(cfg, hf.model.norm, w=state["ln_final.w"])
        self.unembed = _Part(cfg, hf.lm_head, W_U=state["unembed.W_U"])

    def forward(self, tokens: t.Tensor) -> t.Tensor:
        return self._hf(tokens, use_cache=False).logits


def to_transformers(state: dict[str, t.Tensor], cfg) -> dict[str, t.Tensor]:
    """transformers' names and layouts for the course's decoder parameters (the inverse of the chapter's map)."""
    join_in = "n_heads d_model d_head -> (n_heads d_head) d_model"
    out = {"model.embed_tokens.weight": state["embed.W_E"], "model.norm.weight": state["ln_final.w"],
           "lm_head.weight": state["unembed.W_U"].T}
    for i in range(cfg.n_layers):
        hf, tl = f"model.layers.{i}.", f"blocks.{i}."
        out[hf + "input_layernorm.weight"] = state[tl + "ln1.w"]
        out[hf + "post_attention_layernorm.weight"] = state[tl + "ln2.w"]
        for proj, name in (("q_proj", "W_Q"), ("k_proj", "W_K"), ("v_proj", "W_V")):
            out[hf + f"self_attn.{proj}.weight"] = einops.rearrange(state[tl + f"attn.{name}"], join_in)
        out[hf + "self_attn.o_proj.weight"] = einops.rearrange(state[tl + "attn.W_O"],
                                                               "n_heads d_head d_model -> d_model (n_heads d_head)")
        out[hf + "mlp.gate_proj.weight"] = state[tl + "mlp.W_gate"].T
        out[hf + "mlp.up_proj.weight"] = state[tl + "mlp.W_in"].T
        out[hf + "mlp.down_proj.weight"] = state[tl + "mlp.W_out"].T
    return out  # load_state_dict copies these into transformers' own parameters
