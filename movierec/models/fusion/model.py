"""The fusion two-tower network (PaddlePaddle book "recommender_system", extended).

User tower: id embedding -> fc; gender, age bucket, occupation embeddings -> fc
each; concat -> fc ``hidden``, tanh. Movie tower: id embedding -> fc; genre
embeddings sum-pooled; title words -> text CNN (window 3, tanh, sum pool over the
words); concat -> fc ``hidden``, tanh. The score is ``offset + scale * cos(u, m)``
in stars, with ``scale`` and ``offset`` learned (``learn_affine=False`` keeps the
book's fixed 5 and 0), so the
L2-normalized tower outputs rank movies exactly as the model does and an inner
product converts back to stars with two global numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import paddle
from paddle import nn

from movierec.data.movielens import NUM_OCCUPATIONS
from movierec.models.fusion.features import AGE_CODES


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
    epochs: int = 30
    patience: int = 3
    valid_fraction: float = 0.05
    max_minutes: float = 9.0
    scale_init: float = 5.0
    learn_affine: bool = True

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

    @staticmethod
    def cosine(user_vec, movie_vec):
        """Row-wise cosine (written with sums: Paddle's p_norm backward is slow on CPU)."""
        dot = paddle.sum(user_vec * movie_vec, axis=-1)
        norms = (paddle.sum(user_vec * user_vec, axis=-1)
                 * paddle.sum(movie_vec * movie_vec, axis=-1))
        return dot * paddle.rsqrt(norms + 1e-12)

    def forward(self, uid, gender, age, job, mid, genres, windows, user_index=None,
                movie_index=None):
        """Predicted stars; with indices, row ``i`` pairs user ``user_index[i]`` with movie
        ``movie_index[i]`` (towers run once per distinct user/movie), else row-by-row."""
        users = self.user(uid, gender, age, job)
        movies = self.movie(mid, genres, windows)
        if user_index is not None:
            users, movies = paddle.gather(users, user_index), paddle.gather(movies, movie_index)
        return self.offset + self.scale * self.cosine(users, movies)
