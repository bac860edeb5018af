"""Build: every message of a campaign's published version, rendered, checked and given
a review status (PRODUCT.md, Build and review gate).

`start_build` queues a build of the newest published version (an RQ job on the
"build" queue, `jobs.build`); `run_build` is the job's work. For each recipient the
version's lists and filters select (streamed from the database in batches of BATCH,
never the whole list in memory) it takes the recipient's merge data, renders the
templates in the sandbox, finds the per-recipient files, assembles the MIME message
(`mail.mime`, with a skeleton compiled once per build) to know its size, and stores
one `BuiltMessage` row: status, reasons, what it was built from. The bytes are not
stored: `message_bytes` assembles them again, identically, whenever they are needed
(preview, .eml download, test send, and the sender).

Statuses and reasons. Each problem found is a reason `{"code", "detail"}` from
`REASONS`, which says the status it implies and explains it in plain words; the
row's status is the most severe of its reasons' (`inactive` > `excluded` > `blocked`
> `needs_review` > `warning` > `ready`). Decisions made on purpose:
- a merge field the template uses without a default and the recipient lacks, where
  it stops a part (`{{ total + 1 }}`), blocks the message (`missing_field`); where it
  is only printed blank ("Hello ,") the message gets a warning (`blank_field`);
- a non-ASCII subject is fully supported (RFC 2047) and is not a warning; a subject
  longer than LONG_SUBJECT characters is (inboxes cut it);
- the same mailbox reached through two spellings of its domain (bücher.de and
  xn--bcher-kva.de) is a `duplicate_recipient`: the later one is excluded;
- contacts that are inactive in every chosen list are reported as `inactive`.

Rebuilds. Each row keeps `input_digest`, a sha256 of everything its message is made
from (templates and campaign files, sender identity, links, caps, the recipient's
merge data, suppression and activity, and the paths, sizes and modification times
of their files). A rebuild renders only recipients whose digest changed: unchanged
rows are not touched (their decision and Message-ID stay), changed rows are
rewritten with their decision cleared, rows of recipients no longer selected are
deleted. A build of a new version carries over, for unchanged messages, the
Message-ID, date and decision of the previous version's build.

Memory. What grows with the list is the set of ids of rows seen (to delete the
others at the end) and the addresses with non-ASCII or IDNA domains (duplicates).

The work on one recipient (the reasons catalogue, the compiled context, rendering,
assembling and classifying) is in `services.build_messages`. A build never changes
the campaign's status: publishing, the review gate and the status machine do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from mailer_app.db import after_commit, get_engine, session_scope
from mailer_app.mail import mime
from mailer_app.mail.seed_copy import seed_message_id
from mailer_app.models import (
    BuildStatus,
    BuiltMessage,
    CampaignBuild,
    CampaignStatus,
    CampaignVersion,
    Contact,
    ReviewStatus,
    Source,
    utcnow,
)
from mailer_app.services import (
    InvalidInput,
    NotFoundError,
    ServiceError,
    audit,
    campaign_status,
    campaigns,
    contacts,
)
from mailer_app.services import build_messages as bm
from mailer_app.services.build_messages import REASONS, TEST_BANNER, status_for

__all__ = [
    "REASONS",
    "TEST_BANNER",
    "BuildNotFound",
    "get_build",
    "latest_build",
    "message_bytes",
    "run_build",
    "start_build",
    "status_for",
]

log = logging.getLogger(__name__)

BATCH = 1000  # recipients per transaction and progress step
STALE_AFTER = timedelta(minutes=5)  # a running build whose progress stopped this long is dead
LOOKUP_CHUNK = 500  # ids per DELETE ... IN (...)
# What a new version's row takes over from the previous version's unchanged message.
_CARRIED = (
    "input_digest", "message_id_header", "built_at", "decision", "approved_by_id", "approved_at",
)  # fmt: skip
ACTIVE_BUILD = (BuildStatus.QUEUED.value, BuildStatus.RUNNING.value)


class BuildNotFound(NotFoundError):
    """No build or built message with this id in this workspace."""


# --- starting a build --------------------------------------------------------------------


def start_build(
    *,
    session: Session,
    workspace_id: int,
    campaign_id: int,
    user_id: int | None,
    source: Source | str = Source.UI,
) -> CampaignBuild:
    """Queue a build of the campaign's newest published version (the job starts once the
    caller commits). A build of that version already queued or running is returned
    instead; InvalidInput when nothing is published yet."""
    campaign = campaigns.get_campaign(
        session=session, workspace_id=workspace_id, campaign_id=campaign_id
    )
    if campaign.archived_at is not None:
        raise InvalidInput("This campaign is archived. Restore it to build it.", field="campaign")
    version = campaigns.latest_published(
        session=session, workspace_id=workspace_id, campaign_id=campaign.id
    )
    if version is None:
        raise InvalidInput(
            "Publish the campaign before building it: only a published version is built.",
            field="campaign",
        )
    active = session.exec(
        select(CampaignBuild)
        .where(
            CampaignBuild.workspace_id == workspace_id,
            CampaignBuild.version_id == version.id,
            CampaignBuild.status.in_(ACTIVE_BUILD),
        )
        .order_by(CampaignBuild.id.desc())
    ).first()
    if active is not None:
        if active.updated_at < utcnow() - STALE_AFTER:
            # Its job was lost or its worker died: queue it again (a second run of the
            # job finds the build claimed and does nothing).
            build_id = active.id
            after_commit(session, lambda: queue_build(build_id))
        return active
    if campaign.status == CampaignStatus.APPROVED:
        # An approval covered the messages as they were; a rebuild may change them.
        campaign_status.transition(
            session=session,
            campaign=campaign,
            to=CampaignStatus.IN_REVIEW,
            user_id=user_id,
            source=source,
            reason="Rebuilt after approval: review the messages again.",
        )
    build = CampaignBuild(
        workspace_id=workspace_id,
        campaign_id=campaign.id,
        version_id=version.id,
        status=BuildStatus.QUEUED,
        created_by_id=user_id,
        source=str(source),
    )
    session.add(build)
    session.flush()
    audit.record(
        session=session,
        action="campaign.build",
        source=source,
        workspace_id=workspace_id,
        user_id=user_id,
        target_type="campaign",
        target_id=campaign.id,
        details={"build_id": build.id, "version": version.number},
    )
    build_id = build.id
    after_commit(session, lambda: queue_build(build_id))
    return build


def queue_build(build_id: int) -> None:
    from jobs.build import enqueue_build

    enqueue_build(build_id)


def latest_build(*, session: Session, workspace_id: int, campaign_id: int) -> CampaignBuild | None:
    """The campaign's newest build (of any version), or None."""
    return session.exec(
        select(CampaignBuild)
        .where(CampaignBuild.workspace_id == workspace_id, CampaignBuild.campaign_id == campaign_id)
        .order_by(CampaignBuild.id.desc())
    ).first()


