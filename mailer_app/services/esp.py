"""Which mailbox provider (ESP) an address belongs to: the one grouping rule.

Everything that groups results by provider (rates, dashboards, alerts, seed lists)
calls `canonical_esp`, so "hotmail.co.uk" and "outlook.com" always count together.
"""

from __future__ import annotations

from mailer_app.models import Esp

# Exact domains.
_EXACT = {
    "gmail.com": Esp.GMAIL,
    "googlemail.com": Esp.GMAIL,
    "outlook.com": Esp.OUTLOOK,
    "msn.com": Esp.OUTLOOK,
    "ymail.com": Esp.YAHOO,
    "rocketmail.com": Esp.YAHOO,
    "aol.com": Esp.AOL,
    "icloud.com": Esp.ICLOUD,
    "me.com": Esp.ICLOUD,
    "mac.com": Esp.ICLOUD,
    # The local mail lab's simulated providers.
    "gmail.lab": Esp.GMAIL,
    "outlook.lab": Esp.OUTLOOK,
    "yahoo.lab": Esp.YAHOO,
}

# Domains whose first label names the provider under any country suffix
# (hotmail.co.uk, live.fr, yahoo.co.jp, gmx.de, outlook.de, zoho.eu, ...).
_BY_FIRST_LABEL = {
    "hotmail": Esp.OUTLOOK,
    "live": Esp.OUTLOOK,
    "outlook": Esp.OUTLOOK,
    "yahoo": Esp.YAHOO,
    "gmx": Esp.GMX,
    "zoho": Esp.ZOHO,
    "zohomail": Esp.ZOHO,
    "aol": Esp.AOL,
}


def domain_of(address: str) -> str:
    """The lowercased domain of an address ('' when there is none)."""
    _, at, domain = address.strip().rpartition("@")
    return domain.lower().rstrip(".") if at else ""


def canonical_esp(address_or_domain: str) -> Esp:
    """The canonical ESP of an email address or a bare domain; `other` if unknown."""
    domain = domain_of(address_or_domain) if "@" in address_or_domain else address_or_domain
    domain = domain.strip().lower().rstrip(".")
    if not domain:
        return Esp.OTHER
    if domain in _EXACT:
        return _EXACT[domain]
    first_label = domain.split(".", 1)[0]
    if "." in domain and first_label in _BY_FIRST_LABEL:
        return _BY_FIRST_LABEL[first_label]
    return Esp.OTHER


# IMAP servers of the known providers, to prefill the seed form (host, port, TLS).
IMAP_DEFAULTS: dict[Esp, tuple[str, int, str]] = {
    Esp.GMAIL: ("imap.gmail.com", 993, "tls"),
    Esp.OUTLOOK: ("outlook.office365.com", 993, "tls"),
    Esp.YAHOO: ("imap.mail.yahoo.com", 993, "tls"),
    Esp.ICLOUD: ("imap.mail.me.com", 993, "tls"),
    Esp.AOL: ("imap.aol.com", 993, "tls"),
    Esp.GMX: ("imap.gmx.net", 993, "tls"),
    Esp.ZOHO: ("imap.zoho.com", 993, "tls"),
}


def imap_defaults_for(address: str, *, lab_imap_port: int | None = None) -> tuple[str, int, str]:
    """Suggested IMAP (host, port, security) for an address; editable by the user.

    Lab addresses point at the local lab's Dovecot on loopback.
    """
    if domain_of(address).endswith(".lab") and lab_imap_port:
        return ("127.0.0.1", lab_imap_port, "plain")
    esp = canonical_esp(address)
    if esp in IMAP_DEFAULTS:
        return IMAP_DEFAULTS[esp]
    domain = domain_of(address)
    return (f"imap.{domain}" if domain else "", 993, "tls")
