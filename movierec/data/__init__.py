"""MovieLens data: locating and fetching the files, parsing, synthetic data and splits."""
