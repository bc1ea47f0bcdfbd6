"""``bneck cache ls|info|gc|verify``: look into, check and tidy the shared feature cache."""
from __future__ import annotations

import argparse
import datetime
import json
import os

from features import read_summary
from features.cache import collect_garbage, default_cache_dir, list_entries, verify_cache
from features.progress import format_table


def add_parser(sub) -> None:
    """Register ``cache`` and its three actions."""
    p = sub.add_parser("cache", help="list, inspect and tidy the shared feature cache")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("ls", help="one line per extractor in the cache")
    info = actions.add_parser("info", help="everything a feature file or cache entry records")
    info.add_argument("target", metavar="FILE|KEY", help="a <split>.h5 file or an extractor key (prefix)")
    gc = actions.add_parser("gc", help="drop temporaries and damaged chunks, merge chunks, "
                                       "optionally drop entries unused for DAYS")
    gc.add_argument("--older-than", type=float, default=None, metavar="DAYS")
    verify = actions.add_parser("verify", help="read every cached row and check every checksum; "
                                               "exit 1 if anything is damaged")
    for q in (ls, info, gc, verify):
        q.add_argument("--cache-dir", default=None, help="default $BNECK_CACHE or ~/.cache/bneck")
    ls.set_defaults(run=run_ls)
    info.set_defaults(run=run_info)
    gc.set_defaults(run=run_gc)
    verify.set_defaults(run=run_verify)


def _cache_dir(args) -> str:
    return os.path.abspath(os.path.expanduser(args.cache_dir)) if args.cache_dir else default_cache_dir()


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def run_ls(args: argparse.Namespace) -> int:
    """Print one row per cache entry."""
    entries = list_entries(_cache_dir(args))
    if not entries:
        print(f"no cached features in {_cache_dir(args)}")
        return 0
    rows = [[e.key[:12], e.meta.get("backbone"), e.meta.get("weights"), e.meta.get("layer"),
             e.meta.get("pool"), e.meta.get("input_size"), e.meta.get("dtype"), e.rows, e.chunks,
             _mb(e.bytes), datetime.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")]
            for e in entries]
    print(format_table(["key", "backbone", "weights", "layer", "pool", "size", "dtype", "rows",
                        "chunks", "MB", "last used"], rows))
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print a feature file's attributes, or a cache entry's metadata."""
    if os.path.isfile(args.target):
        print(json.dumps(read_summary(args.target), indent=1, default=str))
        return 0
    matches = [e for e in list_entries(_cache_dir(args)) if e.key.startswith(args.target)]
    if len(matches) != 1:
        from features.errors import ConfigError
        raise ConfigError(f"`bneck cache info` takes a feature file or one extractor key (or a "
                          f"unique prefix) from `bneck cache ls`. Received: {args.target!r}, "
                          f"which matches {len(matches)} cache entries and is not a file.")
    e = matches[0]
    print(json.dumps({"key": e.key, "folder": e.folder, "rows": e.rows, "chunks": e.chunks,
                      "bytes": e.bytes, **e.meta}, indent=1))
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Tidy the cache and say what was done."""
    stats = collect_garbage(_cache_dir(args), args.older_than)
    print(f"removed {stats['temporaries']} stale temporary file(s), {stats['bad_chunks']} damaged "
          f"chunk(s) and {stats['entries_removed']} unused entr(ies); merged "
          f"{stats['merged_chunks']} chunk(s); {_mb(stats['bytes_before'])} MB -> "
          f"{_mb(stats['bytes_after'])} MB")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check every chunk; print what is damaged. Returns 1 if anything is, else 0."""
    checked, problems = verify_cache(_cache_dir(args))
    for path, problem in problems:
        print(f"damaged: {path}: {problem}")
    if problems:
        print(f"{len(problems)} of {checked} chunk(s) damaged. `bneck cache gc` removes them; the "
              "next extraction recomputes their rows.")
        return 1
    print(f"{checked} chunk(s) in {_cache_dir(args)}: all intact")
    return 0
