"""Finding the submissions in a folder of student notebooks, and saying what was left out and why.

The folder holds one folder per student, `<student>/<chapter>.ipynb` or `<student>/<chapter>/<chapter>.ipynb`.
Browsers save a second download as `<chapter> (1).ipynb` and Jupyter's "Duplicate" makes
`<chapter>-Copy1.ipynb`: such a name is accepted when it is the only candidate for its chapter in that
student's folder; with several candidates none is taken, and the report lists them, so that you choose.

Symbolic links are never followed, neither for a student's folder nor for a notebook: a link can point at
another student's work or at anything on your disk, and a submission is a file the student sent. Each one
is reported with its target.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from utils.grading.autograde import STUDENT_ID

VARIANT = r"(?: ?\(\d+\)|-Copy\d+)?"  # `name (1)`, `name(2)`, `name-Copy1`


@dataclass
class Collection:
    collected: list[tuple[str, str, Path]] = field(default_factory=list)  # (student, chapter, file)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, why)

    def __iter__(self):
        return iter((student, chapter) for student, chapter, _ in self.collected)

    def __len__(self) -> int:
        return len(self.collected)


def _link(path: Path) -> str:
    return f"a symbolic link (to {os.readlink(path)}): not followed; copy the file itself into the folder"


def _name_pattern(chapters: list[str]) -> re.Pattern:
    names = "|".join(re.escape(c) for c in sorted(chapters, key=len, reverse=True))
    return re.compile(rf"^(?P<chapter>{names}){VARIANT}\.ipynb$")


def _student(folder: Path, chapters: list[str], pattern: re.Pattern, found: Collection) -> None:
    candidates: dict[str, list[Path]] = {}
    entries = sorted(folder.iterdir())
    for sub in [e for e in entries if e.name in chapters and e.is_dir() and not e.is_symlink()]:
        entries += sorted(sub.iterdir())
    for path in entries:
        match = pattern.match(path.name)
        if match:
            candidates.setdefault(match["chapter"], []).append(path)
        elif path.name in chapters and path.is_dir() and not path.is_symlink():
            continue  # a chapter's own folder: its files were listed above
        elif path.is_symlink():
            found.skipped.append((path, _link(path)))
        elif path.name == ".ipynb_checkpoints":
            found.skipped.append((path, "Jupyter's checkpoint folder: not a submission"))
        elif path.suffix == ".ipynb":
            found.skipped.append((path, f"not named after a chapter being collected ({', '.join(chapters)})"))
        else:
            found.skipped.append((path, "not a notebook"))
    for chapter, paths in sorted(candidates.items()):
        links = [p for p in paths if p.is_symlink()]
        files = [p for p in paths if not p.is_symlink() and p.is_file()]
        found.skipped += [(p, _link(p)) for p in links]
        found.skipped += [(p, "not a file") for p in paths if p not in links and p not in files]
        if len(files) == 1:
            found.collected.append((folder.name, chapter, files[0]))
        elif files:
            names = ", ".join(str(p.relative_to(folder)) for p in files)
            found.skipped += [(p, f"ambiguous: {len(files)} candidates for {chapter} ({names}); keep one")
                              for p in files]
    if not candidates:
        found.skipped.append((folder, f"no notebook of {', '.join(chapters)} in this student's folder"))


def find_submissions(folder: Path, chapters: list[str]) -> Collection:
    """What `collect` would copy from `folder`, and everything it would skip, with the reason."""
    found = Collection()
    pattern = _name_pattern(chapters)
    for entry in sorted(Path(folder).iterdir()):
        if entry.is_symlink():
            found.skipped.append((entry, _link(entry)))
        elif not entry.is_dir():
            found.skipped.append((entry, "not a student's folder (expected <student>/<chapter>.ipynb)"))
        elif not STUDENT_ID.match(entry.name):
            found.skipped.append((entry, "not a valid student id (letters, digits and _ . @ - only, "
                                         "starting with a letter or digit)"))
        else:
            _student(entry, chapters, pattern, found)
    return found
