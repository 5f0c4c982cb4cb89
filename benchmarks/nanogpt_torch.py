"""nanoGPT's model and train step in PyTorch (float32, eager, as its CPU recipe runs it).

A faithful re-statement of karpathy/nanoGPT model.py (MIT) at the shapes lmjax benchmarks, so
both programs are timed side by side on the same machine in the same run.
"""
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, dropout=0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.resid_dropout, self.mlp_dropout = nn.Dropout(dropout), nn.Dropout(dropout)
        # nanoGPT's train.py default: bias=False in LayerNorm and Linear layers.
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc = nn.Linear(d, 4 * d, bias=False)
        self.mlp_proj = nn.Linear(4 * d, d, bias=False)

    def attn(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp_dropout(self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)))))


class GPT(nn.Module):
    def __init__(self, vocab, block_size, layers, heads, d, dropout=0.0):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(block_size, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte.weight = self.lm_head.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                torch.nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def nanogpt_step(vocab, layers, heads, d, seq_len, batch, threads=2, seed=0, dropout=0.0):
    """A function that runs one train step (forward, backward, clip, AdamW) as nanoGPT's train.py
    does, on a fresh random batch, and returns its wall time in seconds."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = GPT(vocab, seq_len, layers, heads, d, dropout)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3,
                            betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)

    def step():
        ids = torch.from_numpy(rng.integers(0, vocab, (batch, seq_len + 1)).astype(np.int64))
        start = time.perf_counter()
        loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - start
    return step


def time_nanogpt(vocab, layers, heads, d, seq_len, batch, steps, warmup=2, threads=2, seed=0,
                 dropout=0.0):
    """Median seconds per train step after warm-up."""
    step = nanogpt_step(vocab, layers, heads, d, seq_len, batch, threads, seed, dropout)
    times = [step() for _ in range(warmup + steps)]
    return float(np.median(times[warmup:]))
