"""Forward-pass speed at GPT-2 small size: the course's EducationalTransformer against TransformerLens's
TransformerBridge and transformers' GPT2LMHeadModel, all three holding the same (random) weights."""

from __future__ import annotations

import functools

import torch as t

from bench.timing import median_seconds

SHAPES = [(1, 64), (8, 128)]


@functools.cache  # the generation section reuses the same three models: one load per run
def gpt2_small_trio():
    """(course model, bridge, HF model) with identical GPT-2-small-size weights, in eval mode."""
    from utils.reference.model import EducationalTransformer, TransformerConfig
    from utils.reference_model import config_fields, reference_gpt2, reference_params

    bridge = reference_gpt2("random-gpt2")
    ours = EducationalTransformer(TransformerConfig(**config_fields("random-gpt2")))
    ours.load_state_dict({**ours.state_dict(), **reference_params(kind="random-gpt2")}, strict=True)
    ours.eval()
    return ours, bridge, bridge.original_model.eval()


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
            row = {
                "course": median_seconds(lambda: ours(tokens)),
                "transformer_lens": median_seconds(lambda: bridge(tokens)),
                "transformers": median_seconds(lambda: hf(tokens).logits),
            }
        flops = forward_flops(matmul_params, cfg.n_layers, cfg.d_model, batch, pos)
        results.setdefault("models", {})[f"forward_{batch}x{pos}"] = {
            **{k: v * 1e3 for k, v in row.items()},
            "unit": "ms",
            "max_abs_logit_diff": diff,
            "course_gflops": flops / row["course"] / 1e9,
        }
