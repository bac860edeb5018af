"""Reading the contact CSV files people upload: streamed, forgiving where that is safe,
and loud (a reported row, never a silently lost one) where it is not.

The rules, each proved by tests/unit/test_contact_csv.py:

- **Streamed.** Bytes are read in chunks and handed to `csv` one physical line at a
  time; a row is kept only until it is handed out. A line longer than
  MAX_LINE_CHARS is skipped (and reported) without being held whole.
- **Size cap.** The file's size is checked before anything is read (FileTooLarge,
  a clear message with both sizes) and the bytes are counted again while reading.
- **Encoding.** A UTF-8 byte-order mark is dropped; UTF-16 files with a BOM are
  decoded; UTF-32, Excel workbooks and binary files are refused with a message
  that says what to do. Without a BOM the file is UTF-8 when its first 64 KB
  decode as UTF-8, else Windows-1252 (what Excel writes). A line with bytes that do
  not decode is reported and skipped.
- **Delimiter.** `,`, `;` or tab, chosen on the first lines (the one that splits
  the header into the most columns and the following lines into as many), or
  given by an Excel `sep=;` first line.
- **Line numbers** are physical line numbers in the file (the header is line 1
  when it is the first line), and a row's number is the line where it starts (a
  quoted value may run over several lines).
- **Blank lines** (and rows of empty values only) are skipped without a report.
- **Ragged rows.** A short row is padded with empty values (spreadsheets drop
  trailing empty cells). A row with more values than the header is reported,
  unless the extra values are all empty (trailing delimiters): a value with an
  unquoted delimiter in it would otherwise shift every following column.
- **Unterminated quote.** A quote that opens and is not closed makes `csv` read
  the following lines as one value. That row is reported on the line where it
  starts, and the lines it ran over are read again as rows of their own: nothing
  is swallowed silently.
- **Bad rows, reading goes on:** a value longer than csv's field size limit, a
  NUL byte, text after a closing quote, bytes that are not text.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import functools
import io
import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailer_app.services import InvalidInput

DELIMITERS = (",", ";", "\t")
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}
SAMPLE_BYTES = 64 * 1024  # what encoding and delimiter detection look at
SNIFF_RECORDS = 50
MAX_LINE_CHARS = 1024 * 1024  # one physical line; longer ones are skipped
# The most one row may hold over all its lines (they are kept until the row is
# handed out, to read them again after an unterminated quote). An unterminated
# quote hits csv's field size limit (128 Ki characters) long before.
MAX_ROW_CHARS = 8 * 1024 * 1024
HEADER_MAX_CHARS = 200
READ_BUFFER = 256 * 1024

ENCODING_LABELS = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8 (with BOM)",
    "utf-16": "UTF-16",
    "cp1252": "Windows-1252",
}
_SAVE_AS = "Save it from your spreadsheet as “CSV UTF-8” and upload it again."


class CsvFileError(InvalidInput):
    """The file as a whole cannot be read (nothing was imported from it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="file")


