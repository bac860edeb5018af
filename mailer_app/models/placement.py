"""Placement runs, one result per (run, seed), and the log of every check."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from mailer_app.models.base import WorkspaceRow


class PlacementRunKind(StrEnum):
    SEND = "send"  # seeds inside a real campaign send
    PREFLIGHT = "preflight"  # seeds only, before the real send


class Placement(StrEnum):
    PENDING = "pending"
    INBOX = "inbox"
    SPAM = "spam"
    PROMOTIONS = "promotions"
    MISSING = "missing"
    ERROR = "error"


TERMINAL_PLACEMENTS = frozenset(
    {Placement.INBOX, Placement.SPAM, Placement.PROMOTIONS, Placement.MISSING, Placement.ERROR}
)


class PlacementRun(WorkspaceRow, table=True):
    __tablename__ = "placement_run"
    __table_args__ = (sa.UniqueConstraint("workspace_id", "idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    campaign_run_id: int | None = Field(default=None, foreign_key="campaign_run.id")
    sender_account_id: int | None = Field(default=None, foreign_key="sender_account.id")
    kind: str = Field(default=PlacementRunKind.SEND, max_length=16)
    status: str = Field(default="active", max_length=16)  # active, completed
    idempotency_key: str = Field(max_length=128)
    check_offsets_min: list[float] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    finished_at: datetime | None = None
    # What each seed's copy carries. Kept here (not only in the job's arguments) so
    # a send job retried after a Redis or worker loss still has the content.
    subject: str | None = None
    html_body: str | None = Field(default=None, sa_column=Column(sa.Text, nullable=True))
    text_body: str | None = Field(default=None, sa_column=Column(sa.Text, nullable=True))


class PlacementResult(WorkspaceRow, table=True):
    """Where one seed's copy landed. Moves from pending to a terminal value once."""

    __tablename__ = "placement_result"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "seed_id"),
        sa.Index("ix_placement_result_ws_decided", "workspace_id", "decided_at"),
        # The dashboard filters on workspace and send time and groups by ESP and
        # placement: a covering index (bench/dashboard.py measures it).
        sa.Index("ix_placement_result_ws_sent", "workspace_id", "sent_at", "esp", "placement"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="placement_run.id", index=True)
    seed_id: int = Field(foreign_key="seed_account.id", index=True)
    esp: str = Field(max_length=16)  # canonical ESP at send time, for grouping
    token: str = Field(max_length=64, unique=True)
    message_id: str | None = Field(default=None, max_length=255)
    sent_at: datetime | None = None
    placement: str = Field(default=Placement.PENDING, max_length=16)
    folder: str | None = Field(default=None, max_length=255)
    decided_at: datetime | None = None
    seconds_to_land: float | None = None
    attempts: int = 0
    spf: str | None = Field(default=None, max_length=16)
    dkim: str | None = Field(default=None, max_length=16)
    dmarc: str | None = Field(default=None, max_length=16)
    error: str | None = None


class PlacementCheck(WorkspaceRow, table=True):
    """One look into a seed's mailbox (the +1/+3/+5/+10 minute history)."""

    __tablename__ = "placement_check"
    __table_args__ = (sa.UniqueConstraint("result_id", "attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    result_id: int = Field(foreign_key="placement_result.id", index=True)
    attempt: int
    outcome: str = Field(max_length=16)  # found placement, not_found, error
    folder: str | None = Field(default=None, max_length=255)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    duration_ms: int = 0


class PlacementRollup(SQLModel, table=True):
    """How many results of one workspace, sent in one UTC hour, for one campaign (None:
    pre-flight runs), ESP and placement: the dashboard's counts without scanning every
    result. Rebuilt hour by hour from `placement_result` (services/placement_rollup.py);
    an hour with a row in `placement_rollup_dirty` is stale and read from the results.
    """

    __tablename__ = "placement_rollup"
    __table_args__ = (
        # Covering: a period's counts are read from the index alone.
        sa.Index(
            "ix_placement_rollup_ws_hour",
            "workspace_id",
            "hour",
            "campaign_id",
            "esp",
            "placement",
            "count",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int = Field(foreign_key="workspace.id")
    hour: datetime
    campaign_id: int | None = None
    esp: str = Field(max_length=16)
    placement: str = Field(max_length=16)
    count: int


class PlacementRollupDirty(SQLModel, table=True):
    """An hour whose rollup no longer matches the results. Written by database triggers
    on `placement_result` (migration 0008), so no writer of results can forget it."""

    __tablename__ = "placement_rollup_dirty"
    __table_args__ = (sa.Index("ix_placement_rollup_dirty_ws_hour", "workspace_id", "hour"),)

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: int
    hour: datetime
