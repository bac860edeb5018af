"""Reading a seed CSV: headers, per-row errors, duplicates, limits, injection."""

from __future__ import annotations

import pytest

from mailer_app.services import InvalidInput
from mailer_app.services.seeds import (
    MAX_CSV_ROWS,
    check_seed_fields,
    pack_import_rows,
    parse_seed_csv,
    unpack_import_rows,
)


def errors_by_row(preview) -> dict[int, str]:
    return {row.row_number: row.error for row in preview.error_rows}


def test_minimal_file_gets_provider_defaults():
    preview = parse_seed_csv("email,password\nAlice@Gmail.com,pw-1\nbob@outlook.com,pw-2\n")
    assert preview.file_error is None
    assert [r.row_number for r in preview.valid_rows] == [2, 3]
    alice, bob = preview.valid_rows
    assert (alice.email, alice.password) == ("alice@gmail.com", "pw-1")
    assert (alice.imap_host, alice.imap_port, alice.imap_security) == (
        "imap.gmail.com",
        993,
        "tls",
    )
    assert alice.imap_username == "alice@gmail.com"
    assert bob.imap_host == "outlook.office365.com"


def test_lab_addresses_point_at_the_local_lab(monkeypatch):
    from mailer_app.settings import get_settings

    monkeypatch.setenv("LAB_IMAP_PORT", "31143")
    get_settings.cache_clear()
    row = parse_seed_csv("email,password\nx@gmail.lab,secret\n").valid_rows[0]
    assert (row.imap_host, row.imap_port, row.imap_security) == ("127.0.0.1", 31143, "plain")


@pytest.mark.parametrize(
    "header",
    [
        "EMAIL,Password,IMAP_HOST,Imap_Port,imap_security,IMAP_USERNAME",
        " email , password , imap host , imap port , imap security , imap username ",
        "E-mail,Password,Server,Port,Security,Username",
        "email;password;imap_host;imap_port;imap_security;imap_username",
    ],
)
def test_header_variants(header):
    sep = ";" if ";" in header else ","
    line = sep.join(["s@example.com", "pw", "mail.example.com", "143", "STARTTLS", "s-login"])
    preview = parse_seed_csv(f"{header}\r\n{line}\r\n")
    assert preview.file_error is None, preview.file_error
    (row,) = preview.rows
    assert row.error is None
    assert (row.imap_host, row.imap_port, row.imap_security, row.imap_username) == (
        "mail.example.com",
        143,
        "starttls",
        "s-login",
    )


def test_bom_blank_lines_and_unknown_columns():
    text = "\ufeffemail,password,notes\n\nseed@yahoo.com,pw,hello\n,,\n"
    preview = parse_seed_csv(text)
    assert preview.file_error is None
    assert [r.email for r in preview.rows] == ["seed@yahoo.com"]
    assert preview.ignored_columns == ("notes",)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("alice@gmail.com,pw\n", "first row must name the columns"),
        ("email,imap_host\nalice@gmail.com,imap.gmail.com\n", "first row must name"),
        ("email,password\n", "no seed mailboxes"),
        ("email,password,Email\na@b.com,pw,a@b.com\n", "appears twice"),
    ],
)
def test_file_errors(text, expected):
    preview = parse_seed_csv(text)
    assert preview.rows == ()
    assert expected in preview.file_error


def test_row_errors_carry_row_numbers_and_fields():
    text = (
        "email,password,imap_host,imap_port,imap_security\n"  # row 1
        "good@gmail.com,pw,,,\n"  # 2
        "not-an-address,pw,,,\n"  # 3
        "nopass@gmail.com,,,,\n"  # 4
        "port@gmail.com,pw,,70000,\n"  # 5
        "sec@gmail.com,pw,,,ssl3\n"  # 6
        "host@gmail.com,pw,bad host/name,,\n"  # 7
        "port2@gmail.com,pw,,abc,\n"  # 8
        "short@gmail.com\n"  # 9: missing cells = missing password
    )
    preview = parse_seed_csv(text)
    assert [r.email for r in preview.valid_rows] == ["good@gmail.com"]
    errors = errors_by_row(preview)
    assert "valid email address" in errors[3]
    assert "password" in errors[4]
    assert "between 1 and 65535" in errors[5]
    assert "security" in errors[6]
    assert "server name" in errors[7]
    assert "between 1 and 65535" in errors[8]
    assert "password" in errors[9]
    assert set(errors) == {3, 4, 5, 6, 7, 8, 9}
    # An error row never keeps the password it was given.
    assert all(r.password == "" for r in preview.error_rows)


