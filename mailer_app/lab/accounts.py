"""Lab mailbox accounts: Dovecot passwd-files under the lab folder, and their folders.

Each account is a one-line Dovecot passwd-file, `<lab_dir>/users/<address>`:

    address:{SSHA512}<base64(sha512(password + salt) + salt)>::::::

a salted hash Dovecot verifies natively; the plain password is never written.

Why one file per account rather than one shared file: Dovecot re-checks a
passwd-file at most once per second, so a mailbox added to a shared file could be
refused for up to a second after `ensure_lab_account` returned (a seed's "test
connection" right after adding it would fail). A new account is a new file, which
Dovecot reads at the first login. A changed password or a removed account takes
effect within a second.

Files are replaced atomically (write, fsync, rename), so concurrent provisioning by
the app, the lab and tests never leaves half a file for Dovecot to read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mailer_app.lab.filter import EspProfile, esp_for_address
from mailer_app.lab.maildir import ensure_folders, maildir_path, normalize_address

USERS_DIR = "users"
SCHEME = "{SSHA512}"
_SALT_BYTES = 16
_DIGEST_BYTES = hashlib.sha512().digest_size


@dataclass(frozen=True)
class LabAccount:
    """A provisioned lab mailbox (the password is not kept)."""

    email: str
    esp: EspProfile

    @property
    def folders(self) -> list[str]:
        return self.esp.folders


def users_dir(lab_dir: Path) -> Path:
    """The folder of the per-account Dovecot passwd-files."""
    return Path(lab_dir) / USERS_DIR


def account_file(lab_dir: Path, email: str) -> Path:
    """The Dovecot passwd-file of one lab account."""
    return users_dir(lab_dir) / normalize_address(email)


def ensure_lab_account(lab_dir: Path, email: str, password: str) -> LabAccount:
    """Create the lab mailbox `email` with `password`, or update its password.

    Idempotent: an unchanged password leaves the file untouched. Also creates the
    mailbox folders of the address's simulated provider (gmail.lab, outlook.lab,
    yahoo.lab, legacy.lab; any other domain gets INBOX and Junk).
    """
    if not password:
        raise ValueError("a lab account needs a non-empty password")
    if any(c in password for c in "\r\n\0"):
        raise ValueError("a lab password cannot contain line breaks or NUL")
    address = normalize_address(email)
    account = LabAccount(address, esp_for_address(address))
    ensure_folders(maildir_path(lab_dir, address), account.folders)
    current = _read_hash(account_file(lab_dir, address))
    if current is None or not verify_password(password, current):
        _write(account_file(lab_dir, address), f"{address}:{hash_password(password)}::::::\n")
    return account


def remove_lab_account(lab_dir: Path, email: str, *, delete_mail: bool = False) -> bool:
    """Remove the account (its login); its mail too if `delete_mail`. True if it existed."""
    address = normalize_address(email)
    path = account_file(lab_dir, address)
    existed = path.exists()
    path.unlink(missing_ok=True)
    if delete_mail:
        shutil.rmtree(maildir_path(lab_dir, address).parent, ignore_errors=True)
    return existed


def list_lab_accounts(lab_dir: Path) -> list[LabAccount]:
    """Every provisioned lab account, sorted by address."""
    folder = users_dir(lab_dir)
    if not folder.is_dir():
        return []
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    return [LabAccount(name, esp_for_address(name)) for name in names]


def has_lab_account(lab_dir: Path, email: str) -> bool:
    """Is `email` a provisioned lab mailbox?"""
    try:
        return account_file(lab_dir, email).exists()
    except ValueError:
        return False


def hash_password(password: str) -> str:
    """A Dovecot `{SSHA512}` hash of `password` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return SCHEME + base64.b64encode(digest + salt).decode()


def verify_password(password: str, stored: str) -> bool:
    """Does `password` match a `{SSHA512}` hash (constant-time comparison)?"""
    if not stored.startswith(SCHEME):
        return False
    try:
        raw = base64.b64decode(stored[len(SCHEME) :], validate=True)
    except ValueError:
        return False
    digest, salt = raw[:_DIGEST_BYTES], raw[_DIGEST_BYTES:]
    return hmac.compare_digest(digest, hashlib.sha512(password.encode() + salt).digest())


def _read_hash(path: Path) -> str | None:
    try:
        line = path.read_text().split("\n", 1)[0]
    except FileNotFoundError:
        return None
    return line.split(":")[1] if line.count(":") >= 1 else None


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        previous_mtime = int(path.stat().st_mtime)
    except FileNotFoundError:
        previous_mtime = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # 0600: the hashes are salted, but there is no reason to let others try them.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        if previous_mtime is not None:
            # Dovecot notices a changed passwd-file by (mtime in seconds, size); a new
            # hash has the same size, so make sure the second differs too.
            stamp = max(int(time.time()), previous_mtime + 1)
            os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
