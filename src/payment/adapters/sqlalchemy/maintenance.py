"""Operations on the whole store: checking its invariants, purging expired idempotency keys."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, delete, select, text, tuple_

from payment.adapters.sqlalchemy.repositories import to_db
from payment.adapters.sqlalchemy.tables import idempotency_keys

# Each query yields one line per breach. SPEC §3.2: an order is paid exactly when it has one
# succeeded payment whose amount equals its total, with paid_at set; and every payment has
# the audit record of the attempt that made it.
_BREACHES = (
    """
    SELECT format('order %s has %s succeeded payments', order_id, count(*))
    FROM payments WHERE status = 'succeeded'
    GROUP BY order_id HAVING count(*) > 1 ORDER BY order_id
    """,
    """
    SELECT format('order %s is %s but has no succeeded payment of its total', o.id, o.status)
    FROM orders o
    WHERE o.status = 'paid' AND NOT EXISTS (
        SELECT 1 FROM payments p
        WHERE p.order_id = o.id AND p.status = 'succeeded' AND p.amount = o.total_price)
    ORDER BY o.id
    """,
    """
    SELECT format('payment %s of order %s succeeded but the order is %s', p.id, o.id, o.status)
    FROM payments p JOIN orders o ON o.id = p.order_id
    WHERE p.status = 'succeeded' AND o.status <> 'paid'
    ORDER BY p.id
    """,
    """
    SELECT format('payment %s of %s differs from the total %s of order %s',
                  p.id, p.amount, o.total_price, o.id)
    FROM payments p JOIN orders o ON o.id = p.order_id
    WHERE p.amount <> o.total_price
    ORDER BY p.id
    """,
    """
    SELECT format('order %s is %s but paid_at is %s', id, status,
                  coalesce(paid_at::text, 'not set'))
    FROM orders WHERE (status = 'paid') <> (paid_at IS NOT NULL)
    ORDER BY id
    """,
    """
    SELECT format('payment %s of order %s has no audit record', p.id, p.order_id)
    FROM payments p
    WHERE NOT EXISTS (
        SELECT 1 FROM payment_attempts a WHERE a.payment_id = p.id AND a.outcome = 'paid')
    ORDER BY p.id
    """,
    """
    SELECT format('audit record %s says order %s was paid %s but payment %s is of order %s, %s',
                  a.id, a.order_id, a.claimed_amount, p.id, p.order_id, p.amount)
    FROM payment_attempts a JOIN payments p ON p.id = a.payment_id
    WHERE a.order_id <> p.order_id OR a.claimed_amount <> p.amount
    ORDER BY a.id
    """,
    # SPEC §3.8: every committed payment is told exactly once, by an event that says it.
    """
    SELECT format('payment %s has %s payment.succeeded events', payment_id, count(*))
    FROM outbox_events WHERE type = 'payment.succeeded'
    GROUP BY payment_id HAVING count(*) > 1 ORDER BY payment_id
    """,
    """
    SELECT format('event %s says %s of order %s paid %s, but payment %s is of order %s, %s',
                  e.event_id, e.type, e.body::json->'data'->>'order_id',
                  e.body::json->'data'->>'amount', p.id, p.order_id, p.amount)
    FROM outbox_events e JOIN payments p ON p.id = e.payment_id
    WHERE e.type = 'payment.succeeded' AND (
        e.subject <> p.order_id::text
        OR e.body::json->'data'->>'order_id' <> p.order_id::text
        OR e.body::json->'data'->>'payment_id' <> p.id::text
        OR e.body::json->'data'->>'amount' <> p.amount::text)
    ORDER BY e.position
    """,
    # Refunds: never more than was paid, their sum kept beside the payment, each audited.
    """
    SELECT format('payment %s of %s has refunds of %s but says %s refunded',
                  p.id, p.amount, coalesce(r.total, 0), p.amount_refunded)
    FROM payments p
    LEFT JOIN (SELECT payment_id, sum(amount) AS total FROM refunds GROUP BY payment_id) r
           ON r.payment_id = p.id
    WHERE coalesce(r.total, 0) <> p.amount_refunded OR coalesce(r.total, 0) > p.amount
    ORDER BY p.id
    """,
    """
    SELECT format('refund %s of payment %s has no audit record', r.id, r.payment_id)
    FROM refunds r
    WHERE NOT EXISTS (
        SELECT 1 FROM refund_attempts a WHERE a.refund_id = r.id AND a.outcome = 'refunded')
    ORDER BY r.id
    """,
    """
    SELECT format('event %s says refund %s of %s, but refund %s is of payment %s, %s',
                  e.event_id, e.body::json->'data'->>'refund_id', e.body::json->'data'->>'amount',
                  r.id, r.payment_id, r.amount)
    FROM outbox_events e JOIN refunds r ON r.id = e.refund_id
    WHERE e.type = 'refund.succeeded' AND (
        e.payment_id <> r.payment_id
        OR e.body::json->'data'->>'refund_id' <> r.id::text
        OR e.body::json->'data'->>'amount' <> r.amount::text)
    ORDER BY e.position
    """,
)

# A delivered event is purged once the outbox's retention has passed: older payments may have
# none left. (Payments made before the outbox got theirs when it was created.)
_UNTOLD = (
    """
    SELECT format('payment %s of order %s has no payment.succeeded event', p.id, p.order_id)
    FROM payments p
    WHERE p.status = 'succeeded'
      AND p.created_at > (now() AT TIME ZONE 'UTC') - make_interval(secs => :retention_seconds)
      AND NOT EXISTS (
        SELECT 1 FROM outbox_events e WHERE e.payment_id = p.id AND e.type = 'payment.succeeded')
    ORDER BY p.id
    """,
    """
    SELECT format('refund %s of payment %s has no refund.succeeded event', r.id, r.payment_id)
    FROM refunds r
    WHERE r.created_at > (now() AT TIME ZONE 'UTC') - make_interval(secs => :retention_seconds)
      AND NOT EXISTS (
        SELECT 1 FROM outbox_events e WHERE e.refund_id = r.id AND e.type = 'refund.succeeded')
    ORDER BY r.id
    """,
)
DEFAULT_OUTBOX_RETENTION = timedelta(hours=168)


def broken_invariants(
    engine: Engine, *, outbox_retention: timedelta = DEFAULT_OUTBOX_RETENTION
) -> list[str]:
    """Every breach of the store's invariants, one sentence each; empty when it is sound.
    Read in one snapshot, so that payments committing meanwhile do not show as breaches, and
    without the statement timeout: it reads the whole store.
    A payment older than ``outbox_retention`` may have had its delivered event purged."""
    with engine.connect().execution_options(
        isolation_level="REPEATABLE READ", postgresql_readonly=True
    ) as connection:
        # A check reads every row: on a large store it outlasts the statement timeout the
        # requests are held to. It only reads, in a snapshot, and holds no lock a payment needs.
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        lines = [line for query in _BREACHES for line in _lines(connection, query)]
        retention: dict[str, object] = {"retention_seconds": outbox_retention.total_seconds()}
        return lines + [line for query in _UNTOLD for line in _lines(connection, query, retention)]


def _lines(
    connection: Connection, query: str, params: dict[str, object] | None = None
) -> list[str]:
    return [str(line) for line in connection.execute(text(query), params or {}).scalars()]


def purge_expired_keys(engine: Engine, now: datetime, *, batch_size: int = 10_000) -> int:
    """Delete the idempotency keys that expired by ``now``, in short transactions of at most
    ``batch_size`` rows so that payments never wait long on the purge. Returns how many."""
    key = tuple_(idempotency_keys.c.caller, idempotency_keys.c.key)
    expired = (
        select(idempotency_keys.c.caller, idempotency_keys.c.key)
        .where(idempotency_keys.c.expires_at <= to_db(now))
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    purged = 0
    while True:
        with engine.begin() as connection:
            deleted = connection.execute(delete(idempotency_keys).where(key.in_(expired))).rowcount
        purged += deleted
        if deleted < batch_size:
            return purged
