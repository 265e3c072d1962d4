"""The fusion two-tower network (PaddlePaddle book "recommender_system", extended).

User tower: id embedding -> fc; gender, age bucket, occupation embeddings -> fc
each; concat -> fc ``hidden``, tanh. Movie tower: id embedding -> fc; genre
embeddings sum-pooled; title words -> text CNN (window 3, tanh, sum pool over the
words); concat -> fc ``hidden``, tanh.

Two scores share the towers:

* **stars** ``offset + scale * cos(u, m)``, regressed on ratings (``scale`` and
  ``offset`` learned; ``learn_affine=False`` keeps the book's fixed 5 and 0);
* **ranking** ``rank_scale * cos(u, m) + b[m] + b_cell[m, gender x age of u]`` (one
  ``rank_scale`` for known user ids, one for the profile path), trained
  with a softmax over all movies against the movies users liked. The biases say how
  popular a movie is overall and within each demographic cell, which the cosine
  cannot (it favours rarely rated, highly rated movies).

The ranking score is an inner product of ``[rank_scale * unit(u), one-hot cell, 1]``
and ``[unit(m), b_cell[m], b[m]]``, the exported vectors (:mod:`.export`); stars come
back from the same vectors (:func:`.inference.predicted_stars`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from movierec.compat.paddle import paddle
from movierec.data.movielens import NUM_OCCUPATIONS
from movierec.models.fusion.features import AGE_CODES, CELLS

nn = paddle.nn


@dataclass
class FusionConfig:
    """Architecture and training hyper-parameters (stored in the artifact)."""

    id_dim: int = 32
    side_dim: int = 16
    genre_dim: int = 32
    word_dim: int = 32
    filters: int = 32
    window: int = 3
    title_len: int = 10
    hidden: int = 200
    dropout: float = 0.2
    user_id_dropout: float = 0.1
    movie_id_dropout: float = 0.05
    lr: float = 2e-3
    lr_decay: float = 0.5
    weight_decay: float = 0.0
    batch_size: int = 2048
    max_epochs: int = 30
    patience: int = 3
    valid_fraction: float = 0.05
    max_minutes: float = 9.0
    scale_init: float = 5.0
    learn_affine: bool = True
    rank_weight: float = 0.3
    rank_min_rating: int = 3
    rank_batch: int = 64
    rank_scale_init: float = 10.0
    profile_rank_scale_init: float = 0.0
    rank_scale_lr: float = 10.0
    learn_item_bias: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> FusionConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class UserTower(nn.Layer):
    """Profile (+ optional id) -> user vector of size ``hidden``."""

    def __init__(self, cfg: FusionConfig, num_users: int) -> None:
        super().__init__()
        self.uid_emb = nn.Embedding(num_users, cfg.id_dim)
        self.uid_fc = nn.Linear(cfg.id_dim, cfg.id_dim)
        self.gender_emb = nn.Embedding(2, cfg.side_dim)
        self.gender_fc = nn.Linear(cfg.side_dim, cfg.side_dim)
        self.age_emb = nn.Embedding(len(AGE_CODES), cfg.side_dim)
        self.age_fc = nn.Linear(cfg.side_dim, cfg.side_dim)
        self.job_emb = nn.Embedding(NUM_OCCUPATIONS, cfg.side_dim)
        self.job_fc = nn.Linear(cfg.side_dim, cfg.side_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.id_dim + 3 * cfg.side_dim, cfg.hidden)

    def forward(self, uid, gender, age, job):
        parts = [self.uid_fc(self.uid_emb(uid)), self.gender_fc(self.gender_emb(gender)),
                 self.age_fc(self.age_emb(age)), self.job_fc(self.job_emb(job))]
        return paddle.tanh(self.out(self.drop(paddle.concat(parts, axis=-1))))


class MovieTower(nn.Layer):
    """Movie id, multi-hot genres and title words -> movie vector of size ``hidden``."""

    def __init__(self, cfg: FusionConfig, num_movies: int, num_genres: int,
                 num_words: int) -> None:
        super().__init__()
        self.mid_emb = nn.Embedding(num_movies, cfg.id_dim)
        self.mid_fc = nn.Linear(cfg.id_dim, cfg.id_dim)
        self.genre_emb = nn.Linear(num_genres, cfg.genre_dim, bias_attr=False)
        self.word_emb = nn.Embedding(num_words, cfg.word_dim, padding_idx=0)
        self.word_dim = cfg.word_dim
        self.conv = nn.Linear(cfg.window * cfg.word_dim, cfg.filters)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.id_dim + cfg.genre_dim + cfg.filters, cfg.hidden)

    def text_cnn(self, windows):
        """Window convolution over the words, tanh, summed over the real words.

        ``windows[b, t]`` holds the word ids of positions ``t - window//2 ...``
        (0-padded at the ends, like Paddle's ``sequence_conv``), so the convolution is
        one embedding lookup and one matmul, much faster on CPU than Conv1D.
        """
        batch, length, width = windows.shape
        words = paddle.reshape(self.word_emb(windows), [batch, length, width * self.word_dim])
        conv = paddle.tanh(self.conv(words))
        centre = windows[:, :, (width - 1) // 2]
        return paddle.sum(conv * paddle.unsqueeze(paddle.cast(centre != 0, conv.dtype), -1),
                          axis=1)

    def forward(self, mid, genres, windows):
        parts = [self.mid_fc(self.mid_emb(mid)), self.genre_emb(genres),
                 self.text_cnn(windows)]
        return paddle.tanh(self.out(self.drop(paddle.concat(parts, axis=-1))))


class FusionModel(nn.Layer):
    """Both towers plus the learned affine map from cosine to stars."""

    def __init__(self, cfg: FusionConfig, num_users: int, num_movies: int, num_genres: int,
                 num_words: int, mean_rating: float = 3.5) -> None:
        super().__init__()
        self.user = UserTower(cfg, num_users)
        self.movie = MovieTower(cfg, num_movies, num_genres, num_words)
        self.scale = self.create_parameter(
            [1], default_initializer=nn.initializer.Constant(cfg.scale_init))
        self.offset = self.create_parameter(
            [1], default_initializer=nn.initializer.Constant(
                mean_rating if cfg.learn_affine else 0.0))
        self.scale.stop_gradient = not cfg.learn_affine
        self.offset.stop_gradient = not cfg.learn_affine
        self.item_bias = nn.Embedding(num_movies, CELLS + 1, weight_attr=paddle.ParamAttr(
            initializer=nn.initializer.Constant(0.0)))
        self.item_bias.weight.stop_gradient = not cfg.learn_item_bias
        self.rank_scale = self.create_parameter(
            [2], attr=paddle.ParamAttr(learning_rate=cfg.rank_scale_lr),
            default_initializer=nn.initializer.Assign(
                [cfg.profile_rank_scale_init, cfg.rank_scale_init]))

    def init_item_bias(self, likes: np.ndarray) -> None:
        """Start the ranking biases at the training popularity: ``likes[m, c]`` counts the
        likes of movie id index ``m`` in gender x age cell ``c``; ``b[m] = log(1 + likes
        of m)`` and ``b[m] + b_cell[m, c] = log(1 + likes of m in c)``, so an untrained
        profile ranks like popularity within its cell."""
        overall = np.log1p(likes.sum(axis=1, keepdims=True))
        self.item_bias.weight.set_value(np.hstack([np.log1p(likes) - overall, overall])
                                        .astype(np.float32))

    @staticmethod
    def unit(vectors):
        """Rows scaled to unit length (written with sums: p_norm backward is slow on CPU)."""
        return vectors * paddle.rsqrt(paddle.sum(vectors * vectors, axis=-1, keepdim=True)
                                      + 1e-12)

    @staticmethod
    def cosine(user_vec, movie_vec):
        """Row-wise cosine."""
        dot = paddle.sum(user_vec * movie_vec, axis=-1)
        norms = (paddle.sum(user_vec * user_vec, axis=-1)
                 * paddle.sum(movie_vec * movie_vec, axis=-1))
        return dot * paddle.rsqrt(norms + 1e-12)

    def stars(self, users, movies, user_index=None, movie_index=None):
        """Predicted stars from tower outputs; with indices, row ``i`` pairs user
        ``user_index[i]`` with movie ``movie_index[i]``, else row-by-row."""
        if user_index is not None:
            users, movies = paddle.gather(users, user_index), paddle.gather(movies, movie_index)
        return self.offset + self.scale * self.cosine(users, movies)

    def rank_logits(self, users, known, cells, movies, mid):
        """``[users, movies]`` ranking scores: ``rank_scale[known] * cos(u, m)`` plus the
        movie's bias and its bias in the user's gender x age cell (``known``: 1 where the
        user id is known, 0 on the profile path; ``cells``: the users'
        :func:`~movierec.models.fusion.features.cell_features`)."""
        cos = paddle.matmul(self.unit(users), self.unit(movies), transpose_y=True)
        scale = paddle.unsqueeze(paddle.gather(self.rank_scale, known), -1)
        return scale * cos + paddle.matmul(cells, self.item_bias(mid), transpose_y=True)

    def forward(self, uid, gender, age, job, mid, genres, windows, user_index=None,
                movie_index=None):
        """Predicted stars (see :meth:`stars`); towers run once per distinct user/movie."""
        return self.stars(self.user(uid, gender, age, job), self.movie(mid, genres, windows),
                          user_index, movie_index)
