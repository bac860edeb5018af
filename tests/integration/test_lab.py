"""The mail lab end to end: real SMTP into the intake, real IMAP out of Dovecot.

Every message is sent over SMTP on loopback and looked for over IMAP with the
mailbox's password, in every folder, so "lands in X" also means "nowhere else".
"""

from __future__ import annotations

import asyncio
import base64
import imaplib
import os
import pwd
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiosmtplib
import psutil
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailer_app.lab import (
    Lab,
    LabError,
    ensure_lab_account,
    lab_status,
    list_lab_accounts,
    remove_lab_account,
)
from mailer_app.lab import dovecot as dovecot_module
from mailer_app.lab import runner as runner_module
from mailer_app.lab.accounts import account_file, users_dir
from mailer_app.lab.dovecot import DovecotServer
from mailer_app.lab.maildir import deliver, ensure_folders, maildir_path
from tests.conftest import ROOT, free_port, wait_for_port
from tests.lab_fixtures import LabMailbox, require_dovecot

pytestmark = pytest.mark.slow

DKIM = "v=1; a=rsa-sha256; d=sender.lab; s=lab; h=from:subject; bh=x=; b=y="


def token() -> str:
    return f"tok-{secrets.token_hex(5)}"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# --- every outcome lands in exactly the folder the filter chose -------------------

OUTCOMES = [
    # (domain, what to send, expected folder)
    ("gmail.lab", {"subject": "Hello {t}"}, "INBOX"),
    ("gmail.lab", {"subject": "Hello {t} [lab:spam]"}, "[Gmail]/Spam"),
    ("gmail.lab", {"subject": "You have won {t}", "body": "casino lottery jackpot"},
     "[Gmail]/Spam"),
    ("gmail.lab", {"subject": "Big sale {t}", "headers": {"List-Unsubscribe": "<mailto:u@s.lab>"}},
     "Promotions"),
    ("gmail.lab", {"subject": "Hi {t}", "headers": {"X-Lab-Placement": "promotions"}},
     "Promotions"),
    ("outlook.lab", {"subject": "Hello {t}", "headers": {"DKIM-Signature": DKIM}}, "INBOX"),
    ("outlook.lab", {"subject": "Hello {t}", "body": "click here"}, "Junk Email"),
    ("outlook.lab", {"subject": "Hello {t}", "headers": {"X-Lab-Placement": "spam"}},
     "Junk Email"),
    ("yahoo.lab", {"subject": "Hello {t}"}, "INBOX"),
    ("yahoo.lab", {"subject": "Hello {t}", "message_id": False}, "Bulk"),
    ("yahoo.lab", {"subject": "Sale {t}", "headers": {"List-Unsubscribe": "<mailto:u@s.lab>"}},
     "INBOX"),
    ("legacy.lab", {"subject": "Hello {t}"}, "INBOX"),
    ("legacy.lab", {"subject": "Hello {t} [lab:spam]"}, "Spam"),
]  # fmt: skip


@pytest.mark.parametrize(("domain", "kind", "folder"), OUTCOMES)
def test_message_lands_in_the_folder_the_filter_chose(mail_lab, domain, kind, folder):
    seed = mail_lab.add_account(domain)
    t = token()
    kind = {**kind, "subject": kind["subject"].format(t=t)}
    assert mail_lab.send(seed.email, **kind) == {}
    assert mail_lab.folders_with(seed, t) == [folder]


