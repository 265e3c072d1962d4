"""Sampling: PinSage neighbourhoods, item-item positives and user training batches.

* :class:`NeighbourSampler` wraps ``dgl.sampling.PinSAGESampler``: random walks
  movie -> user -> movie with restart from every movie; the ``num_neighbors`` most
  visited movies become its neighbours, weighted by visit count (edge data
  ``weights``). One sample covers the whole catalog (a homogeneous movie graph,
  edges neighbour -> movie), so a training step embeds every movie at once.
* :func:`cooccurrence_pairs` draws (movie, movie) positives from movie -> user ->
  movie walks: the reference design's item-item objective.
* :func:`split_histories` cuts each user's history into an input part (aggregated
  into the user vector) and target part (to be ranked): the user-aware objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from movierec.compat.dgl import import_dgl


@dataclass(frozen=True)
class WalkConfig:
    """PinSAGESampler settings (DGL example: 2 traversals, 0.5, 10 walks, 3 neighbours)."""

    num_traversals: int = 2
    termination_prob: float = 0.5
    num_random_walks: int = 20
    num_neighbors: int = 10


class NeighbourSampler:
    """Whole-catalog PinSage neighbourhoods of a user-movie heterograph."""

    def __init__(self, graph, config: WalkConfig) -> None:
        dgl = import_dgl()
        self._dgl = dgl
        self.num_items = graph.num_nodes("movie")
        self._sampler = dgl.sampling.PinSAGESampler(
            graph, "movie", "user", config.num_traversals, config.termination_prob,
            config.num_random_walks, config.num_neighbors)

    def sample(self):
        """A movie graph: each movie's top-visited neighbours, edge data ``weights`` (visit
        counts) and ``share`` (the counts divided by the movie's total: mean weights)."""
        frontier = self._sampler(torch.arange(self.num_items))
        frontier = self._dgl.remove_self_loop(frontier)
        weights = frontier.edata["weights"].float()
        dst = frontier.edges()[1]
        totals = torch.zeros(self.num_items).index_add_(0, dst, weights)
        frontier.edata["weights"] = weights
        frontier.edata["share"] = weights / totals[dst]
        return frontier

    def layers(self, count: int) -> list:
        """``count`` independent samples, one per convolution layer."""
        return [self.sample() for _ in range(count)]


def cooccurrence_pairs(graph, heads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(head, tail) movie pairs where tail follows head on a movie -> user -> movie walk."""
    dgl = import_dgl()
    traces, _ = dgl.sampling.random_walk(graph, heads, metapath=["watched-by", "watched"])
    tails = traces[:, 2]
    keep = (tails >= 0) & (tails != heads)
    return heads[keep], tails[keep]


@dataclass(frozen=True)
class UserBatch:
    """Input weights (aggregated into the user vector) and targets of some users."""

    inputs: torch.Tensor   # sparse COO (B, N) aggregation weights
    seen: torch.Tensor     # bool (B, N): input items, excluded from the ranking
    targets: torch.Tensor  # float (B, N): 1 for held-out target items


@dataclass(frozen=True)
class HistorySplit:
    """How a training user's history is cut into inputs and targets."""

    target_frac: float = 0.5   # expected share of a history held out as targets
    short_frac: float = 0.0    # share of users whose input is their first ``short_len`` items
    short_len: int = 5
    target_power: float = 0.0  # a target weighs (its input weight) ** target_power


def split_histories(weights: sparse.csr_matrix, split: HistorySplit, rng: np.random.Generator,
                    stamps: sparse.csr_matrix) -> UserBatch:
    """Cut each row's items into inputs and targets (at least one of each).

    Most rows hold out about ``target_frac`` of their items at random; a ``short_frac``
    share keeps only their ``short_len`` earliest items by ``stamps`` (same sparsity as
    ``weights``) as inputs, like a cold-start user. Every row needs two items or more.
    A target weighs its aggregation weight to the power ``target_power`` (0: every
    target 1; 1: a 5-star target 4 times a 3-star one under the ``rating`` scheme).
    """
    counts = np.diff(weights.indptr)
    rows = np.repeat(np.arange(weights.shape[0]), counts)
    short = rng.random(len(counts)) < split.short_frac
    held = np.maximum(rng.binomial(counts, split.target_frac), 1)
    keep = np.clip(np.where(short, split.short_len, counts - held), 1, counts - 1)
    first = np.where(short[rows], stamps.data, 0)
    order = np.lexsort((rng.random(weights.nnz), first, rows))
    position = np.empty(weights.nnz, dtype=np.int64)
    position[order] = np.arange(weights.nnz) - np.repeat(weights.indptr[:-1], counts)
    is_input = position < keep[rows]
    held = ~is_input
    shape, cols = weights.shape, weights.indices
    inputs = _coo(rows[is_input], cols[is_input], weights.data[is_input], shape)
    seen = torch.zeros(shape, dtype=torch.bool)
    seen[rows[is_input], cols[is_input]] = True
    targets = torch.zeros(shape)
    held_weights = weights.data[held].astype(np.float32) ** np.float32(split.target_power)
    targets[rows[held], cols[held]] = torch.from_numpy(held_weights)
    return UserBatch(inputs, seen, targets)


def _coo(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
         shape: tuple[int, int]) -> torch.Tensor:
    index = torch.from_numpy(np.vstack([rows, cols]).astype(np.int64))
    values_t = torch.from_numpy(values.astype(np.float32))
    return torch.sparse_coo_tensor(index, values_t, shape, check_invariants=False)
