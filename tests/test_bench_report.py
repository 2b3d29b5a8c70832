"""The benchmark's Markdown table, rendered from a fixed results dict: every figure appears, ratios are the
course's speed over its peer's, goals are judged. No timing happens here."""

from __future__ import annotations

import copy

import pytest

from bench.report import markdown

pytestmark = pytest.mark.xdist_group("test_bench_report")  # its module fixture is built once, on one xdist worker

RESULTS = {
    "date": "2030-01-02 03:04",
    "machine": {"cpu": "x86_64", "cores": 2, "threads": 2, "python": "3.11", "torch": "2.9.0",
                "matmul_gflops_fp32": 200.0, "load_avg_1m": 0.5},
    "reference": {"random-mini": {"reports_kind_after_s": 1.25, "loaded_after_s": 3.5},
                  "random-gpt2": {"reports_kind_after_s": 6.5, "loaded_after_s": 9.75}},
    "checkers": {
        "random-mini": {"reference": "random-mini", "description": "random weights, 2 layers",
                        "per_checker": {"ex_2_1": {"notebook": "02_components", "first_s": 0.05, "warm_s": 0.012},
                                        "ex_3_4": {"notebook": "03_assembly", "first_s": 0.9, "warm_s": 0.75}},
                        "needs_notebook_state": ["ex_4_2"]},
        "gpt2-size": {"reference": "gpt2", "description": "GPT-2 small, real weights",
                      "per_checker": {"ex_2_1": {"notebook": "02_components", "first_s": 3.5, "warm_s": 0.4},
                                      "ex_3_4": {"notebook": "03_assembly", "first_s": 2.0, "warm_s": 1.25}},
                      "needs_notebook_state": ["ex_4_2"]},
    },
    "models": {
        "forward_1x64": {"course": 100.0, "transformer_lens": 125.0, "transformers": 80.0, "unit": "ms",
                         "max_abs_logit_diff": 3e-5, "course_gflops": 50.0},
        "forward_8x128": {"course": 1000.0, "transformer_lens": 1500.0, "transformers": 1100.0, "unit": "ms",
                          "max_abs_logit_diff": 4e-5, "course_gflops": 150.0},
    },
    "generation": {"model": "GPT-2 small size", "prompt_tokens": 16, "new_tokens": 256,
                   "course_cached_tok_s": 30.0, "transformers_tok_s": 20.0, "course_uncached_tok_s": 4.0,
                   "same_tokens_as_transformers": True, "same_tokens_cached_uncached": True,
                   "first_divergence_from_transformers": None,
                   "distinct_new_tokens": 3, "cached_max_abs_logit_diff": 2e-6},
    "training": {"available": True, "model": "2 layers, d_model 128", "parameters": 2_500_000,
                 "course_steps_per_s": 4.5, "transformers_steps_per_s": 3.0},
    "grading": {"available": True, "chapter": "02_components", "submissions": 30, "release_s": 4.0,
                "autograde_s": 126.0, "per_submission_mean_s": 4.2, "per_submission_median_s": 3.9,
                "per_submission_max_s": 6.0, "scores_as_expected": True, "wrong_scores": []},
    "section_s": {"machine": 1.0, "models": 40.0},
    "errors": {},
}


def _line(text: str, start: str) -> str:
    matches = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert len(matches) == 1, f"expected one line starting {start!r}, found {matches}"
    return matches[0]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def table() -> str:
    return markdown(RESULTS)


@pytest.mark.parametrize("row_start, course, peer, ratio, goal", [
    # times: ratio = peer time / course time
    ("| forward 1x64, GPT-2 small size, vs TransformerLens", "100 ms", "125 ms", "1.25×", "≥ 1.0× ✓"),
    ("| forward 1x64, GPT-2 small size, vs transformers", "100 ms", "80 ms", "0.80×", "≥ 1.0× ✗"),
    ("| forward 8x128, GPT-2 small size, vs TransformerLens", "1000 ms", "1500 ms", "1.50×", "≥ 1.0× ✓"),
    ("| forward 8x128, GPT-2 small size, vs transformers", "1000 ms", "1100 ms", "1.10×", "≥ 1.0× ✓"),
    # rates: ratio = course rate / peer rate
    ("| greedy generation, KV cache, 256 new tokens, vs transformers", "30.0 tok/s", "20.0 tok/s", "1.50×", "≥ 1.0× ✓"),
    ("| greedy generation, KV cache vs the course's uncached", "30.0 tok/s", "4.0 tok/s", "7.50×", "≥ 5.0× ✓"),
    ("| training steps/s, chapter 05 model", "4.50 steps/s", "3.00 steps/s", "1.50×", "—"),
])
def test_peer_rows_show_both_figures_and_the_right_ratio(table, row_start, course, peer, ratio, goal):
    assert _cells(_line(table, row_start))[1:] == [course, peer, ratio, goal]


