"""Checkers for chapter 06: generation, the sampling transforms and filters, beam search and a KV cache.

Nothing here is a statistical test that can fail by chance. Functions that return logits are compared as
distributions (`log_softmax`, elementwise). Functions that sample are called on thousands of copies of a few
rows at once, under the checker's own seed, on logits built so that a wrong filter shows with overwhelming
probability: the set of tokens drawn must equal the kept set exactly (every kept token has probability
above 0.02, so missing one in 2000 draws has probability below 1e-17), and each frequency must be within
0.1 of its exact probability (more than eight standard deviations). Any way of sampling passes.
Generation, beam search and the cache run small seeded models and are compared token for token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch as t
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from utils.checks import mistakes_ch06 as mistakes
from utils.checks.core import Mistake, assert_matches, call_learner, checker, describe, fail, passed
from utils.reference import sampling as ref
from utils.reference.model import EducationalTransformer, TransformerConfig

CHAPTER = "06_sampling"
DRAWS = 2000  # copies of each row per sampler call
FREQ_TOL = 0.1
NAMING_TOL = 0.05  # only to name a mistake, never to pass or fail


# ------------------------------------------------------------------------------------------------ models


def small_model(d_vocab: int, n_ctx: int, seed: int) -> EducationalTransformer:
    """A 2-layer model with every parameter random and large enough that logits spread over several nats:
    greedy choices and beam scores are then far from ties, and a wrong position or mask changes tokens."""
    cfg = TransformerConfig(d_model=64, n_heads=4, d_head=16, d_mlp=128, n_layers=2, n_ctx=n_ctx, d_vocab=d_vocab)
    model = EducationalTransformer(cfg)
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = t.randn(param.shape, generator=gen)
            if leaf == "w":
                param.copy_(1.0 + 0.2 * noise)
            elif leaf == "b" or leaf.startswith("b_"):
                param.copy_(0.1 * noise)
            elif leaf in ("W_E", "W_pos"):
                param.copy_(noise)
            elif leaf == "W_U":
                param.copy_(0.3 * noise)
            else:  # W_Q ... W_out: scaled by fan-in so the residual stream stays of order 1
                fan_in = param.shape[-2]
                param.copy_(noise / fan_in**0.5)
            param.requires_grad_(False)
    return model.eval()


def _prompts(batch: int, pos: int, d_vocab: int, seed: int) -> Tensor:
    return t.randint(0, d_vocab, (batch, pos), generator=t.Generator().manual_seed(seed))


def _safe(fn, *args, **kwargs):
    """A catalogued mistake that cannot run on this input matches nothing."""
    try:
        with t.no_grad():
            return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - any failure of a wrong variant only means it is not the learner's
        return None


def _seeded(fn, *args, **kwargs):
    t.manual_seed(0)
    return _safe(fn, *args, **kwargs)


def _unchanged(before: Tensor, after: Tensor, what: str, label: str, hint: str) -> None:
    if not t.equal(before, after):
        fail(f"{what} modified its input `{label}` in place. {hint}")


# ------------------------------------------------------------------------------------------------ greedy


@checker("greedy", mistakes.GREEDY_MISTAKES, chapter=CHAPTER)
def greedy(generate) -> None:
    """generate(model, input_ids, max_new_tokens, temperature=0.0) equals the reference's greedy tokens."""
    model = small_model(d_vocab=500, n_ctx=24, seed=1)
    cases = [
        ("3 different prompts of 5 tokens, 6 new tokens", _prompts(3, 5, 500, 2), 6),
        ("a prompt of 1 token, 5 new tokens", _prompts(1, 1, 500, 3), 5),
        (f"a prompt of 12 tokens extended by 16, past n_ctx = {model.cfg.n_ctx}", _prompts(2, 12, 500, 4), 16),
    ]
    for label, ids, n_new in cases:
        expected = ref.generate(model, ids, n_new, temperature=0.0)
        given = ids.clone()
        try:
            t.manual_seed(0)  # a learner's loop that samples instead of being greedy is then reproducible below
            out = call_learner("generate", generate, model, given, n_new, temperature=0.0, context=label)
        except AssertionError as exc:
            extra = f" {mistakes.CROP_HINT}" if "n_ctx" in label else ""
            raise AssertionError(f"{exc}{extra}") from exc.__cause__
        _unchanged(ids, given, "generate", "input_ids", "Build a new tensor with t.cat instead of writing into input_ids.")
        assert_matches(out, expected, "generate", context=label,
                       mistakes=lambda ids=ids, n_new=n_new: [(m, _seeded(m.impl, model, ids, n_new, temperature=0.0))
                                                              for m in mistakes.GREEDY_MISTAKES],
                       hint="Each step: run the model on the sequence so far, take the last position's logits, "
                            "choose with sample_next_token(tokens, logits, **sampling_kwargs), append.")
    passed(f"generate matches greedy decoding on {len(cases)} inputs, including one longer than n_ctx")


