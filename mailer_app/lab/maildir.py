"""Lab mailboxes on disk: Maildir++ folders that Dovecot serves, and safe delivery.

Layout under the lab folder (Dovecot's `mail_location = maildir:~/Maildir`, with
`/` as the IMAP hierarchy separator and Maildir++ dot-folders on disk):

    <lab_dir>/mail/<domain>/<local part>/Maildir/{cur,new,tmp}       INBOX
    <lab_dir>/mail/<domain>/<local part>/Maildir/.[Gmail].Spam/...   "[Gmail]/Spam"

Delivery follows the Maildir protocol so Dovecot never sees a half-written
message: write into tmp/, fsync, then rename into new/.

When the lab runs as root, Dovecot refuses to open mail as uid 0, so the mail tree
belongs to `nobody` (see `mail_owner`) and the files the lab writes are handed to
that user too. Run as a normal user, everything simply belongs to that user.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import socket
import time
from pathlib import Path

MAIL_SUBDIR = "mail"
MAILDIR = "Maildir"
INBOX = "INBOX"
_SUBDIRS = ("cur", "new", "tmp")
# Addresses become directory names: allow only what cannot escape or confuse the tree.
_LOCAL_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")
_counter = itertools.count()


def mail_owner() -> tuple[int, int] | None:
    """(uid, gid) that must own the mail tree, or None when the current user may own it.

    Only root needs another owner: Dovecot never runs mail processes as uid 0.
    """
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def normalize_address(address: str) -> str:
    """Lower-case `local@domain`; ValueError when it cannot be a lab mailbox name."""
    value = address.strip().strip("<>").lower()
    local, at, domain = value.rpartition("@")
    if not at or not _LOCAL_RE.match(local) or not _DOMAIN_RE.match(domain) or ".." in local:
        raise ValueError(
            f"{address!r} cannot be a lab mailbox: use letters, digits and . _ + - "
            "in a local@domain address"
        )
    return value


def mail_root(lab_dir: Path) -> Path:
    """The folder holding every lab mailbox (Dovecot's chroot when run as root)."""
    return Path(lab_dir) / MAIL_SUBDIR


def maildir_path(lab_dir: Path, address: str) -> Path:
    """The Maildir of one lab mailbox."""
    local, _, domain = normalize_address(address).rpartition("@")
    return mail_root(lab_dir) / domain / local / MAILDIR


def folder_path(maildir: Path, folder: str) -> Path:
    """On-disk folder for an IMAP folder name (Maildir++: "a/b" is ".a.b")."""
    if folder.upper() == INBOX:
        return maildir
    if "." in folder or not folder.isascii() or folder.startswith("/") or ".." in folder:
        # Dots are Maildir++'s own separator; non-ASCII would need modified UTF-7.
        raise ValueError(f"folder name {folder!r} is not supported by the lab")
    return maildir / ("." + folder.replace("/", "."))


def ensure_folders(maildir: Path, folders: list[str]) -> None:
    """Create the Maildir and the given folders (idempotent), owned by `mail_owner()`."""
    owner = mail_owner()
    made = []
    for folder in [INBOX, *folders]:
        base = folder_path(maildir, folder)
        for sub in _SUBDIRS:
            (base / sub).mkdir(parents=True, exist_ok=True)
            made.append(base / sub)
        made.append(base)
    if owner:
        # Also the mailbox's home, its domain folder and the mail root: with a strict
        # umask they would otherwise be closed to the mail user.
        home = Path(maildir).parent
        for path in [*made, home, home.parent, home.parent.parent]:
            os.chown(path, *owner)
    _ensure_subscriptions(maildir, [f for f in folders if f.upper() != INBOX], owner)


def deliver(maildir: Path, folder: str, data: bytes) -> Path:
    """File one message into `folder` of `maildir`, atomically; returns its path.

    The folder must exist (accounts create their folders). Line endings are stored
    as LF, the Maildir convention; Dovecot serves them as CRLF.
    """
    base = folder_path(maildir, folder)
    if not (base / "new").is_dir():
        raise FileNotFoundError(f"lab folder {folder!r} does not exist in {maildir}")
    body = data.replace(b"\r\n", b"\n")
    name = _unique_name(len(body))
    tmp = base / "tmp" / name
    owner = mail_owner()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        if owner:
            os.chown(tmp, *owner)
        final = base / "new" / name
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(base / "new")
    return final


def chown_tree(root: Path, owner: tuple[int, int], *, files: bool = True) -> None:
    """Give `root` and everything under it to `owner` (directories only if not `files`)."""
    root = Path(root)
    if not root.exists():
        return
    os.chown(root, *owner)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + (filenames if files else []):
            os.chown(os.path.join(dirpath, name), *owner, follow_symlinks=False)


def _unique_name(size: int) -> str:
    # time.M<usec>P<pid>Q<counter>.<host>,S=<size>: unique across processes and
    # threads; S= lets Dovecot skip stat()ing the size, so it must be exact.
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "lab"
    micro = int((now % 1) * 1_000_000)
    return f"{int(now)}.M{micro}P{os.getpid()}Q{next(_counter)}.{host},S={size}"


def _ensure_subscriptions(maildir: Path, folders: list[str], owner) -> None:
    # Mail clients such as Thunderbird show only subscribed folders; real providers
    # subscribe their standard folders, so the lab does too. Dovecot's Maildir++
    # subscriptions file names folders with the on-disk separator (".").
    path = maildir / "subscriptions"
    existing = path.read_text().splitlines() if path.exists() else []
    names = [INBOX] + [f.replace("/", ".") for f in folders]
    wanted = existing + [n for n in names if n not in existing]
    if wanted == existing:
        return
    tmp = maildir / f".subscriptions.{os.getpid()}.{next(_counter)}"
    tmp.write_text("".join(f"{name}\n" for name in wanted))
    if owner:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
