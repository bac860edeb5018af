"""The seed manager's services on SQLite and PostgreSQL, and connection tests on the lab."""

from __future__ import annotations

import json
import secrets

import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.models import (
    AuditEntry,
    Campaign,
    PlacementResult,
    PlacementRun,
    Secret,
    SeedAccount,
    SeedListMember,
    Source,
)
from mailer_app.services import InvalidInput, NotFoundError, auth, demo, seeds
from mailer_app.services.secrets import reveal_secret
from mailer_app.services.workspaces import create_workspace
from tests.lab_fixtures import mail_lab_fixture  # noqa: F401


@pytest.fixture
def owner(session):
    user, workspace = auth.create_owner(
        session=session,
        email="owner@example.com",
        password="correct horse battery",
        display_name="Owner",
        workspace_name="Seeds Inc",
        source=Source.UI,
    )
    session.commit()
    return user.id, workspace.id


@pytest.fixture
def other_workspace(session) -> int:
    workspace = create_workspace(session=session, name="Someone Else", source=Source.UI)
    session.commit()
    return workspace.id


SEED_PASSWORD = "app-pass-1"


def add(session, workspace_id, user_id=None, email="seed@gmail.com", password=SEED_PASSWORD, **kw):
    seed = seeds.create_seed(
        session=session,
        workspace_id=workspace_id,
        user_id=user_id,
        email=email,
        password=password,
        source=Source.UI,
        **kw,
    )
    session.commit()
    return seed


def actions(session, workspace_id) -> list[str]:
    return list(
        session.exec(
            select(AuditEntry.action)
            .where(AuditEntry.workspace_id == workspace_id)
            .order_by(AuditEntry.id)
        ).all()
    )


# --- create / edit / pause / delete ---------------------------------------------------


def test_create_fills_provider_defaults_and_keeps_only_a_ref(session, owner):
    user_id, ws = owner
    seed = add(session, ws, user_id, email="  Alice.Seed@GMAIL.com ")
    assert seed.email == "alice.seed@gmail.com"
    assert seed.esp == "gmail"
    assert (seed.imap_host, seed.imap_port, seed.imap_security) == ("imap.gmail.com", 993, "tls")
    assert seed.imap_username == "alice.seed@gmail.com"
    assert seed.status == "active" and seed.status_reason is None
    assert seed.credential_ref.startswith("sec_")
    assert reveal_secret(session=session, workspace_id=ws, ref=seed.credential_ref) == "app-pass-1"
    assert seed.created_by_id == user_id
    assert actions(session, ws)[-2:] == ["secret.create", "seed.create"]

    lab = add(session, ws, user_id, email="x@gmail.lab")
    assert (lab.imap_host, lab.imap_port, lab.imap_security) == ("127.0.0.1", 1143, "plain")
    custom = add(
        session,
        ws,
        email="me@mydomain.example",
        imap_host="mail.mydomain.example",
        imap_port="143",
        imap_security="STARTTLS",
        imap_username="me",
    )
    assert custom.esp == "other"
    assert (custom.imap_host, custom.imap_port, custom.imap_security, custom.imap_username) == (
        "mail.mydomain.example",
        143,
        "starttls",
        "me",
    )


