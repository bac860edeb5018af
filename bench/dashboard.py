"""Placement dashboard queries beside a bare `SELECT count(*)`, SQLite and PostgreSQL.

Setup (not timed), in a fresh migrated database of each kind (a temporary SQLite
file; a database created and dropped on TEST_POSTGRES_URL's server):
- two workspaces; the measured one holds 90% of the rows, the other 10%;
- 1,000 seed mailboxes over the 8 canonical ESPs, --results placement results
  (1,000,000 by default) in runs of 1,000 seeds, sent over 90 days, with every
  placement (about 2% still pending in the newest runs, 1% error);
- --sends send records (10,000,000 by default) in 10 campaign runs, so the tables
  the dashboard does not read are there too (a real database's size and cache
  pressure). Bulk loaded with SQL (`INSERT ... SELECT` over a number series), the
  send record indexes built after the load; then ANALYZE.

Then the maintenance tick's work is done once (`placement_rollup.fold_all`: the
triggers marked every loaded hour as changed), as a running app does every 10 s.

Measured, interleaved, --repeat times each after one warm-up (medians):
- summary: `dashboard.period_summary` (this period and the one before) over the
  last 30 days, all campaigns: the headline cards;
- esp_breakdown: `dashboard.esp_breakdown` over the last 30 days;
- series: `dashboard.inbox_rate_series` per day over the last 30 days;
- latest_change: `dashboard.latest_change` (the marker the page polls every second);
- reference: a bare `SELECT count(*) FROM placement_result` in the same database.
Then again after deciding every result of the last 24 hours without folding (what
live checks do between two ticks): those hours are counted from the results.

Each query's ratio is bare / query (target 0.2: within 5x of the bare count) and
its median must be under 100 ms.

Prints INFO lines per query and database, then one line for the worst query on the
schema as migrated:
    RESULT dashboard=<ms>ms reference=<ms>ms ratio=<bare/query> target=0.2

    .venv/bin/python bench/dashboard.py [--results 1000000] [--sends 10000000]
        [--repeat 7] [--only sqlite|postgres]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.2
TARGET_MS = 100.0
SEEDS = 1000
ESPS = ("gmail", "outlook", "yahoo", "icloud", "aol", "gmx", "zoho", "other")
DAYS = 90
END = datetime(2026, 11, 1, tzinfo=UTC)
START = END - timedelta(days=DAYS)
SEND_RUNS = 10


def _series(dialect: str, n: int) -> str:
    """A subquery with one column `i` = 0 .. n-1."""
    if dialect == "postgresql":
        return f"(SELECT generate_series(0, {n - 1}) AS i) AS n"
    return (
        f"(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {n - 1}) "
        "SELECT i FROM s) AS n"
    )


def _time(dialect: str, seconds_expr: str) -> str:
    """SQL for START + seconds, stored the way the app stores UTC times."""
    base = int(START.timestamp())
    if dialect == "postgresql":
        return f"to_timestamp({base} + ({seconds_expr}))"
    return f"strftime('%Y-%m-%d %H:%M:%S.000000', {base} + ({seconds_expr}), 'unixepoch')"


def _exec(conn, sql: str) -> None:
    """Run SQL without parameters (psycopg reads a bare % as a placeholder)."""
    if conn.dialect.name == "postgresql":
        sql = sql.replace("%", "%%")
    conn.exec_driver_sql(sql)


def load(engine, results: int, sends: int) -> int:
    """Fill the database; returns the measured workspace's id."""
    import sqlalchemy as sa
    from sqlmodel import Session

    from mailer_app.models import Campaign, PlacementRun, SeedAccount, Workspace

    dialect = engine.dialect.name
    with Session(engine) as session:
        ws = Workspace(name="Bench", slug="bench")
        other = Workspace(name="Other", slug="other")
        session.add_all([ws, other])
        session.flush()
        campaign = Campaign(workspace_id=ws.id, name="Bench campaign")
        session.add(campaign)
        session.flush()
        seeds = {}
        for owner in (ws, other):
            rows = [
                SeedAccount(workspace_id=owner.id, email=f"s{i}@{ESPS[i % 8]}.lab", esp=ESPS[i % 8])
                for i in range(SEEDS)
            ]
            session.add_all(rows)
            session.flush()
            seeds[owner.id] = rows[0].id
        n_runs = (results + SEEDS - 1) // SEEDS
        runs = []
        for r in range(n_runs):
            owner = other if r % 10 == 9 else ws
            runs.append(
                PlacementRun(
                    workspace_id=owner.id,
                    campaign_id=campaign.id if owner is ws else None,
                    idempotency_key=f"run-{r}",
                    status="active" if r >= n_runs - 20 else "completed",
                    check_offsets_min=[1, 3, 5, 10],
                )
            )
        session.add_all(runs)
        session.commit()
        first_run = runs[0].id
        ws_id, other_id, first_seed = ws.id, other.id, seeds[ws.id]
        other_first_seed = seeds[other.id]

    now = "'2026-11-01 00:00:00.000000'" if dialect == "sqlite" else "now()"
    run_of = "(i / 1000)"
    per_run = DAYS * 86400 // max(1, n_runs)
    sent = _time(dialect, f"{run_of} * {per_run} + (i % 1000)")
    decided = _time(dialect, f"{run_of} * {per_run} + (i % 1000) + 60")
    # Mostly inbox; pending only in the 20 newest (active) runs.
    placement = (
        f"CASE WHEN {run_of} >= {n_runs - 20} AND i % 50 = 0 THEN 'pending' "
        "WHEN i % 100 = 1 THEN 'error' WHEN i % 10 IN (2, 3) THEN 'spam' "
        "WHEN i % 10 = 4 THEN 'promotions' WHEN i % 20 = 5 THEN 'missing' ELSE 'inbox' END"
    )
    is_other = f"({run_of} % 10 = 9)"
    with engine.begin() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        _exec(
            conn,
            "INSERT INTO placement_result (created_at, updated_at, source, workspace_id, run_id, "
            "seed_id, esp, token, sent_at, placement, folder, decided_at, seconds_to_land, "
            "attempts, spf, dkim, dmarc) SELECT "
            f"{now}, {now}, 'job', CASE WHEN {is_other} THEN {other_id} ELSE {ws_id} END, "
            f"{first_run} + {run_of}, "
            f"CASE WHEN {is_other} THEN {other_first_seed} ELSE {first_seed} END + i % 1000, "
            f"CASE i % 8 {' '.join(f'WHEN {k} THEN {e!r}' for k, e in enumerate(ESPS))} END, "
            "'tok-' || i, "
            f"{sent}, {placement}, 'INBOX', "
            f"CASE WHEN ({placement}) = 'pending' THEN NULL ELSE {decided} END, 12.5, 1, "
            f"'pass', 'pass', 'pass' FROM {_series(dialect, results)}",
        )
    # Send records: the indexes are built after the load (much faster in bulk).
    with engine.begin() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        else:
            conn.exec_driver_sql("SET session_replication_role = replica")
        for r in range(1, SEND_RUNS + 1):
            conn.exec_driver_sql(
                "INSERT INTO campaign_run (id, created_at, updated_at, source, workspace_id, "
                f"campaign_id, version_id, kind, status) VALUES ({r}, {now}, {now}, 'job', "
                f"{ws_id}, 1, 1, 'send', 'finished')"
            )
        for name in ("uq_send_record_run_id_email", "ix_send_record_run_status",
                     "ix_send_record_ws_message_id", "ix_send_record_workspace_id"):  # fmt: skip
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
        constraints = [
            c["name"]
            for c in sa.inspect(conn).get_unique_constraints("send_record")
            if dialect == "postgresql"
        ]
        for name in constraints:
            conn.exec_driver_sql(f'ALTER TABLE send_record DROP CONSTRAINT "{name}"')
        per = sends // SEND_RUNS
        sent_at = _time(dialect, "i")
        _exec(
            conn,
            "INSERT INTO send_record (created_at, updated_at, source, workspace_id, run_id, email, "
            "is_seed, status, message_id, attempt_count, sent_at, append_status) SELECT "
            f"{now}, {now}, 'job', {ws_id}, 1 + i / {per}, 'person' || i || '@example.com', "
            f"{'false' if dialect == 'postgresql' else 0}, 'sent', '<m' || i || '@bench>', 1, "
            f"{sent_at}, 'not_needed' FROM {_series(dialect, per * SEND_RUNS)}",
        )
        conn.exec_driver_sql(
            "CREATE UNIQUE INDEX uq_send_record_run_email ON send_record (run_id, email)"
        )
        conn.exec_driver_sql(
            "CREATE INDEX ix_send_record_run_status ON send_record (run_id, status)"
        )
        conn.exec_driver_sql(
            "CREATE INDEX ix_send_record_ws_message_id ON send_record (workspace_id, message_id)"
        )
        if dialect == "postgresql":
            conn.exec_driver_sql("SET session_replication_role = DEFAULT")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE" if dialect == "sqlite" else "VACUUM ANALYZE")
    return ws_id


