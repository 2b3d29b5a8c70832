"""The benchmark results as a Markdown table (what the README shows)."""

from __future__ import annotations


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}×" if a and b else "—"


def markdown(r: dict) -> str:
    m = r.get("machine", {})
    lines = [f"Measured {r.get('date', '')} on {m.get('cores', '?')} cores ({m.get('cpu', '?')}), torch "
             f"{m.get('torch', '?')}, fp32 matmul {m.get('matmul_gflops_fp32', 0):.0f} GFLOP/s in the same run.", "",
             "| figure | course | peer | ratio (peer / course; >1 = course faster) | goal |", "|---|---|---|---|---|"]
    for kind, row in r.get("reference", {}).items():
        lines.append(f"| reference `{kind}` cold load offline (kind reported / loaded) | {row['reports_kind_after_s']:.1f} s / "
                     f"{row['loaded_after_s']:.1f} s | — | — | report ≤ 5 s |")
    c = r.get("checkers")
    if c:
        worst = max(c["per_checker_s"], key=c["per_checker_s"].get) if c["per_checker_s"] else "—"
        lines.append(f"| slowest checker (`{worst}`) | {c['max_s'] * 1e3:.0f} ms | — | — | ≤ 500 ms |")
        for chapter, seconds in sorted(c["per_chapter_s"].items()):
            lines.append(f"| all checkers of `{chapter}` | {seconds:.2f} s | — | — | ≤ 5 s |")
    for key in ("forward_1x64", "forward_8x128"):
        row = r.get(key) or r.get("models", {}).get(key)
        if row:
            shape = key.split("_")[1]
            lines.append(f"| forward {shape}, GPT-2 small size, vs TransformerLens | {row['course']:.0f} ms | "
                         f"{row['transformer_lens']:.0f} ms | {_ratio(row['course'], row['transformer_lens'])} | ≥ 1.0× |")
            lines.append(f"| forward {shape}, vs transformers GPT2LMHeadModel | {row['course']:.0f} ms | "
                         f"{row['transformers']:.0f} ms | {_ratio(row['course'], row['transformers'])} | ≥ 1.0× |")
            lines.append(f"| forward {shape}, share of matmul peak | {row['course_gflops']:.0f} GFLOP/s | — | "
                         f"{row['course_gflops'] / max(m.get('matmul_gflops_fp32', 1), 1):.0%} | — |")
    for key, row in r.get("extra", {}).items():
        lines.append(f"| {key} | {row.get('course', '—')} | {row.get('peer', '—')} | {row.get('ratio', '—')} | {row.get('goal', '—')} |")
    return "\n".join(lines) + "\n"
