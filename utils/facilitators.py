"""The generated parts of docs/facilitators.md: each chapter's session plan and the mistakes to expect.

    python -m utils.facilitators           # rewrite the generated blocks in docs/facilitators.md
    python -m utils.facilitators --check   # exit 1 if they are out of date (a test runs this)

A block sits between `<!-- generated: plan CHAPTER -->` (or `mistakes CHAPTER`) and `<!-- end generated -->`;
everything else in the guide is written by hand. Plans come from the solution notebooks (sections, exercises
and the minutes each exercise heading announces) and from docs/session_timings.json (machine time per
section, measured by `python -m utils.session_timing`). Mistakes come from the checkers' catalogues
(utils/checks/mistakes_ch*.py), so the guide names only mistakes a check can actually report.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

from utils.session_timing import ROOT, SOLUTIONS, TIMINGS, sections

GUIDE = ROOT / "docs" / "facilitators.md"
_BLOCK = re.compile(r"(<!-- generated: (plan|mistakes) (\w+) -->\n)(.*?)(<!-- end generated -->)", re.S)
PER_EXERCISE = 3
BREAK_AFTER_MIN = 60  # suggest a pause once this much announced work has accumulated since the last one


def _minutes(m: float) -> str:
    return f"{m:.0f} min" if m < 90 else f"{m / 60:.1f} h"


def plan(chapter: str) -> str:
    nb = nbformat.read(str(SOLUTIONS / f"{chapter}.ipynb"), as_version=4)
    measured = json.loads(TIMINGS.read_text(encoding="utf-8")).get(chapter, {}) if TIMINGS.exists() else {}
    machine = {s["title"]: s["machine_s"] for s in measured.get("sections", [])}
    rows = ["| section | exercises (announced minutes) | learner time, announced | machine time, measured | pause |",
            "|---|---|---|---|---|"]
    since_break, total = 0, 0
    shown = [p for p in sections(nb) if p.exercises or machine.get(p.title, 0) >= 1]
    for part in shown:
        since_break += part.announced_min
        total += part.announced_min
        pause = "☕ break" if since_break >= BREAK_AFTER_MIN and part is not shown[-1] else ""
        if pause:
            since_break = 0
        exercises = ", ".join(f"{n} {title} ({m})" for n, title, m in part.exercises) or "—"
        seconds = machine.get(part.title)
        rows.append(f"| {part.title} | {exercises} | {part.announced_min} min | "
                    f"{'not measured' if seconds is None else f'{seconds:.0f} s'} | {pause} |")
    note = (f"Measured {measured['measured']} on {measured['machine']}, load average {measured['load_at_start']} at "
            f"the start, {'fast demos (TFS_FAST=1)' if measured.get('fast') else 'full-size demos'}; "
            f"whole notebook {measured['wall_s']:.0f} s." if measured else "Machine time not measured yet.")
    return "\n".join(rows) + f"\n\nAnnounced exercise time in all: {_minutes(total)}. {note}\n"


def mistakes(chapter: str) -> str:
    from utils.checks import REGISTRY
    from utils.checks.catalogue import check_calls

    lines = ["| exercise | first catalogued mistakes (name: the hint a learner sees) | in catalogue |", "|---|---|---|"]
    for call in check_calls():
        if call.notebook != chapter:
            continue
        entry = REGISTRY.get(call.exercise)
        listed = entry.mistakes if entry else []
        shown = "<br>".join(f"`{m.name}`: {m.hint.replace('|', '/')}" for m in listed[:PER_EXERCISE]) or \
            "none catalogued: the check reports the difference only"
        lines.append(f"| `{call.exercise}` | {shown} | {len(listed)} |")
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    def block(match: re.Match) -> str:
        kind, chapter = match.group(2), match.group(3)
        body = plan(chapter) if kind == "plan" else mistakes(chapter)
        return f"{match.group(1)}{body}{match.group(5)}"

    return _BLOCK.sub(block, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.facilitators", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated blocks are stale")
    args = parser.parse_args(argv)
    text = GUIDE.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"stale: {GUIDE.relative_to(ROOT)} (run `python -m utils.facilitators`)")
            return 1
        return 0
    GUIDE.write_text(fresh, encoding="utf-8")
    print(f"wrote {GUIDE.relative_to(ROOT)}" if fresh != text else "everything is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