def measure(engine, workspace_id: int, repeat: int) -> tuple[float, dict[str, float]]:
    """Median ms of the bare count and of each dashboard query."""
    from sqlmodel import Session

    from mailer_app.services import dashboard as dash

    period = dash.Period(END - timedelta(days=30), END)
    queries = {
        "summary": lambda s: dash.period_summary(
            session=s, workspace_id=workspace_id, period=period
        ),
        "esp_breakdown": lambda s: dash.esp_breakdown(
            session=s, workspace_id=workspace_id, period=period
        ),
        "series": lambda s: dash.inbox_rate_series(
            session=s, workspace_id=workspace_id, period=period
        ),
        "latest_change": lambda s: dash.latest_change(session=s, workspace_id=workspace_id),
    }
    times: dict[str, list[float]] = {name: [] for name in ["bare", *queries]}
    with Session(engine) as session:
        for round_ in range(repeat + 1):
            start = time.perf_counter()
            session.connection().exec_driver_sql("SELECT count(*) FROM placement_result").scalar()
            bare = time.perf_counter() - start
            if round_:
                times["bare"].append(bare)
            for name, query in queries.items():
                start = time.perf_counter()
                query(session)
                elapsed = time.perf_counter() - start
                if round_:
                    times[name].append(elapsed)
            session.rollback()
    medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
    return medians.pop("bare"), medians


