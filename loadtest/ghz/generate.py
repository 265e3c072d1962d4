"""Writes the ghz configs in this folder from MovieLens 1M (and a PinSage artifact).

Each config drives one RPC with an array of realistic requests, which ghz sends in
round-robin: profiles over every age bucket, gender and occupation; liked lists and
ratings of real ml-1m users (these few dozen requests repeat: after the first round they
are cache hits); ``*_miss`` configs of 2,000 requests with pairwise distinct cache keys,
each sent once (``total`` = their number), for honest cache misses, and their open-loop
variants in ``open_loop/`` (``rps`` set, ``total`` = rps × 20 s distinct requests, made
by the same builders); user ids across
1..6040; the most-rated movies for SimilarMovies and their title words for
SearchMovies; and, for the retriever's Search, the PinSage vectors of those movies (so
the query dimension is the model's).

    python loadtest/ghz/generate.py --data-dir ../shared/data/ml-1m \\
        --artifact artifacts/pinsage/<version>

Without ``--artifact`` the retriever config is left as it is. The output is
deterministic: the same data (and artifact) give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.movielens import MovieLens
from movierec.data.source import load_dataset

HERE = Path(__file__).resolve().parent
GATEWAY = "movierec.gateway.v1.Gateway"
RETRIEVER = "movierec.retriever.v1.Retriever"
SEED = 2026
# One age in years per ml-1m bucket (1, 18, 25, 35, 45, 50, 56); the gateway maps it back.
AGES = (16, 21, 30, 40, 47, 53, 62)
OCCUPATIONS = 21
Request = dict[str, object]


def base_config(name: str, call: str, port: int, total: int, concurrency: int) -> dict:
    """ghz settings shared by every scenario; `ghz --config FILE [HOST]` overrides host."""
    return {"name": name, "call": call, "host": f"localhost:{port}", "insecure": True,
            "total": total, "concurrency": concurrency, "connections": 4, "timeout": "5s",
            "connect-timeout": "10s"}


def popular_movies(data: MovieLens, count: int) -> pd.DataFrame:
    """The ``count`` most-rated movies, most rated first (ties by id)."""
    counts = data.ratings.groupby("movie_id").size().rename("ratings").reset_index()
    ranked = counts.sort_values(["ratings", "movie_id"], ascending=[False, True]).head(count)
    return ranked.merge(data.movies, on="movie_id", how="left")


def profile_requests(data: MovieLens) -> list[Request]:
    """42 profiles: every occupation with both genders, the age buckets in turn; every
    third names a real user of that profile (the fusion model's id tower)."""
    users = data.users.set_index(["gender", "age", "occupation"])["user_id"].sort_index()
    buckets = (1, 18, 25, 35, 45, 50, 56)
    requests = []
    for i in range(2 * OCCUPATIONS):
        gender, occupation, slot = "MF"[i % 2], i % OCCUPATIONS, i % len(AGES)
        profile: Request = {"age": AGES[slot], "gender": gender, "occupation": occupation}
        key = (gender, buckets[slot], occupation)
        if i % 3 == 0 and key in users.index:
            profile["userId"] = int(np.atleast_1d(users.loc[key])[0])
        request: Request = {"profile": profile, "topK": 10 if i % 2 else 20}
        if i % 4 == 3:
            request["genres"] = [data.genres[i % len(data.genres)]]
        requests.append(request)
    return requests


def sample_users(data: MovieLens, count: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    ids = np.sort(data.users["user_id"].to_numpy())
    return np.sort(rng.choice(ids, size=count, replace=False))


def liked_requests(data: MovieLens) -> list[Request]:
    """40 liked lists: a real user's 4- and 5-star movies (the 3-8 most rated of them);
    every other list carries the stars as weights."""
    popularity = data.ratings.groupby("movie_id").size()
    liked = data.ratings[data.ratings["rating"] >= 4]
    requests = []
    for n, user in enumerate(sample_users(data, 40)):
        mine = liked[liked["user_id"] == user].copy()
        mine["popularity"] = mine["movie_id"].map(popularity)
        mine = mine.sort_values(["popularity", "movie_id"], ascending=[False, True])
        mine = mine.head(3 + n % 6)
        request: Request = {"liked": {"movieIds": [int(m) for m in mine["movie_id"]]},
                            "topK": 10}
        if n % 2:
            request["liked"]["weights"] = [float(r) for r in mine["rating"]]
        requests.append(request)
    return requests


def onboarding_requests(data: MovieLens) -> list[Request]:
    """40 sign-ups: a real user's profile with their first 0-5 liked (4-5 star) movies in
    time order (``Recommend{profile_and_liked}``, each list one click longer)."""
    users = data.users.set_index("user_id")
    years = dict(zip((1, 18, 25, 35, 45, 50, 56), AGES, strict=True))
    liked = data.ratings[data.ratings["rating"] >= 4].sort_values(
        ["user_id", "timestamp", "movie_id"])
    requests = []
    for n, user in enumerate(sample_users(data, 40)):
        row = users.loc[user]
        first = liked[liked["user_id"] == user]["movie_id"].head(n % 6)
        requests.append({"profileAndLiked": {
            "profile": {"age": years[int(row.age)], "gender": row.gender,
                        "occupation": int(row.occupation)},
            "liked": {"movieIds": [int(m) for m in first]}}, "topK": 10})
    return requests


def user_requests(data: MovieLens) -> list[Request]:
    """60 user ids spread over 1..6040; every other one also shows the movies already rated."""
    ids = np.unique(np.linspace(1, int(data.users["user_id"].max()), 60).round().astype(int))
    return [{"userId": int(u), "topK": 10, "includeSeen": bool(n % 2 == 1)}
            for n, u in enumerate(ids)]


MISSES = 2000  # requests per miss config, each sent once (total = len(data))


def profile_miss_requests(data: MovieLens, n: int = MISSES,
                          seed: int = SEED) -> list[Request]:
    """``n`` profiles with pairwise distinct cache keys: distinct (age in years 1-120,
    gender, occupation) cells in a seeded order."""
    rng = np.random.default_rng(seed)
    cells = [(a, g, o) for a in range(1, 121) for g in "MF" for o in range(OCCUPATIONS)]
    return [{"profile": {"age": cells[i][0], "gender": cells[i][1],
                         "occupation": cells[i][2]}, "topK": 10}
            for i in rng.permutation(len(cells))[:n]]


def liked_miss_requests(data: MovieLens, n: int = MISSES,
                        seed: int = SEED) -> list[Request]:
    """``n`` distinct triples of the 600 most rated movies."""
    rng = np.random.default_rng(seed)
    popular = data.ratings["movie_id"].value_counts().index[:600].to_numpy()
    seen: set[tuple[int, ...]] = set()
    out: list[Request] = []
    while len(out) < n:
        liked = tuple(sorted(int(x) for x in rng.choice(popular, 3, replace=False)))
        if liked not in seen:
            seen.add(liked)
            out.append({"liked": {"movieIds": list(liked)}, "topK": 10})
    return out


def user_miss_requests(data: MovieLens, n: int = MISSES,
                       seed: int = SEED) -> list[Request]:
    """``n`` distinct user ids in a seeded order."""
    users = np.random.default_rng(seed).permutation(data.users["user_id"].to_numpy())[:n]
    return [{"userId": int(u), "topK": 10} for u in users]


def similar_requests(data: MovieLens) -> list[Request]:
    """The 40 most-rated movies, both models in turn; every fifth keeps its first genre."""
    requests = []
    for n, movie in enumerate(popular_movies(data, 40).itertuples()):
        request: Request = {"movieId": int(movie.movie_id), "topK": 10,
                            "model": "pinsage" if n % 2 == 0 else "fusion"}
        if n % 5 == 4 and movie.genres:
            request["genres"] = [movie.genres[0]]
        requests.append(request)
    return requests


STOPWORDS = {"the", "and", "of", "in", "for", "from", "with"}


def title_query(title: str, words: int, typo: bool = False) -> str:
    """What a person types for a title: its first ``words`` words of three letters or
    more, lower case; with ``typo`` the first word loses its middle letter."""
    tokens = [t for t in re.findall(r"[a-z0-9']+", title.lower())
              if len(t) >= 3 and t not in STOPWORDS] or [title.lower()]
    tokens = tokens[:words]
    if typo and len(tokens[0]) >= 6:
        middle = len(tokens[0]) // 2
        tokens[0] = tokens[0][:middle] + tokens[0][middle + 1:]
    return " ".join(tokens)


def search_requests(data: MovieLens) -> list[Request]:
    """40 title searches built from the most-rated titles (a few with a typo), some with
    genre or year filters."""
    requests = []
    for n, movie in enumerate(popular_movies(data, 40).itertuples()):
        request: Request = {"query": title_query(movie.title, 1 + n % 2, typo=n % 7 == 6),
                            "limit": 10 if n % 2 else 20}
        if n % 4 == 1 and pd.notna(movie.year):
            decade = int(movie.year) // 10 * 10
            request["years"] = {"minYear": decade, "maxYear": decade + 9}
        if n % 4 == 3 and movie.genres:
            request["genres"] = [movie.genres[-1]]
        requests.append(request)
    return requests


def rating_requests(data: MovieLens) -> list[Request]:
    """60 real (user, movie, stars) triples from ratings.dat: the writes are idempotent."""
    rows = data.ratings.sample(n=60, random_state=SEED).sort_values(["user_id", "movie_id"])
    return [{"userId": int(r.user_id), "movieId": int(r.movie_id), "rating": int(r.rating)}
            for r in rows.itertuples()]


def movie_upsert_requests(data: MovieLens) -> list[Request]:
    """40 most-rated movies written back as they are (with their ids): idempotent, so the
    catalog, the cache and the vectors are left unchanged while the write path is timed."""
    requests = []
    for movie in popular_movies(data, 40).itertuples():
        item: Request = {"movieId": int(movie.movie_id), "title": movie.title,
                         "genres": list(movie.genres)}
        if movie.year == movie.year and movie.year:   # not NaN, not unknown
            item["year"] = int(movie.year)
        requests.append({"movies": [item]})
    return requests


def user_upsert_requests(data: MovieLens) -> list[Request]:
    """40 real users' own profiles written back (age: the bucket's representative years,
    which map back to the same bucket): the profiles do not change. DeleteUser has no
    config: a load test must never delete users (tests/test_gateway_writes.py covers it)."""
    users = data.users.set_index("user_id").loc[sample_users(data, 40)]
    years = dict(zip((1, 18, 25, 35, 45, 50, 56), AGES, strict=True))
    return [{"userId": int(uid), "age": years[int(row.age)], "gender": row.gender,
             "occupation": int(row.occupation)} for uid, row in users.iterrows()]


def popular_list_requests(data: MovieLens) -> list[Request]:
    """The popular list unfiltered at three lengths, then for every genre in turn."""
    genres = sorted({g for gs in data.movies["genres"] for g in gs})
    return [*({"limit": n} for n in (12, 24, 48)),
            *({"genres": [g], "limit": 24} for g in genres)]


def genre_list_requests(data: MovieLens) -> list[Request]:
    """ListGenres takes no arguments."""
    return [{}]


def search_vector_requests(data: MovieLens, ids: np.ndarray,
                           vectors: np.ndarray) -> list[Request]:
    """The PinSage vectors of the 20 most-rated movies as queries, each excluding itself."""
    row = {int(m): i for i, m in enumerate(ids)}
    requests = []
    for n, movie in enumerate(popular_movies(data, 20).itertuples()):
        vector = vectors[row[int(movie.movie_id)]]
        request: Request = {"model": "pinsage", "topK": 10,
                            "vector": [round(float(x), 5) for x in vector],
                            "excludeIds": [int(movie.movie_id)]}
        if n % 4 == 3 and movie.genres:
            request["genres"] = [movie.genres[0]]
        requests.append(request)
    return requests


# file name -> (call, port, total, concurrency, requests)
Scenario = tuple[str, int, int, int, Callable[[MovieLens], list[Request]]]
SCENARIOS: dict[str, Scenario] = {
    "gateway_recommend_profile": (f"{GATEWAY}.Recommend", 50050, 2000, 20, profile_requests),
    "gateway_recommend_liked": (f"{GATEWAY}.Recommend", 50050, 2000, 20, liked_requests),
    "gateway_recommend_user": (f"{GATEWAY}.Recommend", 50050, 2000, 20, user_requests),
    "gateway_recommend_onboarding": (f"{GATEWAY}.Recommend", 50050, 2000, 20,
                                     onboarding_requests),
    "gateway_recommend_profile_miss": (f"{GATEWAY}.Recommend", 50050, MISSES, 8,
                                       profile_miss_requests),
    "gateway_recommend_liked_miss": (f"{GATEWAY}.Recommend", 50050, MISSES, 8,
                                     liked_miss_requests),
    "gateway_recommend_user_miss": (f"{GATEWAY}.Recommend", 50050, MISSES, 8,
                                    user_miss_requests),
    "gateway_similar_movies": (f"{GATEWAY}.SimilarMovies", 50050, 2000, 20, similar_requests),
    "gateway_search_movies": (f"{GATEWAY}.SearchMovies", 50050, 2000, 20, search_requests),
    "gateway_record_rating": (f"{GATEWAY}.RecordRating", 50050, 600, 10, rating_requests),
    "gateway_upsert_movies": (f"{GATEWAY}.UpsertMovies", 50050, 400, 4, movie_upsert_requests),
    "gateway_upsert_user": (f"{GATEWAY}.UpsertUser", 50050, 400, 4, user_upsert_requests),
    "gateway_list_popular": (f"{GATEWAY}.ListPopular", 50050, 2000, 20, popular_list_requests),
    "gateway_list_genres": (f"{GATEWAY}.ListGenres", 50050, 2000, 20, genre_list_requests),
}


# Open-loop miss runs (loadtest/ghz/open_loop/): kind -> (requests/s, builder). The rates
# are half of each miss kind's capacity at 8 in flight in docs/benchmarks.md (2026-12-02
# 12:55 UTC run: 292 / 211 / 173 req/s, rounded down to 5); give the rate measured on
# your stack with `--rps` (benchmarks/open_loop.py prints it).
OPEN_LOOP_SECONDS = 20
OPEN_LOOP_IN_FLIGHT = 50  # ghz's workers; a cap on calls in flight for `movierec loadtest`
OPEN_LOOP: dict[str, tuple[int, Callable[..., list[Request]]]] = {
    "profile": (145, profile_miss_requests),
    "liked": (105, liked_miss_requests),
    "user": (85, user_miss_requests),
}


def build_open_loop(data: MovieLens) -> dict[str, dict]:
    """The open-loop miss configs, keyed by file stem (written to ``open_loop/``): ``rps``
    and ``rps`` × OPEN_LOOP_SECONDS pairwise distinct requests, ``total`` their number
    (no ``duration``: ghz would then ignore ``total`` and send the data round again)."""
    configs = {}
    for kind, (rps, requests) in OPEN_LOOP.items():
        stem = f"gateway_recommend_{kind}_open"
        total = rps * OPEN_LOOP_SECONDS
        config = base_config(stem, f"{GATEWAY}.Recommend", 50050, total, OPEN_LOOP_IN_FLIGHT)
        config["rps"] = rps
        config["data"] = requests(data, total)
        assert len(config["data"]) == total, (stem, len(config["data"]))
        configs[stem] = config
    return configs


def build(data: MovieLens) -> dict[str, dict]:
    """The gateway configs, keyed by file stem."""
    configs = {}
    for stem, (call, port, total, concurrency, requests) in SCENARIOS.items():
        config = base_config(stem, call, port, total, concurrency)
        config["data"] = requests(data)
        configs[stem] = config
    return configs


def build_retriever(data: MovieLens, artifact: Path) -> dict:
    """The retriever's Search config from a PinSage artifact's item vectors."""
    from movierec.models.artifact import read_item_vectors

    ids, vectors = read_item_vectors(artifact)
    config = base_config("retriever_search", f"{RETRIEVER}.Search", 50052, 5000, 20)
    config["data"] = search_vector_requests(data, ids, vectors)
    return config


SCALAR_ARRAY = re.compile(r"\[\s*((?:[^\[\]{}\s][^\[\]{}]*?)?)\s*\]", re.DOTALL)


def render(config: dict) -> str:
    """Indented JSON with every array of scalars (ids, weights, vectors) on one line."""
    text = json.dumps(config, indent=2, ensure_ascii=False)
    return SCALAR_ARRAY.sub(lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="ml-1m folder (default: MOVIELENS_DIR)")
    parser.add_argument("--artifact", type=Path, help="a PinSage artifact version directory")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    data = load_dataset("ml-1m", args.data_dir)
    configs = build(data)
    if args.artifact:
        configs["retriever_search"] = build_retriever(data, args.artifact)
    for stem, config in configs.items():
        (args.out / f"{stem}.json").write_text(render(config))
        print(args.out / f"{stem}.json")
    (args.out / "open_loop").mkdir(exist_ok=True)
    for stem, config in build_open_loop(data).items():
        (args.out / "open_loop" / f"{stem}.json").write_text(render(config))
        print(args.out / "open_loop" / f"{stem}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
