"""Operator commands: `python -m mailer_app COMMAND`.

migrate          apply database migrations (production runs this before start)
status           print the schema revision and the health of every component
generate-key     print a new MASTER_KEY
create-user      add a user to a workspace (asks for the password)
rotate-secrets   re-encrypt every stored secret with the newest MASTER_KEY
campaign validate FILE                  check a campaign JSON document
campaign import FILE --workspace ID     import it as a new draft campaign
campaign export ID --workspace ID       print a campaign as a JSON document
build CAMPAIGN_ID --workspace ID [--wait]   build every message of the published version
review CAMPAIGN_ID --workspace ID           counts by status and reason, and what blocks Send
test-send MESSAGE_ID --to ADDRESS --workspace ID   send one built message as a test
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time

from mailer_app.db import schema_revisions, session_scope, upgrade_to_head
from mailer_app.settings import ConfigurationError, get_settings


def cmd_migrate(_args) -> int:
    upgrade_to_head()
    current, _head = schema_revisions()
    print(f"database is at revision {current}")
    return 0


def cmd_status(_args) -> int:
    from mailer_app.services.health import system_health

    report = system_health(get_settings())
    print(json.dumps(report, indent=2))
    return 0 if report["status"] == "ok" else 1


def cmd_generate_key(_args) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def cmd_create_user(args) -> int:
    from mailer_app.models import Source
    from mailer_app.services import auth

    password = args.password_stdin and sys.stdin.readline().rstrip("\n") or getpass.getpass()
    with session_scope() as session:
        user = auth.create_user(
            session=session,
            workspace_id=args.workspace_id,
            email=args.email,
            password=password,
            role=args.role,
            created_by_id=None,
            source=Source.CLI,
        )
        print(f"created user {user.email} (id {user.id}) as {args.role}")
    return 0


def cmd_rotate_secrets(_args) -> int:
    from mailer_app.services.secrets import rotate_secrets

    with session_scope() as session:
        count = rotate_secrets(session=session)
    print(f"re-encrypted {count} secrets with the newest key")
    return 0


def _read_document(path_text: str):
    """(document, its folder) or (None, None) after printing why it cannot be read."""
    from pathlib import Path

    path = Path(path_text)
    try:
        return json.loads(path.read_text(encoding="utf-8")), path.resolve().parent
    except OSError as exc:
        print(f"error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
    except UnicodeDecodeError:
        print(f"error: {path} is not UTF-8 text", file=sys.stderr)
    except json.JSONDecodeError as exc:
        print(f"error: {path} is not JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
              file=sys.stderr)  # fmt: skip
    return None, None


def cmd_campaign_validate(args) -> int:
    from mailer_app.services.campaign_json import check_document

    document, base_dir = _read_document(args.file)
    if document is None:
        return 1
    problems = check_document(document, base_dir=base_dir)
    for problem in problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{args.file} is a valid campaign document")
    return 0


def cmd_campaign_import(args) -> int:
    from mailer_app.models import Source
    from mailer_app.services import InvalidInput, ServiceError
    from mailer_app.services.campaign_json import (
        CampaignDocumentInvalid,
        import_campaign,
        resolve_references,
    )
    from mailer_app.services.campaigns import step_status
    from mailer_app.services.workspaces import get_workspace

    document, base_dir = _read_document(args.file)
    if document is None:
        return 1
    try:
        with session_scope() as session:
            get_workspace(session=session, workspace_id=args.workspace)
            campaign = import_campaign(
                session=session, workspace_id=args.workspace, document=document,
                base_dir=base_dir, user_id=None, source=Source.CLI,
            )  # fmt: skip
            notes = resolve_references(
                session=session, workspace_id=args.workspace, document=document
            ).notes
            unfinished = [
                s for s in step_status(
                    session=session, workspace_id=args.workspace, campaign_id=campaign.id
                ) if not s.complete
            ]  # fmt: skip
            campaign_id, name = campaign.id, campaign.name
    except CampaignDocumentInvalid as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem}", file=sys.stderr)
        return 1
    except (InvalidInput, ServiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"imported campaign {name!r} as campaign {campaign_id} (draft version 1)")
    for note in notes:
        print(f"  note: {note}")
    for step in unfinished:
        for message in step.errors.values():
            print(f"  to finish in {step.label}: {message}")
    return 0


def cmd_campaign_export(args) -> int:
    from mailer_app.models import Source
    from mailer_app.services import ServiceError
    from mailer_app.services.campaign_json import export_campaign

    try:
        with session_scope() as session:
            document = export_campaign(
                session=session, workspace_id=args.workspace, campaign_id=args.campaign_id,
                user_id=None, source=Source.CLI,
            )  # fmt: skip
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


# --- build and review ---------------------------------------------------------------------


def _build_line(row) -> str:
    counts = ", ".join(f"{n:,} {status}" for status, n in (row.counts or {}).items() if n)
    text = f"build {row.id}: {row.status}, {row.done:,} of {row.total:,} recipients"
    if row.status == "done":
        text += f", {row.changed:,} new or changed" + (f" ({counts})" if counts else "")
    if row.message:
        text += f": {row.message}"
    return text


def cmd_build(args) -> int:
    from mailer_app.models import CampaignBuild, CampaignVersion, Source
    from mailer_app.services import ServiceError, build
    from mailer_app.services.workspaces import get_workspace

    try:
        with session_scope() as session:
            get_workspace(session=session, workspace_id=args.workspace)
            row = build.start_build(
                session=session, workspace_id=args.workspace, campaign_id=args.campaign_id,
                user_id=None, source=Source.CLI,
            )  # fmt: skip
            version = session.get(CampaignVersion, row.version_id)
            build_id, number = row.id, version.number if version else "?"
            print(f"build {build_id} of campaign {args.campaign_id} (version {number}) "
                  f"is {row.status}")  # fmt: skip
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    last = ""
    while True:
        with session_scope() as session:
            row = session.get(CampaignBuild, build_id)
            line = _build_line(row)
            status = row.status
        if line != last:
            print(line, flush=True)
            last = line
        if status in ("done", "failed"):
            return 0 if status == "done" else 1
        if time.monotonic() > deadline:
            print(f"error: the build did not finish within {args.timeout:g} s "
                  "(is a worker running on the build queue?)", file=sys.stderr)  # fmt: skip
            return 1
        time.sleep(0.5)


def cmd_review(args) -> int:
    from mailer_app.services import ServiceError, review
    from mailer_app.services.campaigns import STATUS_LABELS, get_campaign

    try:
        with session_scope() as session:
            campaign = get_campaign(
                session=session, workspace_id=args.workspace, campaign_id=args.campaign_id
            )
            label = STATUS_LABELS.get(campaign.status, campaign.status)
            counts = review.review_counts(
                session=session, workspace_id=args.workspace, campaign_id=args.campaign_id
            )
            blockers = review.send_blockers(
                session=session, workspace_id=args.workspace, campaign_id=args.campaign_id
            )
            print(f"campaign {campaign.id} {campaign.name!r}: {label}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{counts.total:,} messages")
    for status, n in counts.by_status.items():
        print(f"  {status:<13} {n:>9,}")
    if counts.by_reason:
        print("reasons:")
    for reason in counts.by_reason:
        approved = f", {reason.approved:,} approved" if reason.approved else ""
        details = f" [{', '.join(reason.details)}]" if reason.details else ""
        print(f"  {reason.status:<13} {reason.code:<22} {reason.count:>9,}{approved}"
              f"  {reason.explanation}{details}")  # fmt: skip
    if blockers:
        print("Send is blocked:")
        for blocker in blockers:
            print(f"  - {blocker}")
    else:
        print("Send is possible: nothing blocks it.")
    return 0


def cmd_test_send(args) -> int:
    from mailer_app.models import Source
    from mailer_app.services import ServiceError, review

    try:
        with session_scope() as session:
            result = review.test_send(
                session=session, workspace_id=args.workspace, message_id=args.message_id,
                to_address=args.to, user_id=None, source=Source.CLI,
            )  # fmt: skip
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if result.ok:
        print(f"test sent to {args.to}: {result.detail}")
        return 0
    print(f"error: the test was not sent: {result.detail}", file=sys.stderr)
    return 1


def cmd_send_control(args) -> int:
    """queue | pause | resume | cancel a campaign's send, then print where it stands."""
    from mailer_app.models import Source
    from mailer_app.services import ServiceError, send_control

    actions = {
        "queue": send_control.start_send, "pause": send_control.pause_send,
        "resume": send_control.resume_send, "cancel": send_control.cancel_send,
    }  # fmt: skip
    try:
        with session_scope() as session:
            scope = {"session": session, "workspace_id": args.workspace,
                     "campaign_id": args.campaign_id}  # fmt: skip
            if args.command in actions:
                actions[args.command](**scope, user_id=None, source=Source.CLI)
                session.commit()
            progress = send_control.send_progress(**scope)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if progress is None:
        print(f"campaign {args.campaign_id} has never been queued")
        return 0
    print(f"campaign {progress.campaign_id} {progress.campaign_name!r}: {progress.status}"
          + (f" ({progress.status_reason})" if progress.status_reason else ""))  # fmt: skip
    print(f"  sent {progress.sent:,}  failed {progress.failed:,}  unknown {progress.unknown:,}"
          f"  remaining {progress.remaining:,}  of {progress.total:,}"
          f"  ({progress.percent:.0f}% done, {progress.rate_per_minute:,.0f}/min)")  # fmt: skip
    for group in progress.failures:
        print(f"  failed {group.count:>7,}  {group.reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mailer_app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate").set_defaults(func=cmd_migrate)
    sub.add_parser("status").set_defaults(func=cmd_status)
    sub.add_parser("generate-key").set_defaults(func=cmd_generate_key)
    create = sub.add_parser("create-user")
    create.add_argument("--workspace-id", type=int, required=True)
    create.add_argument("--email", required=True)
    create.add_argument(
        "--role", default="editor", choices=["owner", "admin", "editor", "sender", "viewer"]
    )
    create.add_argument("--password-stdin", action="store_true")
    create.set_defaults(func=cmd_create_user)
    sub.add_parser("rotate-secrets").set_defaults(func=cmd_rotate_secrets)
    campaign = sub.add_parser("campaign", help="campaign JSON documents").add_subparsers(
        dest="campaign_command", required=True
    )
    validate = campaign.add_parser("validate", help="check a campaign JSON document")
    validate.add_argument("file")
    validate.set_defaults(func=cmd_campaign_validate)
    do_import = campaign.add_parser("import", help="import a document as a new draft")
    do_import.add_argument("file")
    do_import.add_argument("--workspace", type=int, required=True, help="workspace id")
    do_import.set_defaults(func=cmd_campaign_import)
    export = campaign.add_parser("export", help="print a campaign as a JSON document")
    export.add_argument("campaign_id", type=int)
    export.add_argument("--workspace", type=int, required=True, help="workspace id")
    export.add_argument("--out", help="write to this file instead of printing")
    export.set_defaults(func=cmd_campaign_export)
    do_build = sub.add_parser("build", help="build every message of a campaign")
    do_build.add_argument("campaign_id", type=int)
    do_build.add_argument("--workspace", type=int, required=True, help="workspace id")
    do_build.add_argument("--wait", action="store_true", help="wait for the build, with progress")
    do_build.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
    do_build.set_defaults(func=cmd_build)
    do_review = sub.add_parser("review", help="counts by status and reason, and Send blockers")
    do_review.add_argument("campaign_id", type=int)
    do_review.add_argument("--workspace", type=int, required=True, help="workspace id")
    do_review.set_defaults(func=cmd_review)
    test_send = sub.add_parser("test-send", help="send one built message as a test")
    test_send.add_argument("message_id", type=int)
    test_send.add_argument("--to", required=True, help="the address to send the test to")
    test_send.add_argument("--workspace", type=int, required=True, help="workspace id")
    test_send.set_defaults(func=cmd_test_send)
    for name, text in (
        ("queue", "approve (if in review) and queue a campaign for sending"),
        ("pause", "pause a campaign's send"),
        ("resume", "resume a paused send (never re-sends)"),
        ("cancel", "cancel a send (what is not sent yet never will be)"),
        ("progress", "where a campaign's send stands"),
    ):
        control = sub.add_parser(name, help=text)
        control.add_argument("campaign_id", type=int)
        control.add_argument("--workspace", type=int, required=True, help="workspace id")
        control.set_defaults(func=cmd_send_control)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