def test_duplicate_email_is_refused_with_a_clear_message(session, owner, other_workspace):
    user_id, ws = owner
    add(session, ws, user_id, email="dup@outlook.com")
    with pytest.raises(InvalidInput) as caught:
        add(session, ws, user_id, email="DUP@Outlook.com ")
    assert caught.value.field == "email"
    assert str(caught.value) == "dup@outlook.com is already a seed mailbox in this workspace."
    session.rollback()
    # Another workspace may use the same address.
    assert add(session, other_workspace, email="dup@outlook.com").id is not None


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"email": "not an address"}, "email"),
        ({"email": "a@gmail.com\r\nBcc: x@y.com"}, "email"),
        ({"password": ""}, "password"),
        ({"password": "pw\r\nA1 LOGOUT"}, "password"),
        ({"imap_port": 0}, "imap_port"),
        ({"imap_port": "99999"}, "imap_port"),
        ({"imap_security": "ssl3"}, "imap_security"),
        ({"imap_host": "imap.gmail.com\nX"}, "imap_host"),
        ({"imap_username": "u\rX"}, "imap_username"),
    ],
)
def test_create_rejects_bad_values_and_writes_nothing(session, owner, kwargs, field):
    _, ws = owner
    values = {"email": "ok@gmail.com", "password": "pw"} | kwargs
    email, password = values.pop("email"), values.pop("password")
    with pytest.raises(InvalidInput) as caught:
        add(session, ws, email=email, password=password, **values)
    assert caught.value.field == field
    session.rollback()
    assert session.exec(select(sa.func.count()).select_from(SeedAccount)).one() == 0
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 0


def test_edit_keeps_password_when_blank_and_replaces_it_when_given(session, owner):
    user_id, ws = owner
    seed = add(session, ws, user_id, email="edit@yahoo.com", password="first-pass")
    ref = seed.credential_ref
    seed.folder_map = {"inbox": "INBOX"}
    seed.status, seed.status_reason = "auth_expired", "Login refused"
    session.commit()

    same = seeds.update_seed(
        session=session,
        workspace_id=ws,
        seed_id=seed.id,
        user_id=user_id,
        imap_host="imap.mail.yahoo.com",
        imap_port=993,
        imap_security="tls",
        imap_username="edit@yahoo.com",
        password="",
    )
    session.commit()
    assert same.status == "auth_expired"  # nothing changed: no second chance given
    assert same.folder_map == {"inbox": "INBOX"}
    assert reveal_secret(session=session, workspace_id=ws, ref=ref) == "first-pass"

    edited = seeds.update_seed(
        session=session,
        workspace_id=ws,
        seed_id=seed.id,
        user_id=user_id,
        imap_host="imap.other.example",
        imap_port="1993",
        imap_security="tls",
        imap_username="login-name",
        password="second-pass",
    )
    session.commit()
    assert (edited.imap_host, edited.imap_port, edited.imap_username) == (
        "imap.other.example",
        1993,
        "login-name",
    )
    assert edited.credential_ref == ref  # same ref, new value
    assert reveal_secret(session=session, workspace_id=ws, ref=ref) == "second-pass"
    assert edited.folder_map == {}  # discovered on another server: forgotten
    assert edited.status == "active" and edited.status_reason is None
    assert session.exec(select(sa.func.count()).select_from(Secret)).one() == 1

    with pytest.raises(InvalidInput) as caught:
        seeds.update_seed(
            session=session, workspace_id=ws, seed_id=seed.id, user_id=user_id, imap_port="x"
        )
    assert caught.value.field == "imap_port"


def test_pause_resume_and_status_moves(session, owner):
    user_id, ws = owner
    seed = add(session, ws, user_id)

    def pause(paused: bool):
        result = seeds.set_seed_paused(
            session=session, workspace_id=ws, seed_id=seed.id, paused=paused, user_id=user_id
        )
        session.commit()
        return result.status

    assert pause(True) == "paused"
    assert pause(True) == "paused"  # idempotent
    assert pause(False) == "active"
    # A paused seed cannot be marked auth_expired (it is not being checked).
    pause(True)
    with pytest.raises(InvalidInput):
        seeds.change_seed_status(seed=seed, status="auth_expired", reason="x")
    pause(False)
    # Resume also revives auth_expired and error, clearing the reason.
    for broken in ("auth_expired", "error"):
        seeds.change_seed_status(seed=seed, status=broken, reason="Login refused")
        session.commit()
        assert seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).status_reason
        assert pause(False) == "active"
        assert (
            seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).status_reason is None
        )
    assert actions(session, ws).count("seed.pause") == 3
    assert actions(session, ws).count("seed.resume") == 4


