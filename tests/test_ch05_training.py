"""Chapter 05: every checker accepts the reference and valid alternatives, rejects each catalogued mistake with
its hint, and reports a stub as not implemented; the corpus, the trainer and checkpoints work offline."""

from __future__ import annotations

import math
import re
from collections import Counter

import einops
import numpy as np
import pytest
import torch as t
import torch.nn.functional as F

from utils import corpus as corpus_module
from utils.checks import CHECKERS, NotImplementedYet
from utils.checks.mistakes_ch05 import (
    EVALUATE_MISTAKES,
    TRAINING_STEP_MISTAKES,
    UNIFORM_BASELINE_MISTAKES,
    UNIGRAM_ENTROPY_MISTAKES,
)
from utils.reference import training as ref

pytestmark = pytest.mark.xdist_group("test_ch05_training")  # its module fixture is built once, on one xdist worker

REFERENCE = {
    "uniform_baseline": ref.uniform_baseline,
    "unigram_entropy": ref.unigram_entropy,
    "training_step": ref.TransformerTrainer,
    "evaluate": ref.TransformerTrainer,
}
CATALOGUE = [
    (exercise, mistake)
    for exercise, mistakes in [("uniform_baseline", UNIFORM_BASELINE_MISTAKES), ("unigram_entropy", UNIGRAM_ENTROPY_MISTAKES),
                               ("training_step", TRAINING_STEP_MISTAKES), ("evaluate", EVALUATE_MISTAKES)]
    for mistake in mistakes
]

# --------------------------------------------------------------------------------------- valid alternatives


def uniform_via_reciprocal(d_vocab):
    return -math.log(1 / d_vocab)


def uniform_via_categorical(d_vocab):
    return t.distributions.Categorical(logits=t.zeros(d_vocab, dtype=t.float64)).entropy().item()


def uniform_via_numpy(d_vocab):
    return np.log(d_vocab)  # numpy.float64 is a Python float


def entropy_with_counter(tokens, d_vocab):
    counts = Counter(tokens.flatten().tolist())
    total = sum(counts.values())
    return -sum(n / total * math.log(n / total) for n in counts.values())


def entropy_with_unique_and_categorical(tokens, d_vocab):
    _, counts = t.unique(tokens, return_counts=True)
    return t.distributions.Categorical(probs=counts.double()).entropy().item()


def entropy_with_xlogy(tokens, d_vocab):
    probs = t.bincount(tokens.reshape(-1), minlength=d_vocab) / tokens.numel()
    return float(-t.xlogy(probs, probs).sum())


def entropy_with_entr(tokens, d_vocab):
    probs = F.one_hot(tokens.flatten(), d_vocab).double().mean(0)
    return float(t.special.entr(probs).sum())


class StepWithCrossEntropy(ref.TransformerTrainer):
    def training_step(self, batch):
        self.optimizer.zero_grad()
        logits = self.model(batch)
        loss = F.cross_entropy(einops.rearrange(logits[:, :-1], "batch pos d_vocab -> (batch pos) d_vocab"),
                               einops.rearrange(batch[:, 1:], "batch pos -> (batch pos)"))
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class StepWithOneHot(ref.TransformerTrainer):
    def training_step(self, batch):
        log_probs = self.model(batch)[:, :-1].log_softmax(-1)
        loss = -(F.one_hot(batch[:, 1:], log_probs.shape[-1]) * log_probs).sum(-1).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=False)
        return loss.data  # detached too


class StepWithModelZeroGrad(ref.TransformerTrainer):
    def training_step(self, batch):
        self.model.zero_grad()
        logits = self.model(batch)
        targets = batch[:, 1:]
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets)  # classes in dimension 1
        loss.backward()
        self.optimizer.step()
        return loss.detach()


class EvaluateConcatenated(ref.TransformerTrainer):
    def evaluate(self):
        self.model.eval()
        with t.no_grad():
            hits = [(self.model(b)[:, :-1].argmax(-1) == b[:, 1:]).flatten()
                    for b in self.val_tokens.split(self.args.batch_size)]
        self.model.train()
        return t.cat(hits).float().mean().item()


class EvaluateDecorated(ref.TransformerTrainer):
    @t.inference_mode()
    def evaluate(self):
        self.model.eval()
        correct = total = 0
        for start in range(0, len(self.val_tokens), self.args.batch_size):
            batch = self.val_tokens[start:start + self.args.batch_size]
            correct += self.model(batch).argmax(-1)[:, :-1].eq(batch[:, 1:]).sum().item()
            total += batch.shape[0] * (batch.shape[1] - 1)
        self.model.train()
        return correct / total


