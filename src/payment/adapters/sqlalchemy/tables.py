"""The tables as the service sees them. The schema itself is made by the migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
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

# Keys are scoped to the caller: two callers may use the same key for different requests.
# A row commits only together with its answer: a claim in progress is an uncommitted row,
# which concurrent claims of the same key wait on.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller", String(100), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("answer_status", SmallInteger, nullable=True),
    Column("answer_body", Text, nullable=True),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("expires_at", DateTime(timezone=False), nullable=False),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

ONE_PAID_RECORD_PER_PAYMENT = "uq_payment_attempts_one_paid_per_payment"

payment_attempts = Table(
    "payment_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("caller", String(100), nullable=False),
    Column("order_id", Integer, nullable=False),
    Column("claimed_amount", Numeric(10, 2, asdecimal=True), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Index("ix_payment_attempts_order_id", "order_id"),
    Index(
        ONE_PAID_RECORD_PER_PAYMENT,
        "payment_id",
        unique=True,
        postgresql_where=text("payment_id IS NOT NULL"),
    ),
)
