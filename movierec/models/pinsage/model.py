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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from movierec.compat.dgl import import_dgl
from movierec.models.pinsage.graph import YEAR_BUCKETS, ItemFeatures


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
            graph.update_all(fn.u_mul_e("n", "weights", "m"), fn.sum("m", "n"))
            graph.update_all(fn.copy_e("weights", "m"), fn.sum("m", "ws"))
            total = graph.ndata["ws"].unsqueeze(1).clamp(min=1)
            z = F.relu(self.W(self.dropout(torch.cat([graph.ndata["n"] / total, h], 1))))
            return F.normalize(z, dim=1)


class PinSage(nn.Module):
    """Embeds the whole catalog given one sampled neighbourhood graph per layer."""

    def __init__(self, features: ItemFeatures, vocab_size: int, dim: int, layers: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = FeatureEncoder(features, vocab_size, dim)
        self.convs = nn.ModuleList(WeightedSAGEConv(dim, dropout) for _ in range(layers))
        self.skip = nn.Linear(dim, dim)

    def forward(self, graphs: list) -> torch.Tensor:
        """Unit-norm embeddings (N, dim) of every movie."""
        h0 = self.encoder()
        h = h0
        for conv, graph in zip(self.convs, graphs, strict=True):
            h = conv(graph, h)
        return F.normalize(h + self.skip(h0), dim=1)
