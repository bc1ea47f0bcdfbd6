"""Write the docs' option tables from the stages' option tables (the one place options are declared).

The tables sit between `<!-- options:NAME -->` and `<!-- /options -->` markers, in the pages
under docs/ (extract.md, train.md, finetune.md, ensemble.md) and wherever else a marker is put (README.md too).

    python scripts/options_tables.py          # rewrite every marked table
    python scripts/options_tables.py --check  # exit 1 if any file differs (tests/test_readme.py checks the same)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.features.extraction.options import EXTRACT  # noqa: E402
from bneck.pipeline.ensemble.options import ENSEMBLE  # noqa: E402
from bneck.pipeline.finetuning.options import FINETUNE  # noqa: E402
from bneck.pipeline.training.options import TRAIN  # noqa: E402

TABLES = {"extract": EXTRACT, "train": TRAIN, "finetune": FINETUNE, "ensemble": ENSEMBLE}
BLOCK = re.compile(r"(<!-- options:(\w+) -->\n)(?:.*?\n)?(<!-- /options -->)", re.S)


def render(text: str) -> str:
    """Return ``text`` with every marked block replaced by its table."""
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group(2)].markdown() + "\n" + m.group(3), text)


def marked_files() -> list[Path]:
    """The Markdown files holding at least one marked table: README.md and the pages under docs/."""
    candidates = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    return [path for path in candidates if path.is_file() and "<!-- options:" in path.read_text()]


def main(argv: list[str]) -> int:
    stale = []
    for path in marked_files():
        text = path.read_text()
        new = render(text)
        if new == text:
            continue
        if "--check" in argv:
            stale.append(path.relative_to(ROOT).as_posix())
        else:
            path.write_text(new)
            print(f"rewrote the option tables in {path.relative_to(ROOT).as_posix()}")
    if stale:
        print(
            f"the option tables in {', '.join(stale)} differ from the stages' option tables; "
            "run scripts/options_tables.py"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
