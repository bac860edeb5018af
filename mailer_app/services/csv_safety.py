"""Cells of the CSV files the app writes, made safe to open in a spreadsheet.

A cell starting with `=`, `+`, `-` or `@` is read as a formula by Excel, LibreOffice
and Google Sheets (CSV injection: `=HYPERLINK(...)` in a contact's name would run
when someone opens the export); a leading tab, carriage return or NUL can hide
such a start from a quick check. Those cells get a leading apostrophe, which
spreadsheets show as text and never evaluate (OWASP's advice).
"""

from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\x00")


def spreadsheet_safe(value: object) -> str:
    """A cell value that a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_START):
        return "'" + text
    return text


def safe_row(values) -> list[str]:
    """Every cell of a row through `spreadsheet_safe`."""
    return [spreadsheet_safe(v) for v in values]
