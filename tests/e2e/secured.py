"""A service that asks for API keys and reaches its database with a password: secrets that
nothing it says, in a body or in its output, may ever show."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.engine import URL

from tests.e2e.server import RunningService

MADE_UP_PASSWORD = "s3cret-pass-word"


@dataclass(frozen=True, slots=True)
class KeyedService:
    service: RunningService
    keys: tuple[str, str]
    """The two API keys it accepts, as configured (without the spaces around them)."""
    database_password: str

    @property
    def secrets(self) -> tuple[str, ...]:
        return (*self.keys, self.database_password)


def new_api_key(name: str) -> str:
    """A key of this run alone, well over the 16 characters the service asks for."""
    return f"e2e-{name}-{uuid.uuid4().hex}"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def with_password(url: URL) -> tuple[URL, str]:
    """``url`` with a password in it, and that password: its own when it has one, else one made
    up for this run, which the embedded server (trust authentication) accepts and ignores."""
    if isinstance(url.password, str) and url.password:
        return url, url.password
    password = f"{MADE_UP_PASSWORD}-{uuid.uuid4().hex[:8]}"
    return url.set(password=password), password
