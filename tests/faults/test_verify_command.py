"""`payment-service verify`, which the fault tests trust to judge the database, says so when it
cannot: a breach is reported, and a database it cannot reach is not declared sound."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.support.aftermath import FaultDatabase, run_verify
from tests.support.orders import add_orders
from tests.support.restartable_postgres import RestartablePostgres

pytestmark = pytest.mark.faults


def test_verify_reports_an_order_paid_without_a_payment(fault_database: FaultDatabase) -> None:
    [order_id] = add_orders(fault_database.engine, "10.00")
    with fault_database.engine.begin() as connection:
        connection.execute(
            text("UPDATE orders SET status = 'paid', paid_at = now() WHERE id = :id"),
            {"id": order_id},
        )

    verify = run_verify(fault_database)

    assert verify.returncode == 1, verify
    assert f"BROKEN: order {order_id} is paid but has no succeeded payment" in verify.stdout


def test_verify_fails_when_the_database_cannot_be_reached(
    fault_postgres: RestartablePostgres, fault_database: FaultDatabase
) -> None:
    fault_postgres.stop()
    try:
        verify = run_verify(fault_database)
    finally:
        fault_postgres.start()

    assert verify.returncode == 1, verify
    assert "cannot reach the database" in verify.stderr
    assert "holds to the invariants" not in verify.stdout
