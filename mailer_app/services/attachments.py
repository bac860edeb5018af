"""Attachments: campaign-wide files, and per-recipient files found by a pattern.

Campaign-wide files are uploaded through the wizard and stored under the data folder
(`campaign_files/<workspace>/<random>-<name>`); a `CampaignAttachment` row ties one
to a campaign version. Publishing freezes a version and the next draft gets copies of
its rows (`copy_campaign_file`) that point at the same stored file, so a file is
deleted from disk only when the last row using it is removed, and only once that
removal is committed. Only a draft's files can be added or removed.

Per-recipient files live in the workspace's attachments folder
(`attachments_root`), which the workspace controls (for example a mounted share of
invoices). A pattern such as `invoices/{{ customer_id }}/*.pdf` is filled with the
recipient's fields through the template sandbox and then globbed under that folder.
Nothing may leave the folder:

- the pattern must be relative, without `..`, `.`, `**`, backslashes or empty parts;
- field values are made path-safe before they are placed (`/`, `\\` and `..` become
  `_`, glob characters are escaped, so a customer_id of `*` or `../../etc` matches
  only a folder literally called that);
- the filled-in pattern is checked again (a template expression could produce `..`);
- every match is resolved (symlinks followed) and must still be inside the folder.

`dry_run` tells, per recipient, what matched: nothing -> blocked, several ->
needs_review (when exactly one is expected), over the size cap -> blocked.
"""

from __future__ import annotations

import glob
import io
import mimetypes
import os
import re
import secrets
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlmodel import Session, func, select

from mailer_app.models import CampaignAttachment, CampaignVersion, ReviewStatus, Source
from mailer_app.services import InvalidInput, NotFoundError, templating
from mailer_app.settings import get_settings

MAX_FILE_BYTES = 10 * 1024 * 1024  # one campaign-wide file
MAX_CAMPAIGN_BYTES = 10 * 1024 * 1024  # all campaign-wide files of a version
MAX_CAMPAIGN_FILES = 20
# Per-recipient files of one message. With the campaign-wide files, at most 18 MiB,
# which base64 makes ~24 MB: under the 25 MB most providers accept.
MAX_RECIPIENT_BYTES = 8 * 1024 * 1024
MAX_PATTERN_CHARS = 500
MAX_MATCHES = 50  # more files than this for one recipient is certainly a wrong pattern
FILENAME_MAX = 255
EXPECT_CHOICES = ("one", "any")
_CHUNK = 1024 * 1024
_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


class AttachmentNotFound(NotFoundError):
    """No campaign file with this id in this workspace."""


@dataclass(frozen=True)
class AttachmentMatch:
    """What a per-recipient pattern found for one recipient (paths relative to the root)."""

    email: str
    files: tuple[str, ...]
    total_bytes: int
    status: str  # "ready" | "needs_review" | "blocked"
    reason: str


# --- folders ------------------------------------------------------------------------------


def attachments_root(*, workspace_id: int) -> Path:
    """The folder per-recipient patterns search in (created on demand)."""
    root = get_settings().data_dir / "attachments" / str(int(workspace_id))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _files_dir(workspace_id: int) -> Path:
    return get_settings().data_dir / "campaign_files" / str(int(workspace_id))


def campaign_file_path(row: CampaignAttachment) -> Path:
    """Where a campaign file's bytes are; refuses a stored path outside its folder."""
    base = _files_dir(row.workspace_id).resolve()
    path = (get_settings().data_dir / row.stored_path).resolve()
    if not path.is_relative_to(base):
        raise AttachmentNotFound("This file is not stored where it should be.")
    return path


# --- names and types ---------------------------------------------------------------------


def safe_filename(name: str) -> str:
    """The name a recipient sees: no folders, control characters or line breaks."""
    text = _CONTROL.sub("", str(name or ""))
    text = re.split(r"[/\\]", text)[-1].strip().strip(".").strip()
    if not text:
        raise InvalidInput("The file needs a name.", field="file")
    if len(text) > FILENAME_MAX:
        stem, dot, ext = text.rpartition(".")
        keep = ext if dot and len(ext) <= 16 else ""
        text = text[: FILENAME_MAX - len(keep) - 1].rstrip() + ("." + keep if keep else "")
    return text


