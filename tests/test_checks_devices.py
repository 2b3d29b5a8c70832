"""Checks build their inputs on the device of the learner's parameters and compare on the CPU (a learner on a GPU
runtime often writes `device=...` in `__init__`). This machine has no GPU: PyTorch's `meta` device stands in for
"a device other than the CPU", which is all the checks' plumbing sees."""

from __future__ import annotations

import pytest
import torch as t
from torch import nn

from utils.checks.core import Case, check_module, module_device, on_cpu, run_module


class Scale(nn.Module):
    """y = x * w, with its parameter on whatever device `cfg` names; records the device of each input."""

    seen: list = []

    def __init__(self, cfg: str) -> None:
        super().__init__()
        self.w = nn.Parameter(t.ones(4, device=cfg))

    def forward(self, x):
        Scale.seen.append(x.device)
        return (x * self.w).cpu() if self.w.device.type == "cpu" else t.zeros(x.shape)


def case(device: str) -> Case:
    x = t.arange(8.0).reshape(2, 4)
    return Case("a 2×4 input", device, {"w": t.full((4,), 2.0)}, (x,), x * 2)


def test_inputs_are_built_on_the_device_of_the_learners_parameters():
    Scale.seen.clear()
    run_module(Scale, case("meta"), "Scale")
    assert Scale.seen == [t.device("meta")]
    Scale.seen.clear()
    assert t.equal(run_module(Scale, case("cpu"), "Scale"), t.arange(8.0).reshape(2, 4) * 2)
    assert Scale.seen == [t.device("cpu")]


def test_a_module_on_another_device_is_compared_on_the_cpu_with_a_values_message():
    # the output comes back on the CPU and is compared there: a values message, never a cross-device crash
    with pytest.raises(AssertionError, match=r"Scale: .*of values differ"):
        check_module(Scale, what="Scale", names=["w"], cases=[case("meta")])


def test_device_helpers():
    assert module_device(nn.Linear(2, 2, device="meta")) == t.device("meta")
    assert module_device(nn.Identity()) == t.device("cpu")
    out = on_cpu((t.ones(2), [t.zeros(1)], 3))
    assert isinstance(out, tuple) and isinstance(out[1], list) and out[2] == 3
