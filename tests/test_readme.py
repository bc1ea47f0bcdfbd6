"""The README's option tables are the option tables: written from them, and checked here."""
from __future__ import annotations
import pytest

import importlib.util

from tests.conftest import ROOT

pytestmark = pytest.mark.pure


def test_the_readme_option_tables_match_the_stages_tables():
    spec = importlib.util.spec_from_file_location("options_tables", ROOT / "scripts" / "options_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- options:") == 3
    assert tables.render(text) == text, "run `python scripts/options_tables.py` to rewrite the README's tables"
