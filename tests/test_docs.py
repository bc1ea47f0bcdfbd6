"""The README is a front page and the docs beside it hold together: every link lands.

README.md stays short; every relative link in it and in docs/ names a file that exists
(and a heading that exists, where it names one); `mkdocs build --strict` passes, and a
broken link, anchor or unlisted page makes it fail, so the CI check is known to bite.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.pure

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
MAX_README_LINES = 250
needs_mkdocs = pytest.mark.extra("docs")  # skipped without mkdocs, except in CI, where it must be there

LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("**/*.md"))]


def outside_code(text: str) -> list[str]:
    """The lines of ``text`` outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def links(path: Path) -> list[str]:
    return [m.group(1) for line in outside_code(path.read_text()) for m in LINK.finditer(line)]


def slug(heading: str) -> str:
    """The anchor mkdocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "")  # code and emphasis marks; `<`, `>` go below
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    found = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.add(slug(m.group(2)))
    return found


def in_docs(path: Path) -> bool:
    return DOCS.resolve() in path.resolve().parents


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)  # not http:, https:, mailto:


def test_the_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.split("#")[0]).resolve() for t in links(README) if relative(t)}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md links no docs page {missing}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_lands(path):
    broken = []
    for target in filter(relative, links(path)):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif in_docs(path) and not in_docs(dest):
            broken.append(f"{target}: leaves docs/, so the built site cannot follow it")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading with the anchor #{anchor}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_slug_matches_mkdocs():
    assert slug("The HDF5 format: `OUT/<split>.h5`") == "the-hdf5-format-outsplith5"
    assert slug("Stage 3: `bneck finetune`") == "stage-3-bneck-finetune"
    assert slug("The recipe, measured (not inherited)") == "the-recipe-measured-not-inherited"


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # Never pass --quiet: mkdocs then drops the warnings that strict mode counts, and passes.
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@needs_mkdocs
def test_the_docs_build_in_strict_mode(tmp_path):
    done = mkdocs_build(MKDOCS_YML, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def sabotaged_copy(tmp_path: Path) -> Path:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(MKDOCS_YML, tmp_path / "mkdocs.yml")
    return tmp_path / "docs"


@needs_mkdocs
@pytest.mark.parametrize(
    "damage, says",
    [
        ("\n[a broken link](no-such-page.md)\n", "no-such-page.md"),
        ("\n[a broken anchor](train.md#no-such-heading)\n", "no-such-heading"),
        ("\n[an absolute link](/etc/passwd)\n", "/etc/passwd"),
        (None, "unlisted.md"),
    ],
)
def test_strict_mode_fails_on_a_broken_link(tmp_path, damage, says):
    docs = sabotaged_copy(tmp_path)
    if damage is None:
        (docs / "unlisted.md").write_text("# A page in no nav\n")
    else:
        with open(docs / "api.md", "a") as page:
            page.write(damage)
    done = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0, "mkdocs --strict passed a broken docs tree"
    assert says in done.stdout + done.stderr
