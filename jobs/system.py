"""Jobs about the job system itself."""

from __future__ import annotations

from typing import Any


def ping(value: Any) -> Any:
    """Return `value`: proves that a worker picks up and runs jobs (tests, /health)."""
    return value
