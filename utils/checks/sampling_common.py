"""What chapter 06's checkers share: small seeded models, prompts, and the tests that explain a learner's shapes."""

from __future__ import annotations

from collections.abc import Callable

import torch as t
from torch import Tensor

from utils.checks.core import fail, quiet_warnings
from utils.reference.model import EducationalTransformer, TransformerConfig

CHAPTER = "06_sampling"


def small_model(d_vocab: int, n_ctx: int, seed: int) -> EducationalTransformer:
    """A 2-layer model with every parameter random and large enough that logits spread over several nats:
    greedy choices and beam scores are then far from ties, and a wrong position or mask changes tokens."""
    cfg = TransformerConfig(d_model=64, n_heads=4, d_head=16, d_mlp=128, n_layers=2, n_ctx=n_ctx, d_vocab=d_vocab)
    model = EducationalTransformer(cfg)
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = t.randn(param.shape, generator=gen)
            if leaf == "w":
                param.copy_(1.0 + 0.2 * noise)
            elif leaf == "b" or leaf.startswith("b_"):
                param.copy_(0.1 * noise)
            elif leaf in ("W_E", "W_pos"):
                param.copy_(noise)
            elif leaf == "W_U":
                param.copy_(0.3 * noise)
            else:  # W_Q ... W_out: scaled by fan-in so the residual stream stays of order 1
                fan_in = param.shape[-2]
                param.copy_(noise / fan_in**0.5)
            param.requires_grad_(False)
    return model.eval()


def prompts(batch: int, pos: int, d_vocab: int, seed: int) -> Tensor:
    return t.randint(0, d_vocab, (batch, pos), generator=t.Generator().manual_seed(seed))


def safe(fn, *args, **kwargs):
    """A catalogued mistake (or a probe call) that cannot run on this input matches nothing."""
    try:
        with t.no_grad(), quiet_warnings():
            return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure of a wrong variant only means it is not the learner's
        return None


def seeded(fn, *args, **kwargs):
    t.manual_seed(0)
    return safe(fn, *args, **kwargs)


def unchanged(before: Tensor, after: Tensor, what: str, label: str, hint: str) -> None:
    if not t.equal(before, after):
        fail(f"{what} modified its input `{label}` in place. {hint}")


def one_row_message(fn, what: str, row_args: tuple, kwargs: dict, shapes: str, looks_like_one_row: Callable) -> str | None:
    """ARENA writes these functions for one row (`[d_vocab]` logits). If the learner's function fails on a batch
    but works on one row, say so instead of showing `bincount`'s or `searchsorted`'s own error."""
    out = safe(fn, *row_args, **kwargs)
    if out is None or not looks_like_one_row(out):
        return None
    return (f"{what}: your function handles one row (`[d_vocab]` logits); {what} {shapes}. Work along `dim=-1` on "
            "every row at once (or loop over the rows and stack the results).")
