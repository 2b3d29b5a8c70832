"""Checkers for chapter 03: the assembled model, its initialisation, its hooks, loading GPT-2's weights, the loss
and greedy generation, against the reference GPT-2 (a TransformerLens `TransformerBridge`) and small probes.

At GPT-2 size a model holds 163M numbers, so a check builds the learner's model at the reference's size only where
the reference's weights prove something (the model's logits, one weight-loading round trip). Structure (names,
hooks, initialisation statistics) and the mistakes that real GPT-2's tied W_U = W_E.T and zero b_U would hide are
checked on a probe: a small model with random, untied weights (`utils.checks.probes`). When the model's logits
differ, `first_divergence` names the first activation that differs (`utils.checks.ch03_reference`).
"""

from __future__ import annotations

import copy
import functools

import torch as t
from torch import Tensor, nn

from utils.checks.ch03_reference import (
    classic_hook_names, component_hint, expected_state_names, first_divergence, model_config, named_mistake,
    names_list, quietly, reference_model, reference_run, replay, same_activation, token_cases,
)
from utils.checks.core import (
    Mistake, NotImplementedYet, assert_matches, assert_unchanged, call_learner, check_names, close, construct,
    checker, describe, diff_report, fail, load_params, passed,
)
from utils.checks.mistakes_ch03 import (
    GREEDY_MISTAKES, HOOKS_MISTAKES, INIT_MISTAKES, LOAD_MISTAKES, LOSS_MISTAKES, TRANSFORMER_MISTAKES,
)
from utils.checks.probes import (
    PROBE_DESCRIPTION, PROBE_FIELDS, init_config, probe_config, probe_params, probe_reference, probe_run, probe_tokens,
)
from utils.reference import model as ref
from utils.reference_model import reference_cache, reference_gpt2, reference_info, reference_params, shared_params

CHAPTER = "03_assembly"

# -------------------------------------------------------------------------------------------- transformer


def _require_module_class(Cls, call: str) -> None:
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. {call}; got {describe(Cls)}.")


def _loaded(Cls: type, cfg, params, what: str) -> nn.Module:
    """`Cls(cfg)` with its names checked and `params` copied in (`load_state_dict` copies: `params` may be shared)."""
    model = construct(Cls, cfg, what)
    check_names(model, expected_state_names(cfg.n_layers), what)
    load_params(model, params, what)
    return model.eval()


def _probe_outcome(Cls: type) -> Tensor | Exception:
    """What `Cls` at the probe's size, with the probe's weights, returns on the probe's tokens (or what it raises)."""
    try:
        model = quietly(_loaded, Cls, probe_config(), probe_params(), Cls.__name__)
    except Exception as exc:  # a model that cannot even be built is matched by its error
        return exc
    return replay(model, probe_tokens())


@functools.cache
def _mistake_probe_outcomes() -> dict[str, Tensor | Exception]:
    """Each catalogued model mistake's outcome on the probe: computed once, compared, never handed out."""
    return {m.name: _probe_outcome(m.impl) for m in TRANSFORMER_MISTAKES}


def _logits_problem(out, expected: Tensor) -> str:
    """'' when `out` is the expected logits, else what is wrong with them."""
    if isinstance(out, Tensor) and out.shape == expected.shape and out.dtype == expected.dtype and close(out, expected):
        return ""
    if not isinstance(out, Tensor):
        return f"returned {describe(out)}, expected logits of shape {tuple(expected.shape)}"
    if out.shape != expected.shape:
        return f"output shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    if out.dtype != expected.dtype:
        return f"output dtype {out.dtype}, expected {expected.dtype}"
    return f"logits differ from the reference's, {diff_report(out, expected)}"


