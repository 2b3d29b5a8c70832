"""A failed check shows, in a notebook, its message and only the learner's own lines (utils/checks/presentation.py),
while its error output keeps the type and message that nbgrader and `utils.grade` read."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.xdist_group("test_check_presentation")  # its module fixture is built once, on one xdist worker

WRONG_LAYER_NORM = '''
import torch as t
from torch import nn
from utils import checks
from utils.reference.components import Config


class LayerNorm(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(t.ones(cfg.d_model))
        self.b = nn.Parameter(t.zeros(cfg.d_model))

    def forward(self, residual):
        mean = residual.mean(-1, keepdim=True)
        var = residual.var(-1, keepdim=True)  # the unbiased variance: a catalogued mistake
        return (residual - mean) / (var + self.cfg.layer_norm_eps).sqrt() * self.w + self.b
'''

CRASHING_LAYER_NORM = WRONG_LAYER_NORM.replace(
    "mean = residual.mean(-1, keepdim=True)", "mean = residual.mean(-1, keepdim=True) + self.w[:5]")


@pytest.fixture(scope="module")
def outputs():
    """Run both cells once in a real kernel; returns the error output of each check cell."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(WRONG_LAYER_NORM), nbformat.v4.new_code_cell("checks.layer_norm(LayerNorm)"),
                nbformat.v4.new_code_cell(CRASHING_LAYER_NORM), nbformat.v4.new_code_cell("checks.layer_norm(LayerNorm)")]
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True, shutdown_kernel="immediate").execute()
    return [next(o for o in nb.cells[i].outputs if o.output_type == "error") for i in (1, 3)]


def test_a_wrong_value_shows_only_the_diagnosis(outputs):
    error = outputs[0]
    assert error.ename == "AssertionError"
    assert "unbiased variance" in error.evalue
    shown = ANSI.sub("", "\n".join(error.traceback))
    assert shown.strip() == f"AssertionError: {error.evalue}"  # no frames through utils/checks
    assert "utils/checks" not in shown


def test_an_exception_in_the_learners_code_shows_the_learners_line_then_the_diagnosis(outputs):
    error = outputs[1]
    assert error.ename == "AssertionError" and "LayerNorm.forward raised RuntimeError" in error.evalue
    shown = ANSI.sub("", "\n".join(error.traceback))
    assert "Your code raised this" in shown
    assert "Cell In[3], line 17, in forward" in shown  # the learner's own cell and line, as IPython names them
    assert "return (residual - mean) / (var + self.cfg.layer_norm_eps).sqrt()" in shown
    assert "utils/checks" not in shown and "site-packages" not in shown
    assert len(shown.splitlines()) <= 8, shown
