"""Campaign JSON: export a whole campaign as one document, check one, import one.

The document format is the JSON Schema in `mailer_app/schemas/campaign.schema.json`
(draft 2020-12), kept in the repository and served by the app at
`GET /schemas/campaign.schema.json`. Senders, contact lists and seed lists are named,
not numbered, so a document moves between workspaces and installations: at import
they are matched by name in the importing workspace, and what does not match is
reported (the wizard then shows that step as unfinished).

Campaign-wide files travel inside the document (`content_base64`, what export
writes) or beside it (`path`, relative to the document's folder: `base_dir`). A
path may not leave that folder, and absolute paths are refused, so a document
cannot pull arbitrary files of the machine into a campaign.

An import goes through the wizard's own rules (`campaigns.save_step`): what the
wizard would refuse, the import refuses, and nothing is half-imported (the caller's
transaction rolls back).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import mimetypes
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from sqlmodel import Session, select

from mailer_app.models import Campaign, ContactList, SeedList, SenderAccount, Source, utcnow
from mailer_app.schemas import CAMPAIGN_SCHEMA_PATH
from mailer_app.services import InvalidInput, attachments, audit, campaigns, templating

SCHEMA_PATH = CAMPAIGN_SCHEMA_PATH
FORMAT = "mailer_app.campaign/1"
MAX_PROBLEMS = 50
MAX_FILE_BYTES = attachments.MAX_FILE_BYTES  # one file given by path or inline


class CampaignDocumentInvalid(InvalidInput):
    """The document breaks the schema or a rule; `problems` lists each, readably."""

    def __init__(self, problems: list[str]) -> None:
        shown = "; ".join(problems[:5]) + ("; …" if len(problems) > 5 else "")
        super().__init__(f"This campaign document is not valid: {shown}", field="document")
        self.problems = problems


@dataclass
class References:
    """The workspace rows a document's names point at, and the names that match none."""

    sender_account_id: int | None = None
    list_ids: list[int] = field(default_factory=list)
    seed_list_id: int | None = None
    notes: list[str] = field(default_factory=list)


@functools.cache
def campaign_schema() -> dict[str, Any]:
    """The published JSON Schema of campaign documents."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.cache
def _validator() -> Draft202012Validator:
    schema = campaign_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- checking -------------------------------------------------------------------------------


def schema_problems(document: Any) -> list[str]:
    """Every way `document` breaks the schema, as "where: what" lines ([] when valid)."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    return [_describe(e) for e in errors[:MAX_PROBLEMS]]


def _describe(error: ValidationError) -> str:
    where = _json_path(error.absolute_path)
    message = error.message
    custom = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    if custom and error.validator in ("pattern", "oneOf"):
        message = custom
    elif error.validator == "const":
        message = f"must be {error.validator_value!r}"
    elif error.validator == "enum":
        message = "must be one of " + ", ".join(repr(v) for v in error.validator_value)
    elif error.validator == "maxLength":
        message = f"is too long (at most {error.validator_value} characters)"
    elif error.validator == "minLength" and error.validator_value == 1:
        message = "must not be empty"
    return f"{where}: {message}"