# ------------------------------------------------------------------------------- functions returning logits


def _check_logit_function(fn, what: str, cases, catalogue: list[Mistake], in_place_hint: str, hint: str) -> int:
    """Compare the distributions a learner's logits define (log_softmax of each row) with the reference's."""
    for label, args, names, expected in cases:
        given = [a.clone() if isinstance(a, Tensor) else a for a in args]
        out = call_learner(what, fn, *given, context=label)
        for original, copy, name in zip(args, given, names):
            if isinstance(original, Tensor):
                _unchanged(original, copy, what, name, in_place_hint)
        if isinstance(out, Tensor) and out.shape == expected.shape and out.dtype == expected.dtype:
            out = out.log_softmax(dim=-1)

        def wrong(args=args):
            found = []
            for mistake in catalogue:
                result = _safe(mistake.impl, *[a.clone() if isinstance(a, Tensor) else a for a in args])
                if isinstance(result, Tensor) and result.is_floating_point():
                    result = result.log_softmax(dim=-1)
                found.append((mistake, result))
            return found

        assert_matches(out, expected.log_softmax(dim=-1), f"{what} (compared as log_softmax of each row)",
                       context=label, mistakes=wrong, hint=hint)
    return len(cases)


@checker("temperature", mistakes.TEMPERATURE_MISTAKES, chapter=CHAPTER)
def temperature(apply_temperature) -> None:
    """apply_temperature(logits, T) gives softmax(logits / T) on differing rows, for T below and above 1."""
    gen = t.Generator().manual_seed(10)
    logits = 3 * t.randn(3, 50, generator=gen)
    cases = [(f"3 different rows of logits, temperature {T}", (logits, T), ("logits", "temperature"),
              ref.apply_temperature(logits, T)) for T in (2.0, 0.5)]
    n = _check_logit_function(apply_temperature, "apply_temperature", cases, mistakes.TEMPERATURE_MISTAKES,
                              mistakes.TEMPERATURE_IN_PLACE_HINT, "Divide the logits by the temperature.")
    passed(f"apply_temperature gives the right distributions on {n} inputs")


@checker("frequency_penalty", mistakes.PENALTY_MISTAKES, chapter=CHAPTER)
def frequency_penalty(apply_frequency_penalty) -> None:
    """apply_frequency_penalty subtracts freq_penalty once per occurrence, counting each row separately."""
    d_vocab = 60
    gen = t.Generator().manual_seed(11)
    logits = 2 * t.randn(3, d_vocab, generator=gen)
    # Repeats (counts 1 to 3), the first and last vocabulary ids, and rows that share no counts.
    input_ids = t.tensor([
        [0, 5, 5, 5, 7, 59, 7, 12, 30, 31],
        [59, 59, 2, 3, 4, 4, 5, 6, 0, 0],
        [10, 11, 12, 13, 14, 15, 16, 17, 18, 10],
    ])
    cases = [(f"3 different rows of 10 tokens, freq_penalty {a}", (input_ids, logits, a),
              ("input_ids", "logits", "freq_penalty"), ref.apply_frequency_penalty(input_ids, logits, a))
             for a in (0.7, 2.0)]
    n = _check_logit_function(apply_frequency_penalty, "apply_frequency_penalty", cases, mistakes.PENALTY_MISTAKES,
                              mistakes.PENALTY_IN_PLACE_HINT,
                              "Subtract freq_penalty * counts, where counts[b, i] is how often token i occurs in row b.")
    passed(f"apply_frequency_penalty gives the right distributions on {n} inputs")