def get_build(*, session: Session, workspace_id: int, build_id: int) -> CampaignBuild:
    build = session.exec(
        select(CampaignBuild).where(
            CampaignBuild.workspace_id == workspace_id, CampaignBuild.id == build_id
        )
    ).first()
    if build is None:
        raise BuildNotFound("This build does not exist.")
    return build


# --- running a build -----------------------------------------------------------------------


@dataclass
class _Claim:
    build_id: int
    workspace_id: int
    campaign_id: int
    version_id: int
    user_id: int | None


def run_build(*, build_id: int, engine: Engine | None = None) -> CampaignBuild:
    """Build every message of the build's version; safe to run twice (a build another
    run holds, or one already finished, is returned as it stands)."""
    engine = engine or get_engine()
    claim = _claim(engine, build_id)
    if claim is not None:
        run = _BuildRun(engine, claim)
        try:
            run.run()
        except ServiceError as exc:
            run.finish(BuildStatus.FAILED, str(exc))
        except Exception:
            log.exception("campaign build %s failed", build_id)
            try:
                run.finish(
                    BuildStatus.FAILED,
                    "The build stopped because of an unexpected error. Build again, and tell "
                    "your administrator if it happens again.",
                )
            except Exception:
                log.exception("campaign build %s: recording the failure failed too", build_id)
            raise
    with session_scope(engine) as session:
        build = session.get(CampaignBuild, build_id)
        if build is None:
            raise BuildNotFound("This build does not exist.")
        return build


def _claim(engine: Engine, build_id: int) -> _Claim | None:
    now = utcnow()
    table = CampaignBuild.__table__
    with session_scope(engine) as session:
        claimed = session.execute(
            sa.update(table)
            .where(
                table.c.id == build_id,
                sa.or_(
                    table.c.status == BuildStatus.QUEUED.value,
                    sa.and_(
                        table.c.status == BuildStatus.RUNNING.value,
                        table.c.updated_at < now - STALE_AFTER,
                    ),
                ),
            )
            .values(
                status=BuildStatus.RUNNING.value, started_at=now, updated_at=now, done=0,
                changed=0, total=0, counts={}, message=None, finished_at=None,
            )
        ).rowcount  # fmt: skip
        if claimed != 1:
            return None
        build = session.get(CampaignBuild, build_id)
        return _Claim(
            build.id, build.workspace_id, build.campaign_id, build.version_id, build.created_by_id
        )


