"""Checkers for chapter 05: the two baselines, and the trainer's `training_step` and `evaluate`.

The trainer checks run a tiny seeded `EducationalTransformer` in float64 on fixed data, so a correct
implementation reproduces the reference trainer's loss trajectory to within rounding, and every catalogued
mistake gives a trajectory (or accuracy) of its own.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch as t
from torch import Tensor, nn

from utils.checks.spies import ModelProbe as _Probe
from utils.checks.core import Mistake, NotImplementedYet, assert_unchanged, call_learner, checker, describe, fail, passed, snapshot
from utils.checks.mistakes_ch05 import (
    EVALUATE_MISTAKES,
    TRAINING_STEP_MISTAKES,
    UNIFORM_BASELINE_MISTAKES,
    UNIGRAM_ENTROPY_MISTAKES,
)
from utils.reference import training as ref
from utils.reference.model import EducationalTransformer, TransformerConfig

CHAPTER = "05_training"
TINY = dict(d_model=32, n_heads=2, d_head=16, d_mlp=64, n_layers=1, n_ctx=16, d_vocab=40)
N_STEPS = 5
MIN_DECREASE = 0.3  # nats: the reference lowers the fixed batch's loss by more than this in N_STEPS steps
SCALAR_ATOL, SCALAR_RTOL = 1e-6, 1e-6

# ------------------------------------------------------------------------------------------------- helpers


def _as_number(out: Any, what: str, context: str) -> float:
    """A learner's scalar result (float, int or one-element tensor) as a float; anything else fails."""
    if isinstance(out, Tensor) and out.numel() == 1:
        return float(out.detach().double().reshape(()))
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        return float(out)
    if out is None:
        fail(f"{what} returned None{context}: return the value (did you forget `return`?).")
    fail(f"{what} returned {describe(out)}{context}, expected a single number.")


def _python_float(out: Any, what: str, context: str) -> float:
    """The exercise text says "as a Python float": a tensor (even a 0-d one) or an int is not one."""
    if isinstance(out, float):
        return float(out)
    if out is None:
        fail(f"{what} returned None{context}: return the value (did you forget `return`?).")
    if isinstance(out, Tensor) and out.numel() == 1:
        fail(f"{what} returned {describe(out)}{context}, a tensor; the exercise asks for a Python float: "
             "`.item()` (or `float(...)`) turns a one-element tensor into one.")
    if isinstance(out, int) and not isinstance(out, bool):
        fail(f"{what} returned the int {out}{context}; the exercise asks for a Python float (divide with `/`, "
             "or use `float(...)`).")
    fail(f"{what} returned {describe(out)}{context}, expected a Python float.")


def _detached_loss(out: Any, what: str, context: str) -> float:
    """training_step returns "the loss (detached)" as "a scalar tensor": 0-d, floating point, no graph."""
    if out is None:
        fail(f"{what} returned None{context}: return the value (did you forget `return`?).")
    if not isinstance(out, Tensor):
        kind = f"the Python float {out:.4f}" if isinstance(out, float) else describe(out)
        fail(f"{what} returned {kind}{context}; return the loss as a scalar tensor, detached from the "
             "graph: `return loss.detach()` (the training loop calls `float` on it itself).")
    if out.shape != ():
        fail(f"{what} returned shape {tuple(out.shape)}{context}, expected a scalar tensor, shape (): the mean over "
             "batch and positions, `loss.detach()`.")
    if not out.is_floating_point():
        fail(f"{what} returned dtype {str(out.dtype).replace('torch.', '')}{context}; a loss is floating-point.")
    if out.requires_grad:
        fail(f"{what} returned the loss still attached to its graph (requires_grad=True){context}: return "
             "`loss.detach()`, or every step's history keeps the whole graph of that step alive.")
    return float(out.double())


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=SCALAR_RTOL, abs_tol=SCALAR_ATOL)


def _named(got: float, mistake_values: Callable[[], Sequence[tuple[Mistake, float]]]) -> str:
    for mistake, value in mistake_values():
        if _same(got, value):
            return f" This matches a known mistake, {mistake.name.replace('_', ' ')}: {mistake.hint}"
    return ""


def _mistake_values(mistakes: Sequence[Mistake], run: Callable[[Any], float]) -> list[tuple[Mistake, float]]:
    results = []
    for mistake in mistakes:
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                results.append((mistake, run(mistake.impl)))
        except Exception:  # a mistake that cannot run on this input matches nothing
            continue
    return results


