"""Reading seed mailboxes over IMAP (imapclient): where did a seed copy land?

A check opens the seed's mailbox, works out which folder is the spam folder (and
the promotions folder or Gmail's category), looks for the copy by its seed token
and reports inbox, spam or promotions, with the receiving provider's SPF, DKIM and
DMARC verdicts. It only reads: folders are opened read-only (EXAMINE) and bodies
fetched with BODY.PEEK, so the seed's flags never change.

Errors come in two kinds the caller must tell apart: `MailboxAuthError` (the server
refused the login: retrying cannot help) and `MailboxUnavailable` (network, timeout,
the server hung up or misbehaved: retry later). Every network read and the connect
are bounded by the endpoint's timeout. The password never appears in a message.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import imaplib
import re
import socket
import ssl
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import CapabilityError, LoginError
from imapclient.imap_utf7 import decode as decode_utf7

from mailer_app.mail.seed_copy import SEED_TOKEN_HEADER

SECURITY_MODES = ("plain", "starttls", "tls")
INBOX, SPAM, PROMOTIONS = "inbox", "spam", "promotions"
GMAIL_CAPABILITY = b"X-GM-EXT-1"


@dataclass(frozen=True)
class ImapEndpoint:
    """Where and how to sign in to one seed mailbox."""

    host: str
    port: int
    security: str  # "plain" | "starttls" | "tls"
    username: str
    password: str = field(repr=False)
    timeout: float = 20.0  # seconds, for the connect and for every read

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(
                f"IMAP security must be one of {SECURITY_MODES}, not {self.security!r}"
            )
        if not self.timeout or self.timeout <= 0:
            raise ValueError("an IMAP endpoint needs a positive timeout")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class MailboxError(Exception):
    """A seed mailbox could not be read; the message is for people."""


class MailboxAuthError(MailboxError):
    """The server refused the login: never retry with the same credentials."""


class MailboxUnavailable(MailboxError):
    """Network error, timeout, server hang-up or unexpected reply: retry later."""


# ---------------------------------------------------------------------------
# Folder discovery (pure)

# Compared after NFC normalisation and casefold, against the last path segment.
# Server-side filter folders with distinctive names come before the generic
# "spam"/"junk", which mail clients also create on their own.
_SPAM_NAMES = (
    "bulk", "bulk mail", "junk e-mail", "junk email", "spamverdacht", "spam-verdacht",
    "junk-e-mail", "unerwünscht", "courrier indésirable", "courriers indésirables",
    "pourriel", "correo no deseado", "posta indesiderata", "ongewenste e-mail",
    "ongewenste e-mails", "nevyžádaná pošta", "нежелательная почта", "lixo eletrônico",
    "lixo electrónico", "skräppost", "uønsket post", "søppelpost", "roskaposti",
    "wiadomości-śmieci", "迷惑メール", "垃圾邮件", "垃圾郵件",
    "spam", "спам", "junk", "junk mail", "indésirables", "no deseado",
)  # fmt: skip
_PROMOTIONS_NAMES = (
    "promotions", "promotion", "werbung", "promociones", "promoções", "promozioni",
    "promoties", "промоакции",
)  # fmt: skip
# Folders that hold the user's own or discarded mail, never a fresh delivery.
_NOT_INCOMING_NAMES = {
    "sent", "sent items", "sent mail", "sent messages", "gesendet", "gesendete objekte",
    "gesendete elemente", "éléments envoyés", "messages envoyés", "envoyés", "enviados",
    "elementos enviados", "posta inviata", "verzonden items", "odeslaná pošta",
    "отправленные", "drafts", "draft", "entwürfe", "brouillons", "borradores", "bozze",
    "concepten", "koncepty", "черновики", "trash", "deleted items", "deleted messages",
    "bin", "papierkorb", "gelöscht", "gelöschte objekte", "gelöschte elemente", "corbeille",
    "éléments supprimés", "papelera", "elementos eliminados", "cestino",
    "posta eliminata", "verwijderde items", "prullenbak", "koš", "odstraněná pošta",
    "корзина", "удаленные", "удалённые", "all mail", "outbox", "postausgang",
}  # fmt: skip
_NOT_SELECTABLE_FLAGS = {b"\\noselect", b"\\nonexistent"}
# RFC 6154 flags, plus Gmail's older XLIST ones (\Spam, \AllMail, \Starred, \Important).
_JUNK_FLAGS = {b"\\junk", b"\\spam"}
_NOT_INCOMING_FLAGS = {
    b"\\sent", b"\\drafts", b"\\trash", b"\\all", b"\\allmail", b"\\flagged", b"\\starred",
    b"\\important",
}  # fmt: skip
_TOP_LEVEL_PARENTS = {"inbox", "[gmail]", "[google mail]"}


@dataclass
class FolderMap:
    """Which folders of a seed mailbox mean inbox, spam and promotions."""

    inbox: str = "INBOX"
    spam: str | None = None  # None: no spam folder could be identified
    promotions: str | None = None  # a promotions *folder* (not Gmail's category)
    gmail_categories: bool = False  # X-GM-EXT-1: promotions is a category inside INBOX
    # Selectable folders that may hold incoming mail (no Sent, Drafts, Trash, All Mail).
    searchable: list[str] = field(default_factory=list)
    spam_flagged: bool = False  # the server itself marked `spam` as junk (\Junk)

    def to_json(self) -> dict:
        """A plain dict for SeedAccount.folder_map."""
        return {
            "inbox": self.inbox,
            "spam": self.spam,
            "promotions": self.promotions,
            "gmail_categories": self.gmail_categories,
            "searchable": list(self.searchable),
            "spam_flagged": self.spam_flagged,
        }

    @classmethod
    def from_json(cls, data: dict | None) -> FolderMap | None:
        """The map stored by `to_json`; None when nothing was stored."""
        if not data:
            return None
        return cls(
            inbox=str(data.get("inbox") or "INBOX"),
            spam=data.get("spam") or None,
            promotions=data.get("promotions") or None,
            gmail_categories=bool(data.get("gmail_categories")),
            searchable=[str(name) for name in data.get("searchable") or []],
            spam_flagged=bool(data.get("spam_flagged")),
        )

    def describe(self) -> str:
        """The map in plain words, for the person who set up the seed."""
        parts = [f"Inbox: {self.inbox}."]
        if self.spam:
            how = (
                "flagged \\Junk by the server"
                if self.spam_flagged
                else "recognised by its name; the server marks no folder as junk"
            )
            parts.append(f"Spam: {self.spam} ({how}).")
        else:
            parts.append(
                "No spam folder found: messages outside the inbox will be counted as "
                "spam, never as inbox."
            )
        if self.gmail_categories:
            parts.append("Promotions: Gmail category.")
        elif self.promotions:
            parts.append(f"Promotions: {self.promotions}.")
        return " ".join(parts)


def discover_folder_map(
    listing: list[tuple[tuple[bytes, ...], bytes | str | None, str | bytes]],
    capabilities: set[bytes] | frozenset[bytes] | tuple[bytes, ...],
) -> FolderMap:
    """The FolderMap of a mailbox from imapclient's list_folders() and capabilities().

    Special-use flags decide first (\\Junk); without one, the spam folder is found by
    well-known names in many languages, compared with the last segment of the path.
    """
    gmail = GMAIL_CAPABILITY in {bytes(c).upper() for c in capabilities}
    folders = [_Folder.from_listing(i, entry) for i, entry in enumerate(listing)]
    selectable = [f for f in folders if f.selectable]

    inbox = next((f.name for f in selectable if f.is_inbox), "INBOX")
    flagged = [f for f in selectable if f.flags & _JUNK_FLAGS and not f.is_inbox]
    spam = flagged[0] if flagged else _best_by_name(selectable, _SPAM_NAMES, inbox)
    promotions = None
    if not gmail:
        found = _best_by_name(selectable, _PROMOTIONS_NAMES, inbox)
        promotions = found.name if found and found is not spam else None
    # The inbox first, then the server's order.
    incoming = sorted((f for f in selectable if f.may_hold_incoming), key=lambda f: not f.is_inbox)
    searchable = [f.name for f in incoming]
    return FolderMap(
        inbox=inbox,
        spam=spam.name if spam else None,
        promotions=promotions,
        gmail_categories=gmail,
        searchable=searchable,
        spam_flagged=bool(flagged),
    )


@dataclass(frozen=True)
class _Folder:
    index: int
    name: str
    flags: frozenset[bytes]  # lower-cased
    segments: tuple[str, ...]  # normalised path segments

    @classmethod
    def from_listing(cls, index: int, entry) -> _Folder:
        raw_flags, delimiter, name = entry
        if isinstance(name, bytes):
            # Without folder_encode imapclient hands over modified UTF-7 bytes; SELECT
            # later needs the decoded name (imapclient re-encodes it).
            name = decode_utf7(name)
        name = str(name)
        if isinstance(delimiter, bytes):
            delimiter = delimiter.decode("ascii", "replace")
        pieces = name.split(delimiter) if delimiter else [name]
        return cls(
            index=index,
            name=name,
            flags=frozenset(bytes(f).lower() for f in raw_flags or ()),
            segments=tuple(_normalise_name(p) for p in pieces),
        )

    @property
    def last(self) -> str:
        return self.segments[-1]

    @property
    def is_inbox(self) -> bool:
        return self.name.upper() == "INBOX" or b"\\inbox" in self.flags

    @property
    def selectable(self) -> bool:
        return not self.flags & _NOT_SELECTABLE_FLAGS

    @property
    def depth(self) -> int:
        # "INBOX/Junk" and "[Gmail]/Spam" are as good as a top-level "Junk".
        depth = len(self.segments) - 1
        if depth and self.segments[0] in _TOP_LEVEL_PARENTS:
            depth -= 1
        return depth

    @property
    def may_hold_incoming(self) -> bool:
        if self.is_inbox:
            return True
        return not (self.flags & _NOT_INCOMING_FLAGS or self.last in _NOT_INCOMING_NAMES)


def _normalise_name(name: str) -> str:
    # Clients on macOS create decomposed (NFD) names: "indésirable" with a combining accent.
    return " ".join(unicodedata.normalize("NFC", name).casefold().split())


def _best_by_name(folders: list[_Folder], names: tuple[str, ...], inbox: str) -> _Folder | None:
    rank = {name: i for i, name in enumerate(names)}
    matches = [f for f in folders if f.last in rank and f.name != inbox]
    if not matches:
        return None
    return min(matches, key=lambda f: (f.depth, rank[f.last], f.index))


# ---------------------------------------------------------------------------
# Authentication-Results (RFC 8601)

_RESULT_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+)(?:\s*/\s*\d+)?\s*=\s*([A-Za-z0-9_.-]+)")
AUTH_METHODS = ("spf", "dkim", "dmarc")


def parse_authentication_results(values: list[str]) -> dict[str, str | None]:
    """{'spf', 'dkim', 'dmarc'} verdicts from Authentication-Results header values.

    The first verdict per method wins (values in header order, the receiving
    provider's own header on top); a method that is absent maps to None.
    """
    verdicts: dict[str, str | None] = dict.fromkeys(AUTH_METHODS)
    for value in values:
        for clause in _split_clauses(value):
            match = _RESULT_RE.match(clause)
            if not match:
                continue  # the authserv-id, or "none"
            method, result = match.group(1).lower(), match.group(2).lower()
            if method in verdicts and verdicts[method] is None:
                verdicts[method] = result
    return verdicts


def _split_clauses(value: str) -> list[str]:
    """Split at ";" outside quoted strings, dropping (nested) comments and folding."""
    clauses, current, depth, quoted, escaped = [], [], 0, False, False
    for char in value:
        if escaped:
            escaped = False
            if depth == 0:
                current.append(char)
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            current.append(char)
            quoted = char != '"'
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth:
            continue
        elif char == '"':
            quoted = True
            current.append(char)
        elif char == ";":
            clauses.append("".join(current))
            current = []
        else:
            current.append(" " if char in "\r\n\t" else char)
    clauses.append("".join(current))
    return [c.strip() for c in clauses if c.strip()]


# ---------------------------------------------------------------------------
# The mailbox

# Search values are sent as IMAP atoms (imapclient quotes only spaces, quotes and
# backslashes), so they must be printable ASCII without the atom-specials.
_ATOM_SPECIALS = frozenset('(){%*"\\]')
_LOGOUT_TIMEOUT = 2.0
# LOGIN "NO" replies that mean the server, not the credentials, is the problem (RFC 5530).
_TRANSIENT_LOGIN_CODES = ("UNAVAILABLE", "SERVERBUG", "LIMIT", "INUSE")


@dataclass(frozen=True)
class FoundMessage:
    """Where a seed copy was found, with the receiving provider's verdicts."""

    placement: str  # "inbox" | "spam" | "promotions"
    folder: str
    received_at: datetime | None  # INTERNALDATE, aware UTC
    spf: str | None
    dkim: str | None
    dmarc: str | None


class _FolderGone(Exception):
    def __init__(self, folder: str, reason: str):
        super().__init__(folder, reason)
        self.folder, self.reason = folder, reason


class SeedMailbox:
    """One logged-in IMAP session on a seed mailbox. Not for use by two threads at once.

    After a MailboxUnavailable the session is closed and stays unusable: open a new
    SeedMailbox (MailboxPool does that).
    """

    def __init__(self, endpoint: ImapEndpoint):
        self.endpoint = endpoint
        self._client: IMAPClient | None = None
        self._broken = False
        self.last_used = 0.0  # time.monotonic() of the last successful command
        # Set by find() when the folder map it was given named a folder that no
        # longer exists and it looked the folders up again; callers may store it.
        self.rediscovered: FolderMap | None = None

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<SeedMailbox {self.endpoint.username} at {self.endpoint.address} {state}>"

    def __enter__(self) -> SeedMailbox:
        self.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        """Logged in and not broken (says nothing about the server: see is_alive)."""
        return self._client is not None and not self._broken

    def open(self) -> None:
        """Connect (TLS or STARTTLS as configured) and log in."""
        if self._client is not None:
            raise RuntimeError("this SeedMailbox was already opened; use a new one")
        ep = self.endpoint
        context = ssl.create_default_context() if ep.security != "plain" else None
        try:
            client = IMAPClient(
                ep.host,
                port=ep.port,
                ssl=ep.security == "tls",
                ssl_context=context,
                timeout=SocketTimeout(connect=ep.timeout, read=ep.timeout),
            )
        except (OSError, imaplib.IMAP4.error) as exc:
            raise MailboxUnavailable(self._scrub(self._unreachable(exc))) from exc
        # Aware INTERNALDATEs (imapclient would otherwise convert them to naive local time).
        client.normalise_times = False
        try:
            if ep.security == "starttls":
                client.starttls(context)
            client.login(ep.username, ep.password)
        except LoginError as exc:
            _shutdown(client)
            if isinstance(exc.__context__, imaplib.IMAP4.abort):
                message = self._scrub(self._failed("signing in", exc, client))
                raise MailboxUnavailable(message) from None
            raise self._login_refused(exc) from None
        except CapabilityError:
            _shutdown(client)
            raise MailboxUnavailable(
                f"{ep.address} does not offer STARTTLS: choose TLS (usually port 993) or, "
                "only on a trusted network, a plain connection."
            ) from None
        except UnicodeEncodeError:
            _shutdown(client)
            raise MailboxAuthError(
                f"The user name or password for {ep.username} has characters this server's "
                "sign-in cannot take."
            ) from None
        except (OSError, imaplib.IMAP4.error) as exc:
            _shutdown(client)
            what = "starting TLS" if ep.security == "starttls" else "signing in"
            raise MailboxUnavailable(self._scrub(self._failed(what, exc, client))) from None
        self._client, self._broken = client, False
        self.last_used = time.monotonic()

    def close(self) -> None:
        """Log out and disconnect; never raises."""
        client, self._client = self._client, None
        if client is None:
            return
        if self._broken:
            _shutdown(client)  # LOGOUT on a broken session would only wait for the timeout
            return
        try:
            # LOGOUT is a courtesy: a pool closing hundreds of sessions whose network
            # silently went away must not wait the full read timeout for each.
            client.socket().settimeout(min(self.endpoint.timeout, _LOGOUT_TIMEOUT))
            client.logout()
        except Exception:
            _shutdown(client)

    def is_alive(self) -> bool:
        """Does the session still answer (NOOP)? A dead session is closed."""
        if not self.is_open:
            return False
        try:
            self._call("checking the connection", lambda c: c.noop())
        except MailboxError:
            return False
        return True

    def discover_folders(self) -> FolderMap:
        """List the folders and work out inbox, spam and promotions."""
        listing, capabilities = self._listing()
        return discover_folder_map(listing, capabilities)

    def find(
        self,
        token: str,
        *,
        folder_map: FolderMap | None = None,
        header: str = SEED_TOKEN_HEADER,
        message_id: str | None = None,
    ) -> FoundMessage | None:
        """Find the copy whose `header` equals `token`; None when it is nowhere.

        Looks in spam, promotions and inbox, in that order (and, when no spam folder
        is known, in every other searchable folder, where a hit counts as spam). When
        `folder_map` names a folder that is gone, the folders are discovered again and
        the new map is left in `self.rediscovered` for the caller to store.
        """
        _require_atom(token, "seed token")
        _require_atom(header, "header name")
        if ":" in header:
            raise ValueError(f"{header!r} is not a header name")
        if message_id is not None:
            message_id = message_id.strip().strip("<>")
            _require_atom(message_id, "Message-ID")
        folder_map = folder_map or self.discover_folders()
        try:
            return self._find_in(folder_map, token, header, message_id)
        except _FolderGone:
            # The stored map is stale (a folder was renamed or deleted): look again once.
            self.rediscovered = self.discover_folders()
        try:
            return self._find_in(self.rediscovered, token, header, message_id)
        except _FolderGone as gone:
            raise self._fail(
                MailboxUnavailable(f"Could not open the folder {gone.folder}: {gone.reason}")
            ) from None

    # -- internals ----------------------------------------------------------

    def _find_in(
        self, fm: FolderMap, token: str, header: str, message_id: str | None
    ) -> FoundMessage | None:
        for folder in _search_order(fm):
            hit = self._find_in_folder(folder, fm, token, header, message_id)
            if hit is None:
                continue
            uid, fetched = hit
            placement = SPAM
            if folder == fm.inbox:
                placement = INBOX
                if fm.gmail_categories and self._search(
                    ["UID", str(uid), "X-GM-RAW", "category:promotions"]
                ):
                    placement = PROMOTIONS
            elif folder == fm.promotions:
                placement = PROMOTIONS
            return _found_message(placement, folder, fetched)
        return None

    def _find_in_folder(
        self, folder: str, fm: FolderMap, token: str, header: str, message_id: str | None
    ) -> tuple[int, dict] | None:
        # EXAMINE (read-only) on every check: it also shows mail that arrived since.
        self._call(f"opening {folder}", lambda c: c.select_folder(folder, readonly=True), folder)
        if fm.gmail_categories and message_id:
            # Gmail's HEADER search misses messages; its own Message-ID search does not.
            uids = self._search(["X-GM-RAW", f"rfc822msgid:{message_id}"])
            if uids:
                return self._first_with_token(uids, header, None)
        uids = self._search(["HEADER", header, token])
        return self._first_with_token(uids, header, token) if uids else None

    def _first_with_token(
        self, uids: list[int], header: str, token: str | None
    ) -> tuple[int, dict] | None:
        """The oldest of `uids` whose `header` is exactly `token` (any, when None).

        SEARCH HEADER matches substrings, so the value is checked here, in the same
        FETCH that reads the arrival time and the verdicts.
        """
        fields = f"AUTHENTICATION-RESULTS {header.upper()}"
        items = ["INTERNALDATE", f"BODY.PEEK[HEADER.FIELDS ({fields})]"]
        fetched = self._call("reading messages", lambda c: c.fetch(sorted(uids), items))
        for uid in sorted(fetched):
            values = _parse_headers(_header_block(fetched[uid])).get_all(header) or []
            if token is None or token in (" ".join(str(v).split()) for v in values):
                return uid, fetched[uid]
        return None

    def _search(self, criteria: list[str]) -> list[int]:
        return list(self._call("searching", lambda c: c.search(criteria)))

    def _listing(self):
        listing = self._call("listing folders", lambda c: c.list_folders())
        capabilities = self._call("reading capabilities", lambda c: c.capabilities())
        return listing, set(capabilities)

    def _call(self, what: str, command, folder: str | None = None):
        """Run one imapclient command; map its failures to MailboxError.

        With `folder` (an EXAMINE), a NO/BAD reply raises _FolderGone instead: the
        session is fine, the folder is not there.
        """
        if self._broken:
            raise MailboxUnavailable("This mailbox connection failed earlier; open a new one.")
        if self._client is None:
            raise RuntimeError("open() the SeedMailbox first")
        client = self._client
        try:
            result = command(client)
        except (OSError, imaplib.IMAP4.abort) as exc:
            message = self._scrub(self._failed(what, exc, client))
            raise self._fail(MailboxUnavailable(message)) from exc
        except imaplib.IMAP4.error as exc:
            if folder is not None:
                raise _FolderGone(folder, _server_text(exc)) from exc
            detail = self._scrub(f"unexpected server reply while {what}: {_server_text(exc)}")
            raise self._fail(MailboxUnavailable(f"{self.endpoint.address}: {detail}")) from exc
        self.last_used = time.monotonic()
        return result

    def _fail(self, error: MailboxUnavailable) -> MailboxUnavailable:
        # Mid-command failures leave imaplib's state unknown: never reuse the session.
        self._broken = True
        self.close()
        return error

    def _unreachable(self, exc: BaseException) -> str:
        ep = self.endpoint
        if isinstance(exc, TimeoutError):
            return f"Could not reach {ep.address} within {ep.timeout:g} s (no answer)."
        return f"Could not reach {ep.address} ({_network_detail(exc, ep)})."

    def _failed(self, what: str, exc: BaseException, client: IMAPClient) -> str:
        ep = self.endpoint
        bye = _bye_text(client)
        if bye:
            return f"{ep.address} ended the session while {what} ({bye})."
        if isinstance(exc, TimeoutError):
            return f"{ep.address} did not answer within {ep.timeout:g} s while {what}."
        if isinstance(exc, OSError):
            detail = _network_detail(exc, ep)
            return f"The connection to {ep.address} failed while {what} ({detail})."
        return f"The connection to {ep.address} broke while {what} ({_server_text(exc)})."

    def _login_refused(self, exc: LoginError) -> MailboxError:
        ep = self.endpoint
        text = self._scrub(_server_text(exc))
        code = re.match(r"\[([A-Z-]+)", text)
        if code and code.group(1) in _TRANSIENT_LOGIN_CODES:
            return MailboxUnavailable(f"{ep.address} cannot sign anyone in right now ({text}).")
        if code and code.group(1) == "PRIVACYREQUIRED":
            return MailboxAuthError(
                f"{ep.address} accepts passwords only over an encrypted connection: "
                f"choose TLS or STARTTLS ({text})."
            )
        return MailboxAuthError(f"The server refused the password for {ep.username} ({text}).")

    def _scrub(self, text: str) -> str:
        password = self.endpoint.password
        return text.replace(password, "********") if password else text


def _found_message(placement: str, folder: str, fetched: dict) -> FoundMessage:
    received = fetched.get(b"INTERNALDATE")
    if isinstance(received, datetime):
        received = received.replace(tzinfo=received.tzinfo or UTC).astimezone(UTC)
    else:
        received = None
    headers = _parse_headers(_header_block(fetched))
    values = headers.get_all("Authentication-Results") or []
    verdicts = parse_authentication_results([str(v) for v in values])
    return FoundMessage(placement=placement, folder=folder, received_at=received, **verdicts)


def _search_order(fm: FolderMap) -> list[str]:
    order = [fm.spam, fm.promotions, fm.inbox]
    if fm.spam is None:
        order += fm.searchable
    seen: list[str] = []
    for name in order:
        if name and name not in seen:
            seen.append(name)
    return seen


def _bye_text(client: IMAPClient) -> str:
    # imaplib keeps the server's "* BYE <text>" among its untagged responses.
    try:
        byes = client._imap.untagged_responses.get("BYE")
    except AttributeError:
        return ""
    if not byes:
        return ""
    text = byes[-1]
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return text.strip() or "BYE"


def _require_atom(value: str, what: str) -> None:
    printable = all("!" <= char <= "~" for char in value)
    if not value or not printable or _ATOM_SPECIALS.intersection(value):
        raise ValueError(f"the {what} {value!r} has characters an IMAP search cannot carry")


def _header_block(fetched: dict) -> bytes:
    # The key echoes the requested field list, in whatever case the server chose.
    for key, value in fetched.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER.FIELDS"):
            return value or b""
    return b""


def _parse_headers(block: bytes):
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    # imaplib puts the server's reply bytes into the message as a repr: b'...'
    text = re.sub(r"""b(['"])(.*?)\1""", r"\2", text)
    # ...and prefixes it with the command ("command: SEARCH => ", "select failed: ").
    text = re.sub(r"^(command: \S+ => |\w+ failed: )", "", text)
    if text.startswith("socket error: EOF"):
        return "the server closed the connection"
    return text.strip() or type(exc).__name__


def _network_detail(exc: BaseException, ep: ImapEndpoint) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate could not be verified: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return (
            f"TLS failed with {exc.reason or exc}: check the security setting; "
            "TLS is usually port 993, STARTTLS port 143"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing accepts IMAP connections there"
    if isinstance(exc, socket.gaierror):
        return f"the host name {ep.host} could not be resolved"
    if isinstance(exc, ConnectionResetError):
        return "the connection was reset"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return _server_text(exc)


def _shutdown(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.shutdown()


# ---------------------------------------------------------------------------
# Test connection


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    folder_map: FolderMap | None
    message: str  # plain words for the seed page
    error_kind: str | None  # None | "auth" | "unavailable"


def probe_mailbox(endpoint: ImapEndpoint) -> ProbeResult:
    """Sign in, discover the folders and sign out: the seed page's "Test connection"."""
    try:
        with SeedMailbox(endpoint) as mailbox:
            listing, capabilities = mailbox._listing()
    except MailboxAuthError as exc:
        return ProbeResult(False, None, str(exc), "auth")
    except MailboxUnavailable as exc:
        return ProbeResult(False, None, str(exc), "unavailable")
    folder_map = discover_folder_map(listing, capabilities)
    count = sum(1 for flags, _, _ in listing if not _NOT_SELECTABLE_FLAGS & _lower(flags))
    noun = "folder" if count == 1 else "folders"
    return ProbeResult(
        True, folder_map, f"Signed in and found {count} {noun}. {folder_map.describe()}", None
    )


def _lower(flags) -> set[bytes]:
    return {bytes(f).lower() for f in flags or ()}


# ---------------------------------------------------------------------------
# Worker-side pool


@dataclass
class _PoolEntry:
    mailbox: SeedMailbox
    endpoint: ImapEndpoint


class MailboxPool:
    """Kept-open, logged-in mailboxes for one worker process, keyed by the caller.

    Bounded (least recently used first out, closed on eviction) and safe to call
    from several threads; a mailbox it hands out must still be used by one thread at
    a time.
    """

    def __init__(self, max_size: int = 500, *, idle_check_after: float = 30.0):
        self.max_size = max_size
        # A session used this recently is assumed alive: no NOOP round trip per check.
        self.idle_check_after = idle_check_after
        self._entries: OrderedDict[str, _PoolEntry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def mailbox(self, key: str, endpoint: ImapEndpoint) -> SeedMailbox:
        """The open mailbox for `key`, reopened when dead or when `endpoint` changed."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            if entry.endpoint == endpoint and self._still_good(entry.mailbox):
                return self._keep(key, entry)
            entry.mailbox.close()
        mailbox = SeedMailbox(endpoint)
        mailbox.open()  # outside the lock: a slow server must not stall other keys
        return self._keep(key, _PoolEntry(mailbox, endpoint))

    def discard(self, key: str) -> None:
        """Close and forget the mailbox for `key` (after a MailboxUnavailable)."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is not None:
            entry.mailbox.close()

    def close_all(self) -> None:
        """Close every kept mailbox."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.mailbox.close()

    def _still_good(self, mailbox: SeedMailbox) -> bool:
        if not mailbox.is_open:
            return False
        if time.monotonic() - mailbox.last_used < self.idle_check_after:
            return True
        return mailbox.is_alive()

    def _keep(self, key: str, entry: _PoolEntry) -> SeedMailbox:
        evicted = []
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None and previous.mailbox is not entry.mailbox:
                evicted.append(previous)  # another thread opened one for this key meanwhile
            self._entries[key] = entry
            while len(self._entries) > self.max_size:
                evicted.append(self._entries.popitem(last=False)[1])
        for old in evicted:
            old.mailbox.close()
        return entry.mailbox
