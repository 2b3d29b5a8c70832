"""The machinery every checker shares: a registry, realistic mistakes, and comparisons that explain themselves.

A checker reviews in this order: parameter names, exceptions raised by the learner's code, output shape,
dtype, NaN/inf, in-place modification of inputs, then values (elementwise, atol 1e-4 and rtol 1e-3). When
values differ it runs each catalogued mistake on the same inputs: if the learner's output equals a
mistake's, the message names that mistake and its fix.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch as t
from torch import Tensor, nn

from utils.checks.presentation import attach

ATOL, RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class Mistake:
    """A realistic wrong implementation, written the way a learner would write it, and the hint it earns."""

    name: str
    impl: Any  # a class (module exercises) or a function (function exercises), in the learner's form
    hint: str


@dataclass
class Exercise:
    id: str
    check: Callable[..., None]
    mistakes: list[Mistake] = field(default_factory=list)
    chapter: str = ""


REGISTRY: dict[str, Exercise] = {}


class NotImplementedYet(NotImplementedError):
    """The learner's code still raises the stub's `NotImplementedError`."""


def checker(exercise_id: str, mistakes: Sequence[Mistake] = (), chapter: str = ""):
    """Register a checker. It runs with its own random state (the learner's stream is restored after),
    with warnings kept off stderr, and prints its `✓` line only when it returns."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args, **kwargs) -> None:
            try:
                with t.random.fork_rng(devices=[]), quiet_warnings():
                    t.manual_seed(0)
                    fn(*args, **kwargs)
            except (AssertionError, NotImplementedError) as exc:  # shown as its message and the learner's lines
                raise attach(exc)

        if exercise_id in REGISTRY:
            raise RuntimeError(f"Exercise id {exercise_id!r} is registered twice.")
        run.exercise_id = exercise_id
        run.mistakes = list(mistakes)
        REGISTRY[exercise_id] = Exercise(exercise_id, run, list(mistakes), chapter)
        return run

    return register


@contextlib.contextmanager
def quiet_warnings():
    """nbgrader scores a test cell with any stderr output as failed, so warnings are recorded, not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def fail(message: str) -> None:
    raise AssertionError(message)


# --------------------------------------------------------------------------------------------- calling code


def call_learner(what: str, fn: Callable[..., Any], *args, context: str = "", **kwargs) -> Any:
    """Call the learner's code, turning its exceptions into messages that say which exercise and input."""
    try:
        with quiet_warnings(), contextlib.redirect_stderr(io.StringIO()):
            return fn(*args, **kwargs)
    except NotImplementedError as exc:
        raise NotImplementedYet(f"{what} is not implemented yet: replace the `raise NotImplementedError()` stub.") from exc
    except Exception as exc:
        where = f" on {context}" if context else ""
        shapes = ", ".join(describe(a) for a in args)
        raise AssertionError(
            f"{what} raised {type(exc).__name__}{where}: {exc}\n  (called with {shapes}; the traceback above points at your line)"
        ) from exc


def describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__ if not isinstance(x, (int, float, str)) else repr(x)


def construct(Cls: type, cfg: Any, what: str) -> nn.Module:
    try:
        with quiet_warnings():
            return Cls(cfg)
    except NotImplementedError as exc:
        raise NotImplementedYet(f"{what}.__init__ is not implemented yet.") from exc
    except Exception as exc:
        raise AssertionError(f"{what}(cfg) raised {type(exc).__name__}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- parameters


def check_names(module: nn.Module, expected: Iterable[str], what: str) -> None:
    """Parameter and buffer names must match TransformerLens's exactly: GPT-2's weights load by name."""
    got = set(module.state_dict().keys())
    want = set(expected)
    missing, unexpected = sorted(want - got), sorted(got - want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected)}")
        fail(
            f"{what}: parameter names differ from TransformerLens's ({'; '.join(parts)}). GPT-2's weights load "
            "by name, so keep the names (and register_buffer calls) given in __init__."
        )


def load_params(module: nn.Module, params: dict[str, Tensor], what: str) -> None:
    """Load `params` (classic names) into `module`, checking every shape first; buffers not given stay."""
    state = module.state_dict()
    for name, value in params.items():
        if tuple(state[name].shape) != tuple(value.shape):
            fail(f"{what}: parameter {name} has shape {tuple(state[name].shape)}, expected {tuple(value.shape)}.")
    merged = {**state, **{k: v.clone() for k, v in params.items()}}
    module.load_state_dict(merged, strict=True)


# ----------------------------------------------------------------------------------------------- comparison


def _fmt(x: float) -> str:
    return f"{x:.5f}" if abs(x) < 1e4 else f"{x:.4g}"


def diff_report(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL) -> str:
    """'38% of values differ, max |diff| 2.1e-02 at (0, 3, 17): got 0.41210, expected 0.43377'."""
    a, e = actual.detach().double(), expected.detach().double()
    bad = ~t.isclose(a, e, atol=atol, rtol=rtol, equal_nan=True)
    diff = (a - e).abs().nan_to_num(nan=float("inf"))
    diff = t.where(t.isinf(a) & t.isinf(e) & (a == e), t.zeros_like(diff), diff)
    idx = tuple(int(i) for i in t.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
    pct = 100.0 * bad.double().mean().item()
    pct_text = f"{pct:.0f}%" if pct >= 1 else f"{pct:.2f}%"
    return (
        f"{pct_text} of values differ, max |diff| {diff.max().item():.1e} at {idx}: got {_fmt(a[idx].item())}, "
        f"expected {_fmt(e[idx].item())}"
    )


def close(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    if actual.shape != expected.shape:
        return False
    return bool(t.isclose(actual.detach().double(), expected.detach().double(), atol=atol, rtol=rtol, equal_nan=True).all())


def matching_mistake(actual: Tensor, mistake_outputs: Sequence[tuple[Mistake, Any]], *, compare=close) -> Mistake | None:
    for mistake, out in mistake_outputs:
        if isinstance(out, Tensor) and isinstance(actual, Tensor) and out.shape == actual.shape and compare(actual, out):
            return mistake
    return None


def assert_matches(
    actual: Any,
    expected: Tensor,
    name: str,
    *,
    context: str = "",
    mistakes: Sequence[tuple[Mistake, Any]] | Callable[[], Sequence[tuple[Mistake, Any]]] = (),
    hint: str = "",
    atol: float = ATOL,
    rtol: float = RTOL,
    check_dtype: bool = True,
) -> None:
    """Shape, dtype, NaN/inf, then values; a mismatch names the catalogued mistake it equals, if any.

    `mistakes` may be a function, so that wrong variants only run when the learner's output is wrong."""
    where = f" on {context}" if context else ""
    if not isinstance(actual, Tensor):
        fail(f"{name}: returned {describe(actual)}{where}, expected a Tensor of shape {tuple(expected.shape)}.")
    actual = on_cpu(actual)
    if actual.device.type != "cpu":
        fail(f"{name}: returned a tensor on the {actual.device} device{where}, which holds no values to compare.")

    def named(default: str = "") -> str:
        outs = mistakes() if callable(mistakes) else mistakes
        found = matching_mistake(actual, outs, compare=lambda x, y: close(x, y, atol, rtol))
        if found is None and actual.shape != expected.shape:
            found = next((m for m, o in outs if isinstance(o, Tensor) and o.shape == actual.shape), None)
        if found is not None:
            return f" This matches a known mistake, {found.name.replace('_', ' ')}: {found.hint}"
        return f" {default}" if default else ""

    if actual.shape != expected.shape:
        fail(f"{name}: output shape {tuple(actual.shape)}{where}, expected {tuple(expected.shape)}." + named(hint))
    if check_dtype and actual.dtype != expected.dtype:
        fail(f"{name}: output dtype {actual.dtype}{where}, expected {expected.dtype}.")
    finite_expected = t.isfinite(expected)
    bad = ~t.isfinite(actual) & finite_expected
    if bad.any():
        kind = "NaN" if t.isnan(actual[bad]).any() else "inf"
        first = tuple(int(i) for i in bad.nonzero()[0])
        fail(f"{name}: output has {int(bad.sum())} {kind} values{where} (first at {first}) where the reference is finite." + named(hint))
    if not close(actual, expected, atol, rtol):
        fail(f"{name}: {diff_report(actual, expected, atol, rtol)}{where}." + named(hint))


def snapshot(*tensors: Any) -> list[Tensor | None]:
    return [x.detach().clone() if isinstance(x, Tensor) else None for x in tensors]


def assert_unchanged(before: list[Tensor | None], after: Sequence[Any], what: str, labels: Sequence[str] = ()) -> None:
    for i, (old, new) in enumerate(zip(before, after)):
        if old is not None and new.device == old.device and not t.equal(old, new.detach()):
            label = labels[i] if i < len(labels) else f"argument {i}"
            fail(f"{what} modified its input `{label}` in place. Use out-of-place operations "
                 "(`x = x - mean`, `masked_fill`, not `x -= mean` or `masked_fill_`): callers still need the input.")


def passed(message: str) -> None:
    print(f"✓ {message}")


# ------------------------------------------------------------------------------------------ module exercises


@dataclass
class Case:
    """One input on which a module exercise is compared: its config, parameters, inputs and expected output."""

    label: str
    cfg: Any
    params: dict[str, Tensor]
    inputs: tuple
    expected: Tensor


def run_module(Cls: type, case: Case, what: str, names: Iterable[str] | None = None, call=None) -> Any:
    """Construct `Cls(case.cfg)`, check its names, load `case.params`, and run it on copies of the inputs."""
    module = construct(Cls, case.cfg, what)
    if names is not None:
        check_names(module, names, what)
    load_params(module, case.params, what)
    module.eval()
    device = module_device(module)  # a learner's __init__ may place parameters on a GPU: inputs go there too
    inputs = tuple(x.clone().to(device) if isinstance(x, Tensor) else x for x in case.inputs)
    before = snapshot(*case.inputs)
    call = call or (lambda m, *xs: m(*xs))
    with t.no_grad():
        out = call_learner(f"{what}.forward", call, module, *inputs, context=case.label)
    assert_unchanged(before, on_cpu(inputs), f"{what}.forward", _argument_names(module.forward))
    return on_cpu(out)


def module_device(module: nn.Module) -> t.device:
    """The device of the module's first parameter or buffer (CPU for a module with neither)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return t.device("cpu")


def on_cpu(x: Any) -> Any:
    """Outputs are compared on the CPU, where the reference lives (tuples and lists are walked)."""
    if isinstance(x, Tensor) and x.device.type != "cpu":
        try:
            return x.cpu()
        except (NotImplementedError, RuntimeError):  # a "meta" tensor has no values to compare
            return x
    if isinstance(x, (tuple, list)):
        return type(x)(on_cpu(item) for item in x)
    return x


def _argument_names(fn) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def check_module(
    Cls: type,
    *,
    what: str,
    names: Iterable[str],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
    call=None,
) -> int:
    """Compare a learner's module with the expected output on every case; returns the number of checks."""
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. checks.{what.lower()}({what}); got {describe(Cls)}.")
    names = list(names)
    for case in cases:
        out = run_module(Cls, case, what, names, call)

        def mistake_outputs(case=case):
            results = []
            for mistake in mistakes:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        results.append((mistake, run_module(mistake.impl, case, mistake.name, None, call)))
                except Exception:  # a mistake that cannot even run on this input matches nothing
                    continue
            return results

        assert_matches(out, case.expected, what, context=case.label, mistakes=mistake_outputs, hint=hint)
    return len(cases)
