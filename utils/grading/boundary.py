"""The grading boundary for the chapters judged outside the learner's process (trusted.py says how).

- `ensure_plans(chapter, kind)`: every exercise's probe plan, recorded once per chapter, reference kind and
  version of the checkers, in a folder of the grader's temporary directory (never inside a sandbox's reach
  for writing; bound read-only into it).
- `ensure_package()`: the course package the sandbox gets for those chapters: what their setup and demo
  cells import (the notebook helpers, the tokenizer, the demo reference model) and the check stub, but not
  `utils/reference/`, the checkers, the mistake catalogues, the grader or the course's other models.
- `ProbeSession`: one notebook's plans and results folders, shared by the executor and the kernel manager.
- `TrustedJudge`: the nbgrader preprocessor that replaces each covered test cell's output with the verdict
  of the real checker run here on what the learner's code returned; nbgrader scores that output.

Every other chapter is still judged in the learner's process, with the static scan as its tripwire.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade

from utils.grading import wire

UTILS = Path(__file__).resolve().parents[1]
# chapter -> the reference module its exercises' solutions are exported to
COVERED = {"01_foundations": "foundations", "02_components": "components", "04_interpretability": "interp",
           "05_training": "training", "06_sampling": "sampling", "07_modern_decoder": "modern", "08_circuits": "circuits"}
PACKAGE_FILES = ("__init__.py", "notebook.py", "reference_model.py", "tokenizer.py")
# what a chapter's setup and demo cells import beyond PACKAGE_FILES: earlier chapters' solutions, which its
# notebook hands out (chapter 04 is given chapter 03's EducationalTransformer), never its own
_INTERP_FILES = ("reference/__init__.py", "reference/components.py", "reference/model.py", "induction.py",
                 "plotting.py", "corpus.py", "models/__init__.py", "models/course_gpt.py", "models/compact_tokenizer.py",
                 "data/induction_model.pt", "data/course_gpt.pt")
CHAPTER_FILES = {
    "04_interpretability": _INTERP_FILES,
    "05_training": ("reference/__init__.py", "reference/components.py", "reference/model.py", "corpus.py",
                    "models/__init__.py", "models/course_gpt.py", "models/compact_tokenizer.py", "data/course_gpt.pt"),
    "06_sampling": ("reference/__init__.py", "reference/components.py", "reference/model.py", "reference/training.py",
                    "corpus.py", "models/__init__.py", "models/course_gpt.py", "models/compact_tokenizer.py",
                    "data/course_gpt.pt"),  # chapter 06 is given chapter 05's checkpoint loader
    # chapter 07 is given chapter 02's Embed and the Llama reference (transformers' model with seeded weights)
    "07_modern_decoder": ("reference/__init__.py", "reference/components.py", "llama_reference.py"),
    "08_circuits": (*_INTERP_FILES, "reference/interp.py"),  # chapter 08 is given chapter 04's functions
}
VERSIONED = ("checks", "reference", "reference_model.py", "tokenizer.py", "notebook.py", "__init__.py",
             "grading/trusted.py", "grading/plan_encoding.py", "grading/wire.py", "grading/stub_checks.py",
             "grading/boundary.py", "grading/stub_llama.py")
JUDGE_TAG = "tfs-judge:"
IN_PROCESS = "judged in the learner's process (scan only)"
OUTSIDE = "judged outside the learner's process"
_CALL = re.compile(r"^\s*checks\.(\w+)\(")


def covered(chapter: str) -> bool:
    return chapter in COVERED


def grading_kind() -> str:
    return os.environ.get("TFS_GRADING_REFERENCE", "random-mini")


def _version() -> str:
    digest = hashlib.sha256()
    for name in sorted(set(VERSIONED) | {f for files in CHAPTER_FILES.values() for f in files}):
        path = UTILS / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(UTILS)).encode() + file.read_bytes())
    return digest.hexdigest()[:12]


def _base() -> Path:
    return Path(os.environ.get("TFS_PROBE_DIR") or Path(tempfile.gettempdir()) / f"tfs-boundary-{_version()}")


def _publish(build, target: Path) -> Path:
    """Build into a fresh folder, then rename it into place: parallel graders never see half a folder.

    Builders of the same folder take turns (a lock file beside it): a second grader, or a test process
    that needs the same plans, waits for the first and reuses its folder instead of recording them again."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not target.is_dir():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                build(tmp)
                os.chmod(tmp, 0o755)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def reference_kind(kind: str):
    """The reference every checker here compares against, as the sandbox's kernel uses it."""
    before = os.environ.get("TFS_REFERENCE")
    os.environ["TFS_REFERENCE"] = kind
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TFS_REFERENCE", None)
        else:
            os.environ["TFS_REFERENCE"] = before


