"""A compact hand-written GPT-2 in PyTorch: the fastest plain-eager formulation we know of,
used as the strongest PyTorch baseline of the benchmark.

Same math as the C core and Hugging Face GPT-2: learned position embeddings, pre-LayerNorm
blocks (eps 1e-5), one fused qkv Linear, causal attention via
F.scaled_dot_product_attention, GELU (tanh approximation), a tied classifier (lm_head is wte)
and mean cross-entropy over the vocabulary. No dropout. `load_hf_state` copies the weights of
a Hugging Face GPT2LMHeadModel (whose Conv1D weights are transposed) so tests can check that
both compute the same loss.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C: int, NH: int):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.attproj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        hs = C // self.NH
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q = q.view(B, T, self.NH, hs).transpose(1, 2)
        k = k.view(B, T, self.NH, hs).transpose(1, 2)
        v = v.view(B, T, self.NH, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.attproj(y)
        x = x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class CompactGPT2(nn.Module):
    """GPT-2 with vocabulary V (no padding rows, as Hugging Face's)."""

    def __init__(self, num_layers: int, channels: int, num_heads: int, vocab_size: int, max_seq_len: int):
        super().__init__()
        self.V = vocab_size
        self.wte = nn.Embedding(vocab_size, channels)
        self.wpe = nn.Embedding(max_seq_len, channels)
        self.blocks = nn.ModuleList(Block(channels, num_heads) for _ in range(num_layers))
        self.lnf = nn.LayerNorm(channels, eps=1e-5)
        self.lm_head = nn.Linear(channels, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self._init(num_layers)

    def _init(self, L: int) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("lnf"):
                nn.init.ones_(p)
            elif name.endswith("attproj.weight") or name.endswith("fcproj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.lnf(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(B * T, self.V), targets.reshape(B * T))

    @torch.no_grad()
    def load_hf_state(self, hf_model) -> "CompactGPT2":
        """Copy the weights of a Hugging Face GPT2LMHeadModel of the same shape."""
        t = hf_model.transformer
        self.wte.weight.copy_(t.wte.weight)
        self.wpe.weight.copy_(t.wpe.weight)
        for blk, h in zip(self.blocks, t.h):
            blk.ln1.weight.copy_(h.ln_1.weight)
            blk.ln1.bias.copy_(h.ln_1.bias)
            blk.qkv.weight.copy_(h.attn.c_attn.weight.t())
            blk.qkv.bias.copy_(h.attn.c_attn.bias)
            blk.attproj.weight.copy_(h.attn.c_proj.weight.t())
            blk.attproj.bias.copy_(h.attn.c_proj.bias)
            blk.ln2.weight.copy_(h.ln_2.weight)
            blk.ln2.bias.copy_(h.ln_2.bias)
            blk.fc.weight.copy_(h.mlp.c_fc.weight.t())
            blk.fc.bias.copy_(h.mlp.c_fc.bias)
            blk.fcproj.weight.copy_(h.mlp.c_proj.weight.t())
            blk.fcproj.bias.copy_(h.mlp.c_proj.bias)
        self.lnf.weight.copy_(t.ln_f.weight)
        self.lnf.bias.copy_(t.ln_f.bias)
        return self
