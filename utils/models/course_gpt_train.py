"""Training the course GPT: seeded, on two CPU cores, with a progress bar (`python -m utils.train_course_gpt`).

A nanoGPT-style loop: random windows of the training files, AdamW, linear warm-up then cosine decay, gradient
clipping. One sequence in `repeat_every` is replaced by a random token sequence repeated to fill the window
(the model card must say so), to help induction heads form in a small budget; code alone was not tried.

Speed (measured 2026-12-03, quiet 2-core AMD EPYC without bfloat16 units): float32 is the default, because
bfloat16 autocast ran 10x *slower* here (0.06 vs 0.69 steps/s at 16 x 256); the softmax over the 8,192-token
vocabulary costs as much as all the matrix products, so the model reads `seq_len + 1` tokens and predicts from
contiguous logits (no slicing copies in the backward pass).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch as t
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor

from utils.models.course_gpt import CHECKPOINT, SIZE, Split, build_model, file_split, save_checkpoint, sequences


@dataclass
class TrainConfig:
    seed: int = 0
    steps: int = 5000
    batch: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.1
    repeat_every: int = 8  # one sequence in 8 (two per batch of 16) is a repeated random sequence (0: none)
    min_repeat: int = 8
    max_repeat: int = 48
    eval_every: int = 100
    eval_seqs: int = 32
    bf16: bool = False  # bfloat16 autocast: faster only on CPUs with bfloat16 units; 10x slower on this course's
    threads: int = 2


def repeated_random(n: int, seq_len: int, n_random: int, cfg: TrainConfig, gen: t.Generator) -> Int[Tensor, "n seq_len"]:
    """`n` windows, each a random token sequence of random length repeated until the window is full."""
    rows = []
    for _ in range(n):
        length = int(t.randint(cfg.min_repeat, cfg.max_repeat + 1, (1,), generator=gen))
        r = t.randint(0, n_random, (length,), generator=gen)
        rows.append(r.repeat(seq_len // length + 1)[:seq_len])
    return t.stack(rows)


def batch_of(split: Split, cfg: TrainConfig, gen: t.Generator) -> Int[Tensor, "batch seq_len_plus_1"]:
    """`cfg.batch` windows of `seq_len + 1` tokens: the model reads the first `seq_len`, predicts the last."""
    starts = t.randint(0, len(split.train) - cfg.seq_len - 1, (cfg.batch,), generator=gen)
    tokens = split.train[starts[:, None] + t.arange(cfg.seq_len + 1)]
    n = cfg.batch // cfg.repeat_every if cfg.repeat_every else 0
    if n:  # a batch smaller than repeat_every has no repeated sequence
        tokens[:n] = repeated_random(n, cfg.seq_len + 1, split.vocab.unknown_id, cfg, gen)
    return tokens


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


@t.no_grad()
def mean_loss(model, seqs: Int[Tensor, "n seq_len"], batch: int = 16, bf16: bool = False) -> float:
    """Average next-token cross-entropy over `seqs`, in nats."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(seqs), batch):
        x = seqs[start:start + batch]
        with t.autocast("cpu", dtype=t.bfloat16, enabled=bf16):
            logits = model(x).logits[:, :-1].float()
        total += F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten(), reduction="sum").item()
        count += x[:, 1:].numel()
    model.train(was_training)
    return total / count


def train(cfg: TrainConfig = TrainConfig(), split: Split | None = None, progress: bool = True, on_eval=None):
    """Train from `cfg.seed`; returns `(model, curve)` where `curve` holds the evaluations along the way.

    `on_eval(model, curve)` is called after each evaluation (the script saves a partial checkpoint there)."""
    from tqdm.auto import tqdm

    split = split or file_split()
    threads = t.get_num_threads()
    t.set_num_threads(cfg.threads)
    try:
        t.manual_seed(cfg.seed)
        model = build_model()
        model.train()
        gen = t.Generator().manual_seed(cfg.seed + 1)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = t.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        held_out = sequences(split.held_out, cfg.seq_len)[: cfg.eval_seqs]
        ch05_val = sequences(split.chapter05_val, 128)[: cfg.eval_seqs]
        curve = {"step": [], "tokens": [], "train_loss": [], "held_out_loss": [], "chapter05_val_loss": []}
        running, n_running = 0.0, 0
        bar = tqdm(range(cfg.steps + 1), desc=f"course GPT (seed {cfg.seed})", disable=not progress)
        for step in bar:
            if step % cfg.eval_every == 0 or step == cfg.steps:
                curve["step"].append(step)
                curve["tokens"].append(step * cfg.batch * cfg.seq_len)
                curve["train_loss"].append(running / n_running if n_running else float("nan"))
                curve["held_out_loss"].append(mean_loss(model, held_out, bf16=cfg.bf16))
                curve["chapter05_val_loss"].append(mean_loss(model, ch05_val, bf16=cfg.bf16))
                bar.set_postfix(held_out=f"{curve['held_out_loss'][-1]:.3f}")
                running, n_running = 0.0, 0
                if on_eval is not None and step < cfg.steps:
                    on_eval(model, curve)
            if step == cfg.steps:
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            tokens = batch_of(split, cfg, gen)
            with t.autocast("cpu", dtype=t.bfloat16, enabled=cfg.bf16):
                logits = model(tokens[:, :-1]).logits.float()
            loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            running, n_running = running + loss.item(), n_running + 1
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", held_out=f"{curve['held_out_loss'][-1]:.3f}")
    finally:
        t.set_num_threads(threads)
    return model.eval(), curve


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m utils.train_course_gpt", description="Train the course GPT.")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--steps", type=int, default=TrainConfig.steps)
    parser.add_argument("--out", type=Path, default=CHECKPOINT, help=f"where to save (default {CHECKPOINT})")
    parser.add_argument("--no-card", action="store_true", help="do not measure the model or write its card")
    args = parser.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, steps=args.steps)
    split = file_split()
    print(f"training on {split.n_train_files} files ({len(split.train):,} tokens); held out: "
          f"{len(split.held_out_files)} files ({len(split.held_out):,} tokens)", flush=True)
    start, load_start = time.perf_counter(), os.getloadavg()[0]

    def save_partial(model, curve):  # a run cut short still leaves a usable checkpoint, marked partial
        if curve["step"][-1] % (2 * cfg.eval_every) == 0:
            save_checkpoint(model, split.vocab, {"partial": True, "curve": curve}, args.out)
            model.train()

    model, curve = train(cfg, split, on_eval=save_partial)
    seconds = time.perf_counter() - start
    meta = {"train_config": asdict(cfg), "size": dict(SIZE), "train_seconds": seconds, "curve": curve,
            "torch": str(t.__version__), "load_average": [load_start, os.getloadavg()[0]], "n_train_files": split.n_train_files, "held_out_files": split.held_out_files,
            "n_train_tokens": len(split.train), "n_held_out_tokens": len(split.held_out)}
    save_checkpoint(model, split.vocab, meta, args.out)
    print(f"trained in {seconds / 60:.1f} min; held-out loss {curve['held_out_loss'][-1]:.3f}; saved {args.out}")
    if args.no_card:
        return 0
    from utils.models.course_gpt_eval import main as evaluate

    return evaluate([str(args.out)])
