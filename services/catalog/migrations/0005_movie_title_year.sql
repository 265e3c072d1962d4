-- UpsertMovies: a movie without an id is matched on its lowered title and year (0 for
-- an unknown year); this index finds those rows without a scan of the catalog.
CREATE INDEX movies_title_year ON movies (lower(title), coalesce(year, 0));
