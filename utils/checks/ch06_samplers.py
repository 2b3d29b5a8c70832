"""Checkers for chapter 06's samplers, top-k and top-p, which draw token ids rather than return numbers.

Nothing here is a statistical test that can fail by chance. A sampler is called on thousands of copies of a few
different rows at once, under the checker's own seed, on logits built so that a wrong filter shows with
overwhelming probability: the set of tokens drawn must equal the kept set exactly (every kept token has
probability above 0.02, so missing one in 2000 draws has probability below 1e-17), and each frequency must be
within 0.1 of its exact probability (more than eight standard deviations). Any way of sampling passes.
A failure says, from the learner's own draws, how many tokens each row kept and which rank was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch as t
from torch import Tensor

from utils.checks import mistakes_ch06 as mistakes
from utils.checks.sampling_common import CHAPTER, one_row_message, safe, unchanged
from utils.checks.core import Mistake, call_learner, checker, describe, fail, passed
from utils.checks.ids import id_dtype_problem

DRAWS = 2000  # copies of each row per sampler call
FREQ_TOL = 0.1
NAMING_TOL = 0.05  # only to name a mistake, never to pass or fail


@dataclass
class Probe:
    """Rows of logits, the sampler's keyword arguments, and the exact distribution it must draw from."""

    label: str
    logits: Tensor  # [batch d_vocab]
    kwargs: dict
    expected: Tensor  # [batch d_vocab], probabilities; 0 outside the kept set
    reasons: list[str]  # per row: why exactly that many tokens are kept
    too_many: str = ""  # what keeping one token too many means on this probe
    too_few: str = ""
    tied: bool = False  # kept tokens are tied: any k of the `expected > 0` tokens may be the kept ones
    n_keep: list[int] = field(default_factory=list)


