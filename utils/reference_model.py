"""The reference GPT-2 every check compares against: real GPT-2 small when its weights can be had, otherwise
a seeded model with GPT-2's architecture and random weights, built offline in about a second.

Choose with `TFS_REFERENCE` (or the `kind` argument):
- `auto` (default): real GPT-2 if it is in the Hugging Face cache, or downloadable when online; else `random-mini`.
- `gpt2`: real GPT-2 small; falls back to `random-mini`, saying why, when its weights cannot be had.
- `random-mini`: 2 layers, d_model 128, GPT-2's vocabulary. Fast checks; the default offline.
- `random-gpt2`: random weights at GPT-2 small's full size (12 layers, d_model 768).
- `course-gpt`: the course's own small GPT-2, trained on Python's standard library (`utils/data/course_gpt.md`),
  with its compact vocabulary; falls back to `random-mini`, in one line, when its checkpoint is unusable.

Random weights are enough to prove that an implementation computes GPT-2's function: every weight,
bias and LayerNorm parameter is drawn non-zero, so a forgotten bias or gain changes the output.
One printed line always says which reference is in use.

The TransformerLens bridge has quirks that differ from the classic `HookedTransformer` the course's names
follow (attention returns `(out, pattern)`, a block returns a tuple, `pos_embed` takes position ids,
sub-module state dicts use Hugging Face names). `reference_forward` and `reference_params` hide them,
so a checker can treat `blocks.0.attn` as a plain function with classic parameters.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import socket
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlparse

import torch as t
from torch import Tensor

# Libraries that log advice to stderr on every model load (nbgrader fails a test cell that writes there).
CHATTY_LOGGERS = ("transformers", "transformer_lens", "huggingface_hub")
KINDS = ("auto", "gpt2", "random-mini", "random-gpt2", "course-gpt")
# ARENA's reference sentence; real GPT-2 small's average loss on it is about 4.04 nats.
REFERENCE_TEXT = (
    "I am an amazing autoregressive, decoder-only, GPT-2 style transformer. "
    "One day I will exceed human level intelligence and take over the world!"
)
RANDOM_SEED = 0
REAL_DESCRIPTION = "GPT-2 small, real weights (from the Hugging Face cache)"
_RANDOM_SIZES = {
    "random-mini": dict(n_layer=2, n_embd=128, n_head=4, n_inner=512, n_positions=256),
    "random-gpt2": dict(n_layer=12, n_embd=768, n_head=12, n_inner=3072, n_positions=1024),
}


@dataclass(frozen=True)
class ReferenceInfo:
    kind: str  # "gpt2", "random-mini" or "random-gpt2"
    description: str

    @property
    def is_real(self) -> bool:
        return self.kind == "gpt2"


def _say(line: str) -> None:
    print(f"Reference model: {line}", flush=True)


@contextlib.contextmanager
def _quiet():
    """Keep library advice off stderr: nbgrader fails a test cell that writes to it."""
    loggers = [logging.getLogger(n) for n in CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return flag.strip().lower() in ("1", "true", "yes", "on")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One TCP connection to the hub, instead of transformers' ~23 s of retries when there is no network."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# The hub's canonical id first; `gpt2` is its old alias, still found in many caches.
GPT2_REPO_IDS = ("openai-community/gpt2", "gpt2")


def _cached_gpt2_folder() -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for repo_id in GPT2_REPO_IDS:
        config = try_to_load_from_cache(repo_id, "config.json")
        weights = try_to_load_from_cache(repo_id, "model.safetensors")
        if isinstance(config, str) and isinstance(weights, str):
            return Path(config).parent
    return None


def _real_gpt2_folder() -> tuple[Path | None, str]:
    """Where GPT-2's files are (downloading them if allowed and possible), or None and the reason."""
    folder = _cached_gpt2_folder()
    if folder is not None:
        return folder, ""
    if _offline():
        return None, "GPT-2's weights are not in the Hugging Face cache and HF_HUB_OFFLINE is set"
    if not _hub_reachable():
        return None, "GPT-2's weights are not cached and the Hugging Face hub cannot be reached"
    from huggingface_hub import snapshot_download

    try:
        with _quiet():
            path = snapshot_download(GPT2_REPO_IDS[0], allow_patterns=["config.json", "model.safetensors", "*.json", "*.txt"])
        return Path(path), ""
    except Exception as exc:  # any download failure ends in the offline fallback, in one line
        return None, f"downloading GPT-2 failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"


