"""The course GPT: GPT-2's exact architecture at a small size, trained on the Python standard library.

It is a Hugging Face `GPT2LMHeadModel` (pre-LayerNorm blocks, tanh-approximate GELU, learned positions,
biases everywhere, tied embedding and unembedding), so it boots into TransformerLens exactly as GPT-2
small does. Its vocabulary is the compact one of chapter 05 (`utils.corpus.CompactVocab`): the 8,191 most
frequent GPT-2 tokens of the corpus plus one "unknown" id, which keeps the checkpoint near 10 MB.

Held-out data is split by *file*: the alphabetically last standard-library files (at least the last 2 % of
the token stream, so chapter 05's validation text lies inside them) are never trained on.

    python -m utils.train_course_gpt      # retrain and save utils/data/course_gpt.pt (see the model card)
    load_course_gpt()                     # (hf_model, vocab, meta) from the shipped checkpoint, or an error
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import torch as t
from jaxtyping import Int
from torch import Tensor

from utils.corpus import END_OF_TEXT_ID, CompactVocab, stdlib_files, stdlib_tokens

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CHECKPOINT = DATA_DIR / "course_gpt.pt"
MODEL_CARD = DATA_DIR / "course_gpt.md"
REBUILD = "python -m utils.train_course_gpt"
VOCAB_SIZE = 8192  # chapter 05's compact vocabulary, so the two loss curves are comparable
VAL_FRACTION = 0.02  # chapter 05 holds out the last 2 % of the stream; the held-out files cover it
SIZE = dict(n_layer=4, n_embd=128, n_head=4, n_inner=512, n_positions=256)


def gpt2_config(vocab_size: int = VOCAB_SIZE, **size):
    """GPT-2's configuration at the course GPT's size: no dropout, tied embeddings, eager-free sdpa attention."""
    from transformers import GPT2Config

    fields = {**SIZE, **size}
    return GPT2Config(
        vocab_size=vocab_size, activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, **fields,
    )


def build_model(config=None):
    """A freshly initialised `GPT2LMHeadModel` (GPT-2's own initialisation) from the global torch seed."""
    from transformers import GPT2LMHeadModel

    config = config or gpt2_config()
    config._attn_implementation = "sdpa"
    return GPT2LMHeadModel(config)


# ------------------------------------------------------------------------------------------------- the data


@dataclass
class Split:
    """Compact-id token streams: training files, held-out files, and chapter 05's validation stream."""

    vocab: CompactVocab
    train: Int[Tensor, "n_train"]
    held_out: Int[Tensor, "n_held_out"]
    chapter05_val: Int[Tensor, "n_val"]
    n_train_files: int
    held_out_files: list[str]


def file_split(val_fraction: float = VAL_FRACTION, vocab_size: int = VOCAB_SIZE) -> Split:
    """Split the standard library by file: every file that reaches into the last `val_fraction` is held out.

    The vocabulary is chapter 05's (built from the stream without its last `val_fraction`), so a learner's
    chapter 05 model and this one predict the same ids.
    """
    gpt2_ids = stdlib_tokens()
    files = stdlib_files()
    ends = (gpt2_ids == END_OF_TEXT_ID).nonzero()[:, 0]  # each file is followed by one <|endoftext|>
    if len(ends) != len(files):
        raise RuntimeError(f"expected {len(files)} file ends in the corpus, found {len(ends)}")
    n_val = max(128, int(len(gpt2_ids) * val_fraction))
    cut = len(gpt2_ids) - n_val
    first_held = int((ends >= cut).nonzero()[0, 0])  # the file that contains the cut is held out too
    start = int(ends[first_held - 1]) + 1
    vocab = CompactVocab.from_tokens(gpt2_ids[:cut], vocab_size)
    ids = vocab.encode_ids(gpt2_ids)
    return Split(vocab, ids[:start], ids[start:], ids[cut:], first_held,
                 [str(p.name) for p in files[first_held:]])


def sequences(stream: Int[Tensor, "n"], seq_len: int) -> Int[Tensor, "n_seqs seq_len"]:
    n = len(stream) // seq_len
    return stream[: n * seq_len].reshape(n, seq_len)


# -------------------------------------------------------------------------------------------- checkpoints


class CheckpointError(RuntimeError):
    """The course GPT's checkpoint is missing or unusable; the message is one line saying how to rebuild it."""


def save_checkpoint(model, vocab: CompactVocab, meta: dict, path: Path = CHECKPOINT) -> None:
    """fp16 weights in Hugging Face names (the tied `lm_head.weight` left out), config, vocabulary, metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(t.float16).clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    config = {k: getattr(model.config, k) for k in ("vocab_size", *SIZE)}
    t.save({"format": 1, "config": config, "state_dict": state, "vocab_kept": vocab.kept.clone(), "meta": meta}, path)


def _read(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"the course GPT's checkpoint {path} is missing; rebuild it with `{REBUILD}`")
    try:
        saved = t.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or pickled objects weights_only refuses
        raise CheckpointError(f"the course GPT's checkpoint {path} cannot be read ({type(exc).__name__}); "
                              f"rebuild it with `{REBUILD}`") from None
    if not isinstance(saved, dict) or saved.get("format") != 1 or not {"config", "state_dict", "vocab_kept"} <= set(saved):
        raise CheckpointError(f"the course GPT's checkpoint {path} is not in the expected format; rebuild it with `{REBUILD}`")
    return saved


def load_checkpoint(path: Path = CHECKPOINT):
    """`(hf_model, vocab, meta)`: a float32 `GPT2LMHeadModel` in eval mode. Raises `CheckpointError` (one line)."""
    saved = _read(Path(path))
    try:
        config = dict(saved["config"])
        model = build_model(gpt2_config(**config))
        missing, unexpected = model.load_state_dict({k: v.float() for k, v in saved["state_dict"].items()}, strict=False)
        # the tied unembedding is the only weight the checkpoint leaves out
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}")
        model.tie_weights()
        vocab = CompactVocab(saved["vocab_kept"].long())
        if vocab.size != config["vocab_size"]:
            raise ValueError("vocabulary size differs from the model's")
    except Exception as exc:
        raise CheckpointError(f"the course GPT's checkpoint {path} does not fit GPT-2's architecture "
                              f"({type(exc).__name__}: {str(exc)[:100]}); rebuild it with `{REBUILD}`") from None
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, vocab, dict(saved.get("meta", {}))


@functools.cache
def load_course_gpt():
    """The shipped checkpoint (cached: treat it as read-only)."""
    return load_checkpoint(checkpoint_path())


# ------------------------------------------------------------------------------------------ as a reference


def checkpoint_path() -> Path:
    """The shipped checkpoint, or the file `TFS_COURSE_GPT` names (a retrained or a deliberately broken one)."""
    return Path(os.environ.get("TFS_COURSE_GPT") or CHECKPOINT)


def course_gpt_reference(path: Path | None = None):
    """The course GPT booted into TransformerLens like the other references (a `TransformerBridge` with the
    compact tokenizer), announced in one line. Raises `CheckpointError` before printing if the file is unusable."""
    from utils.models.compact_tokenizer import CompactGPT2Tokenizer
    from utils.reference_model import ReferenceInfo, _boot, _quiet, _say
    from utils.tokenizer import cache_dir

    with _quiet():
        hf_model, vocab, meta = load_checkpoint(path or checkpoint_path())
    cfg = hf_model.config
    n_params = sum(p.numel() for p in hf_model.parameters())
    description = (f"the course GPT, trained on Python's standard library ({cfg.n_layer} layers, d_model {cfg.n_embd}, "
                   f"{n_params / 1e6:.1f} M parameters, vocabulary of {cfg.vocab_size:,} GPT-2 tokens)")
    _say(description)
    folder = cache_dir() / "course-gpt-config"
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(folder)
    bridge = _boot(folder, hf_model, ReferenceInfo("course-gpt", description), CompactGPT2Tokenizer.from_vocab(vocab))
    bridge.tfs_vocab = vocab
    return bridge


def display_kind(kind: str | None = None) -> str:
    """The reference a cell that *shows predictions* should use: what `auto` gives when real GPT-2 can be had,
    otherwise the course GPT (never random weights). An explicit kind (argument or `TFS_REFERENCE`) is kept."""
    from utils.reference_model import _cached_gpt2_folder, _hub_reachable, _offline, resolve_kind

    asked = resolve_kind(kind)
    if asked != "auto":
        return asked
    if _cached_gpt2_folder() is not None or (not _offline() and _hub_reachable()):
        return "auto"
    return "course-gpt"


def describe(info) -> str:
    """One line naming the model a cell shows, for `ReferenceInfo` `info`."""
    if info.is_real:
        return "Showing GPT-2 small (real weights)."
    if info.kind == "course-gpt":
        return "Showing the course GPT (GPT-2's architecture, trained on Python's standard library; it knows code, not English)."
    return f"Showing {info.kind}: random weights with GPT-2's architecture, so expect gibberish."
