"""Checkers for chapter 08: ablations, activation patching, path patching, and circuits read from the weights, on
the course's induction model (2 layers, attention only, no LayerNorm) and on a randomly initialised copy of it."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
from collections.abc import Callable, Sequence

import torch as t
from torch import Tensor, nn

from utils.checks.core import Mistake, assert_matches, call_learner, checker, close, describe, fail, passed
from utils.checks.mistakes_ch08 import (ABLATION_MISTAKES, COMPOSITION_MISTAKES, COPYING_MISTAKES,
                                        KEY_DECOMPOSITION_MISTAKES, PATCH_HEADS_MISTAKES, PATCH_RESIDUAL_MISTAKES,
                                        PATH_MISTAKES, POSITIONAL_MISTAKES)
from utils.induction import build_induction_model, induction_config, load_induction_model, repeated_tokens
from utils.reference import circuits as ref

CHAPTER = "08_circuits"
FLOATS = (t.float32, t.float64)


# ------------------------------------------------------------------------------------------------- inputs


@contextlib.contextmanager
def _one_thread():
    """The induction model's ops are tiny: on a busy machine two threads fighting over them are far slower."""
    threads = t.get_num_threads()
    t.set_num_threads(1)
    try:
        yield
    finally:
        t.set_num_threads(threads)


@functools.cache
def _random_model(n_layers: int = 2) -> nn.Module:
    """The induction model's architecture with seeded random weights (no circuit): a second, unrelated input."""
    with t.random.fork_rng(devices=[]):
        t.manual_seed(8)
        cfg = induction_config()
        cfg.n_layers = n_layers
        model = build_induction_model(cfg=cfg)
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


@functools.cache
def _patching_case(batch: int, repeat_len: int, prefix_len: int, seed: int):
    """Prompts and the normalised metric of the induction model on them (computed once per input)."""
    model = load_induction_model()
    prompts = ref.induction_patching_prompts(batch, repeat_len, prefix_len, seed)
    with t.no_grad():
        clean, corrupted = model(prompts["clean"]), model(prompts["corrupted"])
        metric = ref.normalised_metric(clean, corrupted, prompts["answers"], prompts["distractors"])
    # what the metric is, as data: the trusted grader's sandbox rebuilds it from this (utils/grading/trusted.py)
    metric.probe_spec = {"metric": "normalised_logit_diff", "answers": prompts["answers"],
                         "distractors": prompts["distractors"],
                         "clean": ref.logit_diff(clean, prompts["answers"], prompts["distractors"]),
                         "corrupted": ref.logit_diff(corrupted, prompts["answers"], prompts["distractors"])}
    return prompts, metric


# ---------------------------------------------------------------------------------------------- comparison


def _as_float(out, expected: Tensor, what: str, context: str) -> Tensor:
    """The dtype policy: float32 expected, float64 accepted (cast); a Python number becomes a 0-d tensor."""
    if isinstance(out, (float, int)) and not isinstance(out, bool) and expected.dim() == 0:
        out = t.tensor(float(out))
    if not isinstance(out, Tensor):
        fail(f"{what}: returned {describe(out)} on {context}, expected a float tensor of shape {tuple(expected.shape)}.")
    out = out.detach().cpu()
    if out.dtype not in FLOATS:
        fail(f"{what}: returned dtype {out.dtype} on {context}; expected floating point (float32, or float64).")
    return out.to(expected.dtype)


def _mistake_outputs(mistakes: Sequence[Mistake], *args) -> list[tuple[Mistake, object]]:
    results = []
    for mistake in mistakes:
        try:
            with contextlib.redirect_stderr(io.StringIO()), t.no_grad():
                out = mistake.impl(*args)
        except Exception:  # a wrong variant that cannot run on this input matches nothing
            continue
        if isinstance(args[0], nn.Module):
            args[0].reset_hooks()  # a hook-leaking mistake must not leak into the next one
        results.append((mistake, out))
    return results


def _check_model_untouched(model: nn.Module, state: dict[str, Tensor], what: str, mistakes: Sequence[Mistake]) -> None:
    if any(len(m._forward_hooks) or len(m._forward_pre_hooks) for m in model.modules()):
        hint = next((m.hint for m in mistakes if m.name == "hooks_left_on_the_model"), "remove them (run_with_hooks).")
        fail(f"{what} left hooks on the model: every later forward pass is changed too. {hint}")
    for name, value in model.state_dict().items():
        if not t.equal(value, state[name]):
            fail(f"{what} changed the model's parameter {name}: patch activations through hooks, never weights.")


