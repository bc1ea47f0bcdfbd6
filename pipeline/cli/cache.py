"""``bneck cache ls|info|gc|rm|verify``: look into, check and tidy the shared feature cache."""

from __future__ import annotations

import argparse
import datetime
import json
import os

from bneck.core.progress import format_table
from bneck.features import read_summary
from bneck.features.cache.maintenance import collect_garbage, drop_entry, list_entries
from bneck.features.cache.rows import check_cache_dir, default_cache_dir
from bneck.features.cache.verify import verify_cache


def add_parser(sub) -> None:
    """Register ``cache`` and its actions."""
    p = sub.add_parser("cache", help="list, inspect and tidy the shared feature cache")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("ls", help="one line per extractor in the cache")
    ls.add_argument("--all", action="store_true", help="also list empty entries (runs that stopped early)")
    info = actions.add_parser("info", help="everything a feature file or cache entry records")
    info.add_argument("target", metavar="FILE|KEY", help="a <split>.h5 file or an extractor key (prefix)")
    gc = actions.add_parser(
        "gc", help="drop temporaries and damaged chunks, merge chunks, optionally drop entries unused for DAYS"
    )
    gc.add_argument("--older-than", type=float, default=None, metavar="DAYS")
    rm = actions.add_parser(
        "rm",
        help="remove one extractor's rows (feature files keep theirs; extracting again recomputes them)",
        description="Remove the cache's rows of one extractor (a key or unique prefix from `bneck cache ls`). "
        "Feature files already written hold their own copy of every row, so training, fine-tuning and "
        "predicting from them are unchanged; only a later extraction of the same images computes them again. "
        "An entry another process is using is kept.",
    )
    rm.add_argument("key", metavar="KEY", help="an extractor key, or a unique prefix of one, from `bneck cache ls`")
    verify = actions.add_parser(
        "verify",
        help="read every cached row and check every checksum; exit 1 if anything is damaged",
        description="Check every chunk's checksums; with --recompute N, also "
        "recompute N seeded rows per cache entry from images found "
        "under --data (by sha256) and compare them with the stored "
        "rows. Exit 1 if anything is damaged or differs.",
    )
    verify.add_argument(
        "--recompute", type=int, default=0, metavar="N", help="recompute N rows per entry (needs --data) and compare"
    )
    verify.add_argument(
        "--data", nargs="+", default=(), metavar="DIR", help="folders holding the images the rows were made from"
    )
    verify.add_argument(
        "--seed",
        type=int,
        default=None,
        help="which rows are sampled (default: a fresh random sample each time, its seed printed; "
        "a forger cannot know which rows will be looked at)",
    )
    for q in (ls, info, gc, rm, verify):
        q.add_argument("--cache-dir", default=None, help="default $BNECK_CACHE or ~/.cache/bneck")
    ls.set_defaults(run=run_ls)
    info.set_defaults(run=run_info)
    gc.set_defaults(run=run_gc)
    rm.set_defaults(run=run_rm)
    verify.set_defaults(run=run_verify)


def _cache_dir(args) -> str:
    """The cache the command looks at, refused (ConfigError) when it is not one bneck may trust or use."""
    path = os.path.abspath(os.path.expanduser(args.cache_dir)) if args.cache_dir else default_cache_dir()
    return check_cache_dir(path)


def _mb(n: int) -> str:
    """Bytes as megabytes (10**6), two decimals."""
    return f"{n / 1e6:.2f}"


def run_ls(args: argparse.Namespace) -> int:
    """Print one row per cache entry."""
    cache = _cache_dir(args)
    entries = list_entries(cache)
    if not entries:
        print(f"no cached features in {cache}")
        return 0
    shown = [e for e in entries if e.rows or args.all]
    kinds = _entry_kinds(entries)
    rows = [
        [
            e.key[:12],
            kinds[e.key],
            e.meta.get("backbone"),
            e.meta.get("weights"),
            e.meta.get("layer"),
            e.meta.get("pool"),
            e.meta.get("input_size"),
            e.meta.get("dtype"),
            e.rows,
            e.chunks,
            _mb(e.bytes),
            datetime.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M"),
        ]
        for e in shown
    ]
    print(
        format_table(
            [
                "key",
                "holds",
                "backbone",
                "weights",
                "layer",
                "pool",
                "size",
                "dtype",
                "rows",
                "chunks",
                "MB",
                "last used",
            ],
            rows,
        )
    )
    views = sum(e.bytes for e in shown if kinds[e.key] not in ("features", "empty"))
    print(
        f"\nin all: {_mb(sum(e.bytes for e in entries))} MB in {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
        + (f" (fine-tuning views: {_mb(views)} MB)" if views else "")
    )
    hidden = len(entries) - len(shown)
    if hidden:
        print(
            f"\n{hidden} empty entr{'y' if hidden == 1 else 'ies'} (no rows: runs that stopped before their first "
            "batch) not shown; --all lists them, `bneck cache gc` removes them."
        )
    return 0


