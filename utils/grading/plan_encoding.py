"""How the trusted judge writes a checker's arguments down as data (trusted.py records and replays with it).

Tensors go by reference into the plan's safetensors file (wire.py); configs, tokenizers, chapter 01's fixed
attention function, chapter 08's patching metric, the course's own models (chapter 03's EducationalTransformer,
which chapters 04 and 08 are handed) and their activation caches by what they are, so that the sandbox's stub can
rebuild them. `digest` is the same encoding with every tensor replaced by a fingerprint: how a replayed call is
matched with a recorded one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import torch as t
from torch import nn

from utils.grading import wire


class PlanError(RuntimeError):
    """A checker did something the recording stand-in cannot write down as data."""


def course_model(x: Any) -> bool:
    """Whether `x` is the course's own EducationalTransformer (chapter 03's, handed out to later chapters)."""
    return isinstance(x, nn.Module) and type(x).__name__ == "EducationalTransformer" and \
        type(x).__module__ == "utils.reference.model"


def _reference_gpt2_kind(model: nn.Module) -> str | None:
    """The reference kind when `model` is the reference GPT-2 in the course's model (chapter 04's
    `gpt2_course_model()`, cached): the sandbox builds that one from its own demo reference."""
    from utils.reference.interp import gpt2_course_model
    from utils.reference_model import reference_info

    with t.random.fork_rng(devices=[]):  # building it the first time draws initial weights: the checker's random
        kind = reference_info().kind      # state must be as if this never ran
        return kind if model is gpt2_course_model() else None


def _model_doc(model: nn.Module) -> dict:
    """A course model as data: its config, its parameters and buffers (or, for the reference GPT-2, its kind),
    whether its LayerNorms were taken out (the induction model), whether it trains and is frozen."""
    doc = {"training": model.training, "frozen": not any(p.requires_grad for p in model.parameters())}
    kind = _reference_gpt2_kind(model)
    if kind is not None:
        return {**doc, "gpt2": kind}
    dtype = next(iter(model.state_dict().values())).dtype
    return {**doc, "dtype": str(dtype).replace("torch.", ""),
            "cfg": {f.name: getattr(model.cfg, f.name) for f in dataclasses.fields(model.cfg)},
            "state": dict(model.state_dict()), "layer_norms": not isinstance(model.ln_final, nn.Identity)}


CACHES = ("KVCache", "GQACache")  # chapter 06's and chapter 07's caches, dataclasses the notebooks give


def _cache(x: Any) -> bool:
    return type(x).__name__ in CACHES and dataclasses.is_dataclass(x) and not isinstance(x, type)


def llama_decoder(x: Any) -> bool:
    """Whether `x` is chapter 07's reference LlamaStyleDecoder (its kv_rope check hands it to the learner's code)."""
    return isinstance(x, nn.Module) and type(x).__name__ == "LlamaStyleDecoder" and \
        type(x).__module__ == "utils.reference.modern"


def special(x: Any) -> dict | None:
    """The arguments checkers pass that are not tensors or scalars, encoded by what they are."""
    if course_model(x):
        return {"$model": _model_doc(x)}
    if llama_decoder(x):  # rebuilt in the sandbox from transformers' own Llama modules (stub_llama.py)
        return {"$llama": {"cfg": dataclasses.asdict(x.cfg), "state": dict(x.state_dict()), "training": x.training}}
    if type(x).__name__ == "ModelProbe" and isinstance(x, nn.Module) and course_model(getattr(x, "model", None)):
        return {"$probe": {"model": x.model}}  # chapter 05's wrapper that notes how the model was run
    if type(x).__name__ == "SpyZero" and isinstance(x, float):
        return {"$spy_zero": 0}  # chapter 06's temperature=0.0 that notes whether the loop compared it
    if _cache(x):
        return {"$kv": {"keys": list(x.keys), "values": list(x.values)}, "name": type(x).__name__}
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"$cfg": {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}}
    spec = getattr(x, "probe_spec", None)
    if callable(x) and isinstance(spec, dict) and spec.get("metric") == "normalised_logit_diff":
        return {"$metric": spec}  # chapter 08's patching metric, by its answers and its two end points
    if callable(x) and isinstance(spec, dict):
        return {"$attend": spec}  # a fixed attention function (chapter 01's equivariance_error)
    name = type(x).__name__
    if name == "ActivationCache":
        if course_model(getattr(x, "model", None)):
            return {"$cache": dict(x.items()), "$cache_model": x.model}
        return {"$cache": dict(x.items())}
    if name.endswith("TokenizerFast") or name.endswith("Tokenizer"):
        return {"$tokenizer": "gpt2"}
    return None


def returned_parts(out: Any) -> list[tuple[int, Any]]:
    """The parts of a call's result that a checker may hand back to a later call (chapter 06's and 07's KV
    caches): (index in the returned tuple, object)."""
    items = out if type(out) in (tuple, list) else [out]
    return [(i, item) for i, item in enumerate(items) if type(item).__name__ in CACHES]


def _encode(x: Any, writer: wire.Writer, returned: dict | None = None) -> Any:
    """`returned`: id -> (object, [trace, index]) of what earlier calls returned; such a value is written as a
    reference to that result, so that the sandbox hands the learner's code back its own earlier result."""
    memo = writer.__dict__.setdefault("memo", {})  # id -> (object, its doc): one model is written down once

    def inner(value):
        if returned and id(value) in returned and returned[id(value)][0] is value:
            return {"$returned": returned[id(value)][1]}
        done = special(value)
        if done is None:
            return None
        key, body = next(iter(done.items()))
        if key == "$tokenizer":
            return done
        if key == "$spy_zero":
            writer.__dict__.setdefault("spies", []).append(value)
            return done
        if key == "$probe":
            writer.__dict__.setdefault("probes", []).append(value)
        if key == "$cfg":
            return {"$cfg": {k: v for k, v in body.items()}}
        if key in ("$model", "$llama"):
            if id(value) not in memo:
                memo[id(value)] = (value, {key: {k: wire.encode(v, writer, inner) for k, v in body.items()}})
            return memo[id(value)][1]
        encoded = {key: {k: wire.encode(v, writer, inner) for k, v in body.items()}}
        if "name" in done:
            encoded["name"] = done["name"]
        if "$cache_model" in done:
            encoded["$cache_model"] = inner(done["$cache_model"])
        return encoded

    encoded = wire.encode(x, writer, inner)
    if "$opaque" in json.dumps(encoded):
        raise PlanError(f"cannot write {type(x).__name__} down as data")
    return encoded


def tensor_keys(doc: Any) -> list[str]:
    """The tensor keys an encoded value refers to, each once, in order of first appearance: the order in which
    `digest` sees the same value's tensors."""
    keys: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$t"), str):
                if node["$t"] not in keys:
                    keys.append(node["$t"])
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(doc)
    return keys


class Seen(list):
    """The tensors of a digested call, in order; `models`: the course models among its arguments; `spies`:
    its temperature spies."""

    models: list
    spies: list
    probes: list


def digest(doc: Any, args: Any = (), returned: dict | None = None) -> tuple[str, Seen]:
    """The op `doc` with its tensors (`args`, encoded) replaced by digests; and those tensors, in order."""
    prints = wire.Fingerprints()
    fp = json.dumps([doc, _encode(args, prints, returned)], sort_keys=True)
    seen = Seen(prints.seen)
    seen.models = [obj for obj, _ in prints.__dict__.get("memo", {}).values()]
    seen.spies = list(prints.__dict__.get("spies", []))
    seen.probes = list(prints.__dict__.get("probes", []))
    return fp, seen
