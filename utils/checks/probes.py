"""Small models with random weights, for the checks whose point shows at any size: parameter names, hook structure,
initialisation statistics, and the mistakes that real GPT-2's weights hide.

At GPT-2 size a model holds 163M numbers, and building one or copying its weights takes seconds on a busy laptop.
So a chapter-03 check builds the learner's model at the reference's size only for the comparison that needs the
reference's weights (one real forward, one weight-loading round trip) and runs everything else on a probe, which
takes milliseconds. A probe's parameters are all random and non-zero, biases included, and its W_U is drawn
independently of W_E: real GPT-2 ties W_U = W_E.T and has b_U = 0, so on its weights a model that unembeds with
`embed.W_E.T`, or forgets b_U, gives the right logits. On a probe it does not.

Everything here is cached and read-only: checkers hand learner code only clones (`probe_params`, `probe_tokens`).
"""

from __future__ import annotations

import functools

import torch as t
from torch import Tensor

from utils.reference import model as ref

# Every size differs from the others (and batch 2, pos 9 from all of them), so an axis mix-up shows as a wrong
# shape; 3 layers, so that block order, reuse and the residual chain all matter.
PROBE_FIELDS = dict(d_model=64, n_heads=4, d_head=16, d_mlp=256, n_layers=3, n_ctx=16, d_vocab=300,
                    layer_norm_eps=1e-5, init_range=0.02, debug=False)
# Initialisation statistics need samples: every weight here has at least 16,384 values, so a normal draw's share
# beyond 2 std (4.6 %) is measured to ±0.2 %.
INIT_FIELDS = dict(d_model=128, n_heads=4, d_head=32, d_mlp=512, n_layers=2, n_ctx=128, d_vocab=1000,
                   layer_norm_eps=1e-5, init_range=0.02, debug=False)
PROBE_DESCRIPTION = ("a 3-layer model (d_model 64, vocabulary 300) with random weights, W_U independent of W_E "
                     "and b_U non-zero")


def probe_config() -> ref.TransformerConfig:
    return ref.TransformerConfig(**PROBE_FIELDS)


def init_config() -> ref.TransformerConfig:
    return ref.TransformerConfig(**INIT_FIELDS)


@functools.cache
def _probe_params() -> dict[str, Tensor]:
    """Weights N(0, 0.2^2), biases N(0, 0.5^2), LayerNorm gains 1 + N(0, 0.5^2): every one of them matters."""
    with t.random.fork_rng(devices=[]):
        shapes = {name: p.shape for name, p in ref.EducationalTransformer(probe_config()).named_parameters()}
    gen = t.Generator().manual_seed(301)
    params = {}
    for name, shape in shapes.items():
        vector = len(shape) <= 1
        params[name] = t.randn(shape, generator=gen) * (0.5 if vector else 0.2) + (1.0 if name.endswith(".w") else 0.0)
    return params


def probe_params() -> dict[str, Tensor]:
    """The probe's parameters (classic names), as fresh copies."""
    return {name: value.clone() for name, value in _probe_params().items()}


def probe_tokens() -> Tensor:
    """2 sequences of 9 random token ids below the probe's vocabulary size."""
    return t.randint(0, PROBE_FIELDS["d_vocab"], (2, 9), generator=t.Generator().manual_seed(302))


@functools.cache
def probe_reference() -> ref.EducationalTransformer:
    """The course's reference model with the probe's weights. Shared: only checkers run it, never learner code."""
    with t.random.fork_rng(devices=[]):
        model = ref.EducationalTransformer(probe_config())
    model.load_state_dict({**model.state_dict(), **_probe_params()}, strict=True)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


@functools.cache
def probe_run() -> tuple[Tensor, dict[str, Tensor]]:
    """The probe reference's logits and every activation (classic hook names) on `probe_tokens()`."""
    with t.no_grad():
        logits, cache = probe_reference().run_with_cache(probe_tokens())
    return logits, dict(cache.items())
