"""Operator commands: `python -m mailer_app COMMAND`.

migrate          apply database migrations (production runs this before start)
status           print the schema revision and the health of every component
generate-key     print a new MASTER_KEY
create-user      add a user to a workspace (asks for the password)
rotate-secrets   re-encrypt every stored secret with the newest MASTER_KEY
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