@dataclass
class _BuildRun:
    engine: Engine
    claim: _Claim
    done: int = 0
    changed: int = 0
    total: int = 0
    seen: set[int] = field(default_factory=set)  # ids of this version's rows still wanted
    canonical: set[str] = field(default_factory=set)  # non-ASCII / IDNA addresses seen
    previous_version_id: int | None = None
    max_existing_id: int = 0

    def run(self) -> None:
        claim = self.claim
        with session_scope(self.engine) as session:
            version = session.get(CampaignVersion, claim.version_id)
            if version is None or version.workspace_id != claim.workspace_id:
                raise InvalidInput("The campaign version of this build does not exist any more.")
            ctx = bm.version_context(session, claim.workspace_id, version)
            recipients = version.recipients or {}
            list_ids = list(recipients.get("list_ids") or [])
            filters = list(recipients.get("filters") or []) or None
            self.total = _count_addresses(session, claim.workspace_id, list_ids)
            self.previous_version_id = _previous_version(session, claim, version.id)
            self.max_existing_id = session.exec(
                select(sa.func.coalesce(sa.func.max(BuiltMessage.id), 0)).where(
                    BuiltMessage.version_id == version.id
                )
            ).one()
        self._table = BuiltMessage.__table__
        with session_scope(self.engine) as reader, self.engine.connect() as conn:
            self._conn = conn
            stream = _recipients(reader, claim.workspace_id, list_ids, filters)
            batch: list[bm.Recipient] = []
            for recipient in stream:
                batch.append(recipient)
                if len(batch) >= BATCH:
                    self._write_batch(ctx, batch)
                    batch = []
            self._write_batch(ctx, batch)
            self._delete_stale(version.id)
        self.finish(BuildStatus.DONE, "")

    # -- one batch

    def _write_batch(self, ctx: bm.VersionContext, batch: list[bm.Recipient]) -> None:
        conn, table, claim = self._conn, self._table, self.claim
        for recipient in batch:
            recipient.duplicate = self._is_duplicate(recipient.email)
        prepared = [bm.prepare(ctx, r) for r in batch]
        emails = [p.recipient.email for p in prepared]
        existing = self._rows(claim.version_id, emails, ("id", "input_digest"))
        previous = (
            self._rows(self.previous_version_id, emails, _CARRIED)
            if self.previous_version_id is not None
            else {}
        )
        now = utcnow()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        for item in prepared:
            email = item.recipient.email
            old = existing.get(email)
            if old is not None:
                self.seen.add(old["id"])
                if old["input_digest"] == item.digest:
                    continue  # unchanged: not rendered, not written
            carried = previous.get(email)
            if carried is not None and carried["input_digest"] == item.digest and old is None:
                # The same message as in the previous version's build: keep its identity.
                message_id, built_at = carried["message_id_header"], carried["built_at"]
                decision = {k: carried[k] for k in ("decision", "approved_by_id", "approved_at")}
            else:
                message_id, built_at = mime.new_message_id(ctx.skeleton.message_id_domain), now
                decision = {"decision": None, "approved_by_id": None, "approved_at": None}
                self.changed += 1
            values = bm.build_message(ctx, item, message_id=message_id, date=built_at)
            values.update(
                contact_id=item.recipient.contact_id,
                input_digest=item.digest,
                merge_data=item.data,
                message_id_header=message_id,
                built_at=built_at,
                **decision,
            )
            if old is not None:
                updates.append({"b_id": old["id"], **values})
            else:
                inserts.append(
                    {
                        **values,
                        "workspace_id": claim.workspace_id,
                        "campaign_id": claim.campaign_id,
                        "version_id": claim.version_id,
                        "email": email,
                        "created_at": now,
                        "updated_at": now,
                        "source": Source.JOB.value,
                        "created_by_id": claim.user_id,
                    }
                )
        self.done += len(batch)
        with conn.begin():
            if inserts:
                conn.execute(sa.insert(table), inserts)
            if updates:
                columns = [k for k in updates[0] if k != "b_id"]
                conn.execute(
                    sa.update(table)
                    .where(table.c.id == sa.bindparam("b_id"))
                    .values({c: sa.bindparam(f"v_{c}", type_=table.c[c].type) for c in columns}),
                    [{"b_id": u["b_id"], **{f"v_{c}": u[c] for c in columns}} for u in updates],
                )
            self._save_progress(conn)

    def _rows(self, version_id: int, emails: list[str], columns: Sequence[str]) -> dict:
        table = self._table
        found: dict[str, dict[str, Any]] = {}
        if not emails:
            return found
        query = sa.select(table.c.email, *(table.c[c] for c in columns)).where(
            table.c.workspace_id == self.claim.workspace_id,
            table.c.version_id == version_id,
            table.c.email.in_(emails),
        )
        for row in self._conn.execute(query):
            found[row[0]] = dict(zip(columns, row[1:], strict=True))
        self._conn.rollback()  # end the read transaction before writing
        return found

    def _is_duplicate(self, email: str) -> bool:
        """True for the second address that reaches the same mailbox as an earlier one
        (the stream already merges identical addresses)."""
        if email.isascii() and "xn--" not in email:
            return False
        local, _, domain = email.rpartition("@")
        try:
            key = f"{local}@{mime.ascii_domain(domain)}"
        except mime.UnsafeHeader:
            return False
        if key in self.canonical:
            return True
        self.canonical.add(key)
        return False

    def _delete_stale(self, version_id: int) -> None:
        """Delete the rows of recipients no longer selected (they existed before this build
        and were not seen)."""
        table, conn = self._table, self._conn
        stale: list[int] = []
        for (row_id,) in conn.execute(
            sa.select(table.c.id).where(
                table.c.workspace_id == self.claim.workspace_id,
                table.c.version_id == version_id,
                table.c.id <= self.max_existing_id,
            )
        ):
            if row_id not in self.seen:
                stale.append(row_id)
        conn.rollback()
        for start in range(0, len(stale), LOOKUP_CHUNK):
            with conn.begin():
                chunk = stale[start : start + LOOKUP_CHUNK]
                conn.execute(sa.delete(table).where(table.c.id.in_(chunk)))

    def _save_progress(self, conn: Connection, **extra: Any) -> None:
        table = CampaignBuild.__table__
        conn.execute(
            sa.update(table)
            .where(table.c.id == self.claim.build_id)
            .values(
                done=self.done, changed=self.changed, total=max(self.total, self.done),
                updated_at=utcnow(), **extra,
            )
        )  # fmt: skip

    # -- the end

    def finish(self, status: BuildStatus, message: str) -> None:
        """Record the outcome and the counts by status, and write the audit entry."""
        claim = self.claim
        with session_scope(self.engine) as session:
            counts = {s.value: 0 for s in ReviewStatus}
            for review_status, count in session.exec(
                select(BuiltMessage.review_status, sa.func.count())
                .where(
                    BuiltMessage.workspace_id == claim.workspace_id,
                    BuiltMessage.version_id == claim.version_id,
                )
                .group_by(BuiltMessage.review_status)
            ):
                counts[review_status] = count
            if status == BuildStatus.DONE:
                self.total = self.done
            self._save_progress(
                session.connection(),
                status=status.value,
                counts=counts,
                message=message[:1000] or None,
                finished_at=utcnow(),
            )
            audit.record(
                session=session,
                action=f"campaign.build_{'done' if status == BuildStatus.DONE else 'failed'}",
                source=Source.JOB,
                workspace_id=claim.workspace_id,
                user_id=claim.user_id,
                target_type="campaign",
                target_id=claim.campaign_id,
                details={
                    "build_id": claim.build_id, "messages": self.done, "changed": self.changed,
                    "counts": counts, **({"message": message} if message else {}),
                },
            )  # fmt: skip


