"""Folder discovery and Authentication-Results parsing on what real providers send.

The LIST shapes are as imapclient's list_folders() returns them (flags, delimiter,
name), recorded from the providers' IMAP servers; names that are not plain ASCII
arrive decoded from modified UTF-7, except where a test passes the raw bytes on
purpose.
"""

from __future__ import annotations

import json

import pytest

from mailer_app.mail.imap import (
    FolderMap,
    ImapEndpoint,
    SeedMailbox,
    discover_folder_map,
    parse_authentication_results,
)

GMAIL_CAPS = {
    b"IMAP4REV1", b"UNSELECT", b"IDLE", b"NAMESPACE", b"QUOTA", b"ID", b"XLIST",
    b"CHILDREN", b"X-GM-EXT-1", b"UIDPLUS", b"COMPRESS=DEFLATE", b"ENABLE", b"MOVE",
    b"CONDSTORE", b"ESEARCH", b"UTF8=ACCEPT", b"LIST-EXTENDED", b"LIST-STATUS",
    b"LITERAL-", b"SPECIAL-USE", b"APPENDLIMIT=35651584",
}  # fmt: skip
PLAIN_CAPS = {b"IMAP4REV1", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE", b"SPECIAL-USE"}

GMAIL = [
    ((b"\\HasNoChildren",), b"/", "INBOX"),
    ((b"\\HasChildren", b"\\Noselect"), b"/", "[Gmail]"),
    ((b"\\All", b"\\HasNoChildren"), b"/", "[Gmail]/All Mail"),
    ((b"\\Drafts", b"\\HasNoChildren"), b"/", "[Gmail]/Drafts"),
    ((b"\\HasNoChildren", b"\\Important"), b"/", "[Gmail]/Important"),
    ((b"\\HasNoChildren", b"\\Sent"), b"/", "[Gmail]/Sent Mail"),
    ((b"\\HasNoChildren", b"\\Junk"), b"/", "[Gmail]/Spam"),
    ((b"\\Flagged", b"\\HasNoChildren"), b"/", "[Gmail]/Starred"),
    ((b"\\HasNoChildren", b"\\Trash"), b"/", "[Gmail]/Trash"),
    ((b"\\HasNoChildren",), b"/", "Receipts"),
]
# A Gmail account set to German: "[Google Mail]" and translated folder names.
GMAIL_DE = [
    ((b"\\HasNoChildren",), b"/", "INBOX"),
    ((b"\\HasChildren", b"\\Noselect"), b"/", "[Google Mail]"),
    ((b"\\All", b"\\HasNoChildren"), b"/", "[Google Mail]/Alle Nachrichten"),
    ((b"\\Drafts", b"\\HasNoChildren"), b"/", "[Google Mail]/Entwürfe"),
    ((b"\\HasNoChildren", b"\\Sent"), b"/", "[Google Mail]/Gesendet"),
    ((b"\\HasNoChildren", b"\\Junk"), b"/", "[Google Mail]/Spam"),
    ((b"\\HasNoChildren", b"\\Trash"), b"/", "[Google Mail]/Papierkorb"),
]
OUTLOOK_COM = [
    ((b"\\HasNoChildren",), b"/", "Archive"),
    ((b"\\HasChildren",), b"/", "Calendar"),
    ((b"\\HasNoChildren",), b"/", "Calendar/Birthdays"),
    ((b"\\HasNoChildren",), b"/", "Contacts"),
    ((b"\\HasNoChildren", b"\\Trash"), b"/", "Deleted Items"),
    ((b"\\HasNoChildren", b"\\Drafts"), b"/", "Drafts"),
    ((b"\\Marked", b"\\HasNoChildren"), b"/", "INBOX"),
    ((b"\\HasNoChildren", b"\\Junk"), b"/", "Junk Email"),
    ((b"\\HasNoChildren",), b"/", "Notes"),
    ((b"\\HasNoChildren",), b"/", "Outbox"),
    ((b"\\HasNoChildren", b"\\Sent"), b"/", "Sent Items"),
]
# Yahoo lists its inbox as "Inbox" and its spam folder as "Bulk".
YAHOO = [
    ((b"\\HasNoChildren", b"\\Archive"), b"/", "Archive"),
    ((b"\\Junk", b"\\HasNoChildren"), b"/", "Bulk"),
    ((b"\\Drafts", b"\\HasNoChildren"), b"/", "Draft"),
    ((b"\\HasNoChildren",), b"/", "Inbox"),
    ((b"\\Sent", b"\\HasNoChildren"), b"/", "Sent"),
    ((b"\\Trash", b"\\HasNoChildren"), b"/", "Trash"),
]
# GMX: no special-use flags at all. Two names are given as the raw modified UTF-7
# bytes a client without folder decoding would see.
GMX = [
    ((b"\\HasNoChildren",), b"/", "INBOX"),
    ((b"\\HasNoChildren",), b"/", b"Entw&APw-rfe"),
    ((b"\\HasNoChildren",), b"/", b"Gel&APY-scht"),
    ((b"\\HasNoChildren",), b"/", "Gesendet"),
    ((b"\\HasNoChildren",), b"/", "OUTBOX"),
    ((b"\\HasNoChildren",), b"/", "Spamverdacht"),
    ((b"\\HasNoChildren",), b"/", "Rechnungen"),
]
# A French provider on Courier-IMAP: everything under "INBOX." and no flags.
FRENCH = [
    ((b"\\HasChildren",), b".", "INBOX"),
    ((b"\\HasNoChildren",), b".", "INBOX.Brouillons"),
    ((b"\\HasNoChildren",), b".", "INBOX.Corbeille"),
    ((b"\\HasNoChildren",), b".", "INBOX.Courrier indésirable"),
    ((b"\\HasNoChildren",), b".", "INBOX.Éléments envoyés"),
    ((b"\\HasNoChildren",), b".", "INBOX.Factures"),
]
NO_SPAM = [
    ((b"\\HasNoChildren",), b"/", "INBOX"),
    ((b"\\HasNoChildren", b"\\Sent"), b"/", "Sent"),
    ((b"\\HasNoChildren", b"\\Drafts"), b"/", "Drafts"),
    ((b"\\HasNoChildren", b"\\Trash"), b"/", "Trash"),
    ((b"\\HasNoChildren",), b"/", "Receipts"),
]


def test_gmail_spam_is_the_junk_flagged_folder_and_promotions_a_category():
    fm = discover_folder_map(GMAIL, GMAIL_CAPS)
    assert fm == FolderMap(
        inbox="INBOX",
        spam="[Gmail]/Spam",
        promotions=None,
        gmail_categories=True,
        searchable=["INBOX", "[Gmail]/Spam", "Receipts"],
        spam_flagged=True,
    )
    assert fm.describe() == (
        "Inbox: INBOX. Spam: [Gmail]/Spam (flagged \\Junk by the server). "
        "Promotions: Gmail category."
    )


def test_gmail_in_german_uses_google_mail_prefix():
    fm = discover_folder_map(GMAIL_DE, GMAIL_CAPS)
    assert fm.spam == "[Google Mail]/Spam"
    assert fm.searchable == ["INBOX", "[Google Mail]/Spam"]


def test_outlook_com_junk_email():
    fm = discover_folder_map(OUTLOOK_COM, PLAIN_CAPS)
    assert (fm.inbox, fm.spam, fm.spam_flagged) == ("INBOX", "Junk Email", True)
    assert (fm.promotions, fm.gmail_categories) == (None, False)
    assert "Sent Items" not in fm.searchable and "Deleted Items" not in fm.searchable
    assert "Outbox" not in fm.searchable and "Drafts" not in fm.searchable
    assert {"INBOX", "Junk Email", "Archive"} <= set(fm.searchable)


def test_yahoo_bulk_and_its_mixed_case_inbox():
    fm = discover_folder_map(YAHOO, PLAIN_CAPS)
    assert (fm.inbox, fm.spam, fm.spam_flagged) == ("Inbox", "Bulk", True)
    assert fm.searchable == ["Inbox", "Archive", "Bulk"]


def test_gmx_without_special_use_flags_found_by_german_name():
    fm = discover_folder_map(GMX, PLAIN_CAPS)
    assert (fm.spam, fm.spam_flagged) == ("Spamverdacht", False)
    # Names given as modified UTF-7 bytes come out decoded, ready for SELECT.
    assert fm.searchable == ["INBOX", "Spamverdacht", "Rechnungen"]
    assert "recognised by its name" in fm.describe()


@pytest.mark.parametrize(
    "name",
    [
        "Spam-Verdacht", "Junk-E-Mail", "Junk E-mail", "Junk Email", "Bulk Mail",
        "Correo no deseado", "Posta indesiderata", "Ongewenste e-mail",
        "Nevyžádaná pošta", "Спам", "Нежелательная почта", "JUNK", "spam",
    ],
)  # fmt: skip
def test_spam_folder_names_in_many_languages(name):
    listing = [((), b"/", "INBOX"), ((), b"/", "Archive"), ((), b"/", name)]
    assert discover_folder_map(listing, PLAIN_CAPS).spam == name


def test_french_courier_server_with_inbox_prefix_and_dot_delimiter():
    fm = discover_folder_map(FRENCH, PLAIN_CAPS)
    assert fm.spam == "INBOX.Courrier indésirable"
    assert fm.searchable == ["INBOX", "INBOX.Courrier indésirable", "INBOX.Factures"]


def test_decomposed_unicode_name_from_a_mac_client_still_matches():
    nfd = "Courrier inde\u0301sirable"
    listing = [((), b"/", "INBOX"), ((), b"/", nfd)]
    # The name given back is the server's own spelling, which SELECT needs.
    assert discover_folder_map(listing, PLAIN_CAPS).spam == nfd


def test_no_spam_folder_at_all():
    fm = discover_folder_map(NO_SPAM, PLAIN_CAPS)
    assert fm.spam is None and not fm.spam_flagged
    assert fm.searchable == ["INBOX", "Receipts"]
    assert fm.describe() == (
        "Inbox: INBOX. No spam folder found: messages outside the inbox will be counted "
        "as spam, never as inbox."
    )


def test_a_flag_beats_a_name_and_a_top_level_name_beats_a_nested_one():
    flagged = [((), b"/", "INBOX"), ((), b"/", "Spam"), ((b"\\Junk",), b"/", "Junk")]
    assert discover_folder_map(flagged, PLAIN_CAPS).spam == "Junk"
    nested = [((), b"/", "INBOX"), ((), b"/", "Projects/Spam"), ((), b"/", "Junk")]
    assert discover_folder_map(nested, PLAIN_CAPS).spam == "Junk"


def test_noselect_folders_are_never_chosen_or_searched():
    listing = [
        ((), b"/", "INBOX"),
        ((b"\\Noselect", b"\\HasChildren"), b"/", "Spam"),
        ((b"\\NonExistent",), b"/", "Junk"),
    ]
    fm = discover_folder_map(listing, PLAIN_CAPS)
    assert fm.spam is None
    assert fm.searchable == ["INBOX"]


def test_promotions_folder_by_name_only_without_gmail_extension():
    listing = [
        ((), b"/", "INBOX"),
        ((b"\\Junk",), b"/", "[Gmail]/Spam"),
        ((), b"/", "Promotions"),
    ]
    fm = discover_folder_map(listing, PLAIN_CAPS)
    assert (fm.promotions, fm.gmail_categories) == ("Promotions", False)
    assert fm.describe().endswith("Promotions: Promotions.")
    de = [((), b"/", "INBOX"), ((), b"/", "Werbung")]
    assert discover_folder_map(de, PLAIN_CAPS).promotions == "Werbung"
    gmail = discover_folder_map(listing, GMAIL_CAPS)
    assert (gmail.promotions, gmail.gmail_categories) == (None, True)


def test_folder_map_json_round_trip():
    fm = discover_folder_map(GMX, PLAIN_CAPS)
    stored = json.loads(json.dumps(fm.to_json()))
    assert FolderMap.from_json(stored) == fm
    gmail = discover_folder_map(GMAIL, GMAIL_CAPS)
    assert FolderMap.from_json(json.loads(json.dumps(gmail.to_json()))) == gmail


def test_folder_map_from_nothing_or_an_older_partial_dict():
    assert FolderMap.from_json(None) is None
    assert FolderMap.from_json({}) is None
    assert FolderMap.from_json({"spam": "Junk"}) == FolderMap(inbox="INBOX", spam="Junk")


GMAIL_AR = (
    "mx.google.com;\r\n"
    "       dkim=pass header.i=@example.com header.s=s1 header.b=AbCdEf12;\r\n"
    "       spf=pass (google.com: domain of bounces+123@em.example.com designates "
    '167.89.0.1 as permitted sender; checked) smtp.mailfrom="bounces+123@em.example.com";\r\n'
    "       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.com"
)
MICROSOFT_AR = (
    "spf=softfail (sender IP is 203.0.113.9)\r\n"
    " smtp.mailfrom=example.com; dkim=none (message not signed)\r\n"
    " header.d=none;dmarc=fail action=oreject\r\n"
    " header.from=example.com;compauth=fail reason=001"
)
YAHOO_AR = (
    "atlas-production.v2-mail-prod1-gq1.omega.yahoo.com;"
    " dkim=pass header.i=@example.com header.s=s1;"
    " spf=pass smtp.mailfrom=example.com;"
    " dmarc=pass(p=REJECT) header.from=example.com;"
)


def test_gmail_authentication_results_with_comments_holding_semicolons():
    assert parse_authentication_results([GMAIL_AR]) == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
    }


