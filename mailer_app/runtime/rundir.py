"""The supervisor's files in settings.run_dir: lock, state, logs.

- supervisor.lock: held (flock) by the one running supervisor of a data folder.
- supervisor.json: its pid, its children's pids and states, written atomically.
- <child>.log, supervisor.log: process output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections import deque
from pathlib import Path

LOCK_FILE = "supervisor.lock"
STATE_FILE = "supervisor.json"
SUPERVISOR_LOG = "supervisor.log"
# A dev log is rotated once (to .log.1) when it grows past this at a (re)start.
MAX_LOG_BYTES = 5 * 1024 * 1024


def ensure_run_dir(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return run_dir


def log_path(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.log"


def acquire_lock(run_dir: Path, *, wait: float = 0.0) -> int | None:
    """Take the supervisor lock; the open fd (keep it for the process's life) or None.

    Retries for `wait` seconds: ensure_supervisor probes the same lock for a
    moment while it waits for a new supervisor to come up.
    """
    ensure_run_dir(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people; the flock is the truth
        return fd


def lock_is_held(run_dir: Path) -> bool:
    """True while some process holds the supervisor lock of this run dir."""
    path = run_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def write_state(run_dir: Path, state: dict) -> None:
    """Replace supervisor.json atomically, so readers never see half a file."""
    target = run_dir / STATE_FILE
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True, default=str))
    os.replace(tmp, target)


def read_state(run_dir: Path) -> dict | None:
    """supervisor.json, or None when absent or unreadable."""
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 30) -> list[str]:
    """The last `lines` lines of a log file (empty when there is none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))  # enough for 30 lines of a log
            kept = deque(fh.read().decode("utf-8", "replace").splitlines(), maxlen=lines)
    except OSError:
        return []
    return list(kept)


def rotate_log(path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
    """Keep one previous log (.1) once a log passes max_bytes."""
    with contextlib.suppress(OSError):
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
