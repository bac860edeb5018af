"""The campaign wizard's steps: what each one holds, and how it is checked.

Each step owns a part of the draft version (Basics owns the campaign's name and
description). Checking a step returns two things:

- *refused* values, which are never stored: a line break in a header value (header
  injection), an id from another workspace, a path pattern that leaves the
  attachments folder, a value over its size cap;
- *problems*, which are stored (a draft may be unfinished: the author can close the
  tab with half a template and find it again) but block publishing.

Both come back as {field: plain-language message}, shown next to the field.
`campaigns.save_step` applies the changes; `campaigns.publish` refuses a version
while any step has a problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from mailer_app.models import Campaign, CampaignVersion, ContactList, SeedList, SenderAccount
from mailer_app.services import InvalidInput, attachments, contacts, templating

STEPS = ("basics", "sender", "recipients", "content", "attachments", "review")
STEP_LABELS = {
    "basics": "Basics",
    "sender": "Sender",
    "recipients": "Recipients",
    "content": "Content",
    "attachments": "Attachments",
    "review": "Review",
}
# Which values each step accepts (anything else is ignored, never stored).
STEP_FIELDS = {
    "basics": ("name", "description"),
    "sender": ("sender_account_id",),
    "recipients": ("list_ids", "filters", "seed_list_id"),
    "content": ("subject", "html_body", "text_body"),
    "attachments": ("pattern", "zip"),
    "review": (),
}
NAME_MAX = 200
DESCRIPTION_MAX = 1000
SUBJECT_MAX = 998  # RFC 5322's line limit; a real subject is far shorter
BODY_MAX = 1_000_000
PATTERN_MAX = 1024
MAX_FILTERS = 10
FILTER_VALUE_MAX = 200
FILTER_OPS = {
    "equals": "is",
    "not_equals": "is not",
    "contains": "contains",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
}
_LINE_BREAKS = ("\r", "\n", "\x00")


@dataclass
class StepCheck:
    """The outcome of checking one step's submitted values."""

    changes: dict[str, Any] = field(default_factory=dict)  # what will be stored
    refused: dict[str, str] = field(default_factory=dict)  # field -> why it was not stored


def check_step(
    *, session: Session, workspace_id: int, step: str, values: Mapping[str, Any]
) -> StepCheck:
    """Normalize the submitted values of `step`; refuse what may never be stored.

    Only the fields present in `values` are checked (autosave sends one field at a
    time); unknown fields are ignored.
    """
    if step not in STEPS:
        raise InvalidInput(f"There is no wizard step called {step!r}.", field="step")
    result = StepCheck()
    for name in STEP_FIELDS[step]:
        if name not in values:
            continue
        try:
            result.changes[name] = _CHECKERS[name](session, workspace_id, values[name])
        except InvalidInput as exc:
            result.refused[exc.field or name] = str(exc)
    return result


# --- one field each ------------------------------------------------------------------


def _plain_text(value: Any, *, field: str, label: str, max_length: int) -> str:
    text = "" if value is None else str(value)
    if any(ch in text for ch in _LINE_BREAKS):
        raise InvalidInput(f"The {label} cannot contain line breaks.", field=field)
    text = text.strip()
    if len(text) > max_length:
        raise InvalidInput(
            f"The {label} is too long (at most {max_length} characters).", field=field
        )
    return text


def _name(_session, _workspace_id, value) -> str:
    return _plain_text(value, field="name", label="campaign name", max_length=NAME_MAX)


def _description(_session, _workspace_id, value) -> str:
    text = "" if value is None else str(value)
    if len(text) > DESCRIPTION_MAX:
        raise InvalidInput(
            f"The description is too long (at most {DESCRIPTION_MAX} characters).",
            field="description",
        )
    return text.strip()


def _optional_id(value: Any, *, field: str) -> int | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "none")):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput("Choose one of the options.", field=field) from None


def _sender(session: Session, workspace_id: int, value) -> int | None:
    sender_id = _optional_id(value, field="sender_account_id")
    if sender_id is not None and not _exists(session, SenderAccount, workspace_id, sender_id):
        raise InvalidInput(
            "This sender account does not exist any more. Choose another one.",
            field="sender_account_id",
        )
    return sender_id


def _seed_list(session: Session, workspace_id: int, value) -> int | None:
    seed_list_id = _optional_id(value, field="seed_list_id")
    if seed_list_id is not None and not _exists(session, SeedList, workspace_id, seed_list_id):
        raise InvalidInput(
            "This seed list does not exist any more. Choose another one.", field="seed_list_id"
        )
    return seed_list_id