class EvaluateGradDisabled(ref.TransformerTrainer):
    def evaluate(self):
        was_training = self.model.training
        self.model.eval()
        with t.set_grad_enabled(False):
            logits = t.cat([self.model(b) for b in self.val_tokens.split(self.args.batch_size)])
        self.model.train(was_training)
        return (logits[:, :-1].argmax(-1) == self.val_tokens[:, 1:]).double().mean().item()


ALTERNATIVES = [
    ("uniform_baseline", uniform_via_reciprocal), ("uniform_baseline", uniform_via_numpy),
    ("uniform_baseline", uniform_via_categorical),
    ("unigram_entropy", entropy_with_counter), ("unigram_entropy", entropy_with_unique_and_categorical),
    ("unigram_entropy", entropy_with_xlogy), ("unigram_entropy", entropy_with_entr),
    ("training_step", StepWithCrossEntropy), ("training_step", StepWithOneHot), ("training_step", StepWithModelZeroGrad),
    ("evaluate", EvaluateConcatenated), ("evaluate", EvaluateDecorated), ("evaluate", EvaluateGradDisabled),
]

# --------------------------------------------------------------------------------------------------- stubs


def stub_function(*args):
    raise NotImplementedError()


class StubTrainer(ref.TransformerTrainer):
    def training_step(self, batch):
        raise NotImplementedError()

    def evaluate(self):
        raise NotImplementedError()


STUBS = {"uniform_baseline": stub_function, "unigram_entropy": stub_function, "training_step": StubTrainer,
         "evaluate": StubTrainer}

# ---------------------------------------------------------------------------------------------- the checks


@pytest.mark.parametrize("exercise", REFERENCE)
def test_reference_passes_with_one_line(exercise, capfd):
    CHECKERS[exercise](REFERENCE[exercise])
    out, err = capfd.readouterr()
    assert out.startswith("✓ ") and out.count("\n") == 1, out
    assert err == ""


@pytest.mark.parametrize(("exercise", "mistake"), CATALOGUE, ids=lambda x: getattr(x, "name", x))
def test_mistake_is_caught_and_named(exercise, mistake, capfd):
    with pytest.raises(AssertionError, match=re.escape(mistake.hint)):
        CHECKERS[exercise](mistake.impl)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(("exercise", "impl"), ALTERNATIVES, ids=lambda x: getattr(x, "__name__", x))
def test_valid_alternative_is_accepted(exercise, impl, capfd):
    CHECKERS[exercise](impl)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("exercise", STUBS)
def test_stub_is_not_implemented_yet(exercise, capfd):
    with pytest.raises(NotImplementedYet, match="not implemented yet"):
        CHECKERS[exercise](STUBS[exercise])
    assert capfd.readouterr().err == ""


def test_each_exercise_has_at_least_four_mistakes():
    counts = Counter(exercise for exercise, _ in CATALOGUE)
    assert set(counts) == set(REFERENCE) and min(counts.values()) >= 4, counts


def test_returning_nothing_is_explained():
    class ReturnsNothing(ref.TransformerTrainer):
        def training_step(self, batch):
            ref.TransformerTrainer.training_step(self, batch)

    with pytest.raises(AssertionError, match="returned None"):
        CHECKERS["training_step"](ReturnsNothing)


