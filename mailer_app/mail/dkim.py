"""DKIM signing of outgoing messages (RFC 6376, RFC 8463), with dkimpy.

A `DkimSigner(domain, selector, private_key_pem)` is made once per sender account
(`services.senders.dkim_signer_for`) and `signer.sign(message)` returns the message
with a DKIM-Signature header in front:

- canonicalization relaxed/relaxed (survives the header refolding and trailing-space
  changes relays make), rsa-sha256 or ed25519-sha256 by key type;
- signed headers: From, To, Subject, Date, Message-ID, MIME-Version, Content-Type,
  List-Unsubscribe, List-Unsubscribe-Post, Reply-To. Each is listed in h= once more
  than the message has it ("oversigning"), so a header added on the way, a second
  Subject or a Reply-To the message did not have, makes the signature fail.

Keys are PEM private keys: RSA of 1024 to 4096 bits (2048 recommended; receivers
must accept 1024-4096, RFC 8301) or Ed25519. Ed25519 needs PyNaCl (dkimpy signs with
it). The private key never appears in a repr, a log line or an error message.

`public_dns_record()` is the TXT value to publish at `dns_name`
("<selector>._domainkey.<domain>"); `generate_key()` makes a key for tests and dev.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import dkim as dkimpy
import idna
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

SIGNED_HEADERS = (
    "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type",
    "List-Unsubscribe", "List-Unsubscribe-Post", "Reply-To",
)  # fmt: skip
MIN_RSA_BITS = 1024
RECOMMENDED_RSA_BITS = 2048
MAX_RSA_BITS = 4096
MAX_PEM_CHARS = 16_000  # a 4096-bit RSA key in PEM is about 3,300 characters
# RFC 6376 3.1: a selector is one or more dot-separated labels (letters, digits, "-").
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})+\Z")
SELECTOR_MAX_LENGTH = 63
DOMAIN_MAX_LENGTH = 253
TXT_STRING_MAX = 255  # one DNS character-string; longer TXT values are split


class DkimKeyError(ValueError):
    """A DKIM key, domain or selector that cannot be used; the message says why."""


class DkimSigningError(RuntimeError):
    """dkimpy could not sign this message (a malformed message or key)."""


@dataclass(frozen=True)
class DkimKey:
    """A checked private key. `pem` is PKCS#8 PEM text; keep it out of logs."""

    algorithm: str  # "rsa" or "ed25519"
    bits: int  # RSA modulus size; 256 for Ed25519
    pem: str
    public_key_b64: str  # the p= value of the DNS record

    def __repr__(self) -> str:  # never the key
        return f"DkimKey(algorithm={self.algorithm!r}, bits={self.bits})"

    @property
    def dns_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key_b64}"

    @property
    def advice(self) -> list[str]:
        """Plain-language notes about this key (empty when there is nothing to say)."""
        if self.algorithm == "rsa" and self.bits < RECOMMENDED_RSA_BITS:
            return [
                f"This RSA key has {self.bits} bits. It works, but {RECOMMENDED_RSA_BITS} "
                "bits is recommended: shorter keys can be broken and some receivers "
                "will stop trusting them."
            ]
        if self.algorithm == "ed25519":
            return [
                "Gmail and Outlook do not check Ed25519 signatures yet, so on their own "
                "they do not help delivery there. Use an RSA 2048-bit key (or sign with "
                "both, under two selectors)."
            ]
        return []