def _list_ids(session: Session, workspace_id: int, value) -> list[int]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, list | tuple) else [value]
    try:
        ids = sorted({int(v) for v in items})
    except (TypeError, ValueError):
        raise InvalidInput("Choose contact lists from the list.", field="list_ids") from None
    if ids:
        found = set(
            session.exec(
                select(ContactList.id).where(
                    ContactList.workspace_id == workspace_id, ContactList.id.in_(ids)
                )
            ).all()
        )
        if found != set(ids):
            raise InvalidInput(
                "One of the chosen contact lists does not exist any more.", field="list_ids"
            )
    return ids


def _filters(_session, _workspace_id, value) -> list[dict[str, str]]:
    if value is None or value == "":
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInput("The filters could not be read.", field="filters")
    if len(value) > MAX_FILTERS:
        raise InvalidInput(f"Use at most {MAX_FILTERS} filters.", field="filters")
    checked = []
    for item in value:
        if not isinstance(item, Mapping):
            raise InvalidInput("The filters could not be read.", field="filters")
        name = _plain_text(item.get("field"), field="filters", label="field name", max_length=64)
        op = str(item.get("op") or "equals")
        if not name:
            raise InvalidInput("Choose the field each filter looks at.", field="filters")
        if op not in FILTER_OPS:
            raise InvalidInput("Choose how each filter compares.", field="filters")
        text = _plain_text(
            item.get("value"), field="filters", label="filter value", max_length=FILTER_VALUE_MAX
        )
        checked.append({"field": name, "op": op, "value": "" if op.startswith("is_") else text})
    return checked


def _subject(_session, _workspace_id, value) -> str:
    text = "" if value is None else str(value)
    return templating.check_header_value(text, field="subject", max_length=SUBJECT_MAX)


def _body(field_name: str):
    def check(_session, _workspace_id, value) -> str:
        text = "" if value is None else str(value)
        if "\x00" in text:
            raise InvalidInput("The message contains a NUL character.", field=field_name)
        if len(text) > BODY_MAX:
            raise InvalidInput(
                f"The message is too long (at most {BODY_MAX:,} characters).", field=field_name
            )
        return text

    return check


def _pattern(_session, _workspace_id, value) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    if len(text) > PATTERN_MAX or any(ch in text for ch in _LINE_BREAKS):
        raise InvalidInput("This file pattern is too long or has line breaks.", field="pattern")
    try:
        return attachments.check_pattern(text)
    except InvalidInput as exc:
        raise InvalidInput(str(exc), field="pattern") from None


