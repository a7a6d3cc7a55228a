"""the transactional outbox: one event per payment, written with it, delivered after

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("position", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column(
            "payment_id",
            sa.Integer,
            sa.ForeignKey("payments.id", name="fk_outbox_events_payment_id"),
            nullable=False,
        ),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer, server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=False), nullable=True),
        sa.Column(
            "delivered_to",
            postgresql.ARRAY(sa.Text),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("position", name="pk_outbox_events"),
        sa.UniqueConstraint("event_id", name="uq_outbox_events_event_id"),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'dead')", name="ck_outbox_events_status"
        ),
    )
    op.create_index(
        "uq_outbox_events_one_per_payment",
        "outbox_events",
        ["payment_id"],
        unique=True,
        postgresql_where=sa.text("type = 'payment.succeeded'"),
    )
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["position"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_outbox_events_pending_subject",
        "outbox_events",
        ["subject", "position"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_outbox_events_dead",
        "outbox_events",
        ["position"],
        postgresql_where=sa.text("status = 'dead'"),
    )
    op.create_index(
        "ix_outbox_events_delivered_at",
        "outbox_events",
        ["delivered_at"],
        postgresql_where=sa.text("status = 'delivered'"),
    )

    # Every committed payment is told once (SPEC §3.8), those made before the outbox too: each
    # gets its event now, as the service writes them, and the relay delivers them like others.
    op.execute(
        sa.text(BACKFILL).bindparams(
            source=os.environ.get("PAYMENT_EVENT_SOURCE") or DEFAULT_SOURCE
        )
    )


DEFAULT_SOURCE = "/payment-service"
BACKFILL = """
INSERT INTO outbox_events (event_id, type, subject, payment_id, body, created_at, next_attempt_at)
SELECT e.id, 'payment.succeeded', p.order_id::text, p.id,
       json_build_object(
           'specversion', '1.0', 'id', e.id, 'source', :source, 'type', 'payment.succeeded',
           'subject', p.order_id::text, 'time', e.at, 'datacontenttype', 'application/json',
           'data', json_build_object(
               'order_id', p.order_id, 'payment_id', p.id, 'amount', p.amount::text,
               'created_at', e.at))::text,
       p.created_at, p.created_at
FROM payments p
CROSS JOIN LATERAL (
    SELECT gen_random_uuid() AS id,
           to_char(p.created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS at) e
WHERE p.status = 'succeeded'
ORDER BY p.id
"""


def downgrade() -> None:
    op.drop_table("outbox_events")
