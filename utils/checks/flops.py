"""Counting the multiply-add FLOPs of matrix products, to tell a KV cache that saves work from one that does not."""

from __future__ import annotations

import math

import torch as t
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode


class MatmulFlops(TorchFunctionMode):
    """Counts the multiply-add FLOPs of every matrix product (einsum, matmul, @, mm, bmm, linear, addmm)."""

    _PRODUCTS = {t.matmul, Tensor.matmul, Tensor.__matmul__, t.mm, Tensor.mm, t.bmm, Tensor.bmm}
    _WITH_BIAS = {t.addmm, Tensor.addmm, t.baddbmm, Tensor.baddbmm}

    active: list = []  # the counters open now, innermost last (the trusted grader adds the sandbox's counts)

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __enter__(self):
        MatmulFlops.active.append(self)
        return super().__enter__()

    def __exit__(self, *exc_info):
        MatmulFlops.active.remove(self)
        return super().__exit__(*exc_info)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, Tensor):
            if func in self._PRODUCTS:
                self.flops += 2 * out.numel() * args[0].shape[-1]
            elif func is Tensor.__rmatmul__:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func in self._WITH_BIAS:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func is F.linear:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func is t.einsum:
                self.flops += _einsum_flops(args, out)
        return out


def _einsum_flops(args, out: Tensor) -> int:
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for spec, op in zip(inputs, operands):
        letters = spec.replace("...", "")
        if "..." in spec:
            start = spec.index("...")
            dims = list(op.shape[:start]) + list(op.shape[len(op.shape) - (len(spec) - start - 3):])
        else:
            dims = list(op.shape)
        for letter, size in zip(letters, dims):
            sizes[letter] = size
    total = math.prod(sizes.values()) if sizes else 1
    if "..." in equation:
        out_letters = equation.replace(" ", "").split("->")[1].replace("...", "") if "->" in equation else ""
        named = math.prod(sizes.get(c, 1) for c in out_letters)
        total *= max(out.numel() // max(named, 1), 1)
    return 2 * total


def count_flops(fn, *args, **kwargs):
    """`fn`'s result and the FLOPs of its matrix products (a light counter: no dispatch-level tracing)."""
    with MatmulFlops() as counter:
        result = fn(*args, **kwargs)
    return result, counter.flops


def add_reported(flops: int) -> None:
    """Count `flops` done elsewhere (the learner's code, run in the grading sandbox) in every open counter."""
    for counter in MatmulFlops.active:
        counter.flops += int(flops)