def _stored_name(filename: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", filename).strip("._") or "file"
    return f"{secrets.token_hex(8)}-{slug[-80:]}"


def _content_type(content_type: str | None, filename: str) -> str:
    text = (content_type or "").split(";", 1)[0].strip().lower()
    if text and _CONTENT_TYPE.match(text):
        return text
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


# --- after the caller's transaction ------------------------------------------------------


_PENDING = "mailer_app.attachments.pending"  # session.info key


@dataclass
class _Pending:
    transaction: Any
    on_commit: Callable[[], None] | None
    on_rollback: Callable[[], None] | None
    committed: bool = False


def _after_commit(session: Session) -> None:
    for pending in session.info.get(_PENDING, []):
        pending.committed = True  # only the outermost transaction commits


def _after_transaction_end(session: Session, transaction: Any) -> None:
    pending = session.info.get(_PENDING, [])
    done = [p for p in pending if p.transaction is transaction]
    if not done:
        return
    session.info[_PENDING] = [p for p in pending if p.transaction is not transaction]
    for item in done:
        action = item.on_commit if item.committed else item.on_rollback
        if action is not None:
            action()


def _after_transaction(
    session: Session, *, on_commit: Callable[[], None] | None = None,
    on_rollback: Callable[[], None] | None = None,
) -> None:  # fmt: skip
    """Run `on_commit` once the caller's transaction commits, or `on_rollback` once it
    ends any other way (rollback, close). Services never commit; files follow rows."""
    if _PENDING not in session.info:
        session.info[_PENDING] = []
        sa.event.listen(session, "after_commit", _after_commit)
        sa.event.listen(session, "after_transaction_end", _after_transaction_end)
    root = session.get_transaction()
    session.info[_PENDING].append(_Pending(root, on_commit, on_rollback))


def _unlink(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)


# --- campaign-wide files -------------------------------------------------------------------


def _draft_version(session: Session, workspace_id: int, version_id: int) -> CampaignVersion:
    version = session.get(CampaignVersion, version_id)
    if version is None or version.workspace_id != workspace_id:
        raise NotFoundError("This campaign version does not exist.")
    if not version.is_draft:
        raise InvalidInput(
            "This version is published and cannot change; edit the campaign's draft.",
            field="file",
        )
    return version


def _get_row(session: Session, workspace_id: int, attachment_id: int) -> CampaignAttachment:
    row = session.get(CampaignAttachment, attachment_id)
    if row is None or row.workspace_id != workspace_id:
        raise AttachmentNotFound("This file is not attached any more.")
    return row


def _write_capped(target: Path, data: bytes | BinaryIO, limit: int) -> int:
    """Stream `data` into a new file at `target`; refuses more than `limit` bytes."""
    stream = io.BytesIO(bytes(data)) if isinstance(data, bytes | bytearray | memoryview) else data
    tmp = target.with_name(f".{target.name}.part")
    size = 0
    try:
        with open(tmp, "xb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise InvalidInput(
                        f"The file is too large (at most {_mb(limit)}).", field="file"
                    )
                out.write(chunk)
        if size == 0:
            raise InvalidInput("The file is empty.", field="file")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def store_campaign_file(
    *,
    session: Session,
    workspace_id: int,
    version_id: int,
    filename: str,
    data: bytes | BinaryIO,
    content_type: str | None,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignAttachment:
    """Attach an uploaded file to every message of a draft version (size-capped, stored
    under a random name; the display name is cleaned). The caller audits and commits."""
    _draft_version(session, workspace_id, version_id)
    name = safe_filename(filename)
    rows = list_campaign_files(session=session, workspace_id=workspace_id, version_id=version_id)
    if any(row.filename.lower() == name.lower() for row in rows):
        raise InvalidInput(f"A file called {name} is already attached.", field="file")
    if len(rows) >= MAX_CAMPAIGN_FILES:
        raise InvalidInput(
            f"A campaign can have at most {MAX_CAMPAIGN_FILES} attached files.", field="file"
        )
    room = MAX_CAMPAIGN_BYTES - sum(row.size_bytes for row in rows)
    folder = _files_dir(workspace_id)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _stored_name(name)
    try:
        size = _write_capped(target, data, min(MAX_FILE_BYTES, room))
    except InvalidInput as exc:
        if room < MAX_FILE_BYTES and "too large" in str(exc):
            raise InvalidInput(
                f"The campaign's files would be larger than {_mb(MAX_CAMPAIGN_BYTES)} "
                f"together ({_mb(room)} left).",
                field="file",
            ) from None
        raise
    row = CampaignAttachment(
        workspace_id=workspace_id,
        version_id=version_id,
        filename=name,
        stored_path=target.relative_to(get_settings().data_dir).as_posix(),
        content_type=_content_type(content_type, name),
        size_bytes=size,
        created_by_id=user_id,
        source=str(source),
    )
    session.add(row)
    session.flush()
    _after_transaction(session, on_rollback=_unlink(target))  # no row, no file
    return row


def copy_campaign_file(
    *,
    session: Session,
    workspace_id: int,
    attachment_id: int,
    version_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignAttachment:
    """The same stored file attached to another (draft) version, e.g. a new draft."""
    row = _get_row(session, workspace_id, attachment_id)
    _draft_version(session, workspace_id, version_id)
    copy = CampaignAttachment(
        workspace_id=workspace_id,
        version_id=version_id,
        filename=row.filename,
        stored_path=row.stored_path,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        created_by_id=user_id,
        source=str(source),
    )
    session.add(copy)
    session.flush()
    return copy


def remove_campaign_file(
    *, session: Session, workspace_id: int, attachment_id: int, user_id: int | None
) -> None:
    """Detach a file from its draft version; the stored file is deleted after commit
    when no other version uses it. The caller audits and commits."""
    row = _get_row(session, workspace_id, attachment_id)
    _draft_version(session, workspace_id, row.version_id)
    path = campaign_file_path(row)
    stored_path = row.stored_path
    session.delete(row)
    session.flush()
    still_used = session.exec(
        select(func.count())
        .select_from(CampaignAttachment)
        .where(
            CampaignAttachment.workspace_id == workspace_id,
            CampaignAttachment.stored_path == stored_path,
        )
    ).one()
    if not still_used:
        _after_transaction(session, on_commit=_unlink(path))


def list_campaign_files(
    *, session: Session, workspace_id: int, version_id: int
) -> list[CampaignAttachment]:
    """A version's campaign-wide files, in the order they were added."""
    return list(
        session.exec(
            select(CampaignAttachment)
            .where(
                CampaignAttachment.workspace_id == workspace_id,
                CampaignAttachment.version_id == version_id,
            )
            .order_by(CampaignAttachment.id)
        ).all()
    )


def read_campaign_file(*, session: Session, workspace_id: int, attachment_id: int) -> bytes:
    """A campaign file's bytes."""
    row = _get_row(session, workspace_id, attachment_id)
    try:
        return campaign_file_path(row).read_bytes()
    except FileNotFoundError:
        raise AttachmentNotFound(f"The stored copy of {row.filename} is missing.") from None


# --- per-recipient patterns --------------------------------------------------------------


def _check_path(text: str, *, what: str) -> None:
    """Refuse anything but a plain relative path (for the pattern and its filled-in form)."""
    if _CONTROL.search(text):
        raise InvalidInput(f"The {what} cannot contain control characters.", field="pattern")
    if "\\" in text:
        raise InvalidInput(f"Use / between folders in the {what}, not \\.", field="pattern")
    if text.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", text):
        raise InvalidInput(
            f"The {what} must be relative to the attachments folder (no leading / or ~).",
            field="pattern",
        )
    parts = text.split("/")
    if any(part in ("..", ".") for part in parts):
        raise InvalidInput(f"The {what} cannot contain '..' or '.' folders.", field="pattern")
    if any(part == "" for part in parts):
        raise InvalidInput(f"The {what} has an empty folder name (//) or ends with /.",
                           field="pattern")  # fmt: skip
    if any("**" in part for part in parts):
        raise InvalidInput(f"The {what} cannot search all subfolders (**).", field="pattern")


def check_pattern(pattern: str) -> str:
    """A per-recipient pattern like "invoices/{{ customer_id }}/*.pdf", checked and
    stripped; raises InvalidInput(field="pattern")."""
    text = str(pattern or "").strip()
    if not text:
        raise InvalidInput(
            "Enter a pattern, like invoices/{{ customer_id }}/*.pdf.", field="pattern"
        )
    if len(text) > MAX_PATTERN_CHARS:
        raise InvalidInput(
            f"The pattern is too long (at most {MAX_PATTERN_CHARS} characters).", field="pattern"
        )
    _check_path(text, what="pattern")
    templating.check_template(text, field="pattern")  # TemplateProblem is an InvalidInput
    return text


def path_safe_value(value: Any) -> str:
    """A field value made safe to place in a path: one folder or file name, no glob."""
    text = _CONTROL.sub("", "" if value is None else str(value))
    text = re.sub(r"[/\\]", "_", text).replace("..", "__")
    if text in ("", "."):
        text = "_"
    return glob.escape(text)


def _fill(pattern: str, data: Mapping[str, Any]) -> str:
    values = {key: path_safe_value(value) for key, value in templating.plain_data(data).items()
              if value is not None}  # fmt: skip
    rendered = templating.render_text(pattern, values, field="pattern")
    if rendered.error:
        raise InvalidInput(rendered.error, field="pattern")
    if rendered.missing_fields or rendered.text is None:
        missing = ", ".join(rendered.missing_fields)
        raise InvalidInput(f"Missing field {missing}.", field="pattern")
    text = rendered.text.strip()
    _check_path(text, what="filled-in pattern")
    return text


def _matches(filled: str, root: Path) -> list[Path]:
    real_root = root.resolve()
    if not real_root.is_dir():
        return []
    found: list[Path] = []
    for relative in glob.iglob(filled, root_dir=real_root):
        real = (real_root / relative).resolve()
        if not real.is_relative_to(real_root):
            raise InvalidInput(
                f"{relative} points outside the attachments folder.", field="pattern"
            )
        if real.is_file():
            found.append(real)
            if len(found) > MAX_MATCHES:
                break
    return sorted(set(found))


def resolve_pattern(*, pattern: str, data: Mapping[str, Any], root: Path) -> list[Path]:
    """The files (resolved, inside `root`) a recipient's filled-in pattern matches;
    raises InvalidInput(field="pattern") for a bad pattern, a missing field or a match
    that leads outside the folder."""
    return _matches(_fill(check_pattern(pattern), data), root)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _match_for(
    data: Mapping[str, Any], pattern: str, root: Path, max_bytes: int, expect: str
) -> AttachmentMatch:
    email = str(data.get("email") or "")
    try:
        filled = _fill(pattern, data)
        paths = _matches(filled, root)
    except InvalidInput as exc:
        return AttachmentMatch(email, (), 0, ReviewStatus.BLOCKED.value, str(exc))
    real_root = root.resolve()
    files = tuple(path.relative_to(real_root).as_posix() for path in paths)
    total = sum(path.stat().st_size for path in paths)

    def result(status: ReviewStatus, reason: str) -> AttachmentMatch:
        return AttachmentMatch(email, files, total, status.value, reason)

    if not paths:
        return result(ReviewStatus.BLOCKED, f"No file matches {filled}.")
    if len(paths) > MAX_MATCHES:
        return result(ReviewStatus.BLOCKED, f"More than {MAX_MATCHES} files match {filled}.")
    if total > max_bytes:
        return result(
            ReviewStatus.BLOCKED, f"The files total {_mb(total)}, over the {_mb(max_bytes)} limit."
        )
    if expect == "one" and len(paths) > 1:
        return result(
            ReviewStatus.NEEDS_REVIEW, f"{len(paths)} files match {filled}; one was expected."
        )
    return result(ReviewStatus.READY, "")


def dry_run(
    *,
    recipients: Iterable[Mapping[str, Any]],
    pattern: str,
    root: Path,
    max_bytes: int,
    expect: str = "one",
) -> list[AttachmentMatch]:
    """Per recipient (their merge data, with "email"), what the pattern matches and
    whether that can be sent: none -> blocked, several -> needs_review when `expect` is
    "one", over `max_bytes` -> blocked. Raises InvalidInput for a bad pattern."""
    if expect not in EXPECT_CHOICES:
        raise InvalidInput("Choose whether one file or any number is expected.", field="expect")
    checked = check_pattern(pattern)
    return [_match_for(data, checked, root, max_bytes, expect) for data in recipients]


def zip_for_recipient(
    files: Sequence[Path], *, name: str, max_bytes: int = MAX_RECIPIENT_BYTES
) -> bytes:
    """One recipient's files in a zip archive (flat; same names get " (2)"), for when
    the campaign sends a zip instead of separate files. `name` is the archive's file
    name as the recipient sees it (kept as the archive comment)."""
    archive_name = safe_filename(name)
    total = sum(Path(path).stat().st_size for path in files)
    if total > max_bytes:
        raise InvalidInput(
            f"The files for {archive_name} total {_mb(total)}, over the {_mb(max_bytes)} limit.",
            field="zip",
        )
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.comment = archive_name.encode("utf-8")[:1000]
        for path in files:
            path = Path(path)
            arcname = _unique(path.name, used)
            info = zipfile.ZipInfo.from_file(path, arcname=arcname)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _unique(name: str, used: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    candidate, number = name, 1
    while candidate.lower() in used:
        number += 1
        candidate = f"{stem} ({number}){dot}{ext}"
    used.add(candidate.lower())
    return candidate
