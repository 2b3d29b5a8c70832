"""The machinery every checker shares: a registry, realistic mistakes, and comparisons that explain themselves.

A checker reviews in this order: the exercises it depends on (`uses_passing`), parameter names, exceptions
raised by the learner's code, in-place modification of inputs, output shape, dtype, NaN/inf, then values
(elementwise, atol 1e-4 and rtol 1e-3). When values differ it runs each catalogued mistake on the same inputs:
only if the learner's output equals a mistake's (same shape, values within the tolerance) does the message
name that mistake and its fix. Otherwise it says what differs, in the exercise's dimension names when it
gives them, then the exercise's hint: never a mistake the output does not match.

Dtypes (the course's policy): a float32 reference accepts float32 and float64 (compared after casting to the
reference's dtype); integers or booleans where floats are expected, and floats where token ids are expected,
fail with a message naming the dtype expected. Integer outputs (token ids: int64, int32 accepted) are
compared exactly, as integers.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import io
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch as t
from torch import Tensor, nn

from utils.checks.compare import (  # noqa: F401 - re-exported: checkers import them from core
    ATOL, RTOL, assert_matches, close, describe, diff_report, dtype_problem, fail, matching_mistake, on_cpu,
    where_it_differs,
)
from utils.checks.presentation import attach


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
    requires: tuple[str, ...] = ()  # exercises whose learner code this check runs (checked first, `uses_passing`)


REGISTRY: dict[str, Exercise] = {}


class NotImplementedYet(NotImplementedError):
    """The learner's code still raises the stub's `NotImplementedError`."""


class InputModified(AssertionError):
    """The learner's code modified an input in place: wrong by the course's rule, though its values may be right."""


# Notes a passing check adds to its ✓ line (a dependency that only broke the in-place rule), and whether
# in-place modification is being tolerated (while `uses_passing` asks if that was a dependency's only fault).
_NOTES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("check_notes", default=None)
_TOLERATE_IN_PLACE: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("tolerate_in_place", default=None)


def checker(exercise_id: str, mistakes: Sequence[Mistake] = (), chapter: str = "", requires: Sequence[str] = ()):
    """Register a checker. It runs with its own random state (the learner's stream is restored after),
    with warnings kept off stderr, and prints its `✓` line only when it returns. `requires` lists the
    exercises whose learner code it also runs (see `uses_passing`)."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args, **kwargs) -> None:
            notes = _NOTES.set([])
            try:
                with t.random.fork_rng(devices=[]), quiet_warnings():
                    t.manual_seed(0)
                    fn(*args, **kwargs)
            except (AssertionError, NotImplementedError) as exc:  # shown as its message and the learner's lines
                raise attach(exc)
            finally:
                _NOTES.reset(notes)

        if exercise_id in REGISTRY:
            raise RuntimeError(f"Exercise id {exercise_id!r} is registered twice.")
        run.exercise_id = exercise_id
        run.mistakes = list(mistakes)
        run.requires = tuple(requires)
        REGISTRY[exercise_id] = Exercise(exercise_id, run, list(mistakes), chapter, tuple(requires))
        return run

    return register


@contextlib.contextmanager
def quiet_warnings():
    """nbgrader scores a test cell with any stderr output as failed, so warnings are recorded, not shown."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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


def load_params(module: nn.Module, params: Mapping[str, Tensor], what: str) -> None:
    """Load `params` (classic names) into `module`, checking every shape first; buffers not given stay.

    `load_state_dict` copies each value into the module's own tensor, so `params` may be the shared reference
    parameters: the module never holds them (at GPT-2 size, a clone first would cost another 650 MB)."""
    state = module.state_dict()
    for name, value in params.items():
        if tuple(state[name].shape) != tuple(value.shape):
            fail(f"{what}: parameter {name} has shape {tuple(state[name].shape)}, expected {tuple(value.shape)}.")
    module.load_state_dict({**state, **params}, strict=True)


def snapshot(*tensors: Any) -> list[Tensor | None]:
    return [x.detach().clone() if isinstance(x, Tensor) else None for x in tensors]


IN_PLACE_ADVICE = ("Use out-of-place operations (`x = x - mean`, `masked_fill`, not `x -= mean` or `masked_fill_`): "
                   "callers still need the input.")


def input_modified(message: str) -> None:
    """Fail with `InputModified`, unless `uses_passing` is asking whether that is a dependency's only fault."""
    tolerated = _TOLERATE_IN_PLACE.get()
    if tolerated is not None:
        tolerated.append(message)
        return
    raise InputModified(message)


def assert_unchanged(before: list[Tensor | None], after: Sequence[Any], what: str, labels: Sequence[str] = ()) -> None:
    for i, (old, new) in enumerate(zip(before, after)):
        if old is not None and new.device == old.device and not t.equal(old, new.detach()):
            label = labels[i] if i < len(labels) else f"argument {i}"
            input_modified(f"{what} modified its input `{label}` in place. {IN_PLACE_ADVICE}")
            return


def passed(message: str) -> None:
    """Print the check's one ✓ line, with any note a dependency left (see `uses_passing`)."""
    notes = _NOTES.get() or []
    print(f"✓ {message}" + "".join(f" (note: {note})" for note in notes))


# ------------------------------------------------------------------------------------------------ dependencies


def _is_reference(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("utils.reference")


def learner_part(code: Any, name: str) -> Any:
    """The function or class called `name` that the learner's `code` (a function, or a class's own methods) uses,
    looked up where that code was defined (the notebook's globals); None when it is the course's reference."""
    classes = [k for k in code.__mro__ if (k.__module__ or "").split(".")[0] not in ("torch", "builtins")] \
        if isinstance(code, type) else []
    functions = [code] if inspect.isfunction(code) else [
        f for k in classes for f in vars(k).values() if inspect.isfunction(f)]
    for fn in functions:
        if _is_reference(fn) or name not in fn.__code__.co_names:
            continue
        part = fn.__globals__.get(name)
        if callable(part) and not _is_reference(part):
            return part
    return None


def uses_passing(part: Any, check: Callable[[Any], None], what: str, parent: str, exercise: str) -> None:
    """Run the check of exercise `exercise` on `part`, the learner's `what` that `parent` uses, before checking
    `parent`: a failure there is reported as that exercise's, so the learner fixes it where it belongs.

    A part that fails only by modifying its input in place (its values right) does not fail `parent`: its own
    check reports the rule, and `parent`'s ✓ line carries a note."""
    def run() -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            check(part)

    def blocked(exc: BaseException) -> None:
        first = str(exc).splitlines()[0]
        fail(f"{parent} uses your {what}, which does not pass checks.{exercise} yet: {first} "
             f"(fix {what} first: {parent} is checked once checks.{exercise} passes)")

    try:
        run()
        return
    except NotImplementedYet as exc:
        raise NotImplementedYet(f"{parent} uses your {what}, which is not implemented yet: finish it until "
                                f"checks.{exercise} passes.") from exc
    except InputModified:
        pass
    except AssertionError as exc:
        blocked(exc)
    token = _TOLERATE_IN_PLACE.set([])
    try:
        run()
    except (AssertionError, NotImplementedError) as exc:  # wrong beyond the in-place rule: that blocks `parent`
        blocked(exc)
    finally:
        _TOLERATE_IN_PLACE.reset(token)
    notes = _NOTES.get()
    if notes is not None:
        notes.append(f"your {what} modifies its input in place, which checks.{exercise} reports; its values are "
                     f"right, so {parent} was checked with it")


# ------------------------------------------------------------------------------------------ module exercises


@dataclass
class Case:
    """One input on which a module exercise is compared: its config, parameters, inputs and expected output."""

    label: str
    cfg: Any
    params: dict[str, Tensor]
    inputs: tuple
    expected: Tensor
    dims: tuple[str, ...] | None = None  # the output's dimension names, for messages ("batch", "pos", "d_model")


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


def _argument_names(fn) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _named_error(error: BaseException, mistakes: Sequence[Mistake], case: Case, call) -> str:
    """' This matches a known mistake, …' for the first mistake that raises `error`'s type and message on `case`."""
    for mistake in mistakes:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                run_module(mistake.impl, case, mistake.name, None, call)
        except AssertionError as exc:
            cause = exc.__cause__
            if cause is not None and type(cause) is type(error) and str(cause) == str(error):
                return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
        except Exception:  # any other failure of a mistake matches nothing
            continue
    return ""


def _named_in_place(error: InputModified, mistakes: Sequence[Mistake], case: Case, call) -> str:
    """' This matches a known mistake, …' for the first mistake that modifies the same input in place on `case`."""
    which = str(error).partition(" modified its input ")[2].split(" ")[0]
    for mistake in mistakes:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                run_module(mistake.impl, case, mistake.name, None, call)
        except InputModified as exc:
            if str(exc).partition(" modified its input ")[2].split(" ")[0] == which:
                return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
        except Exception:  # any other failure of a mistake matches nothing
            continue
    return ""


def check_module(
    Cls: type,
    *,
    what: str,
    names: Iterable[str],
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    hint: str = "",
    call=None,
    dims: Sequence[str] | None = None,
) -> int:
    """Compare a learner's module with the expected output on every case; returns the number of checks.
    `dims` names the output's dimensions for messages (a case's own `dims` wins)."""
    if not isinstance(Cls, type) or not issubclass(Cls, nn.Module):
        fail(f"Pass the class itself, e.g. checks.{what.lower()}({what}); got {describe(Cls)}.")
    names = list(names)
    for case in cases:
        try:
            out = run_module(Cls, case, what, names, call)
        except NotImplementedYet:
            raise
        except InputModified as exc:  # named when a catalogued mistake modifies the same input in place
            raise InputModified(f"{exc}{_named_in_place(exc, mistakes, case, call)}") from None
        except AssertionError as exc:
            # The learner's code raised (`call_learner` keeps the error as the cause): a catalogued mistake that
            # raises the same error on this case is named, e.g. a global GPT-2 matrix on a small random case.
            named = _named_error(exc.__cause__, mistakes, case, call) if exc.__cause__ is not None else ""
            if not named:
                raise
            raise AssertionError(f"{exc}{named}") from exc.__cause__

        def mistake_outputs(case=case):
            results = []
            for mistake in mistakes:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        results.append((mistake, run_module(mistake.impl, case, mistake.name, None, call)))
                except Exception:  # a mistake that cannot even run on this input matches nothing
                    continue
            return results

        assert_matches(out, case.expected, what, context=case.label, mistakes=mistake_outputs, hint=hint,
                       dims=case.dims or dims)
    return len(cases)
