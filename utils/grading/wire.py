"""The data that crosses the grading boundary: JSON beside a safetensors file of plain tensors, never pickle.

Both sides use this module: the trusted grader writes probe plans with it, and the check stub inside the
sandbox (a copy of this file, `utils/checks/_wire.py` there) writes what the learner's code returned. It
imports nothing from the course, so the sandbox's copy needs nothing else.

A value is encoded as JSON in which a tensor is `{"$t": key}`, its data stored under `key` in the
safetensors file. `plain()` copies a tensor to a contiguous CPU tensor of the base `Tensor` type with
torch-function overrides disabled, so a Tensor subclass reaches the grader as its numbers only: none of its
methods run on the grader's side.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch as t
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

MAX_FILE_BYTES = 60 * 2**20  # below the sandbox's 64 MB file-size limit
SCALARS = (bool, int, float, str, type(None))


def plain(x: t.Tensor) -> t.Tensor:
    """A contiguous CPU copy of `x`'s numbers with the base Tensor type; no method of a subclass runs."""
    with t._C.DisableTorchFunctionSubclass():
        y = t.Tensor.detach(x)
        if y.device.type != "cpu":
            y = t.Tensor.cpu(y)
        y = t.Tensor.clone(t.Tensor.contiguous(y))
    return t.Tensor.as_subclass(y, t.Tensor)


def fingerprint(x: t.Tensor) -> str:
    """A digest of dtype, shape and numbers: how a replayed call is matched with a recorded one."""
    return hashlib.sha256(save_tensors({"x": plain(x)})).hexdigest()[:24]


class Writer:
    """Collects the tensors of encoded values; `save(stem)` writes stem.json and stem.safetensors."""

    def __init__(self) -> None:
        self.tensors: dict[str, t.Tensor] = {}

    def tensor(self, x: t.Tensor) -> dict:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = plain(x)
        with t._C.DisableTorchFunctionSubclass():
            attached = bool(t.Tensor.requires_grad.__get__(x))
        return {"$t": key, "grad": True} if attached else {"$t": key}  # a returned loss still on its graph

    def save(self, stem: Path, document: Any) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        blob = save_tensors(self.tensors)
        tmp_json, tmp_blob = stem.with_suffix(".json.tmp"), stem.with_suffix(".safetensors.tmp")
        tmp_blob.write_bytes(blob)
        tmp_json.write_text(json.dumps(document), encoding="utf-8")
        tmp_blob.replace(stem.with_suffix(".safetensors"))
        tmp_json.replace(stem.with_suffix(".json"))  # last: a reader that sees the JSON finds its tensors


def encode(x: Any, writer: "Writer", special=None) -> Any:
    """JSON for `x`: tensors by reference, scalars as themselves, lists, tuples and str-keyed dicts walked;
    `special(x)` may encode what it knows (a config, a tokenizer); anything else is `{"$opaque": type name}`."""
    if isinstance(x, t.Tensor):
        return writer.tensor(x)
    if special is not None:
        done = special(x)
        if done is not None:
            return done
    if isinstance(x, SCALARS):
        return x
    if type(x) in (list, tuple):
        return {"$seq": type(x).__name__, "items": [encode(item, writer, special) for item in x]}
    if type(x) is dict and all(isinstance(k, str) for k in x):
        return {"$dict": {k: encode(v, writer, special) for k, v in x.items()}}
    return {"$opaque": type(x).__name__}


class Fingerprints(Writer):
    """A Writer that keeps each tensor's digest instead of its data (and the tensors, in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[t.Tensor] = []

    def tensor(self, x: t.Tensor) -> dict:
        self.seen.append(x)
        return {"$h": fingerprint(x)}


def read(stem: Path) -> tuple[Any, dict[str, t.Tensor]]:
    """(document, tensors) of stem.json and stem.safetensors; ValueError when either is missing or too big."""
    paths = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    for path in paths:
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{path.name} is missing")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MB")
    document = json.loads(paths[0].read_text(encoding="utf-8"))
    return document, load_tensors(paths[1].read_bytes())
