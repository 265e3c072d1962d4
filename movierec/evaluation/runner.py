"""Scoring models and baselines on a protocol: one result row each, tuned on validation.

A row holds the test metrics at the top level (``recall@10``, ``ndcg@10``, ...),
the validation metrics under ``valid``, those of users unseen in training under ``cold``
(protocols that score them apart), the chosen hyper-parameters under ``params`` (with
the validation Recall@10 of every grid value under ``grid``) and the seconds it
took. Hyper-parameters are chosen by validation Recall@10 (NDCG@10 breaks ties) and
never look at test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from movierec.evaluation import baselines, protocols
from movierec.evaluation.baselines import Factory
from movierec.evaluation.protocols import ProtocolData
from movierec.evaluation.ranking import evaluate

BASELINES = ("mostpop", "recentpop", "grouppop", "itemknn", "ease")


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 5) for k, v in metrics.items()}


def measure(factory: Factory, data: ProtocolData, started: float | None = None,
            valid: dict[str, float] | None = None, **extra) -> dict:
    """Validation (unless already known) and test metrics of one scorer factory."""
    started = time.perf_counter() if started is None else started
    valid = evaluate(factory(data.valid), data.valid) if valid is None else valid
    test = evaluate(factory(data.test), data.test)
    if data.cold is not None and data.cold.rows.size:
        extra = {**extra, "cold": _rounded(evaluate(factory(data.cold), data.cold))}
    return {**_rounded(test), "valid": _rounded(valid), **extra,
            "seconds": round(time.perf_counter() - started, 1)}


def choose(grid: Iterable, make: Callable[[object], Factory], data: ProtocolData,
           by: str = "recall@10") -> tuple[object, Factory, dict[str, float], dict[str, float]]:
    """(value, its factory, its validation metrics, every value's validation ``by``):
    the grid value with the best validation ``by`` (Recall@10; NDCG@10 where a
    protocol's users have so many targets that Recall@10 is capped far below 1), the
    other of the two breaking ties."""
    other = "ndcg@10" if by == "recall@10" else "recall@10"
    grid_scores: dict[str, float] = {}
    best: tuple | None = None  # (key, value, valid metrics, factory); only the best is kept
    for value in grid:
        factory = make(value)
        valid = evaluate(factory(data.valid), data.valid)
        grid_scores[str(value)] = round(valid[by], 5)
        key = (valid[by], valid[other])
        if best is None or key > best[0]:
            best = (key, value, valid, factory)
    _, value, valid, factory = best
    return value, factory, valid, grid_scores


def tune(name: str, grid: Iterable, make: Callable[[object], Factory], data: ProtocolData,
         started: float | None = None, by: str = "recall@10") -> dict:
    """Pick ``name`` from ``grid`` on validation (by ``by``), then score it on test."""
    started = time.perf_counter() if started is None else started
    value, factory, valid, grid_scores = choose(grid, make, data, by)
    return measure(factory, data, started, valid=valid,
                   params={name: value, "grid": grid_scores})


def run_baselines(data: ProtocolData, names: Iterable[str] = BASELINES,
                  knn_grid: Iterable[int] = baselines.KNN_GRID,
                  ease_grid: Iterable[float] = baselines.EASE_GRID) -> dict[str, dict]:
    """Rows of the requested baselines, all fitted on ``data.train``."""
    rows: dict[str, dict] = {}
    for name in names:
        started = time.perf_counter()
        if name == "mostpop":
            rows[name] = measure(baselines.most_pop(data.train), data, started)
        elif name == "recentpop":
            fit = protocols.relevant(data.split.train, protocols.MIN_RATING[data.name])
            rows[name] = measure(baselines.recent_pop(fit, data.movie_ids), data, started)
        elif name == "grouppop":
            rows[name] = measure(baselines.group_pop(data.train, data.cells), data, started)
        elif name == "itemknn":
            rows[name] = tune("k", knn_grid, baselines.ItemKNN(data.train).factory, data,
                              started)
        elif name == "ease":
            rows[name] = tune("lambda", ease_grid, baselines.Ease(data.train).factory, data,
                              started)
        else:
            raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    return rows
