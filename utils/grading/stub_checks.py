"""`utils.checks` inside the grading sandbox: runs the learner's code on a probe plan and writes what it returned.

This file is copied into the sandbox's course package as `utils/checks/__init__.py` (beside `_wire.py`, a
copy of utils/grading/wire.py), in place of the real checkers. The sandbox holds no reference solution, no
mistake catalogue and no expected value: only the plans in $TFS_PROBE_PLAN, which say what to call with
which inputs. `checks.layer_norm(LayerNorm)` builds `LayerNorm` with each recorded config, loads each
recorded set of parameters, calls it on each recorded input and writes the results (tensors as plain
numbers, exceptions as type and message) to $TFS_PROBE_OUT/layer_norm. The grader judges them outside
(utils/grading/trusted.py); what this module prints is replaced by the grader's verdict.

Nothing here decides a score, so nothing here needs to be protected from the learner's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import io
import json
import os
import warnings
from pathlib import Path

import torch as t
from torch import nn

from . import _flops
from ._spies import ModelProbe, SpyZero as _SpyZero
from . import _module_runs as module_runs
from . import _wire as wire

PLAN = Path(os.environ.get("TFS_PROBE_PLAN", "/probe/plan"))
OUT = Path(os.environ.get("TFS_PROBE_OUT", "/probe/out"))


@functools.cache
def _index() -> dict:
    try:
        return json.loads((PLAN / "index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def __getattr__(name: str):
    if name in _index():
        return functools.partial(_run, name)
    raise AttributeError(f"utils.checks has no checker {name!r} in this grading run")


@functools.cache
def _config_class(names: tuple[str, ...]):
    return dataclasses.make_dataclass("Config", list(names))


def _attend(spec: dict):
    """The fixed single-head attention a recorded call passes (built from its matrices with torch's own
    scaled_dot_product_attention)."""
    W_Q, W_K, W_V, positions = spec["W_Q"], spec["W_K"], spec["W_V"], spec.get("positions")
    causal, sign = bool(spec["causal"]), float(spec["sign"])

    def attend(x):
        if positions is not None:
            x = x + positions[: x.shape[1]]
        q, k, v = (x[:, None] @ W for W in (W_Q, W_K, W_V))
        return sign * t.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)[:, 0]

    return attend


def _metric(spec: dict):
    """Chapter 08's normalised logit difference: 0 at the corrupted run's value, 1 at the clean run's."""
    answers, distractors = spec["answers"], spec["distractors"]
    clean, corrupted = spec["clean"], spec["corrupted"]

    def metric(logits):
        last = logits[:, -1]
        diff = (last.gather(-1, answers[:, None]) - last.gather(-1, distractors[:, None])).mean()
        return (diff - corrupted) / (clean - corrupted)

    return metric


_MISSING = object()


@dataclasses.dataclass
class KVCache:
    """Chapter 06's cache, as its notebook gives it: each layer's keys and values, each [batch pos n_heads d_head]."""

    keys: list
    values: list

    @property
    def n_positions(self) -> int:
        return self.keys[0].shape[1] if self.keys else 0


@dataclasses.dataclass
class GQACache(KVCache):
    """Chapter 07's cache, as its notebook gives it: each layer's rotated keys and its values, each
    [batch pos n_kv_heads d_head]."""

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.keys + self.values)


CACHES = {"KVCache": KVCache, "GQACache": GQACache}