class StepReturnsGraph(ref.TransformerTrainer):
    def training_step(self, batch):
        loss = F.cross_entropy(self.model(batch)[:, :-1].flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        return loss


class StepReturnsFloat(StepReturnsGraph):
    def training_step(self, batch):
        return super().training_step(batch).item()


class EvaluateReturnsTensor(ref.TransformerTrainer):
    def evaluate(self):
        return t.tensor(ref.TransformerTrainer.evaluate(self))


@pytest.mark.parametrize(("exercise", "impl", "message"), [
    ("uniform_baseline", lambda d_vocab: t.tensor(float(d_vocab)).log(),
     "uniform_baseline returned Tensor() float32 on d_vocab=50257, a tensor; the exercise asks for a Python float"),
    ("uniform_baseline", lambda d_vocab: t.distributions.Categorical(logits=t.zeros(d_vocab)).entropy(), "`.item()`"),
    ("unigram_entropy", lambda tokens, d_vocab: t.special.entr(t.bincount(tokens.flatten(), minlength=d_vocab)
                                                               / tokens.numel()).sum(), "asks for a Python float"),
    ("training_step", StepReturnsGraph, "still attached to its graph (requires_grad=True) at step 1 of 5"),
    ("training_step", StepReturnsFloat, "at step 1 of 5 on a fixed batch of 4 sequences of 12 tokens; return the "
                                        "loss as a scalar tensor, detached"),
    ("evaluate", EvaluateReturnsTensor, "TransformerTrainer.evaluate returned Tensor() float32, a tensor; the exercise "
                                        "asks for a Python float"),
], ids=["0-d-tensor", "categorical-entropy", "entropy-tensor", "loss-with-graph", "loss-as-float", "accuracy-tensor"])
def test_a_stated_return_type_is_checked(exercise, impl, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        CHECKERS[exercise](impl)


def test_an_instance_instead_of_the_class_is_explained():
    with pytest.raises(AssertionError, match="Pass the class itself"):
        CHECKERS["evaluate"](object())


def test_checkers_leave_the_global_random_stream_alone():
    t.manual_seed(3)
    expected = t.rand(3)
    t.manual_seed(3)
    CHECKERS["training_step"](ref.TransformerTrainer)
    assert t.equal(t.rand(3), expected)


def test_the_fixed_batch_loss_falls_by_a_deterministic_margin():
    from utils.checks.ch05_training import MIN_DECREASE, _reference_trajectory

    losses = _reference_trajectory()
    assert losses[0] - losses[-1] > MIN_DECREASE
    assert all(a > b for a, b in zip(losses, losses[1:])), losses

# --------------------------------------------------------------------------------------------------- corpus


def test_clean_source_turns_leading_groups_of_four_spaces_into_tabs():
    source = "def f():\n        return 1\n      x = 2\nif a    == b:\n    pass\n"
    assert corpus_module.clean_source(source) == "def f():\n\t\treturn 1\n\t  x = 2\nif a    == b:\n\tpass\n"


def test_stdlib_files_leave_out_tests_codecs_and_site_packages():
    files = corpus_module.stdlib_files()
    root = corpus_module.stdlib_root()
    parts = {part for path in files for part in path.relative_to(root).parts[:-1]}
    assert len(files) > 100 and files == sorted(files)
    assert not parts & corpus_module.EXCLUDED_DIRS
    assert root / "os.py" in files


def test_stdlib_tokens_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TFS_CACHE", str(tmp_path))
    tokens = corpus_module.stdlib_tokens(max_files=3)
    assert (tokens == corpus_module.END_OF_TEXT_ID).sum() == 3 and tokens[-1] == corpus_module.END_OF_TEXT_ID
    assert len(list(tmp_path.glob("stdlib-tokens-*.npy"))) == 1

    def no_tokenizing(texts, batch_size=64):
        raise AssertionError("the cached tokens should have been read")

    monkeypatch.setattr(corpus_module, "tokenize_documents", no_tokenizing)
    assert t.equal(corpus_module.stdlib_tokens(max_files=3), tokens)


def test_compact_vocab_keeps_the_most_frequent_tokens_and_round_trips():
    gpt2_ids = t.tensor([5, 5, 5, 9, 9, 7, 7, 3])  # 9 and 7 tie: GPT-2's order (7 first) breaks the tie
    vocab = corpus_module.CompactVocab.from_tokens(gpt2_ids, size=3)
    assert vocab.kept.tolist() == [5, 7] and vocab.size == 3 and vocab.unknown_id == 2
    assert vocab.encode_ids(gpt2_ids).tolist() == [0, 0, 0, 2, 2, 1, 1, 2]
    assert vocab.decode_ids(t.tensor([0, 1, 2])).tolist() == [5, 7, corpus_module.END_OF_TEXT_ID]
    assert vocab.unknown_fraction(gpt2_ids) == pytest.approx(3 / 8)


def test_compact_vocab_encodes_and_decodes_text():
    from utils.tokenizer import gpt2_tokenizer

    text = "def f(x):\n    return x\n"
    gpt2_ids = t.tensor(gpt2_tokenizer().backend_tokenizer.encode(corpus_module.clean_source(text)).ids)
    vocab = corpus_module.CompactVocab.from_tokens(gpt2_ids, size=100)
    assert vocab.decode(vocab.encode(text)) == "def f(x):\n\treturn x\n"
    assert vocab.decode([vocab.unknown_id]) == "⁇"


@pytest.fixture(scope="module")
def small_corpus():
    return corpus_module.stdlib_corpus(seq_len=32, vocab_size=512, max_files=3)


def test_stdlib_corpus_is_cut_into_sequences(small_corpus):
    assert small_corpus.train.shape[1] == small_corpus.val.shape[1] == 32
    assert len(small_corpus.train) > 10 * len(small_corpus.val) > 0
    assert 100 < small_corpus.vocab.size <= 512  # three files hold fewer than 511 distinct tokens
    assert int(small_corpus.train.max()) < small_corpus.vocab.size and int(small_corpus.val.max()) < small_corpus.vocab.size


def test_tinystories_is_never_attempted_offline(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the network was contacted although HF_HUB_OFFLINE is set")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    assert not corpus_module.hub_reachable()
    with pytest.raises(RuntimeError, match="not reachable"):
        corpus_module.tinystories_corpus()

# ----------------------------------------------------------------------------------- training, checkpoints


def _tiny_model(d_vocab: int, seed: int = 0):
    t.manual_seed(seed)
    cfg = ref.TransformerConfig(d_model=32, n_heads=2, d_head=16, d_mlp=64, n_layers=1, n_ctx=32, d_vocab=d_vocab)
    return ref.EducationalTransformer(cfg)


def _short_run(corpus):
    args = ref.TrainingArgs(batch_size=8, max_steps=30, lr=3e-3, eval_every=15)
    trainer = ref.TransformerTrainer(args, _tiny_model(corpus.vocab.size), corpus.train, corpus.val[:8])
    return trainer.train(progress=False)


def test_training_is_reproducible_and_lowers_the_loss(small_corpus):
    first, second = _short_run(small_corpus), _short_run(small_corpus)
    assert first == second  # seeded model and batch order: exactly the same run
    assert first["step"] == list(range(1, 31)) and first["eval_step"] == [15, 30]
    uniform = ref.uniform_baseline(small_corpus.vocab.size)
    assert first["loss"][0] == pytest.approx(uniform, abs=0.3)  # a fresh model is near-uniform
    assert ref.smoothed(first["loss"])[-1] < first["loss"][0] - 0.5
    assert 0 < first["accuracy"][-1] < 1


def test_plot_history_draws_the_loss_and_each_baseline():
    history = {"step": [1, 2, 3], "loss": [5.0, 4.0, 3.5], "eval_step": [3], "accuracy": [0.2]}
    fig = ref.plot_history(history, {"uniform": 6.2, "unigram": 4.5})
    assert len(fig.data) == 2 and list(fig.data[0].y) == [5.0, 4.0, 3.5]
    assert sorted(shape.y0 for shape in fig.layout.shapes) == [4.5, 6.2]


def test_smoothed_is_unbiased_at_the_start():
    assert ref.smoothed([2.0, 2.0, 2.0]) == pytest.approx([2.0, 2.0, 2.0])


def test_checkpoint_round_trip(tmp_path, small_corpus):
    model = _tiny_model(small_corpus.vocab.size, seed=4)
    path = ref.save_checkpoint(model, small_corpus.vocab, tmp_path / "lm.pt", steps=30, final_loss=4.25)
    loaded = ref.load_checkpoint(path)
    tokens = small_corpus.val[:2]
    with t.inference_mode():
        assert t.equal(loaded.model(tokens), model.eval()(tokens))
    assert t.equal(loaded.vocab.kept, small_corpus.vocab.kept)
    assert loaded.meta == {"steps": 30, "final_loss": 4.25} and not loaded.model.training


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="05_training"):
        ref.load_checkpoint(tmp_path / "nothing.pt")


def test_default_checkpoint_lives_in_the_git_ignored_checkpoints_folder(root):
    assert ref.default_checkpoint() == root / "checkpoints" / "stdlib_lm.pt"


def test_wandb_is_never_required(monkeypatch):
    assert ref.start_wandb(ref.TrainingArgs()) is None
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert ref.start_wandb(ref.TrainingArgs(use_wandb=True)) is None


def test_tokens_are_stored_compactly(tmp_path, monkeypatch):
    monkeypatch.setenv("TFS_CACHE", str(tmp_path))
    corpus_module.stdlib_tokens(max_files=2)
    (saved,) = tmp_path.glob("stdlib-tokens-*.npy")
    assert np.load(saved).dtype == np.uint16
