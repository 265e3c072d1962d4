"""BPR-MF, the neural baseline of ``movierec evaluate pinsage`` (torch).

Matrix factorization (user and item embeddings, dot product) trained with the BPR
loss on (user, training item, uniformly drawn non-training item) triples (L2 penalty
``reg`` on the embeddings of each batch); the epoch with the best validation
Recall@10 is kept. It scores users by their trained embedding, so it needs users
seen in training (not the cold-start protocol).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

from movierec.evaluation.baselines import Factory
from movierec.evaluation.protocols import ProtocolData
from movierec.evaluation.ranking import RankingTask, Scorer, evaluate
from movierec.evaluation.runner import measure


@dataclass(frozen=True)
class BprConfig:
    dim: int = 64
    lr: float = 1e-3
    batch: int = 2048
    epochs: int = 50
    reg: float = 0.0
    eval_every: int = 5
    seed: int = 2026


def bpr(train: sparse.csr_matrix, valid: RankingTask, config: BprConfig) -> tuple[Scorer, dict]:
    """Train BPR-MF; returns the best scorer and {epochs, seconds, valid recall@10}."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    coo = train.tocoo()
    users, items = coo.row.astype(np.int64), coo.col.astype(np.int64)
    user_emb = torch.nn.Parameter(torch.randn(train.shape[0], config.dim) * 0.1)
    item_emb = torch.nn.Parameter(torch.randn(train.shape[1], config.dim) * 0.1)
    optimizer = torch.optim.Adam([user_emb, item_emb], lr=config.lr)
    best, best_state, started = -1.0, None, time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        _bpr_epoch(train, (users, items), (user_emb, item_emb), optimizer, rng, config)
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            state = (user_emb.detach().numpy().copy(), item_emb.detach().numpy().copy())
            score = evaluate(_mf_scorer(*state), valid, ks=(10,))["recall@10"]
            if score > best:
                best, best_state, best_epoch = score, state, epoch
    info = {"best_epoch": best_epoch, "seconds": round(time.perf_counter() - started, 1),
            "valid_recall@10": best}
    return _mf_scorer(*best_state), info


def _bpr_epoch(train: sparse.csr_matrix, pairs: tuple[np.ndarray, np.ndarray],
               embeddings: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
               rng: np.random.Generator, config: BprConfig) -> None:
    (users, items), (user_emb, item_emb) = pairs, embeddings
    order = rng.permutation(len(users))
    for start in range(0, len(order), config.batch):
        pick = order[start:start + config.batch]
        u, i = users[pick], items[pick]
        j = rng.integers(0, train.shape[1], len(pick))
        clash = np.asarray(train[u, j]).ravel() > 0
        j[clash] = rng.integers(0, train.shape[1], int(clash.sum()))
        ue = user_emb[torch.from_numpy(u)]
        ie, je = item_emb[torch.from_numpy(i)], item_emb[torch.from_numpy(j)]
        penalty = (ue.square().sum() + ie.square().sum() + je.square().sum()) / len(pick)
        loss = -F.logsigmoid((ue * (ie - je)).sum(1)).mean() + config.reg * penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _mf_scorer(users: np.ndarray, items: np.ndarray) -> Scorer:
    return lambda rows: users[rows] @ items.T


def bpr_factory(train: sparse.csr_matrix, valid: RankingTask,
                config: BprConfig) -> tuple[Factory, dict]:
    """Train BPR; its scorer ignores a task's history (users are their embeddings)."""
    scorer, info = bpr(train, valid, config)
    return (lambda task: scorer), info


def bpr_row(data: ProtocolData, config: BprConfig) -> dict:
    """BPR's result row (epochs chosen on validation) on a protocol with known users."""
    started = time.perf_counter()
    factory, info = bpr_factory(data.train, data.valid, config)
    return measure(factory, data, started, params={"best_epoch": info["best_epoch"],
                                                   "epochs": config.epochs})
