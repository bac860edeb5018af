"""The canary test: a secret written through the public services is found nowhere.

A unique random "canary" value is stored as an SMTP password (store_secret, then
replaced), a second one is the owner's sign-in password (create_owner), and a third
is a wrong password typed at sign-in. With logging at DEBUG into a file through
setup_logging (so SQLAlchemy logs every statement and its parameters), an RQ job
enqueued and run with the secret's ref, and the secret revealed and deliberately
logged, none of the canaries may appear in any column of any table, in the raw
SQLite files, in the log file, or in any Redis key or value.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import secrets
import zlib
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from rq import Queue, SimpleWorker
from sqlmodel import SQLModel

import mailer_app.models  # noqa: F401  (every table in SQLModel.metadata)
from mailer_app.logs import MASK, RedactingFilter, forget_registered_secrets, setup_logging
from mailer_app.models import SenderAccount, Source
from mailer_app.services import auth
from mailer_app.services.secrets import replace_secret, reveal_secret, store_secret

log = logging.getLogger("mailer_app.test.canary")


@pytest.fixture
def debug_log_file(tmp_path):
    """setup_logging at DEBUG into a file; the root logger is restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    forget_registered_secrets()  # prove registration happens in this test
    log_file = tmp_path / "logs" / "app.log"
    setup_logging(level="DEBUG", log_file=log_file)
    # SQLAlchemy keeps its loggers at WARNING unless asked: ask, so every statement and
    # its parameters go through the log too.
    sql_logger = logging.getLogger("sqlalchemy.engine")
    sql_level = sql_logger.level
    sql_logger.setLevel(logging.INFO)
    yield log_file
    sql_logger.setLevel(sql_level)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        handler.filters = [f for f in handler.filters if not isinstance(f, RedactingFilter)]
    root.setLevel(level)
    logging.captureWarnings(False)
    forget_registered_secrets()


def canary(label: str) -> str:
    return f"canary-{label}-{secrets.token_hex(16)}"


def test_canaries_appear_nowhere(session, redis_url, debug_log_file):
    smtp_password = canary("smtp")
    new_smtp_password = canary("smtp-new")
    owner_password = canary("owner")
    typed_wrong = canary("typo")
    everything = [smtp_password, new_smtp_password, owner_password, typed_wrong]

    # The owner signs up and signs in; someone mistypes a password and types a
    # password into the email field.
    user, workspace = auth.create_owner(
        session=session,
        email="owner@example.com",
        password=owner_password,
        display_name="Owner",
        workspace_name="Canary Co",
        source=Source.UI,
    )
    session.commit()
    auth.authenticate(session=session, email="owner@example.com", password=owner_password)
    auth.start_session(session=session, user=user)
    session.commit()
    for email, password in (("owner@example.com", typed_wrong), (owner_password, "whatever")):
        with pytest.raises(auth.InvalidCredentials):
            auth.authenticate(session=session, email=email, password=password)
        session.rollback()

    # A sender account keeps only the ref; the password goes to the secret store.
    ref = store_secret(
        session=session,
        workspace_id=workspace.id,
        value=smtp_password,
        kind="password",
        source=Source.UI,
        created_by_id=user.id,
    )
    session.add(
        SenderAccount(
            workspace_id=workspace.id,
            name="Main",
            from_email="news@example.com",
            smtp_host="127.0.0.1",
            smtp_username="news@example.com",
            credential_ref=ref,
        )
    )
    session.commit()
    replace_secret(
        session=session,
        workspace_id=workspace.id,
        ref=ref,
        value=new_smtp_password,
        source=Source.UI,
        updated_by_id=user.id,
    )
    session.commit()

    # A job carries the ref, never the value, and a worker runs it.
    connection = redis.Redis.from_url(redis_url)
    func = "jobs.system.ping" if importlib.util.find_spec("jobs.system") else "os.path.basename"
    job = Queue("default", connection=connection).enqueue(func, ref)
    SimpleWorker(["default"], connection=connection).work(burst=True)
    assert job.get_status(refresh=True) is not None

    # The worker reveals the password and logs it, carelessly.
    value = reveal_secret(session=session, workspace_id=workspace.id, ref=ref)
    assert value == new_smtp_password
    log.info("connecting with %s", value)
    log.debug(f"login {value} at 127.0.0.1")  # noqa: G004  (f-string: no %-args at all)
    try:
        raise ConnectionError(f"535 authentication failed for news@example.com / {value}")
    except ConnectionError:
        log.exception("sending stopped")

    # --- the log file --------------------------------------------------------------
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = debug_log_file.read_text()
    assert f"connecting with {MASK}" in text
    assert "535 authentication failed" in text and "Traceback" in text
    assert "INSERT INTO" in text  # SQLAlchemy statements were logged: the test is real
    leaked = [c for c in everything if c in text]
    assert not leaked, f"canary in the log file: {leaked}"

    # --- every column of every table ------------------------------------------------
    rows_seen = 0
    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(sa.select(table)).all():
            rows_seen += 1
            for column, cell in zip(table.columns, row, strict=True):
                cell_text = (
                    json.dumps(cell, default=str) if isinstance(cell, dict | list) else str(cell)
                )
                for c in everything:
                    assert c not in cell_text, f"canary in {table.name}.{column.name}"
    assert rows_seen >= 8  # workspace, user, membership, session, secret, sender, audit...

    # --- the raw SQLite files (deleted or overwritten pages included) ---------------
    database = session.get_bind().url.database
    if session.get_bind().dialect.name == "sqlite":
        for path in (Path(database), Path(f"{database}-wal")):
            if path.exists():
                raw = path.read_bytes()
                for c in everything:
                    assert c.encode() not in raw, f"canary in {path.name}"

    # --- every Redis key and value ---------------------------------------------------
    blobs = list(_redis_blobs(connection))
    assert any(ref.encode() in blob for blob in blobs)  # the ref is there: the scan works
    for blob in blobs:
        for c in everything:
            assert c.encode() not in blob, "canary in Redis"
    connection.close()


def _redis_blobs(client: redis.Redis):
    """Every key and value in Redis as bytes, plus the zlib-inflated form of each value."""
    for key in client.scan_iter(count=1000):
        yield key
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        elif kind == "stream":
            values = [
                b for _, fields in client.xrange(key) for pair in fields.items() for b in pair
            ]
        else:
            values = []
        for value in values:
            if value is None:
                continue
            yield value
            with contextlib.suppress(zlib.error):  # RQ keeps job data as zlib'd pickles
                yield zlib.decompress(value)