@checker("transformer", TRANSFORMER_MISTAKES, chapter=CHAPTER)
def transformer(EducationalTransformer: type) -> None:
    """The whole model with the reference's weights gives the reference's logits, and so does a probe with untied
    weights (real GPT-2's W_U = W_E.T and b_U = 0 would hide an unembedding with W_E.T or without b_U); if not,
    where it first differs and which catalogued mistake it matches (told apart on the probe)."""
    _require_module_class(EducationalTransformer, "checks.transformer(EducationalTransformer)")
    what = "EducationalTransformer"
    full = _loaded(EducationalTransformer, model_config(), shared_params(), what)
    probe = functools.cache(lambda: _loaded(EducationalTransformer, probe_config(), probe_params(), what))
    probe_logits, probe_want = probe_run()
    cases = [(label, tokens, lambda: full, reference_run(tokens)[0], None) for label, tokens in token_cases()]
    cases.append((f"2 sequences of length 9 on {PROBE_DESCRIPTION}", probe_tokens(), probe, probe_logits, probe_want))

    def named() -> str:
        outcomes = _mistake_probe_outcomes()
        return named_mistake(TRANSFORMER_MISTAKES, _probe_outcome(EducationalTransformer), lambda m: outcomes[m.name])

    for label, tokens, model_for, expected, want in cases:
        model = model_for()
        inputs = tokens.clone()
        try:
            with t.no_grad():
                out = call_learner(f"{what}.forward", model, inputs, context=label)
        except NotImplementedYet:
            raise
        except AssertionError as exc:
            _, where = first_divergence(model, tokens, want)
            fail(f"{exc}{where}{named()}")
        assert_unchanged([tokens], [inputs], f"{what}.forward", ["tokens"])
        problem = _logits_problem(out, expected)
        if problem:
            _, where = first_divergence(model, tokens, want)
            fail(f"{what}: {problem} on {label}.{where}{named()}")
    passed(f"EducationalTransformer gives the reference's logits ({reference_info().kind}) on {len(cases) - 1} inputs, "
           "and a probe's with untied weights")

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


def _sentinel_model(cfg) -> ref.EducationalTransformer:
    model = ref.EducationalTransformer(cfg)
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


@checker("init_weights", INIT_MISTAKES, chapter=CHAPTER)
def init_weights(init_weights_fn) -> None:
    """Statistics of every initialised parameter: weights N(0, init_range^2), biases 0, LayerNorm gains 1. On a
    2-layer model of d_model 128 (`probes.init_config`): the statistics are the same at any size, and GPT-2's
    would take 163M random draws per model."""
    if not callable(init_weights_fn) or isinstance(init_weights_fn, type):
        fail(f"Pass the function itself, e.g. checks.init_weights(init_weights); got {describe(init_weights_fn)}.")
    cfg = init_config()
    model = _sentinel_model(cfg)
    names_before = list(model.state_dict())
    t.manual_seed(0)  # the same stream as each catalogued mistake's replay below
    try:
        call_learner("init_weights", init_weights_fn, model, context="a model whose parameters all hold 3.0")
    except AssertionError as exc:
        if "leaf Variable that requires grad" in str(exc):
            fail(f"{exc}\nUse `nn.init.normal_` / `zeros_` / `ones_` (or wrap the loop in `with t.no_grad():`).")
        raise
    if list(model.state_dict()) != names_before:
        fail("init_weights changed the model's parameter names: re-initialise the existing parameters in place.")
    for i in range(cfg.n_layers):
        if not bool(t.isneginf(model.blocks[i].attn.IGNORE)):
            fail(f"init_weights changed the buffer `blocks.{i}.attn.IGNORE`: initialise parameters only (`model.named_parameters()`).")
    problems = [p for p in (_problem(n, v.detach(), cfg) for n, v in model.named_parameters()) if p]
    if problems:
        learner = _signature(model)
        named = ""
        for mistake in INIT_MISTAKES:
            wrong = _sentinel_model(cfg)
            with t.random.fork_rng(devices=[]):
                t.manual_seed(0)
                quietly(mistake.impl, wrong)
            if _same_signature(learner, _signature(wrong)):
                named = f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
                break
        more = f" ({len(problems) - 1} more parameters are wrong)" if len(problems) > 1 else ""
        fail(f"init_weights: {problems[0]}{more}.{named}")
    passed(f"init_weights gives GPT-2's initialisation to all {len(list(model.parameters()))} parameters")

# ------------------------------------------------------------------------------------------------ hooks


def _zero_head(z: Tensor, hook) -> Tensor:
    z = z.clone()
    z[:, :, 0] = 0.0
    return z


def _zero(x: Tensor, hook) -> Tensor:
    return t.zeros_like(x)


HOOK_PROBES = [("hook_pos_embed", _zero), ("blocks.0.attn.hook_z", _zero_head)]


