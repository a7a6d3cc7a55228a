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
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID

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
    Column("amount_refunded", Numeric(10, 2, asdecimal=True), server_default="0", nullable=False),
    CheckConstraint("amount > 0", name="ck_payments_amount_positive"),
    CheckConstraint(
        "amount_refunded >= 0 AND amount_refunded <= amount",
        name="ck_payments_refunds_within_amount",
    ),
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

ONE_EVENT_PER_PAYMENT = "uq_outbox_events_one_per_payment"
ONE_EVENT_PER_REFUND = "uq_outbox_events_one_per_refund"
REFUND_REASONS = "('requested_by_customer', 'duplicate', 'fraudulent', 'other')"
REFUNDS_WITHIN_AMOUNT = "ck_payments_refunds_within_amount"

# A payment given back, in full or in parts; ``payments.amount_refunded`` is their sum.
refunds = Table(
    "refunds",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=False),
    Column("amount", Numeric(10, 2, asdecimal=True), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
    CheckConstraint(f"reason IN {REFUND_REASONS}", name="ck_refunds_reason"),
    Index("ix_refunds_payment_id", "payment_id"),
)

refund_attempts = Table(
    "refund_attempts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("caller", String(100), nullable=False),
    Column("payment_id", Integer, nullable=False),
    Column("claimed_amount", Numeric(10, 2, asdecimal=True), nullable=True),
    Column("reason", String(32), nullable=True),
    Column("outcome", String(32), nullable=False),
    Column("refund_id", Integer, ForeignKey("refunds.id"), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Index("ix_refund_attempts_payment_id", "payment_id"),
    Index(
        "uq_refund_attempts_one_per_refund",
        "refund_id",
        unique=True,
        postgresql_where=text("refund_id IS NOT NULL"),
    ),
)

# The transactional outbox: each event commits with what it tells, and waits here until the
# relay has delivered it to every destination (``delivered_to``), or gives up (``dead``).
outbox_events = Table(
    "outbox_events",
    metadata,
    Column("position", BigInteger, Identity(always=False), primary_key=True),
    Column("event_id", UUID(as_uuid=False), nullable=False),
    Column("type", String(100), nullable=False),
    Column("subject", String(100), nullable=False),
    Column("payment_id", Integer, ForeignKey("payments.id"), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("status", String(20), server_default="pending", nullable=False),
    Column("attempts", Integer, server_default="0", nullable=False),
    Column("next_attempt_at", DateTime(timezone=False), nullable=False),
    Column("claimed_until", DateTime(timezone=False), nullable=True),
    Column("delivered_to", ARRAY(Text), server_default=text("'{}'::text[]"), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", DateTime(timezone=False), nullable=True),
    Column("refund_id", Integer, ForeignKey("refunds.id"), nullable=True),
    UniqueConstraint("event_id", name="uq_outbox_events_event_id"),
    CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="ck_outbox_events_status"),
    Index(
        ONE_EVENT_PER_PAYMENT,
        "payment_id",
        unique=True,
        postgresql_where=text("type = 'payment.succeeded'"),
    ),
    Index(
        ONE_EVENT_PER_REFUND,
        "refund_id",
        unique=True,
        postgresql_where=text("type = 'refund.succeeded'"),
    ),
    Index("ix_outbox_events_pending", "position", postgresql_where=text("status = 'pending'")),
    Index(
        "ix_outbox_events_pending_subject",
        "subject",
        "position",
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_outbox_events_dead", "position", postgresql_where=text("status = 'dead'")),
    Index(
        "ix_outbox_events_delivered_at",
        "delivered_at",
        postgresql_where=text("status = 'delivered'"),
    ),
)
