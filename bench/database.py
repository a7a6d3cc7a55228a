"""The benchmark's database, and the orders in it.

Either an embedded PostgreSQL of its own in a temporary folder, or, when
``BENCH_DATABASE_URL`` names a server, a fresh database ``payment_bench_<random>`` on it.
Both are migrated with the service's own migrations and are gone when the run ends.

Every order costs 10.00, so every request pays ``{"order_id": id, "amount": "10.00"}``.
Orders are added in blocks, one per measured run, so that no run pays an order twice; the
refund run's payments likewise, already paid, one per request, so that each is refunded once.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from sqlalchemy.engine import URL, make_url

from payment.adapters.cloudevents import DEFAULT_SOURCE
from payment.adapters.sqlalchemy import migrations

TOTAL = "10.00"
CEILING_SEQUENCE = "bench_next_order"
"""pgbench reads the next order id of each transaction (reference, ceiling) from this
sequence."""

TABLES = (
    "orders",
    "payments",
    "payment_attempts",
    "idempotency_keys",
    "outbox_events",
    "refunds",
    "refund_attempts",
)
"""What the runs write: vacuumed before each run."""
MISSING_EVENTS = """
INSERT INTO outbox_events (event_id, type, subject, payment_id, body, created_at, next_attempt_at)
SELECT e.id, 'payment.succeeded', p.order_id::text, p.id,
       json_build_object(
           'specversion', '1.0', 'id', e.id, 'source', %(source)s::text,
           'type', 'payment.succeeded', 'subject', p.order_id::text, 'time', e.at,
           'datacontenttype', 'application/json',
           'data', json_build_object(
               'order_id', p.order_id, 'payment_id', p.id, 'amount', p.amount::text,
               'created_at', e.at))::text,
       p.created_at, p.created_at
FROM payments AS p
CROSS JOIN LATERAL (
    SELECT gen_random_uuid() AS id,
           to_char(p.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at) AS e
WHERE p.status = 'succeeded' AND NOT EXISTS (
    SELECT 1 FROM outbox_events AS o WHERE o.payment_id = p.id AND o.type = 'payment.succeeded')
ORDER BY p.id
"""
"""The event the service writes with each payment (a CloudEvent with a new id, the order as
its subject, the amount as a string), for the payments that have none: it mirrors the
migration that made the outbox (``migrations/versions/0003_outbox.py``, its ``BACKFILL``)."""


@dataclass(frozen=True, slots=True)
class Block:
    """The pending orders of one run: ``count`` ids from ``first``, ``stride`` apart."""

    first: int
    count: int
    stride: int = 1

    @property
    def last(self) -> int:
        return self.first + (self.count - 1) * self.stride


@dataclass(frozen=True, slots=True)
class Refunds:
    """What a refund run left for its payments."""

    count: int
    events: int
    """``refund.succeeded`` events of those refunds."""
    audit_records: int
    """Audit records (``refund_attempts``, outcome ``refunded``) of those refunds."""
    unsound_payments: int
    """Payments refunded beyond their amount, or whose ``amount_refunded`` is not the sum of
    their refunds: 0 unless the guard failed."""


@dataclass(frozen=True, slots=True)
class Database:
    """A migrated database the benchmark owns; ``kind`` says where it runs."""

    url: URL
    kind: str

    def service_url(self) -> str:
        """For the service's DATABASE_URL."""
        return self.url.render_as_string(hide_password=False)

    def libpq(self) -> dict[str, str]:
        """Connection parameters for psycopg and pgbench (a host that is a folder is a socket)."""
        host = self.url.host or str(self.url.query.get("host", ""))
        parts = {
            "host": host,
            "port": str(self.url.port or ""),
            "user": self.url.username or "",
            "password": self.url.password if isinstance(self.url.password, str) else "",
            "dbname": self.url.database or "",
        }
        return {name: value for name, value in parts.items() if value}

    def connect(self) -> psycopg.Connection[TupleRow]:
        conninfo = psycopg.conninfo.make_conninfo("", **self.libpq())
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)