def test_delete_removes_memberships_and_secret(session, owner):
    user_id, ws = owner
    seed = add(session, ws, user_id)
    keep = add(session, ws, user_id, email="keep@gmail.com")
    seed_list = seeds.create_seed_list(session=session, workspace_id=ws, user_id=user_id, name="L")
    seeds.set_seed_list_members(
        session=session,
        workspace_id=ws,
        seed_list_id=seed_list.id,
        seed_ids=[seed.id, keep.id],
        user_id=user_id,
    )
    session.commit()
    seeds.delete_seed(session=session, workspace_id=ws, seed_id=seed.id, user_id=user_id)
    session.commit()
    assert [r.email for r in seeds.list_seeds(session=session, workspace_id=ws)] == [
        "keep@gmail.com"
    ]
    assert seeds.list_seed_lists(session=session, workspace_id=ws)[0].seed_ids == (keep.id,)
    refs = session.exec(select(Secret.ref)).all()
    assert refs == [keep.credential_ref]
    assert "seed.delete" in actions(session, ws)


def test_delete_refused_when_the_seed_has_placement_history(session, owner):
    user_id, ws = owner
    seed = add(session, ws, user_id)
    run = PlacementRun(workspace_id=ws, idempotency_key="k1")
    session.add(run)
    session.flush()
    session.add(
        PlacementResult(workspace_id=ws, run_id=run.id, seed_id=seed.id, esp="gmail", token="t-1")
    )
    session.commit()
    with pytest.raises(InvalidInput) as caught:
        seeds.delete_seed(session=session, workspace_id=ws, seed_id=seed.id, user_id=user_id)
    assert "Pause it instead" in str(caught.value)
    session.rollback()
    assert seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).email


def test_workspace_scoping(session, owner, other_workspace):
    user_id, ws = owner
    theirs = add(session, other_workspace, email="theirs@gmail.com")
    mine = add(session, ws, user_id, email="mine@gmail.com")
    their_list = seeds.create_seed_list(
        session=session, workspace_id=other_workspace, user_id=None, name="Theirs"
    )
    session.commit()

    assert [r.email for r in seeds.list_seeds(session=session, workspace_id=ws)] == [
        "mine@gmail.com"
    ]
    calls = [
        lambda: seeds.get_seed(session=session, workspace_id=ws, seed_id=theirs.id),
        lambda: seeds.update_seed(
            session=session, workspace_id=ws, seed_id=theirs.id, user_id=user_id, password="x"
        ),
        lambda: seeds.set_seed_paused(
            session=session, workspace_id=ws, seed_id=theirs.id, paused=True, user_id=user_id
        ),
        lambda: seeds.delete_seed(
            session=session, workspace_id=ws, seed_id=theirs.id, user_id=user_id
        ),
        lambda: seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=theirs.id),
        lambda: seeds.endpoint_for_seed(session=session, workspace_id=ws, seed=theirs),
        lambda: seeds.rename_seed_list(
            session=session, workspace_id=ws, seed_list_id=their_list.id, user_id=None, name="N"
        ),
        lambda: seeds.delete_seed_list(
            session=session, workspace_id=ws, seed_list_id=their_list.id, user_id=None
        ),
        lambda: seeds.set_seed_list_members(
            session=session,
            workspace_id=ws,
            seed_list_id=their_list.id,
            seed_ids=[mine.id],
            user_id=None,
        ),
    ]
    for call in calls:
        with pytest.raises(NotFoundError):
            call()
        session.rollback()

    my_list = seeds.create_seed_list(session=session, workspace_id=ws, user_id=None, name="Mine")
    with pytest.raises(NotFoundError):
        seeds.set_seed_list_members(
            session=session,
            workspace_id=ws,
            seed_list_id=my_list.id,
            seed_ids=[mine.id, theirs.id],
            user_id=None,
        )
    session.rollback()
    assert seeds.get_seed(session=session, workspace_id=other_workspace, seed_id=theirs.id)


