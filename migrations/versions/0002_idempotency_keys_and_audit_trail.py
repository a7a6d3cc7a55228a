"""idempotency keys and the audit trail of payment attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(100), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("answer_status", sa.SmallInteger, nullable=True),
        sa.Column("answer_body", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("caller", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])

    op.create_table(
        "payment_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("caller", sa.String(100), nullable=False),
        sa.Column("order_id", sa.Integer, nullable=False),
        sa.Column("claimed_amount", sa.Numeric(10, 2), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column(
            "payment_id",
            sa.Integer,
            sa.ForeignKey("payments.id", name="fk_payment_attempts_payment_id"),
            nullable=True,
        ),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_payment_attempts"),
    )
    op.create_index("ix_payment_attempts_order_id", "payment_attempts", ["order_id"])
    op.create_index(
        "uq_payment_attempts_one_paid_per_payment",
        "payment_attempts",
        ["payment_id"],
        unique=True,
        postgresql_where=sa.text("payment_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("payment_attempts")
    op.drop_table("idempotency_keys")
