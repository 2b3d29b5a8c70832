"""The benchmark results as a Markdown table (what the README shows).

Every ratio is the course's speed divided by its peer's, measured in the same run: above 1 the course is
faster. For times that is peer time / course time; for rates (tokens/s, steps/s) course rate / peer rate.
The goal column ends in ✓ or ✗ when the figure can be judged against it.
"""

from __future__ import annotations

from bench.checkers import FIRST_CALL_GOAL_S, warm_goal_s

HEADER = ["| figure | course | peer | ratio (course speed ÷ peer speed; > 1 = course faster) | goal |",
          "|---|---|---|---|---|"]


def _ratio(course_time: float, peer_time: float) -> str:
    """Speed ratio from two times (smaller is faster)."""
    return f"{peer_time / course_time:.2f}×" if course_time and peer_time else "—"


def _rate_ratio(course_rate: float, peer_rate: float) -> str:
    """Speed ratio from two rates (larger is faster)."""
    return f"{course_rate / peer_rate:.2f}×" if course_rate and peer_rate else "—"


def _at_least(ratio: str, minimum: float) -> str:
    if ratio == "—":
        return f"≥ {minimum:.1f}×"
    return f"≥ {minimum:.1f}× {'✓' if float(ratio.rstrip('×')) >= minimum else '✗'}"


def _at_most(value: float, limit: float, text: str) -> str:
    return f"{text} {'✓' if value <= limit else '✗'}"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _reference_rows(r: dict) -> list[str]:
    return [_row(f"reference `{kind}` cold load offline (kind reported / loaded)",
                 f"{row['reports_kind_after_s']:.1f} s / {row['loaded_after_s']:.1f} s", "—", "—",
                 _at_most(row["reports_kind_after_s"], 5.0, "report ≤ 5 s"))
            for kind, row in r.get("reference", {}).items()]


SIZE_LABELS = {"random-mini": "`random-mini`", "gpt2-size": "GPT-2 size"}


def _checker_rows(r: dict) -> list[str]:
    """Per reference size: the slowest warm checker against its goal, the slowest first call, each chapter's sum."""
    rows = []
    for size, c in r.get("checkers", {}).items():
        per = c.get("per_checker", {})
        if not per:
            continue
        label = f"{SIZE_LABELS.get(size, size)} (`{c.get('reference', '?')}`)"
        over = {ex: row["warm_s"] / warm_goal_s(size, row["notebook"]) for ex, row in per.items()}
        worst = max(over, key=over.get)
        goal = warm_goal_s(size, per[worst]["notebook"])
        rows.append(_row(f"checkers at {label}: the one furthest from its warm goal (`{worst}`)",
                         f"{per[worst]['warm_s'] * 1e3:.0f} ms", "—", "—",
                         _at_most(per[worst]["warm_s"], goal, f"≤ {goal * 1e3:.0f} ms")))
        first = max(per, key=lambda ex: per[ex]["first_s"])
        rows.append(_row(f"checkers at {label}: slowest first call (`{first}`)", f"{per[first]['first_s']:.2f} s",
                         "—", "—", _at_most(per[first]["first_s"], FIRST_CALL_GOAL_S, "≤ 3 s")))
        chapters: dict[str, float] = {}
        for row in per.values():
            chapters[row["notebook"]] = chapters.get(row["notebook"], 0.0) + row["warm_s"]
        for chapter, seconds in sorted(chapters.items()):
            rows.append(_row(f"all checkers of `{chapter}` at {label}, warm", f"{seconds:.2f} s", "—", "—",
                             _at_most(seconds, 5.0, "≤ 5 s")))
    return rows


