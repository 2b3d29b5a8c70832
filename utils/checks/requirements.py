"""What an exercise states beyond its output values, checked on the learner's module: every stated hook exists, runs
once, carries the stated tensor and is used (what it returns is what the module goes on with), the output carries a
gradient to every parameter that should get one, and, in a batch, which rows differ.

Chapters 03-05 rely on each of these: `run_with_cache` reads the hooks, chapter 04's ablations replace their values,
chapter 05 trains through the gradients. A component whose values are right but which breaks one of them would pass
chapter 02 and fail far from its cause, so chapter 02's and 03's checkers run these after the values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch as t
from torch import Tensor, nn

from utils.checks import module_runs
from utils.checks.core import close, diff_report, fail

MASKED_AT_MOST = -1e4  # a masked attention score: -inf, IGNORE or any value softmax turns into exactly 0


@dataclass(frozen=True)
class Hook:
    """A hook point the exercise text names, and what it says the hook carries."""

    name: str  # the attribute path inside the module, e.g. "hook_scale" or "attn.hook_pattern"
    carries: str  # e.g. "the scale sqrt(var + eps), shape [batch pos 1]"


def record(module: nn.Module, inputs: Sequence, edit: str | None = None):
    """(output, each HookPoint's first output, how often each ran): module_runs.record, or a stand-in's answer."""
    return module_runs.run(module, "record", list(inputs), edit)


def same_value(name: str, got: Tensor, want: Tensor) -> bool:
    """Equal within the course's tolerance, any dtype; masked attention scores count as equal whatever very
    negative value masks them."""
    if not isinstance(got, Tensor) or got.shape != want.shape:
        return False
    got = got.detach().to(want.dtype) if got.is_floating_point() else got.detach()
    if name.endswith("attn_scores") or (want.dim() == 4 and bool(t.isneginf(want).any())):
        masked = t.isneginf(want) & (got <= MASKED_AT_MOST)
        got = t.where(masked, want, got)
    return close(got, want)


# ----------------------------------------------------------------------------------------------------- hooks


def check_hooks(
    learner: nn.Module,
    reference: nn.Module,
    inputs: Sequence,
    what: str,
    hooks: Sequence[Hook],
    context: str,
    extras: Callable[[dict[str, Tensor]], Mapping[str, Tensor]] | None = None,
) -> None:
    """Each stated hook of `learner` (already holding the case's parameters) exists, runs once, carries the
    reference's tensor on `inputs`, and what it returns is used. `extras(reference_values)` gives tensors a wrong
    hook is likely to carry instead, each named by what it is ("the variance, without eps and the square root")."""
    missing = module_runs.run(learner, "hook_survey", [h.name for h in hooks])["missing"]
    for hook in hooks:
        if hook.name in missing:
            found = missing[hook.name]
            fail(f"{what}: self.{hook.name} is {found}, expected a HookPoint: keep "
                 f"the given `self.{hook.name} = HookPoint()` in __init__ (chapter 03's run_with_cache finds activations by it).")
    out, got, calls = record(learner, inputs)
    _, want, _ = record(reference, inputs)
    candidates = {f"what `{h.name}` should carry ({h.carries})": want[h.name] for h in hooks}
    candidates.update({f"the value of `{name}`": value for name, value in want.items() if name not in {h.name for h in hooks}})
    if extras is not None:
        candidates.update(extras(want))
    for hook in hooks:
        n = calls.get(hook.name, 0)
        if n == 0:
            fail(f"{what}.forward never passes a tensor through self.{hook.name}: pass {hook.carries} through it, "
                 f"`x = self.{hook.name}(x)`, so that run_with_cache can read it (chapters 03 and 04).")
        if n > 1:
            fail(f"{what}.forward passes {n} tensors through self.{hook.name} in one call: pass only {hook.carries}, once.")
        value, expected = got[hook.name], want[hook.name]
        if same_value(hook.name, value, expected):
            continue
        equal = next((label for label, other in candidates.items()
                      if other is not expected and same_value(hook.name, value, other)), None)
        if equal is not None:
            fail(f"{what}: self.{hook.name} carries {equal} on {context}; it should carry {hook.carries}.")
        detail = (f"shape {tuple(value.shape)}, expected {tuple(expected.shape)}" if value.shape != expected.shape
                  else diff_report(value, expected))
        fail(f"{what}: self.{hook.name} carries the wrong tensor on {context}: {detail}. It should carry {hook.carries}.")
    for hook in hooks:  # a hook whose return value is dropped cannot be edited by run_with_hooks
        edited, _, _ = record(learner, inputs, edit=hook.name)
        if isinstance(edited, Tensor) and isinstance(out, Tensor) and edited.shape == out.shape and close(edited, out):
            fail(f"{what}: replacing the value self.{hook.name} returns does not change the output, so your forward "
                 f"ignores what the hook returns: write `x = self.{hook.name}(x)` and go on with x (run_with_hooks edits "
                 "activations this way in chapter 04).")


# ------------------------------------------------------------------------------------------------- gradients


def check_gradients(learner: nn.Module, reference: nn.Module, inputs: Sequence, what: str, context: str) -> None:
    """The learner's output requires grad, and every parameter that the reference's output gives a non-zero
    gradient gets a non-zero gradient too (chapter 05 trains these modules)."""
    got = module_runs.run(learner, "gradients", list(inputs), True)
    if got["grads"] is None:
        fail(f"{what}: the output carries no gradient on {context} ({got['why']}), so chapter 05 could not train this "
             "module. Compute the output from the parameters themselves, with gradients on.")
    want = module_runs.run(reference, "gradients", list(inputs), False)["grads"]
    grads = got["grads"]
    dead = [name for name, nonzero in want.items() if nonzero and not grads.get(name)]
    if dead:
        more = f" (and {len(dead) - 1} more: {', '.join(f'`{n}`' for n in dead[1:4])}{'…' if len(dead) > 4 else ''})" if len(dead) > 1 else ""
        fail(f"{what}: parameter `{dead[0]}` gets no gradient from the output{more} on {context}: {got['why']}. "
             "Use the parameter itself in forward, with gradients on, so that training can update it.")


# ------------------------------------------------------------------------------------------------ batch rows


def rows_note(actual, expected: Tensor) -> str:
    """' Row 1 differs while row 0 matches: …' when only some rows of a batched output are wrong, else ''."""
    if not isinstance(actual, Tensor) or not isinstance(expected, Tensor) or actual.shape != expected.shape:
        return ""
    if expected.dim() < 2 or expected.shape[0] < 2:
        return ""
    good = [bool(close(actual[i], expected[i])) for i in range(expected.shape[0])]
    if all(good) or not any(good):
        return ""
    bad = [str(i) for i, ok in enumerate(good) if not ok]
    ok = [str(i) for i, g in enumerate(good) if g]
    rows = "Rows " + ", ".join(bad) + " differ" if len(bad) > 1 else f"Row {bad[0]} differs"
    matching = ("rows " + ", ".join(ok) + " match") if len(ok) > 1 else f"row {ok[0]} matches"
    return (f" {rows} while {matching}: compute each sequence of the batch from its own row (no `[0]`, no sum or "
            "mean over the batch axis).")
