"""Chapter 03: every checker accepts the reference and valid alternatives, rejects and names each catalogued
mistake, names the first diverging activation for each model-level mistake, and stays off stderr."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

import nbformat
import pytest
import torch as t
import torch.nn.functional as F
from torch import nn

from utils.checks import CHECKERS
from utils.checks.ch03_reference import bridge_name, classic_hook_names, model_config, same_activation
from utils.checks.core import NotImplementedYet
from utils.checks.mistakes_ch03 import (
    DIVERGES_AT, GREEDY_MISTAKES, HOOKS_MISTAKES, INIT_MISTAKES, LOAD_MISTAKES, LOSS_MISTAKES, TRANSFORMER_MISTAKES,
)
from utils.learner_components import COMPONENT_CHECKS, learner_components
from utils.reference import model as ref
from utils.checks.probes import probe_params
from utils.reference_model import reference_cache, reference_params, shared_params

REFERENCE = {
    "transformer": ref.EducationalTransformer,
    "init_weights": ref.init_weights,
    "hooks": ref.EducationalTransformer,
    "load_weights": ref.load_gpt2_weights,
    "loss": ref.get_log_probs,
    "greedy_generate": ref.greedy_generate,
}
CATALOGUE = {
    "transformer": TRANSFORMER_MISTAKES, "init_weights": INIT_MISTAKES, "hooks": HOOKS_MISTAKES,
    "load_weights": LOAD_MISTAKES, "loss": LOSS_MISTAKES, "greedy_generate": GREEDY_MISTAKES,
}
MISTAKE_CASES = [(exercise, m) for exercise, mistakes in CATALOGUE.items() for m in mistakes]


def _run(exercise: str, impl, capfd) -> str:
    CHECKERS[exercise](impl)
    out, err = capfd.readouterr()
    assert err == ""
    return out


@pytest.mark.parametrize("exercise", list(REFERENCE))
def test_reference_passes_with_one_line(exercise, capfd):
    out = _run(exercise, REFERENCE[exercise], capfd)
    lines = [line for line in out.splitlines() if not line.startswith("Reference model:")]
    assert len(lines) == 1 and lines[0].startswith("✓ ")


@pytest.mark.parametrize("exercise", list(REFERENCE))
def test_catalogue_has_at_least_four_mistakes(exercise):
    assert len(CATALOGUE[exercise]) >= 4
    assert CHECKERS[exercise].mistakes == CATALOGUE[exercise]


@pytest.mark.parametrize(("exercise", "mistake"), MISTAKE_CASES, ids=[f"{e}-{m.name}" for e, m in MISTAKE_CASES])
def test_mistake_is_rejected_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


# forward_under_no_grad gives the right logits (it fails the gradient check): there is no divergence to name.
@pytest.mark.parametrize("mistake", [m for m in TRANSFORMER_MISTAKES if m.name in DIVERGES_AT], ids=lambda m: m.name)
def test_first_divergence_names_the_right_activation(mistake):
    where = DIVERGES_AT[mistake.name].format(last=model_config().n_layers - 1)
    expected = "the logits (the output of unembed)" if where == "logits" else f"`{where}`"
    with pytest.raises(AssertionError) as info:
        CHECKERS["transformer"](mistake.impl)
    assert f"first differs from the reference at {expected}" in str(info.value)


# ------------------------------------------------------------------------------------------ alternatives


class _ReduceForward(ref.EducationalTransformer):
    def forward(self, tokens):
        start = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        return self.unembed(self.ln_final(functools.reduce(lambda x, block: block(x), self.blocks, start)))


class _IndexLoopManualUnembed(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens))
        residual = residual + self.hook_pos_embed(self.pos_embed(tokens))
        i = 0
        while i < len(self.blocks):
            residual = self.blocks[i](residual)
            i += 1
        return self.ln_final(residual) @ self.unembed.W_U + self.unembed.b_U


class _FiniteMask(ref.Attention):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.IGNORE.fill_(-1e5)  # ARENA's finite mask value: the same pattern after softmax


class _FiniteMaskBlock(ref.TransformerBlock):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.attn = _FiniteMask(cfg)


class _FiniteMaskModel(ref.EducationalTransformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.blocks = nn.ModuleList([_FiniteMaskBlock(cfg) for _ in range(cfg.n_layers)])
        self.setup()


def _init_loop_data(model):
    with t.no_grad():
        for name, p in model.named_parameters():
            leaf = name.split(".")[-1]
            if leaf == "w":
                p.fill_(1.0)
            elif leaf == "b" or leaf.startswith("b_"):
                p.zero_()
            else:
                p.normal_(0.0, model.cfg.init_range)


def _init_apply(model):
    def init(module):
        if isinstance(module, ref.LayerNorm):
            nn.init.ones_(module.w)
            nn.init.zeros_(module.b)
            return
        for name, p in module.named_parameters(recurse=False):
            nn.init.zeros_(p) if name.startswith("b_") else nn.init.normal_(p, std=model.cfg.init_range)
    model.apply(init)


def _init_residual_scaled(model):
    cfg = model.cfg
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "w":
            nn.init.ones_(p)
        elif leaf == "b" or leaf.startswith("b_"):
            nn.init.zeros_(p)
        else:  # GPT-2 paper / Hugging Face: residual-writing weights scaled by 1/sqrt(2 n_layers)
            scale = (2 * cfg.n_layers) ** -0.5 if leaf in ("W_O", "W_out") else 1.0
            nn.init.normal_(p, std=cfg.init_range * scale)


class _HooksTwoSteps(ref.EducationalTransformer):
    def forward(self, tokens):
        token_part = self.hook_embed(self.embed(tokens))
        position_part = self.hook_pos_embed(self.pos_embed(tokens))
        residual = t.add(token_part, position_part)
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(self.ln_final(residual))


def _load_manual(model, params):
    own = dict(model.named_parameters())
    missing, unexpected = sorted(set(own) - set(params)), sorted(set(params) - set(own))
    if missing or unexpected:
        raise ValueError(f"missing: {missing}; unexpected: {unexpected}")
    with t.no_grad():
        for name, value in params.items():
            if own[name].shape != value.shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} != {tuple(own[name].shape)}")
            own[name].copy_(value)
    return model


def _load_union(model, params):
    buffers = dict(model.named_buffers())
    model.load_state_dict(buffers | params, strict=True)  # torch's own strict check names every key
    return model


def _load_incompatible_keys(model, params):
    result = model.load_state_dict(params, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(".IGNORE")]
    if missing or result.unexpected_keys:
        raise KeyError(f"missing {missing}, unexpected {result.unexpected_keys}")
    return model


def _lp_arange(logits, tokens):
    log_probs = logits.log_softmax(-1)[:, :-1]
    batch, pos = tokens[:, 1:].shape
    return log_probs[t.arange(batch)[:, None], t.arange(pos)[None, :], tokens[:, 1:]]


def _lp_cross_entropy(logits, tokens):
    return -F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")


def _lp_logsumexp(logits, tokens):
    picked = t.take_along_dim(logits[:, :-1], tokens[:, 1:, None], dim=-1)[..., 0]
    return picked - logits[:, :-1].logsumexp(-1)


def _gen_list(model, tokens, max_new_tokens):
    rows = tokens.clone()
    for _ in range(max_new_tokens):
        logits = model(rows)
        rows = t.cat([rows, logits[:, -1, :].max(dim=-1).indices[:, None]], dim=1)
    return rows


def _gen_preallocated(model, tokens, max_new_tokens):
    batch, pos = tokens.shape
    out = t.zeros(batch, pos + max_new_tokens, dtype=t.long)
    out[:, :pos] = tokens
    for step in range(max_new_tokens):
        out[:, pos + step] = model(out[:, : pos + step]).argmax(-1)[:, -1]
    return out


def _gen_while(model, tokens, max_new_tokens):
    target = tokens.shape[1] + max_new_tokens
    while tokens.shape[1] < target:
        tokens = t.cat([tokens, model(tokens)[:, -1].argmax(-1).unsqueeze(1)], dim=-1)
    return tokens


ALTERNATIVES = {
    "transformer": [_ReduceForward, _IndexLoopManualUnembed, _FiniteMaskModel],
    "init_weights": [_init_loop_data, _init_apply, _init_residual_scaled],
    "hooks": [_HooksTwoSteps, _ReduceForward, _FiniteMaskModel],
    "load_weights": [_load_manual, _load_union, _load_incompatible_keys],
    "loss": [_lp_arange, _lp_cross_entropy, _lp_logsumexp],
    "greedy_generate": [_gen_list, _gen_preallocated, _gen_while],
}
ALTERNATIVE_CASES = [(e, impl) for e, impls in ALTERNATIVES.items() for impl in impls]


@pytest.mark.parametrize(("exercise", "impl"), ALTERNATIVE_CASES, ids=[f"{e}-{i.__name__}" for e, i in ALTERNATIVE_CASES])
def test_valid_alternative_passes(exercise, impl, capfd):
    assert "✓" in _run(exercise, impl, capfd)


# ------------------------------------------------------------------------------------------------- stubs


class _StubModel(ref.EducationalTransformer):
    def forward(self, tokens):
        raise NotImplementedError()


def _stub(*args, **kwargs):
    raise NotImplementedError()


STUBS = {"transformer": _StubModel, "init_weights": _stub, "hooks": _StubModel, "load_weights": _stub, "loss": _stub,
         "greedy_generate": _stub}


@pytest.mark.parametrize("exercise", list(STUBS))
def test_stub_is_not_implemented_yet(exercise, capfd):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](STUBS[exercise])
    assert capfd.readouterr().err == ""


# ------------------------------------------------------------------------------------------------- model API


def test_cache_names_shapes_and_values_match_the_reference():
    """The course's reference model computes every activation the bridge does: so `checks.hooks`, which compares
    a learner's cache with the course model's on a probe, compares it with TransformerLens's."""
    tokens, logits, bridge_cache = reference_cache()
    model = ref.load_gpt2_weights(ref.EducationalTransformer(model_config()), reference_params()).eval()
    with t.no_grad():
        out, cache = model.run_with_cache(tokens)
    assert (out - logits).abs().max().item() < 1e-4
    for name in classic_hook_names(model.cfg.n_layers):
        assert cache[name].shape == bridge_cache[bridge_name(name)].shape, name
        assert same_activation(name, cache[name], bridge_cache[bridge_name(name)]), name
    assert cache["pattern", 0].shape == cache["blocks.0.attn.hook_pattern"].shape  # ActivationCache's shorthand


