"""The docs' option tables are the option tables: written from them, and checked here."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pure

# Where each stage's table lives: one table per page.
PAGES = {
    "extract": "docs/extract.md",
    "train": "docs/train.md",
    "finetune": "docs/finetune.md",
    "ensemble": "docs/ensemble.md",
}


def options_tables():
    spec = importlib.util.spec_from_file_location("options_tables", ROOT / "scripts" / "options_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    return tables


def test_each_stage_table_is_on_its_page_once():
    tables = options_tables()
    assert set(PAGES) == set(tables.TABLES)
    for name, page in PAGES.items():
        assert (ROOT / page).read_text().count(f"<!-- options:{name} -->") == 1, page
    marked = {path.relative_to(ROOT).as_posix() for path in tables.marked_files()}
    assert marked == set(PAGES.values()), "option tables belong on the stage pages only"


@pytest.mark.parametrize("page", sorted(PAGES.values()))
def test_the_docs_option_tables_match_the_stages_tables(page):
    text = (ROOT / page).read_text()
    assert options_tables().render(text) == text, (
        f"run `python scripts/options_tables.py` to rewrite the option tables in {page}"
    )


def test_a_stale_table_is_caught():
    tables = options_tables()
    text = (ROOT / PAGES["train"]).read_text()
    stale = text.replace("| `--epochs` |", "| `--epochz` |", 1)
    assert stale != text and tables.render(stale) == text
