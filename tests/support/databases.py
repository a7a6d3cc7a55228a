"""PostgreSQL for the tests: the embedded server by default, TEST_DATABASE_URL when set.

Every test database is made here and dropped afterwards, so a run leaves nothing behind
on a shared server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url


def libpq_conninfo(url: URL) -> str:
    """``url`` for psycopg itself (no SQLAlchemy driver name)."""
    parts: dict[str, str | int | None] = {
        "host": url.host or str(url.query.get("host", "")) or None,
        "port": url.port,
        "user": url.username,
        "password": url.password if isinstance(url.password, str) else None,
        "dbname": url.database,
    }
    return psycopg.conninfo.make_conninfo("", **{k: v for k, v in parts.items() if v is not None})


class DatabaseServer:
    """A server the tests may create and drop databases on."""

    def __init__(self, admin_url: URL) -> None:
        self.admin_url = admin_url.set(drivername="postgresql+psycopg")

    @classmethod
    def from_url(cls, text: str) -> DatabaseServer:
        return cls(make_url(text))

    def url(self, database: str) -> URL:
        return self.admin_url.set(database=database)

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(libpq_conninfo(self.admin_url), autocommit=True, connect_timeout=10)

    def create(self, prefix: str = "payment_test") -> URL:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop(self, url: URL) -> None:
        with self._admin() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(url.database or "")
                )
            )

    @contextmanager
    def scratch(self, prefix: str = "payment_test") -> Iterator[URL]:
        """A new empty database for the length of the block."""
        url = self.create(prefix)
        try:
            yield url
        finally:
            self.drop(url)
