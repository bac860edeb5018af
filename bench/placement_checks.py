"""Seed checks per second: the placement engine beside a bare imapclient loop.

Setup (not timed): a private mail lab (SMTP intake + Dovecot on loopback ports), a
SQLite database, 200 lab seed mailboxes across the simulated providers, and one
placement run per round whose copies all land in the inbox.

Measured, interleaved in the same run (machines are noisy):
- engine: `check_run` of a fresh run over all seeds through the engine's kept-open
  MailboxPool (the first round logs in and is a warm-up; it is not counted), with
  everything a real check does: the claim, the IMAP look in each folder, the
  terminal result, the check log and the seed's last-check time in the database.
- reference: for each seed, a bare imapclient login, SELECT INBOX, SEARCH HEADER
  for the token, logout: what a check costs without kept-open connections.

Prints one line: RESULT placement_checks=<engine>checks/s reference=<bare>checks/s
ratio=<engine/bare> target=0.7 (the issue's target: at least 70% of the bare rate).

    ./dev bench placement_checks [--seeds 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DOMAINS = ("gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab")
TARGET = 0.7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    from cryptography.fernet import Fernet

    os.environ.update(
        DATA_DIR=str(workdir / "data"),
        DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        MASTER_KEY=Fernet.generate_key().decode(),
        MAILER_SUPERVISE="0",
        MAILER_LAB="0",
    )
    from mailer_app.lab import Lab

    lab = Lab(workdir / "lab", smtp_port=free_port(), imap_port=free_port())
    lab.start()
    try:
        return run_bench(lab, args.seeds, args.rounds)
    finally:
        lab.stop()


def run_bench(lab, seed_count: int, rounds: int) -> int:
    import secrets as random_tokens

    from imapclient import IMAPClient
    from sqlmodel import select

    from mailer_app.db import session_scope, upgrade_to_head
    from mailer_app.mail.imap import MailboxPool
    from mailer_app.mail.seed_copy import SeedContent
    from mailer_app.models import (
        PlacementResult,
        SeedAccount,
        SenderAccount,
        Source,
        Workspace,
    )
    from mailer_app.services import placement
    from mailer_app.services import secrets as secret_store
    from mailer_app.settings import get_settings

    # Queueing is the job layer's business; the bench calls the service directly.
    placement.queue_send = lambda run_id: None
    placement.schedule_checks = lambda run_id, due: None

    upgrade_to_head(get_settings().resolved_database_url())
    boxes = []
    with session_scope() as session:
        workspace = Workspace(name="Bench", slug="bench")
        session.add(workspace)
        session.flush()
        sender = SenderAccount(
            workspace_id=workspace.id, name="Lab", from_email="news@sender.lab",
            smtp_host="127.0.0.1", smtp_port=lab.smtp_port, smtp_security="plain",
        )  # fmt: skip
        session.add(sender)
        for i in range(seed_count):
            email = f"bench-{i:04d}@{DOMAINS[i % len(DOMAINS)]}"
            password = random_tokens.token_urlsafe(12)
            lab.add_account(email, password)
            ref = secret_store.store_secret(
                session=session, workspace_id=workspace.id, value=password,
                kind="password", source=Source.LAB,
            )  # fmt: skip
            seed = SeedAccount(
                workspace_id=workspace.id, email=email, imap_host="127.0.0.1",
                imap_port=lab.imap_port, imap_security="plain", imap_username=email,
                credential_ref=ref,
            )  # fmt: skip
            session.add(seed)
            boxes.append((email, password))
        session.flush()
        workspace_id, sender_id = workspace.id, sender.id
        seed_ids = list(session.exec(select(SeedAccount.id).order_by(SeedAccount.id)))

    def new_run(label: str) -> tuple[int, list[str]]:
        """A run whose copies are all in the seeds' inboxes; returns its tokens."""
        with session_scope() as session:
            run = placement.trigger_placement_run(
                session=session, workspace_id=workspace_id, seed_ids=seed_ids,
                content=SeedContent(f"Bench {label} [lab:inbox]", "", "Hello"),
                sender_account_id=sender_id, idempotency_key=f"bench-{label}",
                check_offsets_min=[1, 3, 5, 10],
            )  # fmt: skip
            run_id = run.id
        sent = placement.send_run_copies(run_id=run_id, schedule=False)
        assert sent.sent == seed_count, sent
        with session_scope() as session:
            tokens = list(
                session.exec(
                    select(PlacementResult.token)
                    .where(PlacementResult.run_id == run_id)
                    .order_by(PlacementResult.seed_id)
                )
            )
        return run_id, tokens

    pool = MailboxPool()

    def engine_round(label: str) -> float:
        run_id, _ = new_run(label)
        started = time.perf_counter()
        outcome = placement.check_run(run_id=run_id, check_index=0, pool=pool)
        elapsed = time.perf_counter() - started
        assert outcome.decided == {"inbox": seed_count}, outcome.decided
        return seed_count / elapsed

    def bare_round(label: str) -> float:
        _, tokens = new_run(label)
        started = time.perf_counter()
        found = 0
        for (email, password), token in zip(boxes, tokens, strict=True):
            client = IMAPClient("127.0.0.1", port=lab.imap_port, ssl=False, timeout=20)
            client.login(email, password)
            client.select_folder("INBOX", readonly=True)
            found += bool(client.search(["HEADER", "X-Mailer-Seed-Token", token]))
            client.logout()
        elapsed = time.perf_counter() - started
        assert found == seed_count, found
        return seed_count / elapsed

    engine_round("warm-up")  # logs every seed in once; kept open from here on
    engine_rates, bare_rates = [], []
    for i in range(rounds):
        bare_rates.append(bare_round(f"bare-{i}"))
        engine_rates.append(engine_round(f"engine-{i}"))
        print(
            f"round {i + 1}: engine {engine_rates[-1]:.1f} checks/s, "
            f"bare loop {bare_rates[-1]:.1f} checks/s",
            flush=True,
        )
    pool.close_all()

    engine = statistics.median(engine_rates)
    bare = statistics.median(bare_rates)
    print(
        f"RESULT placement_checks={engine:.1f}checks/s reference={bare:.1f}checks/s "
        f"ratio={engine / bare:.2f} target={TARGET}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
