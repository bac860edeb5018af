"""The placement engine against the real lab: SMTP intake, Dovecot over IMAP, real DBs.

Send and check jobs are called directly here (their queueing is recorded, not run)
so each step can be asserted; the last tests run the real worker and scheduler.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest
from sqlmodel import Session, select

from mailer_app.mail.imap import MailboxPool
from mailer_app.mail.seed_copy import SeedContent
from mailer_app.models import (
    AlertEvent,
    AlertKind,
    Placement,
    PlacementCheck,
    PlacementResult,
    PlacementRun,
    SeedAccount,
    SeedStatus,
    SenderAccount,
    Source,
    TransportSecurity,
    Workspace,
)
from mailer_app.services import InvalidInput, placement
from mailer_app.services import secrets as secret_store
from tests.imap_proxy import ImapProxy
from tests.lab_fixtures import LabMailbox, mail_lab_fixture  # noqa: F401

# Fast checks: 0.6 s, 1.2 s and 1.8 s after the send (the product uses minutes).
OFFSETS = [0.01, 0.02, 0.03]


@dataclass
class Queued:
    sends: list[int] = field(default_factory=list)
    checks: list[tuple[int, list]] = field(default_factory=list)


@pytest.fixture
def queued(monkeypatch) -> Queued:
    """Record what the engine would queue instead of needing Redis."""
    record = Queued()
    monkeypatch.setattr(placement, "queue_send", record.sends.append)
    monkeypatch.setattr(
        placement, "schedule_checks", lambda run_id, due: record.checks.append((run_id, due))
    )
    return record


@dataclass
class Lab:
    session: Session
    mail_lab: object
    workspace_id: int
    sender_id: int

    def seed(
        self, domain: str, *, wrong_password: bool = False, imap_port: int | None = None
    ) -> SeedAccount:
        box = self.mail_lab.add_account(domain)
        stored = "not-the-password" if wrong_password else box.password
        ref = secret_store.store_secret(
            session=self.session,
            workspace_id=self.workspace_id,
            value=stored,
            kind="password",
            source=Source.LAB,
        )
        seed = SeedAccount(
            workspace_id=self.workspace_id,
            email=box.email,
            esp=domain.split(".")[0] if domain != "legacy.lab" else "other",
            imap_host="127.0.0.1",
            imap_port=imap_port or self.mail_lab.imap_port,
            imap_security=TransportSecurity.PLAIN,
            imap_username=box.email,
            credential_ref=ref,
            source=Source.LAB,
        )
        self.session.add(seed)
        self.session.commit()
        return seed

    def run(self, seeds, subject: str, key: str | None = None, **kwargs) -> PlacementRun:
        run = placement.trigger_placement_run(
            session=self.session,
            workspace_id=self.workspace_id,
            seed_ids=[s.id for s in seeds],
            content=SeedContent(subject=subject, html_body="", text_body="Hello there."),
            sender_account_id=self.sender_id,
            idempotency_key=key or f"test-{time.monotonic_ns()}",
            check_offsets_min=kwargs.pop("offsets", OFFSETS),
            **kwargs,
        )
        self.session.commit()
        return run

    def results(self, run_id: int) -> list[PlacementResult]:
        self.session.expire_all()
        return list(
            self.session.exec(
                select(PlacementResult)
                .where(PlacementResult.run_id == run_id)
                .order_by(PlacementResult.id)
            )
        )

    def checks(self, result_id: int) -> list[PlacementCheck]:
        self.session.expire_all()
        return list(
            self.session.exec(
                select(PlacementCheck)
                .where(PlacementCheck.result_id == result_id)
                .order_by(PlacementCheck.attempt)
            )
        )


@pytest.fixture
def lab(session, mail_lab, queued) -> Lab:
    workspace = Workspace(name="Placement", slug=f"placement-{time.monotonic_ns()}")
    session.add(workspace)
    session.flush()
    sender = SenderAccount(
        workspace_id=workspace.id,
        name="Lab sender",
        from_name="Lab News",
        from_email="news@sender.lab",
        smtp_host="127.0.0.1",
        smtp_port=mail_lab.smtp_port,
        smtp_security=TransportSecurity.PLAIN,
    )
    session.add(sender)
    session.commit()
    return Lab(session, mail_lab, workspace.id, sender.id)


@pytest.fixture
def pool():
    mailboxes = MailboxPool()
    yield mailboxes
    mailboxes.close_all()


def send_and_check(lab: Lab, run: PlacementRun, pool, *, upto: int = 0):
    sent = placement.send_run_copies(run_id=run.id)
    outcomes = [
        placement.check_run(run_id=run.id, check_index=i, pool=pool, retry_window_seconds=2)
        for i in range(upto + 1)
    ]
    return sent, outcomes


# --- each outcome ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "subject", "placement_", "folder"),
    [
        ("gmail.lab", "Hello [lab:inbox]", Placement.INBOX, "INBOX"),
        ("gmail.lab", "Hello [lab:spam]", Placement.SPAM, "[Gmail]/Spam"),
        ("gmail.lab", "Hello [lab:promo]", Placement.PROMOTIONS, "Promotions"),
        ("outlook.lab", "Hello [lab:spam]", Placement.SPAM, "Junk Email"),
        ("yahoo.lab", "Hello [lab:spam]", Placement.SPAM, "Bulk"),
        # No special-use flag on legacy.lab's "Spam": found by its name.
        ("legacy.lab", "Hello [lab:spam]", Placement.SPAM, "Spam"),
        ("legacy.lab", "Hello [lab:inbox]", Placement.INBOX, "INBOX"),
    ],
)
def test_each_outcome_is_found_in_the_right_folder(lab, pool, domain, subject, placement_, folder):
    seed = lab.seed(domain)
    run = lab.run([seed], subject)
    sent, (outcome,) = send_and_check(lab, run, pool)
    assert (sent.sent, sent.failed) == (1, 0)
    assert outcome.decided == {placement_: 1}

    (result,) = lab.results(run.id)
    assert (result.placement, result.folder, result.attempts) == (placement_, folder, 1)
    assert result.seconds_to_land is not None and 0 <= result.seconds_to_land < 30
    # The lab's Authentication-Results: loopback is an authorized sender, no DKIM.
    assert (result.spf, result.dkim, result.dmarc) == ("pass", "none", "none")
    assert result.message_id and result.token in result.message_id

    lab.session.expire_all()
    assert lab.session.get(PlacementRun, run.id).status == placement.RUN_COMPLETED
    refreshed = lab.session.get(SeedAccount, seed.id)
    assert refreshed.last_placement == placement_ and refreshed.last_checked_at is not None
    assert [c.outcome for c in lab.checks(result.id)] == [placement_]


def test_each_seed_gets_its_own_copy_with_its_own_token(lab, pool):
    seeds = [lab.seed("gmail.lab"), lab.seed("outlook.lab"), lab.seed("yahoo.lab")]
    run = lab.run(seeds, "Hello [lab:inbox]")
    send_and_check(lab, run, pool)
    results = lab.results(run.id)
    assert len({r.token for r in results}) == 3
    for seed, result in zip(seeds, results, strict=True):
        headers = lab.mail_lab.fetch_headers(mailbox_of(lab, seed), "INBOX", "Hello")
        # One recipient per message: never a CC/BCC of the others.
        assert f"To: {seed.email}" in headers and "Cc:" not in headers
        assert f"X-Mailer-Seed-Token: {result.token}" in headers
        assert result.placement == Placement.INBOX


def mailbox_of(lab: Lab, seed: SeedAccount) -> LabMailbox:
    password = secret_store.reveal_secret(
        session=lab.session, workspace_id=lab.workspace_id, ref=seed.credential_ref
    )
    return LabMailbox(seed.email, password)


# --- missing only after the final attempt -----------------------------------------


def test_missing_only_after_the_final_attempt(lab, pool):
    seed = lab.seed("gmail.lab")
    run = lab.run([seed], "Gone [lab:drop]")
    placement.send_run_copies(run_id=run.id)
    for index in range(len(OFFSETS) - 1):
        outcome = placement.check_run(run_id=run.id, check_index=index, pool=pool)
        assert outcome.looked == 1 and outcome.decided == {}
        (result,) = lab.results(run.id)
        assert result.placement == Placement.PENDING and result.attempts == index + 1
    placement.check_run(run_id=run.id, check_index=len(OFFSETS) - 1, pool=pool)
    (result,) = lab.results(run.id)
    assert result.placement == Placement.MISSING and result.attempts == 3
    assert [c.outcome for c in lab.checks(result.id)] == ["not_found", "not_found", "not_found"]


def test_a_copy_that_arrives_late_is_found_by_a_later_check(lab, pool):
    seed = lab.seed("outlook.lab")
    run = lab.run([seed], "Late [lab:drop]")
    placement.send_run_copies(run_id=run.id)
    placement.check_run(run_id=run.id, check_index=0, pool=pool)
    # The copy turns up before the second check (delivered by hand with its token).
    (result,) = lab.results(run.id)
    msg = lab.mail_lab.message(seed.email, subject="Late, delivered", headers={
        "X-Mailer-Seed-Token": result.token, "X-Lab-Placement": "spam",
    })  # fmt: skip
    lab.mail_lab.send(seed.email, msg=msg)
    placement.check_run(run_id=run.id, check_index=1, pool=pool)
    (result,) = lab.results(run.id)
    assert (result.placement, result.folder, result.attempts) == ("spam", "Junk Email", 2)


# --- authentication failure -----------------------------------------------------------


def test_a_refused_login_marks_the_seed_auth_expired_and_stops_its_checks(lab, pool):
    good = lab.seed("gmail.lab")
    bad = lab.seed("yahoo.lab", wrong_password=True)
    run = lab.run([good, bad], "Hello [lab:inbox]")
    placement.send_run_copies(run_id=run.id)
    outcome = placement.check_run(run_id=run.id, check_index=0, pool=pool)
    assert outcome.decided == {"inbox": 1, "error": 1}

    lab.session.expire_all()
    seed = lab.session.get(SeedAccount, bad.id)
    assert seed.status == SeedStatus.AUTH_EXPIRED and seed.status_reason
    alerts = lab.session.exec(
        select(AlertEvent).where(AlertEvent.kind == AlertKind.SEED_AUTH_EXPIRED)
    ).all()
    assert [a.seed_id for a in alerts] == [bad.id]
    bad_result = next(r for r in lab.results(run.id) if r.seed_id == bad.id)
    assert bad_result.placement == Placement.ERROR and "refused" in bad_result.error

    # No further checks: nothing is looked at again, and new runs leave it out.
    again = placement.check_run(run_id=run.id, check_index=1, pool=pool)
    assert again.looked == 0
    assert len(lab.checks(bad_result.id)) == 1
    second = lab.run([good, bad], "Again [lab:inbox]")
    assert [r.seed_id for r in lab.results(second.id)] == [good.id]


# --- Dovecot stopped, connection dropped ---------------------------------------------


def test_dovecot_stopped_mid_run_retries_then_a_clean_result(lab, pool):
    seed = lab.seed("gmail.lab")
    run = lab.run([seed], "Hello [lab:spam]")
    placement.send_run_copies(run_id=run.id)
    dovecot = lab.mail_lab.lab.dovecot
    dovecot.stop()
    restarter = threading.Timer(1.5, dovecot.start)
    restarter.start()
    try:
        started = time.monotonic()
        outcome = placement.check_run(
            run_id=run.id, check_index=len(OFFSETS) - 1, pool=pool, retry_window_seconds=20
        )
        elapsed = time.monotonic() - started
    finally:
        restarter.join()
        if not dovecot.running():
            dovecot.start()
    assert outcome.decided == {"spam": 1}
    assert elapsed < 20
    (check,) = lab.checks(lab.results(run.id)[0].id)
    assert check.detail["tries"] > 1


def test_dovecot_down_for_the_whole_final_window_ends_in_error_without_hanging(lab, pool):
    seed = lab.seed("outlook.lab")
    run = lab.run([seed], "Hello [lab:inbox]")
    placement.send_run_copies(run_id=run.id)
    dovecot = lab.mail_lab.lab.dovecot
    dovecot.stop()
    try:
        started = time.monotonic()
        outcome = placement.check_run(
            run_id=run.id, check_index=len(OFFSETS) - 1, pool=pool, retry_window_seconds=2
        )
        elapsed = time.monotonic() - started
    finally:
        dovecot.start()
    assert outcome.decided == {"error": 1}
    assert elapsed < 10
    (result,) = lab.results(run.id)
    assert result.placement == Placement.ERROR and "could not be checked" in result.error


def test_dovecot_down_at_an_early_check_leaves_the_result_pending(lab, pool):
    seed = lab.seed("yahoo.lab")
    run = lab.run([seed], "Hello [lab:inbox]")
    placement.send_run_copies(run_id=run.id)
    dovecot = lab.mail_lab.lab.dovecot
    dovecot.stop()
    try:
        placement.check_run(run_id=run.id, check_index=0, pool=pool, retry_window_seconds=1)
    finally:
        dovecot.start()
    (result,) = lab.results(run.id)
    assert result.placement == Placement.PENDING
    placement.check_run(run_id=run.id, check_index=1, pool=pool)
    (result,) = lab.results(run.id)
    assert result.placement == Placement.INBOX
    assert [c.outcome for c in lab.checks(result.id)] == ["error", "inbox"]


def test_a_server_that_says_bye_mid_search_is_retried_then_checked_again_later(lab, pool):
    with ImapProxy(lab.mail_lab.imap_port, drop_on=rb"\bSEARCH\b") as proxy:
        seed = lab.seed("outlook.lab", imap_port=proxy.port)
        run = lab.run([seed], "Hello [lab:spam]")
        placement.send_run_copies(run_id=run.id)
        outcome = placement.check_run(
            run_id=run.id, check_index=0, pool=pool, retry_window_seconds=1.5
        )
        assert outcome.looked == 1 and outcome.decided == {}
        (result,) = lab.results(run.id)
        (check,) = lab.checks(result.id)
        assert result.placement == Placement.PENDING
        assert check.outcome == "error" and check.detail["tries"] > 1
        assert proxy.connections == check.detail["tries"]  # a new login after each BYE

        proxy.drop_on = None  # the server behaves again by the next check
        placement.check_run(run_id=run.id, check_index=1, pool=pool)
        (result,) = lab.results(run.id)
        assert (result.placement, result.folder) == (Placement.SPAM, "Junk Email")


# --- races and duplicates ----------------------------------------------------------------


def test_the_same_idempotency_key_twice_makes_one_run(lab, queued):
    seed = lab.seed("gmail.lab")
    first = lab.run([seed], "Once", key="campaign-7-send-1")
    second = lab.run([seed], "Once", key="campaign-7-send-1")
    assert first.id == second.id
    assert len(lab.results(first.id)) == 1
    assert queued.sends == [first.id]


def test_sending_twice_sends_each_copy_once(lab, pool):
    seed = lab.seed("gmail.lab")
    run = lab.run([seed], "Only once [lab:inbox]")
    first = placement.send_run_copies(run_id=run.id)
    second = placement.send_run_copies(run_id=run.id)
    assert (first.sent, second.sent) == (1, 0)
    with lab.mail_lab.imap(mailbox_of(lab, seed)) as client:
        client.select_folder("INBOX", readonly=True)
        assert len(client.search(["SUBJECT", "Only once"])) == 1


def test_two_workers_racing_one_check_record_one_result_per_seed(lab):
    seeds = [lab.seed(d) for d in ("gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab")]
    run = lab.run(seeds, "Race [lab:inbox]")
    placement.send_run_copies(run_id=run.id)
    pools = [MailboxPool(), MailboxPool()]
    barrier = threading.Barrier(2)
    outcomes = []

    def worker(pool: MailboxPool) -> None:
        barrier.wait()
        outcomes.append(placement.check_run(run_id=run.id, check_index=2, pool=pool))

    threads = [threading.Thread(target=worker, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for p in pools:
        p.close_all()
    # Each seed looked at once in all (a worker that comes second skips it).
    assert sum(o.looked for o in outcomes) == 4
    results = lab.results(run.id)
    assert {r.placement for r in results} == {Placement.INBOX}
    for result in results:
        assert len(lab.checks(result.id)) == 1


def test_a_duplicate_check_after_the_result_is_decided_changes_nothing(lab, pool):
    seed = lab.seed("gmail.lab")
    run = lab.run([seed], "Hello [lab:promo]")
    send_and_check(lab, run, pool)
    (before,) = lab.results(run.id)
    again = placement.check_run(run_id=run.id, check_index=0, pool=pool)
    (after,) = lab.results(run.id)
    assert again.looked == 0
    assert (after.placement, after.decided_at, after.attempts) == (
        before.placement,
        before.decided_at,
        before.attempts,
    )


# --- input and scoping -----------------------------------------------------------------


def test_a_subject_with_a_line_break_is_refused(lab):
    seed = lab.seed("gmail.lab")
    with pytest.raises(InvalidInput) as caught:
        lab.run([seed], "Hello\r\nBcc: victim@example.com")
    assert caught.value.field == "subject"


def test_progress_reports_each_seed_as_results_arrive(lab, pool):
    seeds = [lab.seed("gmail.lab"), lab.seed("outlook.lab")]
    run = lab.run(seeds, "Progress [lab:spam]")
    progress = placement.run_progress(
        session=lab.session, workspace_id=lab.workspace_id, run_id=run.id
    )
    assert (progress.total, progress.pending, progress.done) == (2, 2, False)
    send_and_check(lab, run, pool)
    lab.session.expire_all()
    progress = placement.run_progress(
        session=lab.session, workspace_id=lab.workspace_id, run_id=run.id
    )
    assert (progress.pending, progress.counts, progress.done) == (0, {"spam": 2}, True)
    assert {r.folder for r in progress.results} == {"[Gmail]/Spam", "Junk Email"}


def test_two_requests_racing_with_one_idempotency_key_make_one_run(lab, engine, queued):
    seed = lab.seed("gmail.lab")
    barrier = threading.Barrier(2)
    run_ids, errors = [], []

    def trigger() -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                barrier.wait()
                run = placement.trigger_placement_run(
                    session=session,
                    workspace_id=lab.workspace_id,
                    seed_ids=[seed.id],
                    content=SeedContent(subject="Race", html_body="", text_body="Hi"),
                    sender_account_id=lab.sender_id,
                    idempotency_key="same-key",
                    check_offsets_min=OFFSETS,
                )
                session.commit()
                run_ids.append(run.id)
        except Exception as exc:  # noqa: BLE001 (the assertion below shows it)
            errors.append(exc)

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert len(run_ids) == 2 and run_ids[0] == run_ids[1]
    assert len(lab.results(run_ids[0])) == 1
    assert queued.sends == [run_ids[0]]
