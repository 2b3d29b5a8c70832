"""Training text that every machine already has: the Python standard library's own source code.

Nothing is copied into the repository and nothing is downloaded. The `.py` files of the running Python's
standard library are read at run time, lightly cleaned, tokenized with GPT-2's tokenizer and cached under
`utils.tokenizer.cache_dir()`, so the slow part (tokenizing about 9 MB of text) happens once per machine.

Two choices make a small model learn quickly on a CPU:
- indentation is written with tabs: GPT-2's tokenizer spells four spaces as four separate tokens, so
  untouched source is 40 % single-space tokens, which teach the model nothing but cost compute;
- the model sees a compact vocabulary: the most frequent GPT-2 tokens plus one "unknown" id, so the
  embedding and unembedding (50,257 rows in GPT-2) stop dominating the cost of every step.

TinyStories (`roneneldan/TinyStories` through `datasets`) is an option for machines that reach the
Hugging Face hub; it is never attempted offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch as t
from jaxtyping import Int
from torch import Tensor

from utils.tokenizer import END_OF_TEXT, cache_dir, gpt2_tokenizer

END_OF_TEXT_ID = 50256
# Packages that are data rather than code (codec tables, pydoc's topic dump), test suites, and whatever
# pip installed: none of them is the standard library's own Python.
EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__", "encodings", "pydoc_data", "test", "tests",
                 "idle_test"}
_LEADING_INDENT = re.compile(r"^(?: {4})+", flags=re.MULTILINE)
_CACHE_VERSION = 1  # bump when the cleaning or the file format changes


def stdlib_root() -> Path:
    """The folder of the running interpreter's standard library, e.g. `/usr/lib/python3.11`."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_files: int | None = None) -> list[Path]:
    """The standard library's `.py` files in a fixed (sorted) order, without tests, codecs and site-packages."""
    root = stdlib_root()
    files = sorted(
        path for path in root.rglob("*.py")
        if not EXCLUDED_DIRS.intersection(path.relative_to(root).parts[:-1])
        and not path.relative_to(root).parts[0].startswith("config-")
    )
    return files[:max_files] if max_files is not None else files