def _permuted(rows: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Shuffle each row's vocabulary order (so that sorted input can't help), returning logits and the permutation."""
    gen = t.Generator().manual_seed(seed)
    perms = t.stack([t.randperm(rows.shape[-1], generator=gen) for _ in range(rows.shape[0])])
    out = t.empty_like(rows).scatter(-1, perms, rows)  # out[b, perms[b, j]] = rows[b, j]
    return out, perms


def _expected(sorted_logits: Tensor, n_keep: list[int], perms: Tensor) -> Tensor:
    """Softmax over the first n_keep[b] entries of each (descending) row, placed at the permuted ids."""
    probs = t.zeros_like(sorted_logits)
    for b, k in enumerate(n_keep):
        probs[b, :k] = sorted_logits[b, :k].softmax(dim=-1)
    return t.zeros_like(probs).scatter(-1, perms, probs)


def _frequencies(samples: Tensor, batch: int, d_vocab: int) -> Tensor:
    rows = samples.reshape(DRAWS, batch)
    counts = t.zeros(batch, d_vocab, dtype=t.float64)
    counts.scatter_add_(1, rows.T.contiguous(), t.ones(batch, DRAWS, dtype=t.float64))
    return counts / DRAWS


def _draw(fn, probe: Probe, what: str) -> Tensor:
    """Frequencies of the tokens `fn` draws for each row of the probe, from one call on DRAWS copies."""
    batch, d_vocab = probe.logits.shape
    stacked = probe.logits.repeat(DRAWS, 1)  # row r * batch + b is a copy of row b
    before = stacked.clone()
    context = f"{probe.label} ({DRAWS} copies of each row)"

    def one_row() -> str | None:  # only asked once the batched call went wrong: it costs a call
        return one_row_message(fn, what, (probe.logits[0].clone(),), probe.kwargs, ONE_ROW_SHAPES, _is_one_id)

    try:
        samples = call_learner(what, fn, stacked, **probe.kwargs, context=context)
    except AssertionError as exc:
        message = one_row() if exc.__cause__ is not None else None
        if message:
            raise AssertionError(message) from exc.__cause__
        raise
    unchanged(before, stacked, what, "logits", "Use out-of-place operations (`masked_fill`, not `masked_fill_`).")
    if not isinstance(samples, Tensor):
        fail(f"{what}: returned {describe(samples)}, expected a Tensor of token ids of shape ({DRAWS * batch},).")
    if samples.shape == (DRAWS * batch, 1):
        fail(f"{what}: returned shape {tuple(samples.shape)}, expected ({DRAWS * batch},): one id per row. "
             "Remove the last dimension with `.squeeze(-1)`.")
    if samples.shape != (DRAWS * batch,):
        fail(one_row() or f"{what}: returned shape {tuple(samples.shape)} for logits of shape {tuple(stacked.shape)}, "
             f"expected ({DRAWS * batch},): one token id per row.")
    problem = id_dtype_problem(samples, what)
    if problem:
        fail(problem)
    if samples.min() < 0 or samples.max() >= d_vocab:
        fail(f"{what}: returned token id {int(samples.max() if samples.max() >= d_vocab else samples.min())}, "
             f"outside the vocabulary 0..{d_vocab - 1}.")
    return _frequencies(samples.long(), batch, d_vocab)


ONE_ROW_SHAPES = "takes `[batch d_vocab]` logits and returns `[batch]` ids, one per row"


def _is_one_id(out) -> bool:
    return isinstance(out, int) or (isinstance(out, Tensor) and out.numel() == 1 and not out.is_floating_point())


def _agrees(freq: Tensor, probe: Probe) -> bool:
    expected = probe.expected.double()
    if probe.tied:  # exactly n_keep[b] of the tied tokens, each drawn about equally often
        return all(int((freq[b] > 0).sum()) == k and bool((expected[b][freq[b] > 0] > 0).all())
                   and float((freq[b][freq[b] > 0] - 1 / k).abs().max()) <= FREQ_TOL
                   for b, k in enumerate(probe.n_keep))
    return bool(((freq > 0) == (expected > 0)).all()) and float((freq - expected).abs().max()) <= FREQ_TOL


def _features(freq: Tensor, logits: Tensor) -> Tensor:
    """What tells wrong samplers apart: the frequencies of the 8 highest-ranked and 4 lowest-ranked tokens and of
    ids 0..7 (positions mistaken for ids), and the mass of the two bands of ranks in between."""
    ranked = freq.gather(-1, logits.argsort(dim=-1, descending=True))
    half = ranked.shape[-1] // 2
    bands = [ranked[:, :8], ranked[:, -4:], freq[:, :8], ranked[:, 8:half].sum(-1, keepdim=True),
             ranked[:, half:-4].sum(-1, keepdim=True)]
    return t.cat(bands, dim=-1)


def _same_behaviour(freq: Tensor, other: Tensor, logits: Tensor) -> bool:
    """The same frequencies within NAMING_TOL, and the same tokens drawn in rows where both draw few (so that a
    kept token too many or too few is never ignored); a wide random tail differs between any two runs."""
    for b in range(freq.shape[0]):
        small = int((freq[b] > 0).sum()) <= 20 and int((other[b] > 0).sum()) <= 20
        if small and not t.equal(freq[b] > 0, other[b] > 0):
            return False
    return float((_features(freq, logits) - _features(other, logits)).abs().max()) <= NAMING_TOL


def _explain(freq: Tensor, probe: Probe) -> str:
    """What the learner's draws did, row by row: the kept count and the wrong rank, read off the draws themselves."""
    expected = probe.expected.double()
    for b in range(freq.shape[0]):
        order = probe.logits[b].argsort(descending=True)
        rank_of = t.empty_like(order).scatter_(0, order, t.arange(len(order)))
        drawn = sorted(int(rank_of[i]) for i in (freq[b] > 0).nonzero().flatten())
        k = probe.n_keep[b]
        if probe.tied:
            m = len(drawn)
            if m != k:
                extra = probe.too_many if m == k + 1 else probe.too_few if m == k - 1 else ""
                return f"row {b} kept {m} token(s), expected exactly {k}: {probe.reasons[b]}" + (f"; {extra}" if extra else "")
            continue
        if drawn != list(range(k)):
            if drawn == list(range(len(drawn))):  # a prefix of the ranking, of the wrong length
                m = len(drawn)
                extra = probe.too_many if m == k + 1 else probe.too_few if m == k - 1 else ""
                amount = "one too many" if m == k + 1 else "one too few" if m == k - 1 else f"expected {k}"
                return (f"row {b} kept the {m} most likely token(s), {amount}: {probe.reasons[b]}"
                        + (f"; {extra}" if extra else ""))
            if b > 0 and t.equal(freq[b] > 0, expected[0] > 0) and not t.equal(expected[0] > 0, expected[b] > 0):
                return f"row {b} drew exactly row 0's kept tokens: filter each row by its own logits (work along dim=-1)"
            extra = [r for r in drawn if r >= k]
            missing = [r for r in range(k) if r not in drawn]
            if extra:
                share = float(freq[b, order[extra]].sum())
                return (f"row {b} drew {len(extra)} token(s) that should be filtered out (e.g. id {int(order[extra[0]])}, "
                        f"rank {extra[0] + 1} by probability), in {share:.0%} of {DRAWS} draws; exactly {k} should "
                        f"remain: {probe.reasons[b]}")
            token = int(order[missing[0]])
            return (f"row {b} never drew token {token} (rank {missing[0] + 1} by probability) in {DRAWS} draws, "
                    f"although it should be kept with probability {float(expected[b, token]):.2f}: {probe.reasons[b]}")
        worst = int((freq[b] - expected[b]).abs().argmax())
        if abs(float(freq[b, worst] - expected[b, worst])) > FREQ_TOL:
            return (f"row {b} drew token {worst} in {float(freq[b, worst]):.0%} of {DRAWS} draws, but its "
                    f"probability after filtering is {float(expected[b, worst]):.0%}: sample the kept tokens in "
                    "proportion to softmax of their logits")
    return "the draws differ from the expected distribution"