def test_list_rows_never_carry_the_password_or_ref(session, owner):
    user_id, ws = owner
    password = f"canary-{secrets.token_hex(8)}"
    seed = add(session, ws, user_id, password=password)
    (row,) = seeds.list_seeds(session=session, workspace_id=ws)
    assert row.id == seed.id and row.status == "active" and row.folder_summary == ""
    text = repr(row) + json.dumps(row.__dict__, default=str)
    assert password not in text and seed.credential_ref not in text
    assert not hasattr(row, "credential_ref") and not hasattr(row, "password")


def test_password_is_only_in_the_secret_table_encrypted(session, owner):
    user_id, ws = owner
    passwords = [f"canary-{secrets.token_hex(12)}" for _ in range(4)]
    seed = add(session, ws, user_id, email="one@gmail.com", password=passwords[0])
    seeds.update_seed(
        session=session, workspace_id=ws, seed_id=seed.id, user_id=user_id, password=passwords[1]
    )
    preview = seeds.parse_seed_csv(
        f"email,password\ntwo@gmail.com,{passwords[2]}\nbad-address,{passwords[3]}\n"
    )
    seeds.import_seeds(session=session, workspace_id=ws, user_id=user_id, rows=preview.rows)
    session.commit()
    assert len(session.exec(select(Secret)).all()) == 2

    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(sa.select(table)).all():
            for column, cell in zip(table.columns, row, strict=True):
                text = json.dumps(cell, default=str) if isinstance(cell, dict | list) else str(cell)
                for p in passwords:
                    assert p not in text, f"password in {table.name}.{column.name}"
    assert reveal_secret(session=session, workspace_id=ws, ref=seed.credential_ref) == passwords[1]


# --- import -------------------------------------------------------------------------------


def test_import_mixed_rows(session, owner):
    user_id, ws = owner
    add(session, ws, user_id, email="already@gmail.com")
    seed_list = seeds.create_seed_list(
        session=session, workspace_id=ws, user_id=user_id, name="Imported"
    )
    session.commit()
    text = (
        "Email,Password,IMAP Port\n"
        "new1@gmail.com,p1,\n"  # 2
        "broken,p2,\n"  # 3
        "ALREADY@gmail.com,p3,\n"  # 4
        "new2@outlook.com,p4,995\n"  # 5
        "new1@gmail.com,p5,\n"  # 6: same as row 2
        "new3@yahoo.com,,\n"  # 7: no password
    )
    preview = seeds.parse_seed_csv(text)
    summary = seeds.import_seeds(
        session=session,
        workspace_id=ws,
        user_id=user_id,
        rows=preview.rows,
        seed_list_id=seed_list.id,
    )
    session.commit()
    assert summary.created == 2
    assert summary.skipped_existing == 1
    assert [n for n, _ in summary.errors] == [3, 6, 7]
    assert "Same address as row 2" in dict(summary.errors)[6]
    rows = {r.email: r for r in seeds.list_seeds(session=session, workspace_id=ws)}
    assert set(rows) == {"already@gmail.com", "new1@gmail.com", "new2@outlook.com"}
    assert rows["new2@outlook.com"].imap_port == 995
    (listed,) = seeds.list_seed_lists(session=session, workspace_id=ws)
    assert listed.seed_count == 3  # the two created and the one that existed
    assert "seed.import" in actions(session, ws)

    # Importing the same file again creates nothing new.
    again = seeds.import_seeds(session=session, workspace_id=ws, user_id=user_id, rows=preview.rows)
    assert (again.created, again.skipped_existing) == (0, 3)


def test_import_through_the_packed_token(session, owner):
    user_id, ws = owner
    preview = seeds.parse_seed_csv("email,password\npacked@gmail.lab,pw-packed\n")
    rows = seeds.unpack_import_rows(seeds.pack_import_rows(preview.rows))
    summary = seeds.import_seeds(session=session, workspace_id=ws, user_id=user_id, rows=rows)
    session.commit()
    assert summary.created == 1
    seed = session.exec(select(SeedAccount)).one()
    assert reveal_secret(session=session, workspace_id=ws, ref=seed.credential_ref) == "pw-packed"