def test_attn_only_model_has_no_mlp_and_runs():
    cfg = ref.TransformerConfig(d_model=64, n_heads=4, d_head=16, d_mlp=256, n_layers=2, n_ctx=32, d_vocab=50, attn_only=True)
    model = ref.EducationalTransformer(cfg)
    assert not any(".mlp." in name for name in model.state_dict())
    _, cache = model.run_with_cache(t.randint(0, 50, (2, 7)))
    assert cache["blocks.1.hook_resid_post"].shape == (2, 7, 64)


def test_load_rejects_missing_weight_by_name():
    params = reference_params()
    del params["ln_final.w"]
    with pytest.raises(KeyError, match=re.escape("ln_final.w")):
        ref.load_gpt2_weights(ref.EducationalTransformer(model_config()), params)


# ------------------------------------------------------------------------------------------ learner components


def test_components_fall_back_when_notebook_is_missing(tmp_path, capsys):
    parts = learner_components(tmp_path / "absent.ipynb")
    assert list(parts) == [getattr(ref, name) for name in COMPONENT_CHECKS] and parts.yours == []
    assert capsys.readouterr().out.startswith("Components: the reference's for all 7")


def test_components_fall_back_when_notebook_is_broken(tmp_path, capsys):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("class LayerNorm(:\n    pass")
    cell.metadata["tfs"] = {"export": "components"}
    nb.cells = [cell]
    path = tmp_path / "02_components.ipynb"
    nbformat.write(nb, str(path))
    parts = learner_components(path)
    assert parts.yours == [] and set(parts.reasons) == set(COMPONENT_CHECKS)
    (tmp_path / "junk.ipynb").write_text("not json")
    assert learner_components(tmp_path / "junk.ipynb").yours == []