@functools.cache
def _probe_with_hook(hook_name: str) -> Tensor:
    fn = dict(HOOK_PROBES)[hook_name]
    with t.no_grad():
        return probe_reference().run_with_hooks(probe_tokens(), fwd_hooks=[(hook_name, fn)])


@checker("hooks", HOOKS_MISTAKES, chapter=CHAPTER)
def hooks(EducationalTransformer: type) -> None:
    """run_with_cache gives every classic TransformerLens name with the reference's shape and value, and
    run_with_hooks can replace an activation. Hooks are structure: checked on the probe (`utils.checks.probes`),
    against the course's reference model, whose activations equal the bridge's (tests/test_ch03_assembly.py)."""
    _require_module_class(EducationalTransformer, "checks.hooks(EducationalTransformer)")
    what = "EducationalTransformer"
    cfg = probe_config()
    model = _loaded(EducationalTransformer, cfg, probe_params(), what)
    hint = _named_by_name(HOOKS_MISTAKES)
    if not callable(getattr(model, "run_with_cache", None)) or not callable(getattr(model, "run_with_hooks", None)):
        fail(f"{what} has no run_with_cache/run_with_hooks.{hint['not_a_hooked_root_module']}")
    tokens = probe_tokens()
    _, want = probe_run()
    context = f"2 sequences of length 9 on {PROBE_DESCRIPTION}"
    try:
        with t.no_grad():
            result = call_learner(f"{what}.run_with_cache", model.run_with_cache, tokens.clone(), context=context)
    except AssertionError as exc:
        extra = hint["setup_not_called"] if "hook_dict" in str(exc) else ""
        raise AssertionError(f"{exc}{extra}") from exc.__cause__
    if not isinstance(result, tuple) or len(result) != 2:
        fail(f"{what}.run_with_cache returned {describe(result)}, expected (logits, cache).")
    _, cache = result
    names = classic_hook_names(cfg.n_layers)
    missing = [n for n in names if n not in cache]
    if missing:
        which = hint["embedding_hooks_not_called"] if set(missing) & {"hook_embed", "hook_pos_embed"} else (
            " A chapter-02 component does not pass that activation through its hook point; add the `self.hook_...(...)` call.")
        fail(f"{what}: your model's cache has no {names_list(missing)} ({len(names) - len(missing)} of {len(names)} "
             f"names present).{which}")
    for name in names:
        expected = want[name]
        if tuple(cache[name].shape) != tuple(expected.shape):
            fail(f"{what}: cache[{name!r}] has shape {tuple(cache[name].shape)}, expected {tuple(expected.shape)}. {component_hint(name)}")
        if not same_activation(name, cache[name], expected):
            swapped = " " + hint["embedding_hooks_swapped"].strip() if name in ("hook_embed", "hook_pos_embed") else ""
            fail(f"{what}: cache[{name!r}] differs from the reference's, {diff_report(cache[name], expected)}. "
                 f"{component_hint(name)}{swapped}")
    for hook_name, fn in HOOK_PROBES:
        with t.no_grad():
            got = call_learner(f"{what}.run_with_hooks", model.run_with_hooks, tokens.clone(), fwd_hooks=[(hook_name, fn)],
                               context=f"a hook that replaces {hook_name}")
        which = hint["hook_return_value_ignored"] if hook_name == "hook_pos_embed" else (
            " The component that owns this hook point must use the value it returns: `x = self.hook_...(x)`.")
        assert_matches(got, _probe_with_hook(hook_name), f"{what}.run_with_hooks", context=f"a hook that replaces `{hook_name}`",
                       hint=which.strip())
    passed(f"run_with_cache gives all {len(names)} TransformerLens names of a {cfg.n_layers}-layer model with the reference's "
           "shapes and values; run_with_hooks works")


