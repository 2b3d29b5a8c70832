"""Realistic wrong implementations of chapter 05's exercises, each with the hint it earns.

Trainer mistakes subclass the reference `TransformerTrainer` and override only the method a learner gets
wrong, so the catalogue reads as a list of misconceptions. Tests feed every entry to its checker.
"""

from __future__ import annotations

import math

import einops
import torch as t
import torch.nn.functional as F

from utils.checks.core import Mistake
from utils.reference import training as ref

# ------------------------------------------------------------------------------------------------ baselines


def _uniform_bits(d_vocab):
    return math.log2(d_vocab)


def _uniform_probability(d_vocab):
    return 1 / d_vocab


def _uniform_log_probability(d_vocab):
    return math.log(1 / d_vocab)


def _uniform_log10(d_vocab):
    return math.log10(d_vocab)


UNIFORM_BASELINE_MISTAKES = [
    Mistake("bits", _uniform_bits, "`math.log2` gives bits; the course's losses are in nats: use `math.log(d_vocab)`."),
    Mistake("probability_not_loss", _uniform_probability,
            "1 / d_vocab is the probability of each token; the loss is minus its log, `math.log(d_vocab)`."),
    Mistake("log_probability_not_loss", _uniform_log_probability,
            "log(1 / d_vocab) is the log-probability, which is negative; the loss is minus it, `math.log(d_vocab)`."),
    Mistake("log10", _uniform_log10, "`math.log10` is the base-10 logarithm; cross-entropy uses the natural log, `math.log`."),
]


def _frequencies(tokens, d_vocab):
    counts = t.bincount(tokens.flatten(), minlength=d_vocab).double()
    return counts / counts.sum()


def _entropy_bits(tokens, d_vocab):
    probs = _frequencies(tokens, d_vocab)
    probs = probs[probs > 0]
    return float(-(probs * probs.log2()).sum())


def _entropy_nan(tokens, d_vocab):
    probs = _frequencies(tokens, d_vocab)
    return float(-(probs * probs.log()).sum())


def _entropy_no_minus(tokens, d_vocab):
    probs = _frequencies(tokens, d_vocab)
    probs = probs[probs > 0]
    return float((probs * probs.log()).sum())


def _entropy_unweighted(tokens, d_vocab):
    probs = _frequencies(tokens, d_vocab)
    return float(-probs[probs > 0].log().mean())


def _entropy_per_sequence(tokens, d_vocab):
    rows = tokens.reshape(-1, tokens.shape[-1])
    return sum(ref.unigram_entropy(row, d_vocab) for row in rows) / len(rows)


def _entropy_log_distinct(tokens, d_vocab):
    return math.log(len(t.unique(tokens)))


UNIGRAM_ENTROPY_MISTAKES = [
    Mistake("bits", _entropy_bits, "`log2` measures in bits; use the natural log (`.log()`), as cross-entropy does."),
    Mistake("nan_from_unseen_tokens", _entropy_nan,
            "tokens that never occur have p = 0 and `0 * log(0)` is nan: keep only `probs[probs > 0]` before the log."),
    Mistake("missing_minus_sign", _entropy_no_minus,
            "log p is negative, so the entropy is minus the sum: `-(probs * probs.log()).sum()`."),
    Mistake("unweighted_mean", _entropy_unweighted,
            "weight each token's surprisal -log p by its frequency p (`-(p * p.log()).sum()`), don't average over the vocabulary."),
    Mistake("per_sequence_entropy", _entropy_per_sequence,
            "count over the whole corpus (`tokens.flatten()`), not sequence by sequence: rows share one distribution."),
    Mistake("log_of_distinct_tokens", _entropy_log_distinct,
            "log(number of distinct tokens) is the uniform loss over the tokens seen; weight by their frequencies."),
]

# --------------------------------------------------------------------------------------------- training_step


