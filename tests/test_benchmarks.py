"""The serving regression guard compares ratios to echo, not raw timings."""

from __future__ import annotations

import json

from benchmarks import serving_check


def _report(echo: float, miss: float) -> dict:
    return {"rows": [{"scenario": "echo", "concurrency": 8, "rps": echo},
                     {"scenario": "miss user", "concurrency": 8, "rps": miss}]}


def test_a_drop_relative_to_echo_is_reported_and_machine_speed_is_not(tmp_path) -> None:
    old = _report(2000, 500)
    assert serving_check.compare(_report(1000, 250), old, 0.2) == []   # slower box, same ratio
    drops = serving_check.compare(_report(2000, 350), old, 0.2)
    assert drops == ["miss user at 8 in flight: 17.5% of echo, was 25.0% (-30%)"]
    new, base = tmp_path / "new.json", tmp_path / "base.json"
    new.write_text(json.dumps(_report(2000, 350)))
    base.write_text(json.dumps(old))
    assert serving_check.main([str(new), "--baseline", str(base)]) == 0
    assert serving_check.main([str(new), "--baseline", str(base), "--strict"]) == 1


def test_per_user_metrics_average_to_the_evaluation_figures() -> None:
    """The bootstrap's per-user NDCG/Recall are the evaluation's, user by user."""
    import numpy as np
    from scipy import sparse

    from benchmarks.pinsage_vs_ease import per_user
    from movierec.evaluation.ranking import RankingTask, evaluate

    rng = np.random.default_rng(1)
    users, movies = 40, 60
    history = sparse.csr_matrix((rng.random((users, movies)) < 0.2).astype(np.float32))
    relevant = sparse.csr_matrix(((rng.random((users, movies)) < 0.1)
                                  & (history.toarray() == 0)).astype(np.float32))
    task = RankingTask(np.arange(users), np.arange(movies), history, history, relevant)
    table = rng.normal(size=(users, movies)).astype(np.float32)

    def scorer(rows):
        return table[rows]
    ndcg, recall = per_user(scorer, task)
    expected = evaluate(scorer, task)
    assert len(ndcg) == len(task.rows) > 30
    assert abs(ndcg.mean() - expected["ndcg@10"]) < 1e-6
    assert abs(recall.mean() - expected["recall@10"]) < 1e-6