def clean_source(text: str) -> str:
    """Source with each leading group of four spaces written as one tab (one token instead of four)."""
    return _LEADING_INDENT.sub(lambda match: "\t" * (len(match.group(0)) // 4), text)


def _read(path: Path) -> str:
    return clean_source(path.read_text(encoding="utf-8", errors="replace"))


def _cache_key(files: Sequence[Path]) -> str:
    """Changes when the interpreter, the file list, a file's size or the cleaning changes."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{sys.version}|{stdlib_root()}".encode())
    for path in files:
        digest.update(f"{path.name}|{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def tokenize_documents(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """GPT-2 token ids of `texts`, each document followed by `<|endoftext|>`, as one uint16 array."""
    # The Rust tokenizer directly: the `transformers` wrapper warns on stderr about every text longer than
    # GPT-2's context, which a corpus file always is.
    backend = gpt2_tokenizer().backend_tokenizer
    pieces: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        for encoding in backend.encode_batch(list(texts[start:start + batch_size]), add_special_tokens=False):
            pieces.append(np.asarray([*encoding.ids, END_OF_TEXT_ID], dtype=np.uint16))  # GPT-2 ids fit in 16 bits
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def stdlib_tokens(max_files: int | None = None, verbose: bool = False) -> Int[Tensor, "n_tokens"]:
    """GPT-2 token ids of the cleaned standard library (or its first `max_files` files), cached on disk.

    The first call on a machine tokenizes every file (about a minute on two cores); later calls read the
    cache, a few milliseconds.
    """
    files = stdlib_files(max_files)
    path = cache_dir() / f"stdlib-tokens-{_cache_key(files)}.npy"
    if path.exists():
        return t.from_numpy(np.load(path).astype(np.int64))
    if verbose:
        print(f"Tokenizing {len(files)} files of {stdlib_root()} once; the result is cached in {path.parent}")
    tokens = tokenize_documents([_read(p) for p in files])
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npy", delete=False) as handle:
        np.save(handle, tokens)
    os.replace(handle.name, path)  # atomic: a notebook and a test building at once never see half a file
    return t.from_numpy(tokens.astype(np.int64))


# ------------------------------------------------------------------------------------------ compact vocab


@dataclass
class CompactVocab:
    """The `size - 1` most frequent GPT-2 tokens of a corpus, plus one id for every other token.

    Compact id `i < size - 1` stands for GPT-2 token `kept[i]` (most frequent first); id `size - 1` is
    "unknown". A model trained on compact ids has `d_vocab = size`.
    """

    kept: Int[Tensor, "n_kept"]

    @classmethod
    def from_tokens(cls, gpt2_ids: Int[Tensor, "n_tokens"], size: int = 8192) -> "CompactVocab":
        counts = t.bincount(gpt2_ids, minlength=END_OF_TEXT_ID + 1)
        # a stable sort: tokens with equal counts keep GPT-2's order, so the vocabulary is reproducible
        order = t.sort(counts, descending=True, stable=True).indices
        n_seen = int((counts > 0).sum())
        return cls(kept=order[: min(size - 1, n_seen)].clone())

    @property
    def size(self) -> int:
        return len(self.kept) + 1

    @property
    def unknown_id(self) -> int:
        return len(self.kept)

    def encode_ids(self, gpt2_ids: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
        """GPT-2 ids -> compact ids (tokens outside the vocabulary become `unknown_id`)."""
        table = t.full((END_OF_TEXT_ID + 1,), self.unknown_id, dtype=t.long)
        table[self.kept] = t.arange(len(self.kept))
        return table[gpt2_ids.long()]

    def decode_ids(self, compact_ids: Int[Tensor, "..."]) -> Int[Tensor, "..."]:
        """Compact ids -> GPT-2 ids; "unknown" becomes `<|endoftext|>`'s id, which `decode` shows as `⁇`."""
        table = t.cat([self.kept, t.tensor([END_OF_TEXT_ID])])
        return table[compact_ids.long()]

    def encode(self, text: str) -> Int[Tensor, "pos"]:
        """Text -> compact ids, cleaned the way the corpus was (tabs for indentation)."""
        ids = gpt2_tokenizer().backend_tokenizer.encode(clean_source(text), add_special_tokens=False).ids
        return self.encode_ids(t.tensor(ids, dtype=t.long))

    def decode(self, compact_ids: Int[Tensor, "pos"] | Sequence[int]) -> str:
        ids = t.as_tensor(compact_ids, dtype=t.long)
        text = gpt2_tokenizer().decode(self.decode_ids(ids).tolist())
        return text.replace(END_OF_TEXT, "⁇")

    def unknown_fraction(self, gpt2_ids: Int[Tensor, "n_tokens"]) -> float:
        return float((self.encode_ids(gpt2_ids) == self.unknown_id).double().mean())


# ----------------------------------------------------------------------------------------------- the corpus


@dataclass
class Corpus:
    """A token stream in compact ids, cut into training and validation sequences of `seq_len` tokens."""

    vocab: CompactVocab
    train: Int[Tensor, "n_train seq_len"]
    val: Int[Tensor, "n_val seq_len"]
    name: str

    @property
    def n_tokens(self) -> int:
        return self.train.numel() + self.val.numel()


def chunk(tokens: Int[Tensor, "n_tokens"], seq_len: int) -> Int[Tensor, "n_seqs seq_len"]:
    """Non-overlapping sequences of `seq_len` tokens; the remainder at the end is dropped."""
    n_seqs = len(tokens) // seq_len
    return tokens[: n_seqs * seq_len].reshape(n_seqs, seq_len)


def stdlib_corpus(seq_len: int = 128, vocab_size: int = 8192, max_files: int | None = None,
                  val_fraction: float = 0.02, verbose: bool = False) -> Corpus:
    """The standard library as a `Corpus`; the last `val_fraction` of the token stream is held out."""
    gpt2_ids = stdlib_tokens(max_files, verbose=verbose)
    n_val = max(seq_len, int(len(gpt2_ids) * val_fraction))
    vocab = CompactVocab.from_tokens(gpt2_ids[:-n_val], vocab_size)  # the vocabulary never sees held-out text
    ids = vocab.encode_ids(gpt2_ids)
    name = "the Python standard library" + (f" (first {max_files} files)" if max_files else "")
    return Corpus(vocab, chunk(ids[:-n_val], seq_len), chunk(ids[-n_val:], seq_len), name)


# ----------------------------------------------------------------------------------------------- TinyStories


def hub_reachable() -> bool:
    """False whenever the environment says offline; otherwise whether huggingface.co answers within 3 s."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("", "0"):
        return False
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return True
    except OSError:
        return False


def tinystories_corpus(n_stories: int = 20_000, seq_len: int = 128, vocab_size: int = 8192,
                       val_fraction: float = 0.02) -> Corpus:
    """The first `n_stories` of TinyStories as a `Corpus` (needs `datasets` and the hub; never tried offline)."""
    if not hub_reachable():
        raise RuntimeError("TinyStories needs the Hugging Face hub, which is not reachable (or HF_HUB_OFFLINE is "
                           "set). Use stdlib_corpus(), which needs no network.")
    from datasets import load_dataset

    stories = load_dataset("roneneldan/TinyStories", split=f"train[:{n_stories}]")["text"]
    gpt2_ids = t.from_numpy(tokenize_documents(stories).astype(np.int64))
    n_val = max(seq_len, int(len(gpt2_ids) * val_fraction))
    vocab = CompactVocab.from_tokens(gpt2_ids[:-n_val], vocab_size)
    ids = vocab.encode_ids(gpt2_ids)
    return Corpus(vocab, chunk(ids[:-n_val], seq_len), chunk(ids[-n_val:], seq_len), "TinyStories")
