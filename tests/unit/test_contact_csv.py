"""The contact CSV reader against hostile files, and the row checks of an import.

Each corpus case asserts the rows kept, the rows reported (by line) and the
message a person reads. `read` goes through `checked_rows`, exactly what the
import job does with a file before writing anything.
"""

from __future__ import annotations

import codecs
import csv
import random
import string
import tracemalloc

import pytest
from email_validator import EmailNotValidError, validate_email

from mailer_app.services import InvalidInput
from mailer_app.services.contact_csv import (
    MAX_LINE_CHARS,
    CsvFileError,
    FileTooLarge,
    RowError,
    open_contact_csv,
    spreadsheet_safe,
    unique_column_names,
)
from mailer_app.services.contact_import import checked_rows
from mailer_app.services.contacts import (
    check_mapping,
    custom_field_name,
    normalize_contact_email,
    preview_csv,
    suggest_mapping,
)

MB = 1_000_000


@pytest.fixture
def write(tmp_path):
    def make(data: bytes | str, name: str = "contacts.csv"):
        path = tmp_path / name
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    return make


def read(path, max_bytes: int = 10 * MB):
    """(kept rows as (line, email, first, last, fields), reported RowErrors, reader)."""
    kept, reported = [], []
    with open_contact_csv(path, max_bytes=max_bytes) as reader:
        mapping = check_mapping(reader.header, suggest_mapping(reader.header))
        for item in checked_rows(reader, mapping):
            (reported if isinstance(item, RowError) else kept).append(item)
    return kept, reported, reader


def lines(rows) -> list[int]:
    return [r.line if isinstance(r, RowError) else r[0] for r in rows]


# --- encodings -------------------------------------------------------------------------


def test_utf8_bom_is_dropped_from_the_first_column(write):
    path = write(codecs.BOM_UTF8 + b"Email,First name\nann@example.com,Ann\n")
    kept, reported, reader = read(path)
    assert reader.header == ["Email", "First name"]
    assert kept == [(2, "ann@example.com", "Ann", "", "{}")]
    assert reported == []
    assert reader.format.encoding_label == "UTF-8 (with BOM)"


def test_utf16_with_bom_is_decoded(write):
    path = write("email\tfirst_name\nzoë@example.com\tZoë\n".encode("utf-16"))
    kept, reported, reader = read(path)
    assert kept == [(2, "zoë@example.com", "Zoë", "", "{}")]
    assert reported == []
    assert (reader.format.encoding_label, reader.format.delimiter_label) == ("UTF-16", "tab")


def test_utf32_is_refused_with_what_to_do(write):
    path = write("email\nann@example.com\n".encode("utf-32"))
    with pytest.raises(CsvFileError, match="UTF-32 text, which cannot be imported.*CSV UTF-8"):
        read(path)


def test_windows_1252_export_is_read_as_such(write):
    path = write("email;first_name\nrene@example.com;René\n".encode("cp1252"))
    kept, reported, reader = read(path)
    assert kept == [(2, "rene@example.com", "René", "", "{}")]
    assert reader.format.encoding_label == "Windows-1252"


def test_bytes_that_are_not_utf8_after_the_sample_are_reported_per_row(write):
    filler = "".join(f"user{i}@example.com,Name{i}\n" for i in range(4000))  # > 64 KB
    data = (
        "email,first_name\n" + filler
    ).encode() + b"bad@example.com,Ren\xe9\nlast@example.com,L\n"
    kept, reported, _ = read(write(data))
    assert len(kept) == 4001
    assert lines(reported) == [4002]
    assert "bytes that are not UTF-8 text" in reported[0].reason


def test_a_workbook_is_refused(write):
    with pytest.raises(CsvFileError, match="spreadsheet workbook"):
        read(write(b"PK\x03\x04" + b"\x00" * 100))


def test_a_file_full_of_nul_bytes_is_refused(write):
    with pytest.raises(CsvFileError, match="full of NUL"):
        read(write("email,name\nann@example.com,Ann\n".encode("utf-16-le")))


# --- delimiters and structure ------------------------------------------------------------


def test_semicolons_with_commas_inside_values(write):
    path = write("email;first_name;company\nann@example.com;Ann;Smith, Jones & Co\n")
    kept, reported, reader = read(path)
    assert reader.format.delimiter_label == "semicolon"
    assert kept == [(2, "ann@example.com", "Ann", "", '{"company":"Smith, Jones & Co"}')]
    assert reported == []


