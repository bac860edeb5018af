"""The development supervisor: Redis, the mail lab, a worker and the scheduler.

`python -m mailer_app.runtime.supervisor --watch-pid PID` runs them next to
`reflex run` and stops them all when PID exits, on SIGTERM/SIGINT, or (through
PDEATHSIG) when the supervisor itself is killed. One supervisor per data folder
(flock on run_dir/supervisor.lock); its state is in run_dir/supervisor.json.

The web app calls `ensure_supervisor(settings, find_watch_pid())` at start-up and
`supervisor_status(settings)` from /health (both re-exported here).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil

from mailer_app.runtime import processes, rundir
from mailer_app.runtime.children import (
    BACKOFF,
    DEFAULT,
    FAILED,
    RUNNING,
    SKIPPED,
    STARTING,
    STOPPED,
    WAITING,
    ChildSpec,
    child_env,
    default_specs,
)
from mailer_app.runtime.launcher import ensure_supervisor, find_watch_pid, supervisor_status
from mailer_app.runtime.logsetup import setup_process_logging
from mailer_app.settings import PROJECT_ROOT, ConfigurationError, Settings, get_settings

__all__ = ["RestartPolicy", "Supervisor", "ensure_supervisor", "find_watch_pid", "main",
           "supervisor_status"]  # fmt: skip

log = logging.getLogger("mailer_app.supervisor")

POLL_INTERVAL = 0.5  # how often the watched pid and the children are checked
STARTUP_POLL_INTERVAL = 0.1  # while a child is starting (Redis readiness)
STOP_TIMEOUT = 10.0  # SIGTERM to SIGKILL; a worker finishes its current job meanwhile


@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed child after base, 2*base, 4*base ... (capped) seconds.

    A run shorter than `stable_after` is a quick crash; after `max_quick_crashes`
    in a row the child is given up (state failed, with its log tail), since
    restarting a process that cannot start only fills its log.
    """

    base_delay: float = 0.5
    max_delay: float = 30.0
    stable_after: float = 30.0
    max_quick_crashes: int = 5

    def delay(self, quick_crashes: int) -> float:
        return min(self.base_delay * 2 ** max(quick_crashes - 1, 0), self.max_delay)