def test_stubbed_chapter_uses_reference_components(capsys):
    from utils.learner_components import ROOT

    parts = learner_components(ROOT / "chapters" / "02_components.ipynb")
    assert parts.yours == []
    out = capsys.readouterr()
    assert out.err == "" and len(out.out.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_runs_offline(capsys):
    from utils import demo

    demo.main([])
    out = capsys.readouterr().out
    for needle in ("parameters", "reference in use", "max |logit diff|", "loss", "top next tokens", "greedy"):
        assert needle in out


@pytest.mark.slow
def test_solution_components_are_all_used(capsys):
    from utils.learner_components import ROOT

    parts = learner_components(ROOT / "solutions" / "02_components.ipynb")
    assert parts.yours == list(COMPONENT_CHECKS), parts.reasons
    assert capsys.readouterr().out.startswith("Components: yours, all 7")


# ----------------------------------------------------------------------------------------- shared, read-only


def test_probe_weights_are_untied_with_a_non_zero_unembedding_bias():
    params = probe_params()
    assert params["unembed.W_U"].shape == params["embed.W_E"].T.shape
    assert (params["unembed.W_U"] - params["embed.W_E"].T).abs().min() > 0
    assert params["unembed.b_U"].abs().min() > 0


def test_checks_leave_the_shared_reference_parameters_unchanged(capfd):
    before = {name: value.clone() for name, value in shared_params().items()}
    for exercise, impl in REFERENCE.items():
        CHECKERS[exercise](impl)
    for mistake in (*TRANSFORMER_MISTAKES[-2:], LOAD_MISTAKES[-1]):
        exercise = "transformer" if mistake in TRANSFORMER_MISTAKES else "load_weights"
        with pytest.raises(AssertionError):
            CHECKERS[exercise](mistake.impl)
    after = shared_params()
    assert after.keys() == before.keys() and all(t.equal(after[n], before[n]) for n in before)
    assert capfd.readouterr().err == ""


# Under a reference that ties W_U = W_E.T with b_U = 0, as real GPT-2 does, a model that unembeds with W_E.T (or
# without b_U) gives the reference's logits: only the untied probes can catch it.
TIED_SCRIPT = """
import torch as t
from utils.checks import CHECKERS, MISTAKES
from utils.checks.ch03_reference import model_config
from utils.reference_model import reference_cache, reference_info, shared_params

params = shared_params()
assert reference_info().kind == "gpt2", reference_info()
assert t.equal(params["unembed.W_U"], params["embed.W_E"].T) and not params["unembed.b_U"].any(), "not tied"
tokens, logits, _ = reference_cache()
by_name = {m.name: m for ms in MISTAKES.values() for m in ms}
for name in ("unembedding_with_W_E", "unembedding_bias_dropped"):
    model = by_name[name].impl(model_config())
    model.load_state_dict({**model.state_dict(), **params})
    with t.no_grad():
        assert (model(tokens) - logits).abs().max() < 1e-4, f"{name} should match the tied reference's logits"
for exercise, name in [("transformer", "unembedding_with_W_E"), ("transformer", "unembedding_bias_dropped"),
                       ("load_weights", "unembedding_tied_to_embedding"), ("unembed", "embedding_matrix_reused"),
                       ("unembed", "unembedding_bias_missing")]:
    mistake = next(m for m in MISTAKES[exercise] if m.name == name)
    try:
        CHECKERS[exercise](mistake.impl)
    except AssertionError as exc:
        assert f"This matches a known mistake, {name.replace('_', ' ')}: {mistake.hint}" in str(exc), str(exc)[:800]
    else:
        raise SystemExit(f"{exercise} accepted {name} under the tied reference")
print("tied reference: all caught")
"""


@pytest.mark.slow
def test_tied_reference_cannot_hide_unembedding_mistakes(real_gpt2_env, root):
    proc = subprocess.run([sys.executable, "-c", TIED_SCRIPT], cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "all caught" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


# -------------------------------------------------------------------------- stated beyond the logits


class _UnembedTransposed(ref.Unembed):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.W_U = nn.Parameter(t.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, x):
        return x @ self.W_U.T + self.b_U


class _TransposedUnembedModel(ref.EducationalTransformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.unembed = _UnembedTransposed(cfg)
        self.setup()


class _TorchLayerNormModel(ref.EducationalTransformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.setup()


class _WrongLogitsModel(ref.EducationalTransformer):
    def forward(self, tokens):
        residual = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            residual = block(residual)
        return self.unembed(residual)  # no ln_final


class _DetachedLogitsModel(ref.EducationalTransformer):
    def forward(self, tokens):
        return super().forward(tokens).detach()


class _FirstRowForAllModel(ref.EducationalTransformer):
    def forward(self, tokens):
        return super().forward(tokens[:1]).expand(tokens.shape[0], -1, -1)


STATED = [  # (exercise, implementation, what the message must say, what it must not say)
    ("transformer", _TransposedUnembedModel, "`unembed.W_U` is transposed: yours has shape", "parameter names differ"),
    ("hooks", _TransposedUnembedModel, "[d_vocab d_model], TransformerLens's (and GPT-2's loaded weights)", "parameter names differ"),
    ("transformer", _TorchLayerNormModel, "`ln_final` is torch's nn.LayerNorm (parameters weight, bias), not your LayerNorm",
     "parameter names differ"),
    ("hooks", _TorchLayerNormModel, "`ln_final` is torch's nn.LayerNorm", "chapter-02 component"),
    ("hooks", _WrongLogitsModel, "so its activations cannot be compared yet", "This matches a known mistake"),
    ("transformer", _DetachedLogitsModel, "the output carries no gradient on the probe (your forward calls `.detach()`)", "known mistake"),
    ("transformer", _FirstRowForAllModel, "Row 1 differs while row 0 matches", "known mistake"),
]


@pytest.mark.parametrize(("exercise", "impl", "message", "absent"), STATED, ids=[f"{e}-{i.__name__}" for e, i, _, _ in STATED])
def test_stated_requirement_fails_with_a_specific_message(exercise, impl, message, absent, capfd):
    with pytest.raises(AssertionError) as info:
        CHECKERS[exercise](impl)
    assert message in str(info.value)
    assert absent not in str(info.value)
    assert capfd.readouterr().err == ""


def test_hooks_on_a_stub_forward_say_forward_is_not_implemented():
    with pytest.raises(NotImplementedYet, match=re.escape("EducationalTransformer.forward is not implemented yet")):
        CHECKERS["hooks"](_StubModel)


class _OwnLayerNorm(ref.LayerNorm):
    """A learner's own LayerNorm class: the reference model's modules are not instances of it."""


class _OwnModel(ref.EducationalTransformer):
    def __init__(self, cfg):
        super().__init__(cfg)
        for block in self.blocks:
            block.ln1, block.ln2 = _OwnLayerNorm(cfg), _OwnLayerNorm(cfg)
        self.ln_final = _OwnLayerNorm(cfg)
        self.setup()


def _init_by_isinstance(model):
    for module in model.modules():
        if isinstance(module, _OwnLayerNorm):
            nn.init.ones_(module.w)
            nn.init.zeros_(module.b)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("W_"):
            nn.init.normal_(param, std=model.cfg.init_range)
        elif leaf.startswith("b_"):
            nn.init.zeros_(param)


def test_isinstance_init_passes_on_the_learners_own_model(capfd):
    CHECKERS["init_weights"](_init_by_isinstance, _OwnModel)
    assert "✓ init_weights" in capfd.readouterr().out


def test_isinstance_init_without_the_model_class_is_explained():
    with pytest.raises(AssertionError, match=re.escape("pass your model class too, `checks.init_weights(init_weights, EducationalTransformer)`")):
        CHECKERS["init_weights"](_init_by_isinstance)


def test_replaced_parameters_are_named():
    replaced = next(m.impl for m in INIT_MISTAKES if m.name == "parameters_replaced")
    with pytest.raises(AssertionError, match=re.escape("init_weights replaces the parameter objects (`embed.W_E` is a new nn.Parameter")):
        CHECKERS["init_weights"](replaced, _OwnModel)


class _Float64Logits(ref.EducationalTransformer):
    def forward(self, tokens):
        return super().forward(tokens).double()


def _gen_int32(model, tokens, max_new_tokens):
    return _gen_list(model, tokens, max_new_tokens).int()


@pytest.mark.parametrize("exercise, impl", [("transformer", _Float64Logits), ("greedy_generate", _gen_int32)])
def test_dtype_policy_accepts_float64_logits_and_int32_ids(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    out = capfd.readouterr().out
    assert out.startswith("✓"), out


def test_float_token_ids_are_rejected_as_ids():
    with pytest.raises(AssertionError, match=r"token ids are integer tensors \(torch.int64, int32 accepted\)"):
        CHECKERS["greedy_generate"](lambda model, tokens, n: _gen_list(model, tokens, n).float())


def test_loader_that_returns_nothing_is_named():
    with pytest.raises(AssertionError, match=re.escape("load_gpt2_weights returned None")):
        CHECKERS["load_weights"](next(m.impl for m in LOAD_MISTAKES if m.name == "model_not_returned"))


def test_loader_error_must_list_every_name():
    with pytest.raises(AssertionError) as info:
        CHECKERS["load_weights"](next(m.impl for m in LOAD_MISTAKES if m.name == "first_name_only"))
    assert "names only 1 of the 3 (not `blocks.1.mlp.W_in`, `ln_final.w`)" in str(info.value)
