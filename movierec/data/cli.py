"""``movierec data``: fetch MovieLens, print statistics and splits, write synthetic data."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from movierec.data.source import DATASETS, fetch, load_dataset, locate
from movierec.data.splits import DEFAULT_SEED, HELD_OUT, SPLITS, holdout_movies, make_split
from movierec.data.synthetic import generate, write_ml1m
from movierec.errors import DataError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="movierec data", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    fetch_p = sub.add_parser("fetch", help="download and verify the official GroupLens zip")
    fetch_p.add_argument("--dataset", choices=list(DATASETS), default="ml-1m")
    fetch_p.add_argument("--dest", type=Path, help="unpack under this folder "
                         "(default $MOVIEREC_HOME/data)")
    fetch_p.add_argument("--url", help="download from this URL instead (a mirror)")
    fetch_p.add_argument("--md5", help="expected md5 of the archive at --url")
    fetch_p.add_argument("--force", action="store_true", help="download even if found locally")
    stats = sub.add_parser("stats", help="counts and split sizes")
    stats.add_argument("--dataset", default="ml-1m", help="ml-1m, ml-100k or synthetic[-UxM]")
    stats.add_argument("--data-dir", type=Path, help="directory holding the files "
                       "(default: MOVIELENS_DIR, then the download cache)")
    stats.add_argument("--seed", type=int, default=DEFAULT_SEED)
    stats.add_argument("--json", action="store_true")
    held = sub.add_parser("holdout-movies", help="write a data set without a seeded share of "
                          "its movies (the new-movie protocol: movierec evaluate new-movies)")
    held.add_argument("--dataset", default="ml-1m")
    held.add_argument("--data-dir", type=Path)
    held.add_argument("--fraction", type=float, default=0.1)
    held.add_argument("--seed", type=int, default=DEFAULT_SEED)
    held.add_argument("--out", type=Path, required=True)
    synth = sub.add_parser("synth", help="write a synthetic data set in ml-1m's format")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--users", type=int, default=300)
    synth.add_argument("--movies", type=int, default=400)
    synth.add_argument("--per-user", type=int, default=40)
    synth.add_argument("--seed", type=int, default=0)
    return parser


def stats(name: str, data_dir: Path | None, seed: int) -> dict:
    """Counts of a data set and the sizes of its three splits."""
    data = load_dataset(name, data_dir)
    out = {
        "dataset": data.name, "checksum": data.checksum,
        "ratings": len(data.ratings), "users": len(data.users), "movies": len(data.movies),
        "rated_movies": int(data.ratings["movie_id"].nunique()),
        "rating_users": int(data.ratings["user_id"].nunique()),
        "genres": list(data.genres), "seed": seed, "splits": {},
    }
    for split in SPLITS:
        out["splits"][split] = make_split(data, split, seed).sizes()
    return out


def _print_stats(report: dict) -> None:
    print(f"{report['dataset']}: {report['ratings']:,} ratings, {report['users']:,} users, "
          f"{report['movies']:,} movies ({report['rated_movies']:,} rated)")
    for split, sizes in report["splits"].items():
        print(f"  {split:15s} train {sizes['train']:>9,}  valid {sizes['valid']:>7,}  "
              f"test {sizes['test']:>7,}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.action == "fetch":
            found = None if args.force or args.url else locate(args.dataset)
            print(found or fetch(args.dataset, args.dest, url=args.url, md5=args.md5))
        elif args.action == "stats":
            report = stats(args.dataset, args.data_dir, args.seed)
            print(json.dumps(report, indent=2)) if args.json else _print_stats(report)
        elif args.action == "holdout-movies":
            kept, held = holdout_movies(load_dataset(args.dataset, args.data_dir),
                                        args.fraction, args.seed)
            write_ml1m(kept, args.out)
            (args.out / HELD_OUT).write_text(json.dumps({"movie_ids": held, "seed": args.seed,
                                                         "fraction": args.fraction}))
            print(f"{args.out}: {len(kept.movies):,} movies kept, {len(held):,} held out")
        else:
            data = generate(args.users, args.movies, args.per_user, args.seed)
            print(write_ml1m(data, args.out))
    except DataError as exc:
        print(f"movierec data: {exc}")
        return 1
    return 0
