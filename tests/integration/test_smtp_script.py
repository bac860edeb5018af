"""Self-tests of the scriptable SMTP server (tests/smtp_script.py), seen from clients:
aiosmtplib (what the sending engine uses), stdlib smtplib, and a separate process."""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import socket
import subprocess
import sys
import textwrap
import time

import aiosmtplib
import pytest

from tests.smtp_script import (
    DATA,
    DROP_AFTER_DOT,
    DROP_BEFORE_DOT,
    HANG_AFTER_DOT,
    RCPT,
    max_in_window,
    running_script_server,
    smtp_script_fixture,  # noqa: F401
)

SENDER = "campaign@sender.test"


def message(to: str, subject: str = "Hello", body_lines: int = 3) -> bytes:
    body = "".join(f"line {i} of the body\r\n" for i in range(body_lines))
    return f"From: {SENDER}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}".encode()


async def connect(server, *, timeout: float = 5.0) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=server.host, port=server.port, timeout=timeout, start_tls=False
    )
    await client.connect()
    return client


async def send_one(server, to: str, **kwargs):
    """One message on a new connection; returns sendmail's result."""
    client = await connect(server, **kwargs)
    try:
        return await client.sendmail(SENDER, [to], message(to))
    finally:
        client.close()


@pytest.fixture
def no_scary_logs(caplog):
    """Fails the test if aiosmtpd or asyncio log a warning, error or traceback."""
    caplog.set_level(logging.INFO)
    yield
    bad = [
        r
        for r in caplog.records
        if r.name in ("mail.log", "asyncio") and (r.levelno >= logging.WARNING or r.exc_info)
    ]
    assert not bad, [r.getMessage() for r in bad]


# --- plain acceptance and records --------------------------------------------------


def test_accepts_and_records_messages_on_one_connection(smtp_script, no_scary_logs):
    async def run():
        client = await connect(smtp_script)
        for to in ("a@x.test", "B@x.test"):
            errors, _ = await client.sendmail(SENDER, [to], message(to, subject=to))
            assert errors == {}
        await client.quit()

    asyncio.run(run())
    assert smtp_script.received_by_recipient() == {"a@x.test": 1, "b@x.test": 1}
    (got,) = smtp_script.messages_for("b@X.test")
    assert got.sender == SENDER
    assert got.recipients == ("b@x.test",)
    assert b"Subject: B@x.test" in got.data and got.data.endswith(b"line 2 of the body\r\n")
    assert got.outcome == "accepted"
    assert {m.connection for m in smtp_script.received} == {1}
    assert smtp_script.connections == 1
    assert smtp_script.attempts_for("a@x.test") == [(RCPT, 250), (DATA, 250)]
    times = smtp_script.accepted_times()
    assert len(times) == 2 and times[0] <= times[1]
    assert abs(got.wall - time.time()) < 5


def test_dot_stuffing_and_8bit_bytes_arrive_unchanged(smtp_script):
    raw = b"Subject: x\r\n\r\n.starts with a dot\r\n\xc3\xa9t\xc3\xa9\r\n"

    async def run():
        client = await connect(smtp_script)
        await client.sendmail(SENDER, ["a@x.test"], raw)
        client.close()

    asyncio.run(run())
    assert smtp_script.messages_for("a@x.test")[0].data == raw


# --- per-recipient rules -----------------------------------------------------------


def test_rcpt_codes_per_recipient(smtp_script, no_scary_logs):
    smtp_script.set_rule("Busy@x.test", rcpt=450)
    smtp_script.set_rule("gone@x.test", rcpt=550)
    smtp_script.set_rule("odd@x.test", rcpt=452, text="4.5.3 Too many recipients")

    async def run():
        client = await connect(smtp_script)
        result = await client.sendmail(
            SENDER,
            ["busy@x.test", "gone@x.test", "ok@x.test", "odd@x.test"],
            message("all"),
        )
        client.close()
        return result

    errors, response = asyncio.run(run())
    assert {addr: (e.code, e.message) for addr, e in errors.items()} == {
        "busy@x.test": (450, "4.2.1 Mailbox busy"),
        "gone@x.test": (550, "5.1.1 No such user"),
        "odd@x.test": (452, "4.5.3 Too many recipients"),
    }
    assert response.startswith("2.0.0")
    assert smtp_script.received_by_recipient() == {"ok@x.test": 1}
    assert smtp_script.attempts_for("gone@x.test") == [(RCPT, 550)]


