-- Movies, users and ratings: the catalog's system of record.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE movies (
    movie_id   integer PRIMARY KEY CHECK (movie_id > 0),
    title      text    NOT NULL,
    year       integer CHECK (year IS NULL OR year BETWEEN 1800 AND 2200),
    genres     text[]  NOT NULL DEFAULT '{}'
);

CREATE TABLE users (
    user_id    integer PRIMARY KEY CHECK (user_id > 0),
    gender     char(1) CHECK (gender IN ('M', 'F')),
    age        smallint CHECK (age IN (1, 18, 25, 35, 45, 50, 56)),
    occupation smallint CHECK (occupation BETWEEN 0 AND 20),
    zip        text
);

CREATE TABLE ratings (
    user_id    integer     NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    movie_id   integer     NOT NULL REFERENCES movies (movie_id) ON DELETE CASCADE,
    rating     smallint    NOT NULL CHECK (rating BETWEEN 1 AND 5),
    rated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, movie_id)
);

-- GetUserHistory: a user's ratings newest first (optionally above a rating).
CREATE INDEX ratings_user_time ON ratings (user_id, rated_at DESC, movie_id);
-- Popularity aggregation and cascades by movie.
CREATE INDEX ratings_movie ON ratings (movie_id) INCLUDE (rating);
-- SearchMovies: trigram word similarity on titles; genre filters.
CREATE INDEX movies_title_trgm ON movies USING gin (lower(title) gin_trgm_ops);
CREATE INDEX movies_genres ON movies USING gin (genres);
CREATE INDEX movies_year ON movies (year);
