"""Training steps per second for chapter 05's model (2 layers, d_model 128, compact vocabulary of 8,192),
with the chapter's own `TransformerTrainer.training_step` (forward, cross-entropy, backward, AdamW), against
the same step on a `transformers` GPT2LMHeadModel of the same sizes.

Tokens are random: the speed of a step does not depend on what the tokens say, and the bench must not
depend on the chapter's corpus being built. If chapter 05's reference code is missing or its API changed,
the section records why and reports "not available" rather than stopping the whole run.
"""

from __future__ import annotations

import torch as t

from bench.timing import interleaved_medians

D_VOCAB = 8192  # chapter 05's compact vocabulary: the 8,191 most frequent tokens plus "unknown"
N_CTX = 128
STEPS = 20


def _course_trainer(tokens: t.Tensor):
    from utils.reference.model import EducationalTransformer
    from utils.reference.training import TrainingArgs, TransformerTrainer, stdlib_model_config

    cfg = stdlib_model_config(d_vocab=D_VOCAB, n_ctx=N_CTX)
    t.manual_seed(0)
    model = EducationalTransformer(cfg)
    trainer = TransformerTrainer(TrainingArgs(), model, tokens, tokens[:16])
    return trainer, cfg


def _hf_step(cfg, batch_size: int):
    """A closure doing one AdamW step of the same loss on a same-size GPT2LMHeadModel."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=cfg.d_vocab, n_positions=cfg.n_ctx, n_embd=cfg.d_model, n_layer=cfg.n_layers,
                        n_head=cfg.n_heads, n_inner=cfg.d_mlp, tie_word_embeddings=False,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)  # the course model has no dropout
    t.manual_seed(0)
    model = GPT2LMHeadModel(config).train()
    optimizer = t.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    gen = t.Generator().manual_seed(1)

    def step() -> None:
        batch = t.randint(cfg.d_vocab, (batch_size, cfg.n_ctx), generator=gen)
        log_probs = model(batch).logits[:, :-1].log_softmax(dim=-1)
        loss = -log_probs.gather(dim=-1, index=batch[:, 1:].unsqueeze(-1)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def run(results: dict, steps: int = STEPS) -> None:
    tokens = t.randint(D_VOCAB, (256, N_CTX), generator=t.Generator().manual_seed(0))
    try:
        trainer, cfg = _course_trainer(tokens)
    except (ImportError, AttributeError, TypeError) as exc:  # chapter 05 not built yet, or its API moved
        results["training"] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
        return
    batch_size = trainer.args.batch_size
    trainer.model.train()
    seconds = interleaved_medians({"course": lambda: trainer.training_step(trainer.sample_batch()),
                                   "transformers": _hf_step(cfg, batch_size)}, repeats=steps, warmup=2)
    course_s, hf_s = seconds["course"], seconds["transformers"]
    results["training"] = {
        "available": True,
        "model": f"{cfg.n_layers} layers, d_model {cfg.d_model}, d_vocab {cfg.d_vocab}, batch {batch_size}x{cfg.n_ctx}",
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "course_steps_per_s": 1 / course_s,
        "transformers_steps_per_s": 1 / hf_s,
    }
