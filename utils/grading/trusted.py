"""The trusted judge: every checker of a covered chapter runs in the grader's process, never in the learner's.

Record (once per chapter and reference kind): each checker runs with a recording stand-in for the learner's
class or function that answers every call with the reference's answer and writes the call down: which
object (the class passed, or the class of one of its sub-modules), the config it was built with, the
parameters loaded into it, the inputs of each forward call. That is the exercise's probe plan: data only
(JSON and safetensors, wire.py).

The sandbox's check stub (stub_checks.py) runs the learner's code on exactly those calls and writes back
what it returned, as plain tensors.

Replay: the same checker runs again, here, with a replay stand-in whose every call is answered from the
learner's recorded results, matched by the call's content (object, config, parameters and inputs, through
digests). So the checker computes the expected values, runs the mistake catalogue and words the message
as it would in the learner's process, but it only ever sees numbers. A call the plan does not hold (the
checker asked something the recording never did) raises `Unverifiable`, and the exercise scores 0.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import inspect
import io
import json
from dataclasses import dataclass
from typing import Any

import torch as t
from torch import nn

from utils.checks import flops, module_runs
from utils.grading import wire
from utils.grading.plan_encoding import PlanError, _encode, digest, returned_parts, tensor_keys  # noqa: F401 (PlanError: re-exported)


class Unverifiable(BaseException):
    """The learner's results do not answer a call the checker makes (a BaseException, so that no checker's
    `except Exception` turns it into an ordinary failure message)."""


# ---------------------------------------------------------------------------------------------- recording


class Recorder:
    """The probe plan being written: one trace per object the checker builds (or per function call)."""

    def __init__(self) -> None:
        self.writer = wire.Writer()
        self.traces: list[dict] = []
        self.classes: dict[str, type] = {}
        self.returned: dict = {}  # id -> (object, [trace, index]): results a checker may pass back

    def trace(self, target: list, arg: int = 0) -> dict:
        trace = {"target": target, "ops": [], "fps": [], "keys": [], **({"arg": arg} if arg else {})}
        self.traces.append(trace)
        return trace

    def op(self, trace: dict, doc: dict, args: Any = ()) -> None:
        rng = t.random.get_rng_state()  # before anything here runs
        encoded = _encode(args, self.writer, self.returned)
        extra = {}
        if doc.get("op") in ("call", "construct"):  # the stub calls with the checker's random state, and counts FLOPs
            extra["rng"] = self.writer.tensor(rng)
            if flops.MatmulFlops.active and doc.get("op") == "call":
                extra["flops"] = True
        trace["ops"].append({**doc, "args": encoded, **extra})
        trace["fps"].append(digest(doc, args, self.returned)[0])
        trace["keys"].append(tensor_keys(encoded))

    def document(self, exercise: str, arguments: list[str]) -> dict:
        return {"exercise": exercise, "argument": arguments[0], "arguments": arguments, "traces": self.traces}


def _given(state: dict, sd: dict) -> dict:
    """The entries of a state dict passed to load_state_dict that are not the module's own tensors."""
    return {k: v for k, v in sd.items() if state.get(k) is not v}


