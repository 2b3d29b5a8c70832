"""`python -m utils.demo`: the course's model end to end, offline, in seconds.

Builds the course's `EducationalTransformer`, loads the reference GPT-2's weights into it by name, and prints
the parameter count, which reference is in use, the largest logit difference from the reference, the loss on
the reference sentence against the uniform baseline, the top next-token predictions and a greedy continuation.
`--reference gpt2` uses real GPT-2 small when its weights are cached or downloadable. Without real GPT-2 the demo
shows the course GPT (trained on Python's standard library, `utils/data/course_gpt.md`) with a Python prompt.
"""

from __future__ import annotations

import argparse
import math
import time

import torch as t

ENGLISH_PROMPT = "The Eiffel Tower is in the city of"
PYTHON_PROMPT = "for i in range("


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None,
                        help="auto, gpt2, random-mini, random-gpt2 or course-gpt (default: TFS_REFERENCE, else real GPT-2 "
                             "when it can be had, else course-gpt)")
    parser.add_argument("--prompt", default=None, help=f"default: {ENGLISH_PROMPT!r}, or {PYTHON_PROMPT!r} for the course GPT")
    parser.add_argument("--new-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    from utils.models.course_gpt import describe, display_kind
    from utils.reference.model import EducationalTransformer, TransformerConfig, get_log_probs, greedy_generate, load_gpt2_weights
    from utils.reference_model import REFERENCE_TEXT, config_fields, reference_cache, reference_gpt2, reference_info, reference_params

    start = time.perf_counter()
    args.reference = display_kind(args.reference)
    gpt2 = reference_gpt2(args.reference)  # prints one line saying which reference is in use
    info = reference_info(args.reference)
    cfg = TransformerConfig(**config_fields(args.reference))
    model = load_gpt2_weights(EducationalTransformer(cfg), reference_params(kind=args.reference)).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"reference in use: {info.kind}. {describe(info)}")
    if args.prompt is None:
        args.prompt = PYTHON_PROMPT if info.kind == "course-gpt" else ENGLISH_PROMPT
    print(f"EducationalTransformer: {cfg.n_layers} layers, d_model {cfg.d_model}, {n_params:,} parameters "
          f"(reference: {info.kind})")

    tokens, ref_logits, _ = reference_cache(args.reference)
    with t.no_grad():
        logits = model(tokens)
    print(f"max |logit diff| from the reference on the reference sentence: {(logits - ref_logits).abs().max().item():.2e}")
    loss = -get_log_probs(logits, tokens).mean().item()
    print(f"loss on {REFERENCE_TEXT[:40]!r}...: {loss:.3f} nats (uniform baseline log(d_vocab) = {math.log(cfg.d_vocab):.3f}"
          + ("; English, which the course GPT never saw)" if info.kind == "course-gpt" else ")"))

    prompt = gpt2.to_tokens(args.prompt)
    with t.no_grad():
        probs = model(prompt)[0, -1].softmax(-1)
    top = probs.topk(5)
    shown = ", ".join(f"{gpt2.to_string(i.unsqueeze(0))!r} {p:.2e}" for p, i in zip(top.values.tolist(), top.indices))
    print(f"top next tokens after {args.prompt!r}: {shown}")
    out = greedy_generate(model, prompt, args.new_tokens)
    print(f"greedy continuation ({out.shape[1] - prompt.shape[1]} tokens): {gpt2.to_string(out[0, prompt.shape[1]:])!r}")
    if not info.is_real and info.kind != "course-gpt":
        print("(random weights: the numbers prove the code computes GPT-2's function, not that it predicts English)")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
