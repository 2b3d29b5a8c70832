"""A faithful stand-in for GPT-2 small in the Hugging Face hub cache, for machines that cannot download it.

`write_gpt2_snapshot(hf_home)` lays out `hf_home/hub/` exactly as `huggingface_hub` leaves it after a real
download of `openai-community/gpt2` (and of its old alias `gpt2`):

    models--openai-community--gpt2/
        refs/main                      the snapshot's commit hash
        blobs/<etag>                   file contents (git sha1 for small files, sha256 for model.safetensors)
        snapshots/<commit>/<file>      symlinks into ../../blobs

The files are GPT-2 small's own: its real `config.json` (with `n_layer` reduced when asked), a
`model.safetensors` with the *base model's* key names (`wte.weight`, `h.0.attn.c_attn.weight`, ...; no
`lm_head`, since GPT-2 ties its unembedding to `wte`) plus the `h.N.attn.bias` causal-mask buffers
`[1, 1, 1024, 1024]` that the hub's file carries, and tokenizer files written from OpenAI's `encoder.json` and
`vocab.bpe`. Only the weights are random (seeded): the loading code, the names, the tied embeddings and the
zero unembedding bias are those of the real model, so every code path of "real GPT-2" runs.

Used by the real-GPT-2 tests (a 2-layer snapshot) and by `make bench` (full size: 12 layers, 548 MB).
Point the course at it with `HF_HOME=<hf_home>` and `TFS_REFERENCE=gpt2` (or `auto`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch as t

REPO_IDS = ("openai-community/gpt2", "gpt2")
# The hub's revision of openai-community/gpt2's main branch at the time of writing; any 40-hex string works.
COMMIT = "607a30d783dfa663caf39e06633721c8d4cfcd7e"

# GPT-2 small's config.json as the hub serves it.
GPT2_SMALL_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 50256,
    "embd_pdrop": 0.1,
    "eos_token_id": 50256,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_layer": 12,
    "n_positions": 1024,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}
GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 50256, "eos_token_id": 50256,
                     "transformers_version": "4.26.0.dev0"}


def gpt2_state_dict(n_layer: int, seed: int = 0) -> dict[str, t.Tensor]:
    """GPT-2's base-model tensors under the hub's names, seeded, with weight statistics near GPT-2's own:
    small weights, LayerNorm gains near 1, and non-zero biases (the unembedding has none: it is tied)."""
    cfg = GPT2_SMALL_CONFIG
    d, ctx, vocab = cfg["n_embd"], cfg["n_positions"], cfg["vocab_size"]
    gen = t.Generator().manual_seed(seed)

    def normal(*shape: int, std: float = 0.02, mean: float = 0.0) -> t.Tensor:
        return mean + std * t.randn(shape, generator=gen)

    state = {"wte.weight": normal(vocab, d, std=0.1), "wpe.weight": normal(ctx, d, std=0.02)}
    mask = t.tril(t.ones(ctx, ctx)).reshape(1, 1, ctx, ctx)
    for i in range(n_layer):
        h = f"h.{i}"
        state |= {
            f"{h}.ln_1.weight": normal(d, std=0.1, mean=1.0), f"{h}.ln_1.bias": normal(d, std=0.05),
            f"{h}.attn.bias": mask.clone(),
            f"{h}.attn.c_attn.weight": normal(d, 3 * d), f"{h}.attn.c_attn.bias": normal(3 * d, std=0.05),
            f"{h}.attn.c_proj.weight": normal(d, d), f"{h}.attn.c_proj.bias": normal(d, std=0.05),
            f"{h}.ln_2.weight": normal(d, std=0.1, mean=1.0), f"{h}.ln_2.bias": normal(d, std=0.05),
            f"{h}.mlp.c_fc.weight": normal(d, 4 * d), f"{h}.mlp.c_fc.bias": normal(4 * d, std=0.05),
            f"{h}.mlp.c_proj.weight": normal(4 * d, d), f"{h}.mlp.c_proj.bias": normal(d, std=0.05),
        }
    state |= {"ln_f.weight": normal(d, std=0.1, mean=1.0), "ln_f.bias": normal(d, std=0.05)}
    return state


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _tokenizer_files() -> dict[str, bytes]:
    """vocab.json, merges.txt, tokenizer.json and tokenizer_config.json, from OpenAI's own files."""
    from utils.tokenizer import _offline_tokenizer_dir, openai_bpe_files

    encoder, bpe = openai_bpe_files()
    built = _offline_tokenizer_dir()
    return {
        "vocab.json": encoder.read_bytes(),
        "merges.txt": bpe.read_bytes(),
        "tokenizer.json": (built / "tokenizer.json").read_bytes(),
        "tokenizer_config.json": json.dumps({"model_max_length": 1024}).encode(),
    }


def write_gpt2_snapshot(hf_home: Path, n_layer: int = 2, seed: int = 0, repo_ids=REPO_IDS) -> Path:
    """Write the snapshot under `hf_home/hub` for each of `repo_ids`; returns `hf_home`.

    The model file is written once and hard-linked (copied where links are impossible) into each repository's
    blobs, as two real downloads would hold two copies of the same bytes."""
    from safetensors.torch import save_file

    hub = Path(hf_home) / "hub"
    config = {**GPT2_SMALL_CONFIG, "n_layer": n_layer}
    files = {
        "config.json": json.dumps(config, indent=2).encode(),
        "generation_config.json": json.dumps(GENERATION_CONFIG, indent=2).encode(),
        **_tokenizer_files(),
    }
    staging = hub / ".staging"
    staging.mkdir(parents=True, exist_ok=True)
    weights = staging / "model.safetensors"
    save_file(gpt2_state_dict(n_layer, seed), str(weights), metadata={"format": "pt"})
    weights_etag = hashlib.sha256(weights.read_bytes()).hexdigest()

    for repo_id in repo_ids:
        repo = hub / ("models--" + repo_id.replace("/", "--"))
        blobs, snapshot = repo / "blobs", repo / "snapshots" / COMMIT
        blobs.mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(COMMIT)
        for name, data in files.items():
            etag = _git_blob_sha1(data)
            (blobs / etag).write_bytes(data)
            _link(snapshot / name, etag)
        blob = blobs / weights_etag
        if not blob.exists():
            try:
                os.link(weights, blob)
            except OSError:
                shutil.copyfile(weights, blob)
        _link(snapshot / "model.safetensors", weights_etag)
    shutil.rmtree(staging)
    return Path(hf_home)


def _link(path: Path, etag: str) -> None:
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(Path("..") / ".." / "blobs" / etag)


def snapshot_env(hf_home: Path) -> dict[str, str]:
    """Environment variables that make a fresh process use the snapshot as real GPT-2, offline."""
    return {"HF_HOME": str(hf_home), "HF_HUB_CACHE": str(Path(hf_home) / "hub"), "HF_HUB_OFFLINE": "1",
            "TFS_REFERENCE": "gpt2"}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write a faithful GPT-2 small hub snapshot (random weights).")
    parser.add_argument("hf_home", type=Path)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    write_gpt2_snapshot(args.hf_home, n_layer=args.layers)
    print(f"export HF_HOME={args.hf_home} TFS_REFERENCE=gpt2")