def _run_checked(fn: Callable, what: str, model: nn.Module, args: tuple, context: str) -> object:
    """Call the learner on a private copy of the model and copies of the tensors; check nothing was changed."""
    mine = copy.deepcopy(model)
    state = {k: v.clone() for k, v in mine.state_dict().items()}
    given = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
    with t.no_grad():
        out = call_learner(what, fn, mine, *given, context=context)
    _check_model_untouched(mine, state, what, MISTAKES_OF.get(what, ()))
    for before, after in zip(args, given):
        if isinstance(before, Tensor) and not t.equal(before, after):
            fail(f"{what} modified one of its input tensors in place: clone before editing.")
    return out


def _compare(out, expected: Tensor, what: str, context: str, mistakes: Sequence[Mistake], model, args) -> None:
    out = _as_float(out, expected, what, context)
    assert_matches(out, expected, what, context=context,
                   mistakes=lambda: _mistake_outputs(mistakes, copy.deepcopy(model), *args))


# ----------------------------------------------------------------------------------------------- checkers


ABLATION_CASES = [(0, 1, "zero"), (0, 0, "mean"), (1, 1, "resample"), (0, 2, "mean"), (1, 0, "resample"),
                  (1, 1, "zero"), (0, 2, "resample"), (1, 1, "mean")]


@checker("ablation", ABLATION_MISTAKES, chapter=CHAPTER)
def ablation(ablated_loss_increase: Callable) -> None:
    """Zero, mean and resample ablation of single heads of the induction model, on two inputs."""
    model = load_induction_model()
    with _one_thread():
        for batch, repeat_len, seed in ((6, 10, 31), (4, 14, 32)):
            tokens, reference = repeated_tokens(batch, repeat_len, seed), repeated_tokens(batch, repeat_len, seed + 100)
            for layer, head, method in ABLATION_CASES:
                context = (f"L{layer}H{head}, method {method!r}, the induction model on [BOS, r, r] "
                           f"(batch {batch}, repeat_len {repeat_len})")
                args = (tokens, repeat_len, layer, head, method, reference)
                out = _run_checked(ablated_loss_increase, "ablated_loss_increase", model, args, context)
                with t.no_grad():
                    expected = ref.ablated_loss_increase(model, *args)
                _compare(out, expected, "ablated_loss_increase", context, ABLATION_MISTAKES, model, args)
    passed(f"ablated_loss_increase matches the reference: zero, mean and resample, {2 * len(ABLATION_CASES)} cases")


def _check_patching(fn: Callable, what: str, reference: Callable, mistakes: Sequence[Mistake]) -> int:
    model = load_induction_model()
    cases = ((6, 10, 6, 41), (4, 12, 5, 42))
    with _one_thread():
        for batch, repeat_len, prefix_len, seed in cases:
            prompts, metric = _patching_case(batch, repeat_len, prefix_len, seed)
            context = (f"the induction model, clean [BOS, r, r[:{prefix_len}]] vs corrupted (r[{prefix_len - 1}] "
                       f"changed in the first copy), batch {batch}, repeat_len {repeat_len}")
            args = (prompts["clean"], prompts["corrupted"], metric)
            out = _run_checked(fn, what, model, args, context)
            with t.no_grad():
                expected = reference(model, *args)
            _compare(out, expected, what, context, mistakes, model, args)
    return len(cases)


@checker("patch_residual", PATCH_RESIDUAL_MISTAKES, chapter=CHAPTER)
def patch_residual(patch_residual: Callable) -> None:
    """Residual-stream patching by (layer, position) on the induction model, two prompt sets."""
    n = _check_patching(patch_residual, "patch_residual", ref.patch_residual, PATCH_RESIDUAL_MISTAKES)
    passed(f"patch_residual matches the reference on {n} prompt sets")


@checker("patch_head_outputs", PATCH_HEADS_MISTAKES, chapter=CHAPTER)
def patch_head_outputs(patch_head_outputs: Callable) -> None:
    """Head-output (z) patching by (layer, head) on the induction model, two prompt sets."""
    n = _check_patching(patch_head_outputs, "patch_head_outputs", ref.patch_head_outputs, PATCH_HEADS_MISTAKES)
    passed(f"patch_head_outputs matches the reference on {n} prompt sets")


PATH_CASES = [((0, 2), [0, 1]), ((0, 1), [0, 1]), ((0, 0), [1]), ((0, 1), [0])]  # L0H2 first: its V path tells
# "patched the whole head" from "patched every receiver's keys", which agree for a head with no V or Q path