class _Decoder:
    """Rebuilds a recorded argument; remembers which plan tensor became which fresh tensor."""

    def __init__(self, tensors: dict, returned: dict | None = None, shared: dict | None = None) -> None:
        # `shared`: the models and probes of one object's ops (a trainer built with a model, then stepped): they
        # persist from op to op, and their parameters stay watched for changes
        self.shared = shared if shared is not None else {"models": {}, "made": {}, "probes": []}
        self.tensors, self.made, self.models, self.spies = tensors, dict(self.shared["made"]), self.shared["models"], []
        self.returned = returned if returned is not None else {}
        self.probe_calls = [len(p.calls) for p in self.shared["probes"]]

    def probe(self, doc: dict):
        model = self(doc["model"])
        for probe in self.shared["probes"]:
            if probe.model is model:
                return probe
        probe = ModelProbe(model).train(model.training)
        self.shared["probes"].append(probe)
        self.probe_calls.append(0)
        return probe

    def probe_reports(self) -> list:
        return [{"calls": [list(c) for c in p.calls[start:]], "training": p.training}
                for p, start in zip(self.shared["probes"], self.probe_calls)]

    def model(self, doc: dict):
        """The course model a plan describes (chapter 03's EducationalTransformer, which the notebooks of later
        chapters import too), built once per call; its parameters are what `made` watches for changes."""
        key = json.dumps(doc, sort_keys=True)
        if key not in self.models:
            from utils.reference.model import EducationalTransformer, TransformerConfig

            if "gpt2" in doc:  # the reference GPT-2 in the course's model, from the demo reference here
                from utils.reference_model import config_fields, shared_params

                model = EducationalTransformer(TransformerConfig(**config_fields(doc["gpt2"])))
                model.load_state_dict({**model.state_dict(), **shared_params(doc["gpt2"])}, strict=True)
            else:
                model = EducationalTransformer(TransformerConfig(**self(doc["cfg"])))
                if not doc.get("layer_norms", True):
                    from utils.induction import strip_layer_norms

                    strip_layer_norms(model)
                if doc.get("dtype") in ("float64", "float16", "bfloat16"):
                    model.to(getattr(t, doc["dtype"]))
                model.load_state_dict({name: self.tensors[ref["$t"]] for name, ref in doc["state"]["$dict"].items()},
                                      strict=True)
                own = model.state_dict()
                for name, ref in doc["state"]["$dict"].items():
                    self.made[ref["$t"]] = self.shared["made"][ref["$t"]] = own[name]
            model.train(bool(doc.get("training")))
            if doc.get("frozen"):
                model.requires_grad_(False)
            self.models[key] = model
        return self.models[key]

    def hooks_left(self) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                   for model in self.models.values() for m in model.modules())

    def __call__(self, doc):
        if isinstance(doc, list):
            return [self(item) for item in doc]
        if not isinstance(doc, dict):
            return doc
        if "$t" in doc:
            x = self.tensors[doc["$t"]].clone()
            self.made[doc["$t"]] = x
            return x
        if "$seq" in doc:
            items = [self(item) for item in doc["items"]]
            return tuple(items) if doc["$seq"] == "tuple" else items
        if "$dict" in doc:
            return {k: self(v) for k, v in doc["$dict"].items()}
        if "$cfg" in doc:
            fields = doc["$cfg"]
            return _config_class(tuple(fields))(**fields)
        if "$tokenizer" in doc:
            from utils.tokenizer import gpt2_tokenizer

            return gpt2_tokenizer()
        if "$returned" in doc:  # what the learner's code returned from an earlier call (its own KV cache)
            trace, index = doc["$returned"]
            out = self.returned.get(trace)
            if out is _MISSING or out is None:
                raise ValueError("an earlier call this one builds on did not return")
            return (out if type(out) in (tuple, list) else [out])[index]
        if "$probe" in doc:
            return self.probe(doc["$probe"])
        if "$spy_zero" in doc:
            spy = _SpyZero()
            self.spies.append(spy)
            return spy
        if "$kv" in doc:
            return CACHES.get(doc.get("name"), KVCache)(self(doc["$kv"]["keys"]), self(doc["$kv"]["values"]))
        if "$llama" in doc:  # chapter 07's decoder, over transformers' Llama modules
            key = json.dumps(doc, sort_keys=True)
            if key not in self.shared.setdefault("llama", {}):
                from ._llama import LlamaStyleDecoder

                body = doc["$llama"]
                cfg = self(body["cfg"])
                model = LlamaStyleDecoder(_config_class(tuple(cfg))(**cfg), self(body["state"]))
                self.shared["llama"][key] = model.train(bool(body.get("training")))
            return self.shared["llama"][key]
        if "$metric" in doc:
            return _metric({k: self(v) for k, v in doc["$metric"].items()})
        if "$attend" in doc:
            return _attend({k: self(v) for k, v in doc["$attend"].items()})
        if "$model" in doc:
            return self.model(doc["$model"])
        if "$cache" in doc:
            from transformer_lens import ActivationCache

            items = {k: self(v) for k, v in doc["$cache"].items()}
            if "$cache_model" in doc:
                return ActivationCache(items, self(doc["$cache_model"]))
            from utils.reference_model import reference_gpt2

            return ActivationCache(items, reference_gpt2())
        raise ValueError(f"unknown recorded value {sorted(doc)[:3]}")


def _raised(exc: BaseException) -> dict:
    args = [a for a in exc.args if isinstance(a, (str, int, float))]
    return {"type": type(exc).__name__, "message": str(exc)[:2000],
            "args": args if len(args) == len(exc.args) else None}


def _describe(value) -> str:
    return type(value).__name__


def _resolve(arg, target: list, cache: dict):
    """The class at `target`: the argument itself, or the class of a sub-module of an instance of it."""
    cls = arg
    for step in target:
        key = json.dumps(step, sort_keys=True) + repr(id(cls))
        if key not in cache:
            fields = step["cfg"]
            cache[key] = type(getattr(cls(_config_class(tuple(fields))(**fields)), step["attr"]))
        cls = cache[key]
    return cls


