"""Realistic wrong implementations of chapter 02's components, each with the hint it earns.

Each mistake subclasses the reference component and overrides only what a learner gets wrong, so the
catalogue reads as a list of misconceptions. Tests feed every entry to its checker and expect its hint.
"""

from __future__ import annotations

import torch as t
import torch.nn.functional as F

from utils.checks.core import Mistake
from utils.reference import components as ref


class _UnbiasedVariance(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (x.var(-1, keepdim=True, unbiased=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _EpsOutsideSqrt(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (x.var(-1, keepdim=True, unbiased=False).sqrt() + self.cfg.layer_norm_eps) * self.w + self.b


class _NoCentring(ref.LayerNorm):
    def forward(self, x):
        var = x.var(-1, keepdim=True, unbiased=False)
        return x / (var + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _WrongAxis(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-2, keepdim=True)
        return centred / (centred.pow(2).mean(-2, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


class _NoAffine(ref.LayerNorm):
    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], eps=self.cfg.layer_norm_eps)


class _NoEps(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / centred.pow(2).mean(-1, keepdim=True).sqrt() * self.w + self.b


class _BiasBeforeScale(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return (centred / (centred.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() + self.b) * self.w


class _InPlace(ref.LayerNorm):
    def forward(self, x):
        x -= x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b


LAYER_NORM_MISTAKES = [
    Mistake("unbiased_variance", _UnbiasedVariance,
            "LayerNorm uses the biased variance (divide by d_model): use `var(unbiased=False)` or `.pow(2).mean()`."),
    Mistake("eps_outside_sqrt", _EpsOutsideSqrt,
            "epsilon belongs inside the square root: `(var + eps).sqrt()`, not `var.sqrt() + eps`."),
    Mistake("no_centring", _NoCentring, "subtract the mean before dividing: LayerNorm centres each vector first."),
    Mistake("wrong_axis", _WrongAxis,
            "normalise over d_model (`dim=-1`), one vector per position, not over positions or the batch."),
    Mistake("missing_w_and_b", _NoAffine, "after normalising, multiply by `self.w` and add `self.b`."),
    Mistake("missing_eps", _NoEps, "add `self.cfg.layer_norm_eps` to the variance before the square root."),
    Mistake("bias_before_scale", _BiasBeforeScale, "scale first, then shift: `normalized * self.w + self.b`."),
    Mistake("in_place", _InPlace, "don't modify the input in place (`x -= mean`); write `x = x - mean`."),
]
