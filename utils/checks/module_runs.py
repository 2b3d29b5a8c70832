"""The runs of a learner's module that requirements.py judges: its hook points, a forward pass with every hook
recorded (one hook's value optionally edited), a backward pass. Each returns plain data (tensors, numbers,
strings, dicts of them), never the module or its objects.

This file imports nothing from the course: the grading sandbox's check stub runs the same functions on the
learner's module (a copy of this file is `utils/checks/_module_runs.py` there) and sends their results to the
grader, where requirements.py judges them exactly as it judges them in the learner's process.
`run(module, kind, *args)` is how requirements.py asks: a stand-in for the learner's module (the grader's
recording or replay of it) answers through its own `_module_run` method instead.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import torch as t
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from transformer_lens.hook_points import HookPoint


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _describe(x) -> str:
    if isinstance(x, Tensor):
        return f"Tensor{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__ if not isinstance(x, (int, float, str)) else repr(x)


def _hook_points(module: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in module.named_modules() if isinstance(m, HookPoint)}


def hook_survey(module: nn.Module, names: Sequence[str]) -> dict:
    """{"missing": {name: what is there instead, or "missing"}} for each of `names` that is not a HookPoint."""
    points = _hook_points(module)
    missing = {}
    for name in names:
        if name in points:
            continue
        try:
            found = module.get_submodule(name)
        except AttributeError:
            found = getattr(module, name, None)
        missing[name] = _describe(found) if found is not None else "missing"
    return {"missing": missing}


def record(module: nn.Module, inputs: Sequence, edit: str | None = None) -> tuple[object, dict[str, Tensor], dict[str, int]]:
    """(output, each HookPoint's first output, how often each ran). With `edit`, that hook's output is replaced by
    `1.5 * value + 0.1`, which a module that uses its hooks' return values passes on."""
    values: dict[str, Tensor] = {}
    calls: dict[str, int] = {}

    def save(name: str):
        def hook(_, __, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in values and isinstance(output, Tensor):
                values[name] = output.detach().clone()
            if name == edit and isinstance(output, Tensor):
                return output * 1.5 + 0.1
            return None
        return hook

    handles = [m.register_forward_hook(save(n)) for n, m in _hook_points(module).items()]
    try:
        with t.no_grad(), _quiet():
            out = module(*(x.clone() if isinstance(x, Tensor) else x for x in inputs))
    finally:
        for handle in handles:
            handle.remove()
    return out, values, calls


class _Autograd(TorchFunctionMode):
    """Notes the ways a forward pass can leave autograd: grad mode off, `.detach()`, `.data`."""

    def __init__(self) -> None:
        super().__init__()
        self.no_grad = self.detach = self.data = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not t.is_grad_enabled() and func is not t._C._set_grad_enabled:
            self.no_grad = True
        if func in (Tensor.detach, Tensor.detach_, t.detach):
            self.detach = True
        elif func == Tensor.data.__get__:
            self.data = True
        return func(*args, **(kwargs or {}))

    def why(self) -> str:
        causes = [text for flag, text in ((self.no_grad, "part of your forward runs with gradients off (`with t.no_grad()`)"),
                                           (self.detach, "your forward calls `.detach()`"),
                                           (self.data, "your forward reads a parameter's `.data`")) if flag]
        return "; ".join(causes) if causes else "the output is not computed from it by differentiable operations"


def gradients(module: nn.Module, inputs: Sequence, watch: bool = True) -> dict:
    """A backward pass of a fixed random projection of the output: {"grads": {parameter: whether its gradient is
    non-zero}} or, when the output carries no gradient, {"grads": None}; with `watch`, "why" says how a forward
    that leaves autograd does so."""
    spy = _Autograd() if watch else None
    module.zero_grad(set_to_none=True)
    with t.enable_grad(), _quiet(), (spy if spy is not None else contextlib.nullcontext()):
        out = module(*(x.clone() if isinstance(x, Tensor) else x for x in inputs))
    why = spy.why() if spy is not None else ""
    if not isinstance(out, Tensor) or not out.requires_grad:
        return {"grads": None, "why": why}
    weights = t.randn(out.shape, generator=t.Generator().manual_seed(7))
    with _quiet():
        (out.double() * weights.to(out.device, t.double)).sum().backward()
    grads = {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in module.named_parameters()}
    return {"grads": grads, "why": why}


RUNS = {"hook_survey": hook_survey, "record": record, "gradients": gradients}


class StandIn:
    """The grader's stand-ins for a learner's module (utils/grading/trusted.py) answer runs themselves."""

    def _module_run(self, kind: str, args: tuple):
        raise NotImplementedError


def run(module, kind: str, *args):
    """`RUNS[kind](module, *args)`, or the stand-in's own answer when `module` is the grader's stand-in."""
    if isinstance(module, StandIn):
        return module._module_run(kind, args)
    return RUNS[kind](module, *args)