@contextmanager
def bench_database(temp_dir: Path) -> Iterator[Database]:
    """A new migrated database for the length of the block, on ``BENCH_DATABASE_URL``'s
    server when set, else on an embedded server under ``temp_dir``. Always removed after."""
    configured = os.environ.get("BENCH_DATABASE_URL")
    if configured:
        with _scratch_database(make_url(configured)) as url:
            migrations.upgrade(url)
            yield Database(url, "BENCH_DATABASE_URL")
        return

    from payment.adapters.embedded_postgres import EmbeddedPostgres

    # A short path of its own: the server's Unix socket lives in it.
    data_dir = Path(tempfile.mkdtemp(prefix="payment-bench-pg-"))
    server = EmbeddedPostgres(data_dir / "data", keep_data=False)
    try:
        url = server.create_database("payment_bench")
        migrations.upgrade(url)
        yield Database(url, "embedded")
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def _scratch_database(server_url: URL) -> Iterator[URL]:
    server_url = server_url.set(drivername="postgresql+psycopg")
    admin = Database(server_url, "admin")
    name = f"payment_bench_{secrets.token_hex(6)}"
    with admin.connect() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server_url.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class Orders:
    """Adds the benchmark's orders and counts what the runs made of them.

    Ids are handed out here, in increasing order, and never twice. Makes the sequence the
    pgbench transactions take their order ids from."""

    def __init__(self, connection: psycopg.Connection[TupleRow]) -> None:
        self._connection = connection
        self._next_id = 1
        connection.execute(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(CEILING_SEQUENCE)))

    def add_pending(self, count: int) -> Block:
        """``count`` new pending orders with consecutive ids."""
        block = Block(self._next_id, count)
        self._connection.execute(
            "INSERT INTO orders (id, status, total_price)"
            " SELECT g, 'pending', %s FROM generate_series(%s::int, %s::int) AS g",
            (TOTAL, block.first, block.last),
        )
        self._next_id = block.last + 1
        return block

    def add_paid_history(self, paid: int, pending: int) -> Block:
        """``paid`` orders already paid, each with its payment, its audit record and its
        event, and among them, evenly spread over their id range, ``pending`` new pending
        orders: the block returned."""
        stride = (paid + pending) // pending
        block = Block(self._next_id, pending, stride)
        last = self._next_id + paid + pending - 1
        self._connection.execute(
            "INSERT INTO orders (id, status, total_price, paid_at)"
            " SELECT g, CASE WHEN p THEN 'pending' ELSE 'paid' END, %(total)s,"
            "  CASE WHEN p THEN NULL ELSE LOCALTIMESTAMP - make_interval(secs => %(last)s - g) END"
            " FROM (SELECT g, (g - %(first)s) %% %(stride)s = 0"
            "        AND (g - %(first)s) / %(stride)s < %(pending)s AS p"
            "       FROM generate_series(%(first)s::int, %(last)s::int) AS g) AS spread",
            {
                "total": TOTAL,
                "first": block.first,
                "last": last,
                "stride": stride,
                "pending": pending,
            },
        )
        self._connection.execute(
            "INSERT INTO payments (order_id, amount, status, created_at)"
            " SELECT id, total_price, 'succeeded', paid_at FROM orders"
            " WHERE id BETWEEN %s AND %s AND status = 'paid' ORDER BY id",
            (block.first, last),
        )
        self._connection.execute(
            "INSERT INTO payment_attempts"
            " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id)"
            " SELECT created_at, 'seed-' || id, 'anonymous', order_id, amount, 'paid', id"
            " FROM payments WHERE order_id BETWEEN %s AND %s ORDER BY id",
            (block.first, last),
        )
        self.add_missing_events()
        self._next_id = last + 1
        return block

    def add_paid(self, count: int) -> Block:
        """``count`` new orders already paid, each with its payment, its audit record and its
        ``payment.succeeded`` event, as the service writes them (``add_paid_history``'s
        rows, without pending orders among them): the block of their payment ids, which are
        consecutive (the harness is the only writer while it adds them)."""
        orders = Block(self._next_id, count)
        self._connection.execute(
            "INSERT INTO orders (id, status, total_price, paid_at)"
            " SELECT g, 'paid', %s, LOCALTIMESTAMP FROM generate_series(%s::int, %s::int) AS g",
            (TOTAL, orders.first, orders.last),
        )
        self._next_id = orders.last + 1
        self._connection.execute(
            "INSERT INTO payments (order_id, amount, status, created_at)"
            " SELECT id, total_price, 'succeeded', paid_at FROM orders"
            " WHERE id BETWEEN %s AND %s ORDER BY id",
            (orders.first, orders.last),
        )
        row = self._connection.execute(
            "SELECT min(id), max(id), count(*) FROM payments WHERE order_id BETWEEN %s AND %s",
            (orders.first, orders.last),
        ).fetchone()
        if row is None or row[2] != count or row[1] - row[0] + 1 != count:
            raise RuntimeError(f"the payments of orders {orders} do not have consecutive ids")
        payments = Block(int(row[0]), count)
        self._connection.execute(
            "INSERT INTO payment_attempts"
            " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id)"
            " SELECT created_at, 'seed-' || id, 'anonymous', order_id, amount, 'paid', id"
            " FROM payments WHERE id BETWEEN %s AND %s ORDER BY id",
            (payments.first, payments.last),
        )
        self.add_missing_events()
        return payments

    def add_missing_audit_records(self) -> int:
        """An audit record for each payment that has none: the reference's transaction
        writes none, and ``payment-service verify`` counts that as a breach. How many."""
        added = self._connection.execute(
            "INSERT INTO payment_attempts"
            " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id)"
            " SELECT p.created_at, 'reference-' || p.id, 'anonymous', p.order_id, p.amount,"
            "  'paid', p.id"
            " FROM payments AS p WHERE NOT EXISTS"
            "  (SELECT 1 FROM payment_attempts AS a WHERE a.payment_id = p.id) ORDER BY p.id"
        ).rowcount
        return max(added, 0)

    def add_missing_events(self) -> int:
        """A ``payment.succeeded`` event for each payment that has none: the reference's
        transaction writes none, nor does the service with its outbox switched off, nor the
        paid history; ``payment-service verify`` counts that as a breach. How many."""
        added = self._connection.execute(MISSING_EVENTS, {"source": DEFAULT_SOURCE}).rowcount
        return max(added, 0)

    def events_in(self, block: Block) -> int:
        """``payment.succeeded`` events written for the payments of ``block``'s orders."""
        row = self._connection.execute(
            "SELECT count(*) FROM outbox_events WHERE type = 'payment.succeeded'"
            " AND payment_id IN (SELECT id FROM payments"
            "  WHERE order_id BETWEEN %s AND %s AND (order_id - %s) %% %s = 0)",
            (block.first, block.last, block.first, block.stride),
        ).fetchone()
        return int(row[0]) if row else 0

    def start_ceiling_at(self, block: Block) -> None:
        """pgbench's next transaction pays ``block.first`` (consecutive ids only)."""
        assert block.stride == 1
        self._connection.execute("SELECT setval(%s, %s, false)", (CEILING_SEQUENCE, block.first))

    def payments_in(self, block: Block) -> int:
        """Payments written for the orders of ``block``."""
        row = self._connection.execute(
            "SELECT count(*) FROM payments"
            " WHERE order_id BETWEEN %s AND %s AND (order_id - %s) %% %s = 0",
            (block.first, block.last, block.first, block.stride),
        ).fetchone()
        return int(row[0]) if row else 0

    def refunds_of(self, payments: Block) -> Refunds:
        """What the refunds of the payments of ``payments`` (a block of payment ids) left:
        how many, their events, their audit records, and the payments refunded beyond their
        amount or whose ``amount_refunded`` is not the sum of their refunds."""
        row = self._connection.execute(
            "SELECT"
            " (SELECT count(*) FROM refunds WHERE payment_id BETWEEN %(first)s AND %(last)s),"
            " (SELECT count(*) FROM outbox_events e JOIN refunds r ON r.id = e.refund_id"
            "  WHERE e.type = 'refund.succeeded'"
            "  AND r.payment_id BETWEEN %(first)s AND %(last)s),"
            " (SELECT count(*) FROM refund_attempts a JOIN refunds r ON r.id = a.refund_id"
            "  WHERE a.outcome = 'refunded' AND r.payment_id BETWEEN %(first)s AND %(last)s),"
            " (SELECT count(*) FROM payments p"
            "  LEFT JOIN (SELECT payment_id, sum(amount) AS total FROM refunds"
            "   WHERE payment_id BETWEEN %(first)s AND %(last)s GROUP BY payment_id) r"
            "  ON r.payment_id = p.id"
            "  WHERE p.id BETWEEN %(first)s AND %(last)s"
            "  AND (coalesce(r.total, 0) > p.amount OR coalesce(r.total, 0) <> p.amount_refunded))",
            {"first": payments.first, "last": payments.last},
        ).fetchone()
        if row is None:
            return Refunds(0, 0, 0, 0)
        return Refunds(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    def refunds_in(self, payments: Block) -> int:
        """Refunds written for the payments of ``payments`` (a block of payment ids)."""
        row = self._connection.execute(
            "SELECT count(*) FROM refunds WHERE payment_id BETWEEN %s AND %s",
            (payments.first, payments.last),
        ).fetchone()
        return int(row[0]) if row else 0

    def paid_ids(self, block: Block) -> list[int]:
        """The orders of ``block`` that have a payment, in id order."""
        rows = self._connection.execute(
            "SELECT order_id FROM payments"
            " WHERE order_id BETWEEN %s AND %s AND (order_id - %s) %% %s = 0 ORDER BY order_id",
            (block.first, block.last, block.first, block.stride),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def service_busy(self) -> bool:
        """True while a connection of the service runs a statement or holds a transaction."""
        row = self._connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'payment-service' AND state <> 'idle'"
        ).fetchone()
        return bool(row and row[0])

    def wait_until_service_idle(self, timeout: float = 15.0) -> None:
        """Until no connection of the service is busy (requests a stopped load left behind)."""
        deadline = time.monotonic() + timeout
        while self.service_busy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def table_orders(self) -> int:
        row = self._connection.execute("SELECT count(*) FROM orders").fetchone()
        return int(row[0]) if row else 0

    def empty(self) -> None:
        """Remove every order, payment, refund, audit record, event and idempotency key, and
        whatever else refers to them (``CASCADE``). A request still finishing may hold a lock
        the truncation needs: it then tries again."""
        for attempt in range(1, 6):
            try:
                self._connection.execute(
                    "TRUNCATE outbox_events, refund_attempts, refunds, payment_attempts,"
                    " idempotency_keys, payments, orders CASCADE"
                )
                return
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                if attempt == 5:
                    raise
                time.sleep(1)

    def settle(self) -> None:
        """Vacuum and analyse what the last seeding or run left, and write it out, so that
        the next run pays neither for it."""
        for table in TABLES:
            self._connection.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        # On a server of yours where we may not, the runs go on without it.
        with suppress(psycopg.errors.InsufficientPrivilege):
            self._connection.execute("CHECKPOINT")
