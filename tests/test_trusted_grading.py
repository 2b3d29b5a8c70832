"""The trusted judge (utils/grading/trusted.py, boundary.py): a probe plan recorded from the reference, the
learner's code run on it by the sandbox's stub, the checker replayed on the returned data.

Replay must give the same verdict and the same message as the checker run in the learner's process, for the
reference and for every catalogued mistake; and what a learner's process does to itself (a lying Tensor
subclass, a patched torch, a swapped `utils.checks`, an import of the reference) must not reach a score.
The hostile cases run the learner's side in a separate Python process with the sandbox's course package,
as the grader does; the whole nbgrader flow is covered by tests/test_grading.py's corpus.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from utils.checks import CHECKERS, MISTAKES
from utils.grading import boundary, wire
from utils.grading.trusted import Unverifiable, judge

pytestmark = pytest.mark.xdist_group("test_trusted_grading")  # its module fixture is built once, on one xdist worker

KIND = "random-mini"
CHAPTERS = sorted(boundary.COVERED)


@pytest.fixture(scope="module", autouse=True)
def _probe_dir(tmp_path_factory):
    before = {k: os.environ.get(k) for k in ("TFS_PROBE_DIR", "TFS_REFERENCE")}
    os.environ["TFS_PROBE_DIR"] = str(tmp_path_factory.mktemp("boundary"))
    os.environ["TFS_REFERENCE"] = KIND
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _stub(plans: Path, out: Path):
    """The sandbox's `utils.checks` (the stub), loaded here under another name, writing to `out`."""
    package = boundary.ensure_package() / "utils" / "checks"
    spec = importlib.util.spec_from_file_location("tfs_sandbox_checks", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    stub = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = stub
    spec.loader.exec_module(stub)
    stub.PLAN, stub.OUT = plans, out
    stub._index.cache_clear()
    return stub


def _in_process(exercise: str, impl) -> tuple[bool, str]:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            CHECKERS[exercise](impl)
    except (AssertionError, NotImplementedError) as exc:
        return False, str(exc)
    return True, out.getvalue().strip()


def _verdict(chapter: str, exercise: str, out: Path) -> tuple[bool, str]:
    plans = boundary.ensure_plans(chapter, KIND)
    plan, _ = wire.read(plans / exercise)
    results, tensors = wire.read(out / exercise)
    verdict = judge(exercise, CHECKERS[exercise], plan, results, tensors)
    return verdict.passed, verdict.message


def _replayed(chapter: str, exercise: str, impl, tmp_path: Path) -> tuple[bool, str]:
    stub = _stub(boundary.ensure_plans(chapter, KIND), tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        getattr(stub, exercise)(impl)
    return _verdict(chapter, exercise, tmp_path)


def _exercises(chapter: str) -> list[str]:
    return sorted(boundary.reference_targets(chapter))


REFERENCE_CASES = [(c, e) for c in CHAPTERS for e in _exercises(c)]
MISTAKE_CASES = [(e, m) for e in _exercises("02_components") for m in MISTAKES[e]]


def test_every_exercise_of_the_covered_chapters_has_a_plan():
    for chapter in CHAPTERS:
        index = json.loads((boundary.ensure_plans(chapter, KIND) / "index.json").read_text())
        calls = [c for c in __import__("utils.checks.catalogue", fromlist=["x"]).check_calls() if c.notebook == chapter]
        assert sorted(index) == sorted(c.exercise for c in calls) == _exercises(chapter)


@pytest.mark.parametrize("chapter, exercise", REFERENCE_CASES, ids=[e for _, e in REFERENCE_CASES])
def test_reference_passes_through_replay_with_the_same_message(chapter, exercise, tmp_path):
    reference = boundary.reference_targets(chapter)[exercise]
    passed, message = _replayed(chapter, exercise, reference, tmp_path)
    assert passed and message.startswith("✓")
    assert (passed, message) == _in_process(exercise, reference)


@pytest.mark.parametrize("exercise, mistake", MISTAKE_CASES, ids=[f"{e}-{m.name}" for e, m in MISTAKE_CASES])
def test_mistake_gets_the_same_named_message_through_replay(exercise, mistake, tmp_path):
    expected = _in_process(exercise, mistake.impl)
    assert not expected[0]
    assert _replayed("02_components", exercise, mistake.impl, tmp_path) == expected


def test_a_call_the_plan_does_not_hold_cannot_be_verified(tmp_path):
    reference = boundary.reference_targets("02_components")["layer_norm"]
    _replayed("02_components", "layer_norm", reference, tmp_path)
    plan, _ = wire.read(boundary.ensure_plans("02_components", KIND) / "layer_norm")
    results, tensors = wire.read(tmp_path / "layer_norm")
    plan = {**plan, "traces": plan["traces"][:1]}  # the checker's later inputs are no longer in the plan
    verdict = judge("layer_norm", CHECKERS["layer_norm"], plan, results, tensors)
    assert not verdict.passed and verdict.ename == "Unverifiable" and "did not prepare" in verdict.message
    truncated = {**results, "traces": [tr[:2] for tr in results["traces"]]}  # the sandbox stopped early
    verdict = judge("layer_norm", CHECKERS["layer_norm"], wire.read(boundary.ensure_plans(
        "02_components", KIND) / "layer_norm")[0], truncated, tensors)
    assert not verdict.passed and "did not run to this point" in verdict.message
    assert issubclass(Unverifiable, BaseException) and not issubclass(Unverifiable, Exception)


def test_the_sandbox_package_holds_no_reference_checker_or_catalogue():
    package = boundary.ensure_package() / "utils"
    names = {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()}
    assert names == {"__init__.py", "notebook.py", "reference_model.py", "tokenizer.py", "checks/__init__.py",
                     "checks/_wire.py", "checks/_module_runs.py"}
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "utils.reference." not in text.replace("utils.reference.components import Config", ""), path
        assert "MISTAKES" not in text and "mistakes_ch" not in text, path


# ------------------------------------------------------------------------------------------------ hostile

CORRECT_LAYER_NORM = """
import torch as t
from torch import nn

class LayerNorm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(t.ones(cfg.d_model))
        self.b = nn.Parameter(t.zeros(cfg.d_model))

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b
"""

WRONG_LAYER_NORM = CORRECT_LAYER_NORM.replace("return x / (", "return 0 * x / (")

LIAR = WRONG_LAYER_NORM + """
import sys
class Liar(t.Tensor):
    def all(self, *args, **kwargs):
        return True
    def any(self, *args, **kwargs):
        return False
    def __eq__(self, other):
        return True
    def __bool__(self):
        return True

_forward = LayerNorm.forward
LayerNorm.forward = lambda self, x: _forward(self, x).as_subclass(Liar)
t.allclose = lambda *args, **kwargs: True
t.isclose = lambda a, b, **kwargs: t.ones_like(a, dtype=t.bool)
t.equal = lambda *args: True
"""

SWAPPED_REGISTRY = CORRECT_LAYER_NORM.replace("return x / (", "return 0 * x / (") + """
import sys, types
fake = types.ModuleType("utils.checks")
fake.layer_norm = lambda *args, **kwargs: print("✓ LayerNorm matches the reference")
sys.modules["utils.checks"] = fake
import utils
utils.checks = fake
checks = fake
"""

REFERENCE_IMPORT = """
try:
    from utils.reference.components import LayerNorm
except ImportError as exc:
    print("IMPORT FAILED:", type(exc).__name__)
    from utils.reference_model import course_config
    try:
        course_config()
    except ImportError as again:
        print("IMPORT FAILED AGAIN:", type(again).__name__)
"""


def _learner_process(source: str, exercise: str, name: str, out: Path) -> subprocess.CompletedProcess:
    """Run `source` and then `checks.<exercise>(<name>)` as a test cell would, in a fresh interpreter that
    imports the sandbox's course package (the learner's side of the boundary)."""
    plans = boundary.ensure_plans("02_components", KIND)
    package = boundary.ensure_package()
    out.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(out), "TFS_REFERENCE": KIND,
           **boundary.ProbeSession("02_components", plans, package, out.parent).kernel_env(str(plans), str(out), str(package))}
    # -S, and the installed packages by path: no .pth file runs, so the repository's editable install (which
    # would find utils/reference/ next to the grader's checkout) is absent, as in the sandbox, where the
    # checkout is not bound at all
    env["PYTHONPATH"] = f"{package}{os.pathsep}{sysconfig.get_paths()['purelib']}"
    # os._exit: an interpreter whose sys.modules was tampered with may hang on its way out
    program = (f"from utils import checks\n{source}\ntry:\n    checks.{exercise}({name})\nexcept Exception as exc:\n"
               "    print('CELL ERROR', type(exc).__name__, exc)\nimport os, sys\nsys.stdout.flush()\nos._exit(0)\n")
    return subprocess.run([sys.executable, "-S", "-c", program], env=env, capture_output=True, text=True, timeout=300,
                          cwd=out)


def test_correct_code_passes_from_another_process(tmp_path):
    proc = _learner_process(CORRECT_LAYER_NORM, "layer_norm", "LayerNorm", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _verdict("02_components", "layer_norm", tmp_path / "out") == _in_process("layer_norm", _correct_layer_norm())


def _correct_layer_norm():
    namespace: dict = {}
    exec(CORRECT_LAYER_NORM, namespace)  # the learner's source, here: the in-process verdict to compare with
    return namespace["LayerNorm"]


@pytest.mark.parametrize("source", [LIAR, SWAPPED_REGISTRY], ids=["lying_tensor_and_patched_torch", "swapped_registry"])
def test_cheats_in_the_learners_process_do_not_pass(source, tmp_path):
    proc = _learner_process(source, "layer_norm", "LayerNorm", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    if source is SWAPPED_REGISTRY:
        assert "✓ LayerNorm matches" in proc.stdout  # what the learner's process says
        with pytest.raises(ValueError, match="missing"):
            wire.read(tmp_path / "out" / "layer_norm")  # nothing was recorded: the grader gives 0
        return
    passed, message = _verdict("02_components", "layer_norm", tmp_path / "out")
    assert not passed and "LayerNorm: 100% of values differ" in message


def test_the_reference_cannot_be_imported_in_the_sandbox_package(tmp_path):
    proc = _learner_process(REFERENCE_IMPORT, "layer_norm", "LayerNorm", tmp_path / "out")
    assert "IMPORT FAILED: ModuleNotFoundError" in proc.stdout and "IMPORT FAILED AGAIN" in proc.stdout, proc.stdout
    assert "CELL ERROR NameError" in proc.stdout  # so the check never ran: nothing to judge
    with pytest.raises(ValueError, match="missing"):
        wire.read(tmp_path / "out" / "layer_norm")


def test_instructors_guide_lists_how_each_chapter_is_judged():
    from utils.grading.config import REPO, chapters

    guide = (REPO / "docs" / "instructors.md").read_text()
    section = guide[guide.index("### Where the grading boundary is"):]
    outside = sorted(c for c in chapters() if boundary.covered(c))
    assert outside == CHAPTERS == ["01_foundations", "02_components"]
    assert "Chapters 01 and 02 are graded outside the learner's process" in section
    counts = {c: len(_exercises(c)) for c in CHAPTERS}
    assert f"({counts['01_foundations']} in\nchapter 01, {counts['02_components']} in chapter 02)" in section
    inside = [c for c in chapters() if not boundary.covered(c)]
    assert f"Chapters {inside[0][:2]} to {inside[-1][:2]}: judged in the learner's process (scan only)" in section
    for exercise in (call.exercise for call in __import__("utils.checks.catalogue", fromlist=["x"]).check_calls()
                     if call.notebook in inside):
        assert f"`{exercise}`" in section, exercise  # every exercise still judged inside is named, with its reason
