"""The recommendation pipeline behind ``Gateway.Recommend`` and ``SimilarMovies``.

1. The query's kind (:mod:`.kinds`) turns it into a signal: a query vector from the
   embedder (a profile's fusion vector is kept per model version and profile cell), the
   movies the user liked and the movies left out, read in one catalog lookup for a
   user id.
2. One retriever ``Search`` ranks the catalog under the exclusions and genres and
   returns, per hit, the liked movie that co-rating says explains it and the model's
   reading of its score (fusion's stars), both computed where the model's data lives.
3. The page is dressed from the gateway's movie snapshot (:mod:`.movies`) and each item
   gets its reason (:func:`reason`).
No signal (a user without ratings or profile) falls back to popular movies, and the
reason says so. Paging takes consecutive slices of one ranking. The pipeline talks to
the services only through :class:`~movierec.apps.gateway.backends.Downstream`; it does
no model math and imports no model code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from movierec import limits
from movierec.apps.gateway import kinds
from movierec.apps.gateway.backends import Downstream, Found, SearchCall
from movierec.apps.gateway.local import LocalCache
from movierec.apps.gateway.movies import MovieSnapshot
from movierec.apps.gateway.query import Query, Similar
from movierec.common.v1 import common_pb2
from movierec.data.movielens import age_bucket
from movierec.embedder.v1 import embedder_pb2
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.models import registry
from movierec.server.budget import Deadline

POPULAR = "popular"


@dataclass
class Ranking:
    """Candidates of one query, best first, with what is needed to explain them."""

    model: str
    version: str
    hits: list[Found]
    liked: tuple[int, ...] = ()     # what the query liked (reasons may name them)
    context: str = ""               # who it is for, or why it is only popular
    phrase: str = "because you liked"
    unknown: tuple[int, ...] = ()
    reading: str = field(default="")   # the model's reading template (registry)


def title_of(movie: common_pb2.Movie) -> str:
    return f"{movie.title} ({movie.year})" if movie.year else movie.title


class Recommender:
    """Runs the pipeline against a :class:`Downstream` and a movie snapshot."""

    def __init__(self, downstream: Downstream, movies: MovieSnapshot, extra: int = 10,
                 versions: Callable[[], str] = lambda: "") -> None:
        self.down = downstream
        self.movies = movies
        self.extra = extra
        self.versions = versions
        self.profile_cache = LocalCache("profiles", 20_000, 600.0)

    def context(self, deadline: Deadline) -> _Calls:
        return _Calls(self, deadline)

    async def rank(self, q: Query, deadline: Deadline) -> Ranking:
        signal = await kinds.BY_NAME[q.kind].signal(q, self.context(deadline))
        exclude = sorted({*q.exclude, *signal.exclude})
        want = min(limits.MAX_RANK, q.page_start + q.top_k + self.extra)
        if signal.embedding is None:
            popular = await self.down.popular(q.genres, want, exclude, deadline)
            return Ranking(POPULAR, "", [Found(m.movie_id, s) for m, s in popular],
                           context=signal.context or "no personal signal")
        e = signal.embedding
        hits = await self.down.search(SearchCall(
            e.model, want, e.vector, exclude=exclude, genres=q.genres, liked=signal.liked,
            reading=e.reading if e.reading.vector else None, version=e.model_version,
            also=signal.also), deadline)
        version = (hits.version or e.model_version) + "".join(   # "V+pinsage@W" with parts
            f"+{part.model}@{part.model_version}" for part in signal.also)
        return Ranking(e.model, version, hits.items, signal.liked,
                       signal.context, unknown=signal.unknown,
                       reading=registry.get(e.model).reading if e.model in registry.BY_NAME
                       else "")

    async def similar(self, s: Similar, deadline: Deadline) -> Ranking:
        """Movies closest to ``s.movie_id`` in ``s.model``'s space, explained by it."""
        hits = await self.down.search(SearchCall(
            s.model, s.top_k + self.extra, like_movie_id=s.movie_id, genres=s.genres),
            deadline)
        return Ranking(s.model, hits.version, [replace(h, reason=s.movie_id) for h in hits.items],
                       (s.movie_id,), phrase="similar to")

    async def explain(self, ranking: Ranking, page_start: int, top_k: int,
                      deadline: Deadline) -> tuple[list[pb.RecommendedMovie], bool]:
        """Items of the page [page_start, page_start + top_k) with metadata and reasons."""
        page = ranking.hits[page_start:page_start + top_k + self.extra]
        named = {hit.reason for hit in page if hit.reason}
        meta = await self.movies.get([h.movie_id for h in page] + sorted(named), deadline)
        unexplained = any(not hit.reason and hit.reading is None for hit in page)
        tastes = _tastes(ranking, meta, self.movies) if unexplained else Counter()
        items = []
        for hit in page:
            if hit.movie_id not in meta or len(items) == top_k:
                continue
            items.append(_item(meta[hit.movie_id], hit, reason(ranking, hit, meta, tastes)))
        end = page_start + top_k
        more = len(ranking.hits) > end and end < limits.MAX_RANK
        return items, more


