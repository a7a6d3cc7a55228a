"""Orders as the order service would make them, and the database's view of payments."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, insert, text

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
    """Every breach of SPEC §3.2 in the database: an order is paid exactly when it has one
    succeeded payment whose amount equals its total, with paid_at set."""
    query = text(
        """
        SELECT o.id, o.status, o.total_price, o.paid_at,
               count(p.id) FILTER (WHERE p.status = 'succeeded') AS succeeded,
               count(p.id) FILTER (WHERE p.status = 'succeeded' AND p.amount = o.total_price)
                   AS exact
        FROM orders o LEFT JOIN payments p ON p.order_id = o.id
        GROUP BY o.id
        """
    )
    problems = []
    with engine.connect() as connection:
        for row in connection.execute(query):
            paid = row.status == "paid"
            if row.succeeded > 1:
                problems.append(f"order {row.id} has {row.succeeded} succeeded payments")
            if paid != (row.exact == 1):
                problems.append(
                    f"order {row.id} is {row.status} with {row.exact} exact succeeded payment(s)"
                )
            if paid != (row.paid_at is not None):
                problems.append(f"order {row.id} is {row.status} but paid_at is {row.paid_at}")
    return problems
