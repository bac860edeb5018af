"""Campaign build messages per second: the build job beside the bare render + MIME loop.

Setup (not timed): a fresh, migrated SQLite database in a temporary folder with one
workspace, a sender account, a contact list of --rows contacts with 10 merge fields
(email, first and last name and 7 custom fields), and a published campaign version
whose HTML is about 5 KB and whose text part about 2 KB, both using the fields.
No attachments.

Measured in the same run, over the same recipients:
- build: `run_build`, the function the RQ job calls (no Redis here: the build row is
  created with `start_build` and run directly), with everything a real build does:
  streaming the recipients, merge data, the sandboxed render, the MIME assembly
  (to measure each message), classification, the input digests, batched writes
  of every row, progress and the audit entry.
- reference: the bare loop a first version would write: a plain `jinja2.Environment`
  rendering the same three templates, then `EmailMessage` with `set_content`,
  `add_alternative` and `as_bytes()`. It takes ~4.5 ms a message here, so it is
  timed over the first --reference-rows recipients (5,000 by default), once before
  and once after the build; the better of the two is used, so the ratio is never
  flattered.

Peak memory is the process's peak resident set size (`resource.getrusage`
ru_maxrss): everything this process held at any time, Python itself included.

Prints:
    INFO build_peak_memory=<MB>MB target=<300MB
    RESULT build=<msgs/s>msgs/s reference=<msgs/s>msgs/s ratio=<r> target=3

    .venv/bin/python bench/build.py [--rows 100000] [--reference-rows 5000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 3
TARGET_MEMORY_MB = 300
INSERT_BATCH = 10_000
CITIES = ("Berlin", "Paris", "Lyon", "Madrid", "Rome", "Oslo", "Lisbon", "Vienna", "São Paulo")

SUBJECT = "{{ first_name }}, your {{ plan }} plan news for {{ city }}"
_SECTION = """
<tr><td style="padding:16px 24px;font-family:Arial,sans-serif;font-size:15px;color:#333333">
  <h2 style="margin:0 0 8px 0;font-size:18px;color:#1a1a1a">News for {{ city }}, {{ country }}</h2>
  <p style="margin:0 0 12px 0;line-height:1.5">Hello {{ first_name }} {{ last_name }}, as a
  {{ plan }} customer since {{ signup_date }} you get early access to everything we ship this
  spring. Your customer number is {{ customer_id }} and your score is {{ score }}.</p>
  <p style="margin:0;line-height:1.5"><a href="https://example.com/account?id={{ customer_id }}"
  style="color:#0b57d0">Open your account</a> &middot; {{ notes | default("No notes") }}</p>