class _Calls:
    """:class:`kinds.Context` for one request: the downstream calls under its deadline."""

    def __init__(self, recommender: Recommender, deadline: Deadline) -> None:
        self.r = recommender
        self.deadline = deadline

    async def profile_vector(self, profile: common_pb2.Profile):
        """The profile's vector. It depends only on the age bucket, gender, occupation and
        user id, so it is kept per model version and profile cell."""
        cell = (self.r.versions(), age_bucket(profile.age), profile.gender,
                profile.occupation, profile.user_id if profile.HasField("user_id") else 0)

        async def fetch(missing: list) -> dict:
            return {missing[0]: await self.r.down.embed_profile(profile, self.deadline)}
        return (await self.r.profile_cache.get_many([cell], fetch))[cell]

    async def embed_liked(self, liked):
        return await self.r.down.embed_liked(liked, self.deadline)

    async def embed_history(self, history, purpose=embedder_pb2.HISTORY_PURPOSE_TASTE):
        return await self.r.down.embed_history(history, self.deadline, purpose)

    async def embed_onboarding(self, profile, liked):
        return await self.r.down.embed_onboarding(profile, liked, self.deadline)

    async def user(self, user_id: int):
        return await self.r.down.user(user_id, limits.MAX_HISTORY, self.deadline)


def _tastes(ranking: Ranking, meta: dict, snapshot: MovieSnapshot) -> Counter:
    """How many of the liked movies have each genre (for a reason when none is related)."""
    if not ranking.liked:
        return Counter()
    return Counter(g for movie_id in ranking.liked
                   for g in (meta.get(movie_id) or snapshot.movies.get(movie_id)
                             or common_pb2.Movie()).genres)


def reason(ranking: Ranking, hit: Found, meta: dict[int, common_pb2.Movie],
           tastes: Counter) -> str:
    """Why ``hit`` is recommended, in words (the rules the README lists)."""
    if ranking.model == POPULAR:
        return f"popular: rated by {int(hit.score):,} people ({ranking.context})"
    if hit.reason and hit.reason in meta:
        return f"{ranking.phrase} {title_of(meta[hit.reason])}"
    if ranking.reading and hit.reading is not None:
        return ranking.reading.format(reading=hit.reading,
                                      audience=ranking.context or "people like you")
    shared = [g for g in meta[hit.movie_id].genres if tastes.get(g)]
    if shared:
        genre = max(shared, key=lambda g: tastes[g])
        return f"because you like {genre} ({tastes[genre]} of the movies you liked)"
    return "close to your taste"


def _item(movie: common_pb2.Movie, hit: Found, text: str) -> pb.RecommendedMovie:
    """A page item; its score is the model's reading when it has one (fusion's stars),
    the retrieval score otherwise (a rating count for popular movies)."""
    score = hit.reading if hit.reading is not None else hit.score
    return pb.RecommendedMovie(movie_id=movie.movie_id, title=movie.title, year=movie.year,
                               genres=list(movie.genres), score=score, reason=text)
