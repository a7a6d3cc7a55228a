"""orders (when absent) and payments

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

REQUIRED_ORDER_COLUMNS = ("id", "status", "total_price", "paid_at")


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("orders"):
        # The order service made it: use it as it is, add nothing to it.
        present = {column["name"] for column in inspector.get_columns("orders")}
        missing = [name for name in REQUIRED_ORDER_COLUMNS if name not in present]
        if missing:
            raise RuntimeError(
                "the existing table 'orders' lacks the column(s) "
                f"{', '.join(missing)}; the payment service needs "
                f"{', '.join(REQUIRED_ORDER_COLUMNS)}. Nothing was changed."
            )
    else:
        op.create_table(
            "orders",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("total_price", sa.Numeric(10, 2), nullable=False),
            sa.Column("paid_at", sa.DateTime(timezone=False), nullable=True),
        )

    op.create_table(
        "payments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "order_id",
            sa.Integer,
            sa.ForeignKey("orders.id", name="fk_payments_order_id"),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    )
    op.create_index(
        "uq_payments_one_succeeded_per_order",
        "payments",
        ["order_id"],
        unique=True,
        postgresql_where=sa.text("status = 'succeeded'"),
    )


def downgrade() -> None:
    # 'orders' stays: it belongs to the order service, even when this migration made it.
    op.drop_table("payments")