def _previous_version(session: Session, claim: _Claim, version_id: int) -> int | None:
    """The version of the campaign's newest finished build of another version."""
    return session.exec(
        select(CampaignBuild.version_id)
        .where(
            CampaignBuild.workspace_id == claim.workspace_id,
            CampaignBuild.campaign_id == claim.campaign_id,
            CampaignBuild.version_id != version_id,
            CampaignBuild.status == BuildStatus.DONE.value,
        )
        .order_by(CampaignBuild.id.desc())
    ).first()


def _count_addresses(session: Session, workspace_id: int, list_ids: list[int]) -> int:
    """Distinct addresses in the lists (active or not): what the progress counts up to."""
    if not list_ids:
        return 0
    return session.exec(
        select(sa.func.count(sa.distinct(Contact.email))).where(
            Contact.workspace_id == workspace_id, Contact.list_id.in_(list_ids)
        )
    ).one()


def _recipients(
    session: Session, workspace_id: int, list_ids: list[int], filters: list | None
) -> Iterator[bm.Recipient]:
    """Every recipient the version selects (streamed by address), then the addresses
    whose contacts are all inactive."""
    if not list_ids:
        return
    for contact, suppression in contacts.iter_recipients_flagged(
        session=session, workspace_id=workspace_id, list_ids=list_ids, filters=filters
    ):
        yield bm.Recipient(
            contact.email, contact.id, contact.first_name, contact.last_name,
            dict(contact.fields or {}), suppression=suppression,
        )  # fmt: skip
    matches = contacts.recipient_filter(filters)
    other = Contact.__table__.alias("other")
    active = (
        sa.select(other.c.id)
        .where(
            other.c.workspace_id == Contact.workspace_id,
            other.c.email == Contact.email,
            other.c.list_id.in_(list_ids),
            other.c.is_active.is_(True),
        )
        .exists()
    )
    query = (
        select(Contact)
        .where(
            Contact.workspace_id == workspace_id,
            Contact.list_id.in_(list_ids),
            Contact.is_active.is_(False),
            ~active,
        )
        .order_by(Contact.email, Contact.id)
        .execution_options(yield_per=contacts.RECIPIENT_BATCH)
    )
    last = None
    for contact in session.exec(query):
        if contact.email == last or not matches(contact):
            continue
        last = contact.email
        yield bm.Recipient(
            contact.email, contact.id, contact.first_name, contact.last_name,
            dict(contact.fields or {}), inactive=True,
        )  # fmt: skip