def test_data_codes_refuse_the_message(smtp_script, no_scary_logs):
    smtp_script.set_rule("full@x.test", data=552)
    smtp_script.set_rule("later@x.test", data=451)

    async def run():
        codes = {}
        for to in ("full@x.test", "later@x.test"):
            with pytest.raises(aiosmtplib.SMTPDataError) as info:
                await send_one(smtp_script, to)
            codes[to] = (info.value.code, info.value.message)
        return codes

    assert asyncio.run(run()) == {
        "full@x.test": (552, "5.2.2 Mailbox full"),
        "later@x.test": (451, "4.3.0 Temporary local problem, try again later"),
    }
    assert smtp_script.received == []
    assert smtp_script.attempts_for("full@x.test") == [(RCPT, 250), (DATA, 552)]


def test_fail_times_then_accepted(smtp_script):
    smtp_script.set_rule("flaky@x.test", rcpt=450, fail_times=2)
    smtp_script.set_rule("tmp@x.test", data=451, fail_times=1)

    async def run():
        seen = []
        for _ in range(3):
            try:
                await send_one(smtp_script, "flaky@x.test")
                seen.append(250)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                seen.append(exc.recipients[0].code)
        with pytest.raises(aiosmtplib.SMTPDataError):
            await send_one(smtp_script, "tmp@x.test")
        await send_one(smtp_script, "tmp@x.test")
        return seen

    assert asyncio.run(run()) == [450, 450, 250]
    assert smtp_script.received_by_recipient() == {"flaky@x.test": 1, "tmp@x.test": 1}
    assert smtp_script.attempts_for("tmp@x.test") == [
        (RCPT, 250), (DATA, 451), (RCPT, 250), (DATA, 250),
    ]  # fmt: skip
    assert smtp_script.rules["flaky@x.test"].fired == 2


def test_rules_change_at_runtime_and_wildcard(smtp_script):
    async def run():
        client = await connect(smtp_script)
        await client.sendmail(SENDER, ["a@x.test"], message("a"))
        smtp_script.set_rule("*", rcpt=550)  # from another thread's point of view too
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await client.sendmail(SENDER, ["a@x.test"], message("a"))
        smtp_script.set_rule("a@x.test", data=250)  # an own rule beats "*"
        await client.sendmail(SENDER, ["a@x.test"], message("a"))
        smtp_script.clear_rules()
        await client.sendmail(SENDER, ["b@x.test"], message("b"))
        client.close()

    asyncio.run(run())
    assert smtp_script.received_by_recipient() == {"a@x.test": 2, "b@x.test": 1}
    assert {m.connection for m in smtp_script.received} == {1}


def test_first_recipient_with_a_data_rule_decides_a_shared_message(smtp_script):
    smtp_script.set_rule("b@x.test", data=451)
    smtp_script.set_rule("c@x.test", data=552)

    async def run():
        client = await connect(smtp_script)
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await client.sendmail(SENDER, ["a@x.test", "c@x.test", "b@x.test"], message("x"))
        client.close()
        return info.value.code

    assert asyncio.run(run()) == 552
    assert smtp_script.attempts_for("a@x.test") == [(RCPT, 250), (DATA, 552)]
    assert smtp_script.rules["b@x.test"].fired == 0


# --- drops and hangs ---------------------------------------------------------------


