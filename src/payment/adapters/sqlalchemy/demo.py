"""Demo orders for the zero-setup run."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, insert, select

from payment.adapters.sqlalchemy.tables import orders
from payment.domain.model import OrderStatus

DEMO_TOTALS = (Decimal("199.99"), Decimal("25.00"), Decimal("1234.50"))


def pending_demo_orders(
    engine: Engine, totals: tuple[Decimal, ...] = DEMO_TOTALS
) -> list[tuple[int, Decimal]]:
    """``len(totals)`` pending orders, oldest first, with their totals: those still
    pending from an earlier run, topped up with new ones. Every run thus has orders to pay,
    and repeated runs do not pile orders up."""
    with engine.begin() as connection:
        pending = list(
            connection.execute(
                select(orders.c.id, orders.c.total_price)
                .where(orders.c.status == OrderStatus.PENDING)
                .order_by(orders.c.id)
                .limit(len(totals))
            ).all()
        )
        missing = totals[len(pending) :]
        if missing:
            pending += connection.execute(
                insert(orders).returning(
                    orders.c.id, orders.c.total_price, sort_by_parameter_order=True
                ),
                [{"status": OrderStatus.PENDING, "total_price": total} for total in missing],
            ).all()
        return [(row.id, row.total_price) for row in pending]
