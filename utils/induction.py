"""The course's own small model with a circuit: a 2-layer attention-only transformer that forms induction heads.

It is trained on `[BOS, r, r]`, where `r` is a sequence of uniform random tokens. The first copy of `r` cannot
be predicted (its loss stays near log 200); the second copy can, by a two-head circuit: a layer-0 head that
attends to the previous token, and a layer-1 induction head that looks for the earlier occurrence of the
current token and copies the token that followed it.

Two details matter, both measured (see /work/shared/MEASURED.md in the course's planning notes):
- the length of `r` is drawn anew for every batch (10-40): with a fixed length the model solves the task from
  positions alone and no previous-token head forms;
- the blocks have no LayerNorm: with LayerNorm this small model solves the task without an induction pattern.

The model is the course's `EducationalTransformer` with `attn_only=True`; `strip_layer_norms` replaces its
LayerNorms with identities, so its parameters and hook names stay TransformerLens's.

    python -m utils.train_induction            # retrain (about 2-3 min on 2 CPU cores) and save the checkpoint
    model = load_induction_model()             # the shipped checkpoint, cached, in eval mode
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch as t
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from utils.reference.model import EducationalTransformer, TransformerConfig

N_RANDOM = 200  # tokens 0..199 are the random tokens
BOS = N_RANDOM  # token 200 opens every sequence
MIN_REPEAT, MAX_REPEAT, EVAL_REPEAT = 10, 40, 30
CHECKPOINT = Path(__file__).resolve().parent / "data" / "induction_model.pt"
DEFAULT_SEED, DEFAULT_STEPS = 0, 3000

# What a model must show to count as having the circuit (the shipped one: see tests/test_ch04_interpretability.py).
MAX_REPEATED_LOSS = 0.5  # nats on the repeated half; the first half stays near log 200 = 5.3
MIN_INDUCTION_SCORE = 0.5  # best layer-1 head
MIN_PREVIOUS_TOKEN_SCORE = 0.4  # best layer-0 head (the role can be split between two heads)


def induction_config() -> TransformerConfig:
    """2 layers, attention only, 4 heads of 16, a vocabulary of 200 random tokens plus BOS, room for [BOS, r, r]."""
    return TransformerConfig(
        d_model=64, n_heads=4, d_head=16, d_mlp=256, n_layers=2, d_vocab=N_RANDOM + 1, n_ctx=1 + 2 * MAX_REPEAT,
        attn_only=True,
    )


def strip_layer_norms(model: nn.Module) -> nn.Module:
    """Replace every LayerNorm (`blocks.{i}.ln1`, `ln_final`) by an identity, in place, and re-index the hooks.

    `d_mlp` is unused: the blocks are attention-only."""
    for block in model.blocks:
        block.ln1 = nn.Identity()
    model.ln_final = nn.Identity()
    model.setup()  # HookedRootModule: forget the LayerNorms' hook points (hook_scale, hook_normalized)
    return model


def build_induction_model(model_class: type = EducationalTransformer, cfg: TransformerConfig | None = None) -> nn.Module:
    """A freshly initialised, LayerNorm-free, attention-only model; `model_class` may be your own
    EducationalTransformer, as long as it takes a config and honours `attn_only`."""
    return strip_layer_norms(model_class(cfg or induction_config()))


def repeated_tokens(batch: int, repeat_len: int, seed: int | t.Generator = 0) -> Int[Tensor, "batch pos"]:
    """`[BOS, r, r]` for `batch` random sequences `r` of `repeat_len` tokens: shape [batch, 1 + 2 * repeat_len]."""
    gen = seed if isinstance(seed, t.Generator) else t.Generator().manual_seed(seed)
    r = t.randint(0, N_RANDOM, (batch, repeat_len), generator=gen)
    return t.cat([t.full((batch, 1), BOS, dtype=r.dtype), r, r], dim=1)


def per_token_loss(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """Cross-entropy of each next-token prediction: entry p is -log P(tokens[:, p + 1] | tokens[:, :p + 1]).

    One position shorter than `tokens`. On `[BOS, r, r]` with `L = repeat_len`, entries `[:, :L]` predict the
    first copy and entries `[:, L + 1:]` the repeated half (the second copy's first token is unpredictable)."""
    log_probs = logits[:, :-1].log_softmax(dim=-1)
    return -log_probs.gather(dim=-1, index=tokens[:, 1:, None])[..., 0]


@t.no_grad()
def circuit_metrics(model: nn.Module, batch: int = 64, repeat_len: int = EVAL_REPEAT, seed: int = 123) -> dict:
    """Losses on both halves and the score of every head, on a fixed evaluation batch."""
    from utils.reference.interp import head_detector_scores, induction_score

    tokens = repeated_tokens(batch, repeat_len, seed)
    logits, cache = model.run_with_cache(tokens)
    loss = per_token_loss(logits, tokens)
    n_layers = model.cfg.n_layers
    patterns = [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(n_layers)]
    return {
        "first_half_loss": loss[:, :repeat_len].mean().item(),
        "repeated_loss": loss[:, repeat_len + 1:].mean().item(),
        "induction": t.stack([induction_score(p, repeat_len) for p in patterns]),  # [n_layers n_heads]
        "previous": t.stack([head_detector_scores(p)["previous"] for p in patterns]),
    }


def has_circuit(metrics: dict) -> bool:
    return (
        metrics["repeated_loss"] < MAX_REPEATED_LOSS
        and metrics["induction"][-1].max().item() > MIN_INDUCTION_SCORE
        and metrics["previous"][0].max().item() > MIN_PREVIOUS_TOKEN_SCORE
    )


def train_induction(
    seed: int = DEFAULT_SEED,
    steps: int = DEFAULT_STEPS,
    batch: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 0.01,
    progress: bool = True,
) -> nn.Module:
    """Train the induction model from `seed`. Constant learning rate, so a shorter run is a prefix of a longer one.

    Single-threaded, so that the same seed gives the same weights on any machine with the same torch build."""
    from tqdm.auto import tqdm

    threads = t.get_num_threads()
    t.set_num_threads(1)  # reproducible float sums; a model this small gains nothing from threads
    try:
        t.manual_seed(seed)
        model = build_induction_model()
        model.train()
        data = t.Generator().manual_seed(seed + 1)
        opt = t.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        bar = tqdm(range(steps), desc=f"induction model (seed {seed})", disable=not progress)
        for step in bar:
            # A new length every batch: with a fixed one the model could count positions instead of reading tokens.
            repeat_len = int(t.randint(MIN_REPEAT, MAX_REPEAT + 1, (1,), generator=data))
            tokens = repeated_tokens(batch, repeat_len, data)
            logits = model(tokens)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
    finally:
        t.set_num_threads(threads)
    return model.eval()


def save_induction_model(model: nn.Module, path: Path = CHECKPOINT, **meta) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in vars(model.cfg).items()}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t.save({"cfg": cfg, "state_dict": state, "meta": meta}, path)


