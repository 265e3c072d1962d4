"""The PinSage network: movie features -> two weighted SAGE convolutions -> unit vectors.

Input: genres (multi-hot, linear projection) + 5-year bucket embedding + title-token
bag embedding (mean) + a learned id embedding. The id embedding is zeroed for movies
without training edges, so cold movies are embedded from features (and neighbours,
which they have none of) in training and at export alike. Each
:class:`WeightedSAGEConv` is the one of DGL's PinSage example: neighbours' messages
``relu(Q h)`` averaged with the PinSAGESampler visit counts as weights, concatenated
with the movie's own vector, ``relu(W [.])``, L2-normalized. The output adds a skip
projection of the input features (as the example does) and is L2-normalized, so an
item score is a cosine (dot product of unit vectors).

With ``free_dim`` every movie also has a free (non-graph) vector of that many columns,
concatenated to its GNN embedding before the normalization: the graph gives the shared,
smooth part (features and walk neighbours) and the free columns the collaborative detail
a 128-dimensional smooth embedding cannot hold (on ml-1m this lifted valid Recall@10
from 0.185 to 0.19; docs/pinsage.md). They are zero for movies without training edges,
like the id embedding, so a cold movie still gets a features-only vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from movierec.compat.dgl import import_dgl
from movierec.models.pinsage.aggregation import POOLS
from movierec.models.pinsage.graph import YEAR_BUCKETS, ItemFeatures

#: initial scale of the split-role heads of a model scored by raw inner products (the
#: scores of long histories start small)
HEAD_SCALE = 0.1


class FeatureEncoder(nn.Module):
    """Projects every movie's features (and id) into the hidden space."""

    def __init__(self, features: ItemFeatures, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("genres", torch.from_numpy(features.genres))
        self.register_buffer("year", torch.from_numpy(features.year_bucket))
        self.register_buffer("tokens", torch.from_numpy(features.title_tokens))
        self.register_buffer("has_edges", torch.from_numpy(features.has_edges).float()[:, None])
        self.genre_proj = nn.Linear(features.genres.shape[1], dim)
        self.year_emb = nn.Embedding(YEAR_BUCKETS + 1, dim)
        self.token_emb = nn.Embedding(vocab_size + 1, dim, padding_idx=0)
        self.id_emb = nn.Embedding(features.num_items, dim)
        nn.init.normal_(self.id_emb.weight, std=0.1)

    def forward(self) -> torch.Tensor:
        present = (self.tokens > 0).float()
        title = self.token_emb(self.tokens).sum(1) / present.sum(1, keepdim=True).clamp(min=1)
        return (self.genre_proj(self.genres) + self.year_emb(self.year) + title
                + self.id_emb.weight * self.has_edges)


class WeightedSAGEConv(nn.Module):
    """GraphSAGE with visit-count weighted mean aggregation (DGL PinSage example)."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.Q = nn.Linear(dim, dim)
        self.W = nn.Linear(2 * dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, graph, h: torch.Tensor) -> torch.Tensor:
        fn = import_dgl().function
        with graph.local_scope():
            graph.ndata["n"] = F.relu(self.Q(self.dropout(h)))
            graph.update_all(fn.u_mul_e("n", "share", "m"), fn.sum("m", "n"))
            z = F.relu(self.W(self.dropout(torch.cat([graph.ndata["n"], h], 1))))
            return F.normalize(z, dim=1)


@dataclass
class ItemTables:
    """What a user tower and the ranking need of every movie (rows = item indices)."""

    inputs: torch.Tensor         # (N, d) vectors pooled into a user's vector
    outputs: torch.Tensor        # (N, d) vectors the user vector is scored against
    bias: torch.Tensor | None    # (N,) item bias added to every score, or None

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """(B, N) inner products of user vectors with the items, plus the item bias."""
        scores = users @ self.outputs.T
        return scores if self.bias is None else scores + self.bias

    def exported(self) -> torch.Tensor:
        """Item vectors as stored in Milvus: ``[outputs, bias]`` (the user vector appends
        the bias weight: 1 in training, see :mod:`movierec.models.pinsage.calibration`)."""
        if self.bias is None:
            return self.outputs
        return torch.cat([self.outputs, self.bias[:, None]], 1)


class UserTower(nn.Module):
    """Torch twin of :class:`movierec.models.pinsage.aggregation.UserTower`."""

    def __init__(self, dim: int, layers: int, pool: str, unit: bool) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; known: {', '.join(POOLS)}")
        self.pool, self.unit = pool, unit
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, weights: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """User vectors (B, d) from sparse (B, N) bag weights (without the bias column)."""
        x = torch.sparse.mm(weights, inputs)
        if self.pool == "l2":
            x = F.normalize(x, dim=1)
        elif self.pool != "sum":
            w = weights.coalesce()
            values = w.values() if self.pool == "mean" else w.values().square()
            total = torch.zeros(len(x)).index_add_(0, w.indices()[0], values)
            total = total.sqrt() if self.pool == "sqrt" else total
            x = x / torch.where(total > 0, total, torch.ones_like(total))[:, None]
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return F.normalize(x, dim=1) if self.unit else x

    def arrays(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """The dense layers as numpy (W (d, d'), b (d',)) pairs, for export."""
        return tuple((layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
                     for layer in self.layers)


def _free(items: int, dim: int) -> nn.Embedding | None:
    """Free per-movie vectors beside the GNN embedding (none when ``dim`` is 0)."""
    if dim <= 0:
        return None
    table = nn.Embedding(items, dim)
    nn.init.normal_(table.weight, std=0.01)
    return table


def _identity(dim: int, scale: float) -> nn.Linear:
    """A linear head that starts as ``scale`` times the identity (the roles start shared)."""
    head = nn.Linear(dim, dim)
    with torch.no_grad():
        head.weight.copy_(torch.eye(dim) * scale)
    nn.init.zeros_(head.bias)
    return head


class PinSage(nn.Module):
    """Embeds the whole catalog given one sampled neighbourhood graph per layer.

    With ``split_roles`` the GNN output feeds two linear heads, the movie's *input*
    vector (pooled into user vectors) and its *output* vector (scored against them),
    and optionally a scalar item bias; without it both roles are the unit GNN output.
    With ``cosine`` user and output vectors are unit vectors
    (the score before the item bias is a cosine; training divides it by a temperature).
    ``free_dim`` appends free per-movie columns to both roles (one table for both with
    ``free_shared``, else one per role) and ``free_bias`` a free per-movie bias term;
    ``input_scale`` learns how much each movie weighs in a user's bag (a per-movie
    factor on its input vector, ``exp(a_i)``, 1 at the start).
    """

    def __init__(self, features: ItemFeatures, vocab_size: int, dim: int, layers: int = 2,
                 dropout: float = 0.0, split_roles: bool = False, item_bias: bool = False,
                 user_layers: int = 0, pool: str = "l2", cosine: bool = True,
                 free_dim: int = 0, free_shared: bool = True, free_bias: bool = False,
                 input_scale: bool = False) -> None:
        super().__init__()
        self.free_in = _free(features.num_items, free_dim)
        self.free_out = self.free_in if free_shared else _free(features.num_items, free_dim)
        self.free_bias = (nn.Parameter(torch.zeros(features.num_items))
                          if free_bias and item_bias else None)
        self.input_scale = nn.Parameter(torch.zeros(features.num_items)) if input_scale else None
        self.encoder = FeatureEncoder(features, vocab_size, dim)
        self.convs = nn.ModuleList(WeightedSAGEConv(dim, dropout) for _ in range(layers))
        self.skip = nn.Linear(dim, dim)
        scale = 1.0 if cosine else HEAD_SCALE
        self.input_head = _identity(dim, scale) if split_roles else None
        self.output_head = _identity(dim, scale) if split_roles else None
        self.bias_head = nn.Linear(dim, 1) if item_bias else None
        self.user_tower = UserTower(dim + max(free_dim, 0), user_layers, pool, unit=cosine)
        self.cosine = cosine

    def forward(self, graphs: list) -> torch.Tensor:
        """Unit-norm GNN embeddings (N, dim) of every movie."""
        h0 = self.encoder()
        h = h0
        for conv, graph in zip(self.convs, graphs, strict=True):
            h = conv(graph, h)
        return F.normalize(h + self.skip(h0), dim=1)

    def tables(self, h: torch.Tensor) -> ItemTables:
        """Input/output vectors and bias of every movie from the GNN embeddings ``h``."""
        warm = self.encoder.has_edges
        bias = self.bias_head(h).squeeze(1) if self.bias_head is not None else None
        if self.free_bias is not None:
            bias = bias + self.free_bias * warm[:, 0]
        inputs = h if self.input_head is None else self.input_head(h)
        outputs = h if self.output_head is None else self.output_head(h)
        if self.free_in is not None:
            inputs = torch.cat([inputs, self.free_in.weight * warm], 1)
            outputs = torch.cat([outputs, self.free_out.weight * warm], 1)
        if self.cosine and (self.free_in is not None or self.output_head is not None):
            outputs = F.normalize(outputs, dim=1)
        if self.input_head is None and self.free_in is self.free_out:
            inputs = outputs  # one vector per movie for both roles
        if self.input_scale is not None:
            inputs = inputs * torch.exp(self.input_scale)[:, None]
        return ItemTables(inputs, outputs, bias)