@pytest.mark.parametrize("row_start, value, goal", [
    ("| reference `random-mini` cold load", "1.2 s / 3.5 s", "report ≤ 5 s ✓"),
    ("| reference `random-gpt2` cold load", "6.5 s / 9.8 s", "report ≤ 5 s ✗"),
    ("| checkers at `random-mini` (`random-mini`): the one furthest from its warm goal (`ex_3_4`)", "750 ms", "≤ 500 ms ✗"),
    ("| checkers at `random-mini` (`random-mini`): slowest first call (`ex_3_4`)", "0.90 s", "≤ 3 s ✓"),
    ("| all checkers of `02_components` at `random-mini` (`random-mini`), warm", "0.01 s", "≤ 5 s ✓"),
    ("| all checkers of `03_assembly` at `random-mini` (`random-mini`), warm", "0.75 s", "≤ 5 s ✓"),
    # judged against each goal: ex_3_4 uses 1.25 of its 1.5 s (83 %), ex_2_1 0.4 of its 0.5 s (80 %)
    ("| checkers at GPT-2 size (`gpt2`): the one furthest from its warm goal (`ex_3_4`)", "1250 ms", "≤ 1500 ms ✓"),
    ("| checkers at GPT-2 size (`gpt2`): slowest first call (`ex_2_1`)", "3.50 s", "≤ 3 s ✗"),
    ("| nbgrader autograde per submission, 30 submissions of `02_components` (whole run 126 s)",
     "4.20 s (median 3.90 s)", "—"),
])
def test_single_figures_and_their_goals(table, row_start, value, goal):
    cells = _cells(_line(table, row_start))
    assert (cells[1], cells[-1]) == (value, goal)


@pytest.mark.parametrize("shape, gflops, share", [("1x64", "50 GFLOP/s", "25%"), ("8x128", "150 GFLOP/s", "75%")])
def test_share_of_matmul_peak(table, shape, gflops, share):
    cells = _cells(_line(table, f"| forward {shape}, share of the measured matmul peak"))
    assert (cells[1], cells[3]) == (gflops, share)


def test_header_machine_checks_and_run_times(table):
    assert table.startswith("Measured 2030-01-02 03:04 on 2 cores (x86_64), torch 2.9.0, fp32 matmul 200 GFLOP/s")
    assert "load average 0.5" in table
    assert "forward_1x64: course and transformers logits differ by at most 3.0e-05" in table
    assert "same tokens as transformers: yes; cached = uncached tokens: yes (3 distinct new tokens)" in table
    assert "at most 2.0e-06" in table
    assert "every submission scored as expected: yes" in table
    assert "checkers at GPT-2 size: reference GPT-2 small, real weights; not timed (they need notebook state): ex_4_2" in table
    assert "Section run times: machine 1 s, models 40 s; total 41 s." in table
    main = table.split("Every checker, warm")[0]
    rows = [ln for ln in main.splitlines() if ln.startswith("| ") and not ln.startswith("| figure")]
    assert len(rows) == 2 + 2 * 4 + 6 + 2 + 1 + 1  # reference, checkers (2 sizes), models, generation, training, grading
    assert all(len(_cells(row)) == 5 for row in rows)


def test_unavailable_sections_and_errors_are_reported_not_raised():
    results = copy.deepcopy(RESULTS)
    results["training"] = {"available": False, "reason": "ImportError: no module utils.reference.training"}
    results["grading"] = {"available": False, "reason": "exit 1: bwrap missing"}
    results["generation"] |= {"same_tokens_as_transformers": False, "first_divergence_from_transformers": 31}
    results["errors"] = {"models": "RuntimeError: boom"}
    table = markdown(results)
    assert "not available (ImportError: no module utils.reference.training)" in _line(table, "| training steps/s")
    assert "not available (exit 1: bwrap missing)" in _line(table, "| nbgrader autograde per submission")
    assert "same tokens as transformers: NO (first differs at new token 31)" in table
    assert "**Section `models` failed:** RuntimeError: boom" in table


def test_partial_results_render():
    table = markdown({"date": "today", "generation": RESULTS["generation"]})
    assert "| greedy generation, KV cache vs the course's uncached" in table
    assert "| forward" not in table and "training" not in table


def test_per_checker_table_shows_both_sizes_warm_and_first_call(table):
    assert _cells(_line(table, "| checker |")) == ["checker", "chapter", "`random-mini` warm", "`random-mini` first call",
                                                  "GPT-2 size warm", "GPT-2 size first call"]
    assert _cells(_line(table, "| `ex_2_1`")) == ["`ex_2_1`", "02_components", "12 ms ✓", "0.05 s ✓", "400 ms ✓", "3.50 s ✗"]
    assert _cells(_line(table, "| `ex_3_4`")) == ["`ex_3_4`", "03_assembly", "750 ms ✗", "0.90 s ✓", "1250 ms ✓", "2.00 s ✓"]


def _grading_report(**changes) -> dict:
    report = {"chapters": ["01_foundations", "02_components"], "students": 3, "submissions": 6, "workers": 2,
              "release_s": 4.0, "autograde_s": 30.0, "per_submission_wall_s": 5.0,
              "per_submission_s": {"median": 9.5, "min": 8.0, "max": 11.0}, "sequential_sample": 2,
              "sequential_per_submission_s": 9.0, "sequential_estimate_s": 54.0, "speedup": 1.8,
              "not_graded": [], "wrong_scores": [], "differ_from_sequential": []}
    return {**report, **changes}


def test_grading_table_states_the_class_the_speedup_and_the_checks():
    from utils.grading.bench import markdown as grading_markdown

    table = grading_markdown(_grading_report(), "2026-12-03 16:00")
    assert "3 submissions × 2 chapters = 6" in table and "| speed-up | 1.80× |" in table
    assert "30 s (5.00 s per submission" in table and "measured on 2 of them → 1 min" in table
    assert "| every submission scored as submitted | yes |" in table
    bad = grading_markdown(_grading_report(wrong_scores=["02_components/student01"],
                                           differ_from_sequential=["02_components/student02"]), "now")
    assert "no: 1 wrong, 0 not graded" in bad and "no: 02_components/student02" in bad
