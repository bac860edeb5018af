"""Campaign send messages per second: two RQ send workers beside a bare smtplib loop.

Setup (not timed): Postfix's `smtp-sink` on a free loopback port (it accepts every
message and throws it away), a private redis-server on another, a fresh, migrated
SQLite database (or PostgreSQL with --database postgres) in a temporary folder, and
the campaign of bench/build.py (about 5 KB of HTML and 2 KB of text, 10 merge
fields) for --count contacts, built by the real build service, approved and queued
(`send_records.queue_campaign`). The sender account points at smtp-sink (plain SMTP,
no login, no DKIM key) and has no rate limits; SEND_DESTINATION_LIMITS is empty.

Measured in the same run, over the same messages:
- engine: --workers RQ worker processes, `python -m jobs.worker send` as in
  production (forking: each job runs in a "work horse" child). Timed from
  `jobs.send.wake_run(run_id, lanes=workers)` to the run's `finished_at`, which the
  last job stamps once no record is left: everything a real send does, i.e. the
  claims, rendering each message again from what the build stored plus MIME
  (services/outgoing.py), the `submitted_at` commit before each message, the SMTP
  transaction (MAIL, RCPT, DATA, no pipelining), the batched results and attempt
  rows, the Redis throttle call per message and the lane renewals, the job
  hand-overs every SEND_JOB_SECONDS.
- reference: the same messages' bytes, pre-built outside the timing (the engine's
  own `RunMessages.message`), sent by a bare `smtplib.SMTP.sendmail` loop over one
  connection (MAIL, RCPT, DATA: no pipelining either). Timed once before and once
  after the engine; the better of the two is used, so the ratio is never flattered.

Peak memory of a worker is VmHWM (peak resident set) from /proc/<pid>/status of the
worker process and of every child it forks (a work horse per job; rq's scheduler in
the worker holding its lock), sampled every 0.25 s while they run. A work horse's
figure includes the pages it shares with its worker, so the larger of the two is
the worker's footprint (the issue's target: under 200 MB per worker). Forking
workers are measured because production runs them (Procfile); --simple measures
workers that run the jobs in their own process instead.

The bench process itself holds the reference's pre-built messages (about 8 KB each:
~800 MB at 100,000); build, pre-build and the two reference loops add about four
minutes to the send itself at the default count.

Checked at the end: every record of the run is `sent`, each with exactly one `sent`
attempt, no job failed, and smtp-sink counted 3 x --count messages (two reference
loops and the engine).

Prints:
    INFO send_worker_peak_memory=<MB>MB target=<200MB
    RESULT send=<msgs/s>msgs/s reference=<msgs/s>msgs/s ratio=<r> target=0.5

    ./dev bench send [--count 100000] [--workers 2] [--database sqlite|postgres] [--simple]
    (or .venv/bin/python bench/send.py ...; --database postgres creates and drops a
    database at BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.5
TARGET_MEMORY_MB = 200
SAMPLE_EVERY = 0.25  # seconds between progress and memory samples while the engine sends
POSTGRES_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SMTP_SINK_PATHS = ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink")


def load_build_bench():
    """bench/build.py (its campaign templates and bulk contact generator)."""
    spec = importlib.util.spec_from_file_location("bench_build", ROOT / "bench" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- helper processes ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def find_smtp_sink() -> str | None:
    found = shutil.which("smtp-sink")
    if found:
        return found
    return next((p for p in SMTP_SINK_PATHS if os.access(p, os.X_OK)), None)


def install_smtp_sink() -> str | None:
    """Install Postfix (which ships smtp-sink) when we are root on Debian/Ubuntu, the
    way ./dev installs system packages; None when that is not possible."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("installing postfix (for smtp-sink): apt-get install postfix ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    answer = b"postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=answer, check=False, capture_output=True)
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"],
        env=env, check=False, timeout=900, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return find_smtp_sink()


def start_smtp_sink(exe: str, port: int, out: Path) -> subprocess.Popen:
    # -c: running counters on stdout ("sess=.. quit=.. mesg=N", one per update).
    # -u: required when started as root (it drops to that user after binding).
    args = [exe, "-c"] + (["-u", "nobody"] if os.geteuid() == 0 else [])
    with open(out, "wb") as fh:
        proc = subprocess.Popen([*args, f"127.0.0.1:{port}", "1000"], stdout=fh, stderr=fh)
    wait_for_port(port)
    return proc


