"""Cells of the CSV files bneck writes: never a formula, and read back exactly.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
(CSV injection, OWASP): a class folder named ``=cmd|' '`` would become a command in whoever opens
``predictions.csv``. Such a cell is written with a leading ``'`` (shown as text by spreadsheets);
so that bneck reads back exactly what it wrote, a cell that starts with ``'`` gets one too, and
reading strips one leading ``'``.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(text: str) -> str:
    """``text`` as a cell no spreadsheet runs (``read_cell`` gives ``text`` back)."""
    return "'" + text if text[:1] in FORMULA_STARTS or text[:1] == "'" else text


def read_cell(cell: str) -> str:
    """The text ``text_cell`` was given."""
    return cell[1:] if cell[:1] == "'" else cell


def shown(text: str) -> str:
    """``text`` as one line of terminal output: as it is when every character prints, else quoted with
    escapes (a name holding a line break, a terminal escape or undecodable bytes cannot pass for
    another line, or break the output's encoding)."""
    return text if text.isprintable() else repr(text)
