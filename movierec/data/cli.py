"""``movierec data``: fetch MovieLens, print statistics and splits, write synthetic data."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from movierec.data.source import DATASETS, fetch, load_dataset, locate
from movierec.data.splits import DEFAULT_SEED, HELD_OUT, SPLITS, holdout_movies, make_split
from movierec.data.synth_check import compare, curves, table
from movierec.data.synth_scale import plan, write_scale
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
    _synth_parsers(sub)
    return parser


def _synth_parsers(sub) -> None:
    """``synth`` (old flags, or scale mode with --ratings) and ``synth-check``."""
    synth = sub.add_parser("synth", help="write a synthetic data set in ml-1m's format; "
                           "with --ratings, MovieLens-like curves at any size up to 25M")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--ratings", type=int, help="scale mode: exactly this many ratings, "
                       "users and movies derived from it (ml-1m -> ml-25m ratios) unless given")
    synth.add_argument("--users", type=int, help="default 300, or derived with --ratings")
    synth.add_argument("--movies", type=int, help="default 400, or derived with --ratings")
    synth.add_argument("--per-user", type=int, default=40, help="without --ratings only")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--first-year", type=int, default=1996, help="with --ratings: the "
                       "ratings' time span (default 1996-2019); movies come out before it")
    synth.add_argument("--last-year", type=int, default=2019)
    check = sub.add_parser("synth-check", help="compare a data set's popularity and activity "
                           "curves with ml-1m's (exit 1 when a curve is off)")
    check.add_argument("--data-dir", type=Path, required=True)
    check.add_argument("--against", type=Path, help="reference data set directory "
                       "(default: ml-1m, found like `stats` finds it)")
    check.add_argument("--json", action="store_true")


def _synth(args: argparse.Namespace) -> int:
    """Write the small generator's data set, or with --ratings the scaled one, and say so."""
    if args.ratings is None:
        data = generate(args.users or 300, args.movies or 400, args.per_user, args.seed)
        print(write_ml1m(data, args.out))
        return 0
    try:
        spec = plan(args.ratings, args.users, args.movies, seed=args.seed,
                    first_year=args.first_year, last_year=args.last_year)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    report = write_scale(spec, args.out)
    print(f"{report.directory}: {report.ratings:,} ratings, {report.users:,} users, "
          f"{report.movies:,} movies ({report.rated_movies:,} rated), seed {spec.seed}, "
          f"popularity exponent {report.popularity_exponent:.3f}, "
          f"{report.seconds:.1f} s, peak RSS {report.peak_rss_mb:,.0f} MiB")
    return 0


def _synth_check(args: argparse.Namespace) -> int:
    """Print the curves beside the reference's; 1 when one is out of tolerance."""
    against = args.against or locate("ml-1m")
    if against is None:
        raise DataError("ml-1m not found: pass --against or set MOVIELENS_DIR")
    rows = compare(curves(args.data_dir), curves(against))
    if args.json:
        print(json.dumps([vars(row) for row in rows], indent=2))
    else:
        print(table(rows, (args.data_dir.name, against.name)))
    off = [row.metric for row in rows if not row.ok]
    if off and not args.json:
        print(f"off: {', '.join(off)}")
    return 1 if off else 0


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
        elif args.action == "synth-check":
            return _synth_check(args)
        else:
            return _synth(args)
    except DataError as exc:
        print(f"movierec data: {exc}")
        return 1
    return 0