def report(label: str, bare: float, medians: dict[str, float]) -> list[tuple[float, float, str]]:
    rows = []
    for name, ms in medians.items():
        ratio = bare / ms if ms else float("inf")
        ok = ms < TARGET_MS and ratio >= TARGET_RATIO
        print(
            f"INFO {label} {name}={ms:.1f}ms bare_count={bare:.1f}ms ratio={ratio:.3f} "
            f"{'ok' if ok else 'MISSES'}",
            flush=True,
        )
        rows.append((ratio, ms, f"{label}.{name}"))
    return rows


def fold(engine) -> None:
    """What the maintenance tick does every 10 s: fold the changed hours into the rollup."""
    from sqlmodel import Session

    from mailer_app.services import placement_rollup

    def session_factory():
        return _committing(Session(engine))

    t = time.perf_counter()
    marks = placement_rollup.fold_all(session_factory=session_factory, max_rounds=10_000)
    print(f"INFO folded {marks:,} change marks in {time.perf_counter() - t:.1f}s", flush=True)


class _committing:
    def __init__(self, session) -> None:
        self.session = session

    def __enter__(self):
        return self.session

    def __exit__(self, kind, *_):
        if kind is None:
            self.session.commit()
        self.session.close()


def touch_newest_hours(engine, workspace_id: int, hours: int) -> int:
    """Decide the pending results of the newest `hours` hours (what live checks do):
    their hours become dirty and are counted from the results until the next fold."""
    import sqlalchemy as sa

    from mailer_app.models import PlacementResult

    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(PlacementResult)
            .where(
                PlacementResult.workspace_id == workspace_id,
                PlacementResult.sent_at >= END - timedelta(hours=hours),
            )
            .values(placement="inbox")
        ).rowcount
    return changed


def run_one(url: str, label: str, args) -> list[tuple[float, float, float, str]]:
    from mailer_app.db import make_engine, upgrade_to_head

    upgrade_to_head(url)
    engine = make_engine(url)
    try:
        t = time.perf_counter()
        ws = load(engine, args.results, args.sends)
        print(f"INFO {label} loaded in {time.perf_counter() - t:.0f}s", flush=True)
        fold(engine)
        bare, medians = measure(engine, ws, args.repeat)
        worst = [(r, ms, bare, n) for r, ms, n in report(label, bare, medians)]
        changed = touch_newest_hours(engine, ws, hours=24)
        print(f"INFO {label} {changed:,} results of the last 24 hours changed, not folded")
        bare, medians = measure(engine, ws, args.repeat)
        worst += [(r, ms, bare, n) for r, ms, n in report(f"{label}+24_dirty_hours", bare, medians)]
        return worst
    finally:
        engine.dispose()


def run_all(args, workdir: Path) -> list[tuple[float, float, float, str]]:
    rows = []
    if args.only in (None, "sqlite"):
        rows += run_one(f"sqlite:///{workdir / 'bench.db'}", "sqlite", args)
    if args.only in (None, "postgres"):
        import psycopg

        admin = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
        name = f"bench_dashboard_{secrets.token_hex(4)}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            rows += run_one(f"{url}/{name}", "postgres", args)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--sends", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    parser.add_argument("--dir", default=None, help="where the SQLite database goes")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-", dir=args.dir))
    from cryptography.fernet import Fernet

    os.environ.update(
        DATA_DIR=str(workdir / "data"),
        MASTER_KEY=Fernet.generate_key().decode(),
        MAILER_SUPERVISE="0",
        MAILER_LAB="0",
    )
    print(
        f"INFO {args.results:,} placement results, {args.sends:,} send records, "
        f"median of {args.repeat}",
        flush=True,
    )
    rows = []
    try:
        rows += run_all(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ratio, ms, bare, name = min(rows, key=lambda r: (r[0], -r[1]))
    slowest = max(rows, key=lambda r: r[1])
    print(
        f"INFO worst_ratio={name} slowest={slowest[3]} {slowest[1]:.1f}ms target=<{TARGET_MS:.0f}ms"
    )
    print(
        f"RESULT dashboard={ms:.1f}ms reference={bare:.1f}ms ratio={ratio:.3f} "
        f"target={TARGET_RATIO}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