def _json_path(path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(the document)"


def check_document(document: Any, *, base_dir: Path | None = None) -> list[str]:
    """Every problem found without a database: the schema, templates, the attachment
    pattern, and the files (readable, inside `base_dir`). [] when the document is fine."""
    problems = schema_problems(document)
    if problems:
        return problems
    content = document["content"]
    try:
        templating.check_templates(
            subject=content.get("subject", ""),
            html_body=content.get("html_body", ""),
            text_body=content.get("text_body", ""),
        )
    except InvalidInput as exc:
        problems.append(f"content.{exc.field or 'subject'}: {exc}")
    rules = document.get("attachments") or {}
    if rules.get("pattern"):
        try:
            attachments.check_pattern(rules["pattern"])
        except InvalidInput as exc:
            problems.append(f"attachments.pattern: {exc}")
    for index, item in enumerate(rules.get("files") or []):
        try:
            _file_data(item, base_dir)
        except InvalidInput as exc:
            problems.append(f"attachments.files[{index}]: {exc}")
    return problems


def _file_data(item: dict[str, Any], base_dir: Path | None) -> bytes:
    if "content_base64" in item:
        try:
            data = base64.b64decode(item["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("content_base64 is not valid base64.") from None
        if len(data) > MAX_FILE_BYTES:
            raise InvalidInput("this file is too large.")
        return data
    return _read_relative(item["path"], base_dir)


def _read_relative(path_text: str, base_dir: Path | None) -> bytes:
    relative = Path(path_text)
    if relative.is_absolute() or path_text.startswith(("~", "\\")):
        raise InvalidInput(f"{path_text} is an absolute path; give it relative to the document.")
    if base_dir is None:
        raise InvalidInput(
            f"{path_text} is relative, but the document's folder is not known "
            "(import the document from a file)."
        )
    base = base_dir.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise InvalidInput(f"{path_text} points outside the document's folder.")
    if not target.is_file():
        raise InvalidInput(f"{path_text} was not found next to the document.")
    if target.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{path_text} is too large.")
    return target.read_bytes()


def resolve_references(*, session: Session, workspace_id: int, document: dict) -> References:
    """Match the document's sender, contact lists and seed list by name in the workspace."""
    refs = References()
    sender = document.get("sender") or None
    if sender:
        row = session.exec(
            select(SenderAccount).where(
                SenderAccount.workspace_id == workspace_id, SenderAccount.name == sender["name"]
            )
        ).first()
        if row is None and sender.get("from_email"):
            row = session.exec(
                select(SenderAccount)
                .where(
                    SenderAccount.workspace_id == workspace_id,
                    SenderAccount.from_email == sender["from_email"],
                )
                .order_by(SenderAccount.id)
            ).first()
        if row is None:
            refs.notes.append(f"No sender account named {sender['name']}: choose one in Sender.")
        else:
            refs.sender_account_id = row.id
    recipients = document.get("recipients") or {}
    for name in recipients.get("lists") or []:
        list_id = session.exec(
            select(ContactList.id).where(
                ContactList.workspace_id == workspace_id, ContactList.name == name
            )
        ).first()
        if list_id is None:
            refs.notes.append(f"No contact list named {name}: choose lists in Recipients.")
        else:
            refs.list_ids.append(list_id)
    seed_name = recipients.get("seed_list")
    if seed_name:
        seed_list_id = session.exec(
            select(SeedList.id).where(
                SeedList.workspace_id == workspace_id, SeedList.name == seed_name
            )
        ).first()
        if seed_list_id is None:
            refs.notes.append(f"No seed list named {seed_name}: choose one in Recipients.")
        refs.seed_list_id = seed_list_id
    return refs


# --- import -----------------------------------------------------------------------------------


def import_campaign(
    *,
    session: Session,
    workspace_id: int,
    document: dict,
    base_dir: Path | None,
    user_id: int | None,
    source: Source | str = Source.IMPORT,
) -> Campaign:
    """A new draft campaign from a document; raises CampaignDocumentInvalid.

    Names that match nothing in the workspace leave that step unfinished (see
    `resolve_references` for the list). The campaign opens on the Review step.
    """
    problems = check_document(document, base_dir=base_dir)
    if problems:
        raise CampaignDocumentInvalid(problems)
    refs = resolve_references(session=session, workspace_id=workspace_id, document=document)
    campaign = campaigns.create_campaign(
        session=session,
        workspace_id=workspace_id,
        name=document["name"],
        user_id=user_id,
        source=source,
    )
    recipients = document.get("recipients") or {}
    content = document["content"]
    rules = document.get("attachments") or {}
    steps = {
        "basics": {"name": document["name"], "description": document.get("description", "")},
        "sender": {"sender_account_id": refs.sender_account_id},
        "recipients": {
            "list_ids": refs.list_ids,
            "filters": recipients.get("filters") or [],
            "seed_list_id": refs.seed_list_id,
        },
        "content": {
            "subject": content.get("subject", ""),
            "html_body": content.get("html_body", ""),
            "text_body": content.get("text_body", ""),
        },
        "attachments": {"pattern": rules.get("pattern", ""), "zip": bool(rules.get("zip"))},
    }
    refused: list[str] = []
    for step, values in steps.items():
        result = campaigns.save_step(
            session=session,
            workspace_id=workspace_id,
            campaign_id=campaign.id,
            step=step,
            values=values,
            user_id=user_id,
            source=source,
        )
        if not result.saved:
            refused += [f"{step}.{name}: {message}" for name, message in result.errors.items()]
    if refused:
        raise CampaignDocumentInvalid(refused)
    for item in rules.get("files") or []:
        campaigns.add_campaign_file(
            session=session,
            workspace_id=workspace_id,
            campaign_id=campaign.id,
            filename=item["filename"],
            data=_file_data(item, base_dir),
            content_type=item.get("content_type") or _guess_type(item["filename"]),
            user_id=user_id,
            source=source,
        )
    campaigns.set_wizard_step(
        session=session, workspace_id=workspace_id, campaign_id=campaign.id, step="review"
    )
    audit.record(
        session=session,
        action="campaign.import",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="campaign",
        target_id=campaign.id,
        details={"name": campaign.name, "unmatched": refs.notes},
    )
    return campaign


def _guess_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


# --- export -----------------------------------------------------------------------------------


def export_campaign(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> dict[str, Any]:
    """The campaign's current version (the draft, else the newest published one) as a
    document that `import_campaign` accepts; files are embedded as base64."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    version = campaigns.current_version(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    recipients = version.recipients or {}
    rules = version.attachment_rules or {}
    document: dict[str, Any] = {
        "format": FORMAT,
        "name": campaign.name,
        "description": campaign.description,
        "sender": _sender_ref(session, workspace_id, version.sender_account_id),
        "recipients": {
            "lists": _list_names(session, workspace_id, recipients.get("list_ids") or []),
            "filters": list(recipients.get("filters") or []),
            "seed_list": _name_of(session, SeedList, workspace_id, version.seed_list_id),
        },
        "content": {
            "subject": version.subject,
            "html_body": version.html_body,
            "text_body": version.text_body,
        },
        "attachments": {
            "files": [
                {
                    "filename": row.filename,
                    "content_type": row.content_type,
                    "content_base64": base64.b64encode(
                        attachments.read_campaign_file(
                            session=session, workspace_id=workspace_id, attachment_id=row.id
                        )
                    ).decode("ascii"),
                }
                for row in attachments.list_campaign_files(
                    session=session, workspace_id=workspace_id, version_id=version.id
                )
            ],
            "pattern": rules.get("pattern") or "",
            "zip": bool(rules.get("zip")),
        },
        "exported": {
            "at": utcnow().isoformat(),
            "campaign_id": campaign.id,
            "version": version.number,
            "is_draft": version.is_draft,
            "status": campaign.status,
        },
    }
    audit.record(
        session=session,
        action="campaign.export",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="campaign",
        target_id=campaign.id,
        details={"version": version.number},
    )
    return document


def _sender_ref(session: Session, workspace_id: int, sender_id: int | None) -> dict | None:
    if sender_id is None:
        return None
    row = session.exec(
        select(SenderAccount).where(
            SenderAccount.workspace_id == workspace_id, SenderAccount.id == sender_id
        )
    ).first()
    return {"name": row.name, "from_email": row.from_email} if row else None


def _list_names(session: Session, workspace_id: int, list_ids: list[int]) -> list[str]:
    if not list_ids:
        return []
    return list(
        session.exec(
            select(ContactList.name)
            .where(ContactList.workspace_id == workspace_id, ContactList.id.in_(list_ids))
            .order_by(ContactList.name)
        ).all()
    )


def _name_of(session: Session, model, workspace_id: int, row_id: int | None) -> str | None:
    if row_id is None:
        return None
    return session.exec(
        select(model.name).where(model.workspace_id == workspace_id, model.id == row_id)
    ).first()