# ------------------------------------------------------------------------------------------------ samplers


@dataclass
class Probe:
    """Rows of logits, the sampler's keyword arguments, and the exact distribution it must draw from."""

    label: str
    logits: Tensor  # [batch d_vocab]
    kwargs: dict
    expected: Tensor  # [batch d_vocab], probabilities; 0 outside the kept set


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


def _draw(fn, probe: Probe, what: str) -> Tensor | None:
    """Frequencies of the tokens `fn` draws for each row of the probe, from one call on DRAWS copies."""
    batch, d_vocab = probe.logits.shape
    stacked = probe.logits.repeat(DRAWS, 1)  # row r * batch + b is a copy of row b
    before = stacked.clone()
    samples = call_learner(what, fn, stacked, **probe.kwargs, context=f"{probe.label} ({DRAWS} copies of each row)")
    _unchanged(before, stacked, what, "logits", "Use out-of-place operations (`masked_fill`, not `masked_fill_`).")
    if not isinstance(samples, Tensor):
        fail(f"{what}: returned {describe(samples)}, expected a Tensor of token ids of shape ({DRAWS * batch},).")
    if samples.shape == (DRAWS * batch, 1):
        fail(f"{what}: returned shape {tuple(samples.shape)}, expected ({DRAWS * batch},): one id per row. "
             "Remove the last dimension with `.squeeze(-1)`.")
    if samples.shape != (DRAWS * batch,):
        fail(f"{what}: returned shape {tuple(samples.shape)} for logits of shape {tuple(stacked.shape)}, "
             f"expected ({DRAWS * batch},): one token id per row.")
    if samples.is_floating_point() or samples.dtype == t.bool:
        fail(f"{what}: returned dtype {samples.dtype}, expected integer token ids (torch.int64).")
    if samples.min() < 0 or samples.max() >= d_vocab:
        fail(f"{what}: returned token id {int(samples.max() if samples.max() >= d_vocab else samples.min())}, "
             f"outside the vocabulary 0..{d_vocab - 1}.")
    return _frequencies(samples.long(), batch, d_vocab)


def _agrees(freq: Tensor, expected: Tensor) -> bool:
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
    return float((_features(freq, logits) - _features(other, logits)).abs().max()) <= NAMING_TOL


def _explain(freq: Tensor, probe: Probe) -> str:
    expected = probe.expected.double()
    for b in range(freq.shape[0]):
        extra = ((freq[b] > 0) & (expected[b] == 0)).nonzero().flatten().tolist()
        missing = ((freq[b] == 0) & (expected[b] > 0)).nonzero().flatten().tolist()
        kept = int((expected[b] > 0).sum())
        if extra:
            share = float(freq[b, extra].sum())
            return (f"row {b} drew {len(extra)} token(s) that should be filtered out (e.g. id {extra[0]}), in "
                    f"{share:.0%} of {DRAWS} draws; exactly {kept} token(s) should remain")
        if missing:
            return (f"row {b} never drew token {missing[0]} in {DRAWS} draws, although it should be kept with "
                    f"probability {float(expected[b, missing[0]]):.2f}; exactly {kept} token(s) should remain")
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
        if _agrees(freq, probe.expected.double()):
            continue
        message = f"{what}: on {probe.label}, {_explain(freq, probe)}."
        batch, d_vocab = probe.logits.shape
        for mistake in catalogue:
            stacked = probe.logits.repeat(DRAWS, 1)
            samples = _safe(mistake.impl, stacked, **probe.kwargs)
            if isinstance(samples, Tensor) and samples.shape == (DRAWS * batch,) and not samples.is_floating_point():
                if _same_behaviour(freq, _frequencies(samples.long(), batch, d_vocab), probe.logits):
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
        Probe("3 different unsorted rows, k = 4", logits, {"k": 4}, _expected(ordered, [4, 4, 4], perms)),
        Probe("2 different unsorted rows, k = 1", logits1, {"k": 1}, _expected(ordered[:2], [1, 1], perms1)),
    ]