def test_drop_before_dot_disconnects_and_records_nothing(smtp_script, no_scary_logs):
    smtp_script.set_rule("cut@x.test", drop_before_dot=True, fail_times=1)

    async def run():
        client = await connect(smtp_script)
        big = message("cut@x.test", body_lines=20_000)  # ~400 kB: still being sent
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.sendmail(SENDER, ["cut@x.test"], big)
        assert not client.is_connected
        await send_one(smtp_script, "cut@x.test")  # the rule is spent; server is fine

    asyncio.run(run())
    assert smtp_script.attempts_for("cut@x.test") == [
        (RCPT, 250), (DROP_BEFORE_DOT, None), (RCPT, 250), (DATA, 250),
    ]  # fmt: skip
    assert [m.connection for m in smtp_script.received] == [2]


def test_drop_before_dot_small_body(smtp_script, no_scary_logs):
    smtp_script.set_rule("cut@x.test", drop_before_dot=True)

    async def run():
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await send_one(smtp_script, "cut@x.test")

    asyncio.run(run())
    assert smtp_script.received == []


def test_drop_after_dot_disconnects_but_the_message_was_received(smtp_script, no_scary_logs):
    smtp_script.set_rule("lost@x.test", drop_after_dot=True)

    async def run():
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await send_one(smtp_script, "lost@x.test")

    asyncio.run(run())
    (got,) = smtp_script.messages_for("lost@x.test")
    assert got.outcome == DROP_AFTER_DOT and b"line 2 of the body" in got.data
    assert smtp_script.received_by_recipient() == {"lost@x.test": 1}
    assert smtp_script.attempts_for("lost@x.test") == [(RCPT, 250), (DROP_AFTER_DOT, None)]


