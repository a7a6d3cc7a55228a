"""refunds: full and partial, never more than was paid, each told through the outbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

REASONS = "('requested_by_customer', 'duplicate', 'fraudulent', 'other')"


def upgrade() -> None:
    # The sum of a payment's refunds, kept beside it and written by the same statement as each
    # refund: the database itself refuses a sum above the payment's amount.
    op.add_column(
        "payments",
        sa.Column("amount_refunded", sa.Numeric(10, 2), server_default="0", nullable=False),
    )
    op.create_check_constraint(
        "ck_payments_refunds_within_amount",
        "payments",
        "amount_refunded >= 0 AND amount_refunded <= amount",
    )
    op.create_table(
        "refunds",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column(
            "payment_id",
            sa.Integer,
            sa.ForeignKey("payments.id", name="fk_refunds_payment_id"),
            nullable=False,
        ),
        sa.Column("amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_refunds"),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount_positive"),
        sa.CheckConstraint(f"reason IN {REASONS}", name="ck_refunds_reason"),
    )
    op.create_index("ix_refunds_payment_id", "refunds", ["payment_id"])
    op.create_table(
        "refund_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("caller", sa.String(100), nullable=False),
        sa.Column("payment_id", sa.Integer, nullable=False),
        sa.Column("claimed_amount", sa.Numeric(10, 2), nullable=True),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column(
            "refund_id",
            sa.Integer,
            sa.ForeignKey("refunds.id", name="fk_refund_attempts_refund_id"),
            nullable=True,
        ),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_refund_attempts"),
    )
    op.create_index("ix_refund_attempts_payment_id", "refund_attempts", ["payment_id"])
    op.create_index(
        "uq_refund_attempts_one_per_refund",
        "refund_attempts",
        ["refund_id"],
        unique=True,
        postgresql_where=sa.text("refund_id IS NOT NULL"),
    )
    op.add_column(
        "outbox_events",
        sa.Column(
            "refund_id",
            sa.Integer,
            sa.ForeignKey("refunds.id", name="fk_outbox_events_refund_id"),
            nullable=True,
        ),
    )
    op.create_index(
        "uq_outbox_events_one_per_refund",
        "outbox_events",
        ["refund_id"],
        unique=True,
        postgresql_where=sa.text("type = 'refund.succeeded'"),
    )


def downgrade() -> None:
    op.drop_index("uq_outbox_events_one_per_refund", table_name="outbox_events")
    op.execute("DELETE FROM outbox_events WHERE type = 'refund.succeeded'")
    op.drop_column("outbox_events", "refund_id")
    op.drop_table("refund_attempts")
    op.drop_table("refunds")
    op.drop_constraint("ck_payments_refunds_within_amount", "payments", type_="check")
    op.drop_column("payments", "amount_refunded")