def _nucleus_row(head: list[float], d_vocab: int) -> Tensor:
    """Log-probabilities: `head` (descending) then a geometric tail holding the rest, each below head[-1]."""
    tail = 0.93 ** t.arange(d_vocab - len(head), dtype=t.float64)
    tail = tail / tail.sum() * (1 - sum(head))
    return t.cat([t.tensor(head, dtype=t.float64), tail]).log().float()


def top_p_probes() -> list[Probe]:
    d_vocab = 300
    # top_p = 0.4. Row 0: 0.22 + 0.12 = 0.34 < 0.4, so the third token (0.09, not the most likely) crosses the
    # threshold and is kept: 3 tokens. Row 1: 0.35 < 0.4, the second (0.10) crosses it: 2 tokens.
    # Mass before each boundary is at least 0.03 from 0.4, far beyond rounding. Constants per row (+8, -2) make
    # logits positive in one row and negative in the other, which exposes a cumulative sum of logits.
    crossing = t.stack([_nucleus_row([0.22, 0.12, 0.09], d_vocab) + 8.0, _nucleus_row([0.35, 0.10], d_vocab) - 2.0])
    # top_p = 0.1 keeps 1 token, min_tokens_to_keep = 3 raises it to 3.
    minimum = t.stack([_nucleus_row([0.30, 0.20, 0.10], d_vocab), _nucleus_row([0.30, 0.20, 0.10], d_vocab) + 4.0])
    logits, perms = _permuted(crossing, seed=30)
    logits_min, perms_min = _permuted(minimum, seed=31)
    return [
        Probe("2 different unsorted rows, top_p = 0.4 (the crossing token is not the most likely)", logits,
              {"top_p": 0.4}, _expected(crossing, [3, 2], perms)),
        Probe("2 unsorted rows, top_p = 0.1 with min_tokens_to_keep = 3", logits_min,
              {"top_p": 0.1, "min_tokens_to_keep": 3}, _expected(minimum, [3, 3], perms_min)),
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
    """sample_top_p keeps the crossing token and min_tokens_to_keep, on unsorted rows that differ."""
    probes = top_p_probes()
    n = _check_sampler(sample_top_p, "sample_top_p", probes, mistakes.TOP_P_MISTAKES,
                       "Sort descending, keep each token whose preceding probability mass is below top_p (and the first "
                       "min_tokens_to_keep), sample among them, and map back to vocabulary ids.")
    passed(f"sample_top_p draws from the right nucleus with the right frequencies on {n} probes of {DRAWS} draws per row")


# ------------------------------------------------------------------------------------------- beam search

BEAM_CASES = [
    # label, prompt seed, prompt length, num_beams, max_new_tokens, num_return_sequences, no_repeat_ngram_size
    ("3 beams, 6 new tokens, all 3 returned", 40, 5, 3, 6, 3, 0),
    ("4 beams, 10 new tokens, 2 returned, no_repeat_ngram_size = 2", 41, 6, 4, 10, 2, 2),
    ("2 beams, 8 new tokens, no_repeat_ngram_size = 1", 42, 4, 2, 8, 1, 1),
]


def _as_pair(out, what: str, label: str) -> tuple[Tensor, Tensor]:
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(x, Tensor) for x in out)):
        fail(f"{what}: returned {describe(out)} on {label}, expected a tuple (scores, tokens) of two tensors.")
    return out[0], out[1]


