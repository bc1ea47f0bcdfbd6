"""The ``bneck`` command line: a thin layer over the public Python API.

User mistakes print one paragraph and exit with code 2; Ctrl-C exits with 130
after saying what was kept (SIGTERM: the same paragraph, exit 143).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bneck.core.atomic import storage_error, write_failure
from bneck.core.private import no_write_for_others
from bneck.core.signals import Terminated, sigterm_as_interrupt
from bneck.features import BneckError
from bneck.pipeline.cli import cache, ensemble, export, extract, finetune, info, run, train, weights
from bneck.pipeline.cli.polish import polish
from bneck.pipeline.cli.reporting import terminal_reports

# What Ctrl-C keeps, per command: said as it is, so nobody waits for a resume that does not come.
INTERRUPTED = {
    "extract": "Every finished batch is saved in the cache; run the same command again to continue where it stopped.",
    "run": "Every finished batch of features is in the cache and every finished classifier in its folder; "
    "run the same command again: they are reused, and the stage that was stopped starts again.",
    "train": "Classifiers that had finished are kept in their folders and reused by the same command; the "
    "one being trained was not saved and is trained again.",
    "export": "Nothing was written (the --out folder is as it was).",
    "ensemble": "Nothing was written (the --out folder is as it was).",
    "predict": "Nothing was written (predict keeps no cache: the --csv file is written once every input is "
    "classified); run the same command again.",
    "evaluate": "Nothing was written.",
    "finetune": "Nothing was saved (the output folder is as it was); frozen-part rows already cached are "
    "reused when you run the same command again.",
}

DEFAULT_INTERRUPTED = "Every file bneck writes is written whole or not at all: what was there before is intact."


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bneck",
        description="Bottleneck-feature transfer learning on a CPU: extract "
        "features once, train classifiers on them in seconds.",
        epilog="start with: bneck demo --data DATA_DIR --out runs/demo   (then open runs/demo/report.html)",
    )
    from bneck.pipeline import __version__

    parser.add_argument("--version", action="version", version=f"bneck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    extract.add_parser(sub)
    train.add_parsers(sub)
    finetune.add_parser(sub)
    run.add_parsers(sub)
    ensemble.add_parser(sub)
    cache.add_parser(sub)
    export.add_parser(sub)
    info.add_parsers(sub)
    weights.add_parser(sub)
    polish(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    with terminal_reports(quiet=True):  # a plugin that fails to load, met while the help is built: one line
        parser = build_parser()
    try:  # shell completion: `eval "$(register-python-argcomplete bneck)"` (README)
        import argcomplete

        argcomplete.autocomplete(parser)  # returns at once unless the shell is asking for completions
    except ImportError:
        pass
    args = parser.parse_args(argv)
    try:
        quiet = bool(getattr(args, "quiet", False))
        with terminal_reports(quiet=quiet), no_write_for_others(), sigterm_as_interrupt():
            code = args.run(args)
            sys.stdout.flush()  # here, where a reader that left (`bneck ... | head`) is caught below
            return code
    except BrokenPipeError:  # the reader of our output left: nothing more to say, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BneckError as exc:
        print(f"bneck {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a write refused outside an atomic writer (OSError, HDF5's, TensorFlow's)
        if write_failure(exc) is None:
            raise
        print(f"bneck {args.command}: error: {storage_error(exc, _written_path(exc, args))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (bneck.core.signals)
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"\nbneck {args.command}: {how}. {INTERRUPTED.get(args.command, DEFAULT_INTERRUPTED)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def _written_path(exc: BaseException, args: argparse.Namespace) -> str:
    """The file a refused write named, else the folders the command writes (never just "a file")."""
    named = getattr(exc, "filename", None)
    if named:
        return str(named)
    places = [str(p) for p in (getattr(args, "out", None), getattr(args, "cache_dir", None)) if p]
    return f"a file under {' or '.join(places)}" if places else "a file (in the output or cache folder)"


if __name__ == "__main__":
    sys.exit(main())
