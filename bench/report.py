"""The benchmark results as a Markdown table (what the README shows).

Every ratio is the course's speed divided by its peer's, measured in the same run: above 1 the course is
faster. For times that is peer time / course time; for rates (tokens/s, steps/s) course rate / peer rate.
The goal column ends in ✓ or ✗ when the figure can be judged against it.
"""

from __future__ import annotations

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


def _checker_rows(r: dict) -> list[str]:
    c = r.get("checkers")
    if not c:
        return []
    worst = max(c["per_checker_s"], key=c["per_checker_s"].get) if c["per_checker_s"] else "—"
    rows = [_row(f"slowest of {len(c['per_checker_s'])} checkers (`{worst}`)", f"{c['max_s'] * 1e3:.0f} ms", "—", "—",
                 _at_most(c["max_s"], 0.5, "≤ 500 ms"))]
    for chapter, seconds in sorted(c["per_chapter_s"].items()):
        rows.append(_row(f"all checkers of `{chapter}`", f"{seconds:.2f} s", "—", "—", _at_most(seconds, 5.0, "≤ 5 s")))
    return rows


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
    c = r.get("checkers")
    if c and c.get("needs_notebook_state"):
        lines.append(f"- checkers not timed (they need notebook state): {', '.join(c['needs_notebook_state'])}.")
    return lines


def markdown(r: dict) -> str:
    m = r.get("machine", {})
    lines = [f"Measured {r.get('date', '')} on {m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch "
             f"{m.get('torch', '?')}, fp32 matmul {m.get('matmul_gflops_fp32', 0):.0f} GFLOP/s in the same run, "
             f"load average {m.get('load_avg_1m', float('nan')):.1f} at the start.", "", *HEADER]
    for rows in (_reference_rows, _checker_rows, _model_rows, _generation_rows, _training_rows, _grading_rows):
        lines += rows(r)
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