def _check_function(fn: Callable, what: str, cases: Sequence[tuple[str, tuple]], reference: Callable,
                    mistakes: Sequence[Mistake]) -> int:
    """Compare a learner's float-valued function with the reference on every case, naming known mistakes."""
    if not callable(fn) or isinstance(fn, type):
        fail(f"Pass your function itself, e.g. checks.{what}({what}); got {describe(fn)}.")
    for label, args in cases:
        inputs = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
        before = snapshot(*inputs)
        got = _python_float(call_learner(what, fn, *inputs, context=label), what, f" on {label}")
        assert_unchanged(before, inputs, what)
        expected = reference(*args)
        if not _same(got, expected):

            def run(impl, args=args):
                return float(impl(*(a.clone() if isinstance(a, Tensor) else a for a in args)))

            fail(f"{what}: returned {got:.6g} on {label}, expected {expected:.6g}."
                 + _named(got, lambda: _mistake_values(mistakes, run)))
    return len(cases)


# ------------------------------------------------------------------------------------------------ baselines


@checker("uniform_baseline", UNIFORM_BASELINE_MISTAKES, chapter=CHAPTER)
def uniform_baseline(fn: Callable) -> None:
    """`uniform_baseline(d_vocab)` is log(d_vocab) in nats, for GPT-2's, the course's and a tiny vocabulary."""
    cases = [(f"d_vocab={n}", (n,)) for n in (50257, 8192, 2)]
    n = _check_function(fn, "uniform_baseline", cases, ref.uniform_baseline, UNIFORM_BASELINE_MISTAKES)
    passed(f"uniform_baseline equals log(d_vocab) in nats on {n} vocabulary sizes")


@functools.cache
def _entropy_inputs() -> list[tuple[str, tuple]]:
    gen = t.Generator().manual_seed(5)
    d_vocab = 64
    # a skewed (Zipf-like) distribution over the first 40 ids; ids 40..63 never occur
    weights = 1.0 / t.arange(1, 41, dtype=t.float64)
    corpus = t.multinomial(weights, 6 * 50, replacement=True, generator=gen).reshape(6, 50)
    single = t.multinomial(weights, 200, replacement=True, generator=gen)
    return [
        ("6 sequences of 50 tokens over d_vocab=64 (ids 40-63 never occur)", (corpus, d_vocab)),
        ("one sequence of 200 tokens", (single, d_vocab)),
    ]


@checker("unigram_entropy", UNIGRAM_ENTROPY_MISTAKES, chapter=CHAPTER)
def unigram_entropy(fn: Callable) -> None:
    """`unigram_entropy(tokens, d_vocab)` is the entropy in nats of the corpus's token frequencies."""
    n = _check_function(fn, "unigram_entropy", _entropy_inputs(), ref.unigram_entropy, UNIGRAM_ENTROPY_MISTAKES)
    passed(f"unigram_entropy matches the reference on {n} corpora")


# ------------------------------------------------------------------------------------------------ trainer


def _tiny_cfg() -> TransformerConfig:
    return TransformerConfig(**TINY)


@functools.cache
def _initial_state() -> dict[str, Tensor]:
    with t.random.fork_rng(devices=[]):
        t.manual_seed(1234)
        model = EducationalTransformer(_tiny_cfg()).double()
    return {name: value.clone() for name, value in model.state_dict().items()}


def _model(state: dict[str, Tensor] | None = None) -> EducationalTransformer:
    """A fresh float64 copy of the tiny model: float64 so that valid implementations agree to rounding."""
    model = EducationalTransformer(_tiny_cfg()).double()
    model.load_state_dict(state if state is not None else _initial_state())
    return model.train()


def _bigram_rule(tokens: Tensor) -> Tensor:
    """The rule of the fixed data: a token below 20 is followed by its successor, any other is repeated."""
    return t.where(tokens < 20, tokens + 1, tokens)


