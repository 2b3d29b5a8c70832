"""Checkers for chapter 03's weights: GPT-2's initialisation (`init_weights`) and loading GPT-2's weights by name
(`load_gpt2_weights`). Initialisation statistics are measured on `probes.init_config` (GPT-2 size would take 163M
random draws per model); loading is checked once at the reference's size and then on the probe, whose untied weights
show a loader that ties W_U to W_E or drops b_U.
"""

from __future__ import annotations

import copy
import functools
import re

import torch as t
from torch import Tensor, nn

from utils.checks.ch03_reference import expected_state_names, model_config, quietly
from utils.checks.core import (
    Mistake, NotImplementedYet, assert_matches, call_learner, checker, describe, fail, passed, quiet_warnings,
)
from utils.checks.mistakes_ch03 import INIT_MISTAKES, LOAD_MISTAKES
from utils.checks.probes import PROBE_DESCRIPTION, init_config, probe_config, probe_params, probe_run, probe_tokens
from utils.reference import model as ref
from utils.reference_model import reference_cache, reference_info, reference_params, shared_params

CHAPTER = "03_assembly"


def _named_by_name(mistakes: list[Mistake]) -> dict[str, str]:
    return {m.name: f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in mistakes}

# ------------------------------------------------------------------------------------------ init_weights

SENTINEL = 3.0  # every parameter starts here, so a parameter init_weights forgets is visible


