"""What the web backend calls: start the supervisor once, find what it should follow,
and read its status.

The supervisor is started detached (its own session), so a hot reload of the
backend does not kill it; it follows the outermost `reflex run` process instead,
and a reloaded backend calling ensure_supervisor again finds it running.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil

from mailer_app.runtime import rundir
from mailer_app.runtime.children import DEFAULT, RUNNING, SKIPPED, STARTING
from mailer_app.runtime.processes import pid_alive
from mailer_app.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

# ensure_supervisor results.
STARTED = "started"
ALREADY_RUNNING = "already_running"
DISABLED = "disabled"
LAUNCH_FAILED = "failed"

# Popen objects of supervisors started by this process, kept so they are reaped
# (and never garbage-collected while running, which warns).
_launched: list[subprocess.Popen] = []


def ensure_supervisor(
    settings: Settings,
    watch_pid: int,
    *,
    lab_command: Sequence[str] | str | None = DEFAULT,
    timeout: float = 5.0,
) -> str:
    """Start the dev supervisor for settings.data_dir unless one already runs.

    Returns "started", "already_running" (a no-op: the case on every hot reload),
    "disabled" (not development, or MAILER_SUPERVISE=0) or "failed" (logged with
    the supervisor's last log lines). Waits at most `timeout` seconds, for the new
    supervisor to take its lock; the children come up in the background.
    `lab_command`: None to run no mail lab, or a command line replacing
    `python -m mailer_app.lab`.
    """
    if not (settings.is_dev and settings.supervise):
        return DISABLED
    run_dir = rundir.ensure_run_dir(settings.run_dir)
    if rundir.lock_is_held(run_dir):
        return ALREADY_RUNNING
    _reap_launched()
    argv = [sys.executable, "-m", "mailer_app.runtime.supervisor", "--watch-pid", str(watch_pid)]
    if lab_command is None:
        argv.append("--no-lab")
    elif lab_command != DEFAULT:
        argv += ["--lab-command", shlex.join(lab_command)]
    log_file = rundir.log_path(run_dir, "supervisor")
    rundir.rotate_log(log_file)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            env=supervisor_env(settings),
            start_new_session=True,  # survives the backend's hot reloads and Ctrl+C
            close_fds=True,
        )
    _launched.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rundir.lock_is_held(run_dir):
            log.info("started the dev supervisor (pid %s, logs in %s)", proc.pid, run_dir)
            return STARTED
        if proc.poll() is not None:
            if rundir.lock_is_held(run_dir):  # another one won the race: fine
                return ALREADY_RUNNING
            log.error(
                "the dev supervisor exited with code %s:\n%s",
                proc.returncode,
                "\n".join(rundir.tail(log_file, 20)),
            )
            return LAUNCH_FAILED
        time.sleep(0.05)
    log.warning("the dev supervisor (pid %s) is slow to start; see %s", proc.pid, log_file)
    return STARTED


def supervisor_env(settings: Settings) -> dict[str, str]:
    """The environment that makes the supervisor build the same Settings as the caller."""
    env = dict(os.environ)
    env.update(
        DATA_DIR=str(settings.data_dir.resolve()),
        MAILER_ENV=str(settings.environment),
        MAILER_LAB="1" if settings.lab_enabled else "0",
        LAB_SMTP_PORT=str(settings.lab_smtp_port),
        LAB_IMAP_PORT=str(settings.lab_imap_port),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p),
    )
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        env.pop("REDIS_URL", None)
    return env


def _reap_launched() -> None:
    _launched[:] = [p for p in _launched if p.poll() is None]


def _is_reflex_run(cmdline: Sequence[str]) -> bool:
    """`reflex run ...`, `python .../bin/reflex run ...` or `python -m reflex run ...`."""
    for i, arg in enumerate(cmdline):
        if os.path.basename(arg) == "reflex":
            return "run" in cmdline[i + 1 :]
        if arg == "-m" and cmdline[i + 1 : i + 2] == ["reflex"]:
            return "run" in cmdline[i + 2 :]
    return False


def find_watch_pid() -> int:
    """The outermost ancestor running `reflex run`, else this process's pid.

    The backend process is replaced on every hot reload; the `reflex run` CLI
    above it lives as long as the developer's session, so that is what the
    supervisor follows.
    """
    found = None
    try:
        for ancestor in psutil.Process().parents():
            try:
                if _is_reflex_run(ancestor.cmdline()):
                    found = ancestor.pid  # keep going: the outermost one wins
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return found or os.getpid()


def supervisor_status(settings: Settings) -> dict:
    """supervisor.json with liveness checked: for /health and the status page.

    Keys: state (absent, starting, running, stopping, stopped, or dead when the
    file says running but the process is gone), running (bool), ok (running and
    every child that should run is alive), pid, redis_url, stop_reason, and
    children: {name: {state, pid, alive, restarts, last_exit_code, error,
    log_tail, log, ...}}.
    """
    state = rundir.read_state(settings.run_dir)
    if state is None:
        return {"state": "absent", "running": False, "ok": False, "pid": None, "children": {}}
    running = pid_alive(state.get("pid"), state.get("create_time"))
    children = {}
    for name, info in (state.get("children") or {}).items():
        alive = info.get("state") in (RUNNING, STARTING) and pid_alive(
            info.get("pid"), info.get("create_time")
        )
        children[name] = {**info, "alive": running and alive}
    status = state.get("state")
    if not running and status != "stopped":
        status = "dead"
    ok = running and all(c["alive"] or c.get("state") == SKIPPED for c in children.values())
    return {**state, "state": status, "running": running, "ok": ok, "children": children}
