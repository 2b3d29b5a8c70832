"""The nbgrader configuration of the course, shared by the repository's `nbgrader_config.py` and every
temporary course directory (tests, the class-scale benchmark).

nbgrader wants `source/<assignment>/<notebook>.ipynb`; the course's source is `solutions/NN_name.ipynb`.
`configure` copies each solution notebook into a `source/` tree in the temporary directory (never into the
repository) and points nbgrader there: one chapter is one assignment holding one notebook of the same name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO / "solutions"
COURSE_ID = "transformer-from-scratch"
CELL_TIMEOUT_S = 120  # one cell; the slowest solution cell takes a few seconds
NOTEBOOK_TIMEOUT_S = 1200  # one notebook; a solution notebook runs in about a minute at most


def chapters() -> list[str]:
    """Every chapter that has a solution notebook, e.g. ['02_components', '03_assembly']."""
    return sorted(p.stem for p in SOLUTIONS.glob("[0-9][0-9]_*.ipynb"))


def default_source_dir() -> Path:
    tag = hashlib.sha256(str(REPO).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"tfs-nbgrader-{tag}" / "source"


def sync_source(source_dir: Path) -> Path:
    """source_dir/<chapter>/<chapter>.ipynb for every solution notebook (copied only when changed)."""
    for chapter in chapters():
        src = SOLUTIONS / f"{chapter}.ipynb"
        dest = source_dir / chapter / f"{chapter}.ipynb"
        if not dest.exists() or dest.read_bytes() != src.read_bytes():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
    return source_dir


def configure(c, root: str | Path | None = None, source_dir: str | Path | None = None) -> None:
    """Apply the course's nbgrader settings to the config object `c` (see nbgrader_config.py)."""
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds,
                                        IgnorePattern, LimitOutput, OverwriteCells, OverwriteKernelspec,
                                        SaveAutoGrades)

    from utils.grading.boundary import TrustedJudge
    from utils.grading.execute import SafeExecute
    from utils.grading.integrity import FlagIntegrity, QuietGradeCells
    from utils.grading.normalise import NormaliseSubmission

    source = Path(source_dir or os.environ.get("TFS_NBGRADER_SOURCE") or default_source_dir())
    sync_source(source)
    c.CourseDirectory.course_id = COURSE_ID
    c.CourseDirectory.root = str(Path(root or REPO).resolve())
    c.CourseDirectory.source_directory = str(source.resolve())
    # timeouts: per cell (nbgrader's own), per notebook (SafeExecute); resource limits: utils/grading/sandbox.py
    c.Execute.timeout = CELL_TIMEOUT_S
    c.SafeExecute.notebook_timeout = NOTEBOOK_TIMEOUT_S
    c.SafeExecute.max_output_bytes = 200_000
    # output that arrives late on a loaded machine is not a reason to abort a submission: a cell's error is
    # known from its execute reply (nbgrader adds the error output when iopub lost it)
    c.Execute.iopub_timeout = 15
    c.Execute.raise_on_iopub_timeout = False
    c.LimitOutput.max_lines = 1000
    c.LimitOutput.max_traceback = 100
    c.Autograde.sanitize_preprocessors = [
        NormaliseSubmission,  # metadata, cell types, deleted test cells and format repaired from the release
        ClearOutput,
        DeduplicateIds,  # a no-op after NormaliseSubmission; kept as nbgrader's own guard
        OverwriteKernelspec,
        OverwriteCells,  # locked cells' sources restored from the gradebook (checksums)
        CheckCellMetadata,
    ]
    c.Autograde.autograde_preprocessors = [
        SafeExecute,  # sandboxed kernel, notebook time limit, output cap, survives a dead kernel
        QuietGradeCells,  # stderr warnings in a passing test cell are not a failure
        TrustedJudge,  # chapters 01 and 02: each test cell's verdict comes from the checker run here
        FlagIntegrity,  # reference imports and tampering zero the exercises after them
        IgnorePattern,
        ClearMetadataPreprocessor,
        LimitOutput,
        SaveAutoGrades,
        AssignLatePenalties,
        CheckCellMetadata,
    ]
