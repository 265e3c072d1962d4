-- ListPopular: per-movie rating counts and means, refreshed after loads and periodically.
-- Popularity = number of ratings; ties broken by a damped mean (see services/catalog/README).
CREATE MATERIALIZED VIEW movie_popularity AS
SELECT m.movie_id,
       count(r.rating)::integer AS rating_count,
       coalesce(avg(r.rating), 0)::real AS rating_mean,
       ((coalesce(sum(r.rating), 0) + 3.5 * 10) / (count(r.rating) + 10))::real AS damped_mean
FROM movies m
LEFT JOIN ratings r ON r.movie_id = m.movie_id
GROUP BY m.movie_id;

CREATE UNIQUE INDEX movie_popularity_id ON movie_popularity (movie_id);
CREATE INDEX movie_popularity_rank ON movie_popularity (rating_count DESC, damped_mean DESC);
