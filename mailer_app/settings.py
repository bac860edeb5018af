"""All configuration, read once from the environment (and an optional .env file).

Every process (web, worker, scheduler, lab, CLI) builds the same `Settings`, so a
value means the same thing everywhere. Names are the plain environment variable
names (DATABASE_URL, REDIS_URL, MASTER_KEY, MAILER_ENV, ...).
"""

from __future__ import annotations

import functools
import os
import secrets
from enum import StrEnum
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class ConfigurationError(RuntimeError):
    """A setting is missing or wrong; the message tells the operator what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: Environment = Field(
        default=Environment.DEV, validation_alias=AliasChoices("MAILER_ENV", "environment")
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT / ".data", validation_alias=AliasChoices("DATA_DIR", "data_dir")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )
    master_key: str | None = Field(
        default=None, validation_alias=AliasChoices("MASTER_KEY", "master_key")
    )
    # Base of links inside emails (unsubscribe): where the backend answers. In dev that
    # is Reflex's backend port (the dev frontend serves only the app's pages); in
    # production the one public address of `reflex run --env prod`.
    public_url: str = Field(
        default="http://localhost:8000", validation_alias=AliasChoices("PUBLIC_URL", "public_url")
    )
    # Start the worker, scheduler, private Redis and mail lab with the web app (dev only).
    supervise: bool = Field(
        default=True, validation_alias=AliasChoices("MAILER_SUPERVISE", "supervise")
    )
    lab_enabled: bool = Field(
        default=True, validation_alias=AliasChoices("MAILER_LAB", "lab_enabled")
    )
    lab_smtp_port: int = Field(
        default=2525, validation_alias=AliasChoices("LAB_SMTP_PORT", "lab_smtp_port")
    )
    lab_imap_port: int = Field(
        default=1143, validation_alias=AliasChoices("LAB_IMAP_PORT", "lab_imap_port")
    )
    # Minutes after a seed's sent_at at which its mailbox is checked.
    placement_check_offsets: list[float] = Field(
        default=[1, 3, 5, 10],
        validation_alias=AliasChoices("PLACEMENT_CHECK_OFFSETS", "placement_check_offsets"),
    )
    # Largest contact (or suppression) CSV file that can be uploaded and imported, in MB
    # (100 MB is about a million rows; an import of that size peaks near 300 MB of memory).
    contacts_max_upload_mb: float = Field(
        default=100,
        gt=0,
        validation_alias=AliasChoices("CONTACTS_MAX_UPLOAD_MB", "contacts_max_upload_mb"),
    )

    # Largest whole message (MIME, files included) a build lets through, in MB: most
    # providers refuse more than 25 MB.
    message_max_mb: float = Field(
        default=25, gt=0, validation_alias=AliasChoices("MESSAGE_MAX_MB", "message_max_mb")
    )

    # Sending (services/sending.py). Jobs ("lanes") per campaign run that may send at
    # once; each needs a worker. More lanes send faster if the server allows it.
    send_lanes: int = Field(
        default=2, ge=1, le=32, validation_alias=AliasChoices("SEND_LANES", "send_lanes")
    )
    # Messages claimed at once by a worker, and seconds one job sends before it hands
    # over to a fresh job (so deploys and other campaigns get their turn).
    send_batch_size: int = Field(
        default=50,
        ge=1,
        le=1000,
        validation_alias=AliasChoices("SEND_BATCH_SIZE", "send_batch_size"),
    )
    send_job_seconds: float = Field(
        default=60, gt=0, validation_alias=AliasChoices("SEND_JOB_SECONDS", "send_job_seconds")
    )
    # A temporary refusal (4xx) is tried again after a growing delay (base doubling up
    # to the cap, with jitter) until the message has waited this many hours in all.
    send_retry_base_seconds: float = Field(
        default=60, gt=0,
        validation_alias=AliasChoices("SEND_RETRY_BASE_SECONDS", "send_retry_base_seconds"),
    )  # fmt: skip
    send_retry_cap_seconds: float = Field(
        default=3600, gt=0,
        validation_alias=AliasChoices("SEND_RETRY_CAP_SECONDS", "send_retry_cap_seconds"),
    )  # fmt: skip
    send_retry_max_hours: float = Field(
        default=24, gt=0,
        validation_alias=AliasChoices("SEND_RETRY_MAX_HOURS", "send_retry_max_hours"),
    )  # fmt: skip
    # A claimed message not yet handed to the server after this long belonged to a
    # worker that died: queued again. One handed over without an answer after
    # `send_unknown_after_seconds` becomes `unknown` (never sent again silently).
    send_claim_lease_seconds: float = Field(
        default=600, gt=0,
        validation_alias=AliasChoices("SEND_CLAIM_LEASE_SECONDS", "send_claim_lease_seconds"),
    )  # fmt: skip
    send_unknown_after_seconds: float = Field(
        default=300, gt=0,
        validation_alias=AliasChoices("SEND_UNKNOWN_AFTER_SECONDS", "send_unknown_after_seconds"),
    )  # fmt: skip
    # Limits per destination, shared by every sender account: canonical ESP
    # (gmail, outlook, yahoo, ...) or domain -> "N/s", "N/m" or "N/h", e.g.
    # SEND_DESTINATION_LIMITS='{"gmail": "20/s", "example.org": "100/m"}'.
    # Envelope sender with a per-message bounce token (news+r12-…@example.com), so a
    # bounce names its message even without the original headers. Off by default: some
    # providers (Office 365) refuse a MAIL FROM other than the account's address.
    send_verp: bool = Field(default=False, validation_alias=AliasChoices("SEND_VERP", "send_verp"))
    send_destination_limits: dict[str, str] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("SEND_DESTINATION_LIMITS", "send_destination_limits"),
    )

    # Who may read /metrics: with a token, callers sending `Authorization: Bearer
    # <token>`; without one, only clients on this machine (loopback). Behind a reverse
    # proxy every client looks local: set a token there.
    metrics_token: str = Field(
        default="", repr=False, validation_alias=AliasChoices("METRICS_TOKEN", "metrics_token")
    )

    @property
    def is_dev(self) -> bool:
        return self.environment == Environment.DEV

    @property
    def run_dir(self) -> Path:
        """Sockets, pid files and process logs of the dev supervisor."""
        return self.data_dir / "run"

    @property
    def lab_dir(self) -> Path:
        return self.data_dir / "lab"

    @property
    def contacts_max_upload_bytes(self) -> int:
        return int(self.contacts_max_upload_mb * 1_000_000)

    def contact_uploads_dir(self, workspace_id: int) -> Path:
        """Where a workspace's uploaded contact files and import reports are kept."""
        return self.data_dir / "uploads" / str(int(workspace_id)) / "contacts"

    def resolved_database_url(self) -> str:
        """DATABASE_URL, or the embedded SQLite file under the data folder."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'mailer.db'}"

    def resolved_redis_url(self) -> str:
        """REDIS_URL, or the private Redis the dev supervisor starts."""
        if self.redis_url:
            return self.redis_url
        if not self.is_dev:
            raise ConfigurationError(
                "REDIS_URL is not set. In production set REDIS_URL, for example "
                "redis://127.0.0.1:6379/1."
            )
        return f"unix://{self.run_dir / 'redis.sock'}?db=1"

    def master_keys(self) -> list[str]:
        """The Fernet keys for secrets, newest first (MASTER_KEY is comma separated).

        In development a key is generated once into the data folder and reused; in
        production MASTER_KEY is required.
        """
        if self.master_key:
            return [k.strip() for k in self.master_key.split(",") if k.strip()]
        if not self.is_dev:
            raise ConfigurationError(
                "MASTER_KEY is not set. It encrypts stored passwords. Generate one with "
                "`python -m mailer_app generate-key` and keep it safe: without it the "
                "stored secrets cannot be read."
            )
        return [_dev_master_key(self.data_dir)]


def normalize_database_url(url: str) -> str:
    """Use the psycopg 3 driver for plain postgres:// URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _dev_master_key(data_dir: Path) -> str:
    from cryptography.fernet import Fernet

    key_file = data_dir / "master.key"
    if key_file.exists():
        return key_file.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key().decode()
    # Create with 0600 atomically so the key is never world readable, even briefly.
    tmp = data_dir / f".master.key.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    try:
        os.link(tmp, key_file)  # fails if another process won the race
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return key_file.read_text().strip()


@functools.cache
def get_settings() -> Settings:
    return Settings()
