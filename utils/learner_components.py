"""Chapter 03 assembles GPT-2 from the learner's own chapter-02 components, where those pass their checks.

`learner_components()` reads the learner's `02_components.ipynb`, runs its exported cells (imports, `Config`,
and the seven solution cells) in a fresh module namespace, and runs each component's chapter-02 checker
quietly. A class that passes is used; any other falls back to the reference in `utils.reference.components`,
and one printed line says which is which. Nothing here can fail the chapter: a missing, unreadable or
broken notebook only means the reference classes are used.
"""

from __future__ import annotations

import contextlib
import io
import os
import types
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "02_components.ipynb"
# Each component and the chapter-02 exercises whose checks it must pass (Attention has two).
COMPONENT_CHECKS: dict[str, tuple[str, ...]] = {
    "LayerNorm": ("layer_norm",),
    "Embed": ("embed",),
    "PosEmbed": ("pos_embed",),
    "Attention": ("causal_mask", "attention"),
    "MLP": ("mlp",),
    "TransformerBlock": ("transformer_block",),
    "Unembed": ("unembed",),
}


@dataclass
class Components:
    """The seven classes to build the model from, which of them are the learner's, and why the others are not."""

    classes: dict[str, type]
    yours: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # component -> why the reference is used
    source: Path | None = None

    def __iter__(self):  # `LayerNorm, Embed, ... = components` in COMPONENT_CHECKS's order
        return iter(self.classes[name] for name in COMPONENT_CHECKS)

    def summary(self) -> str:
        if len(self.yours) == len(COMPONENT_CHECKS):
            return f"Components: yours, all {len(self.yours)} pass chapter 02's checks ({self.source})."
        if not self.yours:
            why = sorted(set(self.reasons.values()))
            return f"Components: the reference's for all {len(COMPONENT_CHECKS)} ({'; '.join(why)})."
        fallback = ", ".join(f"{name} ({reason})" for name, reason in self.reasons.items())
        return f"Components: yours for {', '.join(self.yours)}; the reference's for {fallback}."


def find_notebook() -> Path | None:
    """`TFS_CH02_NOTEBOOK`, else `02_components.ipynb` next to the running notebook, else chapters/ in the repo."""
    candidates = [os.environ.get("TFS_CH02_NOTEBOOK", ""), Path.cwd() / NOTEBOOK,
                  Path.cwd().parent / "chapters" / NOTEBOOK, ROOT / "chapters" / NOTEBOOK]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _exported_sources(path: Path) -> list[str]:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return [cell.source for cell in nb.cells
            if cell.cell_type == "code" and cell.get("metadata", {}).get("tfs", {}).get("export") == "components"]


def _run_cells(sources: list[str]) -> types.ModuleType:
    """Every cell runs even if an earlier one fails: a broken Attention must not hide a working MLP."""
    namespace = types.ModuleType("learner_chapter02")
    for source in sources:
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exec(compile(source, "02_components.ipynb", "exec"), namespace.__dict__)
        except Exception:  # the learner's cell is broken; the classes it defines simply stay missing
            continue
    return namespace


def _passes(cls: type, exercise_ids: tuple[str, ...]) -> str:
    """'' when `cls` passes every check in `exercise_ids`, else a few words on why not."""
    from utils.checks import CHECKERS
    from utils.checks.core import NotImplementedYet

    for exercise_id in exercise_ids:
        check = CHECKERS.get(exercise_id)
        if check is None:
            return f"no `{exercise_id}` check to vouch for it"
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                check(cls)
        except NotImplementedYet:
            return "not implemented yet"
        except Exception:  # AssertionError from the check, or anything the learner's code raised
            return f"fails `checks.{exercise_id}`"
    return ""


def learner_components(notebook: str | Path | None = None, verbose: bool = True) -> Components:
    """The learner's chapter-02 classes that pass their checks, the reference ones for the rest."""
    from utils.reference import components as reference

    classes = {name: getattr(reference, name) for name in COMPONENT_CHECKS}
    found = Path(notebook) if notebook is not None else find_notebook()
    result = Components(classes=classes, source=found)
    if found is None or not found.is_file():
        result.reasons = {name: f"{NOTEBOOK} not found" for name in COMPONENT_CHECKS}
    else:
        try:
            namespace = _run_cells(_exported_sources(found))
        except Exception as exc:  # an unreadable notebook: reference classes, said in one line
            namespace = None
            result.reasons = {name: f"{found.name} unreadable ({type(exc).__name__})" for name in COMPONENT_CHECKS}
        for name, exercise_ids in COMPONENT_CHECKS.items() if namespace is not None else ():
            cls = getattr(namespace, name, None)
            reason = "not defined" if not isinstance(cls, type) else _passes(cls, exercise_ids)
            if reason:
                result.reasons[name] = reason
            else:
                classes[name] = cls
                result.yours.append(name)
    if verbose:
        print(result.summary())
    return result
