"""The SASRec network (Kang & McAuley, ICDM 2018), pre-norm, in plain torch layers.

``x = E[item] * sqrt(d) + P[position]`` (``+ G[gap]`` with ``Dims.gaps``: the time
since the rating before, in doubling buckets, :func:`.data.gap_buckets`); each block
adds causal multi-head attention and a feed-forward layer to the stream, each after a
LayerNorm (pre-norm); a final LayerNorm gives the hidden state ``h_t``. The score of
item ``j`` after position ``t`` is ``h_t . E[j]``: the item table is both input and
output (as in SASRec), so the served query vector is ``h`` at the last position and the
Milvus item vectors are the rows of ``E``. Written with explicit projections so
:mod:`.encoder` repeats it in numpy exactly (tested). Positions are right-aligned: the
newest item is at ``L - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from movierec.models.sasrec.data import GAP_ROWS

#: additive mask value (finite: a fully masked padding row stays NaN-free)
MASKED = -1e9


class ByteDropout(nn.Module):
    """Dropout whose mask is drawn as random bytes, eight per 64-bit draw.

    torch's CPU dropout draws one Bernoulli per element from a serial generator: on the
    attention weights (batch x 200 x 200 per block) that was a fifth of a training step.
    Random bytes cost an eighth as many draws; the drop probability is rounded to a
    multiple of 1/256 (0.2 -> 0.199, 0.1 -> 0.102). Same seeding (torch's generator)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.cut = round(p * 256)
        self.scale = 256 / (256 - self.cut) if self.cut < 256 else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == 0:
            return x
        words = -(-x.numel() // 8)
        draws = torch.randint(-2 ** 63, 2 ** 63 - 1, (words,), dtype=torch.int64)
        keep = draws.view(torch.uint8)[:x.numel()].view(x.shape) >= self.cut
        return x * keep * self.scale


@dataclass(frozen=True)
class Dims:
    """Shape of the network."""

    items: int           # N (embedding rows N + 1: row 0 pads)
    dim: int = 64
    layers: int = 2
    heads: int = 1
    max_len: int = 200
    ffn: int = 1         # feed-forward hidden = ffn * dim
    dropout: float = 0.2
    positions: str = "newest"   # position 0 is: "oldest" item of the window, or "newest" at L-1
    gaps: bool = False   # add an embedding of the time since the rating before (data.gap_buckets)


class Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward."""

    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.heads = d.heads
        self.norm1, self.norm2 = nn.LayerNorm(d.dim), nn.LayerNorm(d.dim)
        self.qkv = nn.Linear(d.dim, 3 * d.dim)
        self.out = nn.Linear(d.dim, d.dim)
        self.ff1, self.ff2 = nn.Linear(d.dim, d.ffn * d.dim), nn.Linear(d.ffn * d.dim, d.dim)
        self.drop = ByteDropout(d.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, d); ``mask`` (B, 1, L, L) additive."""
        b, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(dim, dim=-1)
        shape = (b, length, self.heads, dim // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        att = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads) + mask
        att = self.drop(torch.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, length, dim)
        x = x + self.drop(self.out(y))
        return x + self.drop(self.ff2(self.drop(torch.relu(self.ff1(self.norm2(x))))))


class SasRec(nn.Module):
    """Item sequences (B, L), left-padded with 0 -> hidden states (B, L, d)."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.items = nn.Embedding(dims.items + 1, dims.dim, padding_idx=0)
        self.positions = nn.Embedding(dims.max_len, dims.dim)
        self.gaps = nn.Embedding(GAP_ROWS, dims.dim, padding_idx=0) if dims.gaps else None
        self.blocks = nn.ModuleList(Block(dims) for _ in range(dims.layers))
        self.norm = nn.LayerNorm(dims.dim)
        self.drop = ByteDropout(dims.dropout)
        nn.init.normal_(self.items.weight, std=dims.dim ** -0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seqs: torch.Tensor, gaps: torch.Tensor | None = None) -> torch.Tensor:
        """``gaps`` (B, L): each item's gap row (0 under padding); None: no gap known
        (row 1), used only when the network has a gap table."""
        length = seqs.shape[1]
        keep = (seqs > 0).unsqueeze(-1).float()
        x = self.items(seqs) * math.sqrt(self.dims.dim) + self.positions(self._positions(seqs))
        if self.gaps is not None:
            x = x + self.gaps((seqs > 0).long() if gaps is None else gaps)
        x = self.drop(x) * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        allowed = causal[None] & (seqs > 0)[:, None, :]
        mask = torch.zeros(allowed.shape, device=seqs.device).masked_fill(~allowed, MASKED)
        for block in self.blocks:
            x = block(x, mask[:, None]) * keep
        return self.norm(x)

    def _positions(self, seqs: torch.Tensor) -> torch.Tensor:
        """Position index of every slot of left-padded ``seqs`` (B, L): right-aligned
        (``newest``: the newest item at ``max_len - 1``, whatever the history's length), or
        counted from the window's oldest item (``oldest``: as the published SASRec code
        pads on the right; for histories shorter than the window a position is then the
        rating's rank in the user's history)."""
        length = seqs.shape[1]
        slots = torch.arange(length, device=seqs.device)
        if self.dims.positions == "newest":
            return slots + (self.dims.max_len - length)
        first = length - (seqs > 0).sum(1, keepdim=True)        # where the items start
        return (slots[None] - first).clamp(min=0)

    def item_table(self) -> torch.Tensor:
        """Output vectors of items 1..N (row i-1 <-> item index i)."""
        return self.items.weight[1:]