def reference_targets(chapter: str) -> dict:
    """{exercise: the reference class or function its test cell's `checks.<id>(Name)` stands for; a tuple of
    them for a cell that passes several, `checks.<id>(A, B)`}."""
    from utils.checks.catalogue import check_calls

    module = importlib.import_module(f"utils.reference.{COVERED[chapter]}")
    found = {}
    for call in check_calls():
        match = re.match(r"^checks\.(\w+)\((\w+(?:, \w+)*)\)$", call.source)
        if call.notebook == chapter and match:
            names = match.group(2).split(", ")
            refs = tuple(getattr(module, name) for name in names)
            found[match.group(1)] = refs[0] if len(refs) == 1 else refs
    return found


def ensure_plans(chapter: str, kind: str | None = None) -> Path:
    """The folder of `chapter`'s probe plans for reference `kind`: index.json and one plan per exercise."""
    from utils.checks import CHECKERS
    from utils.grading.trusted import record

    kind = kind or grading_kind()

    def build(folder: Path) -> None:
        index = {}
        with reference_kind(kind):
            for exercise, reference in reference_targets(chapter).items():
                references = reference if isinstance(reference, tuple) else (reference,)
                document, tensors = record(exercise, CHECKERS[exercise], *references)
                writer = wire.Writer()
                writer.tensors = tensors
                writer.save(folder / exercise, document)
                index[exercise] = document["argument"]
        (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
        for path in folder.iterdir():
            os.chmod(path, 0o644)

    return _publish(build, _base() / "plans" / kind / chapter)


STUB_FILES = ("__init__.py", "_wire.py", "_module_runs.py", "_flops.py", "_spies.py", "_llama.py")  # utils/checks/ in the sandbox


def package_files(chapter: str | None = None) -> tuple[str, ...]:
    return PACKAGE_FILES + CHAPTER_FILES.get(chapter or "", ())


def ensure_package(chapter: str | None = None) -> Path:
    """The folder that holds the sandbox's `utils` package for `chapter` (its parent goes on the kernel's
    PYTHONPATH)."""

    def build(folder: Path) -> None:
        package = folder / "utils"
        (package / "checks").mkdir(parents=True)
        for name in package_files(chapter):
            (package / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(UTILS / name, package / name)
        shutil.copyfile(UTILS / "grading" / "stub_checks.py", package / "checks" / "__init__.py")
        shutil.copyfile(UTILS / "grading" / "wire.py", package / "checks" / "_wire.py")
        shutil.copyfile(UTILS / "checks" / "module_runs.py", package / "checks" / "_module_runs.py")
        shutil.copyfile(UTILS / "checks" / "flops.py", package / "checks" / "_flops.py")
        shutil.copyfile(UTILS / "checks" / "spies.py", package / "checks" / "_spies.py")
        shutil.copyfile(UTILS / "grading" / "stub_llama.py", package / "checks" / "_llama.py")
        for path in [package, package / "checks", *package.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)

    target = _base() / "package" / (chapter if chapter in CHAPTER_FILES else "base")
    expected = {f"utils/{name}" for name in package_files(chapter)} | {f"utils/checks/{name}" for name in STUB_FILES}
    if target.is_dir() and {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} != expected:
        shutil.rmtree(target, ignore_errors=True)  # left by a build whose sources changed under it: build it again
    return _publish(build, target)


# ------------------------------------------------------------------------------------------ one notebook


@dataclass
class ProbeSession:
    """One notebook's boundary: the plans it reads, where the stub writes, where each test cell's results go."""

    chapter: str
    plans: Path
    package: Path
    root: Path  # holds out/ (the sandbox writes there) and cells/<index>/ (collected after each test cell)

    @property
    def out(self) -> Path:
        return self.root / "out"

    def kernel_env(self, plan_at: str, out_at: str, package_at: str) -> dict[str, str]:
        return {"TFS_PROBE_PLAN": plan_at, "TFS_PROBE_OUT": out_at, "PYTHONPATH": package_at}

    def clear(self) -> None:
        for path in self.out.iterdir():
            if path.is_file() and not path.is_symlink():
                path.unlink()
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()

    def collect(self, cell_index: int) -> None:
        """What the stub wrote while test cell `cell_index` ran, kept for the judge."""
        dest = self.root / "cells" / str(cell_index)
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.out.iterdir():
            if path.is_file() and not path.is_symlink() and path.suffix in (".json", ".safetensors"):
                shutil.move(str(path), dest / path.name)
        self.clear()


_SESSION: ProbeSession | None = None


def current() -> ProbeSession | None:
    return _SESSION


@contextlib.contextmanager
def session(chapter: str):
    """The probe session of one notebook of `chapter` (None for a chapter judged in the learner's process)."""
    global _SESSION
    if not covered(chapter):
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="tfs-probe-"))
    (root / "out").mkdir(mode=0o777)
    os.chmod(root, 0o755)
    os.chmod(root / "out", 0o777)  # the sandbox's user writes here
    _SESSION = ProbeSession(chapter, ensure_plans(chapter), ensure_package(chapter), root)
    try:
        yield _SESSION
    finally:
        _SESSION = None


