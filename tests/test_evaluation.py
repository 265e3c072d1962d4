"""The shared evaluation protocol: splits, tasks, metrics, baselines and the served paths.

Synthetic data only; these tests assert the protocol, never the ml-1m numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from movierec.data.movielens import AGE_BUCKET_YEARS, MovieLens
from movierec.data.source import load_dataset
from movierec.data.splits import make_split, recbole_cuts, training_ratings
from movierec.data.synthetic import generate
from movierec.errors import DataError
from movierec.evaluation import baselines, metrics, protocols, runner
from movierec.evaluation.ranking import RankingTask, evaluate, make_task
from movierec.models import registry
from movierec.models.user_input import newest_history

DATASET = "synthetic-300x400-s0"


@pytest.fixture(scope="module")
def data() -> MovieLens:
    return generate(120, 150, 30, seed=3)


@pytest.fixture(scope="module")
def cold(data) -> protocols.ProtocolData:
    return protocols.build(data, "cold_start", seed=11)


def _ids(matrix: sparse.csr_matrix, user_ids: np.ndarray) -> set[int]:
    return set(user_ids[np.diff(matrix.indptr) > 0].tolist())


def test_users_80_10_10_users_are_disjoint_and_seeded(data) -> None:
    split = make_split(data, "users_80_10_10", seed=11)
    users = [set(p.user_id) for p in (split.train, split.valid, split.test)]
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert [len(u) for u in users] == recbole_cuts(data.ratings.user_id.nunique())
    assert sum(len(p) for p in (split.train, split.valid, split.test)) == len(data.ratings)
    again, other = make_split(data, "users_80_10_10", seed=11), make_split(data, "users_80_10_10",
                                                                           seed=12)
    assert set(again.test.user_id) == users[2] and set(other.test.user_id) != users[2]


def test_training_ratings_hold_nothing_back(data) -> None:
    recbole = make_split(data, "recbole_811", seed=5)
    allowed = training_ratings(data, recbole)
    held = recbole.valid.index.union(recbole.test.index)
    assert not allowed.index.intersection(held).size
    assert len(allowed) == len(data.ratings) - len(held)
    assert (allowed.rating < 3).any()  # low ratings are allowed, never relevant
    users = make_split(data, "users_80_10_10", seed=5)
    assert set(training_ratings(data, users).user_id) == set(users.train.user_id)
    random = make_split(data, "random_90_10", seed=5)
    assert training_ratings(data, random).index.equals(random.train.index)


def test_given_and_targets_follow_time_then_file_order() -> None:
    frame = pd.DataFrame({"user_id": [1] * 8 + [2] * 6,
                          "movie_id": [10, 11, 12, 13, 14, 15, 16, 17, 20, 21, 22, 23, 24, 25],
                          "rating": [5, 2, 4, 3, 5, 4, 3, 1, 5, 5, 5, 5, 5, 2],
                          "timestamp": [9, 1, 1, 2, 3, 3, 5, 0, 1, 2, 3, 4, 5, 6]})
    given, targets = protocols.given_and_targets(frame, given=5)
    # user 1: relevant by (time, file order) 12, 13, 14, 15, 16, 10 -> 5 given, 10 target;
    # user 2: only 5 relevant ratings -> skipped entirely
    assert given.movie_id.tolist() == [12, 13, 14, 15, 16]
    assert targets.movie_id.tolist() == [10]
    assert given.rating.tolist() == [4, 3, 5, 4, 3]


def test_cold_start_tasks_given_five_masked_and_users_unseen(data, cold) -> None:
    split = cold.split
    train_users = set(split.train.user_id)
    for task, part in ((cold.valid, split.valid), (cold.test, split.test)):
        evaluated = set(task.user_ids[task.rows].tolist())
        assert evaluated <= set(part.user_id) and not evaluated & train_users
        assert (np.diff(task.history[task.rows].indptr) == protocols.GIVEN).all()
        assert (task.history != task.exclude).nnz == 0
        given, targets = protocols.given_and_targets(part)
        assert task.relevant.nnz == len(targets) and task.history.nnz == len(given)
        assert set(task.history.data) <= {3.0, 4.0, 5.0}  # the given movies keep their stars
        assert task.history.multiply(task.relevant).nnz == 0
    assert _ids(cold.train, cold.user_ids) <= train_users
    assert not _ids(cold.valid.relevant, cold.user_ids) & _ids(cold.test.relevant, cold.user_ids)


def test_recbole_tasks_mask_train_then_train_and_valid(data) -> None:
    built = protocols.build(data, "recbole", seed=5)
    split = built.split
    assert built.valid.history.nnz == len(split.train) == built.train.nnz
    assert built.test.exclude.nnz == len(split.train) + len(split.valid)
    assert built.test.history.nnz == len(split.train)


def test_metrics_by_hand() -> None:
    ranked = np.array([[0, 1], [1, 2]])
    assert metrics.coverage(ranked, num_items=4) == pytest.approx(3 / 4)
    pct = metrics.popularity_percentiles(np.array([5, 0, 5, 2]))
    np.testing.assert_allclose(pct, [100, 25, 100, 50])
    assert metrics.mean_popularity(ranked, pct) == pytest.approx((100 + 25 + 25 + 100) / 4)


def test_evaluate_tiny_task_by_hand() -> None:
    users, movies = np.array([1, 2]), np.array([10, 20, 30, 40])
    rows = lambda *r: pd.DataFrame(r, columns=["user_id", "movie_id", "rating"])  # noqa: E731
    task = make_task(users, movies, [rows((1, 10, 5))], [rows((1, 10, 5))],
                     rows((1, 20, 4), (1, 40, 3), (2, 30, 5)),
                     percentiles=np.array([100.0, 75.0, 50.0, 25.0]))
    scores = np.array([[9.0, 1.0, 3.0, 2.0], [1.0, 2.0, 4.0, 3.0]])
    result = evaluate(lambda r: scores[r], task, ks=(2,))
    # user 1 (10 masked): top 2 = 30, 40 -> 1 of 2 relevant at rank 2; user 2: 30, 40 -> hit at 1
    assert result["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    idcg1 = 1 + 1 / np.log2(3)
    assert result["ndcg@2"] == pytest.approx(((1 / np.log2(3)) / idcg1 + 1.0) / 2)
    assert result["coverage@2"] == pytest.approx(2 / 4)
    assert result["popularity@2"] == pytest.approx((50 + 25 + 50 + 25) / 4)


def test_ease_is_the_constrained_ridge_solution() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    lam = 3.0
    b = baselines.Ease(sparse.csr_matrix(x)).weights(lam)
    for j in range(6):
        others = [i for i in range(6) if i != j]
        xo = x[:, others]
        expected = np.linalg.solve(xo.T @ xo + lam * np.eye(5), xo.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], expected, rtol=1e-4, atol=1e-5)
        assert b[j, j] == 0


def test_itemknn_keeps_k_neighbours_per_item() -> None:
    x = sparse.csr_matrix((np.random.default_rng(1).random((30, 8)) < 0.5).astype(np.float32))
    knn = baselines.ItemKNN(x)
    pruned = knn.pruned(3)
    assert ((pruned > 0).sum(axis=0) <= 3).all()
    column = knn.sim[:, 0]
    assert set(np.flatnonzero(pruned[:, 0])) == set(np.argsort(-column)[:3])


def test_grouppop_ranks_within_the_cell_and_backs_off() -> None:
    train = sparse.csr_matrix(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0]],
                                       dtype=np.float32))
    cells = np.array([0, 0, 1, 1, 1, -1])
    train = sparse.vstack([train, sparse.csr_matrix((1, 3))]).tocsr()
    scorer = baselines.group_pop(train, cells)(None)
    top = scorer(np.array([0, 2, 5])).argmax(axis=1)
    assert top.tolist() == [0, 1, 1]  # cell 0 likes item 0; cell 1 and no cell -> MostPop (1)


def test_baselines_tuned_on_valid_only(cold, monkeypatch) -> None:
    seen: list[str] = []
    real = runner.evaluate

    def spy(scorer, task, ks=(10, 20)):
        seen.append("valid" if task is cold.valid else "test")
        return real(scorer, task, ks)
    monkeypatch.setattr(runner, "evaluate", spy)
    rows = runner.run_baselines(cold, ["itemknn", "ease"], knn_grid=(5, 20),
                                ease_grid=(10.0, 100.0, 1000.0))
    assert seen.count("test") == 2  # one final test evaluation per tuned baseline
    for name in ("itemknn", "ease"):
        grid = rows[name]["params"]["grid"]
        chosen = [k for k in rows[name]["params"] if k != "grid"][0]
        best = max(grid.values())
        assert grid[str(rows[name]["params"][chosen])] == best
        assert rows[name]["valid"]["recall@10"] == pytest.approx(best, abs=1e-5)


def test_mostpop_counts_the_protocol_training_interactions(cold) -> None:
    scores = baselines.most_pop(cold.train)(cold.test)(np.array([0]))[0]
    train = protocols.relevant(cold.split.train)
    expected = train.groupby("movie_id").size().reindex(cold.movie_ids, fill_value=0)
    np.testing.assert_array_equal(scores, expected.to_numpy())


def test_newest_history_matches_the_catalog_order() -> None:
    class R:
        def __init__(self, movie_id, rating, timestamp):
            self.movie_id, self.rating, self.timestamp = movie_id, rating, timestamp
    items = [R(5, 3, 10), R(9, 4, 30), R(2, 5, 30), R(1, 5, 20)]
    assert newest_history(items, 3) == [9, 2, 1]      # one second's ratings: as listed
    from movierec.data.movielens import age_bucket
    assert all(age_bucket(years) == code for code, years in AGE_BUCKET_YEARS.items())


# --- the served paths on tiny trained artifacts -------------------------------------------


def _train(model: str, split: str, root: Path) -> Path:
    from movierec.models.cli import train_main
    extra = ["--max-epochs", "2", *(["--dim", "16"] if model != "fusion" else [])]
    argv = [model, "--dataset", DATASET, "--split", split, "--artifacts", str(root),
            "--no-progress", "--checkpoint-dir", str(root / f"ckpt-{model}"), *extra]
    assert train_main(argv) == 0
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("paddle")
    roots = {}
    for protocol, split in (("recbole", "recbole_811"), ("cold_start", "users_80_10_10")):
        root = tmp_path_factory.mktemp(protocol)
        for model in registry.NAMES:
            _train(model, split, root)
        roots[protocol] = root
    return roots


def _columns(ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], movie_ids)]


@pytest.mark.parametrize("protocol", ["recbole", "cold_start"])
def test_evaluate_serving_end_to_end(protocol, trained, tmp_path, capsys) -> None:
    from movierec.models.cli import evaluate_main
    out = tmp_path / "out"
    argv = ["serving", "--dataset", DATASET, "--protocol", protocol, "--artifacts",
            str(trained[protocol]), "--out", str(out), "--json"]
    assert evaluate_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    paths = {"recbole": {"profile", "profile_user", "liked", "user_id", "next"},
             "cold_start": {"profile", "liked", "user_id", "next"}}[protocol]
    assert set(report["rows"]) == paths | set(runner.BASELINES)
    for row in report["rows"].values():
        assert 0 <= row["recall@10"] <= 1 and 0 < row["coverage@10"] <= 1
    assert {p.name for p in out.iterdir()} == {f"serving-{protocol}.{e}"
                                               for e in ("json", "md", "png")}


def test_serving_refuses_artifacts_of_another_split(trained) -> None:
    from movierec.models.cli import evaluate_main
    with pytest.raises(DataError, match="users_80_10_10"):
        evaluate_main(["serving", "--dataset", DATASET, "--protocol", "cold_start",
                       "--artifacts", str(trained["recbole"])])


def test_served_path_scores_equal_the_encoders(trained) -> None:
    """Each path is scored by the model the registry routes its input to, through that
    encoder's public API (what the embedder calls), against its exported item vectors."""
    from movierec.evaluation import artifacts
    from movierec.evaluation.serving import PathScorers, ServedModels
    from movierec.models.artifact import read_item_vectors
    from movierec.models.fusion.inference import Profile
    from movierec.models.user_input import History, embed_user_history

    data = load_dataset(DATASET)
    root = trained["recbole"]
    paths = {m: artifacts.resolve(root, m) for m in registry.NAMES}
    built = protocols.build(data, "recbole", seed=2026)
    models = ServedModels.load(paths, built.movie_ids, history_limit=7)
    factories = PathScorers(models, built, data.users).factories()
    task: RankingTask = built.test

    def served(kind: str):
        name = registry.for_input(kind).name
        ids, vectors = read_item_vectors(paths[name])
        return (registry.encoder_class(name).load(paths[name]), vectors,
                _columns(ids, built.movie_ids))

    (fusion, f_vec, f_cols), (liker, l_vec, l_cols), (historian, h_vec, h_cols), \
        (sequencer, s_vec, s_cols) = (served(kind) for kind in ("profile", "liked", "history",
                                                               "sequence"))
    users = data.users.set_index("user_id")
    for r in task.rows[:4]:
        uid = int(task.user_ids[r])
        u = users.loc[uid]
        profile = Profile(AGE_BUCKET_YEARS[int(u.age)], u.gender, int(u.occupation))
        expected = f_vec @ fusion.encode([profile])[0]
        np.testing.assert_allclose(factories["profile"](task)(np.array([r]))[0],
                                   expected[f_cols], rtol=1e-5, atol=1e-6)
        frame = task.history_frame[task.history_frame.user_id == uid]
        history = History.from_rows(frame.itertuples(index=False))
        oldest_first = history.newest(len(frame)).movie_ids[::-1].tolist()
        liked = liker.embed_liked(oldest_first)
        got = factories["liked"](task)(np.array([r]))[0]
        finite = np.isfinite(got)
        assert not finite[np.searchsorted(built.movie_ids, frame.movie_id)].any()
        np.testing.assert_allclose(got[finite], (l_vec @ liked)[l_cols][finite], rtol=1e-5,
                                   atol=1e-5)
        vector, used = embed_user_history(historian, history, 7)
        assert len(used) == min(7, len(frame))
        got = factories["user_id"](task)(np.array([r]))[0]
        np.testing.assert_allclose(got[finite], (h_vec @ vector)[h_cols][finite], rtol=1e-5,
                                   atol=1e-5)
        vector, _ = embed_user_history(sequencer, history, 7)
        got = factories["next"](task)(np.array([r]))[0]
        np.testing.assert_allclose(got[finite], (s_vec @ vector)[s_cols][finite], rtol=1e-5,
                                   atol=1e-5)


