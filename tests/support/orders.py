"""Orders as the order service would make them, and the database's view of payments."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, insert

from payment.adapters.sqlalchemy import maintenance
from payment.adapters.sqlalchemy.tables import orders


def add_orders(engine: Engine, *totals: str, status: str = "pending") -> list[int]:
    """Insert one order per total; return their ids in the same order."""
    with engine.begin() as connection:
        rows = connection.execute(
            insert(orders).returning(orders.c.id),
            [{"status": status, "total_price": Decimal(total)} for total in totals],
        )
        return [row.id for row in rows]


def broken_invariants(engine: Engine) -> list[str]:
    """Every breach of SPEC §3.2 in the database, as ``payment-service verify`` reports it."""
    return maintenance.broken_invariants(engine)