</td></tr>"""
HTML = (
    '<!doctype html><html><head><meta charset="utf-8"><title>Spring news</title></head>'
    '<body style="margin:0;background:#f4f4f4"><table role="presentation" width="100%" '
    'cellpadding="0" cellspacing="0" style="max-width:640px;margin:0 auto;background:#ffffff">'
    + _SECTION
    * 8
    + '<tr><td style="padding:24px;font-size:12px;color:#777777">You get this because '
    "{{ email }} is subscribed. Ünsubscribe links are in the header.</td></tr>"
    "</table></body></html>"
)
TEXT = (
    "Hello {{ first_name }} {{ last_name }},\n\n"
    + (
        "As a {{ plan }} customer in {{ city }}, {{ country }} since {{ signup_date }}, you get\n"
        "early access to everything we ship this spring (customer {{ customer_id }},\n"
        "score {{ score }}). {{ notes | default('No notes') }}\n\n"
    )
    * 12
    + "Open your account: https://example.com/account?id={{ customer_id }}\n"
)


def generate_contacts(engine, workspace_id: int, list_id: int, rows: int) -> None:
    from mailer_app.services.contact_import import _bulk_writes, _insert_sql

    sql, now = _insert_sql(engine), "2025-01-01 00:00:00.000000"
    with engine.connect() as conn, _bulk_writes(conn):
        for start in range(0, rows, INSERT_BATCH):
            values = []
            for i in range(start, min(rows, start + INSERT_BATCH)):
                country, plan = "DE" if i % 4 else "FR", ("free", "pro", "team")[i % 3]
                fields = (
                    f'{{"customer_id":"C{i:08d}","city":"{CITIES[i % len(CITIES)]}",'
                    f'"country":"{country}","plan":"{plan}",'
                    f'"signup_date":"2024-{1 + i % 12:02d}-{1 + i % 28:02d}","score":"{i % 101}"'
                    + (',"notes":"Said hi"' if i % 10 == 0 else "")
                    + "}"
                )
                address = f"ann{i % 5000}.lee{i // 5000}.{i}@example{i % 997}.com"
                values.append(
                    (workspace_id, list_id, address, f"Ann{i % 5000}", f"Lee{i // 5000}", fields,
                     True, "import", None, now, now)
                )  # fmt: skip
            with conn.begin():
                conn.exec_driver_sql(sql, values)


def reference_loop(engine, workspace_id: int, list_id: int, limit: int) -> float:
    """Messages/s of the bare loop over the first `limit` recipients."""
    from email.message import EmailMessage

    import jinja2
    from sqlmodel import Session, select

    from mailer_app.models import Contact

    # Subject and text are not HTML: no escaping there, as in the app.
    html_env = jinja2.Environment(autoescape=True)
    text_env = jinja2.Environment()  # noqa: S701
    subject, html, text = (
        text_env.from_string(SUBJECT),
        html_env.from_string(HTML),
        text_env.from_string(TEXT),
    )
    with Session(engine) as session:
        people = session.exec(
            select(Contact)
            .where(Contact.workspace_id == workspace_id, Contact.list_id == list_id)
            .order_by(Contact.email)
            .limit(limit)
        ).all()
        recipients = [
            {"email": c.email, "first_name": c.first_name, "last_name": c.last_name, **c.fields}
            for c in people
        ]
    start = time.perf_counter()
    total = 0
    for data in recipients:
        message = EmailMessage()
        message["From"] = "Spring News <news@example.com>"
        message["To"] = f"{data['first_name']} {data['last_name']} <{data['email']}>"
        message["Subject"] = subject.render(data)
        message.set_content(text.render(data))
        message.add_alternative(html.render(data), subtype="html")
        total += len(message.as_bytes())
    assert total > 0
    return len(recipients) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reference-rows", type=int, default=5_000)
    parser.add_argument("--dir", default=None, help="where the database goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-build-", dir=args.dir))
    from cryptography.fernet import Fernet

    os.environ.update(
        DATA_DIR=str(workdir / "data"),
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        MASTER_KEY=Fernet.generate_key().decode(),
        MAILER_SUPERVISE="0",
        MAILER_LAB="0",
        PUBLIC_URL="https://mail.example.com",
    )
    from sqlmodel import func, select

    from mailer_app.db import get_engine, session_scope, upgrade_to_head
    from mailer_app.models import (
        BuiltMessage,
        Campaign,
        CampaignStatus,
        CampaignVersion,
        SenderAccount,
        Source,
        utcnow,
    )
    from mailer_app.services import build, contacts, templating, workspaces

    try:
        upgrade_to_head()
        engine = get_engine()
        with session_scope() as session:
            workspace = workspaces.create_workspace(
                session=session, name="Bench", source=Source.CLI
            )
            people = contacts.create_contact_list(
                session=session, workspace_id=workspace.id, user_id=None, name="Everyone"
            )
            sender = SenderAccount(
                workspace_id=workspace.id, name="News", from_name="Spring News",
                from_email="news@example.com", smtp_host="127.0.0.1",
            )  # fmt: skip
            campaign = Campaign(
                workspace_id=workspace.id, name="Spring", status=CampaignStatus.IN_REVIEW
            )
            session.add_all([sender, campaign])
            session.flush()
            session.add(
                CampaignVersion(
                    workspace_id=workspace.id, campaign_id=campaign.id, number=1,
                    is_draft=False, published_at=utcnow(), sender_account_id=sender.id,
                    subject=SUBJECT, html_body=HTML, text_body=TEXT,
                    recipients={"list_ids": [people.id], "filters": []}, attachment_rules={},
                )
            )  # fmt: skip
            workspace_id, list_id, campaign_id = workspace.id, people.id, campaign.id
        print(f"generating {args.rows:,} contacts in {workdir} ...", flush=True)
        generate_contacts(engine, workspace_id, list_id, args.rows)
        sample = templating.render_message(
            subject=SUBJECT, html_body=HTML, text_body=TEXT,
            data={"email": "a@example.com", "first_name": "Ann", "last_name": "Lee",
                  "customer_id": "C1", "city": "Paris", "country": "FR", "plan": "pro",
                  "signup_date": "2024-01-01", "score": "5"},
        )  # fmt: skip
        print(
            f"  templates render to {len(sample.message.html):,} characters of HTML and "
            f"{len(sample.message.text):,} of text",
            flush=True,
        )

        reference = [reference_loop(engine, workspace_id, list_id, args.reference_rows)]
        build.queue_build = lambda _build_id: None  # no Redis: run the job's function here
        with session_scope() as session:
            build_id = build.start_build(
                session=session, workspace_id=workspace_id, campaign_id=campaign_id,
                user_id=None, source=Source.CLI,
            ).id  # fmt: skip
        start = time.perf_counter()
        result = build.run_build(build_id=build_id)
        elapsed = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        reference.append(reference_loop(engine, workspace_id, list_id, args.reference_rows))

        with session_scope() as session:
            stored = session.exec(select(func.count()).select_from(BuiltMessage)).one()
        if result.status != "done" or stored != args.rows or result.counts.get("ready") != stored:
            print(f"FAILED: {result.status} {result.message} {result.counts} ({stored:,} rows)")
            return 1
        ours = result.done / elapsed
        bare = max(reference)
        print(
            f"  build: {result.done:,} messages in {elapsed:.1f} s; bare loop: {bare:,.0f} "
            f"messages/s over {args.reference_rows:,} recipients (best of two)"
        )
        print(f"INFO build_peak_memory={peak_mb:.0f}MB target=<{TARGET_MEMORY_MB}MB")
        print(
            f"RESULT build={ours:.0f}msgs/s reference={bare:.0f}msgs/s "
            f"ratio={ours / bare:.2f} target={TARGET_RATIO}"
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
