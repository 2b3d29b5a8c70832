"""Checkers for chapter 03: the assembled model, its initialisation, its hooks, loading GPT-2's weights, the loss
and greedy generation, all against the reference GPT-2 (a TransformerLens `TransformerBridge`).

When the model's logits differ, `first_divergence` runs the learner's model and the reference on the same tokens,
walks the activations in the order the forward pass computes them, and names the first that differs, with a hint
about the component that computes it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import re

import torch as t
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from utils.checks.core import (
    Mistake, NotImplementedYet, assert_matches, assert_unchanged, call_learner, check_names, close, construct,
    checker, describe, diff_report, fail, load_params, passed, quiet_warnings,
)
from utils.checks.mistakes_ch03 import (
    GREEDY_MISTAKES, HOOKS_MISTAKES, INIT_MISTAKES, LOAD_MISTAKES, LOSS_MISTAKES, TRANSFORMER_MISTAKES,
)
from utils.reference import model as ref
from utils.reference_model import config_fields, reference_cache, reference_gpt2, reference_info, reference_params

CHAPTER = "03_assembly"
MASKED = -1e4  # any attention score at or below this counts as masked, whatever IGNORE value a learner chose

# ------------------------------------------------------------------------------------------------ reference


def model_config() -> ref.TransformerConfig:
    return ref.TransformerConfig(**config_fields())


def expected_state_names(cfg: ref.TransformerConfig) -> list[str]:
    """GPT-2's parameter names plus each attention's IGNORE buffer."""
    return [*reference_params(), *(f"blocks.{i}.attn.IGNORE" for i in range(cfg.n_layers))]


def classic_hook_names(n_layers: int, attn_only: bool = False) -> list[str]:
    """TransformerLens's classic hook names, in the order a forward pass computes them."""
    names = ["hook_embed", "hook_pos_embed"]
    for i in range(n_layers):
        block = f"blocks.{i}"
        names += [f"{block}.hook_resid_pre", f"{block}.ln1.hook_scale", f"{block}.ln1.hook_normalized",
                  *(f"{block}.attn.hook_{x}" for x in ("q", "k", "v", "attn_scores", "pattern", "z")),
                  f"{block}.hook_attn_out"]
        if not attn_only:
            names += [f"{block}.hook_resid_mid", f"{block}.ln2.hook_scale", f"{block}.ln2.hook_normalized",
                      f"{block}.mlp.hook_pre", f"{block}.mlp.hook_post", f"{block}.hook_mlp_out"]
        names.append(f"{block}.hook_resid_post")
    return names + ["ln_final.hook_scale", "ln_final.hook_normalized"]


def bridge_name(name: str) -> str:
    """The bridge's `ln*.hook_normalized` is taken before w and b; its `ln*.hook_out` is the classic value."""
    return name[: -len("hook_normalized")] + "hook_out" if name.endswith("hook_normalized") else name


@functools.cache
def _reference_run_cached(kind: str, key: tuple) -> tuple[Tensor, dict[str, Tensor]]:
    tokens = t.tensor(key[1]).reshape(key[0])
    with t.no_grad():
        logits, cache = reference_gpt2().run_with_cache(tokens)  # `kind` only keys the cache
    return logits, {name: value for name, value in cache.items()}


