"""The reference for chapter 07: a small `transformers.LlamaForCausalLM` with seeded random weights, built offline.

No download is involved: the config is written here, the weights are drawn from a seeded generator. Every
RMSNorm gain is drawn around 1 (not left at 1) and every weight is scaled by its fan-in, so that a forgotten
gain changes the output and greedy choices are far from ties. Built once per process (about 0.1 s).
"""

from __future__ import annotations

import functools

import torch as t
from torch import Tensor

from utils.reference_model import _quiet

SEED = 7
# The chapter's model: batch, pos, n_heads, n_kv_heads, d_head, d_model and d_mlp all differ, so an axis mix-up
# shows as a wrong shape; d_mlp is 8/3 * d_model rounded up to a multiple of 16, as Llama rounds it.
SIZES = dict(d_model=64, n_heads=4, n_kv_heads=2, d_head=16, d_mlp=176, n_layers=2, d_vocab=512, n_ctx=128,
             rms_norm_eps=1e-6, rope_theta=10000.0)


def llama_config(**overrides):
    """A `LlamaConfig` with the chapter's sizes (or `overrides`, given in the course's names)."""
    from transformers import LlamaConfig

    s = {**SIZES, **overrides}
    return LlamaConfig(
        vocab_size=s["d_vocab"], hidden_size=s["d_model"], intermediate_size=s["d_mlp"],
        num_hidden_layers=s["n_layers"], num_attention_heads=s["n_heads"], num_key_value_heads=s["n_kv_heads"],
        head_dim=s["d_head"], max_position_embeddings=s["n_ctx"], rms_norm_eps=s["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": s["rope_theta"]},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, hidden_act="silu",
        attn_implementation="eager", bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )


def randomize_(module: t.nn.Module, seed: int) -> None:
    """Seeded random weights for any Llama module: norms' gains 1 + 0.2 N(0, 1), embeddings N(0, 1),
    every other matrix N(0, 1/fan_in)."""
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, param in module.named_parameters():
            noise = t.randn(param.shape, generator=gen)
            if param.dim() == 1:
                param.copy_(1.0 + 0.2 * noise)
            elif "embed_tokens" in name:
                param.copy_(noise)
            else:
                param.copy_(noise / param.shape[1] ** 0.5)
            param.requires_grad_(False)


@functools.cache
def _reference_llama(seed: int):
    from transformers import LlamaForCausalLM

    with _quiet(), t.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(llama_config())
    randomize_(model, seed)
    return model.eval()


def reference_llama(seed: int = SEED):
    """The chapter's `LlamaForCausalLM` (cached; treat it as read-only)."""
    return _reference_llama(seed)


def llama_logits(tokens: Tensor, seed: int = SEED) -> Tensor:
    """transformers' logits for `tokens` `[batch pos]`, no cache."""
    with t.no_grad():
        return reference_llama(seed)(tokens, use_cache=False).logits


def llama_greedy(tokens: Tensor, max_new_tokens: int, seed: int = SEED) -> Tensor:
    """transformers' own greedy `generate` (with its KV cache): prompt plus max_new_tokens tokens."""
    model = reference_llama(seed)
    with t.no_grad(), _quiet():
        return model.generate(tokens, attention_mask=t.ones_like(tokens), max_new_tokens=max_new_tokens,
                              min_new_tokens=max_new_tokens, do_sample=False, use_cache=True, pad_token_id=0)


@functools.cache
def _bridge(seed: int):
    import copy
    import tempfile

    from transformer_lens.model_bridge import TransformerBridge

    from utils.tokenizer import gpt2_tokenizer

    folder = tempfile.mkdtemp(prefix="tfs-llama-")
    llama_config().save_pretrained(folder)
    # Booting wraps the model's modules in place: give the bridge its own copy, never the cached reference.
    hf_model = copy.deepcopy(_reference_llama(seed))
    with _quiet():
        bridge = TransformerBridge.boot_transformers(folder, hf_model=hf_model, tokenizer=gpt2_tokenizer())
        bridge.enable_compatibility_mode(fold_ln=False, center_writing_weights=False, center_unembed=False,
                                         fold_value_biases=False)
    return bridge.eval()


def transformer_lens_bridge(seed: int = SEED):
    """TransformerLens's `TransformerBridge` around a copy of the reference Llama (cached; about 1 s). Its
    `tl_parameters()` and hook names are TransformerLens's own for this architecture. The tokenizer is only a
    placeholder the bridge requires (GPT-2's); pass token ids, not text."""
    return _bridge(seed)