class FileTooLarge(CsvFileError):
    """The file is over the size cap."""


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that was skipped: the line it starts on, and why, in plain words."""

    line: int
    reason: str
    email: str = ""  # the address on the row, when the row got that far

    def __str__(self) -> str:
        return f"Line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CsvFormat:
    encoding: str  # a Python codec name (see ENCODING_LABELS)
    delimiter: str
    skip_lines: int = 0  # an Excel "sep=;" line before the header

    @property
    def encoding_label(self) -> str:
        return ENCODING_LABELS.get(self.encoding, self.encoding)

    @property
    def delimiter_label(self) -> str:
        return DELIMITER_NAMES[self.delimiter]


def file_size_text(size: int) -> str:
    """A size as people read it: "12.3 MB", or "40 KB" under a megabyte."""
    if size >= 1_000_000:
        return f"{size / 1_000_000:,.1f} MB"
    return f"{max(1, round(size / 1000))} KB"


def check_size(size: int, max_bytes: int) -> None:
    """FileTooLarge when `size` bytes is over the cap (the message gives both sizes)."""
    if size > max_bytes:
        raise FileTooLarge(
            f"This file is {file_size_text(size)}; files up to {file_size_text(max_bytes)} can be "
            "imported. Split it into smaller files and import them one after the other."
        )


# --- format detection ---------------------------------------------------------------


def detect_format(path: str | os.PathLike[str]) -> CsvFormat:
    """The encoding and delimiter of a CSV file, from its first 64 KB.

    Raises CsvFileError for files that are not CSV text (UTF-32, a workbook, binary).
    """
    with open(path, "rb") as fh:
        head = fh.read(SAMPLE_BYTES)
        truncated = bool(fh.read(1))
    encoding = _detect_encoding(head)
    text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
    if truncated:
        # The sample may end inside a line: leave that line out of the sniffing.
        cut = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: cut + 1] if cut >= 0 else text
    delimiter, skip = _detect_delimiter(text)
    return CsvFormat(encoding=encoding, delimiter=delimiter, skip_lines=skip)


def _detect_encoding(head: bytes) -> str:
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise CsvFileError(
            "This file is saved as UTF-32 text, which cannot be imported. " + _SAVE_AS
        )
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if head.startswith(b"PK\x03\x04"):
        raise CsvFileError(
            "This is a spreadsheet workbook (such as .xlsx), not a CSV file. " + _SAVE_AS
        )
    if head and head.count(b"\x00") * 10 > len(head):
        raise CsvFileError(
            "This file is full of NUL (zero) bytes, so it is not CSV text: it may be a "
            "binary file, or UTF-16 text saved without a byte-order mark. " + _SAVE_AS
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1252"  # what Excel on Windows writes for "CSV (comma delimited)"
    return "utf-8"


_SEP_LINE = re.compile(r"\A\ufeff?sep=(.)\r?\n?", re.IGNORECASE)


def _detect_delimiter(text: str) -> tuple[str, int]:
    """(delimiter, lines to skip): an Excel `sep=` line wins, else the best split."""
    match = _SEP_LINE.match(text)
    if match:
        delimiter = match.group(1)
        if delimiter not in DELIMITERS:
            raise CsvFileError(
                f"The file's first line asks for “{delimiter}” between values; use a comma, "
                "a semicolon or a tab instead."
            )
        return delimiter, 1
    best, best_score = ",", (False, 0.0, 0)
    for delimiter in DELIMITERS:
        counts = []
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            for record in reader:
                if record and any(v.strip() for v in record):
                    counts.append(len(record))
                if len(counts) >= SNIFF_RECORDS:
                    break
        except csv.Error:
            pass  # judged on what was read before the damage
        if not counts:
            continue
        header = counts[0]
        consistent = sum(1 for c in counts if c == header) / len(counts)
        score = (header > 1, consistent, header)
        if score > best_score:
            best, best_score = delimiter, score
    return best, 0


# --- reading --------------------------------------------------------------------------


class _LongLine(Exception):
    """A physical line over MAX_LINE_CHARS (skipped without being held whole)."""


class _LongRow(Exception):
    """A row whose lines add up to over MAX_ROW_CHARS."""


class _CountingFile(io.RawIOBase):
    """A binary file that counts what it hands out and stops past the size cap."""

    def __init__(self, fh, max_bytes: int) -> None:
        self._fh = fh
        self._max = max_bytes
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._fh.readinto(buffer)
        self.count += n
        if self.count > self._max:
            check_size(self.count, self._max)  # the file grew while it was read
        return n


class ContactCsv:
    """An open contact CSV: `header`, `header_line`, `format`, `size`, `bytes_read`,
    and iteration. Use as a context manager.

    Iterating yields `(line, values)` for each row (values padded to the header's
    width) or a `RowError` for a row that was skipped.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.path = Path(path)
        try:
            self.size = self.path.stat().st_size
        except FileNotFoundError:
            raise CsvFileError("The uploaded file is gone; upload it again.") from None
        check_size(self.size, max_bytes)
        if self.size == 0:
            raise CsvFileError("The file is empty.")
        self.format = detect_format(self.path)
        self.field_limit = csv.field_size_limit()
        self._raw = open(self.path, "rb")  # noqa: SIM115  (closed by close())
        self._counter = _CountingFile(self._raw, max_bytes)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._counter, buffer_size=READ_BUFFER),
            encoding=self.format.encoding,
            errors="replace",
            newline="",
        )
        # The lines of the row being read: kept until the row is handed out, to read
        # them again after an unterminated quote.
        self._record: list[str] = []
        self._replay: deque[str] = deque()
        self._lines_done = 0  # physical lines before the row being read
        self._flagged = False  # a line of the row has a NUL or undecodable bytes
        self.header: list[str] = []
        self.header_line = 0
        try:
            for _ in range(self.format.skip_lines):
                self._skip_line()
            self._read_header()
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[tuple[int, list[str]] | RowError]:
        return self._records(len(self.header))

    # -- lines

    def _line_source(self) -> Iterator[str]:
        """Physical lines for csv.reader: lines to read again first, then the file's."""
        record, replay = self._record, self._replay
        append = record.append
        while replay:
            line = replay.popleft()
            if "\x00" in line or "\ufffd" in line:
                self._flagged = True
            append(line)
            yield line
        size = 0  # characters in `record`
        for line in iter(functools.partial(self._text.readline, MAX_LINE_CHARS), ""):
            if len(line) >= MAX_LINE_CHARS and line[-1] not in "\r\n":
                self._skip_rest_of_line()
                raise _LongLine
            if "\x00" in line or "\ufffd" in line:
                self._flagged = True
            if not record:
                size = 0
            size += len(line)
            append(line)
            if size > MAX_ROW_CHARS:
                raise _LongRow  # quoted values running over many lines (never a real row)
            yield line

    def _skip_line(self) -> None:
        line = self._text.readline(MAX_LINE_CHARS)
        if line and len(line) >= MAX_LINE_CHARS and line[-1] not in "\r\n":
            self._skip_rest_of_line()
        self._lines_done += 1

    def _skip_rest_of_line(self) -> None:
        while True:
            rest = self._text.readline(MAX_LINE_CHARS)
            if not rest or rest[-1] in "\r\n":
                return

    # -- rows

    def _read_header(self) -> None:
        width = None
        for item in self._records(width):
            if type(item) is RowError:
                raise CsvFileError(
                    f"The first row (the column names) could not be read: {item.reason}"
                )
            self.header_line, values = item
            self.header = unique_column_names(values)
            return
        raise CsvFileError("The file has no rows: it is empty or holds only blank lines.")

    def _records(self, width: int | None) -> Iterator[tuple[int, list[str]] | RowError]:
        """Rows as (first line, values), or the RowError that ended one.

        With `width`, rows are fitted to it (ragged rows, see the module docstring).
        Blank lines and rows of empty values are skipped.
        """
        record = self._record
        delimiter = self.format.delimiter
        delimiter_name = self.format.delimiter_label
        while True:
            reader = csv.reader(self._line_source(), delimiter=delimiter, strict=True)
            try:
                for values in reader:
                    start = self._lines_done + 1
                    self._lines_done += len(record)
                    del record[:]
                    if self._flagged:
                        self._flagged = False
                        if not _text_ok(values):
                            yield self._damaged(start, values)
                            continue
                    if not any(values):
                        continue
                    if width is not None and len(values) != width:
                        count = len(values)
                        if count < width:
                            values.extend([""] * (width - count))
                        elif any(v.strip() for v in values[width:]):
                            yield RowError(
                                start,
                                f"This row has {count} values but the header has {width} "
                                f"columns. A value with a {delimiter_name} in it must be in "
                                "quotes.",
                            )
                            continue
                        else:
                            del values[width:]
                    yield start, values
                return
            except csv.Error as exc:
                yield self._broken_record(exc)
            except _LongLine:
                yield self._long_line()
            except _LongRow:
                yield self._long_row()

    def _damaged(self, start: int, values: list[str]) -> RowError:
        if any("\x00" in v for v in values):
            return RowError(
                start,
                "This row contains a NUL character (a zero byte), so it was skipped; "
                "the file may be damaged.",
            )
        return RowError(
            start,
            f"This row has bytes that are not {self.format.encoding_label} text, so it "
            f"was skipped. {_SAVE_AS}",
        )

    def _broken_record(self, exc: csv.Error) -> RowError:
        record = self._record
        start = self._lines_done + 1
        end = self._lines_done + len(record)
        self._replay.extend(record[1:])
        del record[:]
        self._flagged = False
        self._lines_done += 1  # the row's first line; the others are read again
        message = str(exc)
        if end > start:
            # A quote opened on `start` made csv read the next lines as one value.
            again = (
                f"Line {end} was read again on its own."
                if end == start + 1
                else f"Lines {start + 1}–{end} were read again on their own."
            )
            return RowError(
                start,
                f'A quote (") opened on this line is not closed, so lines {start}–{end} '
                f"ran together as one row. {again}",
            )
        if "field larger than field limit" in message:
            reason = (
                f"A value on this line is longer than {self.field_limit:,} characters, "
                "the most one value may have."
            )
        elif "unexpected end of data" in message:
            reason = 'A quote (") opened on this line is never closed.'
        elif "expected after" in message:
            reason = (
                "A value in quotes is followed by more text before the next "
                f"{self.format.delimiter_label}. Put the whole value in quotes and "
                'double any quote inside it ("").'
            )
        else:
            reason = f"This line could not be read ({message})."
        return RowError(start, reason)

    def _long_line(self) -> RowError:
        record = self._record
        start = self._lines_done + 1
        number = self._lines_done + len(record) + 1  # the long line itself
        del record[:]
        self._flagged = False
        self._lines_done = number
        if start < number:
            return RowError(
                start,
                f"The row starting on this line runs into line {number}, which is longer "
                f"than {MAX_LINE_CHARS:,} characters; lines {start}–{number} were skipped.",
            )
        return RowError(
            number, f"This line is longer than {MAX_LINE_CHARS:,} characters; it was skipped."
        )

    def _long_row(self) -> RowError:
        record = self._record
        start = self._lines_done + 1
        self._lines_done += len(record)
        del record[:]
        self._flagged = False
        return RowError(
            start,
            f"The row starting on this line runs over {self._lines_done - start + 1:,} lines "
            f"and more than {MAX_ROW_CHARS:,} characters (a quote that is never closed?); "
            f"lines {start}–{self._lines_done} were skipped.",
        )

    # -- progress and closing

    @property
    def bytes_read(self) -> int:
        """Bytes read from the file so far (a little ahead of the rows handed out)."""
        return self._counter.count

    def close(self) -> None:
        with contextlib.suppress(AttributeError, ValueError):
            self._text.close()
        self._raw.close()

    def __enter__(self) -> ContactCsv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text_ok(values: list[str]) -> bool:
    return not any("\x00" in v or "\ufffd" in v for v in values)


def open_contact_csv(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> ContactCsv:
    """Open a contact CSV for streaming (`max_bytes` defaults to the upload size cap)."""
    if max_bytes is None:
        from mailer_app.settings import get_settings

        max_bytes = get_settings().contacts_max_upload_bytes
    return ContactCsv(path, max_bytes=max_bytes)


def unique_column_names(values: list[str]) -> list[str]:
    """Header cells as column names: trimmed, blanks named by position, repeats numbered."""
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(values, start=1):
        name = " ".join(value.replace("\ufeff", "").split())[:HEADER_MAX_CHARS]
        name = name or f"Column {index}"
        candidate, n = name, 2
        while candidate.lower() in seen:
            candidate, n = f"{name} ({n})", n + 1
        seen.add(candidate.lower())
        names.append(candidate)
    return names


# --- exports ----------------------------------------------------------------------------

# Moved to services/csv_safety.py (shared by every CSV export); kept importable here.
from mailer_app.services.csv_safety import spreadsheet_safe  # noqa: E402, F401
