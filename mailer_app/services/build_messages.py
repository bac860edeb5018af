"""One recipient's message in a build: the reasons catalogue, what every message of a
version shares (compiled once), and how one recipient is prepared, rendered,
assembled and classified. `services.build` runs this over every recipient; the
module docstring there describes the rules.
"""

from __future__ import annotations

import hashlib
import io
import json
import mimetypes
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from mailer_app.mail import mime
from mailer_app.mail.seed_copy import SEED_TOKEN_HEADER
from mailer_app.models import BuiltMessage, CampaignVersion, ReviewStatus, SenderAccount
from mailer_app.services import InvalidInput, attachments, contacts, templating, unsubscribe
from mailer_app.settings import get_settings

LONG_SUBJECT = 150  # characters; most inboxes show far fewer
ZIP_NAME = "attachments.zip"
TEST_BANNER = "TEST: this is a test copy of a campaign message. Its real recipient did not get it."
# Part of every digest: bump when the same inputs must give different bytes.
BUILD_FORMAT = "mime-1"

S = ReviewStatus
REASONS: dict[str, tuple[ReviewStatus, str]] = {
    "invalid_address": (S.BLOCKED, "The address is not a valid email address."),
    "unsupported_address": (
        S.BLOCKED,
        "The address has non-ASCII letters before the @, which few mail servers accept.",
    ),
    "suppressed": (
        S.EXCLUDED,
        "The address is on the suppression list (unsubscribed, bounced or complained).",
    ),
    "duplicate_recipient": (
        S.EXCLUDED,
        "Another contact has the same address written differently; it gets the message once.",
    ),
    "inactive_contact": (S.INACTIVE, "The contact is marked inactive."),
    "missing_field": (
        S.BLOCKED,
        "The message uses a merge field this recipient has no value for, and the "
        "template gives no default.",
    ),
    "blank_field": (
        S.WARNING,
        "A merge field this recipient has no value for is printed blank in the message.",
    ),
    "render_error": (S.BLOCKED, "The message could not be filled in for this recipient."),
    "unsafe_header": (
        S.BLOCKED,
        "A value that goes into a mail header has a line break or control character.",
    ),
    "missing_attachment": (S.BLOCKED, "No file matches this recipient's attachment pattern."),
    "ambiguous_attachment": (
        S.NEEDS_REVIEW,
        "Several files match this recipient's attachment pattern where one was expected; "
        "approve to send them all.",
    ),
    "too_many_attachments": (
        S.BLOCKED,
        f"More than {attachments.MAX_MATCHES} files match this recipient's pattern.",
    ),
    "attachment_error": (S.BLOCKED, "The attachment pattern cannot be used for this recipient."),
    "attachment_too_large": (
        S.BLOCKED,
        "This recipient's files are larger than the limit for one message.",
    ),
    "message_too_large": (S.BLOCKED, "The whole message is larger than the size limit."),
    "empty_subject": (S.WARNING, "The subject is empty for this recipient."),
    "long_subject": (
        S.WARNING,
        f"The subject is longer than {LONG_SUBJECT} characters; inboxes will cut it.",
    ),
}
_SEVERITY = {
    S.READY: 0, S.WARNING: 1, S.NEEDS_REVIEW: 2, S.BLOCKED: 3, S.EXCLUDED: 4, S.INACTIVE: 5,
}  # fmt: skip
del S


def status_for(reasons: Iterable[Mapping[str, Any]]) -> ReviewStatus:
    """The review status a list of reasons comes to (the most severe one's)."""
    status = ReviewStatus.READY
    for reason in reasons:
        implied = REASONS[reason["code"]][0]
        if _SEVERITY[implied] > _SEVERITY[status]:
            status = implied
    return status


def reason(code: str, detail: Any = None) -> dict[str, Any]:
    assert code in REASONS, code
    return {"code": code, "detail": detail}


# --- what every message of a version shares -----------------------------------------------


