"""Forward-pass speed at GPT-2 small size: the course's EducationalTransformer against TransformerLens's
TransformerBridge and a plain transformers GPT2LMHeadModel (see `plain_gpt2`), all three holding the same
(random) weights."""

from __future__ import annotations

import functools

import einops
import torch as t

from bench.timing import interleaved_medians

SHAPES = [(1, 64), (8, 128)]


@functools.cache  # the generation section reuses the same three models: one load per run
def gpt2_small_trio():
    """(course model, bridge, plain HF model) with identical GPT-2-small-size weights, in eval mode."""
    from utils.reference.model import EducationalTransformer, TransformerConfig
    from utils.reference_model import config_fields, reference_gpt2, reference_params

    bridge = reference_gpt2("random-gpt2")
    params = reference_params(kind="random-gpt2")
    ours = EducationalTransformer(TransformerConfig(**config_fields("random-gpt2")))
    ours.load_state_dict({**ours.state_dict(), **params}, strict=True)
    ours.eval()
    return ours, bridge, plain_gpt2(params, bridge.original_model.config)


def plain_gpt2(params: dict[str, t.Tensor], config) -> "GPT2LMHeadModel":  # noqa: F821
    """A stock transformers GPT2LMHeadModel holding the course's (TransformerLens-named) weights.

    Not `bridge.original_model`: booting the bridge replaces that model's sub-modules with TransformerLens
    wrappers (`BlockBridge`, `UnembeddingBridge`, ...), so its speed, and its `generate`, are the bridge's,
    not what a user of plain transformers gets.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    def qkv_columns(weight: t.Tensor) -> t.Tensor:  # [n_heads d_model d_head] -> [d_model, n_heads * d_head], Conv1D layout
        return einops.rearrange(weight, "n_heads d_model d_head -> d_model (n_heads d_head)")

    assert params["unembed.b_U"].abs().max() == 0, "GPT2LMHeadModel's lm_head has no bias"
    state = {"transformer.wte.weight": params["embed.W_E"], "transformer.wpe.weight": params["pos_embed.W_pos"],
             "transformer.ln_f.weight": params["ln_final.w"], "transformer.ln_f.bias": params["ln_final.b"],
             "lm_head.weight": params["unembed.W_U"].T}
    for layer in range(config.n_layer):
        ours, theirs = f"blocks.{layer}", f"transformer.h.{layer}"
        state |= {
            f"{theirs}.ln_1.weight": params[f"{ours}.ln1.w"], f"{theirs}.ln_1.bias": params[f"{ours}.ln1.b"],
            f"{theirs}.ln_2.weight": params[f"{ours}.ln2.w"], f"{theirs}.ln_2.bias": params[f"{ours}.ln2.b"],
            f"{theirs}.attn.c_attn.weight": t.cat([qkv_columns(params[f"{ours}.attn.W_{x}"]) for x in "QKV"], dim=1),
            f"{theirs}.attn.c_attn.bias": t.cat([params[f"{ours}.attn.b_{x}"].flatten() for x in "QKV"]),
            f"{theirs}.attn.c_proj.weight": einops.rearrange(params[f"{ours}.attn.W_O"], "n_heads d_head d_model -> (n_heads d_head) d_model"),
            f"{theirs}.attn.c_proj.bias": params[f"{ours}.attn.b_O"],
            f"{theirs}.mlp.c_fc.weight": params[f"{ours}.mlp.W_in"], f"{theirs}.mlp.c_fc.bias": params[f"{ours}.mlp.b_in"],
            f"{theirs}.mlp.c_proj.weight": params[f"{ours}.mlp.W_out"], f"{theirs}.mlp.c_proj.bias": params[f"{ours}.mlp.b_out"],
        }
    model = GPT2LMHeadModel(GPT2Config.from_dict(config.to_dict()))
    model.load_state_dict({k: v.contiguous() for k, v in state.items()}, strict=True)
    return model.eval()


def forward_flops(n_params_matmul: int, n_layers: int, d_model: int, batch: int, pos: int) -> float:
    """2 FLOPs per weight per token, plus attention's two [pos x pos] products per layer."""
    return 2 * n_params_matmul * batch * pos + 4 * n_layers * batch * pos * pos * d_model


def run(results: dict) -> None:
    ours, bridge, hf = gpt2_small_trio()
    cfg = ours.cfg
    matmul_params = sum(p.numel() for n, p in ours.named_parameters() if n.endswith(("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")))
    gen = t.Generator().manual_seed(0)
    for batch, pos in SHAPES:
        tokens = t.randint(0, cfg.d_vocab, (batch, pos), generator=gen)
        with t.inference_mode():
            # Same weights, same answer: a speed comparison between different functions would mean nothing.
            diff = (ours(tokens) - hf(tokens).logits).abs().max().item()
            row = interleaved_medians({
                "course": lambda: ours(tokens),
                "transformer_lens": lambda: bridge(tokens),
                "transformers": lambda: hf(tokens).logits,
            }, warmup=2)  # the course's first calls also pay for fresh pages of its per-call weight copies
        flops = forward_flops(matmul_params, cfg.n_layers, cfg.d_model, batch, pos)
        results.setdefault("models", {})[f"forward_{batch}x{pos}"] = {
            **{k: v * 1e3 for k, v in row.items()},
            "unit": "ms",
            "max_abs_logit_diff": diff,
            "course_gflops": flops / row["course"] / 1e9,
        }
