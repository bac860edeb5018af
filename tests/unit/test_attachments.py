"""Per-recipient attachment patterns: validation, placeholders, path escapes, matches,
size caps, the dry run and per-recipient zips (no database needed)."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from mailer_app.services import InvalidInput
from mailer_app.services.attachments import (
    MAX_MATCHES,
    attachments_root,
    check_pattern,
    dry_run,
    path_safe_value,
    resolve_pattern,
    zip_for_recipient,
)
from mailer_app.services.templating import TemplateProblem
from mailer_app.settings import get_settings

PATTERN = "invoices/{{ customer_id }}/*.pdf"


def put(path: Path, data: bytes = b"%PDF-1.4 test") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    """An attachments folder with a few customers' invoices, and a secret outside it."""
    base = tmp_path / "root"
    put(base / "invoices" / "42" / "2024-01.pdf", b"a" * 100)
    put(base / "invoices" / "7" / "2024-01.pdf", b"b" * 10)
    put(base / "invoices" / "7" / "2024-02.pdf", b"c" * 10)
    put(base / "invoices" / "7" / "notes.txt")
    (base / "invoices" / "empty").mkdir()
    put(tmp_path / "secret" / "passwd", b"root:x:0:0")
    put(tmp_path / "secret" / "leak.pdf", b"secret")
    return base


def names(paths: list[Path], base: Path) -> list[str]:
    return [p.relative_to(base.resolve()).as_posix() for p in paths]


# --- pattern validation ------------------------------------------------------------------


def test_valid_patterns_are_returned_stripped():
    assert check_pattern(f"  {PATTERN} ") == PATTERN
    assert check_pattern("contracts/{{ last_name|lower }}-*.pdf") == (
        "contracts/{{ last_name|lower }}-*.pdf"
    )
    assert check_pattern("welcome.pdf") == "welcome.pdf"


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("", "Enter a pattern"),
        ("../invoices/*.pdf", "'..'"),
        ("invoices/../../etc/passwd", "'..'"),
        ("./invoices/*.pdf", "'..' or '.'"),
        ("/etc/passwd", "relative"),
        ("~/invoices/*.pdf", "relative"),
        ("C:/invoices/*.pdf", "relative"),
        ("invoices\\*.pdf", "not \\"),
        ("invoices//*.pdf", "empty folder name"),
        ("invoices/", "empty folder name"),
        ("**/*.pdf", "all subfolders"),
        ("invoices/\n*.pdf", "control characters"),
        ("x" * 501, "too long"),
    ],
)
def test_bad_patterns_are_refused(pattern, message):
    with pytest.raises(InvalidInput) as caught:
        check_pattern(pattern)
    assert caught.value.field == "pattern"
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("invoices/{{ customer_id }/*.pdf", "attachment pattern"),
        ("{{ x.__class__ }}/a.pdf", "underscore"),
        ("{{ x|attr('y') }}/a.pdf", "filter 'attr' is not available"),
    ],
)
def test_pattern_placeholders_go_through_the_template_sandbox(pattern, message):
    with pytest.raises(TemplateProblem) as caught:
        check_pattern(pattern)
    assert caught.value.field == "pattern"
    assert message in str(caught.value)


# --- placeholders and matching -------------------------------------------------------------


def test_placeholders_come_from_the_recipients_fields(root):
    assert names(resolve_pattern(pattern=PATTERN, data={"customer_id": 42}, root=root), root) == [
        "invoices/42/2024-01.pdf"
    ]
    assert names(resolve_pattern(pattern=PATTERN, data={"customer_id": "7"}, root=root), root) == [
        "invoices/7/2024-01.pdf",
        "invoices/7/2024-02.pdf",
    ]
    assert resolve_pattern(pattern=PATTERN, data={"customer_id": 99}, root=root) == []
    # Folders never match, only files.
    assert resolve_pattern(pattern="invoices/*", data={}, root=root) == []


def test_matches_are_real_paths_inside_the_root(root):
    found = resolve_pattern(pattern=PATTERN, data={"customer_id": 7}, root=root)
    for path in found:
        assert path.is_absolute() and path.is_file()
        assert path.is_relative_to(root.resolve())


def test_a_missing_field_is_an_error(root):
    with pytest.raises(InvalidInput, match="Missing field customer_id"):
        resolve_pattern(pattern=PATTERN, data={"email": "a@example.com"}, root=root)


# --- path escapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["../../secret", "../secret", "..", "/secret", "..\\..\\secret", "invoices/../../secret"],
)
def test_a_field_value_cannot_leave_the_folder(root, tmp_path, value):
    pattern = "{{ folder }}/*"
    assert resolve_pattern(pattern=pattern, data={"folder": value}, root=root) == []
    pattern = "invoices/{{ folder }}/passwd"
    assert resolve_pattern(pattern=pattern, data={"folder": value}, root=root) == []
    # The value stays one folder name: a folder literally called that is what matches.
    literal = path_safe_value(value)
    assert "/" not in literal and ".." not in literal
    put(root / "invoices" / literal / "passwd", b"inside")
    found = resolve_pattern(
        pattern="invoices/{{ folder }}/passwd", data={"folder": value}, root=root
    )
    assert [p.read_bytes() for p in found] == [b"inside"]


def test_glob_characters_in_a_value_match_only_literally(root):
    # A customer_id of "*" must not collect every customer's invoices.
    for value in ("*", "?", "[47]", "4*"):
        assert resolve_pattern(pattern=PATTERN, data={"customer_id": value}, root=root) == []
    put(root / "invoices" / "*" / "x.pdf")
    found = resolve_pattern(pattern=PATTERN, data={"customer_id": "*"}, root=root)
    assert names(found, root) == ["invoices/*/x.pdf"]