@dataclass
class VersionContext:
    """A version's templates, sender, files and caps, compiled once."""

    workspace_id: int
    campaign_id: int
    version: CampaignVersion
    skeleton: mime.MessageSkeleton
    digest: bytes  # of everything but the recipient
    pattern: str
    zip: bool
    root: Path
    campaign_files: list[tuple[str, str, Path]]  # (filename, content type, path) when zipping
    max_message_bytes: int
    _shared_zip: mime.AttachmentFile | None = None

    def render(self, data: Mapping[str, Any]) -> templating.RenderOutcome:
        version = self.version
        return templating.render_message(
            subject=version.subject, html_body=version.html_body, text_body=version.text_body,
            data=data,
        )  # fmt: skip

    def files(self, found: Sequence[tuple[str, Path]]) -> list[mime.AttachmentFile]:
        """The attachments of one message besides the skeleton's (paths found for it)."""
        if not self.zip:
            return [
                mime.AttachmentFile(path.name, _content_type(path.name), path=path)
                for _, path in found
            ]
        if not found and not self.campaign_files:
            return []
        if not found:
            if self._shared_zip is None:
                self._shared_zip = self._zip(())
            return [self._shared_zip]
        return [self._zip(found)]

    def _zip(self, found: Sequence[tuple[str, Path]]) -> mime.AttachmentFile:
        entries = [(name, path) for name, _, path in self.campaign_files]
        entries += [(path.name, path) for _, path in found]
        return mime.AttachmentFile(ZIP_NAME, "application/zip", data=_zip(entries))


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _zip(entries: Sequence[tuple[str, Path]]) -> bytes:
    """The files in one archive, flat, same names numbered; the same files give the
    same bytes (entry times are the files' modification times)."""
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries:
            stem, dot, ext = name.rpartition(".")
            stem, ext = (stem, dot + ext) if dot and stem else (name, "")
            arcname, number = name, 1
            while arcname.lower() in used:
                number += 1
                arcname = f"{stem} ({number}){ext}"
            used.add(arcname.lower())
            info = zipfile.ZipInfo.from_file(path, arcname=arcname)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, Path(path).read_bytes())
    return buffer.getvalue()


def _sender(session: Session, workspace_id: int, version: CampaignVersion) -> SenderAccount:
    sender = None
    if version.sender_account_id is not None:
        sender = session.exec(
            select(SenderAccount).where(
                SenderAccount.workspace_id == workspace_id,
                SenderAccount.id == version.sender_account_id,
            )
        ).first()
    if sender is None:
        raise InvalidInput(
            "The campaign's sender account does not exist any more. Choose another sender, "
            "publish and build again.",
            field="sender_account_id",
        )
    return sender