def test_hang_after_dot_times_out_with_the_message_received(smtp_script, no_scary_logs):
    smtp_script.set_rule("slow@x.test", hang_after_dot=True)

    async def run():
        client = await connect(smtp_script, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await client.sendmail(SENDER, ["slow@x.test"], message("slow@x.test"))
        return time.monotonic() - started

    waited = asyncio.run(run())
    assert 0.4 < waited < 3
    (got,) = smtp_script.messages_for("slow@x.test")
    assert got.outcome == HANG_AFTER_DOT


def test_hang_is_bounded_and_stop_closes_hanging_connections(no_scary_logs):
    with running_script_server(hang_seconds=0.3) as server:
        server.set_rule("slow@x.test", hang_after_dot=True)
        client = smtplib.SMTP(server.host, server.port, timeout=5)
        with pytest.raises(smtplib.SMTPServerDisconnected):  # closed, still no reply
            client.sendmail(SENDER, ["slow@x.test"], message("slow@x.test"))
        client.close()
        server.configure(hang_seconds=30)
        client = smtplib.SMTP(server.host, server.port, timeout=5)
        client.sock.settimeout(0.3)
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            client.sendmail(SENDER, ["slow@x.test"], message("slow@x.test"))
        client.close()
        idle = smtplib.SMTP(server.host, server.port, timeout=5)
        idle.ehlo()
        # a raw client still waiting for its reply when the server stops
        raw = socket.create_connection((server.host, server.port), timeout=5)
        raw.sendall(
            b"EHLO me\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<slow@x.test>\r\nDATA\r\n"
            b"Subject: s\r\n\r\nbody\r\n.\r\n"
        )
        server.wait_for_received(3)
        started = time.monotonic()
    # leaving the block stops the server without waiting for the hang or the idle client
    assert time.monotonic() - started < 3
    idle.close()
    seen = b""
    for _ in range(100):  # bounded: the server closed the socket, so EOF comes fast
        chunk = raw.recv(65536)
        if not chunk:
            break
        seen += chunk
    raw.close()
    replies = [line[:3] for line in seen.split(b"\r\n") if line]
    assert replies[0] == b"220" and replies[-1] == b"354"  # no reply to the final "."
    assert [m.outcome for m in server.received] == [HANG_AFTER_DOT] * 3


# --- connection-level behaviours ---------------------------------------------------


def test_greeting_421_refuses_connections(smtp_script, no_scary_logs):
    smtp_script.configure(greeting_code=421)

    async def run():
        client = aiosmtplib.SMTP(hostname=smtp_script.host, port=smtp_script.port, timeout=5)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as info:
            await client.connect()
        return info.value.code

    assert asyncio.run(run()) == 421
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP(smtp_script.host, smtp_script.port, timeout=5)
    assert info.value.smtp_code == 421
    assert smtp_script.greetings_refused == 2
    smtp_script.configure(greeting_code=None)
    asyncio.run(send_one(smtp_script, "a@x.test"))
    assert smtp_script.received_by_recipient() == {"a@x.test": 1}


def test_421_at_mail_after_n_messages_on_a_connection(smtp_script, no_scary_logs):
    smtp_script.configure(max_messages_per_connection=2)

    async def run():
        client = await connect(smtp_script)
        for i in range(2):
            await client.sendmail(SENDER, [f"r{i}@x.test"], message("r"))
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            await client.sendmail(SENDER, ["r2@x.test"], message("r"))
        await asyncio.sleep(0.05)
        assert not client.is_connected
        client = await connect(smtp_script)  # a new connection gets 2 more
        await client.sendmail(SENDER, ["r2@x.test"], message("r"))
        client.close()
        return info.value.code, info.value.message

    code, text = asyncio.run(run())
    assert code == 421 and text.startswith("4.7.0")
    assert [m.connection for m in smtp_script.received] == [1, 1, 2]
    assert [(m.code, m.connection) for m in smtp_script.mail_refusals()] == [(421, 1)]


def test_server_wide_throttle_then_recovery(smtp_script):
    smtp_script.configure(throttle_after=1, throttle_times=2)

    async def run():
        codes = []
        for _ in range(4):
            try:
                await send_one(smtp_script, "t@x.test")
                codes.append(250)
            except aiosmtplib.SMTPSenderRefused as exc:
                codes.append(exc.code)
        return codes

    assert asyncio.run(run()) == [250, 421, 421, 250]
    smtp_script.configure(throttle_after=0, throttle_times=None, throttle_code=451)

    async def soft():
        client = await connect(smtp_script)
        for _ in range(2):  # 451 keeps the connection open
            with pytest.raises(aiosmtplib.SMTPSenderRefused):
                await client.sendmail(SENDER, ["t@x.test"], message("t"))
        assert client.is_connected
        client.close()

    asyncio.run(soft())
    assert [m.code for m in smtp_script.mail_refusals()] == [421, 421, 451, 451]


def test_auth_required_wrong_password_is_535_and_counted(no_scary_logs):
    with running_script_server(username="user@x.test", password="right") as server:

        async def run():
            client = await connect(server)
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
                await client.sendmail(SENDER, ["a@x.test"], message("a"))
            assert info.value.code == 530
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                await client.login("user@x.test", "wrong")
            assert info.value.code == 535
            client.close()
            client = await connect(server)
            await client.login("user@x.test", "right")
            await client.sendmail(SENDER, ["a@x.test"], message("a"))
            client.close()

        asyncio.run(run())
        # aiosmtplib's login() tries every offered mechanism: PLAIN, then LOGIN.
        assert server.auth_attempts == [("user@x.test", False)] * 2 + [("user@x.test", True)]
        assert server.failed_logins == 2
        assert server.received_by_recipient() == {"a@x.test": 1}

        # stdlib smtplib with AUTH LOGIN and PLAIN over plain text
        for mechanism in ("LOGIN", "PLAIN"):
            with smtplib.SMTP(server.host, server.port, timeout=5) as client:
                client.user, client.password = "user@x.test", "wrong"
                client.ehlo()
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert server.failed_logins == 4


def test_auth_fail_code_and_open_auth(smtp_script):
    async def login(password: str) -> int:
        client = await connect(smtp_script)
        try:
            return (await client.login("anyone", password)).code
        except aiosmtplib.SMTPAuthenticationError as exc:
            return exc.code
        finally:
            client.close()

    assert asyncio.run(login("whatever")) == 235  # no username configured: any works
    smtp_script.configure(auth_fail_code=454)
    assert asyncio.run(login("whatever")) == 454
    assert smtp_script.auth_attempts == [("anyone", True)] + [("anyone", False)] * 2


def test_offers_exactly_plain_and_login_by_default(smtp_script):
    async def run():
        client = await connect(smtp_script)
        await client.ehlo()
        offered = client.esmtp_extensions["auth"]
        client.close()
        return offered

    assert sorted(asyncio.run(run()).split()) == ["LOGIN", "PLAIN"]


def test_offering_one_mechanism_makes_one_attempt_per_login():
    with running_script_server(username="u", password="p", auth_mechanisms=("LOGIN",)) as server:

        async def run():
            client = await connect(server)
            await client.ehlo()
            assert set(client.supported_auth_methods) == {"login"}
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login("u", "wrong")
            client.close()

        asyncio.run(run())
        assert server.auth_attempts == [("u", False)]


# --- timing and rates --------------------------------------------------------------


def test_max_in_window_counts_a_sliding_window():
    assert max_in_window([]) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5, 3.0]) == 3
    assert max_in_window([0.0, 1.0, 2.0]) == 1
    assert max_in_window([5.0, 0.1, 0.2, 5.1], seconds=0.5) == 2