@functools.cache
def _data() -> tuple[Tensor, Tensor, Tensor]:
    """(batch [4, 12], train_tokens [16, 12], val_tokens [10, 12]): 70 % of next tokens follow `_bigram_rule`."""
    gen = t.Generator().manual_seed(7)
    tokens = t.randint(TINY["d_vocab"], (26, 12), generator=gen)
    for pos in range(1, tokens.shape[1]):
        follow = t.rand(len(tokens), generator=gen) < 0.7
        tokens[:, pos] = t.where(follow, _bigram_rule(tokens[:, pos - 1]), tokens[:, pos])
    return tokens[:4].clone(), tokens[:16].clone(), tokens[16:].clone()


def _args() -> ref.TrainingArgs:
    return ref.TrainingArgs(batch_size=4, max_steps=N_STEPS, lr=1e-2, weight_decay=1e-2, eval_every=N_STEPS, seed=0)


def _batch_loss(model: nn.Module, batch: Tensor) -> float:
    with t.no_grad():
        log_probs = model(batch)[:, :-1].log_softmax(-1)
        return float(-log_probs.gather(-1, batch[:, 1:, None]).mean())


def _construct(Cls: type, model: nn.Module, what: str):
    if not isinstance(Cls, type):
        fail(f"Pass the class itself, e.g. checks.{what}(TransformerTrainer); got {describe(Cls)}.")
    _, train_tokens, val_tokens = _data()
    try:
        return Cls(_args(), model, train_tokens.clone(), val_tokens.clone())
    except NotImplementedError as exc:
        raise NotImplementedYet("TransformerTrainer.__init__ is not implemented yet.") from exc
    except Exception as exc:
        raise AssertionError(f"TransformerTrainer(args, model, train_tokens, val_tokens) raised "
                             f"{type(exc).__name__}: {exc}") from exc


def _trajectory(Cls: type, learner: bool = True) -> list[float]:
    """Losses returned by N_STEPS training steps on one fixed batch, then that batch's loss after them."""
    model = _model()
    trainer = _construct(Cls, model, "training_step")
    batch = _data()[0]
    losses = []
    for step in range(1, N_STEPS + 1):
        inputs = (batch.clone(),)
        before = snapshot(*inputs)
        context = f"step {step} of {N_STEPS} on a fixed batch of 4 sequences of 12 tokens"
        out = call_learner("TransformerTrainer.training_step", trainer.training_step, *inputs, context=context) \
            if learner else trainer.training_step(*inputs)
        assert_unchanged(before, inputs, "TransformerTrainer.training_step", ["batch"])
        check = _detached_loss if learner else _as_number
        losses.append(check(out, "TransformerTrainer.training_step", f" at {context}"))
    return losses + [_batch_loss(model, batch)]


@functools.cache
def _reference_trajectory() -> tuple[float, ...]:
    return tuple(_trajectory(ref.TransformerTrainer, learner=False))


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


@checker("training_step", TRAINING_STEP_MISTAKES, chapter=CHAPTER)
def training_step(TransformerTrainer: type) -> None:
    """Five steps on one fixed batch reproduce the reference trainer's losses and lower the batch's loss."""
    got = _trajectory(TransformerTrainer)
    expected = list(_reference_trajectory())
    matches = all(_same(g, e) if not math.isnan(g) else False for g, e in zip(got, expected))
    if not matches:
        def mistake_outputs():
            outs = []
            for mistake in TRAINING_STEP_MISTAKES:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        outs.append((mistake, _trajectory(mistake.impl, learner=False)))
                except Exception:
                    continue
            return outs

        named = next((m for m, out in mistake_outputs() if all(_same(g, o) for g, o in zip(got, out))), None)
        message = (f"TransformerTrainer.training_step: over {N_STEPS} steps on one fixed batch it returned the losses "
                   f"{_fmt(got[:-1])}, and the batch's loss afterwards is {got[-1]:.4f}; the reference gives "
                   f"{_fmt(expected[:-1])} and {expected[-1]:.4f}.")
        if named is not None:
            message += f" This matches a known mistake, {named.name.replace('_', ' ')}: {named.hint}"
        else:
            message += (" Return the loss computed before the step; use the mean next-token cross-entropy "
                        "(`logits[:, :-1]` against `batch[:, 1:]`), then backward, step and zero_grad.")
        fail(message)
    decrease = expected[0] - got[-1]
    if decrease < MIN_DECREASE:  # only reachable if the reference itself stopped learning
        fail(f"TransformerTrainer.training_step: the fixed batch's loss fell by only {decrease:.3f} nats in {N_STEPS} steps.")
    passed(f"training_step reproduces the reference: the fixed batch's loss fell from {expected[0]:.3f} to "
           f"{got[-1]:.3f} nats in {N_STEPS} steps")