def load_into(model_class: type = EducationalTransformer, path: Path = CHECKPOINT) -> nn.Module:
    """The checkpoint loaded into a fresh `model_class` (yours or the reference), strictly, in eval mode."""
    saved = t.load(path, map_location="cpu", weights_only=True)
    model = build_induction_model(model_class, TransformerConfig(**saved["cfg"]))
    model.load_state_dict(saved["state_dict"], strict=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


@functools.cache
def load_induction_model() -> EducationalTransformer:
    """The shipped induction model (cached: treat it as read-only)."""
    return load_into(EducationalTransformer)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m utils.train_induction", description="Train the induction model.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--out", type=Path, default=CHECKPOINT, help=f"where to save (default {CHECKPOINT})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = train_induction(args.seed, args.steps)
    metrics = circuit_metrics(model)
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.0f} s; loss on the first half {metrics['first_half_loss']:.3f}, "
          f"on the repeated half {metrics['repeated_loss']:.3f}")
    print(f"induction scores (layer 1): {[round(x, 3) for x in metrics['induction'][-1].tolist()]}")
    print(f"previous-token scores (layer 0): {[round(x, 3) for x in metrics['previous'][0].tolist()]}")
    ok = has_circuit(metrics)
    print("the circuit formed" if ok else "the circuit did NOT form")
    save_induction_model(model, args.out, seed=args.seed, steps=args.steps)
    print(f"saved {args.out}")
    return 0 if ok else 1
