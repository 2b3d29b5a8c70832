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
import math
import os
import re
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
def _reference_kind():
    """The grader's plans folder (versioned by the checkers' sources) is shared with tests/test_grading.py, whose
    grader records the same plans: whichever process comes first records them, the other waits and reuses them."""
    before = os.environ.get("TFS_REFERENCE")
    os.environ["TFS_REFERENCE"] = KIND
    yield
    if before is None:
        os.environ.pop("TFS_REFERENCE", None)
    else:
        os.environ["TFS_REFERENCE"] = before


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
    """The verdict of the checker run here on `impl` (a tuple: the several arguments a test cell passes)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            CHECKERS[exercise](*(impl if isinstance(impl, tuple) else (impl,)))
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
        getattr(stub, exercise)(*(impl if isinstance(impl, tuple) else (impl,)))
    return _verdict(chapter, exercise, tmp_path)


def _exercises(chapter: str) -> list[str]:
    return sorted(boundary.reference_targets(chapter))


REFERENCE_CASES = [(c, e) for c in CHAPTERS for e in _exercises(c)]
# every catalogued mistake of the chapters whose checkers take modules, models and caches (chapter 01's are plain
# functions of tensors, which the reference cases cover)
MISTAKE_CASES = [(c, e, m) for c in ("02_components", "04_interpretability", "05_training", "06_sampling", "07_modern_decoder")
                 for e in _exercises(c) for m in MISTAKES[e]]
# chapter 08's 51 mistakes take minutes through replay (all 51 gave the in-process message when measured;
# TFS_REPLAY_ALL_MISTAKES=1 runs them all): by default one per exercise, leaving out the two slowest sweeps, whose
# reference cases above still go through replay
_ALL = os.environ.get("TFS_REPLAY_ALL_MISTAKES") == "1"
MISTAKE_CASES += [("08_circuits", e, m) for e in _exercises("08_circuits") for m in MISTAKES[e][:None if _ALL else 1]
                  if _ALL or e not in ("patch_residual", "ablation")]


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
    assert _same_message((passed, message), _in_process(exercise, reference), exercise)


_NUMBER = re.compile(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?")


def _same_message(got: tuple[bool, str], want: tuple[bool, str], exercise: str) -> bool:
    """Equal verdicts and messages. For kv_rope the sandbox runs the learner's code on a decoder made of
    transformers' Llama modules (the course's own decoder is not there), so a printed value may differ in
    its last digit: there the words must be equal and every number within 1e-4 relative."""
    if exercise != "kv_rope" or got[0] != want[0]:
        return got == want
    if _NUMBER.split(got[1]) != _NUMBER.split(want[1]):
        return False
    pairs = zip(_NUMBER.findall(got[1]), _NUMBER.findall(want[1]))
    return all(math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-6) for a, b in pairs)


def test_messages_compare_numbers_only_for_kv_rope():
    a, b = (False, "got 0.24086, expected -1.58047"), (False, "got 0.24085, expected -1.58047")
    assert _same_message(a, b, "kv_rope") and not _same_message(a, b, "gqa")
    assert not _same_message(a, (False, "got 0.25085, expected -1.58047"), "kv_rope")
    assert not _same_message(a, (False, "had 0.24086, expected -1.58047"), "kv_rope")


@pytest.mark.parametrize("chapter, exercise, mistake", MISTAKE_CASES, ids=[f"{e}-{m.name}" for _, e, m in MISTAKE_CASES])
def test_mistake_gets_the_same_named_message_through_replay(chapter, exercise, mistake, tmp_path):
    expected = _in_process(exercise, mistake.impl)
    assert not expected[0]
    got = _replayed(chapter, exercise, mistake.impl, tmp_path)
    assert _same_message(got, expected, exercise), (got, expected)


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


BASE_PACKAGE = {"__init__.py", "notebook.py", "reference_model.py", "tokenizer.py", "checks/__init__.py",
                "checks/_wire.py", "checks/_module_runs.py", "checks/_flops.py",
                "checks/_spies.py", "checks/_llama.py"}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_sandbox_package_holds_no_reference_checker_or_catalogue(chapter):
    package = boundary.ensure_package(chapter) / "utils"
    names = {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()}
    assert names == BASE_PACKAGE | set(boundary.CHAPTER_FILES.get(chapter, ()))
    given = {n for n in names if n.startswith("reference/") and n != "reference/__init__.py"}
    # only earlier chapters' solutions, which the chapter's own notebook imports: chapter 04 gets chapter 03's
    # model and chapter 02's components, never chapter 04's functions; chapter 06 also chapter 05's loader
    assert f"reference/{boundary.COVERED[chapter]}.py" not in names
    earlier = {"04_interpretability": {"reference/components.py", "reference/model.py"},
               "05_training": {"reference/components.py", "reference/model.py"},
               "06_sampling": {"reference/components.py", "reference/model.py", "reference/training.py"},
               "07_modern_decoder": {"reference/components.py"},
               "08_circuits": {"reference/components.py", "reference/model.py", "reference/interp.py"}}
    assert given == earlier.get(chapter, set())
    for path in package.rglob("*.py"):
        text = path.read_text()
        assert "MISTAKES" not in text and "mistakes_ch" not in text and "utils.grading" not in text, path
        if not given:  # the stub builds chapter 03's model only for a chapter whose plans hold one
            allowed = ("utils.reference.components import Config", "utils.reference.model import EducationalTransformer")
            for phrase in allowed:
                text = text.replace(phrase, "")
            assert "utils.reference." not in text, path


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


def _learner_process(source: str, exercise: str, name: str, out: Path,
                     chapter: str = "02_components") -> subprocess.CompletedProcess:
    """Run `source` and then `checks.<exercise>(<name>)` as a test cell would, in a fresh interpreter that
    imports the sandbox's course package (the learner's side of the boundary)."""
    plans = boundary.ensure_plans(chapter, KIND)
    package = boundary.ensure_package(chapter)
    out.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(out), "TFS_REFERENCE": KIND,
           **boundary.ProbeSession(chapter, plans, package, out.parent).kernel_env(str(plans), str(out), str(package))}
    # -S, and the installed packages by path: no .pth file runs, so the repository's editable install (which
    # would find utils/reference/ next to the grader's checkout) is absent, as in the sandbox, where the
    # checkout is not bound at all
    env["PYTHONPATH"] = f"{package}{os.pathsep}{sysconfig.get_paths()['purelib']}"
    # os._exit: an interpreter whose sys.modules was tampered with may hang on its way out
    program = (f"{source}\nfrom utils import checks\ntry:\n    checks.{exercise}({name})\nexcept Exception as exc:\n"
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


# Chapter 04: the learner's function is handed a model (rebuilt in the sandbox from the plan's data, with chapter
# 03's EducationalTransformer, which the chapter's notebook imports) and a cache of its activations.
ABLATION = """
import torch as t
from utils.induction import per_token_loss

