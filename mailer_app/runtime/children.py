"""What the development supervisor runs: Redis, the mail lab, a worker, the scheduler."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from jobs.connection import ALL_QUEUES, QUEUE_PLACEMENT
from mailer_app.settings import PROJECT_ROOT, Settings

LAB_MODULE = "mailer_app.lab"
DEFAULT = "default"  # lab_command value meaning `python -m mailer_app.lab`
# sockaddr_un.sun_path holds 108 bytes including the final NUL.
MAX_UNIX_SOCKET_PATH = 107

# Child states, as written to supervisor.json.
WAITING = "waiting"  # not started yet: a child it needs is not ready
STARTING = "starting"  # started, not ready yet
RUNNING = "running"
BACKOFF = "backoff"  # exited; restarts after a delay
FAILED = "failed"  # gave up (or cannot run): see error and log_tail
SKIPPED = "skipped"  # deliberately not run: see error
STOPPED = "stopped"  # stopped by the supervisor


@dataclass(frozen=True)
class ChildSpec:
    """One supervised process."""

    name: str
    argv: tuple[str, ...]
    # Started only once these children are ready (and restarted only then too).
    needs: tuple[str, ...] = ()
    # Polled after start; the child counts as running once it returns True.
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 20.0
    # Set when the child is deliberately not run (state "skipped").
    skip_reason: str | None = None
    # Set when the child cannot run at all (state "failed", with this message).
    failure: str | None = None
    # Folders created and stale files removed before each start.
    makedirs: tuple[Path, ...] = ()
    remove_before_start: tuple[Path, ...] = ()


def redis_socket(settings: Settings) -> Path:
    return settings.run_dir / "redis.sock"


def find_redis_server() -> str | None:
    for candidate in (
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _redis_answers(socket_path: Path) -> Callable[[], bool]:
    def ready() -> bool:
        client = redis.Redis(
            unix_socket_path=str(socket_path),
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=None,  # redis-py would otherwise retry for about 8 s; we poll anyway
        )
        try:
            return bool(client.ping())
        except redis.RedisError:  # not listening yet, or still loading its AOF
            return False
        finally:
            client.close()

    return ready


def redis_spec(settings: Settings) -> ChildSpec:
    """A private redis-server on a Unix socket, persisted with AOF under data_dir/redis."""
    sock = redis_socket(settings)
    exe = find_redis_server()
    failure = None
    if exe is None:
        failure = (
            "redis-server is not installed: install it (apt-get install redis-server) "
            "or set REDIS_URL to a running Redis"
        )
    elif len(str(sock).encode()) > MAX_UNIX_SOCKET_PATH:
        failure = (
            f"the Redis socket path {sock} is longer than {MAX_UNIX_SOCKET_PATH} bytes: "
            "set DATA_DIR to a shorter folder, or set REDIS_URL"
        )
    data = settings.data_dir / "redis"
    argv = (
        exe or "redis-server",
        "--port", "0",  # no TCP listener: only this user, through the socket
        "--unixsocket", str(sock),
        "--unixsocketperm", "700",
        "--dir", str(data),
        # AOF so that a dev restart keeps queued and scheduled jobs.
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
    )  # fmt: skip
    return ChildSpec(
        "redis",
        argv,
        ready=_redis_answers(sock),
        failure=failure,
        makedirs=(data,),
        # Left behind by a killed Redis; only one supervisor runs per data folder,
        # so no live Redis can be using it.
        remove_before_start=(sock,),
    )


def lab_spec(
    settings: Settings, command: Sequence[str] | str | None = DEFAULT, *, module: str = LAB_MODULE
) -> ChildSpec:
    """The local mail lab, skipped when disabled or not built yet."""
    if not settings.lab_enabled:
        return ChildSpec("lab", (), skip_reason="disabled by MAILER_LAB=0")
    if command is None:
        return ChildSpec("lab", (), skip_reason="disabled for this supervisor (--no-lab)")
    if command == DEFAULT:
        missing = _module_not_runnable(module)
        if missing:
            return ChildSpec("lab", (), skip_reason=missing)
        command = (sys.executable, "-m", module)
    return ChildSpec("lab", tuple(command))


def _module_not_runnable(module: str) -> str | None:
    """Why `python -m module` cannot run yet, or None. Looks for files; runs no code."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"{module} is not importable: {exc}"
    if spec is None or not spec.submodule_search_locations:
        return f"{module} is not available yet"
    if not any(Path(p, "__main__.py").exists() for p in spec.submodule_search_locations):
        return f"{module} has no __main__ yet"
    return None


def worker_spec() -> ChildSpec:
    """A forking worker for builds, sends and everything else."""
    queues = [q for q in ALL_QUEUES if q != QUEUE_PLACEMENT]
    return ChildSpec("worker", (sys.executable, "-m", "jobs.worker", *queues), needs=("redis",))


def placement_worker_spec() -> ChildSpec:
    """A non-forking worker for seed copies and checks: it keeps the seed mailboxes
    logged in between checks, where a forked work horse would log in every time."""
    command = (sys.executable, "-m", "jobs.worker", QUEUE_PLACEMENT, "--simple")
    return ChildSpec("placement-worker", command, needs=("redis",))


def scheduler_spec() -> ChildSpec:
    return ChildSpec("scheduler", (sys.executable, "-m", "jobs.scheduler"), needs=("redis",))


def default_specs(
    settings: Settings, lab_command: Sequence[str] | str | None = DEFAULT
) -> list[ChildSpec]:
    """Start order: Redis (unless REDIS_URL is set), lab, workers, scheduler."""
    specs = [] if settings.redis_url else [redis_spec(settings)]
    specs += [
        lab_spec(settings, lab_command),
        worker_spec(),
        placement_worker_spec(),
        scheduler_spec(),
    ]
    if settings.redis_url:
        # Someone else's Redis: nothing of ours to wait for.
        specs = [replace(spec, needs=()) for spec in specs]
    return specs


def child_env(settings: Settings, redis_url: str) -> dict[str, str]:
    """The environment every child gets: the same Redis and data folder as the supervisor."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATA_DIR=str(settings.data_dir),
        MAILER_ENV=str(settings.environment),
        MAILER_SUPERVISE="0",  # a child never starts another supervisor
        PYTHONUNBUFFERED="1",  # log lines reach the files as they happen
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    return env
