"""The supervisor's restart policy, ordering and process-tree handling, in process.

Children here are small shell/python commands, not Redis or RQ (see
tests/integration/test_supervisor.py for those).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import psutil
import pytest

from mailer_app.runtime import rundir
from mailer_app.runtime.children import (
    BACKOFF,
    FAILED,
    RUNNING,
    SKIPPED,
    STOPPED,
    WAITING,
    ChildSpec,
    default_specs,
    lab_spec,
)
from mailer_app.runtime.supervisor import RestartPolicy, Supervisor
from mailer_app.settings import Settings

FAST = RestartPolicy(base_delay=0.05, max_delay=0.1, stable_after=10, max_quick_crashes=3)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, step=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        value = predicate()
        if value:
            return value
        time.sleep(0.03)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, environment="dev", lab_enabled=False, redis_url=None)


@pytest.fixture
def make(settings):
    made: list[Supervisor] = []

    def build(*specs: ChildSpec, **kwargs) -> Supervisor:
        sup = Supervisor(
            settings, specs=list(specs), policy=FAST, dedicated_process=False, **kwargs
        )
        made.append(sup)
        return sup

    yield build
    for sup in made:
        sup.shutdown()


def py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def child(sup: Supervisor, name: str):
    return next(c for c in sup.children if c.name == name)


def test_backoff_doubles_up_to_the_cap():
    policy = RestartPolicy(base_delay=0.5, max_delay=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]


def test_a_child_that_keeps_crashing_is_given_up_with_its_log_tail(make, settings):
    sup = make(
        ChildSpec("crasher", py("print('boom: no config', flush=True); raise SystemExit(3)"))
    )
    sup.start()
    crasher = child(sup, "crasher")
    wait_until(lambda: crasher.state == FAILED, 10, "give-up", step=sup.step)

    assert crasher.restarts == FAST.max_quick_crashes - 1
    saved = rundir.read_state(settings.run_dir)["children"]["crasher"]
    assert saved["state"] == FAILED
    assert saved["last_exit_code"] == 3
    assert "exited with code 3 3 times" in saved["error"]
    assert "boom: no config" in "\n".join(saved["log_tail"])


def test_a_long_run_resets_the_crash_count(make):
    sup = make(ChildSpec("crasher", py("raise SystemExit(1)")))
    sup.policy = RestartPolicy(base_delay=0.05, stable_after=0.0, max_quick_crashes=2)
    sup.start()
    crasher = child(sup, "crasher")
    wait_until(lambda: crasher.restarts >= 4, 10, "several restarts", step=sup.step)
    assert crasher.state != FAILED, "crashes after a stable run are not counted together"


def test_dependents_wait_for_readiness_and_for_a_failed_dependency_forever(make):
    ready = {"now": False}
    sup = make(
        ChildSpec("base", py("import time; time.sleep(30)"), ready=lambda: ready["now"]),
        ChildSpec("user", py("import time; time.sleep(30)"), needs=("base",)),
        ChildSpec("broken", (), failure="cannot run here"),
        ChildSpec("orphan", py("import time; time.sleep(30)"), needs=("broken",)),
    )
    sup.start()
    for _ in range(3):
        sup.step()
    assert child(sup, "user").state == WAITING
    assert sup.state != RUNNING

    ready["now"] = True
    sup.step()
    sup.step()
    assert child(sup, "base").state == RUNNING
    assert child(sup, "user").state == RUNNING
    assert child(sup, "broken").state == FAILED
    assert child(sup, "orphan").state == WAITING
    assert sup.state == RUNNING, "nothing left that could still come up"


def test_a_child_that_never_gets_ready_counts_as_a_crash(make):
    sup = make(ChildSpec("slow", py("import time; time.sleep(30)"), ready=lambda: False,
                         ready_timeout=0.2))  # fmt: skip
    sup.start()
    slow = child(sup, "slow")
    pid = slow.proc.pid
    wait_until(lambda: slow.state == BACKOFF, 5, "the timeout", step=sup.step)
    assert "not ready in time" in slow.error
    assert gone(pid)


def test_shutdown_stops_children_and_their_children(make, settings):
    sup = make(ChildSpec("parent", ("sh", "-c", "sleep 30 & sleep 30 & wait")))
    sup.start()
    parent = child(sup, "parent")
    wait_until(lambda: len(parent.tree) == 2, 5, "the grandchildren", step=sup.step)
    pids = [parent.proc.pid] + [p.pid for p in parent.tree]

    sup.shutdown()

    assert all(gone(pid) for pid in pids)
    assert parent.state == STOPPED
    assert rundir.read_state(settings.run_dir)["state"] == STOPPED


def test_a_crashed_childs_leftover_children_are_stopped(make):
    # The shell exits after 0.5 s, leaving its `sleep 30` behind (as a dead RQ worker
    # would leave its work horse).
    sup = make(ChildSpec("leaky", ("sh", "-c", "sleep 30 & sleep 0.5; exit 1")))
    sup.start()
    leaky = child(sup, "leaky")

    def left_behind():
        return [p.pid for p in leaky.tree if p.cmdline() == ["sleep", "30"]]

    [grandchild] = wait_until(left_behind, 5, "the grandchild", step=sup.step)
    wait_until(lambda: leaky.state == BACKOFF, 5, "the crash", step=sup.step)
    assert gone(grandchild)


def test_children_stop_in_reverse_dependency_order(make, tmp_path):
    # Each child records when SIGTERM arrived; Redis-like "base" must be last.
    record = tmp_path / "order"
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(record)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(30)\n"
    )
    sup = make(
        ChildSpec("base", (sys.executable, "-c", code, "base")),
        ChildSpec("user", (sys.executable, "-c", code, "user"), needs=("base",)),
    )
    sup.start()
    wait_until(lambda: child(sup, "user").state == RUNNING, 5, "both up", step=sup.step)
    time.sleep(0.5)  # let both install their handler
    sup.shutdown()
    assert record.read_text().split() == ["user", "base"]


def test_a_missing_watched_process_stops_the_supervisor_at_once(settings):
    proc = psutil.Popen(["true"])
    proc.wait()
    sup = Supervisor(settings, watch_pid=proc.pid, specs=[], dedicated_process=False)
    assert sup.stop_reason == f"watched process {proc.pid} does not exist"


def test_lab_is_skipped_when_disabled_or_not_built(settings):
    assert lab_spec(settings).skip_reason == "disabled by MAILER_LAB=0"
    enabled = settings.model_copy(update={"lab_enabled": True})
    assert "--no-lab" in lab_spec(enabled, None).skip_reason
    missing = lab_spec(enabled, module="mailer_app.no_such_lab")
    assert missing.skip_reason and "mailer_app.no_such_lab" in missing.skip_reason
    custom = lab_spec(enabled, ["python", "-m", "somewhere"])
    assert custom.argv == ("python", "-m", "somewhere") and custom.skip_reason is None


def test_default_children_and_their_order(settings):
    specs = default_specs(settings)
    assert [s.name for s in specs] == ["redis", "lab", "worker", "placement-worker", "scheduler"]
    redis = specs[0]
    assert redis.argv[redis.argv.index("--unixsocket") + 1] == str(settings.run_dir / "redis.sock")
    assert redis.argv[redis.argv.index("--appendonly") + 1] == "yes"
    assert redis.argv[redis.argv.index("--port") + 1] == "0"
    assert all(s.needs == ("redis",) for s in specs[2:])
    # Checks run on a non-forking worker that keeps seed mailboxes logged in.
    assert specs[3].argv[-2:] == ("placement", "--simple")
    assert "placement" not in specs[2].argv
    assert specs[1].skip_reason  # lab disabled in these settings

    external = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6399/1"})
    specs = default_specs(external)
    assert [s.name for s in specs] == ["lab", "worker", "placement-worker", "scheduler"]
    assert all(not s.needs for s in specs)


def test_too_long_socket_path_is_a_clear_failure(tmp_path):
    deep = tmp_path / ("x" * 120)
    specs = default_specs(Settings(data_dir=deep, environment="dev", redis_url=None))
    assert "longer than 107 bytes" in specs[0].failure


def test_skipped_and_failed_children_are_recorded(make, settings):
    sup = make(ChildSpec("lab", (), skip_reason="off"), ChildSpec("x", (), failure="no binary"))
    sup.start()
    saved = rundir.read_state(settings.run_dir)["children"]
    assert (saved["lab"]["state"], saved["lab"]["error"]) == (SKIPPED, "off")
    assert (saved["x"]["state"], saved["x"]["error"]) == (FAILED, "no binary")


def test_an_embedded_supervisor_leaves_its_hosts_other_children_alone(make):
    unrelated = psutil.Popen(["sleep", "30"])
    try:
        sup = make(ChildSpec("one", py("import time; time.sleep(30)")))
        sup.start()
        sup.shutdown()
        assert unrelated.is_running() and unrelated.status() != psutil.STATUS_ZOMBIE
    finally:
        unrelated.kill()
        unrelated.wait(timeout=5)