def _call(fn, ops: dict, decode: _Decoder, writer: wire.Writer) -> dict:
    args, kwargs = decode(ops["args"])
    before = {key: x.clone() for key, x in decode.made.items()}
    rng = ops.get("rng")
    if isinstance(rng, dict) and "$t" in rng:  # the random state the checker's call had (chapter 06's samplers)
        t.random.set_rng_state(decode.tensors[rng["$t"]].clone())
    counter = _flops.MatmulFlops() if ops.get("flops") else contextlib.nullcontext()
    decode.returned[decode.index] = _MISSING
    with t.set_grad_enabled(bool(ops.get("grad"))), counter:
        out = fn(*args, **kwargs)
    decode.returned[decode.index] = out  # a later call may be handed back part of it
    mutated = {}
    for key, x in decode.made.items():
        old = before[key]
        if x.shape != old.shape or x.dtype != old.dtype or not t.equal(x, old):
            mutated[key] = writer.tensor(x)
    done = {"out": wire.encode(out, writer, _special(writer)), "mutated": mutated, "hooks_left": decode.hooks_left()}
    if decode.spies:
        done["spies"] = [bool(spy.seen) for spy in decode.spies]
    if decode.shared["probes"]:
        done["probes"] = decode.probe_reports()
    if ops.get("flops"):
        done["flops"] = int(counter.flops)
    return done


def _special(writer: wire.Writer):
    """The encoder of what the learner's code returns beyond tensors: chapter 06's KVCache and chapter 07's
    GQACache (the notebooks' given dataclasses), their keys and values written by `writer`."""

    def encode(value):
        name = type(value).__name__
        if name in CACHES and dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"$kv": {"keys": [wire.encode(x, writer) for x in getattr(value, "keys", [])],
                            "values": [wire.encode(x, writer) for x in getattr(value, "values", [])]}, "name": name}
        return None

    return encode


def _trace(arg, trace: dict, tensors: dict, writer: wire.Writer, classes: dict, returned: dict, index: int) -> list:
    results = []
    module = None
    shared = {"models": {}, "made": {}, "probes": []}
    for op in trace["ops"]:
        decode = _Decoder(tensors, returned, shared)
        decode.index = index
        try:
            kind = op["op"]
            if kind == "construct":
                cls = _resolve(arg, trace["target"], classes)
                args, kwargs = decode(op["args"]) if op.get("many") else (decode(op["args"]), {})
                rng = op.get("rng")
                if isinstance(rng, dict) and "$t" in rng:
                    t.random.set_rng_state(tensors[rng["$t"]].clone())
                module = cls(*args, **kwargs)
                if isinstance(module, nn.Module):
                    state = [[k, list(v.shape), str(v.dtype)] for k, v in module.state_dict().items()]
                    try:
                        names = [n for n in inspect.signature(module.forward).parameters]
                    except (TypeError, ValueError):
                        names = []
                else:  # chapter 05's trainer: an object built from the model, not a module
                    state, names = [], []
                results.append({"ok": {"state": state, "forward_args": names}})
            elif kind == "load":
                (given,) = decode(op["args"])
                module.load_state_dict({**module.state_dict(), **given}, strict=op["strict"])
                results.append({"ok": None})
            elif kind == "eval":
                module.eval()
                results.append({"ok": None})
            elif kind == "attr":
                value = getattr(module, op["name"])
                if isinstance(value, t.Tensor):  # chapter 05's trainer.val_tokens, read back by the checker
                    results.append({"ok": {"tensor": wire.encode(value, writer)}})
                    continue
                results.append({"ok": {"module": isinstance(value, nn.Module), "class": f"{id(type(value))}",
                                       "name": type(value).__name__, "describe": _describe(value)}})
            elif kind == "call":
                fn = arg if module is None else (module if op["method"] == "forward" else getattr(module, op["method"]))
                results.append({"ok": _call(fn, op, decode, writer)})
            elif kind == "run" and op.get("kind") in module_runs.RUNS:  # hooks and gradients (requirements.py)
                (args,) = decode(op["args"])
                out = module_runs.RUNS[op["kind"]](module, *args)
                results.append({"ok": {"out": wire.encode(out, writer), "mutated": {}}})
            else:
                break
        except Exception as exc:  # the learner's code raised: the grader reports it as the checker would
            results.append({"raised": _raised(exc)})
            if op["op"] == "construct":
                break
    return results


def _argument(arg) -> dict:
    if isinstance(arg, type):
        kind = "module_class" if issubclass(arg, nn.Module) else "class"
    elif callable(arg):
        kind = "function"
    else:
        kind = "other"
    value = arg if isinstance(arg, (int, float, str)) else None
    return {"kind": kind, "name": getattr(arg, "__name__", type(arg).__name__) if kind != "other" else _describe(arg),
            "value": value}


def _run(exercise: str, arg, *more) -> None:
    plan, tensors = wire.read(PLAN / exercise)
    writer = wire.Writer()
    results, classes, returned = [], {}, {}
    args = (arg, *more)
    with t.random.fork_rng(devices=[]), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        t.manual_seed(0)
        for number, trace in enumerate(plan["traces"]):
            index = trace.get("arg", 0)
            if not isinstance(index, int) or not 0 <= index < len(args):
                results.append([])  # the grader asked for an argument the cell did not pass
                continue
            results.append(_trace(args[index], trace, tensors, writer, classes, returned, number))
    writer.save(OUT / exercise, {"exercise": exercise, "argument": _argument(arg),
                                 "arguments": [_argument(a) for a in args], "traces": results})
    print(f"checks.{exercise}: your code ran on {len(results)} recorded inputs; the grader judges the results.")