def version_context(
    session: Session, workspace_id: int, version: CampaignVersion
) -> VersionContext:
    """Compile what every message of `version` shares; InvalidInput when the sender or
    a campaign file cannot be used (the whole build fails: nothing can be sent)."""
    settings = get_settings()
    sender = _sender(session, workspace_id, version)
    rules = version.attachment_rules or {}
    pattern = str(rules.get("pattern") or "").strip()
    zipped = bool(rules.get("zip"))
    rows = attachments.list_campaign_files(
        session=session, workspace_id=workspace_id, version_id=version.id
    )
    files: list[tuple[str, str, Path]] = []
    for row in rows:
        path = attachments.campaign_file_path(row)
        if not path.is_file():
            raise InvalidInput(
                f"The campaign file {row.filename} is missing from the server; remove it "
                "from the campaign or upload it again, publish and build again.",
                field="file",
            )
        files.append((row.filename, row.content_type, path))
    domain = sender.from_email.rpartition("@")[2]
    try:
        skeleton = mime.compile_skeleton(
            from_name=sender.from_name or "",
            from_address=sender.from_email,
            reply_to=sender.reply_to or None,
            campaign_files=[]
            if zipped
            else [mime.AttachmentFile(name, ctype, path=path) for name, ctype, path in files],
            message_id_domain=domain,
        )
    except mime.UnsafeHeader as exc:
        raise InvalidInput(f"The sender account cannot be used: {exc}", field="sender") from None
    max_bytes = int(settings.message_max_mb * 1_000_000)
    identity = [
        BUILD_FORMAT,
        version.subject, version.html_body, version.text_body, pattern, zipped,
        [(r.filename, r.stored_path, r.size_bytes, r.content_type) for r in rows],
        [sender.from_name, sender.from_email, sender.reply_to],
        settings.public_url,
        # A new master key changes every unsubscribe link.
        unsubscribe.unsubscribe_token(0, "key@check"),
        max_bytes, attachments.MAX_RECIPIENT_BYTES, LONG_SUBJECT,
    ]  # fmt: skip
    digest = hashlib.sha256(_json(identity).encode()).digest()
    return VersionContext(
        workspace_id=workspace_id,
        campaign_id=version.campaign_id,
        version=version,
        skeleton=skeleton,
        digest=digest,
        pattern=pattern,
        zip=zipped,
        root=attachments.attachments_root(workspace_id=workspace_id) if pattern else Path(),
        campaign_files=files if zipped else [],
        max_message_bytes=max_bytes,
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


# --- one recipient -----------------------------------------------------------------------


@dataclass
class Recipient:
    email: str
    contact_id: int | None
    first_name: str
    last_name: str
    fields: dict[str, Any]
    suppression: str | None = None
    inactive: bool = False
    duplicate: bool = False


@dataclass
class Prepared:
    """A recipient's inputs (before rendering) and their digest."""

    recipient: Recipient
    data: dict[str, Any]
    found: list[tuple[str, Path]]  # (path relative to the root, resolved path)
    sizes: list[int]
    reasons: list[dict[str, Any]]  # from the address and the files
    digest: str


def _to_name(data: Mapping[str, Any]) -> str:
    return " ".join(str(data.get(k) or "") for k in ("first_name", "last_name")).strip()


def prepare(ctx: VersionContext, recipient: Recipient) -> Prepared:
    data = templating.merge_data(
        email=recipient.email,
        first_name=recipient.first_name or "",
        last_name=recipient.last_name or "",
        fields=recipient.fields or {},
    )
    reasons: list[dict[str, Any]] = []
    if recipient.inactive:
        reasons.append(reason("inactive_contact"))
    if recipient.suppression:
        reasons.append(reason("suppressed", recipient.suppression))
    if recipient.duplicate:
        reasons.append(reason("duplicate_recipient"))
    try:
        contacts.normalize_contact_email(recipient.email)
        mime.encode_address(recipient.email)
    except InvalidInput as exc:
        reasons.append(reason("invalid_address", str(exc)))
    except mime.UnsafeHeader as exc:
        reasons.append(reason("unsupported_address", str(exc)))
    found: list[tuple[str, Path]] = []
    stamps: list[tuple[str, int, int]] = []
    sizes: list[int] = []
    if ctx.pattern:
        found, stamps, sizes = _find_files(ctx, data, reasons)
    digest = hashlib.sha256(ctx.digest)
    digest.update(
        _json(
            [recipient.email, recipient.contact_id, recipient.suppression, recipient.inactive,
             recipient.duplicate, data, stamps]
        ).encode()
    )  # fmt: skip
    return Prepared(recipient, data, found, sizes, reasons, digest.hexdigest())


def _find_files(ctx: VersionContext, data: Mapping[str, Any], reasons: list[dict[str, Any]]):
    try:
        paths = attachments.resolve_pattern(pattern=ctx.pattern, data=data, root=ctx.root)
    except InvalidInput as exc:
        reasons.append(reason("attachment_error", str(exc)))
        return [], [], []
    real_root = ctx.root.resolve()
    found, stamps, sizes = [], [], []
    for path in paths:
        stat = path.stat()
        relative = path.relative_to(real_root).as_posix()
        found.append((relative, path))
        stamps.append((relative, stat.st_size, stat.st_mtime_ns))
        sizes.append(stat.st_size)
    total = sum(sizes)
    if not paths:
        reasons.append(reason("missing_attachment", ctx.pattern))
    elif len(paths) > attachments.MAX_MATCHES:
        reasons.append(reason("too_many_attachments", len(paths)))
    elif total > attachments.MAX_RECIPIENT_BYTES:
        reasons.append(reason("attachment_too_large", f"{total / 1_000_000:.1f} MB"))
    elif len(paths) > 1 and not ctx.zip:
        reasons.append(reason("ambiguous_attachment", len(paths)))
    return found, stamps, sizes


def assemble(
    ctx: VersionContext,
    *,
    email: str,
    data: Mapping[str, Any],
    message: templating.RenderedMessage,
    found: Sequence[tuple[str, Path]],
    message_id: str,
    date: datetime,
    test_to: str | None = None,
    seed_to: str | None = None,
    seed_token: str | None = None,
) -> bytes:
    """The message's bytes (the one place both the build and `message_bytes` make them).

    `test_to` makes a marked test copy; `seed_to` + `seed_token` the copy a seed mailbox
    gets in a real send (the same message, with the seed's token to find it by)."""
    to_address, to_name, subject, extra, banner = email, _to_name(data), message.subject, {}, None
    if test_to is not None:
        to_address, to_name, subject = test_to, "", f"[TEST] {message.subject}"
        extra, banner = {"X-Mailer-App-Test": "yes"}, TEST_BANNER
    elif seed_to is not None:
        if not seed_token:
            raise ValueError("a seed copy needs its token")
        to_address, to_name, extra = seed_to, "", {SEED_TOKEN_HEADER: seed_token}
    return ctx.skeleton.assemble(
        to_name=to_name,
        to_address=to_address,
        subject=subject,
        html=message.html,
        text=message.text,
        attachments=ctx.files(found),
        message_id=message_id,
        date=date,
        unsubscribe_url=unsubscribe.unsubscribe_url(ctx.workspace_id, to_address),
        test_banner=banner,
        extra_headers=extra,
    )


def _estimated_size(files_bytes: int) -> int:
    return files_bytes * 4 // 3 + files_bytes // 38 + 2_000  # base64 plus line breaks


def build_message(
    ctx: VersionContext, prepared: Prepared, *, message_id: str, date: datetime
) -> dict[str, Any]:
    """Render, assemble and classify one recipient: the row's values."""
    reasons = list(prepared.reasons)
    data = prepared.data
    outcome = ctx.render(data)
    message = outcome.message
    if outcome.error:
        reasons.append(reason("render_error", outcome.error))
    code = "missing_field" if message is None else "blank_field"
    reasons.extend(reason(code, name) for name in outcome.missing_fields)
    size = 0
    subject = message.subject if message is not None else ""
    if message is not None:
        if not subject:
            reasons.append(reason("empty_subject"))
        elif len(subject) > LONG_SUBJECT:
            reasons.append(reason("long_subject", len(subject)))
        codes = {r["code"] for r in reasons}
        files_bytes = sum(prepared.sizes)
        if codes & {"invalid_address", "unsupported_address"}:
            pass  # no To line can be written
        elif files_bytes > attachments.MAX_RECIPIENT_BYTES:
            size = _estimated_size(files_bytes)  # blocked anyway: do not read them
        else:
            try:
                size = len(
                    assemble(
                        ctx, email=prepared.recipient.email, data=data, message=message,
                        found=prepared.found, message_id=message_id, date=date,
                    )
                )  # fmt: skip
            except mime.UnsafeHeader as exc:
                reasons.append(reason("unsafe_header", str(exc)))
            except OSError as exc:
                reasons.append(reason("attachment_error", f"A file cannot be read: {exc}"))
        if size > ctx.max_message_bytes:
            reasons.append(reason("message_too_large", f"{size / 1_000_000:.1f} MB"))
    return {
        "review_status": status_for(reasons).value,
        "reasons": reasons,
        "subject": subject,
        "size_bytes": size,
        "attachments": [
            {"path": relative, "filename": path.name, "size": size}
            for (relative, path), size in zip(prepared.found, prepared.sizes, strict=True)
        ],
    }


def row_files(ctx: VersionContext, row: BuiltMessage) -> list[tuple[str, Path]]:
    """The row's per-recipient files, checked against what the build saw."""
    items = row.attachments or []
    if not items:
        return []
    total = sum(int(item.get("size") or 0) for item in items)
    if total > attachments.MAX_RECIPIENT_BYTES:
        raise InvalidInput("This message's files are larger than the limit for one message.")
    root = attachments.attachments_root(workspace_id=ctx.workspace_id).resolve()
    found = []
    for item in items:
        relative = str(item.get("path") or "")
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise InvalidInput(f"The file {relative} is not there any more; build again.")
        if path.stat().st_size != int(item.get("size") or 0):
            raise InvalidInput(f"The file {relative} changed since the build; build again.")
        found.append((relative, path))
    return found
