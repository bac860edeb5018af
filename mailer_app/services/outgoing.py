"""The exact bytes of a send record's message (the sender, append-to-Sent, a resend).

Built messages keep what they were built from, not bytes (services/build.py); a send
record points at its built message and is stamped with the time it went out
(`submitted_at`), which becomes its Date header. A seed's record points at the built
message its copy is made from and gets the seed's token (header and Message-ID) from
the run's placement result for that seed. DKIM signing happens last, when the sender
account has a key.

`RunMessages` compiles what a run's messages share once (the version's templates and
files, the DKIM signer, the seed tokens), so the sender pays for it once per run.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from mailer_app.mail.dkim import DkimSigner
from mailer_app.models import (
    BuiltMessage,
    CampaignRun,
    CampaignVersion,
    PlacementResult,
    PlacementRun,
    SeedAccount,
    SendRecord,
    utcnow,
)
from mailer_app.services import InvalidInput, NotFoundError, senders
from mailer_app.services import build as builds
from mailer_app.services import build_messages as bm


class RunMessages:
    """Makes the messages of one campaign run (one version, one sender account)."""

    def __init__(self, *, session: Session, run_id: int) -> None:
        run = session.get(CampaignRun, run_id)
        if run is None:
            raise NotFoundError("This send does not exist.")
        version = session.get(CampaignVersion, run.version_id)
        self.run_id = run_id
        self.workspace_id = run.workspace_id
        self.sender_account_id = version.sender_account_id
        self.context = bm.version_context(session, run.workspace_id, version)
        self.signer: DkimSigner | None = (
            senders.dkim_signer_for(
                session=session, workspace_id=run.workspace_id, sender_id=version.sender_account_id
            )
            if version.sender_account_id is not None
            else None
        )
        self.from_address = self.context.skeleton.from_address
        self._seed_tokens = seed_tokens(session=session, run_id=run_id)

    def seed_token(self, email: str) -> str | None:
        return self._seed_tokens.get(email.lower())

    def message(
        self, record: SendRecord, row: BuiltMessage, *, date: datetime, dkim: bool = True
    ) -> bytes:
        """The bytes of `record` (built from `row`), dated `date`."""
        if record.is_seed:
            token = self.seed_token(record.email)
            if token is None:
                raise InvalidInput("This seed is not part of the send's placement run.")
            data = builds.row_bytes(
                self.context, row, seed_to=record.email, seed_token=token, date=date
            )
        else:
            data = builds.row_bytes(self.context, row, date=date)
        if dkim and self.signer is not None:
            data = self.signer.sign(data)
        return data


def seed_tokens(*, session: Session, run_id: int) -> dict[str, str]:
    """Seed address (lowercase) -> its token in the placement run of campaign run `run_id`."""
    rows = session.exec(
        select(SeedAccount.email, PlacementResult.token)
        .join(PlacementResult, PlacementResult.seed_id == SeedAccount.id)
        .join(PlacementRun, PlacementRun.id == PlacementResult.run_id)
        .where(PlacementRun.campaign_run_id == run_id)
    ).all()
    return {email.lower(): token for email, token in rows}


def record_message(
    *,
    session: Session,
    record: SendRecord,
    date: datetime | None = None,
    dkim: bool = True,
    maker: RunMessages | None = None,
) -> bytes:
    """The message `record` stands for, dated `date` (default: when it was submitted),
    DKIM-signed when its sender account has a key and `dkim` is true (a signature
    carries its signing time, so two signings differ: pass dkim=False to compare).
    Raises InvalidInput when it cannot be put together (its files changed since the
    build) and NotFoundError when its built message is gone."""
    if record.built_message_id is None:
        raise NotFoundError("This message's built copy is gone (its list was deleted).")
    row = session.get(BuiltMessage, record.built_message_id)
    if row is None or row.workspace_id != record.workspace_id:
        raise NotFoundError("This message's built copy is gone.")
    if maker is None or maker.run_id != record.run_id:
        maker = RunMessages(session=session, run_id=record.run_id)  # pass one for many records
    return maker.message(record, row, date=date or record.submitted_at or utcnow(), dkim=dkim)