@dataclass
class Child:
    """A supervised process and what the supervisor knows about it."""

    spec: ChildSpec
    log_file: os.PathLike
    state: str = WAITING
    proc: subprocess.Popen | None = None
    create_time: float | None = None
    started_at: float = 0.0  # monotonic
    started_wall: float | None = None
    next_start: float = 0.0
    restarts: int = 0
    quick_crashes: int = 0
    last_exit_code: int | None = None
    error: str | None = None
    log_tail: list[str] | None = None
    # Last seen descendants: killed too if the child dies and leaves them behind.
    tree: list[psutil.Process] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def to_json(self) -> dict:
        return {
            "state": self.state,
            "pid": self.proc.pid if self.proc else None,
            "create_time": self.create_time if self.proc else None,
            "argv": list(self.spec.argv),
            "log": str(self.log_file),
            "started_at": _iso(self.started_wall),
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "error": self.error,
            "log_tail": self.log_tail,
        }


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Supervisor:
    """Starts the children in order, restarts crashed ones, stops them all at the end.

    Drive it with `run()` (start, loop until asked to stop or the watched process
    is gone, shut down), or with `start()`, `step()` and `shutdown()` in tests.
    Must run in the main thread (PDEATHSIG is tied to the forking thread).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        watch_pid: int | None = None,
        specs: Sequence[ChildSpec] | None = None,
        lab_command: Sequence[str] | str | None = DEFAULT,
        policy: RestartPolicy = RestartPolicy(),
        stop_timeout: float = STOP_TIMEOUT,
        poll_interval: float = POLL_INTERVAL,
        dedicated_process: bool = True,
    ):
        if not settings.data_dir.is_absolute():
            # Children run elsewhere (cwd = project root, Redis chdirs to its data
            # folder): every path handed to them must be absolute.
            settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        self.settings = settings
        self.run_dir = rundir.ensure_run_dir(settings.run_dir)
        self.redis_url = settings.resolved_redis_url()
        self.env = child_env(settings, self.redis_url)
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        # True when this process exists only to supervise (python -m ...): it then
        # adopts orphans and, at the end, stops every descendant it has. False
        # when embedded (tests in pytest), where other children are not ours.
        self.dedicated_process = dedicated_process
        self.watch_pid = watch_pid
        self.state = STARTING
        self.stop_reason: str | None = None
        self.started_wall = time.time()
        self.children = [
            Child(spec, rundir.log_path(self.run_dir, spec.name))
            for spec in (specs if specs is not None else default_specs(settings, lab_command))
        ]
        for child in self.children:
            if child.spec.skip_reason:
                child.state, child.error = SKIPPED, child.spec.skip_reason
            elif child.spec.failure:
                child.state, child.error = FAILED, child.spec.failure
        self._watch: psutil.Process | None = None
        if watch_pid:
            try:
                self._watch = psutil.Process(watch_pid)
            except psutil.Error:
                self.request_stop(f"watched process {watch_pid} does not exist")

    # --- control ----------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self.request_stop(f"received {signal.Signals(signum).name}")

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, handler)

    def run(self) -> None:
        """Start the children, supervise until told to stop, then stop everything."""
        try:
            self.start()
            while self.stop_reason is None:
                if not self._watched_alive():
                    self.request_stop(f"watched process {self.watch_pid} exited")
                    break
                self.step()
                busy = any(c.state == STARTING for c in self.children)
                time.sleep(STARTUP_POLL_INTERVAL if busy else self.poll_interval)
        finally:
            self.shutdown()

    def start(self) -> None:
        if self.dedicated_process and not processes.set_child_subreaper():
            log.info("no child subreaper here: orphans of a crashed child go to init")
        self._kill_previous_children()
        for child in self.children:
            if child.state == FAILED:
                log.error("%s cannot run: %s", child.name, child.error)
            elif child.state == SKIPPED:
                log.info("%s not started: %s", child.name, child.error)
        log.info(
            "supervising %s for data folder %s (watching pid %s)",
            ", ".join(c.name for c in self.children if c.state == WAITING),
            self.settings.data_dir,
            self.watch_pid,
        )
        self.step()

    def step(self) -> None:
        """One round: notice exits, readiness and due (re)starts; save the state."""
        now = time.monotonic()
        changed = False
        for child in self.children:
            changed |= self._check(child, now)
        if self.dedicated_process:
            processes.reap_adopted(known=[c.proc.pid for c in self.children if c.proc])
        if self.state == STARTING and not any(self._pending(c) for c in self.children):
            self.state = RUNNING
            changed = True
            log.info("all children started: %s", self._summary())
        if changed:
            self.save()

    def shutdown(self) -> None:
        """Stop every child and everything below it: dependents first, Redis last."""
        if self.state == STOPPED:
            return
        log.info("stopping (%s)", self.stop_reason or "shutdown")
        self.state = "stopping"
        self.save()
        needed = {name for c in self.children for name in c.spec.needs}
        for group in (
            [c for c in self.children if c.name not in needed],
            [c for c in self.children if c.name in needed],
        ):
            processes.stop_popens([c.proc for c in group if c.proc], self.stop_timeout)
            for child in group:
                if child.proc is not None:
                    child.last_exit_code = child.proc.returncode
                    child.proc = None
                if child.state not in (SKIPPED, FAILED):
                    child.state = STOPPED
            processes.terminate([p for c in group for p in c.tree], timeout=2.0)
        if self.dedicated_process:
            # Anything still below us (orphans adopted as subreaper) goes too.
            processes.terminate(processes.descendants(os.getpid()), timeout=2.0)
            processes.reap_adopted(known=())
        self.state = STOPPED
        self.save()
        log.info("stopped")

    # --- children ---------------------------------------------------------------

    def _check(self, child: Child, now: float) -> bool:
        """Advance one child's state; True when something changed."""
        if child.state in (STARTING, RUNNING):
            code = child.proc.poll()
            if code is not None:
                self._on_exit(child, code, now)
                return True
            child.tree = processes.descendants(child.proc.pid) or child.tree
            if child.state == RUNNING:
                return False
            if child.spec.ready is None or child.spec.ready():
                child.state = RUNNING
                log.info("%s is ready (pid %s)", child.name, child.proc.pid)
                return True
            if now - child.started_at > child.spec.ready_timeout:
                log.error("%s not ready after %.0f s", child.name, child.spec.ready_timeout)
                processes.stop_popens([child.proc], timeout=5.0)
                self._on_exit(child, child.proc.returncode, now, reason="was not ready in time")
                return True
            return False
        if (
            child.state in (WAITING, BACKOFF)
            and now >= child.next_start
            and self._deps_ready(child)
        ):
            self._start(child, now)
            return True
        return False

    def _start(self, child: Child, now: float) -> None:
        for folder in child.spec.makedirs:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in child.spec.remove_before_start:
            stale.unlink(missing_ok=True)
        rundir.rotate_log(child.log_file)
        restarting = child.last_exit_code is not None or child.started_wall is not None
        try:
            popen = processes.spawn(
                child.spec.argv, log_file=child.log_file, env=self.env, cwd=PROJECT_ROOT
            )
        except OSError as exc:
            child.state, child.error = FAILED, f"could not start {child.spec.argv[0]}: {exc}"
            log.error("%s: %s", child.name, child.error)
            return
        child.proc = popen
        child.create_time = processes.process_identity(popen.pid)
        child.started_at, child.started_wall = now, time.time()
        child.state = STARTING
        child.tree = []
        if restarting:
            child.restarts += 1
        log.info("%s %s (pid %s)", "restarted" if restarting else "started", child.name, popen.pid)

    def _on_exit(self, child: Child, code: int | None, now: float, reason: str = "") -> None:
        ran = now - child.started_at
        child.last_exit_code = code
        child.proc = None
        # A crashed child's own children (an RQ work horse, rq's scheduler fork) would
        # keep running without it: the restart must start from a clean slate.
        processes.terminate(child.tree, timeout=2.0)
        child.tree = []
        what = reason or _describe_exit(code)
        if ran >= self.policy.stable_after:
            child.quick_crashes = 0
        child.quick_crashes += 1
        if child.quick_crashes >= self.policy.max_quick_crashes:
            child.state = FAILED
            child.error = (
                f"{what} {child.quick_crashes} times within {self.policy.stable_after:.0f} s "
                f"of starting; gave up (see {child.log_file})"
            )
            child.log_tail = rundir.tail(child.log_file)
            log.error("%s %s; last log lines:\n%s", child.name, child.error,
                      "\n".join(child.log_tail))  # fmt: skip
            return
        delay = self.policy.delay(child.quick_crashes)
        child.state, child.next_start = BACKOFF, now + delay
        child.error = f"{what} after {ran:.1f} s"
        log.warning("%s %s after %.1f s; restarting in %.1f s", child.name, what, ran, delay)

    def _deps_ready(self, child: Child) -> bool:
        return all(c.state == RUNNING for c in self.children if c.name in child.spec.needs)

    def _pending(self, child: Child) -> bool:
        """Still on its way up (not waiting on a child that has failed)."""
        if child.state == STARTING:
            return True
        if child.state == WAITING:
            return not any(c.state == FAILED for c in self.children if c.name in child.spec.needs)
        return False

    def _watched_alive(self) -> bool:
        if self._watch is None:
            return True
        try:
            # is_running() also compares the create time, so a reused pid is "gone".
            return self._watch.is_running() and self._watch.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _kill_previous_children(self) -> None:
        """Stop children a previous supervisor of this folder left running.

        PDEATHSIG normally takes them down with it; this is the fallback, and it
        matters for Redis: two servers on one AOF file would corrupt it.
        """
        previous = rundir.read_state(self.run_dir) or {}
        for name, info in (previous.get("children") or {}).items():
            pid, created = info.get("pid"), info.get("create_time")
            if created is None or not processes.pid_alive(pid, created):
                continue
            log.warning("stopping %s (pid %s) left over by a previous supervisor", name, pid)
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                processes.terminate([proc, *proc.children(recursive=True)], self.stop_timeout)

    # --- state file -------------------------------------------------------------

    def _summary(self) -> str:
        return ", ".join(f"{c.name}={c.state}" for c in self.children)

    def snapshot(self) -> dict:
        me = psutil.Process()
        return {
            "pid": me.pid,
            "create_time": me.create_time(),
            "state": self.state,
            "stop_reason": self.stop_reason,
            "watch_pid": self.watch_pid,
            "data_dir": str(self.settings.data_dir),
            "redis_url": self.redis_url,
            "started_at": _iso(self.started_wall),
            "updated_at": _iso(time.time()),
            "children": {c.name: c.to_json() for c in self.children},
        }

    def save(self) -> None:
        rundir.write_state(self.run_dir, self.snapshot())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mailer_app.runtime.supervisor",
        description="Run Redis, the mail lab, a worker and the scheduler for development.",
    )
    parser.add_argument(
        "--watch-pid", type=int, help="stop everything when this process exits (default: never)"
    )
    lab = parser.add_mutually_exclusive_group()
    lab.add_argument("--no-lab", action="store_true", help="do not start the mail lab")
    lab.add_argument(
        "--lab-command", help="command line for the lab (default: python -m mailer_app.lab)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_process_logging("supervisor")
    settings = get_settings()
    lock_fd = rundir.acquire_lock(settings.run_dir, wait=2.0)
    if lock_fd is None:
        log.info("a supervisor already runs for %s; nothing to do", settings.data_dir)
        return 0
    lab_command = (
        None if args.no_lab else (shlex.split(args.lab_command) if args.lab_command else DEFAULT)
    )
    try:
        supervisor = Supervisor(settings, watch_pid=args.watch_pid, lab_command=lab_command)
    except ConfigurationError as exc:
        log.error("%s", exc)
        return 2
    supervisor.install_signal_handlers()
    supervisor.run()
    os.close(lock_fd)  # only now may another supervisor take over the folder
    return 0


if __name__ == "__main__":
    sys.exit(main())
