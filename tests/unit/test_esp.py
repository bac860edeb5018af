"""Canonical ESP: the one rule every grouping by provider uses."""

import pytest

from mailer_app.models import Esp
from mailer_app.services.esp import canonical_esp, imap_defaults_for


@pytest.mark.parametrize(
    ("address", "esp"),
    [
        ("a@gmail.com", Esp.GMAIL),
        ("a@GoogleMail.com", Esp.GMAIL),
        ("a@outlook.com", Esp.OUTLOOK),
        ("a@hotmail.com", Esp.OUTLOOK),
        ("a@hotmail.co.uk", Esp.OUTLOOK),
        ("a@live.fr", Esp.OUTLOOK),
        ("a@msn.com", Esp.OUTLOOK),
        ("a@outlook.de", Esp.OUTLOOK),
        ("a@yahoo.com", Esp.YAHOO),
        ("a@yahoo.co.jp", Esp.YAHOO),
        ("a@ymail.com", Esp.YAHOO),
        ("a@rocketmail.com", Esp.YAHOO),
        ("a@aol.com", Esp.AOL),
        ("a@icloud.com", Esp.ICLOUD),
        ("a@me.com", Esp.ICLOUD),
        ("a@mac.com", Esp.ICLOUD),
        ("a@gmx.de", Esp.GMX),
        ("a@gmx.net", Esp.GMX),
        ("a@zoho.com", Esp.ZOHO),
        ("a@zohomail.eu", Esp.ZOHO),
        ("a@gmail.lab", Esp.GMAIL),
        ("a@outlook.lab", Esp.OUTLOOK),
        ("a@yahoo.lab", Esp.YAHOO),
        ("a@legacy.lab", Esp.OTHER),
        ("a@example.com", Esp.OTHER),
        ("a@notgmail.com", Esp.OTHER),
        ("a@mail.yahoo.example", Esp.OTHER),
        ("not-an-address", Esp.OTHER),
        ("", Esp.OTHER),
        ("hotmail.com", Esp.OUTLOOK),  # a bare domain works too
        ("  A@Gmail.Com.  ", Esp.GMAIL),
    ],
)
def test_canonical_esp(address, esp):
    assert canonical_esp(address) == esp


def test_imap_defaults_prefill_known_providers_and_the_lab():
    assert imap_defaults_for("x@gmail.com") == ("imap.gmail.com", 993, "tls")
    assert imap_defaults_for("x@hotmail.co.uk") == ("outlook.office365.com", 993, "tls")
    assert imap_defaults_for("x@gmail.lab", lab_imap_port=1143) == ("127.0.0.1", 1143, "plain")
    assert imap_defaults_for("x@corp.example") == ("imap.corp.example", 993, "tls")
