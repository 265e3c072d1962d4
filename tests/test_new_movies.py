"""The new-movie protocol end to end on synthetic data: movies held out of training
entirely, both models trained without them, the held-out movies embedded by the
artifacts' content maps and ranked for the users who liked them, beside baselines."""

from __future__ import annotations

import json
from pathlib import Path

from movierec import cli
from movierec.data.source import load_dataset
from movierec.data.splits import HELD_OUT
from movierec.models import registry

DATASET = "synthetic-200x300x30-s12"


def test_held_out_movies_are_ranked_from_their_content(tmp_path: Path, capsys) -> None:
    held_dir = tmp_path / "held"
    assert cli.main(["data", "holdout-movies", "--dataset", DATASET, "--fraction", "0.1",
                     "--seed", "3", "--out", str(held_dir)]) == 0
    held = json.loads((held_dir / HELD_OUT).read_text())["movie_ids"]
    kept = load_dataset("ml-1m", held_dir)          # the layout `--data-dir` reads
    assert not set(held) & set(kept.movies["movie_id"])
    assert not set(held) & set(kept.ratings["movie_id"])
    assert len(held) == round(0.1 * load_dataset(DATASET).ratings["movie_id"].nunique())
    for model in registry.NAMES:
        extra = [] if model == "fusion" else ["--dim", "16"]
        assert cli.main(["train", model, "--dataset", "ml-1m", "--data-dir", str(held_dir),
                         "--artifacts", str(tmp_path / "artifacts"), "--max-epochs", "2",
                         "--no-progress", "--checkpoint-dir", str(tmp_path / f"c-{model}"),
                         *extra]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "new-movies", "--dataset", DATASET, "--holdout",
                     str(held_dir), "--artifacts", str(tmp_path / "artifacts"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["held_out_movies"] == len(held) and result["users"] > 0
    assert set(result["rows"]) == {*registry.NAMES, "genre_pop", "user_genre", "random"}
    for row in result["rows"].values():
        assert 0 <= row["recall@10"] <= 1 and 0 <= row["ndcg@10"] <= 1
        assert row["users"] == result["users"]