def load_private_key(private_key_pem: str | bytes) -> DkimKey:
    """Check a PEM private key for DKIM; DkimKeyError in plain words if unusable."""
    if isinstance(private_key_pem, bytes):
        try:
            private_key_pem = private_key_pem.decode("ascii")
        except UnicodeDecodeError:
            raise DkimKeyError(_NOT_PEM) from None
    text = (private_key_pem or "").strip().replace("\r\n", "\n").replace("\r", "\n")
    if not text:
        raise DkimKeyError("Paste the private key (the text starting with -----BEGIN).")
    if len(text) > MAX_PEM_CHARS:
        raise DkimKeyError("This is too long to be a DKIM private key.")
    if "PUBLIC KEY-----" in text and "PRIVATE KEY-----" not in text:
        raise DkimKeyError(
            "This is a public key. Paste the private key here; the public key goes in DNS."
        )
    if "-----BEGIN" not in text:
        raise DkimKeyError(_NOT_PEM)
    try:
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
    except TypeError:
        raise DkimKeyError(
            "This private key is protected with a passphrase. Save it without one "
            "(for example `openssl pkey -in key.pem -out plain.pem`) and paste that."
        ) from None
    except (ValueError, UnicodeError):
        raise DkimKeyError(_NOT_PEM) from None
    except Exception:  # cryptography's UnsupportedAlgorithm and the like
        raise DkimKeyError(_WRONG_TYPE) from None
    if isinstance(key, rsa.RSAPrivateKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise DkimKeyError(
                f"This RSA key has only {bits} bits; receivers ignore DKIM keys under "
                f"{MIN_RSA_BITS} bits. Make a {RECOMMENDED_RSA_BITS}-bit key."
            )
        if bits > MAX_RSA_BITS:
            raise DkimKeyError(
                f"This RSA key has {bits} bits; receivers are only required to check "
                f"keys up to {MAX_RSA_BITS} bits. Make a {RECOMMENDED_RSA_BITS}-bit key."
            )
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = "rsa"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        bits = 256
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        algorithm = "ed25519"
    else:
        raise DkimKeyError(_WRONG_TYPE)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return DkimKey(algorithm, bits, pem, base64.b64encode(public).decode("ascii"))


_NOT_PEM = (
    "This is not a private key in PEM format. Paste the whole key, from "
    "-----BEGIN PRIVATE KEY----- (or -----BEGIN RSA PRIVATE KEY-----) to the END line."
)
_WRONG_TYPE = "DKIM keys are RSA or Ed25519 keys; this private key is of another kind."


def check_selector(selector: object) -> str:
    """A DKIM selector ("s1", "mail.2025"): letters, digits, "-" and dots."""
    text = "" if selector is None else str(selector).strip().lower()
    if not text:
        raise DkimKeyError("Enter the DKIM selector, like “mail” or “s2025”.")
    if len(text) > SELECTOR_MAX_LENGTH or not _SELECTOR.match(text):
        raise DkimKeyError(
            "A DKIM selector is made of letters, digits and hyphens, optionally "
            "separated by dots (like “mail” or “s2025.news”), at most "
            f"{SELECTOR_MAX_LENGTH} characters."
        )
    return text


def check_domain(domain: object) -> str:
    """A signing domain in ASCII (IDNA) form, lower case, like "example.com"."""
    text = "" if domain is None else str(domain).strip().rstrip(".").lower()
    if not text:
        raise DkimKeyError("Enter the domain to sign for, like example.com.")
    try:
        text = idna.encode(text, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise DkimKeyError(f"“{_shown(text)}” is not a domain name.") from None
    if len(text) > DOMAIN_MAX_LENGTH or not _HOSTNAME.match(text):
        raise DkimKeyError(
            f"“{_shown(text)}” is not a domain name with a dot in it, like example.com."
        )
    return text


def _shown(text: str) -> str:
    """`text` made safe to repeat in a message (printable, short)."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= 80 else clean[:77] + "..."


def generate_key(algorithm: str = "rsa", bits: int = RECOMMENDED_RSA_BITS) -> str:
    """A new private key as PKCS#8 PEM text (tests, development, a "make a key" button)."""
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown DKIM key algorithm {algorithm!r}")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def split_txt(value: str) -> list[str]:
    """`value` cut into DNS character-strings of at most 255 characters each."""
    return [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]


def _header_names(message: bytes) -> list[bytes]:
    """The lower-cased names of the message's header fields, in order."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end]
    names = []
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t") or b":" not in line:
            continue
        names.append(line.split(b":", 1)[0].strip().lower())
    return names


class DkimSigner:
    """Signs messages for one (domain, selector, key); build once, sign many."""

    __slots__ = ("domain", "selector", "key", "_privkey", "_algorithm")

    def __init__(self, domain: str, selector: str, private_key_pem: str | bytes) -> None:
        self.domain = check_domain(domain)
        self.selector = check_selector(selector)
        self.key = load_private_key(private_key_pem)
        if self.key.algorithm == "rsa":
            self._algorithm = b"rsa-sha256"
            self._privkey = self.key.pem.encode("ascii")
        else:
            try:
                import nacl.signing  # noqa: F401  (dkimpy signs Ed25519 with PyNaCl)
            except ImportError:
                raise DkimKeyError(
                    "Ed25519 keys need the PyNaCl package, which is not installed here. "
                    "Use an RSA 2048-bit key."
                ) from None
            private = serialization.load_pem_private_key(
                self.key.pem.encode("ascii"), password=None
            )
            seed = private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            self._algorithm = b"ed25519-sha256"
            self._privkey = base64.b64encode(seed)

    def __repr__(self) -> str:  # never the key
        return (
            f"DkimSigner(domain={self.domain!r}, selector={self.selector!r}, "
            f"algorithm={self.key.algorithm!r})"
        )

    @property
    def dns_name(self) -> str:
        """Where the public record goes: "<selector>._domainkey.<domain>"."""
        return f"{self.selector}._domainkey.{self.domain}"

    def public_dns_record(self) -> str:
        """The TXT record value: "v=DKIM1; k=rsa; p=..." (or k=ed25519)."""
        return self.key.dns_value

    def include_headers(self, message: bytes) -> list[bytes]:
        """The h= list for `message`: each signed header once more than it occurs."""
        names = _header_names(message)
        listed: list[bytes] = []
        for name in SIGNED_HEADERS:
            lower = name.lower().encode("ascii")
            listed.extend([lower] * (names.count(lower) + 1))
        return listed

    def signature_header(self, message: bytes) -> bytes:
        """The DKIM-Signature header field for `message` (ending in CRLF)."""
        try:
            return dkimpy.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._privkey,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self._algorithm,
                include_headers=self.include_headers(message),
                linesep=b"\r\n",
            )
        except dkimpy.DKIMException as exc:
            # The type only: dkimpy's text could quote key or message material.
            raise DkimSigningError(
                f"The message could not be DKIM-signed ({type(exc).__name__})."
            ) from None

    def sign(self, message: bytes) -> bytes:
        """`message` with its DKIM-Signature header in front."""
        return self.signature_header(message) + message