def test_tabs(write):
    kept, reported, reader = read(write("email\tcity\r\nann@example.com\tOslo\r\n"))
    assert reader.format.delimiter_label == "tab"
    assert kept == [(2, "ann@example.com", "", "", '{"city":"Oslo"}')]


def test_an_excel_sep_line_chooses_the_delimiter(write):
    kept, _, reader = read(write("sep=;\nemail;city\nann@example.com;Oslo, Norway\n"))
    assert (reader.format.delimiter_label, reader.header_line) == ("semicolon", 2)
    assert kept == [(3, "ann@example.com", "", "", '{"city":"Oslo, Norway"}')]


def test_quoted_newlines_keep_line_numbers_physical(write):
    path = write('email,notes\nann@example.com,"two\nlines"\nbob@example.com,one\n')
    kept, reported, _ = read(path)
    assert kept == [
        (2, "ann@example.com", "", "", '{"notes":"two\\nlines"}'),
        (4, "bob@example.com", "", "", '{"notes":"one"}'),
    ]
    assert reported == []


def test_blank_lines_and_empty_rows_are_skipped_silently(write):
    kept, reported, _ = read(write("email,city\n\nann@example.com,Oslo\n,\n\nbob@example.com,\n"))
    assert lines(kept) == [3, 6]
    assert reported == []


def test_ragged_rows_short_padded_long_reported(write):
    path = write(
        "email,first_name,city\n"
        "short@example.com\n"  # padded
        "trailing@example.com,T,Oslo,,\n"  # extra empty cells: kept
        "long@example.com,Smith, John,Oslo\n"  # an unquoted comma shifts columns
    )
    kept, reported, _ = read(path)
    assert kept == [
        (2, "short@example.com", "", "", "{}"),
        (3, "trailing@example.com", "T", "", '{"city":"Oslo"}'),
    ]
    assert lines(reported) == [4]
    assert reported[0].reason == (
        "This row has 4 values but the header has 3 columns. "
        "A value with a comma in it must be in quotes."
    )


def test_unterminated_quote_is_reported_and_the_lines_it_swallowed_are_read_again(write):
    path = write(
        "email,first_name\n"
        'ann@example.com,"Ann\n'  # line 2: the quote is never closed
        "bob@example.com,Bob\n"
        'carl@example.com,"Carl"\n'
        "dan@example.com,Dan\n"
    )
    kept, reported, _ = read(path)
    assert [(line, email) for line, email, *_ in kept] == [
        (3, "bob@example.com"),
        (4, "carl@example.com"),
        (5, "dan@example.com"),
    ]
    assert lines(reported) == [2]
    assert reported[0].reason == (
        'A quote (") opened on this line is not closed, so lines 2–4 ran together as one '
        "row. Lines 3–4 were read again on their own."
    )


def test_unterminated_quote_running_to_the_end_of_the_file(write):
    path = write(
        'email,first_name\nann@example.com,Ann\nbob@example.com,"Bob\ncarl@example.com,C\n'
    )
    kept, reported, _ = read(path)
    assert [line for line, *_ in kept] == [2, 4]
    assert lines(reported) == [3]
    assert "Line 4 was read again on its own." in reported[0].reason


def test_unterminated_quote_on_the_last_line(write):
    kept, reported, _ = read(write('email,first_name\nann@example.com,Ann\nbob@example.com,"Bob'))
    assert lines(kept) == [2]
    assert [(r.line, r.reason) for r in reported] == [
        (3, 'A quote (") opened on this line is never closed.')
    ]


def test_text_after_a_closing_quote(write):
    kept, reported, _ = read(write('email,name\nann@example.com,"Ann" Lee\nbob@example.com,Bob\n'))
    assert lines(kept) == [3]
    assert reported[0].line == 2
    assert reported[0].reason.startswith("A value in quotes is followed by more text")


def test_a_field_over_the_csv_limit_is_reported_and_reading_goes_on(write):
    limit = csv.field_size_limit()
    path = write(f"email,notes\nann@example.com,{'x' * (limit + 10)}\nbob@example.com,ok\n")
    kept, reported, _ = read(path)
    assert [(line, email) for line, email, *_ in kept] == [(3, "bob@example.com")]
    assert [(r.line, r.reason) for r in reported] == [
        (
            2,
            f"A value on this line is longer than {limit:,} characters, "
            "the most one value may have.",
        )
    ]


