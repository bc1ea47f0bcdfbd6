"""Write the README's option tables from the stages' option tables (the one place options are declared).

    python scripts/options_tables.py          # rewrite README.md's tables
    python scripts/options_tables.py --check  # exit 1 if README.md differs (tests/test_readme.py runs this)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bneck.features.extract_options import EXTRACT  # noqa: E402
from bneck.pipeline.finetuning.options import FINETUNE  # noqa: E402
from bneck.pipeline.training.options import TRAIN  # noqa: E402

TABLES = {"extract": EXTRACT, "train": TRAIN, "finetune": FINETUNE}
BLOCK = re.compile(r"(<!-- options:(\w+) -->\n)(?:.*?\n)?(<!-- /options -->)", re.S)


def render(text: str) -> str:
    """Return ``text`` with every marked block replaced by its table."""
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group(2)].markdown() + "\n" + m.group(3), text)


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("README.md's option tables differ from the option tables; run scripts/options_tables.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