def test_a_pattern_expression_cannot_build_a_way_out(root):
    for pattern in ("{{ '..' }}/secret/passwd", "invoices/{{ '/'.join(['..', '..']) }}/x",
                    "{{ '/etc' }}/passwd"):  # fmt: skip
        with pytest.raises(InvalidInput):
            resolve_pattern(pattern=pattern, data={}, root=root)


def test_a_symlink_pointing_outside_is_refused(root, tmp_path):
    os.symlink(tmp_path / "secret", root / "invoices" / "evil")
    with pytest.raises(InvalidInput, match="points outside the attachments folder"):
        resolve_pattern(pattern=PATTERN, data={"customer_id": "evil"}, root=root)
    os.symlink(tmp_path / "secret" / "passwd", root / "invoices" / "42" / "link.pdf")
    with pytest.raises(InvalidInput, match="link.pdf points outside"):
        resolve_pattern(pattern=PATTERN, data={"customer_id": 42}, root=root)


def test_a_symlink_inside_the_root_is_followed(root):
    os.symlink(root / "invoices" / "42", root / "invoices" / "alias")
    found = resolve_pattern(pattern=PATTERN, data={"customer_id": "alias"}, root=root)
    assert names(found, root) == ["invoices/42/2024-01.pdf"]


def test_a_missing_root_matches_nothing(tmp_path):
    assert resolve_pattern(pattern="*.pdf", data={}, root=tmp_path / "nope") == []


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_reports_each_recipient(root):
    recipients = [
        {"email": "one@example.com", "customer_id": 42},
        {"email": "two@example.com", "customer_id": 7},
        {"email": "none@example.com", "customer_id": 99},
        {"email": "nofield@example.com"},
        {"email": "escape@example.com", "customer_id": "../../secret"},
    ]
    result = {m.email: m for m in dry_run(recipients=recipients, pattern=PATTERN, root=root,
                                           max_bytes=1_000)}  # fmt: skip
    one = result["one@example.com"]
    assert (one.status, one.files, one.total_bytes, one.reason) == (
        "ready",
        ("invoices/42/2024-01.pdf",),
        100,
        "",
    )
    two = result["two@example.com"]
    assert two.status == "needs_review"
    assert two.files == ("invoices/7/2024-01.pdf", "invoices/7/2024-02.pdf")
    assert two.total_bytes == 20
    assert two.reason == "2 files match invoices/7/*.pdf; one was expected."
    assert result["none@example.com"].status == "blocked"
    assert result["none@example.com"].reason == "No file matches invoices/99/*.pdf."
    assert result["nofield@example.com"].status == "blocked"
    assert result["nofield@example.com"].reason == "Missing field customer_id."
    assert result["escape@example.com"].status == "blocked"
    assert result["escape@example.com"].files == ()


def test_dry_run_blocks_files_over_the_size_cap(root):
    [match] = dry_run(recipients=[{"email": "a@x.org", "customer_id": 42}], pattern=PATTERN,
                      root=root, max_bytes=99)  # fmt: skip
    assert match.status == "blocked"
    assert match.total_bytes == 100
    assert "over the" in match.reason and "limit" in match.reason
    # Several files over the cap: blocked wins over needs_review.
    [match] = dry_run(recipients=[{"email": "a@x.org", "customer_id": 7}], pattern=PATTERN,
                      root=root, max_bytes=15)  # fmt: skip
    assert match.status == "blocked"


def test_dry_run_can_accept_several_files(root):
    [match] = dry_run(recipients=[{"email": "a@x.org", "customer_id": 7}], pattern=PATTERN,
                      root=root, max_bytes=1_000, expect="any")  # fmt: skip
    assert match.status == "ready"
    assert len(match.files) == 2
    with pytest.raises(InvalidInput):
        dry_run(recipients=[], pattern=PATTERN, root=root, max_bytes=1, expect="two")


def test_dry_run_blocks_a_pattern_matching_too_many_files(root):
    for number in range(MAX_MATCHES + 1):
        put(root / "bulk" / f"{number}.pdf", b"x")
    [match] = dry_run(recipients=[{"email": "a@x.org"}], pattern="bulk/*.pdf", root=root,
                      max_bytes=10**6, expect="any")  # fmt: skip
    assert match.status == "blocked"
    assert f"More than {MAX_MATCHES} files" in match.reason


def test_dry_run_refuses_a_bad_pattern_once(root):
    with pytest.raises(InvalidInput, match="'..'"):
        dry_run(recipients=[{"email": "a@x.org"}], pattern="../*.pdf", root=root, max_bytes=1)


# --- zip -----------------------------------------------------------------------------------------


def test_zip_contains_each_file_once_with_unique_names(root):
    files = [root / "invoices" / "7" / "2024-01.pdf", root / "invoices" / "42" / "2024-01.pdf",
             root / "invoices" / "7" / "notes.txt"]  # fmt: skip
    data = zip_for_recipient(files, name="invoices.zip")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["2024-01.pdf", "2024-01 (2).pdf", "notes.txt"]
        assert archive.read("2024-01.pdf") == b"b" * 10
        assert archive.read("2024-01 (2).pdf") == b"a" * 100
        assert archive.comment == b"invoices.zip"
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())


def test_zip_respects_the_size_cap(root):
    with pytest.raises(InvalidInput, match="over the"):
        zip_for_recipient([root / "invoices" / "42" / "2024-01.pdf"], name="a.zip", max_bytes=50)


# --- the workspace folder ---------------------------------------------------------------------


def test_attachments_root_is_per_workspace_under_the_data_folder():
    first = attachments_root(workspace_id=1)
    assert first == get_settings().data_dir / "attachments" / "1"
    assert first.is_dir()
    assert attachments_root(workspace_id=2) != first
