"""State of the sender accounts page (/senders): the table, the add/edit dialog and
the signing (DKIM) dialog.

Every handler that reads or writes asks the database who is signed in, and every
change also checks the role: hiding buttons from viewers is not authorization.
No password is ever kept in state: the password inputs are not bound to state
(their values arrive with the submitted form and are used at once). Connection
tests run in background events, outside the state lock and outside any database
transaction.

The DKIM private key is never kept in state either: a generated key goes straight
from `generate_key` to the secret store, a pasted one arrives with the submitted
form (its text area is not bound to state) and the dialog only ever shows the
public DNS record.
"""

from __future__ import annotations

import asyncio

import reflex as rx

from mailer_app.db import session_scope
from mailer_app.mail.dkim import generate_key
from mailer_app.models import Source
from mailer_app.services import InvalidInput, ServiceError, auth, senders
from mailer_app.state.auth import AuthState

STATUS_LABELS = {
    senders.ACTIVE: ("Active", "green"),
    senders.PAUSED: ("Paused", "gray"),
    senders.AUTH_FAILED: ("Sign-in failed", "red"),
}
SECURITY_WORDS = {"tls": "TLS", "starttls": "STARTTLS", "plain": "no encryption"}
# The form's fields, as named in the service (and in its InvalidInput.field).
TEXT_FIELDS = (
    "name", "from_name", "from_email", "reply_to", "smtp_host", "smtp_port", "smtp_security",
    "smtp_username", "imap_host", "imap_port", "imap_security", "imap_username",
    "rate_per_second", "rate_per_minute", "rate_per_hour",
)  # fmt: skip
IMAP_FIELDS = ("imap_host", "imap_port", "imap_security", "imap_username")
ERROR_FIELDS = {*TEXT_FIELDS, "password", "imap_password"}
EMPTY_FORM = {name: "" for name in TEXT_FIELDS} | {
    "smtp_port": "587",
    "smtp_security": "starttls",
    "imap_port": "993",
    "imap_security": "tls",
}