def test_an_unterminated_quote_over_the_field_limit_loses_no_row(write):
    limit = csv.field_size_limit()
    rows = "".join(f"user{i}@example.com,{'y' * 100}\n" for i in range(limit // 100 + 50))
    kept, reported, _ = read(write('email,notes\nann@example.com,"open\n' + rows))
    assert len(kept) == limit // 100 + 50  # every swallowed line came back as its row
    assert lines(reported) == [2]


def test_nul_bytes_are_reported(write):
    path = write(b"email,name\nann@example.com,A\x00nn\nbob@example.com,Bob\n")
    kept, reported, _ = read(path)
    assert lines(kept) == [3]
    assert [(r.line, r.reason) for r in reported] == [
        (
            2,
            "This row contains a NUL character (a zero byte), so it was skipped; "
            "the file may be damaged.",
        )
    ]


def test_a_line_longer_than_the_line_limit_is_skipped_without_holding_it(write):
    path = write(
        "email,notes\nann@example.com," + "z" * (MAX_LINE_CHARS + 5) + "\nbob@example.com,b\n"
    )
    kept, reported, _ = read(path)
    assert lines(kept) == [3]
    assert [(r.line, r.reason) for r in reported] == [
        (2, f"This line is longer than {MAX_LINE_CHARS:,} characters; it was skipped.")
    ]


# --- size, empty, header only --------------------------------------------------------------


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(write):
    # UTF-32 would be refused too: the size message first proves nothing was read.
    path = write(codecs.BOM_UTF32 + b"x" * 2_500_000)
    with pytest.raises(FileTooLarge) as caught:
        read(path, max_bytes=1 * MB)
    assert str(caught.value) == (
        "This file is 2.5 MB; files up to 1.0 MB can be imported. Split it into smaller "
        "files and import them one after the other."
    )


def test_a_file_that_grows_past_the_cap_while_read_stops(write):
    path = write("email\n" + "a@example.com\n" * 10)
    with open_contact_csv(path, max_bytes=400_000) as reader, open(path, "a") as grow:
        grow.write("b@example.com\n" * 40_000)
        grow.flush()
        with pytest.raises(FileTooLarge, match="files up to 400 KB"):
            for _ in reader:
                pass


def test_an_empty_file(write):
    with pytest.raises(CsvFileError, match="^The file is empty.$"):
        read(write(b""))
    with pytest.raises(CsvFileError, match="no rows: it is empty or holds only blank lines"):
        read(write("\n\n\r\n"))


def test_header_only(write):
    kept, reported, reader = read(write("email,first_name,city\n"))
    assert (kept, reported) == ([], [])
    assert reader.header == ["email", "first_name", "city"]


def test_header_names_blank_and_repeated(write):
    assert unique_column_names([" Email ", "", "email", "City", "city"]) == [
        "Email",
        "Column 2",
        "email (2)",
        "City",
        "city (2)",
    ]


# --- addresses -----------------------------------------------------------------------------


def test_duplicate_addresses_keep_the_first_and_report_the_others(write):
    path = write(
        "email,first_name\nann@example.com,Ann\nbob@example.com,Bob\nann@example.com,Again\n"
    )
    kept, reported, _ = read(path)
    assert [(line, first) for line, _, first, *_ in kept] == [(2, "Ann"), (3, "Bob")]
    assert [(r.line, r.email, r.reason) for r in reported] == [
        (4, "ann@example.com", "The same address as line 2 (addresses are compared ignoring case).")
    ]


def test_mixed_case_addresses_are_lowercased_and_deduplicated(write):
    path = write("EMAIL,First Name\n  Ann.Lee@Example.COM ,Ann\nann.lee@example.com,Dup\n")
    kept, reported, _ = read(path)
    assert kept == [(2, "ann.lee@example.com", "Ann", "", "{}")]
    assert [(r.line, r.email) for r in reported] == [(3, "ann.lee@example.com")]


def test_bad_addresses_are_reported_with_the_reason(write):
    path = write(
        "email\nnot-an-address\nann@example\n\u00e4nn@b\u00fccher.example\n,\nbob@printer.local\n"
    )
    kept, reported, _ = read(path)
    assert [email for _, email, *_ in kept] == ["\u00e4nn@b\u00fccher.example"]
    assert [r.line for r in reported] == [2, 3, 6]
    assert reported[0].reason.startswith("“not-an-address” is not a valid email address:")
    assert reported[0].reason.endswith("An email address must have an @-sign.")
    assert "should have a period" in reported[1].reason
    assert "special-use or reserved name" in reported[2].reason


def test_the_fast_address_check_agrees_with_email_validator():
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + ".-_+@!#%&'*/=?^`{|}~ \"(),:;<>[]\\é"
    samples = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(20_000)
    ]
    samples += [
        f"{rng.choice(['a', 'A.b', 'x-y', 'q+tag', '.a', 'a.', 'a..b'])}@"
        f"{rng.choice(['ex', 'e-x', 'e--x', 'ab--cd', 'xn--bcher-kva', '-x', 'x-', '1'])}."
        f"{rng.choice(['com', 'c0m', 'c', 'test', 'local', 'arpa', 'invalid', 'x' * 70])}"
        for _ in range(20_000)
    ]
    for sample in samples:
        try:
            expected = validate_email(
                sample.strip(), check_deliverability=False, test_environment=True
            ).normalized.lower()
        except EmailNotValidError:
            expected = None
        try:
            got = normalize_contact_email(sample)
        except InvalidInput:
            got = None
        assert got == expected, sample


# --- mapping ---------------------------------------------------------------------------------


def test_suggested_mapping_and_field_names():
    columns = ["E-mail Address", "First Name", "Surname", "Customer ID", "2nd phone", "class"]
    assert suggest_mapping(columns) == {
        "E-mail Address": "email",
        "First Name": "first_name",
        "Surname": "last_name",
        "Customer ID": "customer_id",
        "2nd phone": "f_2nd_phone",
        "class": "class_",
    }
    assert custom_field_name("  Tier (2024) ") == "tier_2024"
    assert custom_field_name("!!!") == ""


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"email": "", "city": "city"}, "Choose the column that holds the email addresses."),
        ({"email": "email", "city": "email"}, "Only one column can be the email address."),
        ({"email": "email", "nope": "x"}, "The file has no column called nope."),
        (
            {"email": "email", "city": "tier", "name": "Tier"},
            "Two columns would both become the field tier",
        ),
        (
            {"email": "email", "city": "first_name", "name": "first_name"},
            "Only one column can be the first name.",
        ),
        ({"email": "email", "city": "???"}, "Give the column city a field name"),
    ],
)
def test_mapping_mistakes_are_explained(mapping, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")) as caught:
        check_mapping(["email", "city", "name"], mapping)
    assert caught.value.field == "mapping"


def test_preview_shows_the_first_rows_and_their_problems(write):
    path = write(
        'email;City\nann@example.com;Oslo\n"bad;x\ny@example.com;Rome\n'
        + "z@example.com;Lima\n" * 9
    )
    preview = preview_csv(path, limit=3)
    assert (preview.columns, preview.delimiter, preview.encoding) == (
        ["email", "City"],
        "semicolon",
        "UTF-8",
    )
    assert preview.rows == [
        ["ann@example.com", "Oslo"],
        ["y@example.com", "Rome"],
        ["z@example.com", "Lima"],
    ]
    assert preview.lines == [2, 4, 5]
    assert [e.line for e in preview.errors] == [3]


# --- streaming and exports -------------------------------------------------------------------


def test_reading_never_holds_the_file(write):
    rows = "".join(
        f"user{i}@example{i % 50}.com,First{i},Last{i},{'n' * 40}\n" for i in range(150_000)
    )
    path = write("email,first_name,last_name,notes\n" + rows)
    assert path.stat().st_size > 12 * MB
    tracemalloc.start()
    try:
        with open_contact_csv(path, max_bytes=100 * MB) as reader:
            count = sum(1 for item in reader if not isinstance(item, RowError))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 150_000
    assert peak < 2 * MB, (
        f"peak {peak / MB:.1f} MB while reading a {path.stat().st_size / MB:.0f} MB file"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("x")', '\'=HYPERLINK("x")'),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("ann@example.com", "ann@example.com"),
        ("", ""),
    ],
)
def test_report_cells_are_safe_in_spreadsheets(value, shown):
    assert spreadsheet_safe(value) == shown