@checker("path_patch_keys", PATH_MISTAKES, chapter=CHAPTER)
def path_patch_keys(path_patch_keys: Callable) -> None:
    """Sender head -> receiver keys path patching on the induction model, four (sender, receivers) pairs."""
    model = load_induction_model()
    with _one_thread():
        prompts, metric = _patching_case(6, 10, 6, 41)
        for sender, receivers in PATH_CASES:
            context = f"sender L{sender[0]}H{sender[1]} -> keys of layer-1 heads {receivers} (induction model, batch 6)"
            args = (prompts["clean"], prompts["corrupted"], metric, sender, 1, list(receivers))
            out = _run_checked(path_patch_keys, "path_patch_keys", model, args, context)
            with t.no_grad():
                expected = ref.path_patch_keys(model, *args)
            _compare(out, expected, "path_patch_keys", context, PATH_MISTAKES, model, args)
    passed(f"path_patch_keys matches the reference on {len(PATH_CASES)} sender/receiver pairs")


def _weights_cases(n_layers_random: int = 2):
    return [(load_induction_model(), "the induction model"),
            (_random_model(n_layers_random), "a randomly initialised model of the same shape")]


@checker("copying_scores", COPYING_MISTAKES, chapter=CHAPTER)
def copying_scores(copying_scores: Callable) -> None:
    """OV copying scores of both layers of the induction model and of a random model."""
    count = 0
    for model, name in _weights_cases():
        for layer in range(model.cfg.n_layers):
            context = f"layer {layer} of {name}"
            out = _run_checked(copying_scores, "copying_scores", model, (layer,), context)
            _compare(out, ref.copying_scores(model, layer), "copying_scores", context, COPYING_MISTAKES, model, (layer,))
            count += 1
    passed(f"copying_scores matches the reference on {count} layers")


@checker("positional_patterns", POSITIONAL_MISTAKES, chapter=CHAPTER)
def positional_patterns(positional_patterns: Callable) -> None:
    """Positional QK patterns of both layers of the induction model and of a random model."""
    count = 0
    for model, name in _weights_cases():
        for layer in range(model.cfg.n_layers):
            context = f"layer {layer} of {name}"
            out = _run_checked(positional_patterns, "positional_patterns", model, (layer,), context)
            _compare(out, ref.positional_patterns(model, layer), "positional_patterns", context, POSITIONAL_MISTAKES,
                     model, (layer,))
            count += 1
    passed(f"positional_patterns matches the reference on {count} layers")


@checker("composition_scores", COMPOSITION_MISTAKES, chapter=CHAPTER)
def composition_scores(composition_scores: Callable) -> None:
    """Q/K/V composition tables on the induction model (layers 0 -> 1) and a random 3-layer model (0 -> 2, 1 -> 2)."""
    cases = [(load_induction_model(), 0, 1, "the induction model"),
             (_random_model(3), 0, 2, "a random 3-layer model"), (_random_model(3), 1, 2, "a random 3-layer model")]
    for model, early, late, name in cases:
        context = f"layers {early} -> {late} of {name}"
        out = _run_checked(composition_scores, "composition_scores", model, (early, late), context)
        expected = ref.composition_scores(model, early, late)
        if not isinstance(out, dict):
            fail(f"composition_scores: returned {describe(out)} on {context}, expected a dict with keys ['Q', 'K', 'V'].")
        if sorted(out) != ["K", "Q", "V"]:
            fail(f"composition_scores: keys {sorted(out)} on {context}, expected exactly 'Q', 'K' and 'V'.")
        outputs: list = []

        def for_mode(mode: str, model=model, early=early, late=late):
            if not outputs:
                outputs.append(_mistake_outputs(COMPOSITION_MISTAKES, model, early, late))
            return [(m, o[mode]) for m, o in outputs[0] if isinstance(o, dict) and mode in o]

        for mode in ("Q", "K", "V"):
            got = _as_float(out[mode], expected[mode], f"composition_scores[{mode!r}]", context)
            assert_matches(got, expected[mode], f"composition_scores[{mode!r}]", context=context,
                           mistakes=lambda mode=mode, f=for_mode: f(mode))
    passed(f"composition_scores matches the reference on {len(cases)} pairs of layers")


KEY_CASES = [(0, 10, 51, [0, 1, 2, 3]), (1, 12, 52, [1, 3])]  # (model: 0 induction / 1 random, repeat_len, seed, heads)


def _key_components(model: nn.Module) -> list[str]:
    return ["embed", "pos_embed", *(f"L0H{h}" for h in range(model.cfg.n_heads)), "L0 b_O", "b_K"]