def _kind(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "w":
        return "LayerNorm gain"
    if leaf == "b" or leaf.startswith("b_"):
        return "bias"
    return "weight"


def _residual_writer(name: str) -> bool:
    return name.endswith("attn.W_O") or name.endswith("mlp.W_out")


def _problem(name: str, value: Tensor, cfg) -> str:
    """'' if `value` is what GPT-2's initialisation gives parameter `name`, else what is wrong with it."""
    kind = _kind(name)
    if bool((value == SENTINEL).all()):
        return f"`{name}` was not initialised (it still holds the value the check put there)"
    if kind == "LayerNorm gain":
        return "" if bool((value == 1).all()) else f"LayerNorm gain `{name}` should be all ones (mean {value.mean().item():.3g})"
    if kind == "bias":
        return "" if bool((value == 0).all()) else f"bias `{name}` should be all zeros (max |value| {value.abs().max().item():.3g})"
    mean, std = value.mean().item(), value.std().item()
    allowed = [cfg.init_range] + ([cfg.init_range / (2 * cfg.n_layers) ** 0.5] if _residual_writer(name) else [])
    if not any(abs(std / s - 1) < 0.1 for s in allowed):
        return f"weight `{name}` has std {std:.3g}, expected init_range = {cfg.init_range}"
    if abs(mean) > 0.1 * std:
        return f"weight `{name}` has mean {mean:.3g} and std {std:.3g}, expected mean 0"
    tail = (value.abs() > 2 * std).double().mean().item()
    if not 0.03 < tail < 0.065:  # a normal distribution puts 4.6 % of its values beyond 2 std; a uniform one none
        return f"weight `{name}` is not normally distributed ({100 * tail:.1f} % of values beyond 2 std, expected about 4.6 %)"
    return ""


def _sentinel_model(cfg, Cls: type = ref.EducationalTransformer) -> nn.Module:
    with t.random.fork_rng(devices=[]), quiet_warnings():
        model = Cls(cfg)
    with t.no_grad():
        for param in model.parameters():
            param.fill_(SENTINEL)
    return model


def _signature(model: nn.Module) -> list[tuple[float, float, int]]:
    return [(p.detach().mean().item(), p.detach().std().item() if p.numel() > 1 else 0.0, p.numel())
            for p in model.parameters()]


def _same_signature(a: list[tuple[float, float, int]], b: list[tuple[float, float, int]]) -> bool:
    """Equal up to sampling noise: means and stds within 6 standard errors of each other."""
    return len(a) == len(b) and all(abs(ma - mb) <= 6 * sb / n ** 0.5 + 1e-6 and abs(sa - sb) <= 6 * sb / (2 * n) ** 0.5 + 1e-6
                                    for (ma, sa, n), (mb, sb, _) in zip(a, b))


def _model_class(EducationalTransformer, cfg) -> tuple[type, str]:
    """The learner's model class when it builds a model with TransformerLens's names (so that an init_weights that
    recognises the learner's own LayerNorm by isinstance sees it), else the reference's, and why."""
    if EducationalTransformer is None:
        return ref.EducationalTransformer, (" The check built its model from the course's reference classes, so an "
                                            "`isinstance(m, LayerNorm)` test with your own LayerNorm matches none of "
                                            "its modules: pass your model class too, `checks.init_weights(init_weights, "
                                            "EducationalTransformer)`, or tell the parameters apart by name.")
    if not isinstance(EducationalTransformer, type) or not issubclass(EducationalTransformer, nn.Module):
        fail(f"Pass your model class as the second argument, e.g. checks.init_weights(init_weights, EducationalTransformer); "
             f"got {describe(EducationalTransformer)}.")
    try:
        names = set(_sentinel_model(cfg, EducationalTransformer).state_dict())
    except Exception as exc:  # a model that cannot be built cannot be initialised: the reference's is used
        return ref.EducationalTransformer, (f" (Your EducationalTransformer(cfg) raised {type(exc).__name__}, so the "
                                            "check used the course's reference model.)")
    if names != set(expected_state_names(cfg.n_layers)):
        return ref.EducationalTransformer, (" (Your EducationalTransformer's parameter names differ from "
                                            "TransformerLens's, so the check used the course's reference model.)")
    return EducationalTransformer, ""


@checker("init_weights", INIT_MISTAKES, chapter=CHAPTER)
def init_weights(init_weights_fn, EducationalTransformer: type | None = None) -> None:
    """Statistics of every initialised parameter: weights N(0, init_range^2), biases 0, LayerNorm gains 1, each
    initialised in place (the same Parameter objects: optimisers and hooks hold references to them). On a
    2-layer model of d_model 128 (`probes.init_config`), built from the learner's `EducationalTransformer` when
    given: the statistics are the same at any size, and GPT-2's would take 163M random draws per model."""
    if not callable(init_weights_fn) or isinstance(init_weights_fn, type):
        fail(f"Pass the function itself, e.g. checks.init_weights(init_weights); got {describe(init_weights_fn)}.")
    cfg = init_config()
    Cls, built_from = _model_class(EducationalTransformer, cfg)
    model = _sentinel_model(cfg, Cls)
    names_before = list(model.state_dict())
    objects_before = dict(model.named_parameters())
    t.manual_seed(0)  # the same stream as each catalogued mistake's replay below
    try:
        call_learner("init_weights", init_weights_fn, model, context="a model whose parameters all hold 3.0")
    except AssertionError as exc:
        if "leaf Variable that requires grad" in str(exc):
            fail(f"{exc}\nUse `nn.init.normal_` / `zeros_` / `ones_` (or wrap the loop in `with t.no_grad():`).")
        raise
    if list(model.state_dict()) != names_before:
        fail("init_weights changed the model's parameter names: re-initialise the existing parameters in place.")
    replaced = [name for name, param in model.named_parameters() if param is not objects_before[name]]
    if replaced:
        fail(f"init_weights replaces the parameter objects (`{replaced[0]}` is a new nn.Parameter"
             f"{f', and {len(replaced) - 1} more' if len(replaced) > 1 else ''}): initialise in place with nn.init.*_ "
             "(or .data / .copy_ under t.no_grad()) so that optimisers and hooks keep their references."
             + _named_by_name(INIT_MISTAKES)["parameters_replaced"])
    for i in range(cfg.n_layers):
        if not bool(t.isneginf(model.blocks[i].attn.IGNORE)):
            fail(f"init_weights changed the buffer `blocks.{i}.attn.IGNORE`: initialise parameters only (`model.named_parameters()`).")
    problems = [p for p in (_problem(n, v.detach(), cfg) for n, v in model.named_parameters()) if p]
    if problems:
        learner = _signature(model)
        named = ""
        for mistake in INIT_MISTAKES:
            wrong = _sentinel_model(cfg, Cls)
            with t.random.fork_rng(devices=[]):
                t.manual_seed(0)
                quietly(mistake.impl, wrong)
            if _same_signature(learner, _signature(wrong)):
                named = f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
                break
        more = f" ({len(problems) - 1} more parameters are wrong)" if len(problems) > 1 else ""
        gains_left = any(_kind(n) == "LayerNorm gain" and bool((v == SENTINEL).all()) for n, v in model.named_parameters())
        fail(f"init_weights: {problems[0]}{more}.{named}{built_from if gains_left or Cls is not ref.EducationalTransformer else ''}")
    passed(f"init_weights gives GPT-2's initialisation to all {len(list(model.parameters()))} parameters")

# ------------------------------------------------------------------------------------------- load_weights


@functools.cache
def _blank_template(kind: str) -> ref.EducationalTransformer:
    """A freshly initialised model at the reference's size, built once per kind: copying it is cheaper than
    drawing 163M random numbers again. Never handed out: learners get `copy.deepcopy` of it."""
    with t.random.fork_rng(devices=[]):
        t.manual_seed(0)
        return ref.EducationalTransformer(model_config()).eval()


def _probe_blank() -> ref.EducationalTransformer:
    with t.random.fork_rng(devices=[]):
        t.manual_seed(0)
        return ref.EducationalTransformer(probe_config()).eval()


def _load_outcome(load_gpt2_weights) -> dict[str, Tensor] | Exception:
    """The state a loader leaves in a blank probe given the probe's (untied) weights, or the error it raises."""
    model = _probe_blank()
    try:
        quietly(load_gpt2_weights, model, probe_params())
    except Exception as exc:  # matched by type and message
        return exc
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same_outcome(a, b) -> bool:
    if isinstance(a, Exception) or isinstance(b, Exception):
        return isinstance(a, Exception) and isinstance(b, Exception) and type(a) is type(b) and str(a) == str(b)
    return a.keys() == b.keys() and all(a[n].shape == b[n].shape and t.equal(a[n], b[n]) for n in a)


@functools.cache
def _load_mistake_outcomes() -> dict[str, dict[str, Tensor] | Exception]:
    """Each catalogued loading mistake's probe outcome, for those whose outcome differs from the correct loader's."""
    right = _load_outcome(ref.load_gpt2_weights)
    outcomes = {m.name: _load_outcome(m.impl) for m in LOAD_MISTAKES}
    return {name: out for name, out in outcomes.items() if not _same_outcome(out, right)}


def _load_named(load_gpt2_weights) -> str:
    """' This matches a known mistake, …' when the learner's loader leaves the probe as a catalogued mistake does."""
    learner, outcomes = _load_outcome(load_gpt2_weights), _load_mistake_outcomes()
    return next((f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in LOAD_MISTAKES
                 if m.name in outcomes and _same_outcome(learner, outcomes[m.name])), "")


def _same_logits(load_gpt2_weights, model: nn.Module, tokens: Tensor, expected: Tensor, context: str) -> None:
    """The loaded model's logits are the expected ones; if not, the catalogued loading mistake it matches, if any."""
    with t.no_grad():
        out = model(tokens)
    try:
        assert_matches(out, expected, "load_gpt2_weights: the loaded model's logits", context=context,
                       hint="Copy every tensor to the parameter of the same name, unchanged.")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{_load_named(load_gpt2_weights)}") from None


@checker("load_weights", LOAD_MISTAKES, chapter=CHAPTER)
def load_weights(load_gpt2_weights) -> None:
    """The reference's weights load and give its logits, and so do a probe's untied weights (real GPT-2's
    W_U = W_E.T and b_U = 0 would hide a loader that ties or drops them); a missing, an unexpected or a misshapen
    weight is an error that names it; the caller's dict is left alone."""
    if not callable(load_gpt2_weights) or isinstance(load_gpt2_weights, type):
        fail(f"Pass the function itself, e.g. checks.load_weights(load_gpt2_weights); got {describe(load_gpt2_weights)}.")
    hint = _named_by_name(LOAD_MISTAKES)
    what = "load_gpt2_weights"
    cfg = model_config()
    tokens, logits, _ = reference_cache()
    shared = shared_params()
    params = reference_params()  # the learner's own copy; `shared` is what it must still equal afterwards
    model = copy.deepcopy(_blank_template(reference_info().kind))
    try:
        returned = call_learner(what, load_gpt2_weights, model, params, context="GPT-2's complete weights")
    except AssertionError as exc:
        extra = hint["buffers_not_handled"] if "IGNORE" in str(exc) else ""
        raise AssertionError(f"{exc}{extra}") from exc.__cause__
    if returned is not model:
        got = "None" if returned is None else f"{describe(returned)}, not the model it was given"
        named = hint["model_not_returned"] if returned is None else ""
        fail(f"{what} returned {got}: copy the weights into `model` and return that model, as the exercise asks.{named}")
    if set(params) != set(shared) or any(not t.equal(params[n], shared[n]) for n in shared):
        fail(f"{what} modified the caller's `params` dict.{hint['callers_dict_modified']}")
    for i in range(cfg.n_layers):
        if not bool(t.isneginf(model.blocks[i].attn.IGNORE)):
            fail(f"{what} changed `blocks.{i}.attn.IGNORE`: buffers keep the model's own values.")
    _same_logits(load_gpt2_weights, model, tokens, logits, "the reference prompt")
    del model, params  # 650 MB at GPT-2 size: free them before the probes

    probe_model = _probe_blank()
    call_learner(what, load_gpt2_weights, probe_model, probe_params(), context=f"the weights of {PROBE_DESCRIPTION}")
    _same_logits(load_gpt2_weights, probe_model, probe_tokens(), probe_run()[0], f"weights of {PROBE_DESCRIPTION}")
    # Several names at once: the exercise asks for an error that lists EVERY missing and unexpected name.
    dropped = ["blocks.0.attn.b_K", "blocks.1.mlp.W_in", "ln_final.w"]
    extra = {"blocks.0.attn.W_X": t.zeros(1), "blocks.2.mlp.W_gate": t.zeros(1)}
    without = {n: v for n, v in probe_params().items() if n not in dropped}
    probes = [
        (f"{len(dropped)} weights missing", without, dropped,
         hint["missing_filled_from_model"] + hint["strict_false"].replace(" This matches a known mistake", " Or")),
        (f"{len(extra)} unexpected names", {**probe_params(), **extra}, list(extra), hint["unexpected_names_ignored"]),
        (f"{len(dropped)} weights missing and {len(extra)} unexpected names", {**without, **extra}, [*dropped, *extra],
         hint["unexpected_names_ignored"]),
        ("`unembed.W_U` transposed", {**probe_params(), "unembed.W_U": probe_params()["unembed.W_U"].T.clone()},
         ["unembed.W_U"], " A weight of the wrong shape must be an error too (`load_state_dict` checks shapes)."),
    ]
    # Every probe runs before a verdict: accepting bad weights silently is the more basic bug, so it is reported
    # before an error that names too few keys (a loader that ignores unexpected names may also stop at the
    # first missing one).
    accepted, incomplete = [], []
    for label, bad, keys, why in probes:
        try:
            quietly(load_gpt2_weights, _probe_blank(), bad)
        except NotImplementedError as exc:
            raise NotImplementedYet(f"{what} is not implemented yet.") from exc
        except Exception as exc:  # the error we want: it must name every offending key
            unnamed = [key for key in keys if not re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", str(exc))]
            if unnamed:
                incomplete.append(
                    f"{what} raised {type(exc).__name__} for weights with {label}, but its message names only "
                    f"{len(keys) - len(unnamed)} of the {len(keys)} (not {', '.join(f'`{k}`' for k in unnamed)}): list every "
                    "missing and every unexpected name, so that they can all be fixed at once."
                    + (hint["first_name_only"] if len(keys) - len(unnamed) == 1 else ""))
            continue
        accepted.append(f"{what} accepted weights with {label} without an error.{why}")
    if accepted or incomplete:
        fail((accepted or incomplete)[0])
    passed(f"load_gpt2_weights loads GPT-2's weights ({reference_info().kind}) and a probe's untied weights strictly, "
           "and reproduces their logits")