def _check_sampler(fn, what: str, probes: list[Probe], catalogue: list[Mistake], hint: str) -> int:
    if not callable(fn):
        fail(f"Pass the function itself, e.g. checks.{what}; got {describe(fn)}.")
    for probe in probes:
        freq = _draw(fn, probe, what)
        if _agrees(freq, probe):
            continue
        message = f"{what}: on {probe.label}, {_explain(freq, probe)}."
        batch, d_vocab = probe.logits.shape
        for mistake in catalogue:
            samples = safe(mistake.impl, probe.logits.repeat(DRAWS, 1), **probe.kwargs)
            if isinstance(samples, Tensor) and samples.shape == (DRAWS * batch,) and not samples.is_floating_point():
                other = _frequencies(samples.long(), batch, d_vocab)
                if not _agrees(other, probe) and _same_behaviour(freq, other, probe.logits):
                    fail(f"{message} This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}")
        fail(f"{message} {hint}")
    return len(probes)


def top_k_probes() -> list[Probe]:
    d_vocab = 300
    # Four kept logits of unequal size; the 296 others only slightly lower, so together they hold ~96% of the
    # unfiltered mass, and the fifth-largest alone would get 5% of draws if kept.
    kept = t.tensor([4.0, 3.0, 2.5, 2.0])
    rest = 1.7 - 0.002 * t.arange(d_vocab - 4)
    ordered = t.cat([kept, rest]).expand(3, d_vocab) + t.tensor([[0.0], [5.0], [-3.0]])  # rows differ in offset
    logits, perms = _permuted(ordered, seed=20)
    logits1, perms1 = _permuted(ordered[:2], seed=21)
    return [
        Probe("3 different unsorted rows, k = 4", logits, {"k": 4}, _expected(ordered, [4, 4, 4], perms),
              ["k = 4 keeps exactly the 4 largest logits of the row"] * 3, n_keep=[4, 4, 4]),
        Probe("2 different unsorted rows, k = 1", logits1, {"k": 1}, _expected(ordered[:2], [1, 1], perms1),
              ["k = 1 keeps only the largest logit of the row"] * 2, n_keep=[1, 1]),
    ]


def _nucleus_row(head: list[float], d_vocab: int) -> Tensor:
    """Log-probabilities: `head` (descending) then a geometric tail holding the rest, each below head[-1]."""
    tail = 0.93 ** t.arange(d_vocab - len(head), dtype=t.float64)
    tail = tail / tail.sum() * (1 - sum(head))
    return t.cat([t.tensor(head, dtype=t.float64), tail]).log().float()


def _tied_row(n_tied: int, d_vocab: int) -> Tensor:
    """n_tied logits 0 and the rest -1e4: probabilities exactly 1 / n_tied and exactly 0 in any float arithmetic."""
    return t.cat([t.zeros(n_tied), t.full((d_vocab - n_tied,), -1e4)])


