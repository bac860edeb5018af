"""Send records, the queue of record: queueing an approved campaign, claiming in batches
(never the same record twice, even with two workers at once), suppressions checked at
claim time, forward-only moves, attempts logged, and the reconciler; on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from mailer_app.db import make_engine
from mailer_app.models import (
    AuditEntry,
    BuiltMessage,
    Campaign,
    CampaignRun,
    CampaignStatus,
    CampaignVersion,
    SendAttempt,
    SendRecord,
    SendStatus,
    Source,
    utcnow,
)
from mailer_app.services import InvalidInput, campaign_status, review, send_records, suppressions
from mailer_app.services.workspaces import create_workspace
from tests.integration.test_build import do_build, ws  # noqa: F401  (ws: the build fixture)

# The build fixture's messages that may go out once `two@` is approved and `lon@` excluded.
SENDABLE = {"ann@example.com", "dup@bücher.de", "noc@example.com", "two@example.com"}


def built_ids(session, info) -> dict[str, int]:
    found = session.exec(
        select(BuiltMessage.email, BuiltMessage.id).where(
            BuiltMessage.version_id == info["version_id"]
        )
    ).all()
    return dict(found)


@pytest.fixture
def approved(session, engine, ws) -> dict:  # noqa: F811
    """The build fixture, reviewed: `two@` (needs review) approved, `lon@` (a warning)
    excluded by a person, the campaign approved."""
    do_build(session, engine, ws)
    ids = built_ids(session, ws)
    scope = {"session": session, "workspace_id": ws["workspace_id"],
             "campaign_id": ws["campaign_id"], "user_id": None}  # fmt: skip
    assert review.approve_messages(**scope, message_ids=[ids["two@example.com"]]) == 1
    assert review.exclude_messages(**scope, message_ids=[ids["lon@example.com"]]) == 1
    campaign = session.get(Campaign, ws["campaign_id"])
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.APPROVED)
    session.commit()
    return {**ws, "ids": ids}


def queue(session, info) -> CampaignRun:
    run = send_records.queue_campaign(
        session=session, workspace_id=info["workspace_id"], campaign_id=info["campaign_id"],
        user_id=None, source=Source.CLI,
    )  # fmt: skip
    session.commit()
    return run


def records(session, run_id: int) -> dict[str, SendRecord]:
    session.expire_all()
    found = session.exec(select(SendRecord).where(SendRecord.run_id == run_id)).all()
    return {r.email: r for r in found}


def counters(session, info, run) -> send_records.RunCounters:
    return send_records.run_counters(
        session=session, workspace_id=info["workspace_id"], run_id=run.id
    )


def synthetic(session, n: int) -> dict:
    """An approved campaign with `n` ready built messages, inserted in bulk."""
    workspace = create_workspace(session=session, name="Bulk", source=Source.CLI)
    campaign = Campaign(workspace_id=workspace.id, name="Bulk", status=CampaignStatus.APPROVED)
    session.add(campaign)
    session.flush()
    version = CampaignVersion(
        workspace_id=workspace.id, campaign_id=campaign.id, number=1, is_draft=False,
        published_at=utcnow(), subject="Hi", text_body="Hi",
    )  # fmt: skip
    session.add(version)
    session.flush()
    now = utcnow()
    rows = [
        {
            "workspace_id": workspace.id, "campaign_id": campaign.id, "version_id": version.id,
            "email": f"r{i:06d}@example.com", "review_status": "ready", "reasons": [],
            "input_digest": "", "merge_data": {}, "subject": "Hi",
            "message_id_header": f"<m{i}@example.com>", "size_bytes": 100, "attachments": [],
            "created_at": now, "updated_at": now, "source": "job",
        }
        for i in range(n)
    ]  # fmt: skip
    for start in range(0, n, 10_000):
        session.execute(sa.insert(BuiltMessage.__table__), rows[start : start + 10_000])
    session.commit()
    return {"workspace_id": workspace.id, "campaign_id": campaign.id, "version_id": version.id}


# --- queueing -----------------------------------------------------------------------------------


def test_queueing_makes_one_record_per_sendable_message(session, approved):
    run = queue(session, approved)
    assert (run.campaign_id, run.version_id, run.kind) == (
        approved["campaign_id"], approved["version_id"], "send",
    )  # fmt: skip
    assert session.get(Campaign, approved["campaign_id"]).status == CampaignStatus.QUEUED
    found = records(session, run.id)
    # Ready, warning and approved needs-review go; blocked, excluded (by the build or by
    # a person), inactive and suppressed never do.
    assert set(found) == SENDABLE
    built = {
        m.email: m
        for m in session.exec(
            select(BuiltMessage).where(BuiltMessage.version_id == approved["version_id"])
        ).all()
    }
    for address, record in found.items():
        assert record.status == SendStatus.QUEUED
        assert record.built_message_id == built[address].id
        assert record.message_id == built[address].message_id_header
        assert record.workspace_id == approved["workspace_id"]
        assert (record.attempt_count, record.is_seed, record.claimed_by) == (0, False, None)
        assert record.created_at is not None and record.created_at.tzinfo is not None
    assert counters(session, approved, run) == send_records.RunCounters(
        sent=0, failed=0, unknown=0, queued=4, sending=0, total=4
    )
    [entry] = session.exec(select(AuditEntry).where(AuditEntry.action == "campaign.queue")).all()
    assert entry.details["messages"] == 4 and entry.details["run_id"] == run.id


def test_queueing_twice_returns_the_same_run_and_adds_nothing(session, approved):
    first = queue(session, approved)
    again = queue(session, approved)
    assert again.id == first.id
    assert counters(session, approved, first).total == 4
    assert len(session.exec(select(CampaignRun)).all()) == 1
    # Still the same run while it sends, and after it is paused.
    campaign = session.get(Campaign, approved["campaign_id"])
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.SENDING)
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.PAUSED)
    session.commit()
    assert queue(session, approved).id == first.id
    assert counters(session, approved, first).total == 4


def test_a_campaign_not_approved_cannot_be_queued(session, engine, ws):  # noqa: F811
    do_build(session, engine, ws)  # in review, not approved
    with pytest.raises(InvalidInput, match="A campaign in review cannot be queued"):
        queue(session, ws)
    session.rollback()
    assert session.exec(select(SendRecord)).all() == []
    assert session.exec(select(CampaignRun)).all() == []
    other = create_workspace(session=session, name="Other", source=Source.CLI)
    session.commit()
    with pytest.raises(send_records.NotFoundError):
        queue(session, {**ws, "workspace_id": other.id})


def test_a_hundred_thousand_records_are_queued_in_seconds(session):
    info = synthetic(session, 100_000)
    started = time.perf_counter()
    run = queue(session, info)
    elapsed = time.perf_counter() - started
    print(f"queued 100,000 records in {elapsed:.2f} s ({session.bind.dialect.name})")
    assert counters(session, info, run).queued == 100_000
    assert elapsed < 20, elapsed


# --- claiming -----------------------------------------------------------------------------------


def test_claiming_takes_a_batch_once_and_marks_it_sending(session, engine, approved):
    run = queue(session, approved)
    first = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w1", limit=3)
    second = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w2", limit=3)
    third = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w2", limit=3)
    assert len(first) == 3 and len(second) == 1 and third == []
    assert first == sorted(first) and not set(first) & set(second)
    found = {r.id: r for r in records(session, run.id).values()}
    assert {found[i].claimed_by for i in first} == {"w1"}
    assert found[second[0]].claimed_by == "w2"
    assert all(r.status == SendStatus.SENDING and r.claimed_at for r in found.values())
    assert counters(session, approved, run).sending == 4


def test_claiming_in_the_callers_session_commits_with_it(session, approved):
    run = queue(session, approved)
    claimed = send_records.claim_batch(
        engine_or_session=session, run_id=run.id, worker="w1", limit=10
    )
    session.rollback()  # the caller changed its mind: nothing was claimed
    assert len(claimed) == 4
    assert counters(session, approved, run).queued == 4
    claimed = send_records.claim_batch(
        engine_or_session=session, run_id=run.id, worker="w1", limit=10
    )
    session.commit()
    assert counters(session, approved, run).sending == len(claimed) == 4


def test_two_workers_claiming_at_once_never_get_the_same_record(session, db_url):
    info = synthetic(session, 1000)
    run = queue(session, info)
    engines = [make_engine(db_url), make_engine(db_url)]
    claims: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def claim_committed(engine, name: str) -> list[int]:
        return send_records.claim_batch(
            engine_or_session=engine, run_id=run.id, worker=name, limit=7
        )

    def claim_in_a_transaction(engine, name: str) -> list[int]:
        # The worker does a little more before it commits: its claim holds its rows
        # (and the other worker has to skip them, not wait and take them again).
        with Session(engine) as own:
            batch = send_records.claim_batch(
                engine_or_session=own, run_id=run.id, worker=name, limit=7
            )
            time.sleep(0.002)
            own.commit()
        return batch

    def work(name: str, engine) -> None:
        claim = claim_committed if name == "a" else claim_in_a_transaction
        try:
            start.wait(timeout=10)
            for _ in range(300):  # bounded: 1,000 records in batches of 7
                batch = claim(engine, name)
                if not batch:
                    return
                claims[name].extend(batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(n, e)) for n, e in zip("ab", engines, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    a, b = set(claims["a"]), set(claims["b"])
    assert len(a) == len(claims["a"]) and len(b) == len(claims["b"])
    assert not a & b  # disjoint
    all_ids = set(session.exec(select(SendRecord.id).where(SendRecord.run_id == run.id)).all())
    assert a | b == all_ids and len(all_ids) == 1000  # complete
    if session.bind.dialect.name == "postgresql":
        # Both really claimed at once (SQLite's lock wait is not fair: one may take all).
        assert a and b, "both workers should have claimed some records"
    session.expire_all()
    by_worker = dict(
        session.exec(
            select(SendRecord.claimed_by, sa.func.count())
            .where(SendRecord.run_id == run.id)
            .group_by(SendRecord.claimed_by)
        ).all()
    )
    # (a worker that claimed nothing, possible on SQLite, has no group)
    assert by_worker == {name: len(ids) for name, ids in (("a", a), ("b", b)) if ids}


def test_suppressed_addresses_fail_at_claim_time_and_are_never_handed_out(
    session, engine, approved
):
    run = queue(session, approved)
    # Unsubscribed and bounced after the campaign was queued.
    for address, reason in (("ann@example.com", "unsubscribe"), ("noc@example.com", "hard_bounce")):
        suppressions.add_suppression(
            session=session, workspace_id=approved["workspace_id"], email=address, reason=reason,
            source=Source.JOB,
        )  # fmt: skip
    session.commit()
    claimed = send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker="w", limit=10
    )
    found = records(session, run.id)
    assert sorted(claimed) == sorted(found[a].id for a in ("dup@bücher.de", "two@example.com"))
    for address in ("ann@example.com", "noc@example.com"):
        assert found[address].status == SendStatus.FAILED
        assert found[address].last_error == "suppressed before sending"
        assert found[address].sent_at is None
    assert session.exec(select(SendAttempt)).all() == []  # nothing was tried
    assert counters(session, approved, run) == send_records.RunCounters(
        sent=0, failed=2, unknown=0, queued=0, sending=2, total=4
    )


def test_a_suppression_in_another_workspace_changes_nothing(session, engine, approved):
    run = queue(session, approved)
    other = create_workspace(session=session, name="Other", source=Source.CLI)
    suppressions.add_suppression(
        session=session, workspace_id=other.id, email="ann@example.com", reason="manual"
    )
    session.commit()
    claimed = send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker="w", limit=10
    )
    assert len(claimed) == 4


# --- moves and attempts -------------------------------------------------------------------------


def test_records_only_move_forward(session, engine, approved):
    run = queue(session, approved)
    found = records(session, run.id)
    ann, dup = found["ann@example.com"].id, found["dup@bücher.de"].id
    ws_id = approved["workspace_id"]

    def mark(record_id, to, **extra):
        record = send_records.mark(
            session=session, record_id=record_id, to=to, workspace_id=ws_id, **extra
        )
        session.commit()
        return record

    with pytest.raises(send_records.IllegalSendTransition, match="queued cannot be marked sent"):
        mark(ann, "sent")
    session.rollback()
    mark(ann, "sending", worker="w1")
    sent = mark(ann, "sent")
    assert sent.status == "sent" and sent.sent_at is not None
    for target in ("queued", "sending", "failed", "unknown"):
        with pytest.raises(send_records.IllegalSendTransition, match="A message that is sent"):
            mark(ann, target)
        session.rollback()
    with pytest.raises(InvalidInput, match="no send status"):
        mark(ann, "delivered")
    # sending -> queued: tried again later, not claimed before then.
    mark(dup, "sending", worker="w1")
    later = utcnow() + timedelta(hours=1)
    back = mark(dup, "queued", next_attempt_at=later, error="451 4.7.1 try later")
    assert (back.status, back.claimed_by, back.last_error) == (
        "queued",
        None,
        "451 4.7.1 try later",
    )
    claimed = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w", limit=9)
    assert dup not in claimed and ann not in claimed and len(claimed) == 2
    session.execute(
        sa.update(SendRecord.__table__)
        .where(SendRecord.__table__.c.id == dup)
        .values(next_attempt_at=utcnow() - timedelta(seconds=1))
    )
    session.commit()
    assert send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker="w", limit=9
    ) == [dup]
    unknown = mark(dup, "unknown", error="no reply after the final dot")
    assert unknown.last_error == "no reply after the final dot"
    with pytest.raises(send_records.IllegalSendTransition):
        mark(dup, "queued")
    session.rollback()
    # Another workspace cannot touch the record.
    with pytest.raises(send_records.SendRecordNotFound):
        send_records.mark(session=session, record_id=ann, to="failed", workspace_id=ws_id + 999)


def test_a_move_made_meanwhile_by_another_worker_is_not_overwritten(session, engine, approved):
    run = queue(session, approved)
    record_id = records(session, run.id)["ann@example.com"].id
    send_records.mark(session=session, record_id=record_id, to="sending", worker="w1")
    session.commit()
    with Session(engine) as other:
        stale = send_records._record(other, record_id, None)  # read while sending
        assert stale.status == "sending"
        send_records.mark(session=session, record_id=record_id, to="sent")
        session.commit()
        # The other worker's session read "sending"; its move is refused, not applied.
        mark_other = other.get(SendRecord, record_id)
        assert mark_other.status == "sending"
        with pytest.raises(send_records.IllegalSendTransition):
            send_records.mark(session=other, record_id=record_id, to="failed")
        other.rollback()
    assert records(session, run.id)["ann@example.com"].status == "sent"


def test_every_attempt_is_logged_with_its_reply(session, engine, approved):
    run = queue(session, approved)
    [first] = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w", limit=1)
    started = utcnow()
    send_records.record_attempt(
        session=session, record_id=first, outcome="retry", started_at=started, duration_ms=120,
        smtp_code=451, enhanced_status="4.7.1", reply="Greylisted, try later", worker="w",
    )  # fmt: skip
    send_records.mark(session=session, record_id=first, to="queued", next_attempt_at=started)
    session.commit()
    assert send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker="w", limit=1
    ) == [first]
    send_records.record_attempt(
        session=session, record_id=first, outcome="sent", started_at=utcnow(), duration_ms=80,
        smtp_code=250, enhanced_status="2.0.0", reply="Ok: queued as 123", worker="w",
    )  # fmt: skip
    send_records.mark(session=session, record_id=first, to="sent")
    session.commit()
    logged = send_records.attempts(
        session=session, workspace_id=approved["workspace_id"], record_id=first
    )
    assert [(a.smtp_code, a.enhanced_status, a.reply, a.outcome, a.worker, a.duration_ms)
            for a in logged] == [
        (451, "4.7.1", "Greylisted, try later", "retry", "w", 120),
        (250, "2.0.0", "Ok: queued as 123", "sent", "w", 80),
    ]  # fmt: skip
    session.expire_all()
    assert session.get(SendRecord, first).attempt_count == 2
    with pytest.raises(InvalidInput, match="outcome"):
        send_records.record_attempt(
            session=session, record_id=first, outcome="maybe", started_at=utcnow()
        )


# --- reconciling --------------------------------------------------------------------------------


def test_reconcile_turns_stuck_sending_into_unknown_requeues_unsubmitted_and_leaves_fresh_ones(
    session, engine, approved
):
    run = queue(session, approved)
    stuck, never_sent, fresh = send_records.claim_batch(
        engine_or_session=engine, run_id=run.id, worker="crashed", limit=3
    )
    long_ago = utcnow() - timedelta(minutes=30)
    table = SendRecord.__table__
    # `stuck` was handed to the server, `never_sent` was only claimed, both by a worker
    # that died long ago.
    session.execute(
        sa.update(table)
        .where(table.c.id == stuck)
        .values(claimed_at=long_ago, submitted_at=long_ago)
    )
    session.execute(sa.update(table).where(table.c.id == never_sent).values(claimed_at=long_ago))
    session.commit()
    result = send_records.reconcile(session=session, stuck_after=timedelta(minutes=10))
    session.commit()
    assert result.unknown_ids == [stuck]
    assert result.requeued_ids == [never_sent]
    assert result.wake_run_ids == [run.id]  # queued records again, no job known
    session.expire_all()
    assert session.get(SendRecord, stuck).status == SendStatus.UNKNOWN
    assert "not sent again automatically" in session.get(SendRecord, stuck).last_error
    assert session.get(SendRecord, never_sent).status == SendStatus.QUEUED
    assert session.get(SendRecord, fresh).status == SendStatus.SENDING
    # A run a job covers needs no wake-up; an unknown record is never claimed again.
    covered = send_records.reconcile(
        session=session, stuck_after=timedelta(minutes=10), covered_run_ids=[run.id]
    )
    session.commit()
    assert covered == send_records.ReconcileResult(unknown_ids=[], wake_run_ids=[])
    claimed = send_records.claim_batch(engine_or_session=engine, run_id=run.id, worker="w", limit=9)
    assert stuck not in claimed and fresh not in claimed and len(claimed) == 2
    assert never_sent in claimed
    assert counters(session, approved, run) == send_records.RunCounters(
        sent=0, failed=0, unknown=1, queued=0, sending=3, total=4
    )
    # Nothing queued any more: nothing to wake.
    assert send_records.reconcile(session=session, stuck_after=timedelta(minutes=10)) == (
        send_records.ReconcileResult(unknown_ids=[], wake_run_ids=[])
    )


def test_reconcile_wakes_only_runs_of_campaigns_that_are_sending(session, approved):
    run = queue(session, approved)
    campaign = session.get(Campaign, approved["campaign_id"])
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.PAUSED)
    session.commit()
    result = send_records.reconcile(session=session, stuck_after=timedelta(minutes=10))
    assert result.wake_run_ids == []  # paused: its queued records wait
    campaign_status.transition(session=session, campaign=campaign, to=CampaignStatus.SENDING)
    session.commit()
    result = send_records.reconcile(session=session, stuck_after=timedelta(minutes=10))
    assert result.wake_run_ids == [run.id]