# --- seed lists ------------------------------------------------------------------------


def test_seed_lists(session, owner):
    user_id, ws = owner
    a = add(session, ws, user_id, email="a@gmail.com")
    b = add(session, ws, user_id, email="b@outlook.com")
    c = add(session, ws, user_id, email="c@yahoo.com")
    weekly = seeds.create_seed_list(
        session=session, workspace_id=ws, user_id=user_id, name=" Weekly "
    )
    assert weekly.name == "Weekly"
    with pytest.raises(InvalidInput) as caught:
        seeds.create_seed_list(session=session, workspace_id=ws, user_id=user_id, name="weekly")
    assert caught.value.field == "name"
    with pytest.raises(InvalidInput):
        seeds.create_seed_list(session=session, workspace_id=ws, user_id=user_id, name="  ")
    with pytest.raises(InvalidInput):
        seeds.create_seed_list(session=session, workspace_id=ws, user_id=user_id, name="a\nb")

    def members():
        (row,) = [r for r in seeds.list_seed_lists(session=session, workspace_id=ws)]
        return row.seed_ids

    seeds.set_seed_list_members(
        session=session,
        workspace_id=ws,
        seed_list_id=weekly.id,
        seed_ids=[a.id, b.id],
        user_id=user_id,
    )
    session.commit()
    assert members() == (a.id, b.id)
    seeds.set_seed_list_members(
        session=session,
        workspace_id=ws,
        seed_list_id=weekly.id,
        seed_ids=[c.id, b.id, c.id],
        user_id=user_id,
    )
    session.commit()
    assert members() == (b.id, c.id)
    assert session.exec(select(sa.func.count()).select_from(SeedListMember)).one() == 2
    seeds.set_seed_list_members(
        session=session, workspace_id=ws, seed_list_id=weekly.id, seed_ids=[], user_id=user_id
    )
    session.commit()
    assert members() == ()

    seeds.rename_seed_list(
        session=session, workspace_id=ws, seed_list_id=weekly.id, user_id=user_id, name="Daily"
    )
    seeds.rename_seed_list(  # same name, other case: its own name does not clash
        session=session, workspace_id=ws, seed_list_id=weekly.id, user_id=user_id, name="DAILY"
    )
    session.commit()
    assert [r.name for r in seeds.list_seed_lists(session=session, workspace_id=ws)] == ["DAILY"]

    # A list that a campaign uses is kept.
    session.add(Campaign(workspace_id=ws, name="Spring", seed_list_id=weekly.id))
    session.commit()
    with pytest.raises(InvalidInput) as caught:
        seeds.delete_seed_list(
            session=session, workspace_id=ws, seed_list_id=weekly.id, user_id=user_id
        )
    assert "Spring" in str(caught.value)
    session.rollback()
    other = seeds.create_seed_list(session=session, workspace_id=ws, user_id=user_id, name="X")
    seeds.set_seed_list_members(
        session=session, workspace_id=ws, seed_list_id=other.id, seed_ids=[a.id], user_id=user_id
    )
    seeds.delete_seed_list(session=session, workspace_id=ws, seed_list_id=other.id, user_id=None)
    session.commit()
    assert [r.name for r in seeds.list_seed_lists(session=session, workspace_id=ws)] == ["DAILY"]
    assert len(seeds.list_seeds(session=session, workspace_id=ws)) == 3  # seeds stay