def test_leave_last_out_still_ranks_the_last_item(data) -> None:
    built = protocols.build(data, "leave_last_out", seed=5)
    split = built.split
    assert (np.diff(built.test.relevant.indptr)[built.test.rows] == 1).all()
    assert built.test.history.nnz == len(split.train) + len(split.valid)
    assert built.valid.exclude.nnz == len(split.train)
    assert built.train.nnz == len(split.train)  # every rating is an interaction here


def test_time_90_trains_before_t_and_splits_each_later_history_in_time(data) -> None:
    split = make_split(data, "time_90")
    ratings = data.ratings
    assert len(split.train) == round(0.9 * len(ratings))
    assert split.train["timestamp"].max() <= min(split.valid["timestamp"].min(),
                                                 split.test["timestamp"].min())
    for user, later in pd.concat([split.valid, split.test]).groupby("user_id"):
        valid = split.valid[split.valid.user_id == user]
        test = split.test[split.test.user_id == user]
        assert len(valid) == len(later) // 2 and len(test) == len(later) - len(later) // 2
        if len(valid):
            assert valid["timestamp"].max() <= test["timestamp"].min()


def test_global_time_scores_cold_users_apart(data) -> None:
    built = protocols.build(data, "global_time", seed=0)
    split = built.split
    warm = set(split.train["user_id"])
    assert _ids(built.test.relevant, built.user_ids) <= warm
    assert _ids(built.valid.relevant, built.user_ids) <= warm
    cold = _ids(built.cold.relevant, built.user_ids)
    assert cold and not cold & warm
    assert _ids(built.cold.history, built.user_ids) <= cold       # only their own given part
    row = runner.measure(baselines.most_pop(built.train), built)
    assert set(row["cold"]) >= {"recall@10", "ndcg@10"} and row["cold"]["users"] == len(
        cold & _ids(built.cold.relevant, built.user_ids))


def test_recent_pop_counts_the_last_days_before_the_newest_training_rating() -> None:
    day = 86_400
    frame = pd.DataFrame({"user_id": [1, 2, 3, 4, 5], "movie_id": [10, 10, 10, 20, 30],
                          "rating": [5] * 5, "timestamp": [0, day, 2 * day, 100 * day,
                                                           99 * day]})
    factory = baselines.recent_pop(frame, np.array([10, 20, 30, 40]), days=30)
    scores = factory(None)(np.array([0, 1]))
    assert scores.shape == (2, 4)
    order = np.argsort(-scores[0]).tolist()
    assert order[:2] == [1, 2] or order[:2] == [2, 1]   # the two recent movies first
    assert scores[0][0] > scores[0][3]                     # old popularity breaks ties