VIEW_FIELDS = ("backbone", "alpha", "weights_sha256", "layer", "pool", "input_size", "dtype")


def _entry_kinds(entries) -> dict:
    """{entry key: what it holds}: 'features', a fine-tuning view ('augmented view 3', 'mirror view (TTA)',
    the image's own: 'image view (fine-tuning)' when augmented views of its extractor and layer are
    here too: it serves both) or 'empty'."""

    def extractor(e) -> str:  # any JSON a meta.json holds, hashable
        return repr([e.meta.get(f) for f in VIEW_FIELDS])

    kinds = {e.key: _entry_kind(e) for e in entries}
    viewed = {extractor(e) for e in entries if e.meta.get("augmentation")}
    for e in entries:
        if kinds[e.key] == "features" and extractor(e) in viewed:
            kinds[e.key] = "features + image view (fine-tuning)"
    return kinds


def _entry_kind(entry) -> str:
    """What an entry holds by itself: 'features', a fine-tuning view ('view 3', 'mirror view') or 'empty'."""
    from bneck.features.featurefile.storage import is_rounded
    from bneck.features.views.rows import FLIP_VIEW, parse_view

    if not entry.rows:
        return "empty"
    augmentation = entry.meta.get("augmentation")
    if not augmentation:
        return "image view (fine-tuning)" if is_rounded(entry.meta.get("dtype")) else "features"
    try:
        view = parse_view(augmentation)[2]
    except (ValueError, KeyError, TypeError):
        return "augmented rows"
    return "mirror view (TTA)" if view == FLIP_VIEW else f"augmented view {view}"