def _key_hint(out: dict, expected: dict, key: str) -> str:
    """Where to look: whether the learner's shares still add up to the head's mean score on the stripe."""
    try:
        total = sum(float(v) for v in out.values())
    except (TypeError, ValueError, RuntimeError):  # not every share is one number: the message says so already
        return ""
    score = sum(expected.values())
    adds_up = close(t.tensor(total), t.tensor(score))
    if key.startswith("L0H"):
        step = f"that {key!r} is head {key[3:]}'s own output, hook_z[:, :, {key[3:]}] @ W_O[{key[3:]}]"
    elif key in ("embed", "pos_embed"):
        step = f"that {key!r} is cache['hook_{key}']"
    elif key == "L0 b_O":
        step = "that 'L0 b_O' is layer 0's b_O, the same at every position"
    else:
        step = "that 'b_K' meets the query directly: (attn.b_K[head] * q).sum(-1)"
    return (f"Your shares add up to {total:.4f} and the head's mean score on the stripe is {score:.4f}"
            + (f", so the total is right and the split between components is not: check {step}." if adds_up else
               ": compute each share as ((part[:, key_pos] @ attn.W_K[head]) * q).sum(-1).mean() / sqrt(d_head), "
               "with q the head's own query (hook_q) at pos and the components at key_pos = pos - (repeat_len - 1)."))


def _same_shares(out: dict, other, names: list[str]) -> bool:
    try:
        return isinstance(other, dict) and all(close(t.tensor(float(out[k])), t.tensor(float(other[k]))) for k in names)
    except (KeyError, TypeError, ValueError, RuntimeError):
        return False


KEY_BATCH = 3  # neither sqrt(d_head) (4 on the induction model) nor repeat_len: each scale mistake stays distinct


@checker("key_decomposition", KEY_DECOMPOSITION_MISTAKES, chapter=CHAPTER)
def key_decomposition(key_score_decomposition: Callable) -> None:
    """Each key component's share of a layer-1 head's score on the induction stripe, on the induction model and on
    a random model; the components in the stated order, and their shares adding up to the head's mean score."""
    what = "key_score_decomposition"
    count = 0
    with _one_thread():
        for which, repeat_len, seed, heads in KEY_CASES:
            model = load_induction_model() if which == 0 else _random_model(2)
            name = "the induction model" if which == 0 else "a randomly initialised model of the same shape"
            tokens = repeated_tokens(KEY_BATCH, repeat_len, seed)
            with t.no_grad():
                _, cache = model.run_with_cache(tokens)
            names = _key_components(model)
            for head in heads:
                context = f"L1H{head} of {name} on [BOS, r, r] (batch {KEY_BATCH}, repeat_len {repeat_len})"
                mine = copy.deepcopy(model)
                with t.no_grad():
                    _, fresh = mine.run_with_cache(tokens)
                    out = call_learner(what, key_score_decomposition, mine, fresh, 1, head, repeat_len, context=context)
                if not isinstance(out, dict):
                    fail(f"{what}: returned {describe(out)} on {context}, expected a dict of component name -> float.")
                if list(out) != names:
                    missing = [n for n in names if n not in out]
                    extra = [n for n in out if n not in names]
                    detail = (f"missing {missing}" if missing else "") + ("; " if missing and extra else "") + (
                        f"unexpected {extra}" if extra else "")
                    fail(f"{what}: keys {list(out)} on {context}; expected exactly {names}, in that order"
                         + (f" ({detail})" if detail else " (the order differs)") + ". Every component that writes "
                         "into layer 1's residual stream has a share, the biases included, so that they add up to the score.")
                with t.no_grad():
                    expected = ref.key_score_decomposition(model, cache, 1, head, repeat_len)
                outputs: list = []

                def for_key(key: str, model=model, cache=cache, head=head, repeat_len=repeat_len, out=out):
                    """The mistakes whose every share equals the learner's (named only on a whole match)."""
                    if not outputs:
                        outputs.append(_mistake_outputs(KEY_DECOMPOSITION_MISTAKES, model, cache, 1, head, repeat_len))
                    return [(m, t.tensor(float(o[key]))) for m, o in outputs[0] if _same_shares(out, o, names)]

                for key in names:
                    want = t.tensor(float(expected[key]))
                    got = _as_float(out[key], want, f"{what}[{key!r}]", context)
                    assert_matches(got, want, f"{what}[{key!r}]", context=context,
                                   mistakes=lambda key=key, f=for_key: f(key), hint=_key_hint(out, expected, key))
                count += 1
    passed(f"key_score_decomposition matches the reference on {count} heads: every component's share, in order")


MISTAKES_OF = {"ablated_loss_increase": ABLATION_MISTAKES, "patch_residual": PATCH_RESIDUAL_MISTAKES,
               "patch_head_outputs": PATCH_HEADS_MISTAKES, "path_patch_keys": PATH_MISTAKES}
