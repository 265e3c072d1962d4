"""Feature vocabularies and encoders shared by training, export and inference.

Index 0 of every id vocabulary is the "unknown" slot: users and movies that were
not in the training ratings map to it, and the user tower also sees it during
training (user-id dropout), so it learns a cold-start vector driven by gender,
age and occupation alone. Title words and genres come from the whole movies file
(content, not ratings), so movies nobody rated still get content features.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from movierec.data.movielens import AGE_BUCKETS, NUM_OCCUPATIONS

UNKNOWN = 0
AGE_CODES: tuple[int, ...] = tuple(AGE_BUCKETS)
_WORD = re.compile(r"[a-z0-9']+")


def tokenize(title: str) -> list[str]:
    """Lower-case word tokens of a title."""
    return _WORD.findall(title.lower())


@dataclass
class Vocab:
    """Id maps: raw id -> dense index (0 = unknown) for users, movies, words, genres."""

    user_ids: list[int]
    movie_ids: list[int]
    words: list[str]
    genres: list[str]
    title_len: int

    @property
    def num_users(self) -> int:
        return len(self.user_ids) + 1

    @property
    def num_movies(self) -> int:
        return len(self.movie_ids) + 1

    @property
    def num_words(self) -> int:
        return len(self.words) + 1

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(**json.loads(path.read_text()))


def build_vocab(train: pd.DataFrame, movies: pd.DataFrame, genres: tuple[str, ...],
                title_len: int = 16) -> Vocab:
    """Vocabulary from the training ratings (ids) and the movies file (words, genres)."""
    words = sorted({w for title in movies["title"] for w in tokenize(title)})
    return Vocab(user_ids=sorted(int(u) for u in train["user_id"].unique()),
                 movie_ids=sorted(int(m) for m in train["movie_id"].unique()),
                 words=words, genres=list(genres), title_len=title_len)


def index_of(known: list[int] | np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Dense indices of raw ``ids`` in the sorted ``known`` list; unknown ids give 0."""
    known_arr = np.asarray(known, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(known_arr, ids)
    pos = np.clip(pos, 0, max(len(known_arr) - 1, 0))
    found = (known_arr[pos] == ids) if len(known_arr) else np.zeros(len(ids), bool)
    return np.where(found, pos + 1, UNKNOWN).astype(np.int64)


def age_index(codes: np.ndarray) -> np.ndarray:
    """ml-1m age bucket codes -> 0..6."""
    lookup = {code: i for i, code in enumerate(AGE_CODES)}
    return np.array([lookup[int(c)] for c in codes], dtype=np.int64)


def gender_index(genders) -> np.ndarray:
    """"M" -> 0, "F" -> 1."""
    return (np.asarray(genders) == "F").astype(np.int64)


#: demographic cells (gender x age bucket) of the ranking score's per-cell item biases
CELLS = 2 * len(AGE_CODES)


def cell_features(gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """``[n, CELLS + 1]`` float32: the one-hot gender x age cell of each user (dense
    gender and age indices), then a constant 1. Its inner product with a movie's
    ``[cell biases, bias]`` is the movie's bias for that cell."""
    gender, age = np.asarray(gender), np.asarray(age)
    out = np.zeros((len(gender), CELLS + 1), dtype=np.float32)
    out[np.arange(len(gender)), gender * len(AGE_CODES) + age] = 1.0
    out[:, CELLS] = 1.0
    return out


@dataclass
class UserFeatures:
    """Dense per-user inputs of the user tower, one row per user."""

    uid: np.ndarray
    gender: np.ndarray
    age: np.ndarray
    occupation: np.ndarray

    def take(self, rows: np.ndarray) -> UserFeatures:
        return UserFeatures(self.uid[rows], self.gender[rows], self.age[rows],
                            self.occupation[rows])

    def hide_ids(self) -> UserFeatures:
        return UserFeatures(np.zeros_like(self.uid), self.gender, self.age, self.occupation)


def user_features(vocab: Vocab, users: pd.DataFrame) -> UserFeatures:
    """Tower inputs for the rows of a users frame (ml schema)."""
    occupation = users["occupation"].to_numpy().astype(np.int64)
    if occupation.min(initial=0) < 0 or occupation.max(initial=0) >= NUM_OCCUPATIONS:
        raise ValueError("occupation outside 0-20")
    return UserFeatures(index_of(vocab.user_ids, users["user_id"].to_numpy()),
                        gender_index(users["gender"].to_numpy()),
                        age_index(users["age"].to_numpy()), occupation)


@dataclass
class MovieFeatures:
    """Dense per-movie inputs of the movie tower, one row per movie."""

    mid: np.ndarray
    genres: np.ndarray
    title: np.ndarray

    def take(self, rows: np.ndarray) -> MovieFeatures:
        return MovieFeatures(self.mid[rows], self.genres[rows], self.title[rows])

    def windows(self, width: int) -> np.ndarray:
        """``[movie, position, k]`` = word id at ``position - width//2 + k`` (0 outside)."""
        left = (width - 1) // 2
        padded = np.pad(self.title, ((0, 0), (left, width - 1 - left)))
        length = self.title.shape[1]
        return np.stack([padded[:, k:k + length] for k in range(width)], axis=-1)


def movie_features(vocab: Vocab, movies: pd.DataFrame) -> MovieFeatures:
    """Tower inputs (id index, multi-hot genres, padded title word ids) for a movies frame."""
    genre_pos = {g: i for i, g in enumerate(vocab.genres)}
    multi_hot = np.zeros((len(movies), len(vocab.genres)), dtype=np.float32)
    for row, names in enumerate(movies["genres"]):
        for name in names:
            if name in genre_pos:
                multi_hot[row, genre_pos[name]] = 1.0
    word_pos = {w: i + 1 for i, w in enumerate(vocab.words)}
    titles = np.zeros((len(movies), vocab.title_len), dtype=np.int64)
    for row, title in enumerate(movies["title"]):
        tokens = [word_pos.get(w, UNKNOWN) for w in tokenize(title)][: vocab.title_len]
        titles[row, : len(tokens)] = tokens
    return MovieFeatures(index_of(vocab.movie_ids, movies["movie_id"].to_numpy()),
                         multi_hot, titles)