def _number(value: float | int | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def display_row(row: senders.SenderRow, signing: str = "") -> dict[str, str]:
    """One table row as text (state vars must be plain, and never hold secrets);
    `signing` says whether the account signs with DKIM (see `signing_words`)."""
    label, color = STATUS_LABELS.get(row.status, (row.status, "gray"))
    limits = [
        f"{_number(value)} per {unit}"
        for value, unit in (
            (row.rate_per_second, "second"),
            (row.rate_per_minute, "minute"),
            (row.rate_per_hour, "hour"),
        )
        if value is not None
    ]
    return {
        "id": str(row.id),
        "name": row.name,
        "from": f"{row.from_name} <{row.from_email}>" if row.from_name else row.from_email,
        "server": f"{row.smtp_host}:{row.smtp_port}, "
        f"{SECURITY_WORDS.get(row.smtp_security, row.smtp_security)}",
        "sign_in": f"Signs in as {row.smtp_username}" if row.smtp_username else "No sign-in",
        "imap": f"Mailbox (IMAP): {row.imap_host}:{row.imap_port}" if row.imap_host else "",
        "limits": "At most " + ", ".join(limits) if limits else "",
        "signing": signing,
        "status": row.status,
        "status_label": label,
        "status_color": color,
        "reason": row.status_reason,
    }


def form_values(row: senders.SenderRow) -> dict[str, str]:
    """A saved sender as the form's text values (no password, no ref)."""
    values = {name: "" if getattr(row, name) is None else str(getattr(row, name)) for name in
              TEXT_FIELDS}  # fmt: skip
    for name in ("rate_per_second", "rate_per_minute", "rate_per_hour"):
        values[name] = _number(getattr(row, name))
    if not row.imap_host:
        values.update(imap_port="993", imap_security="tls")
    return values


async def _current(state: rx.State) -> auth.CurrentUser | None:
    auth_state = await state.get_state(AuthState)
    return auth_state.current_user()


async def _manager(state: rx.State) -> tuple[auth.CurrentUser | None, str]:
    """(the signed-in user allowed to change senders, '') or (None, why not)."""
    try:
        return auth.require_role(await _current(state), *senders.SENDER_MANAGER_ROLES), ""
    except auth.PermissionDenied as exc:
        return None, str(exc)


def _test_saved_sender(workspace_id: int, user_id: int, sender_id: int) -> senders.SenderTestResult:
    # Three steps so no transaction stays open while the servers answer.
    with session_scope() as session:
        endpoints = senders.saved_sender_endpoints(
            session=session, workspace_id=workspace_id, sender_id=sender_id
        )
    result = senders.probe_sender(endpoints)
    with session_scope() as session:
        senders.record_sender_test(
            session=session, workspace_id=workspace_id, sender_id=sender_id, result=result,
            user_id=user_id, source=Source.UI,
        )  # fmt: skip
    return result


class SendersState(rx.State):
    """The table of sender accounts and the actions on one row."""

    rows: list[dict[str, str]] = []
    can_edit: bool = False
    notice: str = ""
    testing_id: str = ""
    test_name: str = ""
    test_ok: bool = False
    test_message: str = ""
    delete_id: str = ""
    delete_name: str = ""
    delete_error: str = ""

    def refresh(self, workspace_id: int) -> None:
        with session_scope() as session:
            self.rows = [
                display_row(r, signing_words(senders.get_sender(
                    session=session, workspace_id=workspace_id, sender_id=r.id
                )))
                for r in senders.list_sender_rows(session=session, workspace_id=workspace_id)
            ]  # fmt: skip

    @rx.event
    async def load(self):
        user = await _current(self)
        if user is None:
            self.rows, self.can_edit = [], False
            return
        self.can_edit = user.role == "owner" or user.role in senders.SENDER_MANAGER_ROLES
        self.notice = self.test_message = ""
        self.refresh(user.workspace_id)

    @rx.event(background=True)
    async def test_row(self, sender_id: str):
        async with self:
            if self.testing_id:
                return
            user, why = await _manager(self)
            if user is None:
                self.notice = why
                return
            self.testing_id = sender_id
            self.test_name = next((r["name"] for r in self.rows if r["id"] == sender_id), "")
            self.test_message = ""
        ok, message = False, ""
        try:
            result = await asyncio.to_thread(
                _test_saved_sender, user.workspace_id, user.user_id, int(sender_id)
            )
            ok, message = result.ok, result.message
        except ServiceError as exc:
            message = str(exc)
        finally:
            async with self:
                self.testing_id = ""
                self.test_ok, self.test_message = ok, message or "The test did not finish."
                self.refresh(user.workspace_id)

    @rx.event
    def dismiss_test(self):
        self.test_message = ""

    @rx.event
    def ask_delete(self, sender_id: str, name: str):
        self.delete_id, self.delete_name, self.delete_error = sender_id, name, ""

    @rx.event
    def cancel_delete(self, _open: bool = False):
        if not _open:
            self.delete_id = self.delete_name = self.delete_error = ""

    @rx.event
    async def confirm_delete(self):
        user, why = await _manager(self)
        if user is None:
            self.delete_error = why
            return
        try:
            with session_scope() as session:
                senders.delete_sender(
                    session=session, workspace_id=user.workspace_id,
                    sender_id=int(self.delete_id or 0), user_id=user.user_id, source=Source.UI,
                )  # fmt: skip
        except ServiceError as exc:
            self.delete_error = str(exc)
            return
        self.notice = f"Deleted the sender account {self.delete_name}."
        self.delete_id = self.delete_name = self.delete_error = ""
        self.refresh(user.workspace_id)


class SenderFormState(rx.State):
    """The add/edit dialog. The password inputs are deliberately not bound to state."""

    is_open: bool = False
    mode: str = "add"  # add | edit
    sender_id: str = ""
    values: dict[str, str] = dict(EMPTY_FORM)
    imap_on: bool = False
    has_password: bool = False
    has_imap_password: bool = False
    presets: list[dict[str, str]] = []
    preset: str = "custom"
    preset_hint: str = ""
    errors: dict[str, str] = {}
    message: str = ""
    busy: bool = False
    testing: bool = False
    test_ok: bool = False
    test_message: str = ""
    _intent: str = "save"

    def _reset(self, values: dict[str, str]) -> None:
        self.values = dict(values)
        self.errors, self.message, self.test_message = {}, "", ""
        self.test_ok = self.busy = self.testing = False
        self._intent = "save"
        self.presets = [{"key": p.key, "label": p.label} for p in senders.provider_presets()]

    def _apply_hint(self) -> None:
        found = next((p for p in senders.provider_presets() if p.key == self.preset), None)
        self.preset_hint = found.hint if found else ""

    @rx.event
    async def open_add(self):
        user, why = await _manager(self)
        if user is None:
            page = await self.get_state(SendersState)
            page.notice = why
            return
        self._reset(EMPTY_FORM)
        self.mode, self.sender_id, self.imap_on = "add", "", False
        self.has_password = self.has_imap_password = False
        self.preset = "custom"
        self._apply_hint()
        self.is_open = True

    @rx.event
    async def open_edit(self, sender_id: str):
        user, why = await _manager(self)
        page = await self.get_state(SendersState)
        if user is None:
            page.notice = why
            return
        try:
            with session_scope() as session:
                row = senders.sender_row(
                    senders.get_sender(
                        session=session, workspace_id=user.workspace_id, sender_id=int(sender_id)
                    )
                )
        except ServiceError as exc:
            page.notice = str(exc)
            return
        self._reset(form_values(row))
        self.mode, self.sender_id, self.imap_on = "edit", sender_id, bool(row.imap_host)
        self.has_password, self.has_imap_password = row.has_password, row.has_imap_password
        self.preset = next(
            (p.key for p in senders.provider_presets() if p.smtp_host == row.smtp_host), "custom"
        )
        self._apply_hint()
        self.is_open = True

    @rx.event
    def set_open(self, is_open: bool):
        if not self.busy:
            self.is_open = is_open

    @rx.event
    def set_field(self, name: str, value: str):
        if name not in TEXT_FIELDS:
            return
        values = dict(self.values)
        # A port left at the usual one for the old encryption follows the new one.
        for security, port, defaults in (
            ("smtp_security", "smtp_port", senders.DEFAULT_SMTP_PORTS),
            ("imap_security", "imap_port", senders.DEFAULT_IMAP_PORTS),
        ):
            if name == security and value in defaults:
                old = defaults.get(values.get(security, ""))
                if values.get(port, "") in ("", str(old)):
                    values[port] = str(defaults[value])
        values[name] = value
        self.values = values
        if name in self.errors:
            self.errors = {k: v for k, v in self.errors.items() if k != name}

    @rx.event
    def choose_preset(self, key: str):
        """Fill in a provider's servers (still editable) and show its advice."""
        preset = next((p for p in senders.provider_presets() if p.key == key), None)
        if preset is None:
            return
        self.preset = key
        self._apply_hint()
        if key == "custom":
            return
        values = dict(self.values)
        values.update(
            smtp_host=preset.smtp_host,
            smtp_port=str(preset.smtp_port),
            smtp_security=preset.smtp_security,
        )
        if preset.imap_host:
            values.update(
                imap_host=preset.imap_host,
                imap_port=str(preset.imap_port),
                imap_security=preset.imap_security,
            )
        if key != "lab" and not values.get("smtp_username") and values.get("from_email"):
            values["smtp_username"] = values["from_email"].strip()
        self.values = values
        self.errors = {}

    @rx.event
    def set_imap_on(self, on: bool):
        self.imap_on = bool(on)

    @rx.event
    def set_intent(self, intent: str):
        """Which button submitted the form (clicks are handled before the submit)."""
        self._intent = "test" if intent == "test" else "save"

    @rx.event(background=True)
    async def submit(self, form: dict):
        password = str(form.get("password") or "")
        imap_password = str(form.get("imap_password") or "")
        async with self:
            intent, self._intent = self._intent, "save"
            if self.busy:
                return
            user, why = await _manager(self)
            if user is None:
                self.message = why
                return
            # What the inputs showed when the form was sent (the state may lag behind).
            values = {name: str(form.get(name, self.values.get(name, ""))) for name in
                      TEXT_FIELDS}  # fmt: skip
            if not self.imap_on:
                values.update({name: "" for name in IMAP_FIELDS})
                imap_password = ""
            mode, sender_id = self.mode, self.sender_id
            self.busy, self.testing = True, intent == "test"
            self.errors, self.message = {}, ""
            if intent == "test":
                self.test_message = ""
        try:
            if intent == "test":
                result = await asyncio.to_thread(
                    _test_form, user, mode, sender_id, values, password, imap_password
                )
                async with self:
                    self.test_ok, self.test_message = result.ok, result.message
            else:
                await asyncio.to_thread(
                    _save_form, user, mode, sender_id, values, password, imap_password
                )
                async with self:
                    self.is_open = False
                    page = await self.get_state(SendersState)
                    page.refresh(user.workspace_id)
                    page.notice = f"Saved the sender account {values['name'].strip()}."
        except InvalidInput as exc:
            async with self:
                if exc.field in ERROR_FIELDS:
                    self.errors = {exc.field: str(exc)}
                else:
                    self.message = str(exc)
        except ServiceError as exc:
            async with self:
                self.message = str(exc)
        finally:
            async with self:
                self.busy = self.testing = False


def _connection(values: dict[str, str]) -> dict[str, str]:
    keys = ("from_email", "smtp_host", "smtp_port", "smtp_security", "smtp_username", *IMAP_FIELDS)
    return {key: values[key] for key in keys}


def _test_form(user, mode, sender_id, values, password, imap_password):
    if mode == "edit":
        with session_scope() as session:
            endpoints = senders.edited_sender_endpoints(
                session=session, workspace_id=user.workspace_id, sender_id=int(sender_id),
                password=password or None, imap_password=imap_password or None,
                **_connection(values),
            )  # fmt: skip
        return senders.probe_sender(endpoints)
    return senders.test_new_sender_connection(
        password=password or None, imap_password=imap_password or None, **_connection(values)
    )


def _save_form(user, mode, sender_id, values, password, imap_password) -> None:
    with session_scope() as session:
        if mode == "edit":
            senders.update_sender(
                session=session, workspace_id=user.workspace_id, sender_id=int(sender_id),
                user_id=user.user_id, password=password or None,
                imap_password=imap_password or None, source=Source.UI, **values,
            )  # fmt: skip
        else:
            senders.create_sender(
                session=session, workspace_id=user.workspace_id, user_id=user.user_id,
                password=password or None, imap_password=imap_password or None,
                source=Source.UI, **values,
            )  # fmt: skip


# --- signing (DKIM) ---------------------------------------------------------------------------

DKIM_ERROR_FIELDS = ("dkim_domain", "dkim_selector", "dkim_private_key")
DEFAULT_DKIM_SELECTOR = "mailer"
# How the key is chosen: generated here (RSA or Ed25519), pasted, or the saved one kept.
KEY_CHOICES = ("rsa", "ed25519", "paste", "keep")
ALGORITHM_WORDS = {"rsa": "RSA", "ed25519": "Ed25519"}
NO_RECORD: dict[str, object] = {
    "name": "", "host": "", "value": "", "strings": [], "quoted": "", "key": "", "domain": "",
    "selector": "", "advice": [],
}  # fmt: skip


def signing_words(sender) -> str:
    """The table's one line about DKIM for a (loaded) sender account."""
    if sender.dkim_key_ref and sender.dkim_domain and sender.dkim_selector:
        return f"Signed (DKIM) as {sender.dkim_domain}"
    return "Not signed (no DKIM key)"


def dkim_view(*, session, workspace_id: int, sender_id: int) -> dict[str, object]:
    """What the signing dialog shows about one sender: never the private key.

    `problem` is set (plain words) when a key is saved but cannot be read back.
    """
    sender = senders.get_sender(session=session, workspace_id=workspace_id, sender_id=sender_id)
    from_domain = sender.from_email.rpartition("@")[2].lower()
    view: dict[str, object] = {
        "name": sender.name,
        "from_email": sender.from_email,
        "domain": sender.dkim_domain or from_domain,
        "selector": sender.dkim_selector or DEFAULT_DKIM_SELECTOR,
        "enabled": bool(sender.dkim_key_ref and sender.dkim_domain and sender.dkim_selector),
        "record": dict(NO_RECORD),
        "problem": "",
    }
    if not view["enabled"]:
        return view
    try:
        record = senders.dkim_dns_record(
            session=session, workspace_id=workspace_id, sender_id=sender_id
        )
    except senders.SenderNotFound:
        raise
    except ServiceError as exc:
        view["problem"] = str(exc)
        return view
    if record is not None:
        bits = f" ({record.bits} bits)" if record.algorithm == "rsa" else ""
        view["record"] = {
            "name": record.name,
            # Many DNS hosts want the name without the domain they add themselves.
            "host": record.name.removesuffix("." + record.domain),
            "value": record.value,
            "strings": list(record.strings),
            # The pieces as a zone file writes them ("..." "..."), for hosts that ask so.
            "quoted": " ".join(f'"{piece}"' for piece in record.strings),
            "key": ALGORITHM_WORDS.get(record.algorithm, record.algorithm) + " key" + bits,
            "domain": record.domain,
            "selector": record.selector,
            "advice": list(record.advice),
        }
    return view


def _save_dkim(user, sender_id: str, domain: str, selector: str, choice: str, pasted: str):
    """Generate (or take the pasted) key and save it; the key leaves with this call."""
    if choice in ("rsa", "ed25519"):
        pem: str | None = generate_key(choice)
    elif choice == "paste":
        if not pasted.strip():
            raise InvalidInput(
                "Paste the private key (the text starting with -----BEGIN).",
                field="dkim_private_key",
            )
        pem = pasted
    else:
        pem = None  # keep the saved key; only the domain or selector change
    with session_scope() as session:
        senders.set_dkim_key(
            session=session, workspace_id=user.workspace_id, sender_id=int(sender_id),
            domain=domain, selector=selector, private_key_pem=pem, user_id=user.user_id,
            source=Source.UI,
        )  # fmt: skip
        return dkim_view(session=session, workspace_id=user.workspace_id, sender_id=int(sender_id))


def _remove_dkim(user, sender_id: str):
    with session_scope() as session:
        senders.clear_dkim_key(
            session=session, workspace_id=user.workspace_id, sender_id=int(sender_id),
            user_id=user.user_id, source=Source.UI,
        )  # fmt: skip
        return dkim_view(session=session, workspace_id=user.workspace_id, sender_id=int(sender_id))


class SenderDkimState(rx.State):
    """The signing (DKIM) dialog of one sender account. No private key is held here:
    the paste area is not bound to state, and a generated key goes straight to the
    secret store."""

    is_open: bool = False
    sender_id: str = ""
    sender_name: str = ""
    from_email: str = ""
    enabled: bool = False
    domain: str = ""
    selector: str = DEFAULT_DKIM_SELECTOR
    key_choice: str = "rsa"
    record: dict[str, str] = {}
    record_strings: list[str] = []
    advice: list[str] = []
    errors: dict[str, str] = {}
    message: str = ""
    notice: str = ""
    busy: bool = False
    confirm_remove: bool = False
    copied: str = ""  # which part of the DNS record was just copied

    def _show(self, view: dict[str, object]) -> None:
        record = dict(view["record"])
        self.record_strings = list(record.pop("strings"))
        self.advice = list(record.pop("advice"))
        self.record = {key: str(value) for key, value in record.items()}
        self.sender_name, self.from_email = str(view["name"]), str(view["from_email"])
        self.domain, self.selector = str(view["domain"]), str(view["selector"])
        self.enabled = bool(view["enabled"])
        self.message = str(view["problem"])
        self.key_choice = "keep" if self.enabled and not self.message else "rsa"
        self.copied = ""

    @rx.event
    async def open_dkim(self, sender_id: str):
        user, why = await _manager(self)
        page = await self.get_state(SendersState)
        if user is None:
            page.notice = why
            return
        try:
            with session_scope() as session:
                view = dkim_view(
                    session=session, workspace_id=user.workspace_id, sender_id=int(sender_id)
                )
        except ServiceError as exc:
            page.notice = str(exc)
            return
        self.errors, self.notice = {}, ""
        self.busy = self.confirm_remove = False
        self.sender_id = sender_id
        self._show(view)
        self.is_open = True

    @rx.event
    def set_open(self, is_open: bool):
        if not self.busy:
            self.is_open = is_open
            self.confirm_remove = False

    @rx.event
    def set_domain(self, value: str):
        self.domain = value
        self.errors = {k: v for k, v in self.errors.items() if k != "dkim_domain"}

    @rx.event
    def set_selector(self, value: str):
        self.selector = value
        self.errors = {k: v for k, v in self.errors.items() if k != "dkim_selector"}

    @rx.event
    def set_key_choice(self, value: str):
        if value in KEY_CHOICES and (value != "keep" or self.enabled):
            self.key_choice = value
            self.errors = {k: v for k, v in self.errors.items() if k != "dkim_private_key"}

    @rx.event(background=True)
    async def save(self, form: dict):
        pasted = str(form.get("dkim_private_key") or "")
        async with self:
            if self.busy:
                return
            user, why = await _manager(self)
            if user is None:
                self.message = why
                return
            # What the inputs showed when the form was sent (the state may lag behind).
            domain = str(form.get("dkim_domain", self.domain))
            selector = str(form.get("dkim_selector", self.selector))
            choice, sender_id = self.key_choice, self.sender_id
            self.busy, self.confirm_remove = True, False
            self.errors, self.message, self.notice = {}, "", ""
        try:
            # RSA key generation takes a moment: off the event loop.
            view = await asyncio.to_thread(
                _save_dkim, user, sender_id, domain, selector, choice, pasted
            )
            async with self:
                self._show(view)
                self.notice = (
                    "Signing is on. Publish the DNS record below so receivers can check "
                    "the signature."
                    if choice != "keep"
                    else "Saved. If the name of the record changed, publish it again."
                )
                page = await self.get_state(SendersState)
                page.refresh(user.workspace_id)
        except InvalidInput as exc:
            async with self:
                if exc.field in DKIM_ERROR_FIELDS:
                    self.errors = {exc.field: str(exc)}
                else:
                    self.message = str(exc)
        except ServiceError as exc:
            async with self:
                self.message = str(exc)
        finally:
            async with self:
                self.busy = False

    @rx.event
    def mark_copied(self, part: str):
        self.copied = part

    @rx.event
    def ask_remove(self):
        self.confirm_remove = True

    @rx.event
    def cancel_remove(self):
        self.confirm_remove = False

    @rx.event
    async def remove(self):
        user, why = await _manager(self)
        self.confirm_remove = False
        if user is None:
            self.message = why
            return
        try:
            view = _remove_dkim(user, self.sender_id)
        except ServiceError as exc:
            self.message = str(exc)
            return
        self._show(view)
        self.errors = {}
        self.notice = (
            "The key is removed: messages from this account are no longer signed. You "
            "can delete the DNS record now."
        )
        page = await self.get_state(SendersState)
        page.refresh(user.workspace_id)
