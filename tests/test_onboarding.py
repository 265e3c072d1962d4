"""Onboarding (a profile plus a few likes): the score fusion, its search and its protocol."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
from gateway_fakes import MOVIES, FakeDownstream, recommender

from movierec.apps.gateway import kinds
from movierec.apps.gateway.query import recommend_query
from movierec.common.v1 import common_pb2
from movierec.errors import InvalidArgument
from movierec.evaluation.onboarding import Users, held_out_ndcg
from movierec.gateway.v1 import gateway_pb2 as pb
from movierec.models import onboarding
from movierec.services.retriever.blend import summed

RNG = np.random.default_rng(7)
PROFILE = common_pb2.Profile(age=25, gender="F", occupation=4)


def _z(scores: np.ndarray) -> np.ndarray:
    return (scores - scores.mean()) / scores.std(ddof=1)


@pytest.mark.parametrize("k", [1, 2, 3, 7, 40])
def test_scaled_parts_rank_as_the_standardized_weighted_sum(k: int) -> None:
    """Summed inner products of the parts = z_liked + w(k) z_profile + a constant."""
    items_p, items_l = RNG.normal(size=(300, 9)) + 0.3, RNG.normal(size=(300, 5)) * 2.0
    profile, liked = RNG.normal(size=9), RNG.normal(size=5)
    parts = onboarding.query_parts(profile, liked, k, onboarding.Spread.of(items_p),
                                   onboarding.Spread.of(items_l))
    served = items_p @ parts["fusion"] + items_l @ parts["pinsage"]
    expected = _z(items_l @ liked) + onboarding.weight(k) * _z(items_p @ profile)
    assert np.allclose(served - served.mean(), expected - expected.mean(), atol=1e-4)


def test_no_like_is_the_profile_alone_and_weights_fall_as_likes_arrive() -> None:
    profile = RNG.normal(size=4)
    spread = onboarding.Spread.of(RNG.normal(size=(50, 4)))
    assert list(onboarding.query_parts(profile, None, 0, spread, spread)) == ["fusion"]
    weights = [onboarding.weight(k) for k in range(1, 60)]
    assert weights == sorted(weights, reverse=True) and weights[0] > weights[-1] > 0
    assert onboarding.weight(4, (2.0, 0.5)) == pytest.approx(1.0)


def test_blend_keeps_only_candidates_of_some_part() -> None:
    a = np.array([[5.0, 4.0, 0.0, 0.0, -np.inf, 0.0]])
    b = np.array([[0.0, 0.0, 3.0, 0.0, 9.0, 0.0]])
    out = onboarding.blended([a, b], 1)
    assert np.isneginf(out[0, 4])                # masked in one part: never shown
    assert np.allclose(out[0, :4], [5.0, 4.0, 3.0, 0.0])   # catalog below the depth: all


def test_retriever_sums_parts_and_drops_movies_a_part_cannot_score() -> None:
    vector = np.array([1.0, 0.0], np.float32)
    first = ({1: 3.0, 2: 1.0}, {3: np.array([2.0, 5.0])}, vector)   # 3: from its vector
    second = ({3: 4.0, 4: 9.0}, {1: np.array([0.5, 0.0]), 2: np.array([0.0, 1.0])},
              np.array([2.0, 0.0], np.float32))
    hits = summed([first, second], 3)
    assert hits == [(3, 6.0), (1, 4.0), (2, 1.0)]   # 4 has no vector in the first part


def _ratings(rows: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "timestamp"])


def test_protocol_gives_first_likes_and_targets_what_comes_after_the_last_given() -> None:
    """User 1 likes 10 movies (two in the same second), then rates 3 more; user 2 has
    only 9 likes and is not evaluated."""
    rows = [(1, m, 5 if m != 3 else 2, 100 + m) for m in range(1, 12)]
    rows[4] = (1, 5, 4, 104)                               # same second as movie 4
    rows += [(1, 20, 4, 500), (1, 21, 2, 501), (1, 22, 3, 502)]
    rows += [(2, m, 5, 100 + m) for m in range(1, 10)] + [(2, 30, 5, 900)]
    users = Users.of(_ratings(rows), seed=0, most=10)
    assert list(users.cutoff.index) == [1]
    assert len(users.given(3)) == 3 and set(users.given(10)["movie_id"]) == (
        set(range(1, 12)) - {3})
    assert set(users.targets()["movie_id"]) == {20, 22}      # relevant (>= 3) only
    assert set(users.seen()["movie_id"]) == set(range(1, 12))
    orders = {tuple(Users.of(_ratings(rows), seed=s, most=10).given(4)["movie_id"])
              for s in range(8)}
    assert len(orders) == 2                                   # the tie is drawn per seed


def test_held_out_ndcg_uses_stars_as_gains() -> None:
    stars = np.array([[5.0, 1.0, 3.0, 4.0]])
    assert held_out_ndcg(np.array([[4.0, 1.0, 2.0, 3.0]]), stars)[0] == pytest.approx(1.0)
    worst = held_out_ndcg(np.array([[0.0, 9.0, 8.0, 1.0]]), stars)[0]
    assert 0 < worst < held_out_ndcg(np.array([[9.0, 8.0, 0.0, 1.0]]), stars)[0] < 1


def _request(liked, **profile) -> pb.RecommendRequest:
    return pb.RecommendRequest(profile_and_liked=pb.ProfileAndLiked(
        profile=common_pb2.Profile(**{"age": 25, "gender": "F", "occupation": 4, **profile}),
        liked=common_pb2.LikedMovies(movie_ids=liked)))


@pytest.mark.parametrize(("request_", "field"), [
    (_request([1], gender="X"), "profile_and_liked.profile.gender"),
    (_request([1], age=0), "profile_and_liked.profile.age"),
    (_request([0]), "profile_and_liked.liked.movie_ids"),
    (_request(list(range(1, 502))), "profile_and_liked.liked.movie_ids"),
])
def test_bad_parts_are_invalid_argument_as_on_their_own(request_, field) -> None:
    with pytest.raises(InvalidArgument) as info:
        recommend_query(request_)
    assert str(info.value).startswith(field)


class OnboardingFake(FakeDownstream):
    async def embed_onboarding(self, profile, liked, deadline):
        self.calls.append(("embed_onboarding", tuple(liked.movie_ids)))
        parts = [(await self.embed_profile(profile, deadline))]
        if liked.movie_ids:
            parts.append((await self.embed_liked(liked, deadline))[0])
        return parts, [i for i in liked.movie_ids if i not in MOVIES]

    async def search(self, call, deadline):
        self.calls.append(("also", tuple(part.model for part in call.also)))
        return await super().search(call, deadline)


def test_gateway_sends_every_part_to_one_search_and_leaves_the_likes_out() -> None:
    from movierec.server.budget import Deadline

    down = OnboardingFake()
    query, _ = recommend_query(_request([2, 5, 999]))
    ranking = asyncio.run(recommender(down).rank(query, Deadline.start(1.0, 1.0)))
    searches = [c for c in down.calls if c[0] in ("search", "also")]
    assert searches == [("also", ("pinsage",)), ("search", "fusion", (2, 5, 999))]
    assert ranking.version == "fusion-v+pinsage@p1" and ranking.unknown == (999,)
    assert ranking.liked == (2, 5) and kinds.of(_request([])).name == "onboarding"
    assert 2 not in [h.movie_id for h in ranking.hits]


def test_cli_takes_a_profile_with_likes_and_refuses_likes_with_another_query() -> None:
    from movierec import recommend

    method, request = recommend.request_for(recommend.parse(
        ["--age", "25", "--gender", "M", "--occupation", "7", "--liked", "1,260"]))
    assert method == "Recommend" and request.WhichOneof("query") == "profile_and_liked"
    assert list(request.profile_and_liked.liked.movie_ids) == [1, 260]
    assert request.profile_and_liked.profile.occupation == 7
    _, alone = recommend.request_for(recommend.parse(["--liked", "5"]))
    assert alone.WhichOneof("query") == "liked"
    for argv in (["--user", "3", "--liked", "1"], []):
        with pytest.raises(SystemExit):
            recommend.parse(argv)
