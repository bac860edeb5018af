"""The secret store: encryption round trip, key rotation, wrong-key errors, redaction."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlmodel import Session, SQLModel, select

import mailer_app.models  # noqa: F401  (registers every table)
from mailer_app.db import make_engine
from mailer_app.logs import forget_registered_secrets, redact
from mailer_app.models import AuditEntry, Secret, Source, Workspace
from mailer_app.services import InvalidInput
from mailer_app.services.secrets import (
    SecretDecryptionError,
    SecretNotFound,
    decrypt_value,
    delete_secret,
    encrypt_value,
    replace_secret,
    reveal_secret,
    rotate_secrets,
    store_secret,
    verify_master_key,
)
from mailer_app.settings import ConfigurationError, get_settings

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
KEY_C = Fernet.generate_key().decode()


@pytest.fixture
def use_keys(monkeypatch):
    def use(keys: str) -> None:
        monkeypatch.setenv("MASTER_KEY", keys)
        get_settings.cache_clear()

    use(KEY_A)
    return use


@pytest.fixture
def db(tmp_path):
    """A throwaway SQLite database with every table (unit speed, no migrations)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine, expire_on_commit=False) as session:
        yield session
    engine.dispose()


@pytest.fixture
def workspace_id(db) -> int:
    workspace = Workspace(name="Acme", slug="acme")
    db.add(workspace)
    db.flush()
    return workspace.id


@pytest.fixture(autouse=True)
def _clean_registry():
    forget_registered_secrets()
    yield
    forget_registered_secrets()


def store(db, workspace_id, value="smtp-password-1") -> str:
    return store_secret(
        session=db, workspace_id=workspace_id, value=value, kind="password", source=Source.UI
    )


def test_encrypt_decrypt_round_trip(use_keys):
    value = "pässwörd with spaces and ünïcode ✓"
    token = encrypt_value(value)
    assert token.startswith("gAAAAA")
    assert value not in token
    assert decrypt_value(token) == value


def test_store_and_reveal_round_trip(db, workspace_id, use_keys):
    ref = store(db, workspace_id, "s3cret-smtp-pass")
    assert ref.startswith("sec_") and len(ref) >= 40 and len(ref) <= 64
    assert reveal_secret(session=db, workspace_id=workspace_id, ref=ref) == "s3cret-smtp-pass"
    row = db.exec(select(Secret).where(Secret.ref == ref)).one()
    assert row.kind == "password" and row.source == Source.UI
    assert "s3cret-smtp-pass" not in row.ciphertext
    assert row.ciphertext.startswith("gAAAAA")


def test_refs_are_unique_and_unrelated_to_the_value(db, workspace_id, use_keys):
    refs = {store(db, workspace_id, "same-value-every-time") for _ in range(20)}
    assert len(refs) == 20


def test_empty_value_is_refused(db, workspace_id, use_keys):
    with pytest.raises(InvalidInput):
        store(db, workspace_id, "")


def test_replace_keeps_the_ref_and_delete_removes_it(db, workspace_id, use_keys):
    ref = store(db, workspace_id, "first-password")
    replace_secret(
        session=db, workspace_id=workspace_id, ref=ref, value="second-password", source="ui"
    )
    assert reveal_secret(session=db, workspace_id=workspace_id, ref=ref) == "second-password"
    delete_secret(session=db, workspace_id=workspace_id, ref=ref, source="ui")
    with pytest.raises(SecretNotFound):
        reveal_secret(session=db, workspace_id=workspace_id, ref=ref)
    actions = db.exec(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions == ["secret.create", "secret.replace", "secret.delete"]


def test_rotation_lets_the_old_key_be_removed(db, workspace_id, use_keys):
    use_keys(KEY_A)
    refs = [store(db, workspace_id, f"password-{i}") for i in range(3)]
    old_tokens = set(db.exec(select(Secret.ciphertext)).all())

    use_keys(f"{KEY_B},{KEY_A}")
    # Before rotation both keys are needed; the new key alone cannot read them yet.
    assert rotate_secrets(session=db) == 3
    assert set(db.exec(select(Secret.ciphertext)).all()).isdisjoint(old_tokens)
    assert all(s.rotated_at is not None for s in db.exec(select(Secret)).all())
    assert rotate_secrets(session=db) == 0  # already under the newest key

    use_keys(KEY_B)
    for i, ref in enumerate(refs):
        assert reveal_secret(session=db, workspace_id=workspace_id, ref=ref) == f"password-{i}"

    use_keys(KEY_A)
    with pytest.raises(SecretDecryptionError):
        reveal_secret(session=db, workspace_id=workspace_id, ref=refs[0])


def test_wrong_key_gives_a_clear_error(db, workspace_id, use_keys):
    ref = store(db, workspace_id)
    use_keys(KEY_C)
    with pytest.raises(SecretDecryptionError, match="MASTER_KEY does not match"):
        reveal_secret(session=db, workspace_id=workspace_id, ref=ref)
    with pytest.raises(SecretDecryptionError, match="MASTER_KEY does not match"):
        verify_master_key(session=db)


def test_rotation_with_an_unknown_key_names_the_secret(db, workspace_id, use_keys):
    ref = store(db, workspace_id)
    use_keys(f"{KEY_B},{KEY_C}")
    with pytest.raises(SecretDecryptionError, match=ref):
        rotate_secrets(session=db)


def test_malformed_master_key_is_a_configuration_error(use_keys):
    use_keys("not-a-fernet-key")
    with pytest.raises(ConfigurationError, match="MASTER_KEY is not a valid key"):
        encrypt_value("x" * 12)


def test_stored_and_revealed_values_are_masked_in_later_logs(db, workspace_id, use_keys):
    ref = store(db, workspace_id, "stored-value-123")
    assert redact("login with stored-value-123 failed") == "login with [REDACTED] failed"

    forget_registered_secrets()  # another process: it only ever reveals the value
    assert "stored-value-123" in redact("stored-value-123")
    reveal_secret(session=db, workspace_id=workspace_id, ref=ref)
    assert "stored-value-123" not in redact("535 auth failed for stored-value-123")


def test_audit_entries_never_hold_the_value(db, workspace_id, use_keys):
    ref = store(db, workspace_id, "audit-canary-98765")
    replace_secret(
        session=db, workspace_id=workspace_id, ref=ref, value="audit-canary-4321", source="ui"
    )
    for entry in db.exec(select(AuditEntry)).all():
        assert "audit-canary" not in str(entry.details)