def test_demo_data_goes_through_create_seed(session, owner, tmp_path):
    from mailer_app.settings import get_settings

    _, ws = owner
    settings = get_settings()
    demo.ensure_demo_data(session=session, settings=settings, workspace_id=ws)
    session.commit()
    demo.ensure_demo_data(session=session, settings=settings, workspace_id=ws)  # idempotent
    session.commit()
    rows = seeds.list_seeds(session=session, workspace_id=ws)
    assert [(r.email, r.esp) for r in rows] == sorted(demo.DEMO_SEEDS)
    assert all((r.imap_host, r.imap_security) == ("127.0.0.1", "plain") for r in rows)
    assert actions(session, ws).count("seed.create") == 4
    (lab_list,) = seeds.list_seed_lists(session=session, workspace_id=ws)
    assert lab_list.seed_count == 4


# --- connection tests against the real lab ------------------------------------------------


def test_connection_with_the_right_password_stores_the_folders(session, owner, mail_lab):
    user_id, ws = owner
    box = mail_lab.add_account("gmail.lab")
    seed = add(
        session, ws, user_id, email=box.email, password=box.password, imap_port=mail_lab.imap_port
    )
    seeds.change_seed_status(seed=seed, status="error", reason="Server said no")
    session.commit()

    result = seeds.test_seed_connection(
        session=session, workspace_id=ws, seed_id=seed.id, user_id=user_id
    )
    session.commit()
    assert result.ok, result.message
    assert result.error_kind is None
    stored = seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id)
    assert stored.status == "active" and stored.status_reason is None
    assert stored.last_checked_at is not None
    assert stored.folder_map == result.folder_map.to_json()
    assert "[Gmail]/Spam" in json.dumps(stored.folder_map)
    (row,) = seeds.list_seeds(session=session, workspace_id=ws)
    assert "[Gmail]/Spam" in row.folder_summary
    assert "seed.test_connection" in actions(session, ws)


def test_connection_finds_an_unflagged_spam_folder_by_name(session, owner, mail_lab):
    _, ws = owner
    box = mail_lab.add_account("legacy.lab")
    seed = add(session, ws, email=box.email, password=box.password, imap_port=mail_lab.imap_port)
    result = seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=seed.id)
    session.commit()
    assert result.ok, result.message
    assert '"Spam"' in json.dumps(seed.folder_map)


def test_connection_with_a_wrong_password_marks_auth_expired(session, owner, mail_lab):
    user_id, ws = owner
    box = mail_lab.add_account("outlook.lab")
    seed = add(
        session,
        ws,
        user_id,
        email=box.email,
        password="not-the-password",
        imap_port=mail_lab.imap_port,
    )
    result = seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=seed.id)
    session.commit()
    assert not result.ok
    assert result.error_kind == "auth"
    assert "not-the-password" not in result.message
    stored = seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id)
    assert stored.status == "auth_expired"
    assert stored.status_reason == result.message and result.message
    assert stored.folder_map == {}

    # The right password (through an edit) and a new test revive it.
    seeds.update_seed(
        session=session,
        workspace_id=ws,
        seed_id=seed.id,
        user_id=user_id,
        imap_port=mail_lab.imap_port,
        password=box.password,
    )
    seeds.change_seed_status(seed=stored, status="auth_expired", reason="still old")
    session.commit()
    again = seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=seed.id)
    session.commit()
    assert again.ok
    assert seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).status == "active"


def test_connection_failure_leaves_a_paused_seed_paused(session, owner, mail_lab):
    _, ws = owner
    box = mail_lab.add_account("yahoo.lab")
    seed = add(session, ws, email=box.email, password="wrong", imap_port=mail_lab.imap_port)
    seeds.set_seed_paused(
        session=session, workspace_id=ws, seed_id=seed.id, paused=True, user_id=None
    )
    result = seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=seed.id)
    session.commit()
    assert result.error_kind == "auth"
    assert seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).status == "paused"


def test_unreachable_server_changes_no_status(session, owner):
    from tests.conftest import free_port

    _, ws = owner
    seed = add(session, ws, email="x@gmail.lab", imap_port=free_port())  # nothing listens
    result = seeds.test_seed_connection(session=session, workspace_id=ws, seed_id=seed.id)
    session.commit()
    assert not result.ok and result.error_kind == "unavailable"
    assert seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id).status == "active"