class _ForgotZeroGrad(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = -logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None]).mean()
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class _PredictsCurrentToken(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = F.cross_entropy(einops.rearrange(logits, "batch pos d_vocab -> (batch pos) d_vocab"), batch.flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class _MisalignedByOne(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = -logits[:, 1:].log_softmax(-1).gather(-1, batch[:, :-1, None]).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class _SumOverPositions(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        log_probs = logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None]).squeeze(-1)
        loss = -log_probs.sum(dim=-1).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class _SoftmaxOverPositions(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = -logits[:, :-1].log_softmax(dim=1).gather(-1, batch[:, 1:, None]).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class _NoLogSoftmax(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = -logits[:, :-1].gather(-1, batch[:, 1:, None]).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss.detach()


class _NeverUpdated(ref.TransformerTrainer):
    def training_step(self, batch):
        logits = self.model(batch)
        loss = -logits[:, :-1].log_softmax(-1).gather(-1, batch[:, 1:, None]).mean()
        loss.backward()
        self.optimizer.zero_grad()
        self.optimizer.step()
        return loss.detach()


TRAINING_STEP_MISTAKES = [
    Mistake("forgot_zero_grad", _ForgotZeroGrad,
            "`loss.backward()` adds to `.grad`, so call `self.optimizer.zero_grad()` once per step "
            "(before backward or after `optimizer.step()`)."),
    Mistake("predicts_current_token", _PredictsCurrentToken,
            "the targets must be shifted: compare `logits[:, :-1]` with `batch[:, 1:]`; unshifted, the model "
            "learns to copy the token it already sees."),
    Mistake("misaligned_by_one", _MisalignedByOne,
            "the shift goes the other way: position p predicts token p + 1, so use `logits[:, :-1]` with `batch[:, 1:]`."),
    Mistake("sum_over_positions", _SumOverPositions,
            "the loss is the mean over batch AND positions (`.mean()` over everything), not a sum over positions."),
    Mistake("log_softmax_over_positions", _SoftmaxOverPositions,
            "take `log_softmax(dim=-1)`, over the vocabulary: each position's prediction is a distribution over tokens."),
    Mistake("no_log_softmax", _NoLogSoftmax,
            "logits are not log-probabilities: apply `log_softmax(dim=-1)` before picking the target's entry "
            "(or use `F.cross_entropy`)."),
    Mistake("parameters_never_updated", _NeverUpdated,
            "the parameters never change: call `loss.backward()`, then `self.optimizer.step()`, and only then "
            "`self.optimizer.zero_grad()` (zeroing between backward and step throws the gradients away)."),
]

# ------------------------------------------------------------------------------------------------- evaluate


def _predictions(model, batch):
    return model(batch).argmax(dim=-1)


class _EvalPredictsCurrentToken(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        with t.inference_mode():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)
                correct += int((predictions == batch).sum())
                total += batch.numel()
        self.model.train()
        return correct / total


class _EvalMisalignedByOne(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        with t.inference_mode():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)[:, 1:]
                correct += int((predictions == batch[:, :-1]).sum())
                total += predictions.numel()
        self.model.train()
        return correct / total


class _EvalCountsLastPosition(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        with t.inference_mode():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)[:, :-1]
                correct += int((predictions == batch[:, 1:]).sum())
                total += batch.numel()
        self.model.train()
        return correct / total


class _EvalMeanOfBatchMeans(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        accuracies = []
        with t.inference_mode():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)[:, :-1]
                accuracies.append((predictions == batch[:, 1:]).double().mean().item())
        self.model.train()
        return sum(accuracies) / len(accuracies)


class _EvalWithGradients(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        for batch in self.val_tokens.split(self.args.batch_size):
            predictions = _predictions(self.model, batch)[:, :-1]
            correct += int((predictions == batch[:, 1:]).sum())
            total += predictions.numel()
        self.model.train()
        return correct / total


class _EvalInTrainMode(ref.TransformerTrainer):
    def evaluate(self):
        correct = total = 0
        with t.no_grad():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)[:, :-1]
                correct += int((predictions == batch[:, 1:]).sum())
                total += predictions.numel()
        return correct / total


class _EvalLeavesEvalMode(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        with t.no_grad():
            for batch in self.val_tokens.split(self.args.batch_size):
                predictions = _predictions(self.model, batch)[:, :-1]
                correct += int((predictions == batch[:, 1:]).sum())
                total += predictions.numel()
        return correct / total


EVALUATE_MISTAKES = [
    Mistake("predicts_current_token", _EvalPredictsCurrentToken,
            "shift before comparing: `model(batch)[:, :-1].argmax(-1)` against `batch[:, 1:]`."),
    Mistake("misaligned_by_one", _EvalMisalignedByOne,
            "the shift goes the other way: the prediction at position p is for token p + 1, so compare "
            "`argmax[:, :-1]` with `batch[:, 1:]`."),
    Mistake("counts_last_position", _EvalCountsLastPosition,
            "each sequence of length T makes T - 1 predictions: divide by `predictions.numel()`, not `batch.numel()`."),
    Mistake("mean_of_batch_means", _EvalMeanOfBatchMeans,
            "averaging per-batch accuracies over-weights a short last batch: sum the correct predictions and "
            "the predictions over all batches, then divide once."),
    Mistake("gradients_enabled", _EvalWithGradients,
            "evaluation builds no graph: run the model inside `with t.inference_mode():` (or `t.no_grad()`)."),
    Mistake("train_mode_during_evaluation", _EvalInTrainMode,
            "call `self.model.eval()` before evaluating (dropout and similar layers behave differently in training)."),
    Mistake("left_in_eval_mode", _EvalLeavesEvalMode,
            "call `self.model.train()` before returning, or the training steps that follow run in eval mode."),
]
