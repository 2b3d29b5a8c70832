"""Token ids compared as ids: which rows and positions differ, expected id against the learner's, never a float diff.

`diagnose_ids` only describes; `assert_ids` fails with that description, naming a catalogued mistake only when
the learner's ids equal that mistake's exactly (or, for a wrong shape, have its shape).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch as t
from torch import Tensor

from utils.checks.core import Mistake, describe, fail, on_cpu

INT_DTYPES = (t.int64, t.int32)


def id_dtype_problem(ids: Tensor, what: str, where: str = "") -> str | None:
    """A message when `ids` are not integer token ids (int64; int32 accepted), else None."""
    if ids.dtype in INT_DTYPES:
        return None
    return (f"{what}: returned dtype {str(ids.dtype).replace('torch.', '')}{where}; token ids are integer tensors "
            "(torch.int64, int32 accepted), as `argmax` and `t.cat` of ids give them, not floats or booleans.")


def diagnose_ids(got: Tensor, expected: Tensor, *, prompt_len: int = 0, decode: Callable[[int], str] | None = None,
                 row: str = "row") -> str:
    """'rows 0, 2 of 3 differ; first at row 0, position 7 (new token 3): got id 27, expected id 31'.

    Both are [batch pos] (or [pos]) integer tensors of the same shape. A row equal to another row's expected ids
    is pointed out: it is the first-row-for-all (or rows swapped) bug."""
    got2, exp2 = (got[None], expected[None]) if got.dim() == 1 else (got, expected)
    bad_rows = [b for b in range(exp2.shape[0]) if not t.equal(got2[b], exp2[b])]
    b = bad_rows[0]
    p = int((got2[b] != exp2[b]).nonzero()[0, 0])
    where = f"position {p}" + (f" (new token {p - prompt_len + 1})" if p >= prompt_len > 0 else "")

    def show(token: int) -> str:
        return f"id {token}" + (f" ({decode(token)!r})" if decode is not None else "")

    rows = row if len(bad_rows) == 1 else f"{row}s"
    lead = (f"{rows} {', '.join(map(str, bad_rows))} of {exp2.shape[0]} differ; first at {row} {b}, " if got.dim() > 1
            else "first difference at ")
    text = f"{lead}{where}: got {show(int(got2[b, p]))}, expected {show(int(exp2[b, p]))}"
    start = prompt_len if 0 < prompt_len < exp2.shape[1] else 0  # compare what was generated, prompts aside
    copied = next((o for o in range(exp2.shape[0]) if o != b and t.equal(got2[b, start:], exp2[o, start:])), None)
    if copied is not None and not t.equal(exp2[b, start:], exp2[copied, start:]):
        text += (f". {row.capitalize()} {b} continues exactly as {row} {copied} should: each {row} must use its own "
                 "logits (index the batch dimension, don't take row 0)")
    return text


def matching_ids(got: Tensor, outputs: Sequence[tuple[Mistake, Any]]) -> Mistake | None:
    for mistake, out in outputs:
        if isinstance(out, Tensor) and out.shape == got.shape and t.equal(out.long(), got.long()):
            return mistake
    return None


def assert_ids(got: Any, expected: Tensor, what: str, *, context: str = "", prompt_len: int = 0,
               mistakes: Callable[[], Sequence[tuple[Mistake, Any]]] = lambda: (), hint: str = "",
               decode: Callable[[int], str] | None = None, row: str = "row") -> None:
    """Type, dtype, shape, then the ids themselves; a mismatch names the catalogued mistake it equals, if any."""
    where = f" on {context}" if context else ""
    if not isinstance(got, Tensor):
        fail(f"{what}: returned {describe(got)}{where}, expected a Tensor of token ids of shape {tuple(expected.shape)}.")
    got = on_cpu(got)
    problem = id_dtype_problem(got, what, where)
    if problem:
        fail(problem)

    def named(default: str) -> str:
        outs = list(mistakes())
        found = matching_ids(got, outs)
        if found is None and got.shape != expected.shape:
            found = next((m for m, o in outs if isinstance(o, Tensor) and o.shape == got.shape), None)
        if found is not None:
            return f" This matches a known mistake, {found.name.replace('_', ' ')}: {found.hint}"
        return f" {default}" if default else ""

    if got.shape != expected.shape:
        fail(f"{what}: output shape {tuple(got.shape)}{where}, expected {tuple(expected.shape)}." + named(hint))
    if not t.equal(got.long(), expected.long()):
        fail(f"{what}{where}: {diagnose_ids(got, expected, prompt_len=prompt_len, decode=decode, row=row)}." + named(hint))