def test_new_connection_before_saving(mail_lab):
    box = mail_lab.add_account("gmail.lab")
    good = seeds.test_new_connection(
        email=box.email,
        password=box.password,
        imap_host="127.0.0.1",
        imap_port=str(mail_lab.imap_port),
        imap_security="plain",
        imap_username="",
    )
    assert good.ok and "[Gmail]/Spam" in good.folder_map.describe()
    bad = seeds.test_new_connection(
        email=box.email,
        password="nope",
        imap_host="127.0.0.1",
        imap_port=mail_lab.imap_port,
        imap_security="plain",
        imap_username=None,
    )
    assert not bad.ok and bad.error_kind == "auth"
    with pytest.raises(InvalidInput) as caught:
        seeds.test_new_connection(email=box.email, password="", imap_port=mail_lab.imap_port)
    assert caught.value.field == "password"


def test_unsaved_edits_are_tested_with_the_saved_password(session, owner, mail_lab):
    from mailer_app.mail.imap import probe_mailbox
    from tests.conftest import free_port

    _, ws = owner
    box = mail_lab.add_account("yahoo.lab")
    wrong_port = free_port()
    seed = add(session, ws, email=box.email, password=box.password, imap_port=wrong_port)

    def probe(**kw):
        endpoint = seeds.edited_connection_endpoint(
            session=session,
            workspace_id=ws,
            seed_id=seed.id,
            imap_host="127.0.0.1",
            imap_port=str(mail_lab.imap_port),
            imap_security="plain",
            **kw,
        )
        return probe_mailbox(endpoint)

    assert probe(password="").ok  # the saved password
    assert probe(password="typed-but-wrong").error_kind == "auth"
    stored = seeds.get_seed(session=session, workspace_id=ws, seed_id=seed.id)
    assert stored.imap_port == wrong_port and stored.status == "active"  # nothing saved


def test_import_checks_rows_that_did_not_come_from_the_parser(session, owner):
    _, ws = owner
    rows = [
        seeds.SeedCsvRow(row_number=2, email="twice@gmail.com", password="p"),
        seeds.SeedCsvRow(row_number=3, email="TWICE@gmail.com", password="p"),
        seeds.SeedCsvRow(row_number=4, email="nopass@gmail.com", password=""),
        seeds.SeedCsvRow(row_number=5, email="bad\r\n@gmail.com", password="p"),
    ]
    summary = seeds.import_seeds(session=session, workspace_id=ws, user_id=None, rows=rows)
    session.commit()
    assert summary.created == 1
    assert [n for n, _ in summary.errors] == [3, 4, 5]
    assert "twice" in dict(summary.errors)[3]


def test_the_page_imports_in_batches_of_their_own(session, owner, monkeypatch):
    from mailer_app.services.auth import CurrentUser
    from mailer_app.state import seeds as seed_state

    user_id, ws = owner
    monkeypatch.setattr(seed_state, "IMPORT_BATCH", 2)
    seed_list = seeds.create_seed_list(session=session, workspace_id=ws, user_id=None, name="B")
    add(session, ws, email="b3@gmail.com")
    preview = seeds.parse_seed_csv(
        "email,password\n" + "".join(f"b{i}@gmail.com,pw{i}\n" for i in range(5))
    )
    user = CurrentUser(user_id, "owner@example.com", "Owner", ws, "Seeds Inc", "owner")
    token = seeds.pack_import_rows(preview.rows)
    summary = seed_state._import(user, token, str(seed_list.id))
    assert (summary.created, summary.skipped_existing, summary.errors) == (4, 1, ())
    session.expire_all()
    assert actions(session, ws).count("seed.import") == 3  # three transactions
    assert seeds.list_seed_lists(session=session, workspace_id=ws)[0].seed_count == 5