def test_duplicates_within_the_file_are_flagged_on_the_later_row():
    text = "email,password\na@gmail.com,1\nb@gmail.com,2\nA@GMAIL.com,3\na@gmail.com,4\n"
    preview = parse_seed_csv(text)
    assert [r.row_number for r in preview.valid_rows] == [2, 3]
    assert errors_by_row(preview) == {4: "Same address as row 2.", 5: "Same address as row 2."}


def test_row_limit():
    rows = "".join(f"s{i}@gmail.com,pw\n" for i in range(MAX_CSV_ROWS + 1))
    preview = parse_seed_csv("email,password\n" + rows)
    assert preview.rows == ()
    assert f"{MAX_CSV_ROWS:,}" in preview.file_error

    at_limit = parse_seed_csv("email,password\n" + "".join(rows.splitlines(True)[:MAX_CSV_ROWS]))
    assert at_limit.file_error is None
    assert len(at_limit.valid_rows) == MAX_CSV_ROWS


def test_size_limit():
    preview = parse_seed_csv("email,password\n" + "x" * 3_000_000)
    assert "too large" in preview.file_error


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("email", "a@gmail.com\r\nBcc: victim@example.com", "line breaks"),
        ("password", "pw\r\nA1 LOGOUT", "line breaks"),
        ("imap_host", "imap.gmail.com\nevil", "line breaks"),
        ("imap_username", "user\r\nX", "line breaks"),
        ("imap_security", "tls\n", "line breaks"),
        ("imap_port", "993\r\n", "line breaks"),
    ],
)
def test_line_breaks_inside_quoted_cells_are_rejected(column, value, message):
    values = {
        "email": "a@gmail.com",
        "password": "pw",
        "imap_host": "imap.gmail.com",
        "imap_port": "993",
        "imap_security": "tls",
        "imap_username": "a@gmail.com",
    }
    values[column] = value
    header = ",".join(values)
    line = ",".join('"' + v.replace('"', '""') + '"' for v in values.values())
    preview = parse_seed_csv(f"{header}\n{line}\n")
    (row,) = preview.rows
    assert row.error is not None and message in row.error
    assert "\n" not in row.email and "\r" not in row.email


def test_check_seed_fields_names_the_field():
    with pytest.raises(InvalidInput) as caught:
        check_seed_fields(email="a@gmail.com", imap_port="0")
    assert caught.value.field == "imap_port"
    with pytest.raises(InvalidInput) as caught:
        check_seed_fields(email="a@gmail.com", imap_security="ssl3")
    assert caught.value.field == "imap_security"
    with pytest.raises(InvalidInput) as caught:
        check_seed_fields(email="a@@gmail.com")
    assert caught.value.field == "email"
    # Aliases people type.
    assert check_seed_fields(email="a@b.test", imap_security="SSL").imap_security == "tls"
    assert check_seed_fields(email="a@b.test", imap_security="none").imap_security == "plain"


def test_packed_rows_hide_passwords_and_round_trip():
    preview = parse_seed_csv("email,password\nsecret-holder@gmail.com,hunter2-canary\nbad,pw\n")
    token = pack_import_rows(preview.rows)
    assert "hunter2-canary" not in token and "secret-holder" not in token
    assert unpack_import_rows(token) == preview.valid_rows
    assert unpack_import_rows("") == []
    assert "hunter2-canary" not in repr(preview)
