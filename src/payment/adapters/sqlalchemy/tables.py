"""The tables as the service sees them. The schema itself is made by the migrations."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    text,
)

metadata = MetaData()

ONE_SUCCEEDED_PAYMENT_PER_ORDER = "uq_payments_one_succeeded_per_order"

# Owned by the order service; only the columns the payment service uses.
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(20), nullable=False),
    Column("total_price", Numeric(10, 2, asdecimal=True), nullable=False),
    Column("paid_at", DateTime(timezone=False), nullable=True),
)

payments = Table(
    "payments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("order_id", Integer, ForeignKey("orders.id"), nullable=False),
    Column("amount", Numeric(10, 2, asdecimal=True), nullable=False),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    Index(
        ONE_SUCCEEDED_PAYMENT_PER_ORDER,
        "order_id",
        unique=True,
        postgresql_where=text("status = 'succeeded'"),
    ),
)