def run_info(args: argparse.Namespace) -> int:
    """Print a feature file's attributes, or a cache entry's metadata."""
    if os.path.isfile(args.target):
        summary = read_summary(args.target)
        for bulky in ("labels", "paths", "sha256"):
            summary.pop(bulky)
        print(json.dumps(summary, indent=1, default=str))
        return 0
    matches = [e for e in list_entries(_cache_dir(args)) if e.key.startswith(args.target)]
    if len(matches) != 1:
        from bneck.core.errors import ConfigError

        raise ConfigError(
            f"`bneck cache info` takes a feature file or one extractor key (or a "
            f"unique prefix) from `bneck cache ls`. Received: {args.target!r}, "
            f"which matches {len(matches)} cache entries and is not a file."
        )
    e = matches[0]
    print(
        json.dumps(
            {"key": e.key, "folder": e.folder, "rows": e.rows, "chunks": e.chunks, "bytes": e.bytes, **e.meta}, indent=1
        )
    )
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Tidy the cache and say what was done."""
    import math

    from bneck.core.errors import ConfigError

    if args.older_than is not None and not (math.isfinite(args.older_than) and args.older_than >= 0):
        raise ConfigError(
            f"--older-than takes a number of days >= 0 (entries unused that long are removed). "
            f"Received: older_than={args.older_than!r}."
        )
    stats = collect_garbage(_cache_dir(args), args.older_than)
    print(
        f"removed {stats['temporaries']} stale temporary file(s), {stats['bad_chunks']} damaged "
        f"chunk(s) and {stats['entries_removed']} unused entr(ies)"
        f"{f' (kept {n} old one(s) a running process uses)' if (n := stats['entries_in_use']) else ''}; merged "
        f"{stats['merged_chunks']} chunk(s); {_mb(stats['bytes_before'])} MB -> "
        f"{_mb(stats['bytes_after'])} MB"
    )
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Remove one entry's rows, or say why not."""
    from bneck.core.errors import ConfigError

    entries = list_entries(_cache_dir(args))
    matches = [e for e in entries if e.key.startswith(args.key)] if args.key else []
    shown = args.key if len(args.key) <= 80 else args.key[:80] + "..."
    if len(matches) != 1:
        raise ConfigError(
            f"`bneck cache rm` takes one extractor key (or a unique prefix) from `bneck cache ls`. Received: "
            f"{shown!r}, which matches {len(matches)} of the {len(entries)} entries"
            f"{': ' + ', '.join(e.key[:16] for e in matches[:5]) if matches else ''}."
        )
    if matches[0].meta.get("extractor_key") != matches[0].key:
        raise ConfigError(
            f"{matches[0].folder} is not an entry bneck wrote (its meta.json does not name its own key "
            f"{matches[0].key[:16]}): `bneck cache rm` removes only bneck's entries. Received: {shown!r}."
        )
    freed = drop_entry(matches[0].folder)
    if freed is None:
        print(f"kept {matches[0].key[:16]}: another process is using it; run `bneck cache rm` again when it ends")
        return 1
    print(f"removed {matches[0].key[:16]} ({matches[0].rows} rows, {_mb(freed)} MB)")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check every chunk (and recompute a sample); print what is wrong. Returns 1 if anything is, else 0."""
    from bneck.core.errors import ConfigError

    if args.recompute < 0 or (args.recompute and not args.data):
        raise ConfigError(
            f"--recompute N takes a positive N and --data DIR [DIR ...] (the images the rows "
            f"were made from). Received: recompute={args.recompute!r}, data={list(args.data)!r}."
        )
    missing = [d for d in args.data if not os.path.isdir(d)]
    if missing:
        raise ConfigError(
            f"--data must name folders of images; {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not a folder."
        )
    if args.seed is not None and not 0 <= args.seed < 2**32:
        raise ConfigError(f"--seed must be an integer from 0 to {2**32 - 1}. Received: seed={args.seed!r}.")
    cache = _cache_dir(args)  # checked once: a shared cache is walked entry by entry to be trusted
    if not os.path.isdir(cache):
        raise ConfigError(
            f"there is no cache at {cache}: nothing to verify (a cache that does not exist is not an "
            "intact one). Give the cache with --cache-dir (default $BNECK_CACHE or ~/.cache/bneck)."
        )
    checked, problems = verify_cache(cache)
    for path, problem in problems:
        print(f"damaged: {path}: {problem}")
    if problems:
        print(
            f"{len(problems)} of {checked} chunk(s) damaged. `bneck cache gc` removes them; the "
            "next extraction recomputes their rows."
        )
    else:
        print(f"{checked} chunk(s) in {cache}: all intact")
    differing = _recompute(args, cache) if args.recompute else 0
    return 1 if problems or differing else 0


def _recompute(args, cache: str) -> int:
    """Recompute a sample of every entry, print a table; returns how many rows differ."""
    from bneck.features.cache.verify import recompute_sample
    from bneck.features.runtimes.equivalence import TOLERANCE

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    print(f"recomputing {args.recompute} row(s) per entry, sample seed {seed} (--seed {seed} repeats it)")
    checks = recompute_sample(cache, args.data, args.recompute, seed)
    rows = [
        [
            c.key[:12],
            c.description,
            c.checked,
            f"{c.worst:.1e}" if c.checked else "-",
            len(c.differing) if not c.skipped else "-",
            c.skipped or "",
        ]
        for c in checks
    ]
    print(format_table(["key", "extractor", "recomputed", "worst rel diff", "differing", "skipped"], rows))
    bad = sum(len(c.differing) for c in checks)
    for c in checks:
        for sha in c.differing[:5]:
            print(
                f"differs: entry {c.key[:12]}, image sha256 {sha}: the stored row is not what this "
                f"extractor computes (beyond {TOLERANCE:g} relative, once any rounding its dtype stores is set "
                f"aside). Someone wrote a wrong row into the cache: remove the entry (`bneck cache rm {c.key[:16]}`) "
                "and compute it again (`bneck extract`, or `bneck finetune` for a fine-tuning view)."
            )
    return bad
