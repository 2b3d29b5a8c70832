"""Checkers for chapter 02: each GPT-2 component against TransformerLens's GPT-2 and the course's reference."""

from __future__ import annotations

import torch as t
from torch import Tensor

from utils.checks.core import Case, Mistake, check_module, checker, passed
from utils.checks.mistakes_ch02 import LAYER_NORM_MISTAKES
from utils.reference import components as ref
from utils.reference_model import course_config, reference_cache, reference_forward, reference_info, reference_params


def _random_params(Cls: type, cfg: ref.Config, seed: int) -> dict[str, Tensor]:
    """Non-trivial parameters for `Cls`: every weight, bias and gain random, so that none can be forgotten."""
    gen = t.Generator().manual_seed(seed)
    module = Cls(cfg)
    return {name: t.randn(p.shape, generator=gen) * (0.5 if p.dim() <= 1 else 0.2) + (1.0 if name == "w" else 0.0)
            for name, p in module.named_parameters()}


def _reference_output(Cls: type, cfg: ref.Config, params: dict[str, Tensor], *inputs: Tensor) -> Tensor:
    module = Cls(cfg)
    module.load_state_dict({**module.state_dict(), **params})
    with t.no_grad():
        return module(*inputs)


@checker("layer_norm", LAYER_NORM_MISTAKES, chapter="02_components")
def layer_norm(LayerNorm: type) -> None:
    """LayerNorm equals GPT-2's final LayerNorm, including where epsilon dominates the variance."""
    cfg = course_config()
    _, _, cache = reference_cache()
    resid = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    gen = t.Generator().manual_seed(1)
    big_eps = ref.Config(**{**vars(cfg), "layer_norm_eps": 0.1})
    small = 0.05 * t.randn(3, 7, cfg.d_model, generator=gen) + 2.0  # small variance, non-zero mean
    batch = t.randn(3, 7, cfg.d_model, generator=gen)
    params = _random_params(ref.LayerNorm, cfg, seed=2)
    cases = [
        Case(f"GPT-2's ln_final on the reference prompt", cfg, reference_params("ln_final"), (resid,),
             reference_forward("ln_final")(resid)),
        Case("small-variance inputs with layer_norm_eps=0.1", big_eps, params, (small,),
             _reference_output(ref.LayerNorm, big_eps, params, small)),
        Case("a batch of 3 random sequences of length 7", cfg, params, (batch,),
             _reference_output(ref.LayerNorm, cfg, params, batch)),
    ]
    n = check_module(LayerNorm, what="LayerNorm", names=["w", "b"], cases=cases, mistakes=LAYER_NORM_MISTAKES,
                     hint="Normalise over the last dimension (d_model) only, with the biased variance and eps inside the square root.")
    passed(f"LayerNorm matches the reference ({reference_info().kind}) on {n} inputs")