def _named_by_name(mistakes: list[Mistake]) -> dict[str, str]:
    return {m.name: f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in mistakes}

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
        call_learner(what, load_gpt2_weights, model, params, context="GPT-2's complete weights")
    except AssertionError as exc:
        extra = hint["buffers_not_handled"] if "IGNORE" in str(exc) else ""
        raise AssertionError(f"{exc}{extra}") from exc.__cause__
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
    dropped = "blocks.1.mlp.W_in"
    probes = [
        (f"`{dropped}` missing", {n: v for n, v in probe_params().items() if n != dropped}, dropped,
         hint["missing_filled_from_model"] + hint["strict_false"].replace(" This matches a known mistake", " Or")),
        ("an unexpected `blocks.0.attn.W_X`", {**probe_params(), "blocks.0.attn.W_X": t.zeros(1)}, "blocks.0.attn.W_X",
         hint["unexpected_names_ignored"]),
        ("`unembed.W_U` transposed", {**probe_params(), "unembed.W_U": probe_params()["unembed.W_U"].T.clone()},
         "unembed.W_U", " A weight of the wrong shape must be an error too (`load_state_dict` checks shapes)."),
    ]
    for label, bad, key, why in probes:
        try:
            quietly(load_gpt2_weights, _probe_blank(), bad)
        except NotImplementedError as exc:
            raise NotImplementedYet(f"{what} is not implemented yet.") from exc
        except Exception as exc:  # the error we want: it must name the offending key
            if key not in str(exc):
                fail(f"{what} raised {type(exc).__name__} for weights with {label}, but its message does not name "
                     f"`{key}`: list the missing and unexpected names so the user can fix them.")
            continue
        fail(f"{what} accepted weights with {label} without an error.{why}")
    passed(f"load_gpt2_weights loads GPT-2's weights ({reference_info().kind}) and a probe's untied weights strictly, "
           "and reproduces their logits")

# --------------------------------------------------------------------------------------------------- loss


def _reference_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    return ref.get_log_probs(logits, tokens)


@checker("loss", LOSS_MISTAKES, chapter=CHAPTER)
def loss(get_log_probs) -> None:
    """Per-token log-probabilities of the next token, on the reference logits and on probes that expose quiet mistakes."""
    if not callable(get_log_probs) or isinstance(get_log_probs, type):
        fail(f"Pass the function itself, e.g. checks.loss(get_log_probs); got {describe(get_log_probs)}.")
    tokens, logits, _ = reference_cache()
    gen = t.Generator().manual_seed(4)
    small_logits, small_tokens = 3 * t.randn(2, 6, 50, generator=gen), t.randint(0, 50, (2, 6), generator=gen)
    cases = [
        ("the reference prompt's logits", logits, tokens),
        ("a batch of 2 different rows, 6 positions, vocabulary 50", small_logits, small_tokens),
        ("logits scaled by 1000 (very confident predictions)", 1000 * small_logits, small_tokens),
    ]
    for label, case_logits, case_tokens in cases:
        args = (case_logits.clone(), case_tokens.clone())
        out = call_learner("get_log_probs", get_log_probs, *args, context=label)
        assert_unchanged([case_logits, case_tokens], args, "get_log_probs", ["logits", "tokens"])
        expected = _reference_log_probs(case_logits, case_tokens)
        assert_matches(out, expected, "get_log_probs", context=label,
                       mistakes=lambda a=args: [(m, replay(m.impl, *a)) for m in LOSS_MISTAKES],
                       hint="out[b, i] = log_softmax(logits[b, i])[tokens[b, i + 1]].")
    passed(f"get_log_probs matches the reference on {len(cases)} inputs")

# ---------------------------------------------------------------------------------------- greedy_generate


def _reference_greedy(tokens: Tensor, max_new_tokens: int) -> Tensor:
    key = (tuple(tokens.shape), tuple(tokens.flatten().tolist()))
    return _reference_greedy_cached(reference_info().kind, key, max_new_tokens).clone()


@functools.cache
def _reference_greedy_cached(kind: str, key: tuple, max_new_tokens: int) -> Tensor:
    """Greedy continuation by the reference GPT-2 itself (the bridge), token by token."""
    tokens = t.tensor(key[1]).reshape(key[0])
    bridge = reference_gpt2()  # `kind` only keys the cache: the loader is cached per requested kind
    with t.no_grad():
        for _ in range(max_new_tokens):
            tokens = t.cat([tokens, bridge(tokens)[:, -1].argmax(dim=-1, keepdim=True)], dim=-1)
    return tokens


