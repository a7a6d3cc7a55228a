"""The soak's PostgreSQL: an embedded server of its own that the faults restart, freeze and
thaw, whose backends they terminate and whose rows they lock; and the orders in it.

The server listens on a Unix socket in a temporary folder (the service reaches it through
``chaos.proxy``; the soak's own connections, its faults and its checks do not). It keeps its
data and its socket across restarts, and is stopped and removed when the soak ends, thawed
first if a fault left it frozen.

Orders: ``fresh`` pending orders (ids 1 to ``fresh``) that the traffic pays, each at most
once, and after them ``untouchable`` pending orders that only wrong amounts and bad bodies are
sent for: they must end as they began. Order ``n`` costs ``total_of(n)``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL

from payment.adapters.embedded_postgres import EmbeddedPostgres
from payment.adapters.sqlalchemy import migrations

DATABASE = "payment_chaos"
PG_CTL_TIMEOUT_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 5
CENTS = 9000
"""Totals run from 1.00 to 90.99: ``(100 + id % CENTS) / 100``."""


def total_of(order_id: int) -> Decimal:
    return (Decimal(100 + order_id % CENTS) / 100).quantize(Decimal("0.01"))


@dataclass(frozen=True, slots=True)
class OrderRanges:
    fresh: int
    untouchable: int

    @property
    def first_untouchable(self) -> int:
        return self.fresh + 1

    @property
    def last_untouchable(self) -> int:
        return self.fresh + self.untouchable


@dataclass(frozen=True, slots=True)
class Store:
    """What the database holds once the soak is over, for the checks."""

    payments: dict[int, list[int]]
    """Every order that has payments: their ids, oldest first."""
    untouched_pending: int
    """Untouchable orders still pending."""


class ChaosPostgres:
    """The server; started on construction."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self._server = EmbeddedPostgres(self.data_dir, keep_data=True)
        self.socket_dir = self._server.socket_dir
        # As root, the package runs the server as a user of its own, who owns the folder.
        owner = self.data_dir.stat().st_uid
        self._system_user = None if owner == os.geteuid() else pwd.getpwuid(owner).pw_name
        self._frozen: list[int] = []

    @classmethod
    @contextmanager
    def in_new_folder(cls) -> Iterator[ChaosPostgres]:
        """A server in a new short temporary folder (its socket lives there), stopped and
        removed at the end of the block, however the block ends."""
        folder = Path(tempfile.mkdtemp(prefix="payment-chaos-pg-"))
        try:
            server = cls(folder / "data")
            try:
                yield server
            finally:
                server.thaw()
                server.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # Addresses

    @property
    def socket_path(self) -> Path:
        return Path(self.socket_dir) / f".s.PGSQL.{self._postmaster_line(3) or 5432}"

    def direct_url(self) -> str:
        """The database over the Unix socket: for the soak's checks and ``verify``."""
        return self._server.url(DATABASE).render_as_string(hide_password=False)

    def proxied_url(self, port: int) -> str:
        """The database through the proxy on loopback: the service's DATABASE_URL."""
        url = URL.create("postgresql", username="postgres", host="127.0.0.1", port=port)
        return url.set(database=DATABASE).render_as_string(hide_password=False)

    def connect(self) -> psycopg.Connection[TupleRow]:
        return psycopg.connect(
            host=self.socket_dir,
            user="postgres",
            dbname=DATABASE,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )

    # Set-up

    def prepare(self, orders: OrderRanges) -> None:
        """The database, migrated, with its orders."""
        migrations.upgrade(self._server.create_database(DATABASE))
        with self.connect() as connection:
            connection.execute(
                "INSERT INTO orders (id, status, total_price)"
                " SELECT g, 'pending', (100 + g %% %s) / 100.0"
                " FROM generate_series(1, %s::int) AS g",
                (CENTS, orders.last_untouchable),
            )
            connection.execute(
                "SELECT setval(pg_get_serial_sequence('orders', 'id'), %s)",
                (orders.last_untouchable,),
            )
            connection.execute("VACUUM (ANALYZE) orders")
            connection.execute("CHECKPOINT")

    # Faults

    def restart(self, down_seconds: float) -> None:
        """A fast stop (open sessions are rolled back), ``down_seconds`` down, a start."""
        self._pg_ctl("-w", "-m", "fast", "stop")
        time.sleep(down_seconds)
        self._pg_ctl(
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT_SECONDS),
            "-o",
            '-h ""',  # no TCP: the Unix socket only, as the first start did
            "-o",
            f"-k {self.socket_dir}",
            "-l",
            str(self.data_dir / "log"),
            "start",
        )

    def freeze(self) -> int:
        """SIGSTOP to the postmaster (first, so that it starts no one new) and to every
        process of the server; how many."""
        postmaster = self._postmaster_pid()
        if postmaster is None:
            return 0
        for pid in [postmaster, *_children(postmaster)]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self._frozen.append(pid)
        return len(self._frozen)

    def thaw(self) -> None:
        """SIGCONT to every process frozen; harmless when none is."""
        frozen, self._frozen = self._frozen, []
        for pid in reversed(frozen):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def terminate_backends(self) -> int:
        """pg_terminate_backend on every other session of the soak's database; how many."""
        with self.connect() as connection:
            row = connection.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0

    @asynccontextmanager
    async def row_locked(self, order_id: int) -> AsyncIterator[None]:
        """The order's row locked FOR UPDATE by a transaction of our own for the block."""
        connection = await psycopg.AsyncConnection.connect(
            host=self.socket_dir,
            user="postgres",
            dbname=DATABASE,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        async with connection:
            await connection.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE", (order_id,))
            try:
                yield
            finally:
                await connection.rollback()

    # After the soak

    def store(self, orders: OrderRanges) -> Store:
        with self.connect() as connection:
            payments: dict[int, list[int]] = {}
            for order_id, payment_id in connection.execute(
                "SELECT order_id, id FROM payments ORDER BY id"
            ):
                payments.setdefault(int(order_id), []).append(int(payment_id))
            row = connection.execute(
                "SELECT count(*) FROM orders WHERE id BETWEEN %s AND %s AND status = 'pending'",
                (orders.first_untouchable, orders.last_untouchable),
            ).fetchone()
        return Store(payments, int(row[0]) if row else 0)

    def stop(self) -> None:
        self._server.stop()

    # The server's processes

    def _postmaster_line(self, index: int) -> str | None:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return None
        return lines[index].strip() if len(lines) > index else None

    def _postmaster_pid(self) -> int | None:
        line = self._postmaster_line(0)
        return int(line) if line and line.isdigit() else None

    def _pg_ctl(self, *arguments: str) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        # Output to a file, not a pipe: a server started by pg_ctl may hold a pipe open for
        # as long as it runs.
        with tempfile.TemporaryFile("w+") as output:
            done = subprocess.run(  # noqa: S603 - the package's own pg_ctl, no shell
                [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.data_dir), *arguments],
                user=self._system_user,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=PG_CTL_TIMEOUT_SECONDS + 10,
            )
            output.seek(0)
            said = output.read()
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(arguments)} failed: {said[-2000:]}")


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (Linux)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return children + [grandchild for child in children for grandchild in _children(child)]
