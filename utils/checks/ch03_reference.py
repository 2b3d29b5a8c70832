"""Chapter 03's reference side: the reference's config and parameter names, its activations on any tokens, the
course's model holding its weights, the first-divergence diagnostic, and matching a learner's outcome (a tensor
or an error) against the catalogued mistakes'.

`first_divergence` runs the learner's model on the same tokens as a reference, walks the activations in the order
the forward pass computes them, and names the first that differs, with a hint about the component that computes it.
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

from utils.checks.core import Mistake, close, diff_report, fail, quiet_warnings
from utils.reference import model as ref
from utils.reference_model import config_fields, reference_cache, reference_gpt2, reference_info, shared_params

MASKED = -1e4  # any attention score at or below this counts as masked, whatever IGNORE value a learner chose

# ------------------------------------------------------------------------------------------------ reference


def model_config() -> ref.TransformerConfig:
    return ref.TransformerConfig(**config_fields())


def expected_state_names(n_layers: int) -> list[str]:
    """The reference's parameter names for a model of `n_layers` blocks, plus each attention's IGNORE buffer."""
    names = list(shared_params())
    per_block = [name.split(".", 2)[2] for name in names if name.startswith("blocks.0.")]
    outside = [name for name in names if not name.startswith("blocks.")]
    return [*outside, *(f"blocks.{i}.{leaf}" for i in range(n_layers) for leaf in [*per_block, "attn.IGNORE"])]


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
    """The course's model holding the shared reference parameters themselves (`assign=True`: no 650 MB copy at
    GPT-2 size). Never handed out: `reference_model()` gives copies."""
    with t.random.fork_rng(devices=[]):
        model = ref.EducationalTransformer(model_config())
    model.requires_grad_(False)
    buffers = {name: value for name, value in model.state_dict().items() if name not in shared_params()}
    model.load_state_dict({**buffers, **shared_params()}, strict=True, assign=True)
    return model.eval()


def reference_model() -> ref.EducationalTransformer:
    """The course's reference model with the reference's weights (a copy, so a learner cannot alter the original)."""
    return copy.deepcopy(_reference_model(reference_info().kind))


def token_cases() -> list[tuple[str, Tensor]]:
    tokens, _, _ = reference_cache()
    gen = t.Generator().manual_seed(3)
    return [
        ("the reference prompt", tokens),
        ("a batch of 2 different sequences of length 9", t.randint(0, config_fields()["d_vocab"], (2, 9), generator=gen)),
        ("a single token", tokens[:, :1]),
    ]

# ---------------------------------------------------------------------------------------------- structure

# torch's own modules name their parameters weight/bias: GPT-2's weights (TransformerLens names) cannot load into them
_COURSE_CLASS = {nn.LayerNorm: "your LayerNorm (parameters w, b; hooks hook_scale, hook_normalized)",
                 nn.Linear: "the course's component, whose weights are W_*/b_* parameters",
                 nn.Embedding: "your Embed or PosEmbed (parameter W_E or W_pos)"}


def check_structure(model: nn.Module, params: dict[str, Tensor], cfg, what: str) -> None:
    """Before the names: a torch built-in where a course component belongs, and a weight created transposed, each
    named as such (both would otherwise read as a list of missing and unexpected names, or a bare shape error)."""
    for name, module in model.named_modules():
        for builtin, course in _COURSE_CLASS.items():
            if type(module) is builtin:
                own = ", ".join(n for n, _ in module.named_parameters()) or "none"
                fail(f"{what}: `{name}` is torch's nn.{builtin.__name__} (parameters {own}), not {course}: GPT-2's "
                     f"weights load by TransformerLens's names and run_with_cache needs the course's hooks, so build "
                     f"`{name}` from the chapter-02 class.")
    dims = {cfg.d_model: "d_model", cfg.d_vocab: "d_vocab", cfg.n_ctx: "n_ctx", cfg.d_mlp: "d_mlp"}
    state = model.state_dict()
    for name, value in params.items():
        got = state.get(name)
        if got is not None and got.dim() == 2 and got.shape != value.shape and tuple(got.shape) == tuple(value.shape)[::-1]:
            fmt = lambda shape: f"{tuple(shape)} = [{' '.join(dims.get(n, str(n)) for n in shape)}]"
            fail(f"{what}: `{name}` is transposed: yours has shape {fmt(got.shape)}, TransformerLens's (and GPT-2's "
                 f"loaded weights) {fmt(value.shape)}. Create it with that shape in __init__ (and use it untransposed).")


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


def names_list(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _n_layers(cache) -> int:
    return sum(1 for name in cache if re.fullmatch(r"blocks\.\d+\.hook_resid_pre", name))


def first_divergence(model: nn.Module, tokens: Tensor, want: dict[str, Tensor] | None = None) -> tuple[str, str]:
    """(name of the first activation that differs from the reference, a sentence describing it).

    `want` holds the expected activations by classic name (a probe's); by default, the reference bridge's on `tokens`."""
    if want is None:
        _, cache = reference_run(tokens)
        want = {name: cache[bridge_name(name)] for name in classic_hook_names(_n_layers(cache))}
    got, calls, error = record_activations(model, tokens)
    n_layers = _n_layers(want)
    notes = []
    order = list(dict.fromkeys(int(m.group(1)) for n in got if (m := re.match(r"blocks\.(\d+)\.", n))))
    if order != sorted(order):
        notes.append(f"your model ran the blocks in the order {', '.join(map(str, order))}")
    repeated = sorted(n for n, c in calls.items() if c > 1 and n.endswith("hook_resid_pre"))
    if repeated:
        notes.append(f"{names_list(repeated)} ran {calls[repeated[0]]} times in one forward pass")
    skipped: list[str] = []
    for name in classic_hook_names(n_layers):
        if name not in got:
            skipped.append(name)
            continue
        expected = want[name]
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
        parts.append(f"your model never ran {names_list(skipped)}")
    return f" (Also: {'; '.join(parts)}.)" if parts else ""


def _sentence(name: str, what: str, skipped: list[str], notes: list[str]) -> str:
    where = "the logits (the output of unembed)" if name == "logits" else f"`{name}`"
    detail = f": {what}" if what else ""
    return f" Your model first differs from the reference at {where}{detail}. {component_hint(name)}{_notes(skipped, notes)}"


def quietly(fn, *args):
    with quiet_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


def replay(fn, *args) -> Tensor | Exception:
    """What a catalogued mistake returns on `args`, or the exception it raises (matched by type and message).
    It draws from the same random stream as the learner's call (seeded 0), so a sampling mistake replays exactly."""
    try:
        with t.no_grad(), t.random.fork_rng(devices=[]):
            t.manual_seed(0)
            return quietly(fn, *args)
    except Exception as exc:  # a mistake that crashes is matched by its error, not its output
        return exc


def _matches(learner: Tensor | BaseException | None, outcome: Tensor | Exception) -> bool:
    if isinstance(learner, BaseException):
        return isinstance(outcome, Exception) and type(outcome) is type(learner) and str(outcome) == str(learner)
    return isinstance(learner, Tensor) and isinstance(outcome, Tensor) and close(learner, outcome)


def named_mistake(mistakes: list[Mistake], learner, outcome_of) -> str:
    """' This matches a known mistake, …: hint' for the first catalogued mistake with the learner's outcome."""
    for mistake in mistakes:
        if _matches(learner, outcome_of(mistake)):
            return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
    return ""