def _probe_greedy(tokens: Tensor, max_new_tokens: int) -> Tensor:
    key = (tuple(tokens.shape), tuple(tokens.flatten().tolist()))
    return _probe_greedy_cached(key, max_new_tokens).clone()


@functools.cache
def _probe_greedy_cached(key: tuple, max_new_tokens: int) -> Tensor:
    """Greedy continuation by the course's reference code on the probe, whose predictions depend on their context
    (a random model at GPT-2 size tends to repeat one token whatever precedes it, which lets a wrong loop pass)."""
    return ref.greedy_generate(probe_reference(), t.tensor(key[1]).reshape(key[0]), max_new_tokens)


@checker("greedy_generate", GREEDY_MISTAKES, chapter=CHAPTER)
def greedy_generate(greedy_generate_fn) -> None:
    """The same tokens, row by row, as the course's reference code on the probe (so a loop that reads the wrong
    position or forgets to extend the sequence shows), then as the reference GPT-2 itself, with its weights in
    the course's model."""
    if not callable(greedy_generate_fn) or isinstance(greedy_generate_fn, type):
        fail(f"Pass the function itself, e.g. checks.greedy_generate(greedy_generate); got {describe(greedy_generate_fn)}.")
    what = "greedy_generate"
    ref_tokens, _, _ = reference_cache()
    prompts = t.randint(0, PROBE_FIELDS["d_vocab"], (2, 4), generator=t.Generator().manual_seed(5))
    on_probe = f"on {PROBE_DESCRIPTION}"
    cases = [  # (label, the model the learner gets, prompt, new tokens, the expected tokens)
        (f"a batch of 2 different prompts of length 4, 3 new tokens, {on_probe}", lambda: copy.deepcopy(probe_reference()),
         prompts, 3, lambda: _probe_greedy(prompts, 3)),
        (f"one new token, {on_probe}", lambda: copy.deepcopy(probe_reference()), prompts[:1, :3], 1,
         lambda: _probe_greedy(prompts[:1, :3], 1)),
        ("the first 6 tokens of the reference prompt, 5 new tokens", reference_model, ref_tokens[:, :6], 5,
         lambda: _reference_greedy(ref_tokens[:, :6], 5)),
    ]
    for label, model_for, prompt, n_new, expected_for in cases:
        model, expected = model_for(), expected_for()
        inputs = prompt.clone()
        t.manual_seed(0)  # the stream each catalogued mistake replays with
        try:
            out = call_learner(what, greedy_generate_fn, model, inputs, n_new, context=label)
        except NotImplementedYet:
            raise
        except AssertionError as exc:
            fail(f"{exc}{named_mistake(GREEDY_MISTAKES, exc.__cause__, lambda m: replay(m.impl, model, prompt.clone(), n_new))}")
        assert_unchanged([prompt], [inputs], what, ["tokens"])
        if isinstance(out, Tensor) and out.shape == expected.shape and out.dtype == t.long and t.equal(out, expected):
            continue  # the catalogued mistakes replay (each a generation of its own) only for a wrong answer
        named = named_mistake(GREEDY_MISTAKES, out if isinstance(out, Tensor) else None,
                              lambda m: replay(m.impl, model, prompt.clone(), n_new))
        if not isinstance(out, Tensor):
            fail(f"{what}: returned {describe(out)} on {label}, expected a Tensor of shape {tuple(expected.shape)}.")
        if out.shape != expected.shape:
            named = named or next((f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in GREEDY_MISTAKES
                                   if isinstance(o := replay(m.impl, model, prompt.clone(), n_new), Tensor) and o.shape == out.shape), "")
            fail(f"{what}: returned shape {tuple(out.shape)} on {label}, expected {tuple(expected.shape)}.{named}")
        if out.dtype != t.long:
            fail(f"{what}: returned dtype {out.dtype} on {label}, expected torch.int64 token ids.")
        row, pos = (int(i) for i in (out != expected).nonzero()[0])
        fail(f"{what}: token {pos} of row {row} is {out[row, pos].item()}, the reference's greedy choice is "
             f"{expected[row, pos].item()} on {label}.{named or ' Take argmax(dim=-1) of the last position and feed the extended sequence back in.'}")
    passed(f"greedy_generate produces the reference's tokens ({reference_info().kind}) and a probe's on {len(cases)} prompts")
