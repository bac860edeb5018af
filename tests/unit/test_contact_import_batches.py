"""The import's batched row checks (`checked_batches`) against the row-by-row checks
they replaced, kept here as the oracle: same kept rows (address, names, custom fields
as JSON text, byte for byte), same rejected rows, same order, whatever the batch size.
"""

from __future__ import annotations

import json
import random
import string
from json.encoder import encode_basestring

import pytest

from mailer_app.services import InvalidInput
from mailer_app.services.contact_csv import RowError, open_contact_csv
from mailer_app.services.contact_import import checked_batches, checked_rows
from mailer_app.services.contacts import (
    FAST_EMAIL,
    FAST_EMAIL_MAX,
    NAME_MAX_LENGTH,
    SPECIAL_DOMAINS,
    check_mapping,
    full_email_check,
    normalize_contact_email,
)


def oracle(reader, mapping):
    """The row-by-row checks the import used before batches (verbatim but for names)."""
    email_at, first_at, last_at = mapping.email, mapping.first_name, mapping.last_name
    custom = [(encode_basestring(name) + ":", index) for index, name in mapping.custom]
    seen: dict[str, int] = {}
    for item in reader:
        if type(item) is RowError:
            yield item
            continue
        line, values = item
        raw = values[email_at]
        email = raw.strip().lower()
        if not (len(email) <= FAST_EMAIL_MAX and FAST_EMAIL.fullmatch(email)) or email.endswith(
            SPECIAL_DOMAINS
        ):
            try:
                email = full_email_check(raw)
            except InvalidInput as exc:
                yield RowError(line, str(exc), raw.strip()[:320])
                continue
        first_line = seen.setdefault(email, line)
        if first_line != line:
            yield RowError(
                line,
                f"The same address as line {first_line} (addresses are compared ignoring case).",
                email,
            )
            continue
        first = values[first_at].strip()[:NAME_MAX_LENGTH] if first_at is not None else ""
        last = values[last_at].strip()[:NAME_MAX_LENGTH] if last_at is not None else ""
        parts = [key + encode_basestring(v) for key, i in custom if (v := values[i].strip())]
        yield line, email, first, last, "{" + ",".join(parts) + "}"


def batched(reader, mapping, size):
    for batch in checked_batches(reader, mapping, size):
        rows = zip(
            batch.lines, batch.emails, batch.first_names, batch.last_names, batch.fields,
            strict=True,
        )  # fmt: skip
        yield from sorted(
            [*rows, *batch.errors], key=lambda x: x.line if type(x) is RowError else x[0]
        )


# Addresses the fast check takes, and ones it must leave to email-validator.
TRICKY_ADDRESSES = [
    "ann@example.com",
    "Ann.Lee@Example.COM",
    "  padded@example.com ",
    "\ttabbed@example.com",
    "\u00a0nbsp@example.com",
    "ann+tag@sub.example.co.uk",
    "o'brien@example.ie",
    "a!#$%&'*+/=?^_`{|}~-b@example.com",
    '"quoted local"@example.com',
    '"a@b"@example.com',
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@example..com",
    "a@.example.com",
    "a@example.com.",
    "a@-example.com",
    "a@example-.com",
    "a@ex--ample.com",
    "a@xn--bcher-kva.example",
    "a@b\u00fccher.example",
    "\u00e4nn@example.com",
    "\u212a@example.com",  # KELVIN SIGN, lowercased to an ASCII k
    "I\u0307@example.com",
    "a@example.c0m",
    "a@example.c",
    "a@example",
    "a@127.0.0.1",
    "a@[127.0.0.1]",
    "a@printer.local",
    "a@host.localhost",
    "a@x.onion",
    "a@in-addr.arpa",
    "a@foo.invalid",
    "a@example.test",
    "a@localhost",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + "d" * 63 + ".com",
    "a@" + "d" * 64 + ".com",
    "a@" + ".".join(["abcdefghi"] * 30) + ".com",
    "no-at-sign",
    "two@@example.com",
    "a@b@example.com",
    "",
    " ",
    "a b@example.com",
    "a@exa mple.com",
    "a\u2028@example.com",
    "a@example.com\u00b6 ",
    "A@EXAMPLE.COM",
]

FIELD_VALUES = [
    "plain",
    "",
    "  ",
    " padded ",
    'with "quotes"',
    "back\\slash",
    "new\nline",
    "tab\tinside",
    "\u00e9t\u00e9",
    "\u00a0nbsp\u00a0",
    "pipe| ",
    " |pipe",
    "\u00b6",
    "100%",
    "%s",
    "{,}",
    "\x7f\x85\u2028",
    "z" * 250,
]