def _unusable_reason(folder: Path) -> str:
    """Why the cached files in `folder` cannot be GPT-2 ("" when they look right), read from the config and the
    safetensors header only, so that a broken cache is found in milliseconds, before anything is announced."""
    import json

    from safetensors import safe_open

    try:
        config = json.loads((folder / "config.json").read_text())
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
            keys = set(weights.keys())
    except Exception as exc:  # unreadable JSON or a damaged weights file
        return f"GPT-2's cached files in {folder} could not be read ({type(exc).__name__}; delete them)"
    if config.get("model_type") != "gpt2":
        return f"the cached config in {folder} is not GPT-2's (model_type {config.get('model_type')!r})"
    wanted = {"wte.weight", "wpe.weight", "ln_f.weight", *(f"h.{i}.attn.c_attn.weight" for i in range(config.get("n_layer", 0)))}
    prefixed = {k.removeprefix("transformer.") for k in keys}
    missing = sorted(wanted - prefixed)
    if missing:
        return f"GPT-2's cached weights in {folder} lack {', '.join(missing[:3])} (delete them)"
    return ""


def _randomize_(hf_model, seed: int) -> None:
    """Give every bias and LayerNorm parameter non-zero random values (GPT-2's init leaves them 0 and 1)."""
    gen = t.Generator().manual_seed(seed)
    with t.no_grad():
        for name, param in hf_model.named_parameters():
            if ".ln_" in f".{name}" or "ln_f" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                param.copy_(base + 0.2 * t.randn(param.shape, generator=gen))
            elif name.endswith("bias"):
                param.copy_(0.1 * t.randn(param.shape, generator=gen))


def _boot(folder: Path, hf_model, info: ReferenceInfo, tokenizer=None):
    from transformer_lens.model_bridge import TransformerBridge

    from utils.tokenizer import gpt2_tokenizer

    hf_model.eval()
    with _quiet():
        bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf_model, tokenizer=tokenizer or gpt2_tokenizer())
        # Classic GPT-2 numerics: no LayerNorm folding, no centring, b_V kept where the checks expect it.
        bridge.enable_compatibility_mode(
            fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
        )
    bridge.eval()
    for param in bridge.parameters():
        param.requires_grad_(False)
    bridge.tfs_info = info
    return bridge