def reference_run(tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The reference's logits and cache on `tokens` (computed once per input)."""
    ref_tokens, logits, cache = reference_cache()
    if tokens.shape == ref_tokens.shape and t.equal(tokens, ref_tokens):
        return logits, cache
    return _reference_run_cached(reference_info().kind, (tuple(tokens.shape), tuple(tokens.flatten().tolist())))


@functools.cache
def _reference_model(kind: str) -> ref.EducationalTransformer:
    with t.random.fork_rng(devices=[]):
        model = ref.EducationalTransformer(model_config())
    ref.load_gpt2_weights(model, reference_params())
    return model.eval()


def reference_model() -> ref.EducationalTransformer:
    """The course's reference model with the reference's weights (a copy, so a learner cannot alter the original)."""
    return copy.deepcopy(_reference_model(reference_info().kind))


def _token_cases() -> list[tuple[str, Tensor]]:
    tokens, _, _ = reference_cache()
    gen = t.Generator().manual_seed(3)
    return [
        ("the reference prompt", tokens),
        ("a batch of 2 different sequences of length 9", t.randint(0, config_fields()["d_vocab"], (2, 9), generator=gen)),
        ("a single token", tokens[:, :1]),
    ]

# ---------------------------------------------------------------------------------------- first divergence


def record_activations(model: nn.Module, tokens: Tensor) -> tuple[dict[str, Tensor], dict[str, int], Exception | None]:
    """Every HookPoint's first output (in the order they ran) and how often each ran; plain torch forward hooks, so
    it works whether or not the learner's model calls `setup()`, and it leaves no hook behind."""
    cache: dict[str, Tensor] = {}
    calls: dict[str, int] = {}

    def save(name: str):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in cache and isinstance(output, Tensor):
                cache[name] = output.detach().clone()
        return hook

    handles = [m.register_forward_hook(save(n)) for n, m in model.named_modules() if isinstance(m, HookPoint)]
    error = None
    try:
        with t.no_grad(), quiet_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model(tokens.clone())
    except Exception as exc:  # the diagnosis reports how far the model got
        error = exc
    finally:
        for handle in handles:
            handle.remove()
    return cache, calls, error


def same_activation(name: str, got: Tensor, want: Tensor) -> bool:
    if got.shape != want.shape:
        return False
    if name.endswith("hook_attn_scores"):  # -inf, -1e5 or IGNORE: any very negative masked score is right
        masked = t.isinf(want) & (want < 0) & (got <= MASKED)
        got = t.where(masked, want, got)
    return close(got, want)


def component_hint(name: str) -> str:
    """What computes activation `name`, and what to check there."""
    if name == "hook_embed":
        return "`hook_embed` is the token embedding alone, `W_E[tokens]`: check Embed and what you pass to hook_embed."
    if name == "hook_pos_embed":
        return "`hook_pos_embed` is `W_pos[:seq_len]` for every row: check PosEmbed and what you pass to hook_pos_embed."
    if name == "logits":
        return "every activation up to ln_final matches, so the mistake is in the last step: `logits = unembed(ln_final(residual))`."
    match = re.match(r"blocks\.(\d+)\.(.+)", name)
    if match is None:  # ln_final.*
        return "ln_final runs once, on the output of the LAST block (`blocks[-1]`), before unembed."
    layer, rest = int(match.group(1)), match.group(2)
    hints = {
        "hook_resid_pre": ("Block 0 reads `hook_embed + hook_pos_embed`." if layer == 0 else
                           f"Block {layer} must read block {layer - 1}'s output (`residual = block(residual)`), in order."),
        "ln1.hook_scale": "LayerNorm (ln1): the scale is sqrt(biased variance + eps).",
        "ln1.hook_normalized": "LayerNorm (ln1): (x - mean) / scale * w + b.",
        "attn.hook_q": "Attention: q = x W_Q + b_Q per head.",
        "attn.hook_k": "Attention: k = x W_K + b_K per head.",
        "attn.hook_v": "Attention: v = x W_V + b_V per head.",
        "attn.hook_attn_scores": "Attention scores: q·k / sqrt(d_head), then the causal mask.",
        "attn.hook_pattern": "Attention pattern: softmax of the masked scores over key_pos.",
        "attn.hook_z": "Attention: z = pattern-weighted sum of v over key_pos.",
        "hook_attn_out": "Attention output: z W_O summed over heads, plus b_O.",
        "hook_resid_mid": "resid_mid = resid_pre + attn_out.",
        "ln2.hook_scale": "LayerNorm (ln2): the scale is sqrt(biased variance + eps).",
        "ln2.hook_normalized": "LayerNorm (ln2), applied to resid_mid.",
        "mlp.hook_pre": "MLP: pre = x W_in + b_in.",
        "mlp.hook_post": "MLP: post = GELU (tanh approximation) of pre.",
        "hook_mlp_out": "MLP output: post W_out + b_out.",
        "hook_resid_post": "resid_post = resid_mid + mlp_out.",
    }
    return hints.get(rest, "")


def _names_list(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def first_divergence(model: nn.Module, tokens: Tensor) -> tuple[str, str]:
    """(name of the first activation that differs from the reference, a sentence describing it)."""
    want_logits, want = reference_run(tokens)
    got, calls, error = record_activations(model, tokens)
    n_layers = sum(1 for name in want if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", name))
    notes = []
    order = list(dict.fromkeys(int(m.group(1)) for n in got if (m := re.match(r"blocks\.(\d+)\.", n))))
    if order != sorted(order):
        notes.append(f"your model ran the blocks in the order {', '.join(map(str, order))}")
    repeated = sorted(n for n, c in calls.items() if c > 1 and n.endswith("hook_resid_pre"))
    if repeated:
        notes.append(f"{_names_list(repeated)} ran {calls[repeated[0]]} times in one forward pass")
    skipped: list[str] = []
    for name in classic_hook_names(n_layers):
        if name not in got:
            skipped.append(name)
            continue
        expected = want[bridge_name(name)]
        if not same_activation(name, got[name], expected):
            what = (f"shape {tuple(got[name].shape)}, expected {tuple(expected.shape)}" if got[name].shape != expected.shape
                    else diff_report(got[name], expected))
            return name, _sentence(name, what, skipped, notes)
    if error is not None:
        return "", (f" Every activation your model computed matches the reference; it then raised "
                    f"{type(error).__name__}." + _notes(skipped, notes))
    return "logits", _sentence("logits", "", skipped, notes)


def _notes(skipped: list[str], notes: list[str]) -> str:
    parts = list(notes)
    if skipped:
        parts.append(f"your model never ran {_names_list(skipped)}")
    return f" (Also: {'; '.join(parts)}.)" if parts else ""


def _sentence(name: str, what: str, skipped: list[str], notes: list[str]) -> str:
    where = "the logits (the output of unembed)" if name == "logits" else f"`{name}`"
    detail = f": {what}" if what else ""
    return f" Your model first differs from the reference at {where}{detail}. {component_hint(name)}{_notes(skipped, notes)}"


def _quietly(fn, *args):
    with quiet_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


def _outcome(fn, *args) -> Tensor | Exception:
    """What a catalogued mistake returns on `args`, or the exception it raises (matched by type and message).
    It draws from the same random stream as the learner's call (seeded 0), so a sampling mistake replays exactly."""
    try:
        with t.no_grad(), t.random.fork_rng(devices=[]):
            t.manual_seed(0)
            return _quietly(fn, *args)
    except Exception as exc:  # a mistake that crashes is matched by its error, not its output
        return exc


def _matches(learner: Tensor | BaseException | None, outcome: Tensor | Exception) -> bool:
    if isinstance(learner, BaseException):
        return isinstance(outcome, Exception) and type(outcome) is type(learner) and str(outcome) == str(learner)
    return isinstance(learner, Tensor) and isinstance(outcome, Tensor) and close(learner, outcome)


def _named(mistakes: list[Mistake], learner, outcome_of) -> str:
    """' This matches a known mistake, …: hint' for the first catalogued mistake with the learner's outcome."""
    for mistake in mistakes:
        if _matches(learner, outcome_of(mistake)):
            return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
    return ""

# -------------------------------------------------------------------------------------------- transformer


def _require_module_class(Cls, call: str) -> None:
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. {call}; got {describe(Cls)}.")


def _loaded(Cls: type, cfg, what: str) -> nn.Module:
    model = construct(Cls, cfg, what)
    check_names(model, expected_state_names(cfg), what)
    load_params(model, reference_params(), what)
    return model.eval()



@checker("transformer", TRANSFORMER_MISTAKES, chapter=CHAPTER)
def transformer(EducationalTransformer: type) -> None:
    """The whole model with the reference's weights gives the reference's logits; if not, where it first differs."""
    _require_module_class(EducationalTransformer, "checks.transformer(EducationalTransformer)")
    what = "EducationalTransformer"
    cfg = model_config()
    model = _loaded(EducationalTransformer, cfg, what)
    params = reference_params()

    def mistake_outcome(mistake: Mistake, tokens: Tensor):
        wrong = _quietly(mistake.impl, cfg)
        load_params(wrong, params, mistake.name)
        return _outcome(wrong.eval(), tokens.clone())

    for label, tokens in _token_cases():
        expected, _ = reference_run(tokens)
        inputs = tokens.clone()
        try:
            with t.no_grad():
                out = call_learner(f"{what}.forward", model, inputs, context=label)
        except NotImplementedYet:
            raise
        except AssertionError as exc:
            _, where = first_divergence(model, tokens)
            named = _named(TRANSFORMER_MISTAKES, exc.__cause__, lambda m: mistake_outcome(m, tokens))
            fail(f"{exc}{where}{named}")
        assert_unchanged([tokens], [inputs], f"{what}.forward", ["tokens"])
        if isinstance(out, Tensor) and out.shape == expected.shape and out.dtype == expected.dtype and close(out, expected):
            continue
        if not isinstance(out, Tensor):
            problem = f"returned {describe(out)}, expected logits of shape {tuple(expected.shape)}"
        elif out.shape != expected.shape:
            problem = f"output shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
        elif out.dtype != expected.dtype:
            problem = f"output dtype {out.dtype}, expected {expected.dtype}"
        else:
            problem = f"logits differ from the reference's, {diff_report(out, expected)}"
        _, where = first_divergence(model, tokens)
        named = _named(TRANSFORMER_MISTAKES, out, lambda m: mistake_outcome(m, tokens))
        fail(f"{what}: {problem} on {label}.{where}{named}")
    passed(f"EducationalTransformer gives the reference's logits ({reference_info().kind}) on {len(_token_cases())} inputs")

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
    """Statistics of every initialised parameter: weights N(0, init_range^2), biases 0, LayerNorm gains 1."""
    if not callable(init_weights_fn) or isinstance(init_weights_fn, type):
        fail(f"Pass the function itself, e.g. checks.init_weights(init_weights); got {describe(init_weights_fn)}.")
    cfg = model_config()
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
                _quietly(mistake.impl, wrong)
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


@checker("hooks", HOOKS_MISTAKES, chapter=CHAPTER)
def hooks(EducationalTransformer: type) -> None:
    """run_with_cache gives every classic TransformerLens name with the reference's shape and value, and
    run_with_hooks can replace an activation."""
    _require_module_class(EducationalTransformer, "checks.hooks(EducationalTransformer)")
    what = "EducationalTransformer"
    cfg = model_config()
    model = _loaded(EducationalTransformer, cfg, what)
    hint = _named_by_name(HOOKS_MISTAKES)
    if not callable(getattr(model, "run_with_cache", None)) or not callable(getattr(model, "run_with_hooks", None)):
        fail(f"{what} has no run_with_cache/run_with_hooks.{hint['not_a_hooked_root_module']}")
    tokens, _, _ = reference_cache()
    _, want = reference_run(tokens)
    try:
        with t.no_grad():
            result = call_learner(f"{what}.run_with_cache", model.run_with_cache, tokens.clone(), context="the reference prompt")
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
        fail(f"{what}: your model's cache has no {_names_list(missing)} ({len(names) - len(missing)} of {len(names)} "
             f"names present).{which}")
    for name in names:
        expected = want[bridge_name(name)]
        if tuple(cache[name].shape) != tuple(expected.shape):
            fail(f"{what}: cache[{name!r}] has shape {tuple(cache[name].shape)}, expected {tuple(expected.shape)}. {component_hint(name)}")
        if not same_activation(name, cache[name], expected):
            swapped = " " + hint["embedding_hooks_swapped"].strip() if name in ("hook_embed", "hook_pos_embed") else ""
            fail(f"{what}: cache[{name!r}] differs from the reference's, {diff_report(cache[name], expected)}. "
                 f"{component_hint(name)}{swapped}")
    reference = reference_model()
    for hook_name, fn in HOOK_PROBES:
        with t.no_grad():
            got = call_learner(f"{what}.run_with_hooks", model.run_with_hooks, tokens.clone(), fwd_hooks=[(hook_name, fn)],
                               context=f"a hook that replaces {hook_name}")
            expected = reference.run_with_hooks(tokens, fwd_hooks=[(hook_name, fn)])
        which = hint["hook_return_value_ignored"] if hook_name == "hook_pos_embed" else (
            " The component that owns this hook point must use the value it returns: `x = self.hook_...(x)`.")
        assert_matches(got, expected, f"{what}.run_with_hooks", context=f"a hook that replaces `{hook_name}`", hint=which.strip())
    passed(f"run_with_cache gives all {len(names)} TransformerLens names with the reference's shapes and values; run_with_hooks works")


def _named_by_name(mistakes: list[Mistake]) -> dict[str, str]:
    return {m.name: f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in mistakes}

# ------------------------------------------------------------------------------------------- load_weights


@checker("load_weights", LOAD_MISTAKES, chapter=CHAPTER)
def load_weights(load_gpt2_weights) -> None:
    """The reference's weights load and give its logits; a missing, an unexpected or a misshapen weight is an error
    that names it; the caller's dict is left alone."""
    if not callable(load_gpt2_weights) or isinstance(load_gpt2_weights, type):
        fail(f"Pass the function itself, e.g. checks.load_weights(load_gpt2_weights); got {describe(load_gpt2_weights)}.")
    hint = _named_by_name(LOAD_MISTAKES)
    what = "load_gpt2_weights"
    cfg = model_config()
    blank = ref.EducationalTransformer(cfg).eval()
    tokens, logits, _ = reference_cache()

    params = reference_params()
    before = {name: value.clone() for name, value in params.items()}
    model = copy.deepcopy(blank)
    try:
        call_learner(what, load_gpt2_weights, model, params, context="GPT-2's complete weights")
    except AssertionError as exc:
        extra = hint["buffers_not_handled"] if "IGNORE" in str(exc) else ""
        raise AssertionError(f"{exc}{extra}") from exc.__cause__
    if set(params) != set(before) or any(not t.equal(params[n], before[n]) for n in before):
        fail(f"{what} modified the caller's `params` dict.{hint['callers_dict_modified']}")
    for i in range(cfg.n_layers):
        if not bool(t.isneginf(model.blocks[i].attn.IGNORE)):
            fail(f"{what} changed `blocks.{i}.attn.IGNORE`: buffers keep the model's own values.")
    with t.no_grad():
        assert_matches(model(tokens), logits, f"{what}: the loaded model's logits", context="the reference prompt",
                       hint="Copy every tensor to the parameter of the same name, unchanged.")

    dropped = "blocks.1.mlp.W_in" if cfg.n_layers > 1 else "blocks.0.mlp.W_in"
    probes = [
        (f"`{dropped}` missing", {n: v for n, v in reference_params().items() if n != dropped}, dropped,
         hint["missing_filled_from_model"] + hint["strict_false"].replace(" This matches a known mistake", " Or")),
        ("an unexpected `blocks.0.attn.W_X`", {**reference_params(), "blocks.0.attn.W_X": t.zeros(1)}, "blocks.0.attn.W_X",
         hint["unexpected_names_ignored"]),
        ("`unembed.W_U` transposed", {**reference_params(), "unembed.W_U": reference_params()["unembed.W_U"].T.clone()},
         "unembed.W_U", " A weight of the wrong shape must be an error too (`load_state_dict` checks shapes)."),
    ]
    for label, bad, key, why in probes:
        try:
            _quietly(load_gpt2_weights, copy.deepcopy(blank), bad)
        except NotImplementedError as exc:
            raise NotImplementedYet(f"{what} is not implemented yet.") from exc
        except Exception as exc:  # the error we want: it must name the offending key
            if key not in str(exc):
                fail(f"{what} raised {type(exc).__name__} for weights with {label}, but its message does not name "
                     f"`{key}`: list the missing and unexpected names so the user can fix them.")
            continue
        fail(f"{what} accepted weights with {label} without an error.{why}")
    passed(f"load_gpt2_weights loads GPT-2's weights ({reference_info().kind}) strictly and reproduces its logits")

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
                       mistakes=lambda a=args: [(m, _outcome(m.impl, *a)) for m in LOSS_MISTAKES],
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


@checker("greedy_generate", GREEDY_MISTAKES, chapter=CHAPTER)
def greedy_generate(greedy_generate_fn) -> None:
    """With the reference's weights in the course's model, the same tokens as the reference GPT-2, row by row."""
    if not callable(greedy_generate_fn) or isinstance(greedy_generate_fn, type):
        fail(f"Pass the function itself, e.g. checks.greedy_generate(greedy_generate); got {describe(greedy_generate_fn)}.")
    what = "greedy_generate"
    model = reference_model()
    ref_tokens, _, _ = reference_cache()
    gen = t.Generator().manual_seed(5)
    cases = [
        ("the first 6 tokens of the reference prompt, 5 new tokens", ref_tokens[:, :6], 5),
        ("a batch of 2 different prompts of length 4, 3 new tokens",
         t.randint(0, model.cfg.d_vocab, (2, 4), generator=gen), 3),
        ("one new token", ref_tokens[:, :3], 1),
    ]
    for label, prompt, n_new in cases:
        expected = _reference_greedy(prompt, n_new)
        inputs = prompt.clone()
        t.manual_seed(0)  # the stream each catalogued mistake replays with
        try:
            out = call_learner(what, greedy_generate_fn, model, inputs, n_new, context=label)
        except NotImplementedYet:
            raise
        except AssertionError as exc:
            fail(f"{exc}{_named(GREEDY_MISTAKES, exc.__cause__, lambda m: _outcome(m.impl, model, prompt.clone(), n_new))}")
        assert_unchanged([prompt], [inputs], what, ["tokens"])
        named = _named(GREEDY_MISTAKES, out if isinstance(out, Tensor) else None,
                       lambda m: _outcome(m.impl, model, prompt.clone(), n_new))
        if not isinstance(out, Tensor):
            fail(f"{what}: returned {describe(out)} on {label}, expected a Tensor of shape {tuple(expected.shape)}.")
        if out.shape != expected.shape:
            named = named or next((f" This matches a known mistake, {m.name.replace('_', ' ')}: {m.hint}" for m in GREEDY_MISTAKES
                                   if isinstance(o := _outcome(m.impl, model, prompt.clone(), n_new), Tensor) and o.shape == out.shape), "")
            fail(f"{what}: returned shape {tuple(out.shape)} on {label}, expected {tuple(expected.shape)}.{named}")
        if out.dtype != t.long:
            fail(f"{what}: returned dtype {out.dtype} on {label}, expected torch.int64 token ids.")
        if not t.equal(out, expected):
            row, pos = (int(i) for i in (out != expected).nonzero()[0])
            fail(f"{what}: token {pos} of row {row} is {out[row, pos].item()}, the reference's greedy choice is "
                 f"{expected[row, pos].item()} on {label}.{named or ' Take argmax(dim=-1) of the last position and feed the extended sequence back in.'}")
    passed(f"greedy_generate produces the reference's tokens ({reference_info().kind}) on {len(cases)} prompts")