def write_csv(path, rows, header):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def corpus(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.15:
            email = rng.choice(TRICKY_ADDRESSES)
        elif roll < 0.25 and rows:
            email = rng.choice(rows)[0].upper()  # a duplicate, other case
        else:
            email = f"user{i}@example{i % 7}.com"
        rows.append(
            [
                email,
                rng.choice(FIELD_VALUES) if rng.random() < 0.3 else f"First{i}",
                rng.choice(FIELD_VALUES),
                rng.choice(FIELD_VALUES) if rng.random() < 0.5 else "",  # often empty first
                rng.choice(FIELD_VALUES) if rng.random() < 0.2 else f"C{i}",
                rng.choice(FIELD_VALUES),
                "skipped column",
            ]
        )
    return rows


HEADER = ["email", "first_name", "last_name", "note", "customer id", "city", "internal"]
MAPPING = {
    "email": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "note": "note",
    "customer id": "customer_id",
    "city": "city",
    "internal": "",
}


def read_all(path, how, mapping=MAPPING):
    with open_contact_csv(path, max_bytes=10**8) as reader:
        checked = check_mapping(reader.header, mapping)
        return list(how(reader, checked))


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 300, 5000])
def test_batches_agree_with_the_row_by_row_checks(tmp_path, size):
    path = tmp_path / "people.csv"
    write_csv(path, corpus(seed=size, count=1500), HEADER)
    expected = read_all(path, oracle)
    got = read_all(path, lambda reader, mapping: batched(reader, mapping, size))
    assert got == expected
    # The corpus exercises what it means to.
    kept = [item for item in expected if type(item) is not RowError]
    errors = [item for item in expected if type(item) is RowError]
    assert any("same address" in e.reason for e in errors)
    assert any("not a valid email address" in e.reason for e in errors)
    assert any(fields.startswith('{"customer_id"') for *_, fields in kept)  # note empty
    assert any('\\"' in fields for *_, fields in kept)
    assert any("\\n" in fields for *_, fields in kept)
    assert all(json.loads(fields) is not None for *_, fields in kept)


def test_checked_rows_is_the_batches_in_file_order(tmp_path):
    path = tmp_path / "people.csv"
    write_csv(path, corpus(seed=11, count=800), HEADER)
    assert read_all(path, checked_rows) == read_all(path, oracle)


def test_reader_errors_stay_in_line_order_between_checked_rows(tmp_path):
    # Ragged, unterminated-quote and NUL rows among good, bad and duplicate addresses.
    text = (
        "email,first_name,city\n"
        "ann@example.com,Ann,Oslo\n"
        "bob@example.com,Bob,Rome,extra\n"
        "not-an-address,X,Y\n"
        'carl@example.com,"Carl,Lyon\n'
        "dora@example.com,Dora,Paris\n"
        "ANN@example.com,Again,Oslo\n"
        "erin@example.com,Er\x00in,Oslo\n"
        "fred@example.com,Fred,\n"
    )
    path = tmp_path / "mixed.csv"
    path.write_text(text, encoding="utf-8")
    mapping = {"email": "email", "first_name": "first_name", "city": "city"}
    expected = read_all(path, oracle, mapping)
    assert [type(item) is RowError for item in expected] == [
        False, True, True, True, False, True, True, False,
    ]  # fmt: skip
    for size in (1, 2, 3, 100):
        got = read_all(path, lambda r, m, size=size: batched(r, m, size), mapping)
        assert got == expected, size


def test_tricky_addresses_in_a_batch_get_the_single_address_answer(tmp_path):
    rng = random.Random(5)
    alphabet = string.ascii_letters + string.digits + ".-_+@!#%&'*/=?^`{|}~ \"(),:;<>[]\\\u00e9"
    samples = list(TRICKY_ADDRESSES)
    samples += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(3000)
    ]
    path = tmp_path / "addresses.csv"
    # Every sample between good addresses, so the batches mix both.
    rows = []
    for i, sample in enumerate(samples):
        rows += [[f"good{i}@example.com"], [sample]]
    write_csv(path, rows, ["email"])
    items = read_all(path, lambda r, m: batched(r, m, 300), {"email": "email"})
    by_line = {(item.line if type(item) is RowError else item[0]): item for item in items}
    seen: dict[str, int] = {}
    for index, sample in enumerate(samples):
        line = 2 + 2 * index + 1  # after the header and its good neighbour
        if line not in by_line:
            assert sample == "", sample  # a row of empty values is skipped silently
            continue
        item = by_line[line]
        try:
            expected = normalize_contact_email(sample)
        except InvalidInput:
            assert type(item) is RowError and "email address" in item.reason, sample
            continue
        first = seen.setdefault(expected, line)
        if first != line:
            assert type(item) is RowError and f"line {first}" in item.reason, sample
        else:
            assert item[1] == expected, sample
