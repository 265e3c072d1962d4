"""Top-k ranking metrics with RecBole's definitions, on small numpy inputs.

Every function takes ``hits``: a bool matrix (users x k) whose entry [u, i] says
whether the item ranked i+1 for user u is relevant, and (where needed) ``num_relevant``:
how many relevant items each user has in total. Each returns the per-user values;
the reported metric is their mean over users with at least one relevant item.

* Hit@k = 1 if any of the top k is relevant.
* Precision@k = relevant in top k / k.
* Recall@k = relevant in top k / all relevant.
* MRR@k = 1 / rank of the first relevant item in the top k (0 if none).
* NDCG@k = DCG / IDCG with DCG = sum over relevant top-k ranks r of 1 / log2(r + 1)
  and IDCG the same sum over ranks 1..min(num_relevant, k).

Two catalog-level measures take the recommended item indices instead (``ranked``:
users x k, best first):

* Coverage@k = distinct items in all users' top k / number of items.
* Popularity@k = mean over all recommended slots of the item's popularity percentile
  (:func:`popularity_percentiles` of its training-interaction count: 100 for the most
  popular item, near 0 for the least).
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "hit", "mrr", "precision")


def hit(hits: np.ndarray) -> np.ndarray:
    return hits.any(axis=1).astype(np.float64)


def precision(hits: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / hits.shape[1]


def recall(hits: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    return hits.sum(axis=1) / np.asarray(num_relevant, dtype=np.float64)


def mrr(hits: np.ndarray) -> np.ndarray:
    first = hits.argmax(axis=1)
    return np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)


def ndcg(hits: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(np.asarray(num_relevant), k) - 1]
    return dcg / ideal


def coverage(ranked: np.ndarray, num_items: int) -> float:
    return float(len(np.unique(ranked)) / num_items)


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Per item, the share (0-100) of all items whose count is <= this item's count."""
    counts = np.asarray(counts)
    sorted_counts = np.sort(counts)
    return 100.0 * np.searchsorted(sorted_counts, counts, side="right") / len(counts)


def mean_popularity(ranked: np.ndarray, percentiles: np.ndarray) -> float:
    return float(percentiles[ranked].mean()) if ranked.size else 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def summarize(hits: np.ndarray, num_relevant: np.ndarray, ks: tuple[int, ...],
              ranked: np.ndarray | None = None,
              percentiles: np.ndarray | None = None) -> dict[str, float]:
    """Mean of every metric at every k (``hits`` must have at least max(ks) columns).

    With ``ranked`` (the item indices behind ``hits``) and the items' ``percentiles``,
    coverage@k and popularity@k are added.
    """
    out: dict[str, float] = {}
    for k in ks:
        if ranked is not None and percentiles is not None:
            out[f"coverage@{k}"] = coverage(ranked[:, :k], len(percentiles))
            out[f"popularity@{k}"] = mean_popularity(ranked[:, :k], percentiles)
        top = hits[:, :k]
        out[f"recall@{k}"] = float(recall(top, num_relevant).mean())
        out[f"ndcg@{k}"] = float(ndcg(top, num_relevant).mean())
        out[f"hit@{k}"] = float(hit(top).mean())
        out[f"mrr@{k}"] = float(mrr(top).mean())
        out[f"precision@{k}"] = float(precision(top).mean())
    return out
