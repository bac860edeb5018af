"""The lab filter: every rule, every outcome, at every simulated provider.

The table in docs/LAB.md is the contract; these tests hold the filter to it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailer_app.lab.filter import (
    ALL_PROFILES,
    GMAIL,
    LAB_ESPS,
    LEGACY,
    OTHER,
    OUTLOOK,
    SPAM_PHRASES,
    YAHOO,
    authentication_results,
    decide,
    esp_for_address,
)
from mailer_app.lab.intake import trace_headers

DKIM = "v=1; a=rsa-sha256; d=sender.lab; s=lab; h=from:to:subject; bh=abc=; b=def="


def make(
    *,
    subject: str = "Monthly update",
    body: str = "Here is what happened this month.",
    html: str | None = None,
    dkim: bool = True,
    message_id: bool = True,
    date: bool = True,
    unsubscribe: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = "News <news@sender.lab>"
    msg["To"] = "someone@gmail.lab"
    msg["Subject"] = subject
    if dkim:
        msg["DKIM-Signature"] = DKIM
    if message_id:
        msg["Message-ID"] = "<1@sender.lab>"
    if date:
        msg["Date"] = "Mon, 02 Mar 2026 10:00:00 +0000"
    if unsubscribe:
        msg["List-Unsubscribe"] = "<https://sender.lab/u/1>"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


def spammy(n: int) -> str:
    """A body with exactly `n` distinct spam phrases."""
    return "Dear friend, " + ". ".join(SPAM_PHRASES[:n]) + "."


PROMO = dict(subject="Spring sale: 30% off everything", unsubscribe=True)


# --- providers and their folders ------------------------------------------------


def test_provider_folders_are_the_real_providers_names():
    assert (GMAIL.inbox, GMAIL.spam, GMAIL.sent, GMAIL.promotions) == (
        "INBOX", "[Gmail]/Spam", "[Gmail]/Sent Mail", "Promotions"
    )  # fmt: skip
    assert (OUTLOOK.inbox, OUTLOOK.spam, OUTLOOK.sent, OUTLOOK.promotions) == (
        "INBOX", "Junk Email", "Sent Items", None
    )  # fmt: skip
    assert (YAHOO.inbox, YAHOO.spam, YAHOO.sent, YAHOO.promotions) == (
        "INBOX", "Bulk", "Sent", None
    )  # fmt: skip
    assert (LEGACY.inbox, LEGACY.spam, LEGACY.sent, LEGACY.promotions) == (
        "INBOX", "Spam", None, None
    )  # fmt: skip


def test_special_use_flags_per_provider():
    assert GMAIL.special_use == {"[Gmail]/Spam": "\\Junk", "[Gmail]/Sent Mail": "\\Sent"}
    assert OUTLOOK.special_use == {"Junk Email": "\\Junk", "Sent Items": "\\Sent"}
    assert YAHOO.special_use == {"Bulk": "\\Junk", "Sent": "\\Sent"}
    assert LEGACY.special_use == {}  # its "Spam" is found by name only


def test_no_folder_name_means_two_things_across_providers():
    # Dovecot declares special-use per folder name for every mailbox at once.
    flags: dict[str, str | None] = {}
    for profile in ALL_PROFILES:
        for folder in profile.folders:
            flag = profile.special_use.get(folder)
            assert flags.setdefault(folder, flag) == flag, folder


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("a@gmail.lab", GMAIL),
        ("<A@GMAIL.LAB>", GMAIL),
        ("b@outlook.lab", OUTLOOK),
        ("c@yahoo.lab", YAHOO),
        ("d@legacy.lab", LEGACY),
        ("e@example.com", OTHER),
        ("catchall@lab", OTHER),
        ("not-an-address", OTHER),
    ],
)
def test_provider_is_chosen_by_recipient_domain(address, expected):
    assert esp_for_address(address) is expected


def test_lab_domains():
    assert set(LAB_ESPS) == {"gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab"}


# --- rule 1 and 2: explicit overrides -------------------------------------------

FORCED_FOLDERS = {
    # (domain, placement) -> (placement, folder)
    ("gmail.lab", "inbox"): ("inbox", "INBOX"),
    ("gmail.lab", "spam"): ("spam", "[Gmail]/Spam"),
    ("gmail.lab", "promotions"): ("promotions", "Promotions"),
    ("gmail.lab", "drop"): ("drop", ""),
    ("outlook.lab", "inbox"): ("inbox", "INBOX"),
    ("outlook.lab", "spam"): ("spam", "Junk Email"),
    ("outlook.lab", "promotions"): ("inbox", "INBOX"),
    ("outlook.lab", "drop"): ("drop", ""),
    ("yahoo.lab", "inbox"): ("inbox", "INBOX"),
    ("yahoo.lab", "spam"): ("spam", "Bulk"),
    ("yahoo.lab", "promotions"): ("inbox", "INBOX"),
    ("yahoo.lab", "drop"): ("drop", ""),
    ("legacy.lab", "inbox"): ("inbox", "INBOX"),
    ("legacy.lab", "spam"): ("spam", "Spam"),
    ("legacy.lab", "promotions"): ("inbox", "INBOX"),
    ("legacy.lab", "drop"): ("drop", ""),
    ("example.com", "inbox"): ("inbox", "INBOX"),
    ("example.com", "spam"): ("spam", "Junk"),
    ("example.com", "promotions"): ("inbox", "INBOX"),
    ("example.com", "drop"): ("drop", ""),
}


@pytest.mark.parametrize(("domain", "forced"), list(FORCED_FOLDERS))
def test_header_override_at_every_provider(domain, forced):
    decision = decide(make(headers={"X-Lab-Placement": forced}), f"seed@{domain}")
    assert (decision.placement, decision.folder) == FORCED_FOLDERS[domain, forced]
    assert decision.reasons[0] == f"forced by X-Lab-Placement: {forced}"


@pytest.mark.parametrize(
    ("token", "placement"),
    [("[lab:inbox]", "inbox"), ("[lab:spam]", "spam"), ("[lab:promo]", "promotions"),
     ("[lab:drop]", "drop")],
)  # fmt: skip
@pytest.mark.parametrize("domain", ["gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab"])
def test_subject_token_override_at_every_provider(token, placement, domain):
    decision = decide(make(subject=f"Weekly news {token}"), f"seed@{domain}")
    assert (decision.placement, decision.folder) == FORCED_FOLDERS[domain, placement]
    assert decision.reasons[0] == f"forced by subject token {token}"


def test_promotions_forced_where_there_is_none_explains_inbox():
    decision = decide(make(headers={"X-Lab-Placement": "promotions"}), "seed@outlook.lab")
    assert decision.reasons == [
        "forced by X-Lab-Placement: promotions",
        "outlook.lab has no promotions folder: inbox",
    ]


def test_override_value_is_case_and_space_insensitive():
    assert decide(make(headers={"X-Lab-Placement": "  SPAM "}), "a@gmail.lab").placement == "spam"
    assert decide(make(subject="[LAB:Drop] hi"), "a@gmail.lab").placement == "drop"


def test_header_beats_subject_token():
    msg = make(subject="[lab:spam] hi", headers={"X-Lab-Placement": "inbox"})
    assert decide(msg, "a@gmail.lab").placement == "inbox"


def test_unknown_override_value_is_ignored_and_said_so():
    decision = decide(make(headers={"X-Lab-Placement": "archive"}), "a@gmail.lab")
    assert decision.placement == "inbox"
    assert decision.reasons[0] == (
        "ignored X-Lab-Placement: 'archive' (not one of inbox, spam, promotions, drop)"
    )


def test_override_beats_every_content_rule():
    msg = make(body=spammy(6), dkim=False, message_id=False, date=False, subject="[lab:inbox] x")
    for domain in ("gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab"):
        assert decide(msg, f"a@{domain}").placement == "inbox"


# --- rule 3: yahoo.lab needs Message-ID and Date --------------------------------


@pytest.mark.parametrize(
    ("message_id", "date", "reason"),
    [
        (False, True, "no Message-ID header: yahoo.lab files it as spam"),
        (True, False, "no Date header: yahoo.lab files it as spam"),
        (False, False, "no Message-ID and no Date header: yahoo.lab files it as spam"),
    ],
)
def test_yahoo_files_mail_without_message_id_or_date_as_bulk(message_id, date, reason):
    decision = decide(make(message_id=message_id, date=date), "a@yahoo.lab")
    assert (decision.placement, decision.folder, decision.reasons) == ("spam", "Bulk", [reason])


@pytest.mark.parametrize("domain", ["gmail.lab", "outlook.lab", "legacy.lab"])
def test_other_providers_accept_mail_without_message_id_or_date(domain):
    assert decide(make(message_id=False, date=False), f"a@{domain}").placement == "inbox"


# --- rule 4: spam score against per-provider thresholds -------------------------


@pytest.mark.parametrize(
    ("domain", "threshold", "spam_folder"),
    [("gmail.lab", 4, "[Gmail]/Spam"), ("outlook.lab", 2, "Junk Email"),
     ("yahoo.lab", 3, "Bulk"), ("legacy.lab", 3, "Spam"), ("example.com", 4, "Junk")],
)  # fmt: skip
def test_spam_score_threshold_per_provider(domain, threshold, spam_folder):
    below = decide(make(body=spammy(threshold - 1)), f"a@{domain}")
    at = decide(make(body=spammy(threshold)), f"a@{domain}")
    assert (below.placement, below.folder, below.spam_score) == ("inbox", "INBOX", threshold - 1)
    assert (at.placement, at.folder, at.spam_score) == ("spam", spam_folder, threshold)


def test_outlook_is_the_strictest():
    thresholds = {p.name: p.spam_threshold for p in ALL_PROFILES}
    assert min(thresholds, key=thresholds.get) == "outlook"


def test_no_dkim_signature_pushes_outlook_towards_junk():
    signed = decide(make(body=spammy(1)), "a@outlook.lab")
    unsigned = decide(make(body=spammy(1), dkim=False), "a@outlook.lab")
    assert (signed.placement, signed.spam_score) == ("inbox", 1)
    assert (unsigned.placement, unsigned.folder, unsigned.spam_score) == ("spam", "Junk Email", 2)
    assert "no DKIM-Signature (+1 at outlook.lab)" in unsigned.reasons
    # One point only: a clean unsigned message still reaches the inbox.
    assert decide(make(dkim=False), "a@outlook.lab").placement == "inbox"


@pytest.mark.parametrize("domain", ["gmail.lab", "yahoo.lab", "legacy.lab"])
def test_missing_dkim_costs_nothing_elsewhere(domain):
    assert decide(make(body=spammy(1), dkim=False), f"a@{domain}").spam_score == 1


def test_spam_reasons_name_the_phrases_and_the_threshold():
    msg = make(subject="You have won", body="Visit our casino. Act now!")
    decision = decide(msg, "a@yahoo.lab")
    assert decision.reasons == [
        "spam phrases 'casino', 'you have won', 'act now' (+3)",
        "spam score 3 >= yahoo.lab threshold 3",
    ]
    assert (decision.placement, decision.folder) == ("spam", "Bulk")


def test_each_phrase_counts_once_and_only_as_a_whole_word():
    assert decide(make(body="casino casino CASINO casino"), "a@gmail.lab").spam_score == 1
    assert decide(make(body="winners and casinos"), "a@gmail.lab").spam_score == 0


def test_phrases_in_html_text_count_but_not_in_tags():
    html = '<p>Try our <b>casino</b></p><a href="https://lottery.example/jackpot">x</a>'
    decision = decide(make(body="plain part", html=html), "a@gmail.lab")
    assert decision.spam_score == 1
    assert decision.reasons[0] == "spam phrases 'casino' (+1)"


# --- rule 5: promotions at gmail.lab --------------------------------------------


def test_gmail_puts_bulk_marketing_into_promotions():
    decision = decide(make(**PROMO), "a@gmail.lab")
    assert (decision.placement, decision.folder) == ("promotions", "Promotions")
    assert decision.reasons[-1] == "bulk marketing: List-Unsubscribe and 'sale', '% off'"


@pytest.mark.parametrize(
    "text", ["Our sale starts", "Get 20 % off", "A discount for you", "Your coupon",
             "Use promo code X", "Deals of the week", "Limited-time pricing", "Shop now",
             "Free shipping today"],
)  # fmt: skip
def test_every_promotional_phrase(text):
    assert decide(make(body=text, unsubscribe=True), "a@gmail.lab").placement == "promotions"


def test_marketing_words_without_list_unsubscribe_stay_in_inbox():
    assert decide(make(subject=PROMO["subject"]), "a@gmail.lab").placement == "inbox"


def test_list_unsubscribe_without_marketing_words_stays_in_inbox():
    assert decide(make(unsubscribe=True), "a@gmail.lab").placement == "inbox"
    # "wholesale" is not "sale"
    assert decide(make(body="wholesale", unsubscribe=True), "a@gmail.lab").placement == "inbox"


@pytest.mark.parametrize(
    ("domain", "where"),
    [("outlook.lab", "outlook.lab"), ("yahoo.lab", "yahoo.lab"), ("legacy.lab", "legacy.lab"),
     ("example.com", "non-lab domains")],
)  # fmt: skip
def test_only_gmail_has_promotions(domain, where):
    decision = decide(make(**PROMO), f"a@{domain}")
    assert (decision.placement, decision.folder) == ("inbox", "INBOX")
    assert decision.reasons[-2:] == [
        "bulk marketing: List-Unsubscribe and 'sale', '% off'",
        f"{where} has no promotions folder: inbox",
    ]


def test_spammy_marketing_is_spam_not_promotions():
    decision = decide(make(body=spammy(4), **PROMO), "a@gmail.lab")
    assert (decision.placement, decision.folder) == ("spam", "[Gmail]/Spam")


# --- rule 6 and general properties ----------------------------------------------


@pytest.mark.parametrize("domain", ["gmail.lab", "outlook.lab", "yahoo.lab", "legacy.lab"])
def test_ordinary_mail_lands_in_inbox(domain):
    decision = decide(make(), f"a@{domain}")
    assert (decision.placement, decision.folder, decision.spam_score) == ("inbox", "INBOX", 0)
    assert decision.reasons[-1] == "no rule moved it: inbox"


def test_decisions_are_deterministic_and_take_bytes_or_messages():
    raw = make(body=spammy(2), dkim=False)
    from email import message_from_bytes, policy

    parsed = message_from_bytes(raw, policy=policy.default)
    results = {repr(decide(raw, "a@outlook.lab")) for _ in range(5)}
    results.add(repr(decide(parsed, "a@outlook.lab")))
    assert len(results) == 1


def test_full_explanation_for_an_outlook_junk_decision():
    decision = decide(make(body="click here", dkim=False), "a@outlook.lab")
    assert decision.esp == "outlook"
    assert decision.reasons == [
        "spam phrases 'click here' (+1)",
        "no DKIM-Signature (+1 at outlook.lab)",
        "spam score 2 >= outlook.lab threshold 2",
    ]


def test_broken_messages_do_not_break_the_filter():
    garbage = b"\x00\xff not a message \r\n\r\n\xfe"
    assert decide(garbage, "a@gmail.lab").placement == "inbox"
    odd_charset = (
        b"Subject: hi\r\nMessage-ID: <x@y>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        b"Content-Type: text/plain; charset=x-no-such-charset\r\n\r\ncasino \xe9\r\n"
    )
    assert decide(odd_charset, "a@yahoo.lab").spam_score == 1


def test_huge_messages_are_decided_quickly():
    body = "plain words " * 300_000  # about 3.6 MB of text, beyond what is read
    raw = make(body=body + " casino")
    started = time.monotonic()
    decision = decide(raw, "a@gmail.lab")
    assert time.monotonic() - started < 5
    assert decision.placement == "inbox"


# --- Authentication-Results and the trace headers -------------------------------


def test_authentication_results_with_dkim_signature():
    value = authentication_results(make(), "a@gmail.lab", "127.0.0.1")
    assert value == (
        "lab.gmail; spf=pass smtp.client-ip=127.0.0.1; dkim=pass header.d=sender.lab; "
        "dmarc=pass header.from=sender.lab"
    )


def test_authentication_results_without_dkim_signature():
    value = authentication_results(make(dkim=False), "a@outlook.lab", "::1")
    assert value == (
        "lab.outlook; spf=pass smtp.client-ip=::1; dkim=none; dmarc=none header.from=sender.lab"
    )


def test_spf_passes_only_for_loopback_clients():
    assert "spf=none" in authentication_results(make(), "a@yahoo.lab", "192.0.2.1")
    assert "spf=none" in authentication_results(make(), "a@yahoo.lab", "")


def test_trace_headers_explain_the_decision_and_stay_on_one_logical_line_each():
    decision = decide(make(body="click here", dkim=False), "a@outlook.lab")
    raw = trace_headers(
        recipient="a@outlook.lab",
        mailbox="a@outlook.lab",
        decision=decision,
        auth_results="lab.outlook; spf=pass; dkim=none; dmarc=none",
        mail_from="news@sender.lab",
        client_ip="127.0.0.1",
        helo="client\r\nInjected: yes",
        queue_id="ABC",
        now=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
    ).decode()
    assert raw.endswith("\r\n")
    unfolded = raw.replace("\r\n\t", " ")
    names = [line.split(":", 1)[0] for line in unfolded.split("\r\n") if line]
    assert names == [
        "Return-Path", "Delivered-To", "X-Lab-Filter", "Authentication-Results", "Received"
    ]  # fmt: skip
    assert "X-Lab-Filter: spam; esp=outlook.lab; folder=Junk Email;" in unfolded
    assert "spam score 2 >= outlook.lab threshold 2" in unfolded
    assert "Injected: yes" not in raw.split("\r\n")  # CR/LF from the client cannot add headers


def test_trace_headers_name_the_original_recipient_in_the_catchall():
    decision = decide(make(), "x@example.com")
    raw = trace_headers(
        recipient="x@example.com", mailbox="catchall@lab", decision=decision,
        auth_results="lab.other; spf=pass", mail_from="", client_ip="127.0.0.1",
        helo="h", queue_id="Q",
    ).decode()  # fmt: skip
    assert "Delivered-To: catchall@lab\r\n" in raw
    assert "X-Original-To: x@example.com\r\n" in raw
