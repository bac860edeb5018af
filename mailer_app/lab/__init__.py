"""The local mail lab: simulated mailbox providers on loopback (see docs/LAB.md).

An SMTP intake files each recipient's copy into Maildir folders with a
deterministic filter (`filter.decide`), and a private Dovecot serves them over
real IMAP. What the app calls:

- `Lab(lab_dir, smtp_port, imap_port)` / `Lab.from_settings(settings)`: start/stop.
- `lab_status(settings)`: {"smtp": "up"|"down", "imap": "up"|"down"|"off: why"}.
- `ensure_lab_account`, `remove_lab_account`, `list_lab_accounts`: lab mailboxes.
- `dovecot_available()`: (bool, plain-language reason).
- `decide(message, recipient)`: where a message would land, and why.
"""

from mailer_app.lab.accounts import (
    LabAccount,
    ensure_lab_account,
    list_lab_accounts,
    remove_lab_account,
)
from mailer_app.lab.dovecot import LabError, dovecot_available
from mailer_app.lab.filter import LAB_ESPS, Decision, EspProfile, decide, esp_for_address
from mailer_app.lab.intake import CATCHALL_ADDRESS
from mailer_app.lab.runner import Lab, lab_status

__all__ = [
    "CATCHALL_ADDRESS",
    "LAB_ESPS",
    "Decision",
    "EspProfile",
    "Lab",
    "LabAccount",
    "LabError",
    "decide",
    "dovecot_available",
    "ensure_lab_account",
    "esp_for_address",
    "lab_status",
    "list_lab_accounts",
    "remove_lab_account",
]