def test_delay_slows_each_reply_and_rates_are_measured(smtp_script):
    smtp_script.configure(delay=0.15)

    async def run():
        client = await connect(smtp_script)
        for i in range(3):
            await client.sendmail(SENDER, [f"s{i}@x.test"], message("s"))
        client.close()
        # concurrent connections are delayed in parallel, not one after another
        started = time.monotonic()
        await asyncio.gather(*(send_one(smtp_script, f"c{i}@x.test") for i in range(6)))
        return time.monotonic() - started

    parallel = asyncio.run(run())
    assert parallel < 0.9
    times = smtp_script.accepted_times()
    gaps = [b - a for a, b in zip(times[:2], times[1:3], strict=True)]
    assert all(g >= 0.14 for g in gaps), gaps
    assert smtp_script.max_in_any_window(0.1) == 6  # the concurrent burst
    assert smtp_script.max_in_any_window(1.0) >= 6
    assert sum(smtp_script.per_second_counts().values()) == 9


def test_reset_forgets_records_rules_and_options():
    with running_script_server(max_messages_per_connection=1) as server:
        server.set_rule("a@x.test", rcpt=550)
        server.configure(delay=0.5)
        asyncio.run(send_one(server, "b@x.test"))
        server.reset()
        assert server.received == [] and server.attempts == [] and server.connections == 0
        assert server.rules == {}
        assert server.options.delay == 0 and server.options.max_messages_per_connection == 1
        asyncio.run(send_one(server, "a@x.test"))
        assert server.received_by_recipient() == {"a@x.test": 1}


# --- other processes ---------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import json, smtplib, sys
    port = int(sys.argv[1])
    out = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        for to in ("w1@x.test", "w2@x.test", "gone@x.test"):
            try:
                client.sendmail("worker@sender.test", [to], f"Subject: {to}\\r\\n\\r\\nhi\\r\\n")
                out[to] = 250
            except smtplib.SMTPRecipientsRefused as exc:
                out[to] = exc.recipients[to][0]
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.sendmail("worker@sender.test", ["cut@x.test"], "Subject: c\\r\\n\\r\\nx\\r\\n")
        out["cut@x.test"] = 250
    except smtplib.SMTPServerDisconnected:
        out["cut@x.test"] = "disconnected"
    print(json.dumps(out))
    """
)


def test_usable_from_other_processes(smtp_script, no_scary_logs):
    smtp_script.set_rule("gone@x.test", rcpt=550)
    smtp_script.set_rule("cut@x.test", drop_before_dot=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(smtp_script.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err.decode()
        outputs.append(json.loads(out))
    expected = {"w1@x.test": 250, "w2@x.test": 250, "gone@x.test": 550}
    assert outputs == [{**expected, "cut@x.test": "disconnected"}] * 2
    received = smtp_script.wait_for_received(4, timeout=5)
    assert smtp_script.received_by_recipient() == {"w1@x.test": 2, "w2@x.test": 2}
    assert {m.sender for m in received} == {"worker@sender.test"}
    assert len({m.connection for m in received}) == 2
    assert smtp_script.connections == 4