def sink_messages(out: Path) -> int | None:
    """The last `mesg=` counter smtp-sink printed, or None."""
    text = out.read_bytes().decode(errors="replace")
    for update in reversed(text.replace("\n", "\r").split("\r")):
        for part in update.split():
            if part.startswith("mesg="):
                try:
                    return int(part[5:])
                except ValueError:
                    return None
    return None


def start_redis(workdir: Path, port: int) -> subprocess.Popen:
    exe = shutil.which("redis-server")
    if not exe:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port)
    return proc


def stop(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# --- memory -------------------------------------------------------------------------


def vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set size of a live process, in kB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_of(pids: set[int]) -> dict[int, int]:
    """child pid -> parent pid, for the live children of `pids` (a scan of /proc)."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid in pids:
            found[int(entry)] = ppid
    return found


class MemoryWatch:
    """Peak VmHWM of each worker process and of the children it forks: a work horse
    per job and, in the worker holding rq's scheduler lock, the scheduler."""

    def __init__(self, workers: list[subprocess.Popen]) -> None:
        self.workers = {p.pid: p for p in workers}
        self.process_kb = dict.fromkeys(self.workers, 0)
        self.child_kb = dict.fromkeys(self.workers, 0)
        self.children: dict[int, set[int]] = {pid: set() for pid in self.workers}
        self.live: dict[int, int] = {}  # child -> worker, as of the last scan
        self.scanned_at = 0.0

    def sample(self, *, scan: bool = False) -> None:
        """Read every known process's VmHWM; look for new children (a scan of /proc)
        at most once a second unless `scan`."""
        if scan or time.monotonic() - self.scanned_at >= 1.0:
            self.scanned_at = time.monotonic()
            self.live = children_of(set(self.workers))
            for child, parent in self.live.items():
                self.children[parent].add(child)
        for pid in self.workers:
            self.process_kb[pid] = max(self.process_kb[pid], vm_hwm_kb(pid) or 0)
        for child, parent in self.live.items():
            self.child_kb[parent] = max(self.child_kb[parent], vm_hwm_kb(child) or 0)

    def peak_mb(self, pid: int) -> float:
        return max(self.process_kb[pid], self.child_kb[pid]) / 1024


# --- the campaign -------------------------------------------------------------------


def make_campaign(bb, *, count: int, sink_port: int) -> tuple[int, int, int]:
    """Build, approve and queue the campaign; (workspace_id, run_id, sender_id)."""
    from sqlmodel import func, select

    from mailer_app.db import get_engine, session_scope
    from mailer_app.models import (
        BuiltMessage,
        Campaign,
        CampaignStatus,
        CampaignVersion,
        SenderAccount,
        Source,
        utcnow,
    )
    from mailer_app.services import build, campaign_status, contacts, send_records, workspaces

    engine = get_engine()
    with session_scope() as session:
        workspace = workspaces.create_workspace(session=session, name="Bench", source=Source.CLI)
        people = contacts.create_contact_list(
            session=session, workspace_id=workspace.id, user_id=None, name="Everyone"
        )
        sender = SenderAccount(
            workspace_id=workspace.id, name="News", from_name="Spring News",
            from_email="news@example.com", smtp_host="127.0.0.1", smtp_port=sink_port,
            smtp_security="plain",
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
                subject=bb.SUBJECT, html_body=bb.HTML, text_body=bb.TEXT,
                recipients={"list_ids": [people.id], "filters": []}, attachment_rules={},
            )
        )  # fmt: skip
        workspace_id, list_id, campaign_id = workspace.id, people.id, campaign.id
        sender_id = sender.id
        assert sender.rate_per_second is None and sender.rate_per_minute is None
        assert sender.rate_per_hour is None

    started = time.perf_counter()
    bb.generate_contacts(engine, workspace_id, list_id, count)
    build.queue_build = lambda _build_id: None  # no job: the build runs right here
    with session_scope() as session:
        build_id = build.start_build(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id,
            user_id=None, source=Source.CLI,
        ).id  # fmt: skip
    result = build.run_build(build_id=build_id)
    with session_scope() as session:
        built = session.exec(select(func.count()).select_from(BuiltMessage)).one()
    if result.status != "done" or result.counts.get("ready") != count or built != count:
        raise RuntimeError(f"the build failed: {result.status} {result.message} {result.counts}")
    with session_scope() as session:
        campaign = session.get(Campaign, campaign_id)
        campaign_status.transition(
            session=session, campaign=campaign, to=CampaignStatus.APPROVED, source=Source.CLI
        )
    with session_scope() as session:
        run = send_records.queue_campaign(
            session=session, workspace_id=workspace_id, campaign_id=campaign_id, user_id=None,
            source=Source.CLI,
        )  # fmt: skip
        run_id = run.id
    with session_scope() as session:
        counters = send_records.run_counters(
            session=session, workspace_id=workspace_id, run_id=run_id
        )
    if counters.queued != count:
        raise RuntimeError(f"queued {counters.queued} records, not {count}")
    print(
        f"  built, approved and queued {count:,} messages in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return workspace_id, run_id, sender_id


def prebuild(run_id: int) -> tuple[str, list[tuple[str, bytes]]]:
    """(envelope sender, [(recipient, bytes)]) of every record of the run, made by the
    engine's own message maker, in the order the engine claims them."""
    from sqlmodel import Session, select

    from mailer_app.db import get_engine
    from mailer_app.models import BuiltMessage, SendRecord, utcnow
    from mailer_app.services.outgoing import RunMessages

    when = utcnow().replace(microsecond=0)
    messages: list[tuple[str, bytes]] = []
    with Session(get_engine()) as session:
        maker = RunMessages(session=session, run_id=run_id)
        envelope = maker.from_address
        rows = session.exec(
            select(SendRecord, BuiltMessage)
            .join(BuiltMessage, BuiltMessage.id == SendRecord.built_message_id)
            .where(SendRecord.run_id == run_id)
            .order_by(SendRecord.id)
            .execution_options(yield_per=2000)
        )
        for record, row in rows:
            messages.append((record.email, maker.message(record, row, date=when)))
    return envelope, messages


def bare_loop(port: int, envelope: str, messages: list[tuple[str, bytes]]) -> float:
    """Messages/s of plain smtplib over one connection (connect and QUIT included)."""
    started = time.perf_counter()
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo()
    for recipient, data in messages:
        client.sendmail(envelope, [recipient], data)
    client.quit()
    return len(messages) / (time.perf_counter() - started)


# --- the engine ---------------------------------------------------------------------


def start_workers(n: int, workdir: Path, env: dict[str, str], simple: bool) -> list:
    procs = []
    for i in range(n):
        log = workdir / f"worker-{i + 1}.log"
        args = [sys.executable, "-m", "jobs.worker", "send", "--name", f"bench-send-{i + 1}"]
        with open(log, "wb") as out:
            command = [*args, *(["--simple"] if simple else [])]
            procs.append(
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            )
    return procs


def wait_for_workers(redis, n: int, procs: list, timeout: float = 60.0) -> None:
    from rq import Worker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker exited while starting (see its log)")
        if len(Worker.all(connection=redis)) >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{n} workers did not register within {timeout:.0f} s")


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def run_engine(
    *, workspace_id: int, run_id: int, workers: list, timeout: float
) -> tuple[float, MemoryWatch]:
    """Seconds from the wake to the run's finished_at, and the workers' memory."""
    from rq import Queue
    from rq.registry import StartedJobRegistry
    from sqlmodel import Session

    from jobs.connection import QUEUE_SEND, get_redis
    from jobs.send import wake_run
    from mailer_app.db import get_engine
    from mailer_app.models import CampaignRun, utcnow
    from mailer_app.services import send_records

    watch = MemoryWatch(workers)
    watch.sample(scan=True)
    woken_at = utcnow()
    started = time.perf_counter()
    queued = wake_run(run_id, lanes=len(workers))
    assert queued == len(workers), f"{queued} lanes queued"
    deadline = started + timeout
    last_print = started
    finished: datetime | None = None
    with Session(get_engine()) as session:
        while time.perf_counter() < deadline:
            time.sleep(SAMPLE_EVERY)
            watch.sample()
            session.expire_all()
            run = session.get(CampaignRun, run_id)
            if run.finished_at is not None:
                finished = as_utc(run.finished_at)
                break
            if any(p.poll() is not None for p in workers):
                raise RuntimeError("a worker exited during the send (see its log)")
            if time.perf_counter() - last_print >= 10:
                last_print = time.perf_counter()
                c = send_records.run_counters(
                    session=session, workspace_id=workspace_id, run_id=run_id
                )
                print(
                    f"    {last_print - started:5.0f} s: {c.sent:,} sent, {c.queued:,} queued, "
                    f"{c.sending:,} sending",
                    flush=True,
                )
    if finished is None:
        raise RuntimeError(f"the run did not finish within {timeout:.0f} s")
    # Let the last jobs end (the other lane finds nothing left and stops) before the
    # final memory reading; bounded.
    queue = Queue(QUEUE_SEND, connection=get_redis())
    for _ in range(80):
        watch.sample(scan=True)
        if len(queue) == 0 and len(StartedJobRegistry(queue=queue)) == 0:
            break
        time.sleep(SAMPLE_EVERY)
    watch.sample(scan=True)
    return (finished - woken_at).total_seconds(), watch


def verify(*, workspace_id: int, run_id: int, count: int) -> list[str]:
    """What is wrong with the run's database state (empty: all good)."""
    import sqlalchemy as sa
    from sqlmodel import Session

    from mailer_app.db import get_engine
    from mailer_app.models import Campaign, CampaignRun, SendAttempt, SendRecord
    from mailer_app.services import send_records

    problems = []
    with Session(get_engine()) as session:
        c = send_records.run_counters(session=session, workspace_id=workspace_id, run_id=run_id)
        if (c.sent, c.total) != (count, count):
            problems.append(f"records: {c}")
        attempts, records = session.execute(
            sa.select(
                sa.func.count(),
                sa.func.count(sa.distinct(SendAttempt.send_record_id)),
            )
            .select_from(SendAttempt)
            .join(SendRecord, SendRecord.id == SendAttempt.send_record_id)
            .where(SendRecord.run_id == run_id, SendAttempt.outcome == "sent")
        ).one()
        if attempts != count or records != count:
            problems.append(f"{attempts:,} sent attempts over {records:,} records, not {count:,}")
        others = session.execute(
            sa.select(sa.func.count())
            .select_from(SendAttempt)
            .join(SendRecord, SendRecord.id == SendAttempt.send_record_id)
            .where(SendRecord.run_id == run_id, SendAttempt.outcome != "sent")
        ).scalar_one()
        if others:
            problems.append(f"{others:,} attempts that did not send")
        run = session.get(CampaignRun, run_id)
        campaign = session.get(Campaign, run.campaign_id)
        if run.status != "completed" or campaign.status != "completed":
            problems.append(f"run {run.status}, campaign {campaign.status}")
    return problems


# --- main ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="recipients")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (= lanes)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--simple", action="store_true",
        help="run the workers with --simple (jobs in the worker process, no fork per job)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=None, help="seconds the send may take")
    parser.add_argument("--dir", default=None, help="where the temporary folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if args.count < 1 or not 1 <= args.workers <= 32:
        parser.error("--count must be at least 1 and --workers between 1 and 32")

    sink_exe = find_smtp_sink() or install_smtp_sink()
    if sink_exe is None:
        print(
            "smtp-sink (from Postfix) is not installed. On Debian/Ubuntu, as root:\n"
            "  echo 'postfix postfix/main_mailer_type select No configuration' | "
            "debconf-set-selections\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix",
            file=sys.stderr,
        )
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bench-send-", dir=args.dir))
    sink_port, redis_port = free_port(), free_port()
    sink = redis_server = pg_admin = pg_name = None
    workers: list[subprocess.Popen] = []
    from cryptography.fernet import Fernet

    if args.database == "postgres":
        import psycopg

        pg_admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
        pg_name = f"bench_send_{secrets.token_hex(4)}"
        pg_admin.execute(f'CREATE DATABASE "{pg_name}"')
        database_url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + pg_name
    else:
        database_url = f"sqlite:///{workdir / 'bench.db'}"
    os.environ.pop("SEND_DESTINATION_LIMITS", None)
    os.environ.update(
        DATA_DIR=str(workdir / "data"),
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        MASTER_KEY=Fernet.generate_key().decode(),
        MAILER_SUPERVISE="0",
        MAILER_LAB="0",
        PUBLIC_URL="https://mail.example.com",
        SEND_DESTINATION_LIMITS="{}",  # rate limits off (the sender account has none)
        SEND_VERP="0",
    )
    try:
        sink = start_smtp_sink(sink_exe, sink_port, workdir / "smtp-sink.out")
        redis_server = start_redis(workdir / "redis", redis_port)
        from jobs.connection import get_redis
        from mailer_app.db import upgrade_to_head
        from mailer_app.settings import get_settings

        upgrade_to_head()
        settings = get_settings()
        print(
            f"bench in {workdir}: {args.count:,} recipients, {args.workers} workers "
            f"({'--simple' if args.simple else 'forking'}), {args.database}, smtp-sink on "
            f"127.0.0.1:{sink_port}; SEND_BATCH_SIZE={settings.send_batch_size} "
            f"SEND_JOB_SECONDS={settings.send_job_seconds:g}; {os.cpu_count()} CPUs, load "
            f"average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        bb = load_build_bench()
        workspace_id, run_id, _ = make_campaign(bb, count=args.count, sink_port=sink_port)

        started = time.perf_counter()
        envelope, messages = prebuild(run_id)
        size = sum(len(m) for _, m in messages)
        print(
            f"  pre-built the reference's {len(messages):,} messages ({size / len(messages):,.0f}"
            f" bytes each on average) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        reference = [bare_loop(sink_port, envelope, messages)]
        print(f"  bare smtplib loop: {reference[0]:,.0f} messages/s", flush=True)

        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        workers = start_workers(args.workers, workdir, env, args.simple)
        redis = get_redis()
        wait_for_workers(redis, args.workers, workers)
        timeout = args.timeout or max(300.0, args.count / 20)
        elapsed, watch = run_engine(
            workspace_id=workspace_id, run_id=run_id, workers=workers, timeout=timeout
        )
        ours = args.count / elapsed
        print(
            f"  engine: {args.count:,} messages in {elapsed:.1f} s: {ours:,.0f} messages/s "
            f"(load average now {os.getloadavg()[0]:.1f})"
        )
        for i, proc in enumerate(workers):
            print(
                f"  worker {i + 1}: peak {watch.peak_mb(proc.pid):.0f} MB (worker process "
                f"{watch.process_kb[proc.pid] / 1024:.0f} MB, its "
                f"{len(watch.children[proc.pid])} children up to "
                f"{watch.child_kb[proc.pid] / 1024:.0f} MB)",
                flush=True,
            )
        for proc in workers:
            stop(proc)

        from rq import Queue
        from rq.registry import FailedJobRegistry

        failed_jobs = len(FailedJobRegistry(queue=Queue("send", connection=redis)))
        reference.append(bare_loop(sink_port, envelope, messages))
        print(f"  bare smtplib loop again: {reference[1]:,.0f} messages/s", flush=True)
        del messages

        problems = verify(workspace_id=workspace_id, run_id=run_id, count=args.count)
        if failed_jobs:
            problems.append(f"{failed_jobs} send job(s) failed (see the worker logs)")
        stop(sink)
        seen = sink_messages(workdir / "smtp-sink.out")
        if seen is not None and seen != 3 * args.count:
            problems.append(f"smtp-sink counted {seen:,} messages, not {3 * args.count:,}")
        if problems:
            for log in sorted(workdir.glob("worker-*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            print("FAILED: " + "; ".join(problems))
            return 1
        print(
            f"  checked: {args.count:,} records sent, one sent attempt each; smtp-sink "
            + (f"counted {seen:,} messages (2 reference loops + the engine)" if seen else
               "gave no count")
        )  # fmt: skip
        bare = max(reference)
        peak = max(watch.peak_mb(p.pid) for p in workers)
        print(f"INFO send_worker_peak_memory={peak:.0f}MB target=<{TARGET_MEMORY_MB}MB")
        print(
            f"RESULT send={ours:.0f}msgs/s reference={bare:.0f}msgs/s "
            f"ratio={ours / bare:.2f} target={TARGET_RATIO}"
        )
        return 0
    finally:
        for proc in workers:
            stop(proc)
        stop(sink)
        stop(redis_server)
        if "mailer_app.db" in sys.modules:
            sys.modules["mailer_app.db"].get_engine().dispose()
        if pg_admin is not None:
            pg_admin.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            pg_admin.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
