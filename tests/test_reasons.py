"""Reasons a person believes (issue 33): the co-liked table each model version carries.

The examples are the ones users saw go wrong: *The Empire Strikes Back* "because you
liked Schindler's List" for a user who loved Star Wars IV and VI; *The Godfather: Part
II* because of *Mission: Impossible* for a user who liked *The Godfather*; *Back to the
Future Part II* because of *Crocodile Dundee*. The ratings below are made so that the
unrelated film is the most co-liked one (everybody likes it), which is exactly when a
rule that ignores series names the wrong film.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from movierec.models import reasons

MOVIES = pd.DataFrame({
    "movie_id": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    "title": ["Star Wars: Episode IV - A New Hope", "Star Wars: Episode V - The Empire "
              "Strikes Back", "Star Wars: Episode VI - Return of the Jedi",
              "Schindler's List", "Godfather, The", "Godfather: Part II, The",
              "Mission: Impossible", "Back to the Future", "Back to the Future Part II",
              "Crocodile Dundee", "Nobody Liked This"],
})


def ratings() -> pd.DataFrame:
    """Users who like everything popular (4, 7, 10 are liked by all), and smaller groups
    who like the films of one series; movie 11 is only ever rated low."""
    rows = []
    for user in range(1, 41):
        rows += [(user, m, 5) for m in (4, 7, 10)]
        if user <= 12:
            rows += [(user, m, 4) for m in (1, 2, 3)]
        elif user <= 20:
            rows += [(user, m, 5) for m in (5, 6)]
        elif user <= 28:
            rows += [(user, m, 4) for m in (8, 9)]
        rows.append((user, 11, 2))
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"])


def table() -> dict[int, list[int]]:
    rows = reasons.for_movies(MOVIES, ratings(), k=5)
    return {int(m): [int(x) for x in row if x] for m, row in zip(MOVIES["movie_id"], rows,
                                                                  strict=True)}


def test_series_keys_from_titles() -> None:
    assert reasons.series_key("Godfather: Part II, The") == reasons.series_key("Godfather, The")
    assert reasons.series_key("Back to the Future Part III") == "back to the future"
    assert reasons.series_key("Star Wars: Episode I - The Phantom Menace") == "star wars"
    assert reasons.series_key("Toy Story 2") == reasons.series_key("Toy Story")
    assert reasons.series_key("Karate Kid, Part II, The") == "karate kid"
    assert reasons.series_key("Alien³") == "alien"
    assert reasons.series_key("Rocky Horror Picture Show, The") != reasons.series_key("Rocky")
    numbers = reasons.series_of(MOVIES["title"].tolist())
    assert numbers[0] == numbers[1] == numbers[2] >= 0 and numbers[3] == -1


def test_a_sequel_is_explained_by_its_series_even_when_a_hit_is_more_co_liked() -> None:
    rows = table()
    # Star Wars V: its own series first, although Schindler's List (4) is liked by all
    assert rows[2][:2] == [1, 3] and 4 in rows[2]
    liked = {1, 3, 4}                                  # user 42: IV, VI, Schindler's List
    assert reasons.pick_reason(rows[2], liked) in (1, 3)
    assert reasons.pick_reason(rows[6], {5, 7}) == 5   # Part II: The Godfather, not M:I
    assert reasons.pick_reason(rows[9], {8, 10}) == 8  # BTTF II: BTTF, not Crocodile Dundee


def test_rows_follow_co_rating_and_unliked_movies_explain_nothing() -> None:
    rows = table()
    assert rows[4][:2] in ([7, 10], [10, 7])           # the popular trio co-occurs most
    assert 11 not in {m for row in rows.values() for m in row}   # never liked
    assert rows[11] == []
    assert reasons.pick_reason(rows[4], {11}) == 0     # nothing related: no title named


def test_cosine_order_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"user_id": rng.integers(1, 60, 900),
                          "movie_id": rng.integers(1, 40, 900),
                          "rating": rng.integers(1, 6, 900)}).drop_duplicates(
                              ["user_id", "movie_id"])
    movies = pd.DataFrame({"movie_id": np.arange(1, 40), "title": [f"M{i}" for i in range(39)]})
    rows = reasons.for_movies(movies, frame, k=38)
    liked = frame[frame["rating"] >= 4]
    sets = {m: set(g["user_id"]) for m, g in liked.groupby("movie_id")}
    for movie in (1, 7, 20):
        cos = {o: len(sets.get(movie, set()) & sets[o]) /
               np.sqrt(len(sets.get(movie, ())) * len(sets[o]) or 1)
               for o in sets if o != movie}
        expected = sorted((o for o in cos if cos[o] > 0), key=lambda o: -cos[o])
        got = [int(x) for x in rows[movie - 1] if x]
        assert [round(cos[o], 6) for o in got] == [round(cos[o], 6) for o in expected]
