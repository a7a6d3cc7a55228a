"""What the database holds after a fault or a stop, and `payment-service verify` on it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, bindparam, text
from sqlalchemy.engine import URL

VERIFY_TIMEOUT_SECONDS = 60.0
SERVICE_APPLICATION_NAME = "payment-service"
_SERVICE_PREFIXES = ("PAYMENT_", "ORDER_DB_")


@dataclass(frozen=True, slots=True)
class FaultDatabase:
    """A migrated database of one test on the restartable server. ``engine`` holds no idle
    connection (NullPool), so the test's own checks never trip over a restart."""

    name: str
    url: URL
    engine: Engine

    @property
    def rendered_url(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def service_settings(self, **settings: str) -> dict[str, str]:
        """Environment for `payment-service serve` on this database, plus ``settings``."""
        return {"DATABASE_URL": self.rendered_url, **settings}


@dataclass(frozen=True, slots=True)
class StoredPayment:
    id: int
    order_id: int
    amount: Decimal
    status: str


def _script() -> list[str]:
    script = Path(sys.executable).parent / "payment-service"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "payment.entrypoints.cli"]


def run_verify(database: FaultDatabase) -> subprocess.CompletedProcess[str]:
    """`payment-service verify` on ``database``, as an operator would run it."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(_SERVICE_PREFIXES) and name != "DATABASE_URL"
    }
    environment["DATABASE_URL"] = database.rendered_url
    return subprocess.run(
        [*_script(), "verify"],
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT_SECONDS,
        check=False,
    )


def assert_verified(database: FaultDatabase) -> None:
    """`payment-service verify` finds every invariant held: exit 0, no BROKEN line."""
    verify = run_verify(database)
    said = f"exit {verify.returncode}\nstdout:\n{verify.stdout}\nstderr:\n{verify.stderr}"
    assert verify.returncode == 0, said
    assert "BROKEN" not in verify.stdout, said
    assert "holds to the invariants" in verify.stdout, said


def payments_by_order(engine: Engine, order_ids: Iterable[int]) -> dict[int, list[StoredPayment]]:
    """Every payment of each of ``order_ids`` (an empty list for none), oldest first."""
    wanted = sorted(set(order_ids))
    found: dict[int, list[StoredPayment]] = {order_id: [] for order_id in wanted}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, order_id, amount, status FROM payments"
                " WHERE order_id IN :ids ORDER BY id"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": wanted},
        )
        for row in rows:
            found[row.order_id].append(StoredPayment(*row))
    return found


def order_states(engine: Engine, order_ids: Iterable[int]) -> dict[int, tuple[str, bool]]:
    """Each order's status and whether paid_at is set."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, status, paid_at IS NOT NULL AS has_paid_at FROM orders WHERE id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": sorted(set(order_ids))},
        )
        return {row.id: (row.status, row.has_paid_at) for row in rows}


def audited_payment_ids(engine: Engine) -> set[int]:
    """The payments that have the audit record of the attempt that made them."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT payment_id FROM payment_attempts WHERE outcome = 'paid'")
        )
        return {payment_id for (payment_id,) in rows if payment_id is not None}


def audit_outcomes(engine: Engine, order_id: int) -> list[str]:
    """The outcomes of the attempts on ``order_id``, in the order they were recorded."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT outcome FROM payment_attempts WHERE order_id = :id ORDER BY id"),
            {"id": order_id},
        )
        return [outcome for (outcome,) in rows]


def assert_paid_once(
    engine: Engine, totals: Mapping[int, str], receipts: Mapping[int, int]
) -> None:
    """Each order of ``receipts`` is paid, with exactly one succeeded payment of its total:
    the payment its receipt names, which has its audit record."""
    payments = payments_by_order(engine, receipts)
    states = order_states(engine, receipts)
    audited = audited_payment_ids(engine)
    for order_id, payment_id in receipts.items():
        stored = payments[order_id]
        assert [p.id for p in stored] == [payment_id], (order_id, payment_id, stored)
        assert stored[0].amount == Decimal(totals[order_id]), stored
        assert stored[0].status == "succeeded", stored
        assert states[order_id] == ("paid", True), (order_id, states[order_id])
        assert payment_id in audited, f"payment {payment_id} has no audit record"


def assert_untouched(engine: Engine, order_ids: Iterable[int]) -> None:
    """Each order is still pending, without paid_at and without any payment."""
    ids = list(order_ids)
    payments = payments_by_order(engine, ids)
    states = order_states(engine, ids)
    for order_id in ids:
        assert payments[order_id] == [], (order_id, payments[order_id])
        assert states[order_id] == ("pending", False), (order_id, states[order_id])


def wait_for_service_sessions_to_end(
    engine: Engine, database: str, *, timeout: float = 30.0
) -> None:
    """Until the server holds no session of the service on ``database``: after a kill, a
    COMMIT the dead process had sent may still be running, and must be done before checks."""
    deadline = time.monotonic() + timeout
    left = -1
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            left = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = :database AND application_name = :name"
                ),
                {"database": database, "name": SERVICE_APPLICATION_NAME},
            ).scalar_one()
        if left == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{left} session(s) of the killed service still open after {timeout} s")


def terminate_sessions(engine: Engine, database: str) -> int:
    """Terminate every other session on ``database``; how many were terminated."""
    with engine.connect() as connection:
        terminated: int = connection.execute(
            text(
                "SELECT count(*) FROM ("
                " SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE datname = :database AND pid <> pg_backend_pid()"
                ") AS t WHERE done"
            ),
            {"database": database},
        ).scalar_one()
    return terminated
