"""An embedded PostgreSQL that a test may stop and start again, for fault injection.

It always runs on a private folder of its own, never on TEST_DATABASE_URL's server: stopping a
shared server would break every other test using it. Across restarts it keeps its data folder
and its Unix socket path, so a DATABASE_URL handed out before a stop still works after a start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from payment.adapters.embedded_postgres import EmbeddedPostgres

PG_CTL_TIMEOUT_SECONDS = 60.0


class PostgresDidNotStart(Exception):
    pass


def _pg_ctl() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "pg_ctl")


class RestartablePostgres:
    """A server over ``data_dir``, started on construction; ``stop()`` and ``start()`` as often
    as a test likes; ``remove()`` stops it for good and deletes its folder."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server = EmbeddedPostgres(self.data_dir, keep_data=True)
        self.socket_dir = self._server.socket_dir
        # As root, the package runs the server as a user of its own, who owns the folder.
        owner = self.data_dir.stat().st_uid
        self._system_user = None if owner == os.geteuid() else pwd.getpwuid(owner).pw_name

    @classmethod
    @contextmanager
    def in_new_folder(cls, prefix: str) -> Iterator[RestartablePostgres]:
        """A server in a new short temporary folder (its socket lives there), removed at the
        end of the block, however the block ends."""
        data_dir = Path(tempfile.mkdtemp(prefix=prefix))
        try:
            server = cls(data_dir)
        except BaseException:
            shutil.rmtree(data_dir, ignore_errors=True)
            raise
        try:
            yield server
        finally:
            server.remove()

    def url(self, database: str = "postgres") -> URL:
        return self._server.url(database)

    def create_database(self, name: str) -> URL:
        return self._server.create_database(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(
            host=self.socket_dir, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def is_running(self) -> bool:
        status = self._pg_ctl("status", check=False)
        return status.returncode == 0

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are rolled back); returns once it is
        down and its socket is gone."""
        self._server.stop()
        if self.is_running():
            raise RuntimeError(f"PostgreSQL on {self.data_dir} is still running after pg_ctl stop")

    def start(self) -> None:
        """Start the stopped server again, on the same data and the same socket folder;
        returns once it accepts connections."""
        try:
            self._pg_ctl(
                "-w",
                "-t",
                str(int(PG_CTL_TIMEOUT_SECONDS)),
                "-o",
                '-h ""',  # no TCP: the Unix socket only, as the first start did
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.data_dir / "log"),
                "start",
                check=True,
            )
        except subprocess.CalledProcessError as error:
            log = self.data_dir / "log"
            tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise PostgresDidNotStart(
                f"pg_ctl start failed with status {error.returncode}:\n{error.stdout}\n{tail}"
            ) from None

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        try:
            self._server.stop()
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _pg_ctl(self, *arguments: str, check: bool) -> subprocess.CompletedProcess[str]:
        # Output to a file, not a pipe: a server started by pg_ctl may hold a pipe open for
        # as long as it runs, and reading it would then never end.
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(
                [_pg_ctl(), "-D", str(self.data_dir), *arguments],
                user=self._system_user,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=PG_CTL_TIMEOUT_SECONDS + 10,
            )
            output.seek(0)
            said = output.read()
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, done.args, output=said)
        return subprocess.CompletedProcess(done.args, done.returncode, stdout=said)
