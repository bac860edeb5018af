"""A scriptable SMTP server (aiosmtpd) on loopback, for testing the sending engine.

It answers chosen codes per recipient, drops or hangs connections around the final
".", refuses greetings, throttles, checks AUTH, and records everything it saw. It runs
in its own thread on 127.0.0.1:<free port>, so the test itself and separate worker
processes (over TCP) can use it.

Use it from a test module with

    from tests.smtp_script import smtp_script_fixture  # noqa: F401

    def test_something(smtp_script):
        smtp_script.set_rule("busy@example.com", rcpt=450)          # 450 4.2.1 ... at RCPT
        smtp_script.set_rule("gone@example.com", rcpt=550)          # 550 5.1.1 ...
        smtp_script.set_rule("full@example.com", data=552)          # at the end of DATA
        smtp_script.set_rule("flaky@example.com", data=451, fail_times=2)  # then 250
        smtp_script.set_rule("cut@example.com", drop_before_dot=True)
        smtp_script.set_rule("lost@example.com", drop_after_dot=True)
        smtp_script.set_rule("slow@example.com", hang_after_dot=True)
        smtp_script.configure(max_messages_per_connection=5, delay=0.05)
        ...  # point the sender at smtp_script.host / smtp_script.port
        assert smtp_script.received_by_recipient() == {"ok@example.com": 1}

or `with running_script_server(username="u", password="p") as server: ...` for a
server of its own (several at once are fine).

Rules are keyed by the lowercased address ("*" matches every address without a
rule of its own) and may be changed at any time from any thread. A rule with
`fail_times=N` acts on the first N attempts only (an attempt is a RCPT for a `rcpt`
rule, a DATA for the others), then the address is accepted normally. The end of DATA
has one reply for the whole message, so with several recipients the first one (in
RCPT order) that has an active DATA-stage rule decides it.

"Received" means the server got the whole message: answered 250, or dropped/hung
after the final "." (the recipient may well get it then). Messages refused at the end
of DATA, or cut before the ".", are not received; they show up in `attempts`.

Any 421 reply (greeting, MAIL, RCPT, DATA) closes the connection, like real servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.conftest import free_port
from tests.smtp_fixtures import _HideLoginDataWarning

HOST = "127.0.0.1"

DEFAULT_TEXT = {
    421: "4.7.0 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox busy",
    451: "4.3.0 Temporary local problem, try again later",
    452: "4.3.1 Insufficient system storage",
    454: "4.7.0 Temporary authentication failure",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 No such user",
    551: "5.1.6 User not local",
    552: "5.2.2 Mailbox full",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Message rejected",
}

# Stages of an attempt for one recipient (Attempt.stage).
RCPT = "rcpt"  # answered at RCPT TO (250 or the rule's code)
DATA = "data"  # answered after the final "." (250 or the rule's code)
DROP_BEFORE_DOT = "drop_before_dot"  # connection closed while the body was sent
DROP_AFTER_DOT = "drop_after_dot"  # whole message read, connection closed, no reply
HANG_AFTER_DOT = "hang_after_dot"  # whole message read, never answered

_ALL_MECHANISMS = frozenset({"PLAIN", "LOGIN"})  # what aiosmtpd implements
_MAX_DROP_WAIT = 5.0  # seconds a deliberately dropped handler waits to be cancelled


def reply(code: int, text: str | None = None) -> str:
    """'CODE TEXT' with a sensible enhanced-status text when none is given."""
    if text is None:
        text = DEFAULT_TEXT.get(code, f"{code // 100}.0.0 Scripted reply")
    return f"{code} {text}"


@dataclass
class Rule:
    """What the server does for one recipient address (exactly one behaviour)."""

    rcpt: int | None = None
    data: int | None = None
    text: str | None = None
    drop_before_dot: bool = False
    drop_after_dot: bool = False
    hang_after_dot: bool = False
    fail_times: int | None = None
    fired: int = 0  # attempts this rule acted on so far

    def __post_init__(self) -> None:
        chosen = [
            self.rcpt is not None,
            self.data is not None,
            self.drop_before_dot,
            self.drop_after_dot,
            self.hang_after_dot,
        ]
        if sum(chosen) != 1:
            raise ValueError(
                "a rule needs exactly one of rcpt=, data=, drop_before_dot, "
                "drop_after_dot, hang_after_dot"
            )
        for code in (self.rcpt, self.data):
            if code is not None and not 200 <= code <= 599:
                raise ValueError(f"not an SMTP reply code: {code}")

    @property
    def active(self) -> bool:
        return self.fail_times is None or self.fired < self.fail_times

    @property
    def at_rcpt(self) -> bool:
        return self.rcpt is not None


@dataclass(frozen=True)
class Options:
    """Connection-level behaviour; change at runtime with `configure(**options)`."""

    greeting_code: int | None = None  # e.g. 421: refuse every new connection
    greeting_text: str | None = None
    # After N messages accepted (250) on one connection, the next MAIL FROM gets
    # "421 4.7.0 Too many messages ..." and the connection is closed.
    max_messages_per_connection: int | None = None
    # Server-wide: after N messages received (since start/reset), MAIL FROM gets
    # throttle_code (421 closes the connection), for throttle_times MAIL commands
    # (None: until configured otherwise), then mail is accepted again.
    throttle_after: int | None = None
    throttle_times: int | None = None
    throttle_code: int = 421
    throttle_text: str = "4.7.28 Too many messages, slow down"
    # AUTH: PLAIN and LOGIN are offered on plain text. With a username, MAIL needs a
    # successful AUTH (530 otherwise) and only that username/password is accepted
    # (535 otherwise); without one, any credentials are accepted.
    username: str | None = None
    password: str | None = None
    auth_fail_code: int | None = None  # e.g. 454: every AUTH fails with this code
    # Seconds waited before answering the final "." (a slow server).
    delay: float = 0.0
    # Upper bound of a hang_after_dot (then the connection is closed, no reply).
    hang_seconds: float = 30.0


@dataclass(frozen=True)
class Received:
    """A whole message the server got (see the module docstring)."""

    sender: str
    recipients: tuple[str, ...]  # lowercased
    data: bytes
    monotonic: float
    wall: float
    connection: int
    outcome: str  # "accepted" | DROP_AFTER_DOT | HANG_AFTER_DOT


@dataclass(frozen=True)
class Attempt:
    """One recipient reaching one stage; code is None for drops and hangs."""

    address: str  # lowercased
    stage: str
    code: int | None
    connection: int
    monotonic: float


@dataclass(frozen=True)
class MailCommand:
    """A MAIL FROM and the code it got."""

    sender: str
    code: int
    connection: int
    monotonic: float


def max_in_window(times: Iterable[float], seconds: float = 1.0) -> int:
    """Largest number of times within any half-open window [t, t + seconds)."""
    ordered = sorted(times)
    best = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass(repr=False)
class ScriptServer:
    """State shared by every connection of one server (all access under `lock`)."""

    host: str
    port: int
    start_options: Options
    options: Options = field(init=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    rules: dict[str, Rule] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    mail_commands: list[MailCommand] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)
    connections: int = 0
    greetings_refused: int = 0
    _throttled: int = field(default=0, repr=False)
    _live: set[ScriptSMTP] = field(default_factory=set, repr=False)
    _changed: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.options = self.start_options
        self._changed = threading.Condition(self.lock)

    def __repr__(self) -> str:
        return (
            f"<ScriptServer {self.host}:{self.port} received={len(self.received)} "
            f"attempts={len(self.attempts)} connections={self.connections} "
            f"rules={sorted(self.rules)}>"
        )

    # --- scripting (any thread) ---------------------------------------------------

    def configure(self, **options) -> Options:
        """Change connection-level options (names of `Options`); returns them all."""
        with self.lock:
            self.options = dataclasses.replace(self.options, **options)
            if "throttle_after" in options or "throttle_times" in options:
                self._throttled = 0
            return self.options

    def set_rule(
        self,
        address: str,
        *,
        rcpt: int | None = None,
        data: int | None = None,
        text: str | None = None,
        drop_before_dot: bool = False,
        drop_after_dot: bool = False,
        hang_after_dot: bool = False,
        fail_times: int | None = None,
    ) -> Rule:
        """Script one address (replaces its previous rule). "*" = every address."""
        rule = Rule(rcpt, data, text, drop_before_dot, drop_after_dot, hang_after_dot, fail_times)
        with self.lock:
            self.rules[address.lower()] = rule
        return rule

    def clear_rule(self, address: str) -> None:
        with self.lock:
            self.rules.pop(address.lower(), None)

    def clear_rules(self) -> None:
        with self.lock:
            self.rules.clear()

    def clear_records(self) -> None:
        """Forget what was recorded (messages, attempts, counters); keep the script."""
        with self.lock:
            self.received.clear()
            self.attempts.clear()
            self.mail_commands.clear()
            self.auth_attempts.clear()
            self.connections = self.greetings_refused = self._throttled = 0

    def reset(self) -> None:
        """Records, rules and options back to how the server started."""
        with self.lock:
            self.rules.clear()
            self.options = self.start_options
        self.clear_records()

    # --- reading the records (any thread) -------------------------------------------

    def received_by_recipient(self) -> dict[str, int]:
        """How many received messages each (lowercased) address was a recipient of."""
        with self.lock:
            return dict(Counter(r for m in self.received for r in m.recipients))

    def messages_for(self, address: str) -> list[Received]:
        address = address.lower()
        with self.lock:
            return [m for m in self.received if address in m.recipients]

    def accepted_times(self) -> list[float]:
        """time.monotonic() of each received message (this process's clock), sorted."""
        with self.lock:
            return sorted(m.monotonic for m in self.received)

    def per_second_counts(self) -> dict[int, int]:
        """Messages received in each wall-clock second (int(time.time()) -> count)."""
        with self.lock:
            return dict(sorted(Counter(int(m.wall) for m in self.received).items()))

    def max_in_any_window(self, seconds: float = 1.0) -> int:
        """Most messages received within any sliding window of `seconds`."""
        return max_in_window(self.accepted_times(), seconds)

    def attempts_for(self, address: str) -> list[tuple[str, int | None]]:
        """[(stage, code), ...] for one address, in order."""
        address = address.lower()
        with self.lock:
            return [(a.stage, a.code) for a in self.attempts if a.address == address]

    def mail_refusals(self) -> list[MailCommand]:
        with self.lock:
            return [m for m in self.mail_commands if m.code >= 400]

    @property
    def failed_logins(self) -> int:
        with self.lock:
            return sum(1 for _, ok in self.auth_attempts if not ok)

    def wait_for_received(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` messages were received (AssertionError after
        `timeout` s); returns them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.received)} of {count} messages received after {timeout} s"
                    )
                self._changed.wait(left)
            return list(self.received)

    # --- used by the server thread ------------------------------------------------

    def _rule_for(self, address: str) -> Rule | None:
        rule = self.rules.get(address.lower())
        return rule if rule is not None else self.rules.get("*")

    def _attempt(self, address: str, stage: str, code: int | None, conn: int) -> None:
        self.attempts.append(Attempt(address.lower(), stage, code, conn, time.monotonic()))

    def _claim_data_rule(self, recipients: list[str], *, before_dot: bool) -> Rule | None:
        """The first active DATA-stage rule among the recipients, if it acts now
        (before the dot: only drop_before_dot ones), counted as fired."""
        with self.lock:
            for address in recipients:
                rule = self._rule_for(address)
                if rule is None or rule.at_rcpt or not rule.active:
                    continue
                if rule.drop_before_dot != before_dot:
                    if before_dot:
                        return None  # another DATA rule decides this message
                    continue
                rule.fired += 1
                return rule
            return None

    def _receive(self, envelope: Envelope, conn: int, outcome: str) -> None:
        content = envelope.original_content or b""
        with self._changed:
            self.received.append(
                Received(
                    sender=envelope.mail_from or "",
                    recipients=tuple(r.lower() for r in envelope.rcpt_tos),
                    data=bytes(content),
                    monotonic=time.monotonic(),
                    wall=time.time(),
                    connection=conn,
                    outcome=outcome,
                )
            )
            code = 250 if outcome == "accepted" else None
            stage = DATA if outcome == "accepted" else outcome
            for address in envelope.rcpt_tos:
                self._attempt(address, stage, code, conn)
            self._changed.notify_all()

    # aiosmtpd authenticator
    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        with self.lock:
            opts = self.options
            if opts.auth_fail_code is not None:
                ok, message = False, reply(opts.auth_fail_code)
            else:
                ok = opts.username is None or (login == opts.username and password == opts.password)
                message = None
            self.auth_attempts.append((login, ok))
        return AuthResult(success=ok, handled=False, message=message)

    # aiosmtpd handler hooks (through _Hooks)
    async def _on_mail(self, server, session, envelope, address, mail_options) -> str:
        with self.lock:
            self.mail_commands.append(
                MailCommand(address, 250, server.connection_number, time.monotonic())
            )
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def _on_rcpt(self, server, session, envelope, address, rcpt_options) -> str:
        conn = server.connection_number
        with self.lock:
            rule = self._rule_for(address)
            if rule is not None and rule.at_rcpt and rule.active:
                rule.fired += 1
                self._attempt(address, RCPT, rule.rcpt, conn)
                if rule.rcpt < 400:
                    envelope.rcpt_tos.append(address)
                return reply(rule.rcpt, rule.text)
            self._attempt(address, RCPT, 250, conn)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def _on_data(self, server: ScriptSMTP, session: Session, envelope: Envelope):
        conn = server.connection_number
        rule = self._claim_data_rule(envelope.rcpt_tos, before_dot=False)
        with self.lock:
            delay = self.options.delay
            hang_seconds = self.options.hang_seconds
        if rule is not None and rule.drop_after_dot:
            self._receive(envelope, conn, DROP_AFTER_DOT)
            await server.drop()
        if rule is not None and rule.hang_after_dot:
            self._receive(envelope, conn, HANG_AFTER_DOT)
            # Until the client gives up (its close cancels this handler), or the bound.
            await asyncio.sleep(hang_seconds)
            await server.drop()
        if delay > 0:
            await asyncio.sleep(delay)
        if rule is not None and rule.data is not None and rule.data >= 400:
            with self.lock:
                for address in envelope.rcpt_tos:
                    self._attempt(address, DATA, rule.data, conn)
            return reply(rule.data, rule.text)
        self._receive(envelope, conn, "accepted")
        server.messages_on_connection += 1
        return "250 2.0.0 OK: queued"


class _Hooks:
    """The aiosmtpd handler. Separate from ScriptServer because aiosmtpd takes every
    handler attribute named auth_* for an AUTH mechanism (and handle_* for a hook)."""

    def __init__(self, script: ScriptServer) -> None:
        self.handle_MAIL = script._on_mail
        self.handle_RCPT = script._on_rcpt
        self.handle_DATA = script._on_data


class ScriptSMTP(SMTP):
    """One connection: adds greeting refusal, MAIL checks, drops, 421-closes."""

    def __init__(self, script: ScriptServer, **kwargs) -> None:
        super().__init__(_Hooks(script), authenticator=script._authenticate, **kwargs)
        self.script = script
        self.connection_number = 0
        self.messages_on_connection = 0

    async def push(self, status) -> None:
        await super().push(status)
        head = status[:4] if isinstance(status, str) else status[:4].decode("ascii", "replace")
        if head in ("421 ", "421-") and self.transport is not None:
            self.transport.close()

    async def drop(self) -> None:
        """Close the connection without a reply; this handler is then cancelled."""
        if self.transport is not None:
            self.transport.close()
        await asyncio.sleep(_MAX_DROP_WAIT)

    async def _handle_client(self) -> None:
        script = self.script
        with script.lock:
            script.connections += 1
            self.connection_number = script.connections
            script._live.add(self)
            opts = script.options
            if opts.greeting_code is not None:
                script.greetings_refused += 1
        try:
            if opts.greeting_code is not None:
                await self.push(reply(opts.greeting_code, opts.greeting_text))
                if self.transport is not None:
                    self.transport.close()
                return
            await super()._handle_client()
        finally:
            with script.lock:
                script._live.discard(self)

    async def smtp_MAIL(self, arg: str | None) -> None:
        refusal = self._mail_refusal()
        if refusal is None:
            return await super().smtp_MAIL(arg)
        code, text = refusal
        address, _ = self._getaddr(self._strip_command_keyword("FROM:", arg or "") or "")
        with self.script.lock:
            self.script.mail_commands.append(
                MailCommand(address or "", code, self.connection_number, time.monotonic())
            )
        await self.push(reply(code, text))

    def _mail_refusal(self) -> tuple[int, str | None] | None:
        script = self.script
        with script.lock:
            opts = script.options
            if opts.username is not None and not (self.session and self.session.authenticated):
                return 530, "5.7.0 Authentication required"
            limit = opts.max_messages_per_connection
            if limit is not None and self.messages_on_connection >= limit:
                return 421, "4.7.0 Too many messages on this connection, closing"
            if (
                opts.throttle_after is not None
                and len(script.received) >= opts.throttle_after
                and (opts.throttle_times is None or script._throttled < opts.throttle_times)
            ):
                script._throttled += 1
                return opts.throttle_code, opts.throttle_text
        return None

    async def smtp_DATA(self, arg: str | None) -> None:
        envelope = self.envelope
        if envelope is None or not envelope.rcpt_tos or arg:
            return await super().smtp_DATA(arg)
        rule = self.script._claim_data_rule(envelope.rcpt_tos, before_dot=True)
        if rule is None:
            return await super().smtp_DATA(arg)
        with self.script.lock:
            for address in envelope.rcpt_tos:
                self.script._attempt(address, DROP_BEFORE_DOT, None, self.connection_number)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # Take the first body line (the client is sending), then cut the connection.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader.readuntil(b"\r\n"), _MAX_DROP_WAIT)
        await self.drop()


class ScriptController(Controller):
    def __init__(self, script: ScriptServer, **kwargs) -> None:
        super().__init__(_Hooks(script), **kwargs)
        self.script = script

    def factory(self) -> ScriptSMTP:
        return ScriptSMTP(self.script, **self.SMTP_kwargs)

    def stop(self, no_assert: bool = False) -> None:
        # Close open connections first (hanging ones included), so no task is left
        # pending when the loop closes.
        def close_all() -> None:
            with self.script.lock:
                live = list(self.script._live)
            for proto in live:
                if proto.transport is not None:
                    proto.transport.close()

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(close_all)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                with self.script.lock:
                    if not self.script._live:
                        break
                time.sleep(0.01)
        super().stop(no_assert=no_assert)


@contextlib.contextmanager
def running_script_server(
    *, auth_mechanisms: Iterable[str] = ("PLAIN", "LOGIN"), **options
) -> Iterator[ScriptServer]:
    """A scriptable server on 127.0.0.1:<free port>; `options` are `Options` fields.

    `auth_mechanisms` are the AUTH mechanisms offered (fixed for the server's life).
    """
    logging.getLogger("mail.log").addFilter(_HideLoginDataWarning())
    start_options = Options(**options)
    port = free_port()
    script = ScriptServer(HOST, port, start_options)
    controller = ScriptController(
        script,
        hostname=HOST,
        port=port,
        ready_timeout=5.0,
        server_hostname="smtp-script.test.local",
        auth_require_tls=False,
        auth_exclude_mechanism=_ALL_MECHANISMS - {m.upper() for m in auth_mechanisms},
        timeout=60,
    )
    with script.lock:  # the controller's own start-up probe must not see the script
        script.options = Options()
    controller.start()
    script.reset()  # forget the probe connection; apply the options
    try:
        yield script
    finally:
        controller.stop()


@pytest.fixture(name="smtp_script")
def smtp_script_fixture() -> Iterator[ScriptServer]:
    """A fresh scriptable SMTP server for this test (see the module docstring)."""
    with running_script_server() as server:
        yield server