def _build_random(kind: str, reason: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    from utils.tokenizer import cache_dir

    size = _RANDOM_SIZES[kind]
    description = (
        f"random weights with GPT-2's architecture ({size['n_layer']} layers, d_model {size['n_embd']}, "
        f"seed {RANDOM_SEED}){', since ' + reason if reason else ''}. Random weights prove your maths, not predictions."
    )
    _say(description)  # before the slow part, so a learner knows at once what is being loaded
    # Untied embeddings, so that an unembedding written with W_E instead of W_U is caught.
    config = GPT2Config(vocab_size=50257, tie_word_embeddings=False, **size)
    folder = cache_dir() / f"{kind}-config"
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    t.manual_seed(RANDOM_SEED)  # GPT2LMHeadModel draws from the global generator; fork_rng restores it
    hf_model = GPT2LMHeadModel(config)
    _randomize_(hf_model, RANDOM_SEED + 1)
    return _boot(folder, hf_model, ReferenceInfo(kind, description))


def resolve_kind(kind: str | None = None) -> str:
    """The kind asked for (argument, then `TFS_REFERENCE`, then `auto`), checked against `KINDS`."""
    asked = (kind or os.environ.get("TFS_REFERENCE") or "auto").strip().lower()
    if asked not in KINDS:
        _say(f"unknown reference {asked!r} (choose from {', '.join(KINDS)}); using the offline 'random-mini'.")
        return "random-mini"
    return asked


@functools.cache
def _load(kind: str):
    reason = ""
    with t.random.fork_rng(devices=[]):  # loading never moves the learner's random number stream
        if kind in ("auto", "gpt2"):
            folder, reason = _real_gpt2_folder()
            reason = reason or _unusable_reason(folder)
            if not reason:
                _say(REAL_DESCRIPTION)  # before the slow part; the files were validated above
                try:
                    from transformers import GPT2LMHeadModel

                    with _quiet():
                        hf_model = GPT2LMHeadModel.from_pretrained(str(folder), local_files_only=True)
                    return _boot(folder, hf_model, ReferenceInfo("gpt2", REAL_DESCRIPTION))
                except Exception as exc:  # damage past the header (rare): a second line corrects the first
                    reason = f"GPT-2's cached weights in {folder} failed to load after all ({type(exc).__name__}; delete them)"
            kind = "random-mini"
        if kind == "course-gpt":
            from utils.models.course_gpt import CheckpointError, course_gpt_reference

            try:
                return course_gpt_reference()
            except CheckpointError as exc:  # missing or damaged: one line, then the random stand-in
                reason, kind = str(exc), "random-mini"
        return _build_random(kind, reason)


def reference_gpt2(kind: str | None = None):
    """The reference model, a TransformerLens `TransformerBridge` in compatibility mode (cached per kind)."""
    return _load(resolve_kind(kind))


def reference_info(kind: str | None = None) -> ReferenceInfo:
    return reference_gpt2(kind).tfs_info


@functools.cache
def _cache_for(kind: str):
    model = _load(kind)
    tokens = model.to_tokens(REFERENCE_TEXT)
    with t.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens, logits, cache


def reference_cache(kind: str | None = None):
    """`(tokens, logits, cache)` of the reference model on `REFERENCE_TEXT`, computed once."""
    return _cache_for(resolve_kind(kind))


@functools.cache
def _params_for(kind: str) -> dict[str, Tensor]:
    """One detached copy of the reference's classic parameters per kind, made once. At GPT-2 size it holds
    163M numbers (650 MB): checkers read it through `shared_params` rather than copying it again."""
    return {name: p.detach().clone() for name, p in _load(kind).tl_parameters().items()}


def shared_params(kind: str | None = None) -> Mapping[str, Tensor]:
    """The reference's classic parameters themselves, not copies: a read-only view for checkers that only read
    them (names, shapes, comparisons, `load_state_dict`, which copies). Never modify them and never hand them,
    or a module holding them, to a learner's code: `reference_params` gives copies."""
    return MappingProxyType(_params_for(resolve_kind(kind)))


def reference_params(prefix: str = "", kind: str | None = None) -> dict[str, Tensor]:
    """Classic TransformerLens parameters below `prefix` (e.g. `blocks.0.attn` gives `W_Q`, ..., `b_O`),
    as fresh copies: loading them into a learner's module can never change the reference."""
    params = _params_for(resolve_kind(kind))
    if not prefix:
        return {name: p.clone() for name, p in params.items()}
    start = prefix + "."
    found = {name[len(start):]: p.clone() for name, p in params.items() if name.startswith(start)}
    if not found:
        raise KeyError(f"The reference has no parameters under {prefix!r}.")
    return found


def reference_forward(name: str, kind: str | None = None) -> Callable[[Tensor], Tensor]:
    """The reference sub-module `name` as a classic function: one tensor in, one tensor out.

    `embed` and `pos_embed` take tokens `[batch pos]`; everything else takes the residual stream.
    """
    model = reference_gpt2(kind)
    module = model.get_submodule(name)

    def pos_embed(tokens: Tensor) -> Tensor:
        positions = t.arange(tokens.shape[-1], device=tokens.device).expand(tokens.shape)
        return module(positions)

    def first_output(x: Tensor) -> Tensor:
        out = module(x)
        return out[0] if isinstance(out, tuple) else out  # attention: (out, pattern); a block: (out,)

    fn = pos_embed if name == "pos_embed" else first_output

    def run(x: Tensor) -> Tensor:
        with t.no_grad():
            return fn(x)

    return run


def config_fields(kind: str | None = None) -> dict:
    """The course config's fields for the reference model (`Config(**config_fields())`)."""
    cfg = reference_gpt2(kind).cfg
    return dict(
        d_model=cfg.d_model, debug=False, layer_norm_eps=cfg.eps, d_vocab=cfg.d_vocab, init_range=0.02,
        n_ctx=cfg.n_ctx, d_head=cfg.d_head, d_mlp=cfg.d_mlp, n_heads=cfg.n_heads, n_layers=cfg.n_layers,
    )


def course_config(kind: str | None = None):
    """The course's `Config` (exported from chapter 02) with the reference model's sizes."""
    from utils.reference.components import Config

    return Config(**config_fields(kind))
