"""Realistic wrong implementations for chapter 03, each with the hint it earns.

Model-level mistakes subclass the reference `EducationalTransformer` and override only `forward`; `DIVERGES_AT`
says which activation the first-divergence diagnostic must name for each (tests hold the checker to it).
"""

from __future__ import annotations

import math

import torch as t
from torch import nn

from utils.checks.core import Mistake
from utils.reference import model as ref

# ------------------------------------------------------------------------------------------- the whole model


class _NoPosEmbed(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _ScaledEmbedding(ref.EducationalTransformer):
    def forward(self, tokens):  # "Attention is all you need" scales by sqrt(d_model); GPT-2 does not
        residual = self.hook_embed(self.embed(tokens) * math.sqrt(self.cfg.d_model))
        residual = residual + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _NoLnFinal(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(residual)


class _LnFinalBeforeLastBlock(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks[:-1]:
            residual = block(residual)
        return self.unembed(self.blocks[-1](self.ln_final(residual)))


class _ResidualNotAccumulated(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            out = block(residual)  # every block reads the embedding
        return self.unembed(self.ln_final(out))


class _BlocksReversed(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in reversed(self.blocks):
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _SameBlockEveryLayer(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for _ in range(self.cfg.n_layers):
            residual = self.blocks[0](residual)
        return self.unembed(self.ln_final(residual))


class _UnembedBeforeLnFinal(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.ln_final(self.unembed(residual))


class _SoftmaxOnLogits(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual)).softmax(dim=-1)


class _LastPositionOnly(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))[:, -1]


class _UnembedWithEmbedding(ref.EducationalTransformer):
    def forward(self, tokens):  # "GPT-2 ties its embeddings", so the learner reuses W_E
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.ln_final(residual) @ self.embed.W_E.T + self.unembed.b_U


class _UnembedWithoutBias(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.ln_final(residual) @ self.unembed.W_U


class _ForwardUnderNoGrad(ref.EducationalTransformer):
    def forward(self, tokens):  # "the model only predicts here", so gradients are switched off
        with t.no_grad():
            return super().forward(tokens)


TRANSFORMER_MISTAKES = [
    Mistake("no_positional_embedding", _NoPosEmbed,
            "the residual stream starts as token embedding PLUS positional embedding: "
            "add `self.hook_pos_embed(self.pos_embed(tokens))`."),
    Mistake("scaled_embedding", _ScaledEmbedding,
            "GPT-2 does not multiply the token embedding by sqrt(d_model) (the original Transformer did): use `embed(tokens)` as it is."),
    Mistake("no_ln_final", _NoLnFinal,
            "apply the final LayerNorm before unembedding: `self.unembed(self.ln_final(residual))`."),
    Mistake("ln_final_before_last_block", _LnFinalBeforeLastBlock,
            "`ln_final` runs once, after the LAST block; every block reads the raw residual stream."),
    Mistake("residual_not_accumulated", _ResidualNotAccumulated,
            "each block must read the previous block's output: `residual = block(residual)` inside the loop."),
    Mistake("blocks_in_reverse_order", _BlocksReversed,
            "run the blocks in order, `for block in self.blocks:` (block 0 first)."),
    Mistake("same_block_every_layer", _SameBlockEveryLayer,
            "use each block once, `for block in self.blocks:`, not `self.blocks[0]` n_layers times."),
    Mistake("unembed_before_ln_final", _UnembedBeforeLnFinal,
            "the order is `ln_final` then `unembed`: `self.unembed(self.ln_final(residual))`."),
    Mistake("softmax_on_logits", _SoftmaxOnLogits,
            "forward returns logits, not probabilities: remove the softmax (the loss applies log_softmax itself)."),
    Mistake("last_position_only", _LastPositionOnly,
            "return the logits of every position, `[batch pos d_vocab]`, not only the last one (generation slices it later)."),
    Mistake("unembedding_with_W_E", _UnembedWithEmbedding,
            "unembed with `self.unembed(...)`, which uses its own `W_U` and `b_U`, not `self.embed.W_E.T`: real GPT-2 ties "
            "the two (so its logits come out right), but the course's model keeps them separate parameters."),
    Mistake("unembedding_bias_dropped", _UnembedWithoutBias,
            "finish with `self.unembed(...)`, which adds `b_U`: real GPT-2's b_U is zero, so leaving it out only shows "
            "with other weights."),
    Mistake("forward_under_no_grad", _ForwardUnderNoGrad,
            "leave gradients on in forward (callers that only predict wrap the call in `t.no_grad()` themselves): "
            "chapter 05 trains this model through its logits."),
]

# The activation the first-divergence diagnostic must name for each mistake ("logits": every hook matches).
DIVERGES_AT = {
    "no_positional_embedding": "blocks.0.hook_resid_pre",
    "scaled_embedding": "hook_embed",
    "no_ln_final": "logits",
    "ln_final_before_last_block": "blocks.{last}.hook_resid_pre",
    "residual_not_accumulated": "blocks.1.hook_resid_pre",
    "blocks_in_reverse_order": "blocks.0.hook_resid_pre",
    "same_block_every_layer": "ln_final.hook_scale",
    "unembed_before_ln_final": "ln_final.hook_scale",
    "softmax_on_logits": "logits",
    "last_position_only": "logits",
    "unembedding_with_W_E": "logits",
    "unembedding_bias_dropped": "logits",
}

# ------------------------------------------------------------------------------------------- initialisation


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _init_std_one(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        leaf = _leaf(name)
        nn.init.ones_(p) if leaf == "w" else nn.init.zeros_(p) if leaf == "b" or leaf.startswith("b_") else nn.init.normal_(p)


def _init_range_as_mean(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        leaf = _leaf(name)
        if leaf == "w":
            nn.init.ones_(p)
        elif leaf == "b" or leaf.startswith("b_"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, model.cfg.init_range)  # the second positional argument is the mean


def _init_uniform(model: nn.Module) -> None:
    r = model.cfg.init_range
    for name, p in model.named_parameters():
        leaf = _leaf(name)
        nn.init.ones_(p) if leaf == "w" else nn.init.zeros_(p) if leaf == "b" or leaf.startswith("b_") else nn.init.uniform_(p, -r, r)


def _init_xavier(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        leaf = _leaf(name)
        nn.init.ones_(p) if leaf == "w" else nn.init.zeros_(p) if leaf == "b" or leaf.startswith("b_") else nn.init.xavier_normal_(p)


def _init_random_biases(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if _leaf(name) == "w":
            nn.init.ones_(p)
        else:
            nn.init.normal_(p, std=model.cfg.init_range)


def _init_ln_gains_zero(model: nn.Module) -> None:
    for p in model.parameters():
        nn.init.zeros_(p) if p.dim() == 1 else nn.init.normal_(p, std=model.cfg.init_range)


def _init_blocks_only(model: nn.Module) -> None:
    for name, p in model.blocks.named_parameters():
        leaf = _leaf(name)
        if leaf == "w":
            nn.init.ones_(p)
        elif leaf == "b" or leaf.startswith("b_"):
            nn.init.zeros_(p)
        else:
            nn.init.normal_(p, std=model.cfg.init_range)


def _init_new_parameters(model: nn.Module) -> None:
    init_range = model.cfg.init_range
    for name, p in list(model.named_parameters()):
        owner, leaf = name.rsplit(".", 1)
        if leaf == "w":
            value = t.ones_like(p)
        elif leaf == "b" or leaf.startswith("b_"):
            value = t.zeros_like(p)
        else:
            value = t.randn_like(p) * init_range
        setattr(model.get_submodule(owner), leaf, nn.Parameter(value))


INIT_MISTAKES = [
    Mistake("std_of_one", _init_std_one,
            "`nn.init.normal_(param)` draws with std 1; pass `std=cfg.init_range` (0.02)."),
    Mistake("init_range_as_mean", _init_range_as_mean,
            "`nn.init.normal_(param, cfg.init_range)` sets the MEAN to init_range (the second positional argument "
            "is `mean`); write `nn.init.normal_(param, std=cfg.init_range)`."),
    Mistake("uniform_distribution", _init_uniform,
            "GPT-2 draws weights from a normal distribution: use `nn.init.normal_(param, std=init_range)`, not `uniform_`."),
    Mistake("xavier_initialisation", _init_xavier,
            "Xavier/Kaiming scale the std by the layer's size; GPT-2 uses one std, init_range, for every weight."),
    Mistake("random_biases", _init_random_biases,
            "biases (`b`, `b_Q`, ..., `b_U`) start at zero: `nn.init.zeros_`."),
    Mistake("layer_norm_gains_zero", _init_ln_gains_zero,
            "a LayerNorm's gain `w` starts at ONE (zero would erase the stream); only its bias `b` starts at zero."),
    Mistake("embeddings_skipped", _init_blocks_only,
            "initialise every parameter of the model, not only those in `model.blocks`: loop over `model.named_parameters()`."),
    Mistake("parameters_replaced", _init_new_parameters,
            "`setattr(module, name, nn.Parameter(...))` builds new tensors that an optimiser created earlier never "
            "sees: fill the existing ones with `nn.init.normal_(param, std=...)`, `zeros_` and `ones_`."),
]

# ------------------------------------------------------------------------------------------------ loading


def _load_not_strict(model, params):
    model.load_state_dict(params, strict=False)
    return model


def _load_forgets_buffers(model, params):
    model.load_state_dict(params, strict=True)
    return model


def _load_ignores_unexpected(model, params):
    for name, param in model.named_parameters():
        param.data.copy_(params[name])
    return model


def _load_into_callers_dict(model, params):
    params.update({name: buf for name, buf in model.named_buffers()})
    model.load_state_dict(params, strict=True)
    return model


def _load_over_whole_state(model, params):
    model.load_state_dict({**model.state_dict(), **params}, strict=True)
    return model


def _load_ties_unembedding(model, params):
    # "GPT-2 ties W_U to W_E", so the learner derives the unembedding instead of copying it
    tied = {**params, "unembed.W_U": params["embed.W_E"].T, "unembed.b_U": t.zeros_like(params["unembed.b_U"])}
    model.load_state_dict({**dict(model.named_buffers()), **tied}, strict=True)
    return model


def _load_returns_nothing(model, params):
    buffers = dict(model.named_buffers())
    missing, unexpected = set(model.state_dict()) - set(buffers) - set(params), set(params) - set(model.state_dict())
    if missing or unexpected:
        raise KeyError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    model.load_state_dict({**buffers, **params}, strict=True)  # ...and no `return model`


def _load_names_first_only(model, params):
    buffers = dict(model.named_buffers())
    missing, unexpected = set(model.state_dict()) - set(buffers) - set(params), set(params) - set(model.state_dict())
    for name in sorted(missing) + sorted(unexpected):
        raise KeyError(f"weight name mismatch: {name}")
    model.load_state_dict({**buffers, **params}, strict=True)
    return model


LOAD_MISTAKES = [
    Mistake("strict_false", _load_not_strict,
            "`strict=False` silently leaves a missing weight at its random value and drops a misspelt one: check the names yourself and load with strict=True."),
    Mistake("buffers_not_handled", _load_forgets_buffers,
            "GPT-2's weights contain no IGNORE buffers: add the model's own buffers (`model.named_buffers()`) to a new dict before `load_state_dict(..., strict=True)`."),
    Mistake("unexpected_names_ignored", _load_ignores_unexpected,
            "a name in the weights that your model lacks is an error too (a typo would otherwise lose that weight): list the unexpected names and raise."),
    Mistake("callers_dict_modified", _load_into_callers_dict,
            "do not add the buffers into the caller's `params` dict: build a new one, `{**buffers, **params}`."),
    Mistake("missing_filled_from_model", _load_over_whole_state,
            "merging `params` into the WHOLE `model.state_dict()` lets a missing weight keep its random value: merge in the buffers only."),
    Mistake("unembedding_tied_to_embedding", _load_ties_unembedding,
            "copy `unembed.W_U` and `unembed.b_U` from the weights you are given: real GPT-2 ties W_U to W_E.T and has "
            "b_U = 0, but other weights (and the course's models) do not."),
    Mistake("model_not_returned", _load_returns_nothing,
            "end with `return model`: the chapter writes `model = load_gpt2_weights(EducationalTransformer(cfg), params)`."),
    Mistake("first_name_only", _load_names_first_only,
            "collect the missing and the unexpected names first (two set differences), then raise one error that lists them all."),
]

# -------------------------------------------------------------------------------------------------- loss


def _lp_no_shift(logits, tokens):
    return logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, :-1, None])[..., 0]


def _lp_shift_wrong_way(logits, tokens):
    return logits.log_softmax(-1)[:, 1:].gather(-1, tokens[:, :-1, None])[..., 0]


def _lp_probs(logits, tokens):
    return logits.softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _lp_raw_logits(logits, tokens):
    return logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _lp_wrong_dim(logits, tokens):
    return logits.log_softmax(1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _lp_negated(logits, tokens):
    return -logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _lp_log_of_softmax(logits, tokens):
    return t.log(logits.softmax(-1))[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]


def _lp_mean(logits, tokens):
    return logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0].mean()


LOSS_MISTAKES = [
    Mistake("off_by_one_not_shifted", _lp_no_shift,
            "off by one: position i predicts token i+1, so pair `logits[:, :-1]` with `tokens[:, 1:]`."),
    Mistake("off_by_one_shifted_the_wrong_way", _lp_shift_wrong_way,
            "off by one, the other way: pair `logits[:, :-1]` (predictions) with `tokens[:, 1:]` (targets)."),
    Mistake("probabilities_not_log", _lp_probs,
            "return LOG-probabilities: `log_softmax`, not `softmax`."),
    Mistake("raw_logits", _lp_raw_logits,
            "logits are not log-probabilities until normalised: apply `log_softmax(dim=-1)` before picking the target."),
    Mistake("log_softmax_over_positions", _lp_wrong_dim,
            "normalise over the vocabulary, `log_softmax(dim=-1)`, not over positions."),
    Mistake("negated", _lp_negated,
            "return log-probabilities (<= 0); the loss is their negative mean, computed afterwards."),
    Mistake("log_of_softmax", _lp_log_of_softmax,
            "`t.log(softmax(x))` underflows to -inf for improbable tokens: use `log_softmax`."),
    Mistake("mean_returned", _lp_mean,
            "return one log-probability per predicted token, `[batch pos-1]`; average afterwards."),
]

# --------------------------------------------------------------------------------------------- generation


def _gen_first_position(model, tokens, max_new_tokens):
    for _ in range(max_new_tokens):
        tokens = t.cat([tokens, model(tokens)[:, 0].argmax(-1, keepdim=True)], dim=-1)
    return tokens


def _gen_last_token_only(model, tokens, max_new_tokens):
    for _ in range(max_new_tokens):
        tokens = t.cat([tokens, model(tokens[:, -1:])[:, -1].argmax(-1, keepdim=True)], dim=-1)
    return tokens


def _gen_prompt_not_extended(model, tokens, max_new_tokens):
    out = tokens
    for _ in range(max_new_tokens):
        out = t.cat([out, model(tokens)[:, -1].argmax(-1, keepdim=True)], dim=-1)
    return out


def _gen_new_only(model, tokens, max_new_tokens):
    new = []
    for _ in range(max_new_tokens):
        new.append(model(tokens)[:, -1].argmax(-1, keepdim=True))
        tokens = t.cat([tokens, new[-1]], dim=-1)
    return t.cat(new, dim=-1)


def _gen_samples(model, tokens, max_new_tokens):
    for _ in range(max_new_tokens):
        tokens = t.cat([tokens, t.multinomial(model(tokens)[:, -1].softmax(-1), 1)], dim=-1)
    return tokens


def _gen_argmax_flat(model, tokens, max_new_tokens):
    for _ in range(max_new_tokens):
        best = model(tokens)[:, -1].argmax()  # no dim: an index into the flattened [batch d_vocab]
        tokens = t.cat([tokens, best.expand(tokens.shape[0], 1)], dim=-1)
    return tokens


GREEDY_MISTAKES = [
    Mistake("first_position_logits", _gen_first_position,
            "the next token comes from the LAST position's logits, `logits[:, -1]`."),
    Mistake("only_last_token_fed", _gen_last_token_only,
            "without a KV cache the model must see the whole sequence each step: `model(tokens)`, not `model(tokens[:, -1:])`."),
    Mistake("prompt_not_extended", _gen_prompt_not_extended,
            "feed the extended sequence back in: `tokens = t.cat([tokens, next_token], dim=-1)`, then `model(tokens)`."),
    Mistake("new_tokens_only", _gen_new_only,
            "return the prompt followed by the new tokens, `[batch pos + max_new_tokens]`."),
    Mistake("sampling_not_greedy", _gen_samples,
            "greedy decoding takes the most likely token, `argmax(dim=-1)`; sampling is chapter 06."),
    Mistake("argmax_without_dim", _gen_argmax_flat,
            "`argmax()` without `dim` flattens the batch: use `argmax(dim=-1, keepdim=True)`, one token per row."),
]

# -------------------------------------------------------------------------------------------------- hooks


class _HooksNotCalled(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _HookValueIgnored(ref.EducationalTransformer):
    def forward(self, tokens):
        embed, pos = self.embed(tokens), self.pos_embed(tokens)
        self.hook_embed(embed)
        self.hook_pos_embed(pos)
        residual = embed + pos  # the hooks' return values are dropped, so a hook cannot change anything
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _HooksSwapped(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.pos_embed(tokens)) + self.hook_pos_embed(self.embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


class _NoSetup(ref.EducationalTransformer):
    def __init__(self, cfg):
        nn.Module.__init__(self)  # as HookedRootModule.__init__ would, but without the final self.setup()
        self.cfg = cfg
        self.embed, self.pos_embed = ref.Embed(cfg), ref.PosEmbed(cfg)
        self.hook_embed, self.hook_pos_embed = ref.HookPoint(), ref.HookPoint()
        self.blocks = nn.ModuleList([ref.TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final, self.unembed = ref.LayerNorm(cfg), ref.Unembed(cfg)


class _PlainModule(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embed, self.pos_embed = ref.Embed(cfg), ref.PosEmbed(cfg)
        self.hook_embed, self.hook_pos_embed = ref.HookPoint(), ref.HookPoint()
        self.blocks = nn.ModuleList([ref.TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final, self.unembed = ref.LayerNorm(cfg), ref.Unembed(cfg)

    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


HOOKS_MISTAKES = [
    Mistake("embedding_hooks_not_called", _HooksNotCalled,
            "pass each embedding through its hook point in forward: `self.hook_embed(self.embed(tokens))` and "
            "`self.hook_pos_embed(self.pos_embed(tokens))`."),
    Mistake("hook_return_value_ignored", _HookValueIgnored,
            "use the value the hook point RETURNS (`x = self.hook_embed(x)`): a hook may replace the activation."),
    Mistake("embedding_hooks_swapped", _HooksSwapped,
            "`hook_embed` holds the token embedding and `hook_pos_embed` the positional embedding."),
    Mistake("setup_not_called", _NoSetup,
            "call `self.setup()` as the last line of `__init__`: HookedRootModule indexes its hook points there."),
    Mistake("not_a_hooked_root_module", _PlainModule,
            "subclass `HookedRootModule` (from transformer_lens), not `nn.Module`: it provides run_with_cache and run_with_hooks."),
]