def head_ablation_effect(model, tokens, repeat_len):
    def repeated(logits):
        return per_token_loss(logits, tokens)[:, repeat_len + 1:].mean()
    clean = repeated(model(tokens))
    effect = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            def zero(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = 0
                return z
            logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
            effect[layer, head] = repeated(logits) - clean
    return effect
"""
# right numbers, then a weight of the model it was given edited in place
EDITS_WEIGHTS = ABLATION.replace("    return effect", "    with t.no_grad():\n        model.blocks[0].attn.W_O[1] *= 0.5\n    return effect")
# right numbers, built from the reference reached through the given package (it is not there: the import fails)
REACHES_INTERP = ABLATION + """
try:
    from utils.reference.interp import head_ablation_effect
except ImportError as exc:
    print("IMPORT FAILED:", type(exc).__name__)
"""
LYING_ABLATION = ABLATION.replace("    return effect", "    class Liar(t.Tensor):\n        def all(self, *a, **k):\n"
                                  "            return True\n    t.allclose = lambda *a, **k: True\n"
                                  "    return (0 * effect).as_subclass(Liar)")


def _ablation_verdict(source: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, tuple[bool, str]]:
    proc = _learner_process(source, "head_ablation", "head_ablation_effect", tmp_path / "out", "04_interpretability")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, _verdict("04_interpretability", "head_ablation", tmp_path / "out")


def test_chapter_04_correct_code_passes_from_another_process(tmp_path):
    namespace: dict = {}
    exec(ABLATION, namespace)  # the learner's source, here: the in-process verdict to compare with
    _, verdict = _ablation_verdict(ABLATION, tmp_path)
    assert verdict[0] and verdict == _in_process("head_ablation", namespace["head_ablation_effect"])


def test_chapter_04_a_model_edited_in_place_is_seen_by_the_grader(tmp_path):
    _, (passed, message) = _ablation_verdict(EDITS_WEIGHTS, tmp_path)
    assert not passed and "changed the model's parameter blocks.0.attn.W_O" in message


def test_chapter_04_reference_is_not_in_the_sandbox_and_lies_do_not_pass(tmp_path):
    proc, verdict = _ablation_verdict(REACHES_INTERP, tmp_path / "a")
    assert "IMPORT FAILED: ModuleNotFoundError" in proc.stdout, proc.stdout
    assert verdict[0]  # its own function (defined before the failed import) still ran: correct numbers pass
    _, (passed, message) = _ablation_verdict(LYING_ABLATION, tmp_path / "b")
    assert not passed and "head_ablation_effect" in message


# Chapter 06: the learner's cache goes back into the learner's next call inside the sandbox, the checker's random
# state reaches each call, and the FLOPs the learner's code does there are counted for the checker.
def _kv_source() -> str:
    import inspect

    from utils.reference import sampling

    parts = [inspect.getsource(getattr(sampling, name)) for name in ("KVCache", "attention_with_cache", "forward_with_cache")]
    return ("from dataclasses import dataclass\nimport einops\nimport torch as t\n"
            "from jaxtyping import Float, Int\nfrom torch import Tensor\nfrom utils.reference.model import "
            "EducationalTransformer\n" + "\n\n".join(parts))


def test_chapter_06_a_kv_cache_from_another_process_passes_and_wasted_work_is_counted(tmp_path):
    source = _kv_source()  # the reference's own text, run as the learner's code on the learner's side
    proc = _learner_process(source, "kv_cache", "forward_with_cache", tmp_path / "a", "06_sampling")
    assert proc.returncode == 0, proc.stderr[-2000:]
    passed, message = _verdict("06_sampling", "kv_cache", tmp_path / "a")
    assert passed and "one new token costs" in message, message
    wasteful = source.replace("    return model.unembed(model.ln_final(residual)), KVCache(keys, values)",
                              "    model(t.zeros(tokens.shape[0], 16, dtype=t.long))  # a full pass, thrown away\n"
                              "    return model.unembed(model.ln_final(residual)), KVCache(keys, values)")
    assert wasteful != source
    proc = _learner_process(wasteful, "kv_cache", "forward_with_cache", tmp_path / "b", "06_sampling")
    assert proc.returncode == 0, proc.stderr[-2000:]
    passed, message = _verdict("06_sampling", "kv_cache", tmp_path / "b")
    assert not passed and "one new token after 15 cached positions cost" in message, message


# Chapter 05: the learner's trainer is built in the sandbox from the plan's args, model and tokens; the model's
# parameters after each step, the probe's record of how the model was run and whether a returned loss is still
# attached to its graph all come back to the grader.
def _trainer_source() -> str:
    import inspect

    from utils.reference import training

    return ("from __future__ import annotations\nimport torch as t\nfrom jaxtyping import Float, Int\n"
            "from torch import Tensor, nn\n\n" + inspect.getsource(training.TransformerTrainer))


def _trainer_verdict(source: str, exercise: str, tmp_path: Path) -> tuple[bool, str]:
    proc = _learner_process(source, exercise, "TransformerTrainer", tmp_path, "05_training")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _verdict("05_training", exercise, tmp_path)


def test_chapter_05_a_trainer_from_another_process_passes_and_its_mistakes_are_seen(tmp_path):
    source = _trainer_source()  # the reference's own text, run as the learner's code on the learner's side
    for exercise in ("training_step", "evaluate"):
        passed, message = _trainer_verdict(source, exercise, tmp_path / exercise)
        assert passed and message.startswith("✓"), message
    attached = source.replace("        return loss.detach()", "        return loss")
    left_in_eval = source.replace("        self.model.train()\n        return n_correct", "        return n_correct")
    assert attached != source and left_in_eval != source
    passed, message = _trainer_verdict(attached, "training_step", tmp_path / "attached")
    assert not passed and "still attached to its graph" in message, message
    passed, message = _trainer_verdict(left_in_eval, "evaluate", tmp_path / "eval_mode")
    assert not passed and "left the model in eval mode" in message, message


# Chapter 07: the learner's cached forward is handed the chapter's decoder, which the sandbox does not hold: the
# stub rebuilds it over transformers' Llama modules with the recorded weights, and the learner's GQACache goes
# back into the learner's next call there.
def _rope_source() -> str:
    import inspect

    from utils.reference import modern

    parts = [inspect.getsource(getattr(modern, name)) for name in
             ("apply_rotary", "GQACache", "attention_with_rope_cache", "forward_with_rope_cache")]
    return ("from __future__ import annotations\nimport math\nfrom dataclasses import dataclass\nimport einops\n"
            "import torch as t\nfrom jaxtyping import Float, Int\nfrom torch import Tensor\n"
            "GroupedQueryAttention = LlamaStyleDecoder = object\n" + "\n\n".join(parts))


def test_chapter_07_a_rope_cache_from_another_process_passes_and_a_lying_cache_does_not(tmp_path):
    source = _rope_source()  # the reference's own text, run as the learner's code on the learner's side
    proc = _learner_process(source + "\ntry:\n    from utils.reference.modern import RMSNorm\nexcept ImportError as exc:\n"
                            "    print('IMPORT FAILED:', type(exc).__name__)\n",
                            "kv_rope", "forward_with_rope_cache", tmp_path / "a", "07_modern_decoder")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "IMPORT FAILED: ModuleNotFoundError" in proc.stdout, proc.stdout  # the chapter's decoder is not there
    passed, message = _verdict("07_modern_decoder", "kv_rope", tmp_path / "a")
    assert passed and message.startswith("✓ forward_with_rope_cache matches"), message
    # every key and value cached with all query heads (expanded before caching): right logits, a cache 2x too big
    expanded = source.replace("    return out, k, v  # n_kv_heads heads: the cache stays small",
                              "    return out, k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)")
    expanded = expanded.replace("k, v = t.cat([past_k, k], dim=1), t.cat([past_v, v], dim=1)",
                                "g = attn.cfg.n_heads // attn.cfg.n_kv_heads\n        "
                                "k, v = t.cat([past_k[:, :, ::g], k], dim=1), t.cat([past_v[:, :, ::g], v], dim=1)")
    assert "return out, k.repeat_interleave" in expanded and "past_k[:, :, ::g]" in expanded
    proc = _learner_process(expanded, "kv_rope", "forward_with_rope_cache", tmp_path / "b", "07_modern_decoder")
    assert proc.returncode == 0, proc.stderr[-2000:]
    passed, message = _verdict("07_modern_decoder", "kv_rope", tmp_path / "b")
    assert not passed and "cache expanded heads" in message, message


def _chapter_list(numbers: list[str]) -> str:
    """'03 and 05 to 07' for ['03', '05', '06', '07']: runs of three or more consecutive chapters as ranges."""
    runs: list[list[str]] = []
    for n in numbers:
        if runs and int(n) == int(runs[-1][-1]) + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [p for r in runs for p in (r if len(r) < 3 else [f"{r[0]} to {r[-1]}"])]  # ranges of 3 or more
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def test_chapter_list_wording():
    assert _chapter_list(["03", "05", "06", "07"]) == "03 and 05 to 07"
    assert _chapter_list(["01", "02", "04", "08"]) == "01, 02, 04 and 08"
    assert _chapter_list(["03"]) == "03"


def test_instructors_guide_lists_how_each_chapter_is_judged():
    from utils.grading.config import REPO, chapters

    guide = " ".join((REPO / "docs" / "instructors.md").read_text().split())
    section = guide[guide.index("### Where the grading boundary is"):]
    outside = sorted(c for c in chapters() if boundary.covered(c))
    assert outside == CHAPTERS == ["01_foundations", "02_components", "04_interpretability", "05_training",
                                   "06_sampling", "07_modern_decoder", "08_circuits"]
    counts = {c: len(_exercises(c)) for c in CHAPTERS}
    assert (f"Chapters {_chapter_list([c[:2] for c in outside])} are graded outside the learner's process: every one "
            f"of their {sum(counts.values())} exercises") in section
    for chapter, n in counts.items():
        assert f"{n} in chapter {chapter[:2]}" in section, chapter
    inside = [c for c in chapters() if not boundary.covered(c)]
    heading = "Chapter" if len(inside) == 1 else "Chapters"
    assert f"{heading} {_chapter_list([c[:2] for c in inside])}: judged in the learner's process (scan only)" in section
    for exercise in (call.exercise for call in __import__("utils.checks.catalogue", fromlist=["x"]).check_calls()
                     if call.notebook in inside):
        assert f"`{exercise}`" in section, exercise  # every exercise still judged inside is named, with its reason


def test_parallel_builders_of_one_folder_build_it_once(tmp_path):
    """Two graders (or a grader and this test module) asking for the same plans: one records, the other waits."""
    import threading
    import time

    calls = []

    def build(folder: Path) -> None:
        calls.append(folder)
        time.sleep(0.3)  # long enough for the other thread to arrive while this one holds the lock
        (folder / "index.json").write_text("{}")

    target = tmp_path / "plans" / "random-mini" / "02_components"
    threads = [threading.Thread(target=boundary._publish, args=(build, target)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and (target / "index.json").read_text() == "{}"
    assert [p.name for p in target.parent.iterdir() if not p.name.startswith(".")] == ["02_components"]
