"""The LayerNorm experiment of docs/course_gpt_recipe.md: chapter 04's copying task inside GPT2LMHeadModel.

    python docs/experiments/layernorm_copying.py name=toy ln=0 mlp=0 tied=0     # the toy's architecture
    python docs/experiments/layernorm_copying.py name=gpt2                      # GPT-2's: LayerNorm, MLPs, tied
    python docs/experiments/layernorm_copying.py name=offset data=offset steps=2000   # the copy at a random offset

Prints, every 250 steps, the repeated-half loss and the best induction / previous-token head on `[BOS, r, r]`
(`r` of 30), then where each head of the trained model attends. About 2 minutes per 1,500 steps on one quiet core.
"""
import sys, time, json, math
import torch as t, torch.nn as nn, torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel
t.set_num_threads(1)
args = dict(a.split("=") for a in sys.argv[1:])
name = args.get("name", "x"); ln = args.get("ln", "1") == "1"; mlp = args.get("mlp", "1") == "1"
tied = args.get("tied", "1") == "1"; steps = int(args.get("steps", 1500)); d = int(args.get("d", 64))
nl = int(args.get("nl", 2)); nh = int(args.get("nh", 4)); V = int(args.get("V", 201)); K = int(args.get("K", 200))
lr = float(args.get("lr", 3e-3)); wd = float(args.get("wd", 0.01)); bs = int(args.get("bs", 64))
lo, hi = int(args.get("lo", 10)), int(args.get("hi", 40)); qk = float(args.get("qk", 1.0))
t.manual_seed(0)
cfg = GPT2Config(vocab_size=V, n_layer=nl, n_embd=d, n_head=nh, n_inner=4*d, n_positions=128, activation_function="gelu_new",
                 resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, tie_word_embeddings=tied)
cfg._attn_implementation = "eager"
m = GPT2LMHeadModel(cfg)
class Zero(nn.Module):
    def forward(self, x): return t.zeros_like(x)
for b in m.transformer.h:
    if not ln: b.ln_1 = nn.Identity(); b.ln_2 = nn.Identity()
    if not mlp: b.mlp = Zero()
    if qk != 1.0:
        with t.no_grad(): b.attn.c_attn.weight[:, :2*d] *= qk
if not ln: m.transformer.ln_f = nn.Identity()
opt = t.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd)
g = t.Generator().manual_seed(1)
BOS = V - 1
def batch(L, n, gen):
    r = t.randint(0, K, (n, L), generator=gen)
    return t.cat([t.full((n, 1), BOS), r, r], 1)

T = int(args.get("T", 96)); gap = int(args.get("gap", 10)); pre = int(args.get("pre", 20))
def mixed(n, gen):
    x = t.randint(0, K, (n, T), generator=gen); mask = t.zeros(n, T)
    x[:, 0] = BOS
    for i in range(n):
        L = int(t.randint(lo, hi + 1, (1,), generator=gen)); p0 = 1 + int(t.randint(0, pre + 1, (1,), generator=gen))
        p1 = p0 + L + int(t.randint(0, gap + 1, (1,), generator=gen))
        if p1 + L > T: L = (T - p0) // 2; p1 = p0 + L
        x[i, p1:p1 + L] = x[i, p0:p0 + L]; mask[i, p1 + 1:p1 + L] = 1
    return x, mask
@t.no_grad()
def ev():
    L = 30; x = batch(L, 64, t.Generator().manual_seed(123))
    out = m(x, output_attentions=True)
    lp = out.logits[:, :-1].log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0]
    rep = -lp[:, L + 1:].mean().item()
    ind, prev = [], []
    for a in out.attentions:  # [b h q k]
        ind.append(a.diagonal(offset=-(L - 1), dim1=-2, dim2=-1)[..., 1:].mean((0, -1)))  # q at L+1.. attends k=q-L+1
        prev.append(a.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1)))
    return rep, t.stack(ind), t.stack(prev)
t0 = time.time()
for s in range(steps + 1):
    if s % 250 == 0:
        rep, ind, prev = ev()
        print(json.dumps(dict(name=name, step=s, rep=round(rep, 3), ind=round(ind.max().item(), 2), ind_layer=int(ind.max(1).values.argmax()),
                              prev=round(prev.max().item(), 2), prev_layer=int(prev.max(1).values.argmax()), sec=round(time.time() - t0))), flush=True)
    if s == steps: break
    if args.get("data", "bos_r_r") == "offset":
        x, mask = mixed(bs, g)
        lp = m(x).logits[:, :-1].log_softmax(-1).gather(-1, x[:, 1:, None])[..., 0]
        loss = -(lp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    else:
        L = int(t.randint(lo, hi + 1, (1,), generator=g)); x = batch(L, bs, g)
        loss = F.cross_entropy(m(x).logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    opt.zero_grad(); loss.backward(); opt.step()
with t.no_grad():
    L = 30; x = batch(L, 64, t.Generator().manual_seed(123))
    out = m(x, output_attentions=True)
    for li, a in enumerate(out.attentions):
        a = a[:, :, L + 1:, :].mean(0)  # [h q k] queries in second copy
        for h in range(a.shape[0]):
            offs = {}
            for qi in range(a.shape[1]):
                q = L + 1 + qi
                for k in range(q + 1):
                    offs[q - k] = offs.get(q - k, 0) + a[h, qi, k].item() / a.shape[1]
            top = sorted(offs.items(), key=lambda kv: -kv[1])[:4]
            bos = a[h, :, 0].mean().item()
            print(f"L{li}H{h}", "bos=%.2f" % bos, " ".join(f"off{o}:{v:.2f}" for o, v in top))