# ------------------------------------------------------------------------------------------------ evaluate


@functools.cache
def _evaluated_state() -> dict[str, Tensor]:
    """The tiny model made by hand into a bigram model that predicts `_bigram_rule(token)`.

    Attention and MLP outputs and positional embeddings are zero, so logits = LN(W_E[token]) @ W_U; each
    column of W_U is the normalised embedding of the tokens that should predict it. It copies the current
    token at some positions and not at others, so shifted, unshifted and misaligned comparisons all give
    different accuracies (a model trained for a few steps mostly copies, which makes two of them equal).
    """
    state = dict(_initial_state())
    for name, value in state.items():
        if name.endswith(("attn.W_O", "attn.b_O", "mlp.W_out", "mlp.b_out", "unembed.b_U")) or name == "pos_embed.W_pos":
            state[name] = t.zeros_like(value)
    gen = t.Generator().manual_seed(11)
    W_E = t.randn(TINY["d_vocab"], TINY["d_model"], generator=gen, dtype=t.float64)
    normalised = (W_E - W_E.mean(-1, keepdim=True)) / W_E.std(-1, unbiased=False, keepdim=True)
    W_U = t.zeros(TINY["d_model"], TINY["d_vocab"], dtype=t.float64)
    W_U.index_add_(1, _bigram_rule(t.arange(TINY["d_vocab"])), normalised.T)
    state["embed.W_E"], state["unembed.W_U"] = W_E, W_U
    return state


def _evaluate(Cls: type, learner: bool = True) -> tuple[float, _Probe, Any]:
    probe = _Probe(_model(_evaluated_state())).train()
    trainer = _construct(Cls, probe, "evaluate")
    if learner:
        out = call_learner("TransformerTrainer.evaluate", trainer.evaluate, context="10 sequences in batches of 4")
        return _python_float(out, "TransformerTrainer.evaluate", ""), probe, trainer
    return _as_number(trainer.evaluate(), "TransformerTrainer.evaluate", ""), probe, trainer


@functools.cache
def _reference_accuracy() -> float:
    return _evaluate(ref.TransformerTrainer, learner=False)[0]


def _hint(name: str) -> str:
    mistake = next(m for m in EVALUATE_MISTAKES if m.name == name)
    return f"{mistake.name.replace('_', ' ')}: {mistake.hint}"


@checker("evaluate", EVALUATE_MISTAKES, chapter=CHAPTER)
def evaluate(TransformerTrainer: type) -> None:
    """`evaluate()` returns the reference's next-token accuracy, in eval mode without gradients, then trains on."""
    params_before = {name: p.detach().clone() for name, p in _model(_evaluated_state()).named_parameters()}
    got, probe, trainer = _evaluate(TransformerTrainer)
    expected = _reference_accuracy()
    what = "TransformerTrainer.evaluate"
    if not _same(got, expected):
        fail(f"{what}: returned accuracy {got:.5f} on 10 validation sequences of 12 tokens in batches of 4; "
             f"expected {expected:.5f}."
             + _named(got, lambda: _mistake_values(EVALUATE_MISTAKES, lambda impl: _evaluate(impl, learner=False)[0])))
    if not probe.calls:
        fail(f"{what}: never called self.model; compute the predictions with `self.model(batch)`.")
    if any(grad for _, grad in probe.calls):
        fail(f"{what} ran the model with gradients enabled. This matches a known mistake, {_hint('gradients_enabled')}")
    if any(training for training, _ in probe.calls):
        fail(f"{what} ran the model in training mode. This matches a known mistake, {_hint('train_mode_during_evaluation')}")
    if not probe.training:
        fail(f"{what} left the model in eval mode. This matches a known mistake, {_hint('left_in_eval_mode')}")
    changed = [name for name, p in probe.model.named_parameters() if not t.equal(p.detach(), params_before[name])]
    if changed:
        fail(f"{what} changed the model's parameters ({', '.join(changed[:3])}…): evaluation only measures.")
    if not t.equal(trainer.val_tokens, _data()[2]):
        fail(f"{what} modified self.val_tokens in place; compare, don't overwrite.")
    passed(f"evaluate returns the reference's accuracy ({expected:.4f}) in eval mode, without gradients")