# --- the bytes of one built message ----------------------------------------------------------


def message_bytes(
    *,
    session: Session,
    workspace_id: int,
    message_id: int,
    test_to: str | None = None,
    seed_to: str | None = None,
    seed_token: str | None = None,
    date: datetime | None = None,
) -> bytes:
    """The exact message a built row stands for (preview, .eml, test send, sending).

    With `test_to` it goes to that address instead, its subject starts with "[TEST] ",
    it has the header `X-Mailer-App-Test: yes`, a visible banner, its own Message-ID,
    the current date and an unsubscribe link for the test address (a tester clicking it
    never unsubscribes the real recipient); nothing in the database changes. With
    `seed_to` and `seed_token` it is the seed mailbox's copy in a real send: unmarked,
    with the token header and a Message-ID made of the token. `date`
    replaces the build's date (the sender stamps the time of sending). Raises
    InvalidInput when the message cannot be put together (it was blocked, or its files
    changed since the build).
    """
    row = session.exec(
        select(BuiltMessage).where(
            BuiltMessage.workspace_id == workspace_id, BuiltMessage.id == message_id
        )
    ).first()
    if row is None:
        raise BuildNotFound("This message does not exist (a newer build may have replaced it).")
    version = session.get(CampaignVersion, row.version_id)
    ctx = bm.version_context(session, workspace_id, version)
    return row_bytes(ctx, row, test_to=test_to, seed_to=seed_to, seed_token=seed_token, date=date)


def row_bytes(
    ctx: bm.VersionContext,
    row: BuiltMessage,
    *,
    test_to: str | None = None,
    seed_to: str | None = None,
    seed_token: str | None = None,
    date: datetime | None = None,
) -> bytes:
    """`message_bytes` with the version's context already compiled (the sender makes it
    once per version, not once per message)."""
    outcome = ctx.render(row.merge_data or {})
    if outcome.message is None:
        why = outcome.error or "a merge field it needs has no value: " + ", ".join(
            outcome.missing_fields
        )
        raise InvalidInput(f"This message cannot be put together: {why}.")
    found = bm.row_files(ctx, row)
    when = date or row.built_at or utcnow()
    mid = row.message_id_header
    if test_to is not None:
        test_to = contacts.normalize_contact_email(test_to)
        mid, when = mime.new_message_id(ctx.skeleton.message_id_domain), date or utcnow()
    elif seed_to is not None:
        mid = seed_message_id(seed_token or "", "seed@" + ctx.skeleton.message_id_domain)
    try:
        return bm.assemble(
            ctx, email=row.email, data=row.merge_data or {}, message=outcome.message,
            found=found, message_id=mid, date=when, test_to=test_to, seed_to=seed_to,
            seed_token=seed_token,
        )  # fmt: skip
    except mime.UnsafeHeader as exc:
        raise InvalidInput(f"This message cannot be put together: {exc}") from None
