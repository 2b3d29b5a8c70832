"""Chapter 02 mistakes whose output values are right: each breaks only something else the exercise text states, a
hook (missing, fed the wrong tensor) or a gradient (`.data`, `.detach()`, `t.no_grad()`). The value checks cannot
see them; the hook and gradient checks (`utils.checks.requirements`) do, and name them. Their hints are in
`mistakes_ch02`'s lists, next to the value mistakes of the same exercise.
"""

from __future__ import annotations

import math

import einops
import torch as t
import torch.nn.functional as F

from utils.reference import components as ref

class _VarianceThroughHookScale(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        var = self.hook_scale(centred.pow(2).mean(-1, keepdim=True))
        return self.hook_normalized(centred / (var + self.cfg.layer_norm_eps).sqrt() * self.w + self.b)


class _NormalizedBeforeAffine(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt())
        return self.hook_normalized(centred / scale) * self.w + self.b


class _LayerNormWithoutHooks(ref.LayerNorm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b

class _EmbedThroughData(ref.Embed):
    def forward(self, tokens):
        return self.W_E.data[tokens]


class _EmbedUnderNoGrad(ref.Embed):
    def forward(self, tokens):
        with t.no_grad():
            return self.W_E[tokens]

def _heads(x, weight, bias):
    return einops.einsum(x, weight, "batch pos d_model, n_heads d_model d_head -> batch pos n_heads d_head") + bias


def _scores(q, k):
    return einops.einsum(q, k, "batch query_pos n_heads d_head, batch key_pos n_heads d_head -> batch n_heads query_pos key_pos")


def _mix(pattern, v):
    return einops.einsum(pattern, v, "batch n_heads query_pos key_pos, batch key_pos n_heads d_head -> batch query_pos n_heads d_head")


def _out(z, W_O, b_O):
    return einops.einsum(z, W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos d_model") + b_O

class _HookedAttention(ref.Attention):
    """The reference forward with its hooks, one of them fed the wrong tensor or skipped."""

    def hooked_pattern(self, scores):
        return self.hook_pattern(scores.softmax(dim=-1))

    def forward(self, normalized_resid_pre):
        x = normalized_resid_pre
        q, k, v = (self.hook_q(_heads(x, self.W_Q, self.b_Q)), self.hook_k(_heads(x, self.W_K, self.b_K)),
                   self.hook_v(_heads(x, self.W_V, self.b_V)))
        scores = self.hook_attn_scores(self.apply_causal_mask(_scores(q, k) / math.sqrt(self.cfg.d_head)))
        return _out(self.hook_z(_mix(self.hooked_pattern(scores), v)), self.W_O, self.b_O)


class _PatternHookSkipped(_HookedAttention):
    def hooked_pattern(self, scores):
        return scores.softmax(dim=-1)


class _ScoresThroughHookPattern(_HookedAttention):
    def hooked_pattern(self, scores):
        return self.hook_pattern(scores).softmax(dim=-1)

class _WeightsDetached(ref.MLP):
    def forward(self, normalized_resid_mid):
        pre = self.hook_pre(normalized_resid_mid @ self.W_in.detach() + self.b_in)
        post = self.hook_post(F.gelu(pre, approximate="tanh"))
        return post @ self.W_out.detach() + self.b_out

class _AttnOutThroughResidMid(ref.TransformerBlock):
    def forward(self, resid_pre):
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = resid_pre + self.hook_resid_mid(attn_out)
        return self.hook_resid_post(resid_mid + self.hook_mlp_out(self.mlp(self.ln2(resid_mid))))


# Mistakes whose output values are right and which break only what the text states besides them (a hook, a
# gradient): the value checks cannot name them, so the hook and gradient checks do.
STATED_ONLY = frozenset({
    "variance_through_hook_scale", "hook_normalized_before_w_and_b", "hooks_not_called", "indexed_through_data",
    "computed_under_no_grad", "pattern_hook_not_called", "scores_through_hook_pattern", "weights_detached",
    "attention_output_through_hook_resid_mid",
})