def _zip(_session, _workspace_id, value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


_CHECKERS = {
    "name": _name,
    "description": _description,
    "sender_account_id": _sender,
    "list_ids": _list_ids,
    "filters": _filters,
    "seed_list_id": _seed_list,
    "subject": _subject,
    "html_body": _body("html_body"),
    "text_body": _body("text_body"),
    "pattern": _pattern,
    "zip": _zip,
}


def _exists(session: Session, model, workspace_id: int, row_id: int) -> bool:
    return (
        session.exec(
            select(model.id).where(model.workspace_id == workspace_id, model.id == row_id)
        ).first()
        is not None
    )


# --- reading a step back from the rows -----------------------------------------------


def step_values(campaign: Campaign, version: CampaignVersion) -> dict[str, Any]:
    """Every step's stored values, by field name (what the wizard shows)."""
    recipients = version.recipients or {}
    rules = version.attachment_rules or {}
    return {
        "name": campaign.name,
        "description": campaign.description,
        "sender_account_id": version.sender_account_id,
        "list_ids": list(recipients.get("list_ids") or []),
        "filters": list(recipients.get("filters") or []),
        "seed_list_id": version.seed_list_id,
        "subject": version.subject,
        "html_body": version.html_body,
        "text_body": version.text_body,
        "pattern": rules.get("pattern") or "",
        "zip": bool(rules.get("zip")),
    }


def apply_changes(campaign: Campaign, version: CampaignVersion, changes: Mapping[str, Any]):
    """Write checked values to the campaign (basics) and the draft (every other step)."""
    for name in ("name", "description"):
        if name in changes:
            setattr(campaign, name, changes[name])
    for name in ("sender_account_id", "seed_list_id", "subject", "html_body", "text_body"):
        if name in changes:
            setattr(version, name, changes[name])
    if "list_ids" in changes or "filters" in changes:
        # JSON columns change only when a new object is assigned.
        version.recipients = {**(version.recipients or {}), **_pick(changes, "list_ids", "filters")}
    if "pattern" in changes or "zip" in changes:
        version.attachment_rules = {
            **(version.attachment_rules or {}),
            **_pick(changes, "pattern", "zip"),
        }


def _pick(mapping: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {n: mapping[n] for n in names if n in mapping}


# --- what blocks publishing ------------------------------------------------------------


def step_problems(
    *, session: Session, campaign: Campaign, version: CampaignVersion, step: str
) -> dict[str, str]:
    """What in `step` stops the version from being published ({} when complete)."""
    values = step_values(campaign, version)
    workspace_id = campaign.workspace_id
    if step == "basics":
        return {} if values["name"] else {"name": "Give the campaign a name."}
    if step == "sender":
        return _sender_problems(session, workspace_id, values["sender_account_id"])
    if step == "recipients":
        return _recipient_problems(session, workspace_id, values)
    if step == "content":
        return content_problems(session=session, workspace_id=workspace_id, values=values)
    if step == "attachments":
        return _attachment_problems(session, workspace_id, version, values)
    return {}


def _sender_problems(session: Session, workspace_id: int, sender_id: int | None) -> dict:
    if sender_id is None:
        return {"sender_account_id": "Choose the sender account the campaign goes out from."}
    sender = session.exec(
        select(SenderAccount).where(
            SenderAccount.workspace_id == workspace_id, SenderAccount.id == sender_id
        )
    ).first()
    if sender is None:
        return {"sender_account_id": "This sender account does not exist any more."}
    if sender.status != "active":
        return {
            "sender_account_id": f"The sender account {sender.name} is {sender.status}: "
            "fix it on the Sender accounts page or choose another one."
        }
    return {}


def _recipient_problems(session: Session, workspace_id: int, values: dict) -> dict[str, str]:
    list_ids = values["list_ids"]
    if not list_ids:
        return {"list_ids": "Choose at least one contact list."}
    known = merge_field_names(session=session, workspace_id=workspace_id, list_ids=list_ids)
    for item in values["filters"]:
        if item["field"] not in known:
            return {
                "filters": f"No contact in the chosen lists has a field called {item['field']}."
            }
    # Whether anyone is left, not how many: the first match ends the search.
    first = next(
        contacts.iter_recipients(
            session=session,
            workspace_id=workspace_id,
            list_ids=list_ids,
            filters=values["filters"] or None,
        ),
        None,
    )
    if first is None:
        where = "filters" if values["filters"] else "list_ids"
        return {where: "Nobody is left to send to: the chosen lists and filters match no contact."}
    return {}


BUILT_IN_FIELDS = ("email", "first_name", "last_name")


def merge_field_names(*, session: Session, workspace_id: int, list_ids: list[int]) -> set[str]:
    """Every merge field a recipient of these lists can have: the standard ones and the
    custom fields seen when the lists were imported (as templates address them)."""
    names = set(BUILT_IN_FIELDS)
    if list_ids:
        for field_names in session.exec(
            select(ContactList.field_names).where(
                ContactList.workspace_id == workspace_id, ContactList.id.in_(list_ids)
            )
        ).all():
            names.update(filter(None, map(templating.merge_field_name, field_names or [])))
    return names


def full_sample_data(names: set[str]) -> dict[str, Any]:
    """Merge data in which every field in `names` has a value."""
    return templating.merge_data(
        email="someone@example.com",
        first_name="Sample",
        last_name="Sample",
        fields={name: "sample" for name in names if name not in BUILT_IN_FIELDS},
    )


def content_problems(*, session: Session, workspace_id: int, values: dict) -> dict[str, str]:
    """Per field: template syntax problems, and merge fields no recipient of the chosen
    lists has (used without a default or an `if`, they would be missing for everyone)."""
    problems: dict[str, str] = {}
    if not values["subject"].strip():
        problems["subject"] = "Write a subject line."
    if not values["html_body"].strip() and not values["text_body"].strip():
        problems["html_body"] = "Write the message (HTML, text, or both)."
    for problem in templating.find_template_problems(
        subject=values["subject"], html_body=values["html_body"], text_body=values["text_body"]
    ):
        problems.setdefault(problem.field or "html_body", str(problem))
    if not values["list_ids"]:
        return problems  # which fields exist is known once lists are chosen
    known = merge_field_names(
        session=session, workspace_id=workspace_id, list_ids=values["list_ids"]
    )
    sample = full_sample_data(known)
    for name in ("subject", "html_body", "text_body"):
        if not values[name] or name in problems:
            continue
        parts = {"subject": "", "html_body": "", "text_body": "", name: values[name]}
        unknown = templating.render_message(**parts, data=sample).missing_fields
        if unknown:
            problems[name] = (
                "The chosen contact lists have no field called "
                + ", ".join(unknown)
                + ". Check the spelling, or give it a default, like {{ "
                + unknown[0]
                + ' | default("…") }}.'
            )
    return problems


def _attachment_problems(
    session: Session, workspace_id: int, version: CampaignVersion, values: dict
) -> dict[str, str]:
    if values["zip"] and not values["pattern"]:
        files = attachments.list_campaign_files(
            session=session, workspace_id=workspace_id, version_id=version.id
        )
        if not files:
            return {"zip": "There is nothing to zip: add files or a per-recipient pattern."}
    return {}