def checker_table(r: dict) -> list[str]:
    """Every timed checker: warm and first-call time at each reference size, judged against its goals."""
    sizes = [size for size, c in r.get("checkers", {}).items() if c.get("per_checker")]
    if not sizes:
        return []
    head = ["checker", "chapter"] + [f"{SIZE_LABELS.get(s, s)} {what}" for s in sizes for what in ("warm", "first call")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = list(dict.fromkeys(ex for s in sizes for ex in r["checkers"][s]["per_checker"]))
    for ex in order:
        cells, notebook = [f"`{ex}`"], ""
        for size in sizes:
            row = r["checkers"][size]["per_checker"].get(ex)
            if row is None:
                cells += ["—", "—"]
                continue
            notebook = row["notebook"]
            goal = warm_goal_s(size, notebook)
            cells += [_at_most(row["warm_s"], goal, f"{row['warm_s'] * 1e3:.0f} ms"),
                      _at_most(row["first_s"], FIRST_CALL_GOAL_S, f"{row['first_s']:.2f} s")]
        lines.append(_row(cells[0], notebook, *cells[1:]))
    return lines


def _model_rows(r: dict) -> list[str]:
    rows = []
    peak = max(r.get("machine", {}).get("matmul_gflops_fp32", 1) or 1, 1)
    for key, row in sorted(r.get("models", {}).items(), key=lambda kv: kv[0]):
        shape = key.split("_", 1)[1]
        for peer, label in (("transformer_lens", "TransformerLens `TransformerBridge`"),
                            ("transformers", "transformers `GPT2LMHeadModel`")):
            ratio = _ratio(row["course"], row[peer])
            rows.append(_row(f"forward {shape}, GPT-2 small size, vs {label}", f"{row['course']:.0f} ms",
                             f"{row[peer]:.0f} ms", ratio, _at_least(ratio, 1.0)))
        rows.append(_row(f"forward {shape}, share of the measured matmul peak", f"{row['course_gflops']:.0f} GFLOP/s",
                         "—", f"{row['course_gflops'] / peak:.0%}", "—"))
    return rows


def _generation_rows(r: dict) -> list[str]:
    g = r.get("generation")
    if not g:
        return []
    n = g["new_tokens"]
    vs_hf = _rate_ratio(g["course_cached_tok_s"], g["transformers_tok_s"])
    vs_uncached = _rate_ratio(g["course_cached_tok_s"], g["course_uncached_tok_s"])
    return [
        _row(f"greedy generation, KV cache, {n} new tokens, vs transformers `generate(use_cache=True)`",
             f"{g['course_cached_tok_s']:.1f} tok/s", f"{g['transformers_tok_s']:.1f} tok/s", vs_hf, _at_least(vs_hf, 1.0)),
        _row(f"greedy generation, KV cache vs the course's uncached `generate`, {n} new tokens",
             f"{g['course_cached_tok_s']:.1f} tok/s", f"{g['course_uncached_tok_s']:.1f} tok/s", vs_uncached,
             _at_least(vs_uncached, 5.0)),
    ]


def _training_rows(r: dict) -> list[str]:
    tr = r.get("training")
    if not tr:
        return []
    if not tr.get("available"):
        return [_row("training steps/s, chapter 05 model", f"not available ({tr.get('reason', '?')})", "—", "—", "—")]
    ratio = _rate_ratio(tr["course_steps_per_s"], tr["transformers_steps_per_s"])
    return [_row(f"training steps/s, chapter 05 model ({tr['model']}), vs transformers same size",
                 f"{tr['course_steps_per_s']:.2f} steps/s", f"{tr['transformers_steps_per_s']:.2f} steps/s", ratio, "—")]


def _grading_rows(r: dict) -> list[str]:
    g = r.get("grading")
    if not g:
        return []
    if not g.get("available"):
        return [_row("nbgrader autograde per submission", f"not available ({g.get('reason', '?')})", "—", "—", "—")]
    if "speedup" not in g:  # a result written before the parallel workers
        return [_row(f"nbgrader autograde per submission, {g['submissions']} submissions of `{g['chapter']}` "
                     f"(whole run {g['autograde_s']:.0f} s)",
                     f"{g['per_submission_mean_s']:.2f} s (median {g['per_submission_median_s']:.2f} s)", "—", "—", "—")]
    return [_row(f"nbgrader autograde, {g['submissions']} submissions of `{g['chapter']}`, {g['workers']} workers "
                 f"vs sequential (whole run {g['autograde_s']:.0f} s; sequential from {g['sequential_sample']} "
                 "submissions graded one at a time)",
                 f"{g['per_submission_wall_s']:.2f} s each", f"{g['sequential_per_submission_s']:.2f} s each",
                 f"{g['speedup']:.2f}×", "≥ 1.0×" + (" ✓" if g["speedup"] >= 1.0 else " ✗"))]


def _checks(r: dict) -> list[str]:
    """What makes the speed comparisons fair: the compared functions agree."""
    lines = []
    for key, row in sorted(r.get("models", {}).items()):
        lines.append(f"- {key}: course and transformers logits differ by at most {row['max_abs_logit_diff']:.1e}.")
    g = r.get("generation")
    if g:
        diverged = g.get("first_divergence_from_transformers")
        where = f" (first differs at new token {diverged})" if diverged is not None else ""
        lines.append(f"- generation ({g['model']}, prompt {g['prompt_tokens']} tokens): same tokens as transformers: "
                     f"{_yes(g['same_tokens_as_transformers'])}{where}; cached = uncached tokens: "
                     f"{_yes(g['same_tokens_cached_uncached'])} ({g['distinct_new_tokens']} distinct new tokens); "
                     f"cached logits differ from a full forward pass by at most {g['cached_max_abs_logit_diff']:.1e}.")
    gr = r.get("grading")
    if gr and gr.get("available"):
        same = f"; a sample graded sequentially got the same scores: {_yes(gr['same_as_sequential'])}" \
            if "same_as_sequential" in gr else ""
        lines.append(f"- grading: every submission scored as expected: {_yes(gr['scores_as_expected'])}{same}.")
    for size, c in r.get("checkers", {}).items():
        description = c.get("description", c.get("reference", "?")).rstrip(".")
        via = f", loaded from {c['via']}" if c.get("via") else ""
        lines.append(f"- checkers at {SIZE_LABELS.get(size, size)}: reference {description}{via}")
        if c.get("needs_notebook_state"):
            lines[-1] += f"; not timed (they need notebook state): {', '.join(c['needs_notebook_state'])}"
        lines[-1] += "."
    return lines


def markdown(r: dict) -> str:
    m = r.get("machine", {})
    lines = [f"Measured {r.get('date', '')} on {m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch "
             f"{m.get('torch', '?')}, fp32 matmul {m.get('matmul_gflops_fp32', 0):.0f} GFLOP/s in the same run, "
             f"load average {m.get('load_avg_1m', float('nan')):.1f} at the start.", "", *HEADER]
    for rows in (_reference_rows, _checker_rows, _model_rows, _generation_rows, _training_rows, _grading_rows):
        lines += rows(r)
    table = checker_table(r)
    if table:
        lines += ["", "Every checker, warm (median of 3) and first call, each reference size in a fresh process "
                  "(goals: warm ≤ 500 ms, chapter 03 at GPT-2 size ≤ 1500 ms; first call ≤ 3 s):", "", *table]
    checks = _checks(r)
    if checks:
        lines += ["", "Checks behind the comparisons:", *checks]
    sections = r.get("section_s", {})
    if sections:
        lines += ["", "Section run times: " + ", ".join(f"{k} {v:.0f} s" for k, v in sections.items())
                  + f"; total {sum(sections.values()):.0f} s."]
    for name, error in r.get("errors", {}).items():
        lines.append(f"**Section `{name}` failed:** {error}")
    return "\n".join(lines) + "\n"