def test_microsoft_authentication_results_without_authserv_id_and_compauth():
    assert parse_authentication_results([MICROSOFT_AR]) == {
        "spf": "softfail",
        "dkim": "none",
        "dmarc": "fail",
    }


def test_yahoo_comment_glued_to_the_result_and_trailing_semicolon():
    assert parse_authentication_results([YAHOO_AR]) == {
        "spf": "pass",
        "dkim": "pass",
        "dmarc": "pass",
    }


def test_first_verdict_per_method_wins_across_headers():
    values = [
        "mx.receiver.example; spf=fail smtp.mailfrom=x.example; dkim=pass header.d=x.example",
        "relay.example; spf=pass; dkim=fail; dmarc=pass",
    ]
    assert parse_authentication_results(values) == {
        "spf": "fail",
        "dkim": "pass",
        "dmarc": "pass",
    }


def test_missing_methods_none_results_and_versions():
    assert parse_authentication_results(["mx.example.com; spf=pass smtp.mailfrom=a.example"]) == {
        "spf": "pass",
        "dkim": None,
        "dmarc": None,
    }
    assert parse_authentication_results(["mx.example.com 1; none"]) == dict.fromkeys(
        ("spf", "dkim", "dmarc")
    )
    assert parse_authentication_results([]) == dict.fromkeys(("spf", "dkim", "dmarc"))
    versioned = "mx.example.com; DKIM/1 = Pass header.d=a.example; SPF=TempError"
    assert parse_authentication_results([versioned]) == {
        "spf": "temperror",
        "dkim": "pass",
        "dmarc": None,
    }


def test_a_quoted_semicolon_does_not_split_a_clause():
    value = 'mx.example.com; spf=pass smtp.mailfrom="a;dkim=fail@x.example"; dkim=pass'
    assert parse_authentication_results([value])["dkim"] == "pass"


def test_endpoint_repr_hides_the_password_and_checks_security():
    endpoint = ImapEndpoint("imap.example.com", 993, "tls", "me@example.com", "hunter2-secret")
    assert "hunter2-secret" not in repr(endpoint)
    with pytest.raises(ValueError, match="security"):
        ImapEndpoint("imap.example.com", 993, "ssl", "me@example.com", "pw")


@pytest.mark.parametrize("token", ["", "two words", "paren(", "star*", 'quote"', "é"])
def test_find_refuses_tokens_an_imap_search_cannot_carry(token):
    mailbox = SeedMailbox(ImapEndpoint("127.0.0.1", 1, "plain", "u", "p"))
    with pytest.raises(ValueError):
        mailbox.find(token)