def test_dropped_mail_is_never_stored_anywhere(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    t = token()
    refused = mail_lab.send(
        seed.email, "stranger@example.com", subject=f"Bye {t}",
        headers={"X-Lab-Placement": "drop"},
    )  # fmt: skip
    assert refused == {}  # accepted, like a provider that silently discards
    assert mail_lab.folders_with(seed, t) == []
    assert mail_lab.folders_with(mail_lab.catchall, t) == []
    assert not list(mail_lab.lab_dir.rglob(f"*{t}*"))


def test_one_transaction_to_many_providers_files_each_copy(mail_lab):
    seeds = [mail_lab.add_account(d) for d in ("gmail.lab", "outlook.lab", "yahoo.lab")]
    t = token()
    # No DKIM-Signature and one spam phrase: junk only at outlook.lab.
    assert mail_lab.send(*(s.email for s in seeds), subject=f"Act now {t}") == {}
    assert [mail_lab.folders_with(s, t) for s in seeds] == [["INBOX"], ["Junk Email"], ["INBOX"]]


def test_non_seed_recipients_land_in_the_catchall(mail_lab):
    t = token()
    mail_lab.send("someone@example.com", "nobody-here@gmail.lab", subject=f"Lost {t} [lab:spam]")
    assert mail_lab.folders_with(mail_lab.catchall, t) == ["INBOX"]
    with mail_lab.imap(mail_lab.catchall) as client:
        client.select_folder("INBOX", readonly=True)
        ids = client.search(["SUBJECT", t])
        headers = [
            data[b"BODY[HEADER]"].decode()
            for data in client.fetch(ids, ["BODY.PEEK[HEADER]"]).values()
        ]
    originals = sorted(h.split("X-Original-To: ")[1].split("\r\n")[0] for h in headers)
    assert originals == ["nobody-here@gmail.lab", "someone@example.com"]
    assert all("X-Lab-Filter: spam;" in h for h in headers)  # what the provider would do


def test_stored_copy_carries_the_lab_trace_headers(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    t = token()
    mail_lab.send(seed.email, subject=f"Signed {t}", headers={"DKIM-Signature": DKIM})
    headers = mail_lab.fetch_headers(seed, "INBOX", t).replace("\r\n\t", " ")
    assert (
        "Authentication-Results: lab.gmail; spf=pass smtp.client-ip=127.0.0.1; "
        "dkim=pass header.d=sender.lab; dmarc=pass header.from=sender.lab"
    ) in headers
    assert "X-Lab-Filter: inbox; esp=gmail.lab; folder=INBOX;" in headers
    assert f"Delivered-To: {seed.email}\r\n" in headers
    assert "Received: from " in headers and "by lab.gmail (mailer_app lab)" in headers
    assert headers.index("Delivered-To") < headers.index("Subject")  # prepended


def test_unsigned_copy_says_dkim_none(mail_lab):
    seed = mail_lab.add_account("yahoo.lab")
    t = token()
    mail_lab.send(seed.email, subject=f"Unsigned {t}")
    headers = mail_lab.fetch_headers(seed, "INBOX", t).replace("\r\n\t", " ")
    assert "Authentication-Results: lab.yahoo; spf=pass" in headers
    assert "dkim=none; dmarc=none header.from=sender.lab" in headers


def test_large_messages_are_accepted(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    t = token()
    # Built by hand: the email package alone would take a second or more for this.
    attachment = base64.encodebytes(os.urandom(6 * 1024 * 1024)).replace(b"\n", b"\r\n")
    raw = (
        (
            f"From: news@sender.lab\r\nTo: {seed.email}\r\nSubject: Big {t}\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
            "--b0\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            "--b0\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        ).encode()
        + attachment
        + b"--b0--\r\n"
    )
    with smtplib.SMTP("127.0.0.1", mail_lab.smtp_port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == str(50 * 1024 * 1024)
        assert smtp.sendmail("news@sender.lab", [seed.email], raw) == {}
    with mail_lab.imap(seed) as client:
        client.select_folder("INBOX", readonly=True)
        ids = client.search(["SUBJECT", t])
        size = client.fetch(ids, ["RFC822.SIZE"])[ids[0]][b"RFC822.SIZE"]
    assert size > len(raw)  # the stored copy is the message plus the lab's headers


def test_aiosmtplib_with_login_works_like_a_sender_account(mail_lab):
    seed = mail_lab.add_account("outlook.lab")
    t = token()
    msg = mail_lab.message(seed.email, subject=f"Async {t}", headers={"DKIM-Signature": DKIM})

    async def send() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=mail_lab.smtp_port, timeout=10)
        async with client:
            await client.login("any-user", "any-password")  # the lab accepts any login
            errors, reply = await client.send_message(msg)
            assert errors == {} and "OK: queued as" in reply

    asyncio.run(send())
    assert mail_lab.folders_with(seed, t) == ["INBOX"]


# --- folders and special-use flags, as each provider has them --------------------

EXPECTED_FOLDERS = {
    "gmail.lab": {
        "INBOX": set(), "[Gmail]/Spam": {"\\Junk"}, "[Gmail]/Sent Mail": {"\\Sent"},
        "Promotions": set(),
    },
    "outlook.lab": {"INBOX": set(), "Junk Email": {"\\Junk"}, "Sent Items": {"\\Sent"}},
    "yahoo.lab": {"INBOX": set(), "Bulk": {"\\Junk"}, "Sent": {"\\Sent"}},
    "legacy.lab": {"INBOX": set(), "Spam": set()},
}  # fmt: skip
SPECIAL = {b"\\Junk", b"\\Sent", b"\\Trash", b"\\Drafts", b"\\Archive", b"\\All", b"\\Flagged"}


@pytest.mark.parametrize("domain", list(EXPECTED_FOLDERS))
def test_list_reports_each_providers_folders_and_special_use(mail_lab, domain):
    seed = mail_lab.add_account(domain)
    with mail_lab.imap(seed) as client:
        listed = {
            name: {f.decode() for f in flags if f in SPECIAL}
            for flags, _, name in client.list_folders()
            if b"\\Noselect" not in flags
        }
        junk = client.find_special_folder(b"\\Junk")
    assert listed == EXPECTED_FOLDERS[domain]
    # legacy.lab has no \Junk flag: imapclient falls back to the name "Spam".
    expected_junk = {"gmail.lab": "[Gmail]/Spam", "outlook.lab": "Junk Email",
                     "yahoo.lab": "Bulk", "legacy.lab": "Spam"}[domain]  # fmt: skip
    assert junk == expected_junk


def test_rfc6154_list_special_use_selection(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    legacy = mail_lab.add_account("legacy.lab")
    results = {}
    for box in (seed, legacy):
        conn = imaplib.IMAP4("127.0.0.1", mail_lab.imap_port, timeout=10)
        try:
            conn.login(box.email, box.password)
            status, lines = conn.list('(SPECIAL-USE) ""', "*")
            assert status == "OK"
            results[box.email] = sorted(line.decode() for line in lines if line)
        finally:
            conn.logout()
    assert results[seed.email] == [
        '(\\Junk) "/" [Gmail]/Spam', '(\\Sent) "/" "[Gmail]/Sent Mail"'
    ]  # fmt: skip
    assert results[legacy.email] == []


def test_standard_folders_are_subscribed(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    with mail_lab.imap(seed) as client:
        subscribed = {name for _, _, name in client.list_sub_folders()}
    assert subscribed == {"INBOX", "[Gmail]/Spam", "[Gmail]/Sent Mail", "Promotions"}


# --- accounts --------------------------------------------------------------------


def test_wrong_password_fails_with_authenticationfailed(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    wrong = LabMailbox(seed.email, "not-the-password")
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"), mail_lab.imap(wrong):
        pass


def test_unknown_user_fails_with_authenticationfailed(mail_lab):
    unknown = LabMailbox("nobody-at-all@gmail.lab", "x")
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"), mail_lab.imap(unknown):
        pass


def test_password_is_stored_only_as_a_salted_hash(mail_lab):
    seed = mail_lab.add_account("yahoo.lab", "correct horse battery staple")
    path = account_file(mail_lab.lab_dir, seed.email)
    assert path.read_text().startswith(f"{seed.email}:{{SSHA512}}")
    everything = b"".join(p.read_bytes() for p in users_dir(mail_lab.lab_dir).iterdir())
    assert b"correct horse" not in everything
    assert path.stat().st_mode & 0o077 == 0


def test_ensure_lab_account_is_idempotent_and_updates_the_password(mail_lab):
    seed = mail_lab.add_account("outlook.lab", "first-password")
    path = account_file(mail_lab.lab_dir, seed.email)
    before = path.stat()
    ensure_lab_account(mail_lab.lab_dir, seed.email.upper(), "first-password")
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)

    ensure_lab_account(mail_lab.lab_dir, seed.email, "second-password")
    with mail_lab.imap(LabMailbox(seed.email, "second-password")) as client:
        assert "INBOX" in {name for _, _, name in client.list_folders()}
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"), mail_lab.imap(seed):
        pass


def test_remove_and_list_accounts(mail_lab):
    seed = mail_lab.add_account("legacy.lab")
    listed = {a.email: a.esp.name for a in list_lab_accounts(mail_lab.lab_dir)}
    assert listed[seed.email] == "legacy" and listed["catchall@lab"] == "other"

    assert remove_lab_account(mail_lab.lab_dir, seed.email, delete_mail=True) is True
    assert remove_lab_account(mail_lab.lab_dir, seed.email) is False
    assert seed.email not in {a.email for a in list_lab_accounts(mail_lab.lab_dir)}
    assert not maildir_path(mail_lab.lab_dir, seed.email).exists()
    with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"), mail_lab.imap(seed):
        pass
    # Mail for a removed mailbox now reaches the catch-all.
    t = token()
    mail_lab.send(seed.email, subject=f"After removal {t}")
    assert mail_lab.folders_with(mail_lab.catchall, t) == ["INBOX"]


def test_accounts_can_be_provisioned_concurrently(mail_lab):
    from concurrent.futures import ThreadPoolExecutor

    emails = [f"par-{i}-{secrets.token_hex(3)}@gmail.lab" for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: ensure_lab_account(mail_lab.lab_dir, e, "pw-" + e), emails))
    listed = {a.email for a in list_lab_accounts(mail_lab.lab_dir)}
    assert set(emails) <= listed
    with mail_lab.imap(LabMailbox(emails[7], "pw-" + emails[7])):
        pass


@pytest.mark.parametrize(
    "address", ["../escape@gmail.lab", "a/b@gmail.lab", "no-at-sign", "a@", "a@b/../c"]
)
def test_addresses_that_are_not_safe_folder_names_are_refused(tmp_path, address):
    with pytest.raises(ValueError, match="cannot be a lab mailbox"):
        ensure_lab_account(tmp_path, address, "pw")


def test_mailbox_folders_are_recreated_if_removed(mail_lab):
    seed = mail_lab.add_account("gmail.lab")
    shutil.rmtree(maildir_path(mail_lab.lab_dir, seed.email) / ".[Gmail].Spam")
    t = token()
    mail_lab.send(seed.email, subject=f"Recreated {t} [lab:spam]")
    assert mail_lab.folders_with(seed, t) == ["[Gmail]/Spam"]


# --- Maildir delivery --------------------------------------------------------------


def test_maildir_delivery_is_atomic_and_sized(tmp_path):
    maildir = maildir_path(tmp_path, "a@gmail.lab")
    ensure_folders(maildir, ["[Gmail]/Spam"])
    path = deliver(maildir, "[Gmail]/Spam", b"Subject: x\r\n\r\nhello\r\n")
    assert path.parent == maildir / ".[Gmail].Spam" / "new"
    assert path.read_bytes() == b"Subject: x\n\nhello\n"
    assert path.name.endswith(f",S={path.stat().st_size}")
    assert list((maildir / ".[Gmail].Spam" / "tmp").iterdir()) == []
    with pytest.raises(FileNotFoundError):
        deliver(maildir, "Nowhere", b"x")


# --- lifecycle, status and failures -------------------------------------------------


def test_stop_leaves_no_dovecot_process_and_frees_the_ports(tmp_path):
    require_dovecot()
    lab = Lab(tmp_path / "lab", smtp_port=free_port(), imap_port=free_port())
    lab.start()
    seed_password = "pw"
    lab.add_account("a@gmail.lab", seed_password)
    client = IMAPClient("127.0.0.1", port=lab.imap_port, ssl=False, timeout=10)
    client.login("a@gmail.lab", seed_password)  # so an imap mail process exists too
    pids = lab.dovecot.pids()
    assert len(pids) >= 4
    assert any("imap" in _process_name(p) for p in pids)
    started = time.monotonic()
    lab.stop()
    assert time.monotonic() - started < 3
    assert [p for p in pids if not gone(p)] == []
    for port in (lab.smtp_port, lab.imap_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    lab.stop()  # twice is harmless


def _process_name(pid: int) -> str:
    """The process's name; "" once it ended (Dovecot's short-lived helpers come and go
    between listing the pids and reading a name)."""
    try:
        return psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        return ""


def test_lab_status_probes_the_ports(tmp_path, monkeypatch):
    require_dovecot()
    lab = Lab(tmp_path / "lab", smtp_port=free_port(), imap_port=free_port())
    monkeypatch.setenv("LAB_SMTP_PORT", str(lab.smtp_port))
    monkeypatch.setenv("LAB_IMAP_PORT", str(lab.imap_port))
    from mailer_app.settings import Settings

    settings = Settings()
    assert lab_status(settings) == {"smtp": "down", "imap": "down"}
    with lab:
        assert lab_status(settings) == {"smtp": "up", "imap": "up"}
        assert lab.imap_state == "up"
    monkeypatch.setattr(runner_module, "dovecot_available", lambda: (False, "no Dovecot here"))
    assert lab_status(settings) == {"smtp": "down", "imap": "off: no Dovecot here"}


def test_without_dovecot_the_smtp_intake_still_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(dovecot_module, "find_dovecot", lambda: None)
    monkeypatch.setattr(runner_module, "dovecot_available", dovecot_module.dovecot_available)
    ok, why = dovecot_module.dovecot_available()
    assert not ok and "apt-get install dovecot-imapd" in why
    with Lab(tmp_path / "lab", smtp_port=free_port(), imap_port=free_port()) as lab:
        assert lab.imap_state.startswith("off: Dovecot is not installed")
        assert "IMAP is off" in lab.describe()
        lab.add_account("a@yahoo.lab", "pw")
        with smtplib.SMTP("127.0.0.1", lab.smtp_port, timeout=10) as smtp:
            smtp.sendmail("x@sender.lab", ["a@yahoo.lab"], b"Subject: hi\r\n\r\nbody\r\n")
        bulk = maildir_path(lab.lab_dir, "a@yahoo.lab") / ".Bulk" / "new"
        assert len(list(bulk.iterdir())) == 1  # no Message-ID/Date: yahoo.lab's Bulk


def test_busy_imap_port_gives_a_clear_error_and_leaves_nothing_running(tmp_path):
    require_dovecot()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        lab = Lab(tmp_path / "lab", smtp_port=free_port(), imap_port=busy.getsockname()[1])
        with pytest.raises(LabError, match="already in use"):
            lab.start()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", lab.smtp_port)) != 0  # intake stopped again


def test_deep_lab_folders_work_despite_the_socket_path_limit(tmp_path):
    require_dovecot()
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 4) / "lab"
    assert len(str(deep / "run" / "login" / "imap-urlauth")) > 108
    with Lab(deep, smtp_port=free_port(), imap_port=free_port()) as lab:
        lab.add_account("a@yahoo.lab", "pw")
        client = IMAPClient("127.0.0.1", port=lab.imap_port, ssl=False, timeout=10)
        client.login("a@yahoo.lab", "pw")
        client.logout()


def test_lab_folder_paths_dovecot_cannot_take_are_refused_clearly(tmp_path):
    require_dovecot()
    with pytest.raises(LabError, match="set DATA_DIR to a simpler path"):
        DovecotServer(tmp_path / "with space" / "lab", free_port()).start()


def test_dovecot_start_failure_shows_its_log(tmp_path, monkeypatch):
    require_dovecot()
    monkeypatch.setattr(dovecot_module, "render_config", lambda *a: "no_such_setting = 1\n")
    server = DovecotServer(tmp_path / "lab", free_port())
    with pytest.raises(LabError, match="Dovecot exited at start-up") as info:
        server.start(timeout=5)
    assert "no_such_setting" in str(info.value)


def test_a_dovecot_left_behind_is_stopped_by_the_next_start(tmp_path):
    require_dovecot()
    port = free_port()
    first = DovecotServer(tmp_path / "lab", port)
    first.start()
    orphan_pids = first.pids()
    first._proc = None  # as if the lab process had been killed without stopping it
    second = DovecotServer(tmp_path / "lab", port)
    try:
        second.start()
        assert all(gone(p) for p in orphan_pids)
        assert second.running()
    finally:
        second.stop()
        for pid in orphan_pids:  # never leave an orphan behind, even if the test fails
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


# --- python -m mailer_app.lab, as this user and (when root) as a normal user -----


def _run_lab_module(data_dir: Path, user: tuple[int, int] | None) -> None:
    smtp_port, imap_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "LAB_SMTP_PORT": str(smtp_port),
        "LAB_IMAP_PORT": str(imap_port),
        "MAILER_SUPERVISE": "0",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(data_dir),
    }
    prefix = []
    if user:
        prefix = ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups"]
    provision = (
        "from mailer_app.lab import ensure_lab_account; from mailer_app.settings import "
        "get_settings; ensure_lab_account(get_settings().lab_dir, 'u@outlook.lab', 'pw')"
    )
    subprocess.run([*prefix, sys.executable, "-c", provision], env=env, check=True, timeout=30)
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "mailer_app.lab"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=data_dir,
    )  # fmt: skip
    try:
        wait_for_port(smtp_port, timeout=15)
        wait_for_port(imap_port, timeout=15)
        dovecot_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        assert dovecot_pids
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail("x@sender.lab", ["u@outlook.lab"], b"Subject: hi\r\n\r\nclick here\r\n")
        client = IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=10)
        client.login("u@outlook.lab", "pw")
        client.select_folder("Junk Email", readonly=True)
        assert len(client.search()) == 1
        client.logout()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
    log = out.decode()
    assert proc.returncode == 0, log
    assert f"SMTP intake on 127.0.0.1:{smtp_port}, IMAP on 127.0.0.1:{imap_port}" in log
    assert "mail lab stopped" in log
    assert [p for p in dovecot_pids if not gone(p)] == []


def test_lab_module_runs_in_the_foreground_and_stops_on_sigterm(tmp_path):
    require_dovecot()
    _run_lab_module(tmp_path, user=None)


def test_dovecot_does_not_outlive_a_killed_lab_module(tmp_path):
    require_dovecot()
    smtp_port, imap_port = free_port(), free_port()
    env = {**os.environ, "DATA_DIR": str(tmp_path), "LAB_SMTP_PORT": str(smtp_port),
           "LAB_IMAP_PORT": str(imap_port), "PYTHONPATH": str(ROOT)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer_app.lab"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(imap_port, timeout=15)
        dovecot_pids = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        proc.kill()  # no chance to clean up: the kernel must stop Dovecot
        proc.wait(timeout=5)
        # The master dies at once; its children notice within a couple of seconds.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(gone(p) for p in dovecot_pids):
            time.sleep(0.05)
        assert [p for p in dovecot_pids if not gone(p)] == []
    finally:
        for child in psutil.Process().children(recursive=True):
            if "dovecot" in child.name():
                child.kill()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_lab_module_works_for_a_normal_user():
    require_dovecot()
    # A folder `nobody` owns, outside pytest's root-only temporary folders.
    nobody = pwd.getpwnam("nobody")
    data_dir = Path(tempfile.mkdtemp(prefix="mailer-lab-user-"))
    try:
        os.chown(data_dir, nobody.pw_uid, nobody.pw_gid)
        _run_lab_module(data_dir, user=(nobody.pw_uid, nobody.pw_gid))
        assert (data_dir / "lab" / "users").stat().st_uid == nobody.pw_uid
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