@checker("beam_search", mistakes.BEAM_MISTAKES, chapter=CHAPTER)
def beam_search(beam_search) -> None:
    """beam_search returns the reference's best sequences and their summed log-probabilities, best first."""
    model = small_model(d_vocab=24, n_ctx=32, seed=5)
    for label, seed, pos, beams, n_new, n_return, ngram in BEAM_CASES:
        prompt = _prompts(1, pos, 24, seed)[0]
        args = (prompt, beams, n_new, n_return, ngram)
        exp_scores, exp_tokens = ref.beam_search(model, *args)
        given = prompt.clone()
        out = call_learner("beam_search", beam_search, model, given, *args[1:], context=label)
        _unchanged(prompt, given, "beam_search", "prompt", "Build new tensors instead of writing into the prompt.")
        scores, tokens = _as_pair(out, "beam_search", label)

        def wrong(part: int, args=args):
            found = []
            for mistake in mistakes.BEAM_MISTAKES:
                result = _safe(mistake.impl, model, *args)
                found.append((mistake, result[part] if isinstance(result, tuple) else None))
            return found

        hint = "Score = sum of log_softmax log-probabilities; keep the num_beams best (beam, token) pairs overall."
        assert_matches(tokens, exp_tokens, "beam_search tokens", context=label, mistakes=lambda: wrong(1), hint=hint)
        assert_matches(scores.float(), exp_scores, "beam_search scores", context=label, mistakes=lambda: wrong(0),
                       hint=hint, check_dtype=False)
    passed(f"beam_search returns the best beams and their scores on {len(BEAM_CASES)} searches, with and without n-gram bans")


# ---------------------------------------------------------------------------------------------- KV cache


class MatmulFlops(TorchFunctionMode):
    """Counts the multiply-add FLOPs of every matrix product (einsum, matmul, @, mm, bmm, linear, addmm)."""

    _PRODUCTS = {t.matmul, Tensor.matmul, Tensor.__matmul__, t.mm, Tensor.mm, t.bmm, Tensor.bmm}
    _WITH_BIAS = {t.addmm, Tensor.addmm, t.baddbmm, Tensor.baddbmm}

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, Tensor):
            if func in self._PRODUCTS:
                self.flops += 2 * out.numel() * args[0].shape[-1]
            elif func is Tensor.__rmatmul__:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func in self._WITH_BIAS:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func is F.linear:
                self.flops += 2 * out.numel() * args[1].shape[-1]
            elif func is t.einsum:
                self.flops += _einsum_flops(args, out)
        return out


def _einsum_flops(args, out: Tensor) -> int:
    equation, operands = args[0], args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for spec, op in zip(inputs, operands):
        letters = spec.replace("...", "")
        if "..." in spec:
            start = spec.index("...")
            dims = list(op.shape[:start]) + list(op.shape[len(op.shape) - (len(spec) - start - 3):])
        else:
            dims = list(op.shape)
        for letter, size in zip(letters, dims):
            sizes[letter] = size
    total = math.prod(sizes.values()) if sizes else 1
    if "..." in equation:
        out_letters = equation.replace(" ", "").split("->")[1].replace("...", "") if "->" in equation else ""
        named = math.prod(sizes.get(c, 1) for c in out_letters)
        total *= max(out.numel() // max(named, 1), 1)
    return 2 * total


def _flops(fn, *args, **kwargs):
    """`fn`'s result and the FLOPs of its matrix products (a light counter: no dispatch-level tracing)."""
    with MatmulFlops() as counter:
        result = fn(*args, **kwargs)
    return result, counter.flops


KV_CHUNKS = [(0, 5), (5, 6), (6, 9), (9, 10), (10, 16)]  # prefill, one token, three at once, one, six


def run_in_chunks(forward, model, tokens, what: str, learner: bool) -> tuple[Tensor, object]:
    """Feed `tokens` through `forward(model, chunk, cache)` in the KV_CHUNKS pieces; returns all logits and the
    final cache. Chapter 07's RoPE cache check uses it too."""
    cache, outs = None, []
    for start, stop in KV_CHUNKS:
        label = f"positions {start}..{stop - 1} with {start} cached"
        chunk = tokens[:, start:stop].clone()
        if learner:
            out = call_learner(what, forward, model, chunk, cache, context=label)
        else:
            out = forward(model, chunk, cache)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[0], Tensor)):
            if learner:
                fail(f"{what}: returned {describe(out)} on {label}, expected a tuple (logits, cache).")
            raise ValueError("not (logits, cache)")
        logits, cache = out
        outs.append(logits)
    return t.cat(outs, dim=1), cache


