"""Comparing a learner's tensor with the reference's: dtype policy, values, and a message that says what differs.

`assert_matches` names a catalogued mistake only when the learner's output equals that mistake's output (same
shape, values within the tolerance). When none matches, it says where the output differs, in the exercise's
dimension names when the checker gives them (`dims=("batch", "n_heads", "query_pos", "key_pos")`), then what
an `explain` function finds (a structural diagnosis, e.g. which diagonal the learner read), then the hint that
points at the step of the formula to look at. `core` re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch as t
from torch import Tensor

ATOL, RTOL = 1e-4, 1e-3
FLOATS_ACCEPTED = (t.float32, t.float64)
IDS_ACCEPTED = (t.int64, t.int32)

Dims = Sequence[str] | None


def fail(message: str) -> None:
    raise AssertionError(message)


def describe(x: Any) -> str:
    if isinstance(x, Tensor):
        return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__ if not isinstance(x, (int, float, str)) else repr(x)


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


# ----------------------------------------------------------------------------------------------------- dtypes


def _name(dtype: t.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _is_integer(dtype: t.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != t.bool


def dtype_problem(actual: Tensor, expected: Tensor) -> str:
    """'' when `actual`'s dtype is accepted for `expected`'s, else 'expected …' (the course's dtype policy)."""
    got, want = actual.dtype, expected.dtype
    if got == want:
        return ""
    if want.is_floating_point:
        if got in FLOATS_ACCEPTED and want in FLOATS_ACCEPTED:
            return ""
        if got.is_floating_point:
            return (f"expected floating-point values in {_name(want)} (float64 is accepted too): half precision "
                    "cannot meet the 1e-4 tolerance")
        return (f"expected floating-point values ({_name(want)}; float64 is accepted too): an "
                f"{'integer' if _is_integer(got) else 'boolean'} tensor has lost the fractions, so keep the "
                "computation in floats")
    if _is_integer(want):
        if got in IDS_ACCEPTED and want in IDS_ACCEPTED:
            return ""
        return (f"expected integer ids ({_name(want)}; int32 is accepted too), which are compared as integers: "
                "return the ids themselves (`.argmax(...)`, `t.multinomial`), not a float or boolean tensor")
    return f"expected {_name(want)}"


# ----------------------------------------------------------------------------------------------------- values


def _fmt(x: float) -> str:
    return f"{x:.5f}" if abs(x) < 1e4 else f"{x:.4g}"


def _integers(*xs: Tensor) -> bool:
    return all(not x.dtype.is_floating_point and not x.dtype.is_complex for x in xs)


def _mismatch(a: Tensor, e: Tensor, atol: float, rtol: float) -> Tensor:
    """Where `a` and `e` differ: exactly for integers and booleans, within the tolerance for floats."""
    if _integers(a, e):
        return a.long() != e.long()
    return ~t.isclose(a.detach().double(), e.detach().double(), atol=atol, rtol=rtol, equal_nan=True)


def close(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    if actual.shape != expected.shape:
        return False
    return not bool(_mismatch(actual, expected, atol, rtol).any())


# How an index along a dimension reads in a message: "head 3", not "n_heads 3".
_INDEX_WORD = {"n_heads": "head", "n_kv_heads": "kv head", "n_layers": "layer", "query_pos": "query",
               "key_pos": "key", "pos": "position", "d_vocab": "token"}


def _word(dim: str) -> str:
    return _INDEX_WORD.get(dim, dim)


def _position(idx: tuple[int, ...], dims: Dims) -> str:
    if dims and len(dims) == len(idx):
        return "(" + ", ".join(f"{_word(d)} {i}" for d, i in zip(dims, idx)) + ")"
    return str(idx)


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    parts, start = [], None
    for i, j in zip(indices, indices[1:] + [None]):
        start = i if start is None else start
        if j != i + 1:
            parts.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


def where_it_differs(bad: Tensor, dims: Dims) -> str:
    """'; the differences are only at head 1, query 5-9' when they are confined along named dimensions."""
    if not dims or len(dims) != bad.dim() or not bad.any():
        return ""
    parts = []
    for axis, name in enumerate(dims):
        if bad.shape[axis] < 2:
            continue
        rows = bad.movedim(axis, 0).reshape(bad.shape[axis], -1).any(-1).nonzero().flatten().tolist()
        if len(rows) < bad.shape[axis]:
            parts.append(f"{_word(name)} {_ranges(rows)}")
    return f"; the differences are only at {', '.join(parts)}" if parts else ""


def diff_report(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL, dims: Dims = None,
                where: str = "") -> str:
    """'38% of values differ, max |diff| 2.1e-02 (allowed 5.4e-04) at (batch 0, pos 3, d_model 17): got 0.41210,
    expected 0.43377'. The allowed difference there tells a learner a gap is not float rounding."""
    a, e = actual.detach().double(), expected.detach().double()
    bad = _mismatch(actual, expected, atol, rtol)
    diff = (a - e).abs().nan_to_num(nan=float("inf"))
    diff = t.where(t.isinf(a) & t.isinf(e) & (a == e), t.zeros_like(diff), diff)
    idx = tuple(int(i) for i in t.unravel_index(diff.argmax(), diff.shape)) if diff.numel() else ()
    pct = 100.0 * bad.double().mean().item()
    pct_text = f"{pct:.0f}%" if pct >= 1 else f"{pct:.2f}%"
    if _integers(actual, expected):
        return (f"{pct_text} of values differ, first at {_position(_first(bad), dims)}: got "
                f"{int(actual[_first(bad)])}, expected {int(expected[_first(bad)])}{where}{where_it_differs(bad, dims)}")
    allowed = atol + rtol * abs(e[idx].item()) if diff.numel() and t.isfinite(e[idx]) else float("nan")
    return (f"{pct_text} of values differ, max |diff| {diff.max().item():.1e} (allowed {allowed:.1e}) at "
            f"{_position(idx, dims)}: got {_fmt(a[idx].item())}, expected {_fmt(e[idx].item())}{where}"
            f"{where_it_differs(bad, dims)}")


def _first(bad: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in bad.nonzero()[0]) if bad.any() else tuple(0 for _ in bad.shape)


def matching_mistake(actual: Tensor, mistake_outputs: Sequence[tuple[Any, Any]], *, compare=close) -> Any:
    """The first catalogued mistake whose output equals `actual`: same shape and values, never shape alone."""
    for mistake, out in mistake_outputs:
        if isinstance(out, Tensor) and isinstance(actual, Tensor) and out.shape == actual.shape and compare(actual, out):
            return mistake
    return None


def _shape_report(actual: Tensor, expected: Tensor, dims: Dims, where: str = "") -> str:
    """'output shape (2, 3), expected (3,) [n_heads]', with the axes that differ when the ranks agree."""
    named = f" [{' '.join(dims)}]" if dims and len(dims) == expected.dim() else ""
    text = f"output shape {tuple(actual.shape)}{where}, expected {tuple(expected.shape)}{named}"
    if actual.dim() == expected.dim() and named:
        axes = [f"{d} is {a} instead of {e}" for d, a, e in zip(dims, actual.shape, expected.shape) if a != e]
        text += f" ({', '.join(axes)})"
    elif actual.dim() == expected.dim() + 1 and tuple(actual.shape[1:]) == tuple(expected.shape):
        text += (f": it keeps an extra first dimension of size {actual.shape[0]}, one the exercise reduces "
                 "(averages or sums) away")
    elif actual.dim() != expected.dim():
        text += f": {actual.dim()} dimensions instead of {expected.dim()}"
    return text


def assert_matches(
    actual: Any,
    expected: Tensor,
    name: str,
    *,
    context: str = "",
    mistakes: Sequence[tuple[Any, Any]] | Callable[[], Sequence[tuple[Any, Any]]] = (),
    hint: str = "",
    atol: float = ATOL,
    rtol: float = RTOL,
    check_dtype: bool = True,
    dims: Dims = None,
    explain: Callable[[Tensor], str] | None = None,
) -> None:
    """Shape, dtype, NaN/inf, then values; a mismatch names the catalogued mistake it equals, if any.

    `mistakes` may be a function, so that wrong variants only run when the learner's output is wrong. Without a
    match, `explain(actual)` (when given) and then `hint` say what to look at."""
    where = f" on {context}" if context else ""
    if not isinstance(actual, Tensor):
        fail(f"{name}: returned {describe(actual)}{where}, expected a Tensor of shape {tuple(expected.shape)}.")
    actual = on_cpu(actual)
    if actual.device.type != "cpu":
        fail(f"{name}: returned a tensor on the {actual.device} device{where}, which holds no values to compare.")

    def named(default: str = "") -> str:
        outs = mistakes() if callable(mistakes) else mistakes
        found = matching_mistake(actual, outs, compare=lambda x, y: close(x, y, atol, rtol))
        if found is not None:
            return f" This matches a known mistake, {found.name.replace('_', ' ')}: {found.hint}"
        diagnosis = explain(actual) if explain is not None and actual.shape == expected.shape else ""
        return "".join(f" {part}" for part in (diagnosis, default) if part)

    if actual.shape != expected.shape:
        fail(f"{name}: {_shape_report(actual, expected, dims, where)}." + named(hint))
    if check_dtype:
        problem = dtype_problem(actual, expected)
        if problem:
            fail(f"{name}: output dtype {_name(actual.dtype)}{where}, {problem}.")
        if expected.dtype.is_floating_point and actual.dtype != expected.dtype:
            actual = actual.to(expected.dtype)  # float64 accepted: compared at the reference's precision
    finite_expected = t.isfinite(expected) if expected.dtype.is_floating_point else t.ones_like(expected, dtype=t.bool)
    bad = ~t.isfinite(actual) & finite_expected if actual.dtype.is_floating_point else t.zeros_like(finite_expected)
    if bad.any():
        kind = "NaN" if t.isnan(actual[bad]).any() else "inf"
        first = _position(tuple(int(i) for i in bad.nonzero()[0]), dims)
        fail(f"{name}: output has {int(bad.sum())} {kind} values{where} (first at {first}) where the reference is "
             "finite." + named(hint))
    if not close(actual, expected, atol, rtol):
        fail(f"{name}: {diff_report(actual, expected, atol, rtol, dims, where)}." + named(hint))
