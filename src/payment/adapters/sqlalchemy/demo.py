"""Demo orders for the zero-setup run."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, insert

from payment.adapters.sqlalchemy.tables import orders
from payment.domain.model import OrderStatus

DEMO_TOTALS = (Decimal("199.99"), Decimal("25.00"), Decimal("1234.50"))


def add_demo_orders(
    engine: Engine, totals: tuple[Decimal, ...] = DEMO_TOTALS
) -> list[tuple[int, Decimal]]:
    """Add a pending order for each total; return their ids and totals."""
    with engine.begin() as connection:
        rows = connection.execute(
            insert(orders).returning(orders.c.id, orders.c.total_price),
            [{"status": OrderStatus.PENDING, "total_price": total} for total in totals],
        )
        return [(row.id, row.total_price) for row in rows]