class _Recording(module_runs.StandIn, nn.Module):
    """A learner class stand-in that runs the reference class and writes down every call."""

    _rec: Recorder
    _real_cls: type
    _target: list

    def __init__(self, *args, **kwargs) -> None:  # noqa: D107 (nn.Module's own __init__ is skipped on purpose)
        object.__setattr__(self, "_trace", self._rec.trace(self._target))
        object.__setattr__(self, "_cfg", args[0] if args else None)
        object.__setattr__(self, "_state", {})
        doc, encoded = construct_op(args, kwargs)
        self._rec.op(self._trace, doc, encoded)
        object.__setattr__(self, "_real", self._real_cls(*args, **kwargs))

    def _op(self, doc: dict, args: Any = ()) -> None:
        if self._trace is None:
            raise PlanError(f"a checker used a sub-module of {self._real_cls.__name__} directly")
        self._rec.op(self._trace, doc, args)

    def state_dict(self, *args, **kwargs):
        state = self._real.state_dict(*args, **kwargs)
        object.__setattr__(self, "_state", dict(state))
        return state

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._op({"op": "load", "strict": strict}, (_given(self._state, state_dict),))
        return self._real.load_state_dict(state_dict, strict=strict)

    def eval(self):
        self._op({"op": "eval"})
        self._real.eval()
        return self

    def parameters(self, recurse: bool = True):
        return self._real.parameters(recurse)

    def buffers(self, recurse: bool = True):
        return self._real.buffers(recurse)

    @property
    def forward(self):
        return self._real.forward

    def _call(self, method: str, args: tuple, kwargs: dict):
        self._op({"op": "call", "method": method, "grad": t.is_grad_enabled()}, (args, kwargs))
        return getattr(self._real, method)(*args, **kwargs) if method != "forward" else self._real(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        return self._call("forward", args, kwargs)

    def apply_causal_mask(self, *args, **kwargs):
        return self._call("apply_causal_mask", args, kwargs)

    def _module_run(self, kind: str, args: tuple):
        self._op({"op": "run", "kind": kind}, (list(args),))
        return module_runs.RUNS[kind](self._real, *args)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        value = getattr(self._real, name)
        if isinstance(value, t.Tensor):  # an attribute the checker reads back (chapter 05's trainer.val_tokens)
            self._op({"op": "attr", "name": name})
            return value
        if callable(value) and not isinstance(value, nn.Module):  # a method: chapter 05's trainer.training_step
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        if not isinstance(value, nn.Module):
            raise PlanError(f"a checker read {self._real_cls.__name__}.{name}, which is not a sub-module")
        self._op({"op": "attr", "name": name})
        target = [*self._target, {"cfg": dataclasses.asdict(self._cfg), "attr": name}]
        cls = recording_class(self._rec, type(value), target)
        view = cls.__new__(cls)
        for key, val in {"_trace": None, "_real": value, "_cfg": self._cfg, "_state": {}}.items():
            object.__setattr__(view, key, val)
        return view

    def __setattr__(self, name, value):
        raise PlanError(f"a checker set {name} on the learner's module")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(recording)"


def construct_op(args: tuple, kwargs: dict) -> tuple[dict, Any]:
    """How a constructor call is written down: `(cfg,)` for the usual `Cls(cfg)`, else all its arguments."""
    if len(args) == 1 and not kwargs:
        return {"op": "construct"}, args
    return {"op": "construct", "many": True}, (args, kwargs)


def recording_class(rec: Recorder, real_cls: type, target: list) -> type:
    """One stand-in class per target path, so that sub-modules at different paths are different classes."""
    key = json.dumps(target, sort_keys=True)
    if key not in rec.classes:
        rec.classes[key] = type(real_cls.__name__, (_Recording,), {"_rec": rec, "_real_cls": real_cls, "_target": target})
    return rec.classes[key]


class RecordingFunction:
    def __init__(self, rec: Recorder, fn, arg: int = 0) -> None:
        self._rec, self._fn, self._arg = rec, fn, arg
        self.__name__ = getattr(fn, "__name__", "function")

    def __call__(self, *args, **kwargs):
        trace = self._rec.trace([], self._arg)
        self._rec.op(trace, {"op": "call", "method": "__call__", "grad": t.is_grad_enabled()}, (args, kwargs))
        out = self._fn(*args, **kwargs)
        index = len(self._rec.traces) - 1
        for i, part in returned_parts(out):
            self._rec.returned[id(part)] = (part, [index, i])
        return out


def record(exercise: str, checker, *references) -> tuple[dict, dict[str, t.Tensor]]:
    """Run `checker` on recording stand-ins for `references` (a class, or one or more functions, as the test
    cell passes them): (plan document, its tensors)."""
    rec = Recorder()
    if isinstance(references[0], type) and len(references) > 1:
        raise PlanError(f"checks.{exercise}: a class with further arguments cannot be recorded yet")
    stand_ins = [recording_class(rec, ref, []) if isinstance(ref, type) else RecordingFunction(rec, ref, i)
                 for i, ref in enumerate(references)]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            checker(*stand_ins)
    except (AssertionError, NotImplementedError) as exc:
        raise PlanError(f"the reference fails checks.{exercise} when recorded: {str(exc)[:300]}") from exc
    kinds = ["class" if isinstance(ref, type) else "function" for ref in references]
    return rec.document(exercise, kinds), rec.writer.tensors


# ------------------------------------------------------------------------------------------------- replay


def _rebuild(raised: Any) -> BaseException:
    """The learner's exception, with its type name and message (builtin types are the builtin types)."""
    if not isinstance(raised, dict):
        return Unverifiable("the sandbox's report of an exception is unreadable")
    name, message = str(raised.get("type", "Exception")), str(raised.get("message", ""))
    args = raised.get("args")
    base = getattr(builtins, name, None)
    if isinstance(base, type) and issubclass(base, Exception):
        try:
            return base(*args) if isinstance(args, list) else base(message)
        except Exception:  # an exception type whose constructor wants other arguments
            return base(message)
    return type(name, (Exception,), {"__str__": lambda self: message})()


def _opaque(name: str) -> Any:
    return type(str(name)[:100] or "object", (), {})()


def decode(doc: Any, tensors: dict[str, t.Tensor]) -> Any:
    """A value the sandbox returned, rebuilt from data: tensors, scalars, lists, tuples, dicts, else opaque."""
    if isinstance(doc, wire.SCALARS):
        return doc
    if isinstance(doc, list):
        return [decode(item, tensors) for item in doc]
    if not isinstance(doc, dict):
        return _opaque("object")
    if "$t" in doc:
        value = tensors.get(doc["$t"]) if isinstance(doc["$t"], str) else None
        if value is None:
            raise Unverifiable("the sandbox's results refer to a tensor they do not hold")
        value = value.clone()
        if doc.get("grad") is True and value.is_floating_point():  # still attached to a graph in the sandbox
            value.requires_grad_(True)
        return value
    if "$seq" in doc:
        items = [decode(item, tensors) for item in doc.get("items", [])]
        return tuple(items) if doc["$seq"] == "tuple" else items
    if "$dict" in doc and isinstance(doc["$dict"], dict):
        return {str(k): decode(v, tensors) for k, v in doc["$dict"].items()}
    if "$kv" in doc and isinstance(doc["$kv"], dict):  # chapter 06's KVCache or 07's GQACache, given dataclasses
        if doc.get("name") == "GQACache":
            from utils.reference.modern import GQACache as cache_class
        else:
            from utils.reference.sampling import KVCache as cache_class

        body = doc["$kv"]
        keys, values = decode(body.get("keys", []), tensors), decode(body.get("values", []), tensors)
        if isinstance(keys, list) and isinstance(values, list):
            return cache_class(keys, values)
        return _opaque(cache_class.__name__)
    return _opaque(doc.get("$opaque", "object"))


@dataclass
class Replay:
    """A plan and the learner's results for it: what the replay stand-ins answer from."""

    plan: dict
    results: dict
    tensors: dict[str, t.Tensor]

    def __post_init__(self) -> None:
        self.returned: dict = {}  # as Recorder.returned, for what the replayed calls returned
        self.undo: list = []  # what `restore` takes back: the grader's models are cached and shared
        self.classes: dict[str, type] = {}
        self.traces = self.plan["traces"]
        outcome = self.results.get("traces") if isinstance(self.results, dict) else None
        self.outcome = outcome if isinstance(outcome, list) else []

    def answer(self, candidates: list[int], fps: list[str], what: str) -> tuple[list[int], Any, int]:
        """The recorded result of the latest op `fps[-1]` among the traces that match every op so far."""
        k = len(fps) - 1
        matching = [i for i in candidates if self.traces[i]["fps"][:k + 1] == fps]
        if not matching:
            raise Unverifiable(f"{what} was called on inputs the grader did not prepare")
        i = matching[0]
        ops = self.outcome[i] if i < len(self.outcome) and isinstance(self.outcome[i], list) else []
        result = ops[k] if k < len(ops) and isinstance(ops[k], dict) else None
        if result is None:
            raise Unverifiable(f"{what} did not run to this point in the sandbox (a time limit, a crash, or a "
                               "check that was not reached)")
        if "raised" in result:
            raise _rebuild(result["raised"])
        return matching, result.get("ok"), i

    def changed(self, target: t.Tensor, new: t.Tensor) -> None:
        """Apply the learner's in-place change to `target`, and remember how to take it back."""
        with t.no_grad():
            old = target.detach().clone()
            try:
                target.copy_(new)
                self.undo.append(lambda: t.no_grad()(target.copy_)(old))
            except RuntimeError:  # a shape or dtype the learner's in-place code changed
                target.set_(new)
                self.undo.append(lambda: t.no_grad()(target.set_)(old))

    def restore(self) -> None:
        while self.undo:
            self.undo.pop()()

    def output(self, ok: Any, trace: int, k: int, tensors: list[t.Tensor], known: dict | None = None,
               probes: list | None = None) -> Any:
        """The call's returned value; inputs the learner's code changed in place are changed here too (`known`:
        the tensors of the object's earlier ops, such as the model a trainer was built with)."""
        if not isinstance(ok, dict):
            raise Unverifiable("the sandbox's report of a call is unreadable")
        keys = self.traces[trace]["keys"][k]
        by_key = {**(known or {}), **{key: x for key, x in zip(keys, tensors)}}
        mutated = ok.get("mutated") or {}
        if isinstance(mutated, dict):
            for key, ref in mutated.items():
                if key in by_key:
                    target, new = by_key[key], decode(ref, self.tensors)
                    if isinstance(new, t.Tensor):
                        self.changed(target, new)
        reports = ok.get("probes")
        if isinstance(reports, list):  # chapter 05's probe: how the learner's code ran the model it wraps
            for probe, report in zip(list(probes or []) + list(getattr(tensors, "probes", [])), reports):
                if isinstance(report, dict) and isinstance(report.get("calls"), list):
                    probe.calls.extend((bool(a), bool(b)) for a, b in
                                       (c for c in report["calls"] if isinstance(c, list) and len(c) == 2))
                    nn.Module.__setattr__(probe, "training", bool(report.get("training")))
        reported = ok.get("flops")
        if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
            flops.add_reported(reported)  # the work the learner's code did in the sandbox, for the checker's counter
        seen = ok.get("spies")
        if isinstance(seen, list):
            for spy, flag in zip(getattr(tensors, "spies", []), seen):
                spy.seen = spy.seen or flag is True
        hooks = ok.get("hooks_left")
        if isinstance(hooks, int) and not isinstance(hooks, bool) and hooks > 0:  # hooks left on a given model
            for model in getattr(tensors, "models", []):
                self.undo.append(model.register_forward_hook(_left_behind).remove)
        return decode(ok.get("out"), self.tensors)

    def replay_class(self, target: list, name: str) -> type:
        key = json.dumps(target, sort_keys=True)
        if key not in self.classes:
            self.classes[key] = type(name, (_Replayed,), {"_replay": self, "_target": target})
        return self.classes[key]

    def arguments(self) -> list:
        """The stand-ins for every argument the test cell passed (the plan says how many)."""
        first = self.argument()
        kinds = self.plan.get("arguments") or [self.plan["argument"]]
        given = self.results.get("arguments") if isinstance(self.results, dict) else None
        given = given if isinstance(given, list) else []
        rest = []
        for i in range(1, min(len(kinds), len(given))):  # as many as the test cell passed in the sandbox
            arg = given[i] if i < len(given) and isinstance(given[i], dict) else {}
            if kinds[i] == "function" and arg.get("kind") == "function":
                rest.append(ReplayedFunction(self, str(arg.get("name", "function")), i))
            else:
                raise Unverifiable(f"argument {i + 1} of the check was not recorded in the sandbox")
        return [first, *rest]

    def argument(self) -> Any:
        arg = self.results.get("argument") if isinstance(self.results, dict) else None
        if not isinstance(arg, dict):
            raise Unverifiable("the check did not run in the sandbox, so nothing of your code was recorded")
        kind, name = arg.get("kind"), str(arg.get("name", "object"))
        if kind in ("module_class", "class") and self.plan["argument"] == "class":  # a module, or chapter 05's trainer
            return self.replay_class([], name)
        if kind == "function" and self.plan["argument"] == "function":
            return ReplayedFunction(self, name)
        if kind == "module_class":
            return type(name, (nn.Module,), {})
        if kind == "class":
            return type(name, (), {})
        if kind == "function":
            return lambda *args, **kwargs: None
        value = arg.get("value")
        return value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else _opaque(name)


def _left_behind(module, args, output):
    """Stands for a hook the learner's code left on a model in the sandbox (it changes nothing here)."""
    return None


def _signature(names: Any):
    params = [inspect.Parameter(str(n), inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names or []
              if str(n).isidentifier()]

    def forward(*args, **kwargs):
        raise Unverifiable("a checker called forward directly")

    forward.__signature__ = inspect.Signature(params)
    return forward


class _Replayed(module_runs.StandIn, nn.Module):
    """A learner class stand-in whose every call is answered from the learner's recorded results."""

    _replay: Replay
    _target: list

    def __init__(self, *args, **kwargs) -> None:  # noqa: D107 (nn.Module's own __init__ is skipped on purpose)
        replay = self._replay
        cfg = args[0] if args else None
        doc, encoded = construct_op(args, kwargs)
        fp, seen = digest(doc, encoded)
        target = json.dumps(self._target, sort_keys=True)
        candidates = [i for i, tr in enumerate(replay.traces) if json.dumps(tr["target"], sort_keys=True) == target]
        candidates, ok, trace = replay.answer(candidates, [fp], f"{type(self).__name__}(cfg)")
        info = ok if isinstance(ok, dict) else {}
        known = dict(zip(replay.traces[trace]["keys"][0], seen))  # what later ops may report changed
        for key, val in {"_cfg": cfg, "_fps": [fp], "_candidates": candidates, "_info": info, "_state": {},
                         "_known": known, "_probes": list(getattr(seen, "probes", []))}.items():
            object.__setattr__(self, key, val)

    def _op(self, doc: dict, args: Any = (), what: str = "") -> tuple[Any, int, list[t.Tensor]]:
        fp, tensors = digest(doc, args)
        fps = [*self._fps, fp]
        candidates, ok, trace = self._replay.answer(self._candidates, fps, what or type(self).__name__)
        object.__setattr__(self, "_fps", fps)
        object.__setattr__(self, "_candidates", candidates)
        return ok, trace, tensors

    def state_dict(self, *args, **kwargs):
        state = {}
        for entry in self._info.get("state", []):
            try:
                name, shape, dtype = entry
                state[str(name)] = t.zeros([int(s) for s in shape], dtype=getattr(t, str(dtype).replace("torch.", "")))
            except (TypeError, ValueError, AttributeError, RuntimeError):
                raise Unverifiable("the sandbox's report of the module's parameters is unreadable") from None
        object.__setattr__(self, "_state", dict(state))
        return state

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        self._op({"op": "load", "strict": strict}, (_given(self._state, state_dict),), f"{type(self).__name__}.load_state_dict")

    def eval(self):
        self._op({"op": "eval"})
        return self

    def parameters(self, recurse: bool = True):
        return iter(())

    buffers = parameters

    @property
    def forward(self):
        return _signature(self._info.get("forward_args"))

    def _call(self, method: str, args: tuple, kwargs: dict):
        doc = {"op": "call", "method": method, "grad": t.is_grad_enabled()}
        ok, trace, tensors = self._op(doc, (args, kwargs), f"{type(self).__name__}.{method}")
        return self._replay.output(ok, trace, len(self._fps) - 1, tensors, self._known, self._probes)

    def __call__(self, *args, **kwargs):
        return self._call("forward", args, kwargs)

    def apply_causal_mask(self, *args, **kwargs):
        return self._call("apply_causal_mask", args, kwargs)

    def _module_run(self, kind: str, args: tuple):
        ok, trace, tensors = self._op({"op": "run", "kind": kind}, (list(args),), f"{type(self).__name__} ({kind})")
        return self._replay.output(ok, trace, len(self._fps) - 1, tensors)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if self._method(name):
            return lambda *args, **kwargs: self._call(name, args, kwargs)
        ok, _, _ = self._op({"op": "attr", "name": name}, (), f"{type(self).__name__}.{name}")
        ok = ok if isinstance(ok, dict) else {}
        if "tensor" in ok:
            value = decode(ok["tensor"], self._replay.tensors)
            if not isinstance(value, t.Tensor):
                raise Unverifiable(f"the sandbox's report of {type(self).__name__}.{name} is unreadable")
            return value
        if not ok.get("module"):
            return _opaque(ok.get("describe", "object"))
        token = str(ok.get("class", ""))
        cls = self._replay.classes.get(f"token:{token}")
        if cls is None:
            target = [*self._target, {"cfg": dataclasses.asdict(self._cfg), "attr": name}]
            cls = self._replay.replay_class(target, str(ok.get("name", "Module")))
            self._replay.classes[f"token:{token}"] = cls
        return cls.__new__(cls)

    def _method(self, name: str) -> bool:
        """Whether the plan's next op on this object is a call of method `name` (not an attribute read)."""
        k = len(self._fps)
        return any(k < len(self._replay.traces[i]["ops"]) and self._replay.traces[i]["ops"][k].get("op") == "call"
                   and self._replay.traces[i]["ops"][k].get("method") == name for i in self._candidates)

    def __setattr__(self, name, value):
        raise Unverifiable(f"a checker set {name} on the learner's module")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(replayed)"


class ReplayedFunction:
    def __init__(self, replay: Replay, name: str, arg: int = 0) -> None:
        self._replay, self.__name__, self._arg = replay, name, arg

    def __call__(self, *args, **kwargs):
        doc = {"op": "call", "method": "__call__", "grad": t.is_grad_enabled()}
        fp, tensors = digest(doc, (args, kwargs), self._replay.returned)
        candidates = [i for i, tr in enumerate(self._replay.traces) if tr["target"] == [] and tr.get("arg", 0) == self._arg]
        _, ok, trace = self._replay.answer(candidates, [fp], self.__name__)
        out = self._replay.output(ok, trace, 0, tensors)
        for i, part in returned_parts(out):
            self._replay.returned[id(part)] = (part, [trace, i])
        return out


@dataclass(frozen=True)
class Verdict:
    passed: bool
    ename: str  # the exception's type name when failed ("" when passed)
    message: str  # the ✓ line, or the failure message


def judge(exercise: str, checker, plan: dict, results: Any, tensors: dict[str, t.Tensor]) -> Verdict:
    """Run `checker` here on the learner's recorded results; its pass line or its failure message."""
    out = io.StringIO()
    replay = Replay(plan, results if isinstance(results, dict) else {}, tensors)
    try:
        stand_ins = replay.arguments()
        with contextlib.redirect_stdout(out):
            checker(*stand_ins)
    except Unverifiable as exc:
        return Verdict(False, "Unverifiable", f"checks.{exercise} could not be verified by the grader: {exc}.")
    except (AssertionError, NotImplementedError) as exc:
        return Verdict(False, type(exc).__name__, str(exc))
    except Exception as exc:  # the checker crashed on what the learner's code returned: that is no pass
        return Verdict(False, type(exc).__name__,
                       f"checks.{exercise} could not judge what your code returned: {type(exc).__name__}: {exc}")
    finally:
        replay.restore()
    return Verdict(True, "", out.getvalue().strip())