# ----------------------------------------------------------------------------------------------- judging


def verdict_output(verdict) -> NotebookNode:
    if verdict.passed:
        return NotebookNode(output_type="stream", name="stdout", text=verdict.message + "\n")
    return NotebookNode(output_type="error", ename=verdict.ename, evalue=verdict.message,
                        traceback=[f"{verdict.ename}: {verdict.message}"])


def judge_cell(chapter: str, exercise: str, results_dir: Path, sandbox_outputs: list):
    """The trusted verdict on the results one test cell's check wrote (Unverifiable when it wrote none)."""
    from utils.checks import CHECKERS
    from utils.grading.trusted import Verdict, judge

    plans = ensure_plans(chapter)
    plan, _ = wire.read(plans / exercise)
    try:
        results, tensors = wire.read(results_dir / exercise)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        errors = [f"{o.get('ename')}: {str(o.get('evalue', ''))[:200].rstrip('.')}" for o in sandbox_outputs
                  if o.get("output_type") == "error"]
        why = f"; the cell raised {errors[0]}" if errors else ""
        return Verdict(False, "Unverifiable", f"checks.{exercise} could not be verified by the grader: its check "
                       f"left no readable results in the sandbox ({exc}){why}.")
    except Exception as exc:  # safetensors' own error for a damaged file
        return Verdict(False, "Unverifiable", f"checks.{exercise} could not be verified by the grader: its "
                       f"results are unreadable ({type(exc).__name__}).")
    with reference_kind(grading_kind()):
        return judge(exercise, CHECKERS[exercise], plan, results, tensors)


class TrustedJudge(NbGraderPreprocessor):
    """After execution: each test cell of a covered chapter shows the grader's own verdict, which nbgrader
    then scores; what the learner's kernel printed there is discarded."""

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        probe = resources.pop("tfs_probe", None)
        if probe is None:
            return nb, resources
        import torch

        torch.set_num_threads(max(1, int(json.loads(os.environ.get("TFS_GRADING_LIMITS", "{}") or "{}").get("threads", 1))))
        judged = 0
        index_file = json.loads((probe.plans / "index.json").read_text(encoding="utf-8"))
        for index, cell in enumerate(nb.cells):
            match = _CALL.match(cell.source) if cell.cell_type == "code" and is_grade(cell) else None
            if match is None or match.group(1) not in index_file:
                continue  # judged in the learner's process, as before
            verdict = judge_cell(probe.chapter, match.group(1), probe.root / "cells" / str(index), cell.outputs)
            cell.outputs = [verdict_output(verdict)]
            judged += 1
        self.log.info("%s %s/%s: %d test cells judged outside the sandbox", JUDGE_TAG, info.get("student"),
                      info.get("notebook"), judged)
        shutil.rmtree(probe.root, ignore_errors=True)
        return nb, resources
