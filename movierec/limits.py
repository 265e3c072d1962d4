"""Every bound on request sizes, in one place, shared by the validation of every path.

A value over a bound is INVALID_ARGUMENT naming the field, never silently truncated.
The bounds are chosen so that what one service forwards always fits what the next one
accepts: a gateway query's exclusions (its own list, the user's seen movies and the
liked ids) fit the retriever's and the catalog's exclusion bound.
"""

from __future__ import annotations

MAX_ID = 2**31 - 1          # ids are PostgreSQL integers
MAX_TEXT = 200              # characters of a free-text field (search query)
MAX_LABEL = 50              # characters of one genre name
MAX_GENRES = 20             # genre filters per request

MAX_TOP_K = 100             # items per page (Recommend, SimilarMovies)
MAX_RANK = 1000             # deepest rank paging reaches; a search's top_k bound
MAX_LIKED = 500             # liked movie ids of one query
MAX_REQUEST_EXCLUDE = 1000  # exclude_movie_ids of one Recommend request
MAX_HISTORY = 5000          # ratings of one user read per request (vector window, seen list)
MAX_EXCLUDE = MAX_REQUEST_EXCLUDE + MAX_HISTORY + MAX_LIKED  # ids excluded from one search

MAX_QUERY_PARTS = 3         # query vectors one search sums (SearchRequest + also)
MAX_BATCH_IDS = 1000        # ids per batch lookup (GetMovies, GetVectors)
MAX_LIST_MOVIES = 5000      # movies per ListMovies page (the gateway's snapshot)
MAX_SEARCH = 100            # title search results per page
MAX_POPULAR = MAX_RANK      # popular movies per call
MAX_OFFSET = 10_000         # largest page offset a page token may carry

MIN_AGE, MAX_AGE = 1, 120   # years of a profile's age (mapped to the ml-1m bucket)

MAX_TITLE = 200             # characters of a movie title (catalog writes)
MAX_UPSERT_MOVIES = 1000    # movies per UpsertMovies request (one transaction)