def top_p_probes() -> list[Probe]:
    d_vocab = 300
    # top_p = 0.4. Row 0: 0.22 + 0.12 = 0.34 < 0.4, so the third token (0.09, not the most likely) crosses the
    # threshold and is kept: 3 tokens. Row 1: 0.35 < 0.4, the second (0.10) crosses it: 2 tokens.
    # Mass before each boundary is at least 0.03 from 0.4, far beyond rounding. Constants per row (+8, -2) make
    # logits positive in one row and negative in the other, which exposes a cumulative sum of logits.
    crossing = t.stack([_nucleus_row([0.22, 0.12, 0.09], d_vocab) + 8.0, _nucleus_row([0.35, 0.10], d_vocab) - 2.0])
    # top_p = 0.1 keeps 1 token, min_tokens_to_keep = 3 raises it to 3.
    minimum = t.stack([_nucleus_row([0.30, 0.20, 0.10], d_vocab), _nucleus_row([0.30, 0.20, 0.10], d_vocab) + 4.0])
    # The chapter's own question, on probabilities that are exact in floating point: 1/2, 1/2 and 1/4 x 4.
    # With top_p = 0.5 the mass before the 2nd token is exactly 0.5, not below: row 0 keeps 1, row 1 keeps 2.
    boundary = t.stack([_tied_row(2, d_vocab), _tied_row(4, d_vocab)])
    logits, perms = _permuted(crossing, seed=30)
    logits_min, perms_min = _permuted(minimum, seed=31)
    logits_tied, perms_tied = _permuted(boundary, seed=32)
    crossing_reasons = ["0.22 + 0.12 = 0.34 is below top_p = 0.4, so the 3rd token (0.09) crosses the threshold and "
                        "is kept, and nothing after it",
                        "0.35 is below top_p = 0.4, so the 2nd token (0.10) crosses the threshold and is kept, and "
                        "nothing after it"]
    min_reason = ("top_p = 0.1 alone keeps 1 token (0.30 already exceeds it) and min_tokens_to_keep = 3 raises that to "
                  "exactly 3 (ranks 0, 1, 2: `rank < min_tokens_to_keep`)")
    boundary_reasons = ["2 tokens of probability exactly 0.5: the 1st alone reaches top_p = 0.5, so it is the crossing "
                        "token, and the 2nd has mass 0.5 before it, which is not below top_p",
                        "4 tokens of probability exactly 0.25: the 2nd brings the mass to 0.5 = top_p, so it is the "
                        "crossing token, and the 3rd has mass 0.5 before it, which is not below top_p"]
    return [
        Probe("2 different unsorted rows, top_p = 0.4 (the crossing token is not the most likely)", logits,
              {"top_p": 0.4}, _expected(crossing, [3, 2], perms), crossing_reasons,
              too_few="you dropped the token that crosses top_p", n_keep=[3, 2]),
        Probe("2 unsorted rows, top_p = 0.1 with min_tokens_to_keep = 3", logits_min,
              {"top_p": 0.1, "min_tokens_to_keep": 3}, _expected(minimum, [3, 3], perms_min), [min_reason] * 2,
              too_many="you kept one more than min_tokens_to_keep (`<=` where `rank < min_tokens_to_keep` is meant?)",
              too_few="you kept one fewer than min_tokens_to_keep", n_keep=[3, 3]),
        Probe("2 rows whose mass before a token equals top_p = 0.5 exactly (the chapter's worked question)",
              logits_tied, {"top_p": 0.5}, _expected(boundary, [2, 4], perms_tied), boundary_reasons,
              too_many=mistakes.TOP_P_BOUNDARY_HINT, tied=True, n_keep=[1, 2]),
    ]


@checker("top_k", mistakes.TOP_K_MISTAKES, chapter=CHAPTER)
def top_k(sample_top_k) -> None:
    """sample_top_k draws exactly the k largest logits of each row, in proportion to their softmax."""
    probes = top_k_probes()
    n = _check_sampler(sample_top_k, "sample_top_k", probes, mistakes.TOP_K_MISTAKES,
                       "Keep the k largest logits of each row, sample among them by softmax, and return vocabulary ids.")
    passed(f"sample_top_k draws from the right tokens with the right frequencies on {n} probes of {DRAWS} draws per row")


@checker("top_p", mistakes.TOP_P_MISTAKES, chapter=CHAPTER)
def top_p(sample_top_p) -> None:
    """sample_top_p keeps the crossing token and min_tokens_to_keep, and compares with `<` at the exact boundary."""
    probes = top_p_probes()
    n = _check_sampler(sample_top_p, "sample_top_p", probes, mistakes.TOP_P_MISTAKES,
                       "Sort descending, keep each token whose preceding probability mass is below top_p (and the first "
                       "min_tokens_to_keep), sample among them, and map back to vocabulary ids.")
    passed(f"sample_top_p draws from the right nucleus with the right frequencies on {n} probes of {DRAWS} draws per row")
