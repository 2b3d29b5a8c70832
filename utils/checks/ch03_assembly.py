"""Checkers for chapter 03: the assembled model, its hooks, the loss and greedy generation (its initialisation and
weight loading: `ch03_weights`), against the reference GPT-2 (a TransformerLens `TransformerBridge`) and small probes.

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
    check_structure, classic_hook_names, component_hint, expected_state_names, first_divergence, model_config,
    named_mistake, names_list, quietly, reference_model, reference_run, replay, same_activation, token_cases,
)
from utils.checks.core import (
    Mistake, NotImplementedYet, assert_matches, assert_unchanged, call_learner, check_names, close, construct,
    checker, describe, diff_report, dtype_problem, fail, load_params, passed,
)
from utils.checks.ids import id_dtype_problem
from utils.checks.mistakes_ch03 import (
    GREEDY_MISTAKES, HOOKS_MISTAKES, LOSS_MISTAKES, TRANSFORMER_MISTAKES,
)
from utils.checks.probes import (
    PROBE_DESCRIPTION, PROBE_FIELDS, probe_config, probe_params, probe_reference, probe_run, probe_tokens,
)
from utils.checks.requirements import check_gradients, rows_note
from utils.reference import model as ref
from utils.reference_model import reference_cache, reference_gpt2, reference_info, shared_params

CHAPTER = "03_assembly"

# -------------------------------------------------------------------------------------------- transformer


def _require_module_class(Cls, call: str) -> None:
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. {call}; got {describe(Cls)}.")


def _loaded(Cls: type, cfg, params, what: str) -> nn.Module:
    """`Cls(cfg)` with its names checked and `params` copied in (`load_state_dict` copies: `params` may be shared)."""
    model = construct(Cls, cfg, what)
    check_structure(model, params, cfg, what)
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
    if not isinstance(out, Tensor):
        return f"returned {describe(out)}, expected logits of shape {tuple(expected.shape)}"
    if out.shape != expected.shape:
        return f"output shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
    if problem := dtype_problem(out, expected):
        return f"output dtype {str(out.dtype).replace('torch.', '')}, {problem}"
    out = out.to(expected.dtype)  # float64 accepted, compared at the reference's precision
    if close(out, expected):
        return ""
    return f"logits differ from the reference's, {diff_report(out, expected)}{rows_note(out, expected)}"


def _gradients_reach_parameters(model: nn.Module, what: str) -> None:
    """Chapter 05 trains this model: a backward pass from the logits must reach every parameter (on the probe)."""
    reference = functools.partial(_loaded, ref.EducationalTransformer, probe_config(), probe_params(), "the reference")

    def check(candidate: nn.Module) -> None:
        check_gradients(candidate, reference(), (probe_tokens(),), what, "the probe")

    try:
        check(model)
    except AssertionError as exc:
        for mistake in (m for m in TRANSFORMER_MISTAKES if m.name == "forward_under_no_grad"):
            try:
                quietly(check, _loaded(mistake.impl, probe_config(), probe_params(), what))
            except AssertionError as other:
                if str(other) == str(exc):
                    raise AssertionError(f"{exc} This matches a known mistake, {mistake.name.replace('_', ' ')}: "
                                         f"{mistake.hint}") from None
        raise


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
    # Chapter 05 trains this model: a backward pass from the logits must reach every parameter.
    _gradients_reach_parameters(probe(), what)
    passed(f"EducationalTransformer gives the reference's logits ({reference_info().kind}) on {len(cases) - 1} inputs, "
           "and a probe's with untied weights")

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
    probe_logits, want = probe_run()
    context = f"2 sequences of length 9 on {PROBE_DESCRIPTION}"
    # The logits first: when they are wrong, the activations differ too, and only checks.transformer can say where.
    with t.no_grad():
        out = call_learner(f"{what}.forward", model, tokens.clone(), context=context)
    problem = _logits_problem(out, probe_logits)
    if problem:
        _, where = first_divergence(model, tokens, want)
        fail(f"{what}: {problem} on {context}, so its activations cannot be compared yet.{where} "
             "Make checks.transformer(EducationalTransformer) pass first.")
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
        owner, _, leaf = missing[0].rpartition(".")
        which = hint["embedding_hooks_not_called"] if set(missing) & {"hook_embed", "hook_pos_embed"} else (
            f" `{owner}` (your {type(model.get_submodule(owner)).__name__}) never passes a tensor through its `{leaf}`: "
            f"add the `self.{leaf}(...)` call there." if _has(model, owner) else "")
        fail(f"{what}: your model's cache has no {names_list(missing)} ({len(names) - len(missing)} of {len(names)} "
             f"names present).{which}")
    for name in names:
        expected = want[name]
        if tuple(cache[name].shape) != tuple(expected.shape):
            fail(f"{what}: cache[{name!r}] has shape {tuple(cache[name].shape)}, expected {tuple(expected.shape)}. {component_hint(name)}")
        if not same_activation(name, cache[name], expected):
            other = {"hook_embed": "hook_pos_embed", "hook_pos_embed": "hook_embed"}.get(name)
            swapped = " " + hint["embedding_hooks_swapped"].strip() if other and same_activation(name, cache[name], want[other]) else ""
            fail(f"{what}: cache[{name!r}] differs from the reference's, {diff_report(cache[name], expected)}. "
                 f"{component_hint(name)}{swapped}")
    for hook_name, fn in HOOK_PROBES:
        with t.no_grad():
            got = call_learner(f"{what}.run_with_hooks", model.run_with_hooks, tokens.clone(), fwd_hooks=[(hook_name, fn)],
                               context=f"a hook that replaces {hook_name}")
        ignored = isinstance(got, Tensor) and got.shape == probe_logits.shape and close(got, probe_logits)
        which = hint["hook_return_value_ignored"] if ignored else (
            f" The module that owns `{hook_name}` must go on with the value the hook returns: `x = self.hook_...(x)`.")
        assert_matches(got, _probe_with_hook(hook_name), f"{what}.run_with_hooks", context=f"a hook that replaces `{hook_name}`",
                       hint=which.strip())
    passed(f"run_with_cache gives all {len(names)} TransformerLens names of a {cfg.n_layers}-layer model with the reference's "
           "shapes and values; run_with_hooks works")


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


def _named_by_name(mistakes: list[Mistake]) -> dict[str, str]:
    return {m.name: f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in mistakes}

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
        if isinstance(out, Tensor) and out.shape == expected.shape and not id_dtype_problem(out, what) \
                and t.equal(out, expected):
            continue  # the catalogued mistakes replay (each a generation of its own) only for a wrong answer
        named = named_mistake(GREEDY_MISTAKES, out if isinstance(out, Tensor) else None,
                              lambda m: replay(m.impl, model, prompt.clone(), n_new))
        if not isinstance(out, Tensor):
            fail(f"{what}: returned {describe(out)} on {label}, expected a Tensor of shape {tuple(expected.shape)}.")
        if out.shape != expected.shape:
            named = named or next((f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in GREEDY_MISTAKES
                                   if isinstance(o := replay(m.impl, model, prompt.clone(), n_new), Tensor) and o.shape == out.shape), "")
            fail(f"{what}: returned shape {tuple(out.shape)} on {label}, expected {tuple(expected.shape)}.{named}")
        if problem := id_dtype_problem(out, what, f" on {label}"):
            fail(problem)
        row, pos = (int(i) for i in (out != expected).nonzero()[0])
        fail(f"{what}: token {pos} of row {row} is {out[row, pos].item()}, the reference's greedy choice is "
             f"{expected[row, pos].item()} on {label}.{named or ' Take argmax(dim=-1) of the last position and feed the extended sequence back in.'}")
    passed(f"greedy_generate produces the reference's tokens ({reference_info().kind}) and a probe's on {len(cases)} prompts")