@checker("kv_cache", mistakes.KV_CACHE_MISTAKES, chapter=CHAPTER)
def kv_cache(forward_with_cache) -> None:
    """Logits computed chunk by chunk with the cache equal one full forward pass; one new token costs one position."""
    model = small_model(d_vocab=500, n_ctx=24, seed=6)
    tokens = _prompts(2, 16, 500, 7)
    with t.no_grad():
        expected = model(tokens)
        got, _ = run_in_chunks(forward_with_cache, model, tokens, "forward_with_cache", learner=True)

    def wrong():
        found = []
        for mistake in mistakes.KV_CACHE_MISTAKES:
            found.append((mistake, (_safe(run_in_chunks, mistake.impl, model, tokens, mistake.name, False) or (None,))[0]))
        return found

    chunks = ", ".join(f"{b - a}" for a, b in KV_CHUNKS)
    assert_matches(got, expected, "forward_with_cache logits", mistakes=wrong,
                   context=f"16 positions fed in chunks of {chunks}, compared with one full forward pass",
                   hint="Offset the positional embeddings by cache.n_positions, concatenate cached keys and values "
                        "before the new ones, and shift the causal mask's diagonal by the number cached.")
    # Cost of one new token after 15 cached positions, against the reference doing the same.
    with t.no_grad():
        _, ref_cache = ref.forward_with_cache(model, tokens[:, :15])
        _, learner_cache = call_learner("forward_with_cache", forward_with_cache, model, tokens[:, :15].clone(),
                                        context="15 positions, no cache")
        _, ref_flops = _flops(ref.forward_with_cache, model, tokens[:, 15:], ref_cache)
        _, full_flops = _flops(model, tokens)
        _, got_flops = _flops(call_learner, "forward_with_cache", forward_with_cache, model, tokens[:, 15:].clone(),
                              learner_cache, context="one new token after 15 cached")
    if got_flops > 1.5 * ref_flops:
        fail(f"forward_with_cache: one new token after 15 cached positions cost {got_flops / 1e6:.2f} MFLOP; with a "
             f"cache it needs about {ref_flops / 1e6:.2f} (a full pass over 16 positions: {full_flops / 1e6:.2f}). "
             "Process only the new positions: the cache already holds the earlier keys and values.")
    passed(f"forward_with_cache matches the full forward pass over {len(KV_CHUNKS)} chunks, and one new token costs "
           f"{got_flops / full_flops:.0%} of a full pass")


@checker("kv_generate", mistakes.KV_GENERATE_MISTAKES, chapter=CHAPTER)
def kv_generate(generate_with_cache) -> None:
    """generate_with_cache gives generate's greedy tokens for about (prompt + new) positions' work."""
    model = small_model(d_vocab=500, n_ctx=128, seed=8)
    cases = [("2 different prompts of 6 tokens, 10 new tokens", _prompts(2, 6, 500, 9), 10),
             ("a prompt of 1 token, 8 new tokens", _prompts(1, 1, 500, 10), 8)]
    for label, ids, n_new in cases:
        with t.no_grad():
            expected, uncached = _flops(ref.generate, model, ids, n_new, temperature=0.0)
            _, cached = _flops(ref.generate_with_cache, model, ids, n_new, temperature=0.0)
        given = ids.clone()
        out, flops = _flops(call_learner, "generate_with_cache", generate_with_cache, model, given, n_new,
                            temperature=0.0, context=label)
        _unchanged(ids, given, "generate_with_cache", "input_ids", "Build a new tensor with t.cat instead.")
        assert_matches(out, expected, "generate_with_cache", context=f"{label}, compared with generate",
                       mistakes=lambda ids=ids, n_new=n_new: [(m, _safe(m.impl, model, ids, n_new, temperature=0.0))
                                                              for m in mistakes.KV_GENERATE_MISTAKES],
                       hint="Run forward_with_cache on the prompt once, then on each new token with the returned cache.")
        if flops > 1.5 * cached:
            fail(f"generate_with_cache: on {label} your call did {flops / 1e6:.1f} MFLOP, the work of "
                 f"{flops / uncached:.0%} of generate without a cache ({uncached / 1e6:.1f} MFLOP); with a cache it "
                 f"needs about {cached / 1e6:.1f}. {mistakes.NO_CACHE_HINT}")
    passed(f"generate_with_cache gives generate's tokens on {len(cases)} inputs for "
           f"{flops / uncached:.0%} of its work")
