"""Operations on the whole store: finding every breach of the invariants, and purging expired
idempotency keys. Breaches are written directly with SQL, as a bug or a hand edit would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from payment.adapters import cloudevents
from payment.adapters.clock import SystemClock
from payment.adapters.sqlalchemy.maintenance import broken_invariants, purge_expired_keys
from payment.adapters.sqlalchemy.repositories import to_db
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.events import PaymentSucceeded
from payment.domain.model import Money
from tests.integration.conftest import ServiceEngine
from tests.support.attempts import pay
from tests.support.orders import add_orders

PAID_AT = "2026-11-26 10:15:00"
NOW = datetime(2026, 11, 26, 10, 15, 0, 123456, tzinfo=UTC)


def add_order(
    connection: Connection, total: str, status: str = "paid", paid_at: str | None = PAID_AT
) -> int:
    order_id: int = connection.execute(
        text(
            "INSERT INTO orders (status, total_price, paid_at)"
            " VALUES (:status, :total, :paid_at) RETURNING id"
        ),
        {"status": status, "total": total, "paid_at": paid_at},
    ).scalar_one()
    return order_id


def add_payment(
    connection: Connection,
    order_id: int,
    amount: str,
    *,
    at: datetime = NOW,
    told: bool = True,
) -> int:
    """A succeeded payment and, when ``told``, its payment.succeeded event, as the service
    writes them."""
    payment_id: int = connection.execute(
        text(
            "INSERT INTO payments (order_id, amount, status, created_at)"
            " VALUES (:order_id, :amount, 'succeeded', :at) RETURNING id"
        ),
        {"order_id": order_id, "amount": amount, "at": to_db(at)},
    ).scalar_one()
    if told:
        add_event(connection, PaymentSucceeded(payment_id, order_id, Money.of(amount), at))
    return payment_id


def add_event(connection: Connection, event: PaymentSucceeded) -> str:
    event_id = cloudevents.new_event_id()
    connection.execute(
        text(
            "INSERT INTO outbox_events"
            " (event_id, type, subject, payment_id, body, created_at, next_attempt_at)"
            " VALUES (:event_id, :type, :subject, :payment_id, :body, :at, :at)"
        ),
        {
            "event_id": event_id,
            "type": event.type,
            "subject": str(event.order_id),
            "payment_id": event.payment_id,
            "body": cloudevents.payment_succeeded(event, event_id=event_id, source="/test"),
            "at": to_db(event.created_at),
        },
    )
    return event_id


def add_audit_record(
    connection: Connection,
    order_id: int,
    amount: str,
    payment_id: int | None,
    outcome: str = "paid",
) -> int:
    record_id: int = connection.execute(
        text(
            "INSERT INTO payment_attempts"
            " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id)"
            " VALUES (:at, 'request', 'caller', :order_id, :amount, :outcome, :payment_id)"
            " RETURNING id"
        ),
        {
            "at": PAID_AT,
            "order_id": order_id,
            "amount": amount,
            "outcome": outcome,
            "payment_id": payment_id,
        },
    ).scalar_one()
    return record_id


def add_paid_order(connection: Connection, total: str) -> tuple[int, int]:
    """A paid order as the service leaves one: its payment and the audit record of it."""
    order_id = add_order(connection, total)
    payment_id = add_payment(connection, order_id, total)
    add_audit_record(connection, order_id, total, payment_id)
    return order_id, payment_id


@pytest.mark.anyio
async def test_a_store_written_only_by_the_use_case_holds_to_every_invariant(
    corruptible_database: Engine, corruptible_service: ServiceEngine
) -> None:
    engine = corruptible_database
    paid_ids = add_orders(engine, "10.00", "20.50", "99999999.99")
    [cancelled_id] = add_orders(engine, "5.00", status="cancelled")

    async def pay_now(order_id: int, amount: str, key: str | None = None) -> Outcome:
        uow = corruptible_service.unit_of_work()
        return (await pay(order_id, amount, key=key, uow=uow, clock=SystemClock())).outcome

    outcomes = [
        await pay_now(paid_ids[0], "10.01"),
        await pay_now(paid_ids[0], "10.00", key="key-1"),
        await pay_now(paid_ids[0], "10.00", key="key-1"),
        await pay_now(paid_ids[0], "10.00"),
        await pay_now(paid_ids[1], "20.50"),
        await pay_now(paid_ids[2], "99999999.99", key="key-2"),
        await pay_now(cancelled_id, "5.00"),
        await pay_now(cancelled_id + 1, "5.00"),
    ]
    assert await pay_now(paid_ids[1], "20.50", key="key-2") is Outcome.IDEMPOTENCY_KEY_REUSED

    assert outcomes == [
        Outcome.AMOUNT_MISMATCH,
        Outcome.PAID,
        Outcome.REPLAYED,
        Outcome.ORDER_NOT_PAYABLE,
        Outcome.PAID,
        Outcome.PAID,
        Outcome.ORDER_NOT_PAYABLE,
        Outcome.ORDER_NOT_FOUND,
    ]
    assert broken_invariants(engine) == []


def test_an_empty_store_holds_to_every_invariant(corruptible_database: Engine) -> None:
    assert broken_invariants(corruptible_database) == []


# Two succeeded payments of one order would be a breach too, but the partial unique index
# refuses to store them (see test_database_guarantees), so there is no way to write that one.


def test_a_paid_order_without_a_payment_is_a_breach(corruptible_database: Engine) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00")

    assert broken_invariants(corruptible_database) == [
        f"order {order_id} is paid but has no succeeded payment of its total"
    ]


def test_a_succeeded_payment_of_a_pending_order_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00", status="pending", paid_at=None)
        payment_id = add_payment(connection, order_id, "20.00")
        add_audit_record(connection, order_id, "20.00", payment_id)

    assert broken_invariants(corruptible_database) == [
        f"payment {payment_id} of order {order_id} succeeded but the order is pending"
    ]


def test_a_payment_that_differs_from_the_orders_total_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "19.99")
        add_audit_record(connection, order_id, "19.99", payment_id)

    assert broken_invariants(corruptible_database) == [
        f"order {order_id} is paid but has no succeeded payment of its total",
        f"payment {payment_id} of 19.99 differs from the total 20.00 of order {order_id}",
    ]


def test_a_paid_order_without_paid_at_is_a_breach(corruptible_database: Engine) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id, _ = add_paid_order(connection, "20.00")
        connection.execute(
            text("UPDATE orders SET paid_at = NULL WHERE id = :id"), {"id": order_id}
        )

    assert broken_invariants(corruptible_database) == [
        f"order {order_id} is paid but paid_at is not set"
    ]


def test_a_pending_order_with_paid_at_is_a_breach(corruptible_database: Engine) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00", status="pending", paid_at=PAID_AT)

    assert broken_invariants(corruptible_database) == [
        f"order {order_id} is pending but paid_at is {PAID_AT}"
    ]


@pytest.mark.parametrize("other_record", [None, "order_not_payable"])
def test_a_payment_without_the_audit_record_of_its_paid_attempt_is_a_breach(
    corruptible_database: Engine, other_record: str | None
) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "20.00")
        if other_record is not None:
            add_audit_record(connection, order_id, "20.00", payment_id, outcome=other_record)

    assert broken_invariants(corruptible_database) == [
        f"payment {payment_id} of order {order_id} has no audit record"
    ]


def test_an_audit_record_naming_a_payment_of_another_order_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        first_order, _ = add_paid_order(connection, "20.00")
        second_order = add_order(connection, "20.00")
        payment_id = add_payment(connection, second_order, "20.00")
        record_id = add_audit_record(connection, first_order, "20.00", payment_id)

    assert broken_invariants(corruptible_database) == [
        f"audit record {record_id} says order {first_order} was paid 20.00"
        f" but payment {payment_id} is of order {second_order}, 20.00"
    ]


def test_an_audit_record_claiming_another_amount_than_its_payment_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "20.00")
        record_id = add_audit_record(connection, order_id, "2.00", payment_id)

    assert broken_invariants(corruptible_database) == [
        f"audit record {record_id} says order {order_id} was paid 2.00"
        f" but payment {payment_id} is of order {order_id}, 20.00"
    ]


def test_every_breach_is_reported_in_one_pass(corruptible_database: Engine) -> None:
    with corruptible_database.begin() as connection:
        unpaid = add_order(connection, "10.00")
        no_paid_at, _ = add_paid_order(connection, "20.00")
        connection.execute(
            text("UPDATE orders SET paid_at = NULL WHERE id = :id"), {"id": no_paid_at}
        )
        unaudited = add_order(connection, "30.00")
        unaudited_payment = add_payment(connection, unaudited, "30.00")

    assert broken_invariants(corruptible_database) == [
        f"order {unpaid} is paid but has no succeeded payment of its total",
        f"order {no_paid_at} is paid but paid_at is not set",
        f"payment {unaudited_payment} of order {unaudited} has no audit record",
    ]


def test_a_recent_payment_without_its_event_is_a_breach(corruptible_database: Engine) -> None:
    now = datetime.now(UTC)
    with corruptible_database.begin() as connection:
        add_paid_order(connection, "10.00")
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "20.00", at=now, told=False)
        add_audit_record(connection, order_id, "20.00", payment_id)

    assert broken_invariants(corruptible_database) == [
        f"payment {payment_id} of order {order_id} has no payment.succeeded event"
    ]


def test_a_payment_older_than_the_outbox_retention_may_have_had_its_event_purged(
    corruptible_database: Engine,
) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=25)
    with corruptible_database.begin() as connection:
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "20.00", at=long_ago, told=False)
        add_audit_record(connection, order_id, "20.00", payment_id)

    assert broken_invariants(corruptible_database, outbox_retention=timedelta(hours=24)) == []
    assert broken_invariants(corruptible_database, outbox_retention=timedelta(hours=26)) == [
        f"payment {payment_id} of order {order_id} has no payment.succeeded event"
    ]


def test_an_event_that_tells_another_amount_or_order_than_its_payment_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        order_id = add_order(connection, "20.00")
        payment_id = add_payment(connection, order_id, "20.00", told=False)
        add_audit_record(connection, order_id, "20.00", payment_id)
        event_id = add_event(
            connection, PaymentSucceeded(payment_id, order_id, Money.of("2.00"), NOW)
        )

    assert broken_invariants(corruptible_database) == [
        f"event {event_id} says payment.succeeded of order {order_id} paid 2.00,"
        f" but payment {payment_id} is of order {order_id}, 20.00"
    ]


def add_refund(
    connection: Connection, payment_id: int, amount: str, *, audited: bool = True, told: bool = True
) -> int:
    """A refund as the service writes one: the payment's sum, the refund, its audit record and
    its event; less what the test leaves out."""
    connection.execute(
        text("UPDATE payments SET amount_refunded = amount_refunded + :amount WHERE id = :id"),
        {"amount": amount, "id": payment_id},
    )
    refund_id: int = connection.execute(
        text(
            "INSERT INTO refunds (payment_id, amount, status, created_at)"
            " VALUES (:payment_id, :amount, 'succeeded', :at) RETURNING id"
        ),
        {"payment_id": payment_id, "amount": amount, "at": to_db(datetime.now(UTC))},
    ).scalar_one()
    if audited:
        connection.execute(
            text(
                "INSERT INTO refund_attempts (created_at, request_id, caller, payment_id,"
                " claimed_amount, outcome, refund_id)"
                " VALUES (:at, 'request', 'caller', :payment_id, :amount, 'refunded', :refund_id)"
            ),
            {
                "at": to_db(datetime.now(UTC)),
                "payment_id": payment_id,
                "amount": amount,
                "refund_id": refund_id,
            },
        )
    if told:
        [order_id] = connection.execute(
            text("SELECT order_id FROM payments WHERE id = :id"), {"id": payment_id}
        ).scalars()
        body = (
            '{"data": {"refund_id": %d, "amount": "%s"}}' % (refund_id, amount)  # noqa: UP031
        )
        connection.execute(
            text(
                "INSERT INTO outbox_events (event_id, type, subject, payment_id, refund_id, body,"
                " created_at, next_attempt_at)"
                " VALUES (gen_random_uuid(), 'refund.succeeded', :subject, :payment_id,"
                " :refund_id, :body, LOCALTIMESTAMP, LOCALTIMESTAMP)"
            ),
            {
                "subject": str(order_id),
                "payment_id": payment_id,
                "refund_id": refund_id,
                "body": body,
            },
        )
    return refund_id


def test_refunds_written_as_the_service_writes_them_hold_to_every_invariant(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        _, payment_id = add_paid_order(connection, "20.00")
        add_refund(connection, payment_id, "5.00")
        add_refund(connection, payment_id, "15.00")

    assert broken_invariants(corruptible_database) == []


def test_a_refund_without_its_audit_record_or_its_event_is_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        _, payment_id = add_paid_order(connection, "20.00")
        unaudited = add_refund(connection, payment_id, "5.00", audited=False)
        untold = add_refund(connection, payment_id, "1.00", told=False)

    assert broken_invariants(corruptible_database) == [
        f"refund {unaudited} of payment {payment_id} has no audit record",
        f"refund {untold} of payment {payment_id} has no refund.succeeded event",
    ]


def test_refunds_that_disagree_with_the_payments_refunded_sum_are_a_breach(
    corruptible_database: Engine,
) -> None:
    with corruptible_database.begin() as connection:
        _, payment_id = add_paid_order(connection, "20.00")
        add_refund(connection, payment_id, "5.00")
        connection.execute(
            text("UPDATE payments SET amount_refunded = 4.00 WHERE id = :id"), {"id": payment_id}
        )

    assert broken_invariants(corruptible_database) == [
        f"payment {payment_id} of 20.00 has refunds of 5.00 but says 4.00 refunded"
    ]


def test_verify_reads_the_whole_store_whatever_the_statement_timeout(
    corruptible_database: Engine, corruptible_url: URL
) -> None:
    with corruptible_database.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO orders (status, total_price, paid_at)"
                " SELECT 'paid', 1.00, LOCALTIMESTAMP FROM generate_series(1, 100000)"
            )
        )
        connection.execute(
            text(
                "INSERT INTO payments (order_id, amount, status, created_at)"
                " SELECT id, total_price, 'succeeded', paid_at FROM orders"
            )
        )
    # Every statement is held to 10 ms here: far less than reading 100,000 payments takes.
    hurried = create_engine(
        corruptible_url,
        poolclass=NullPool,
        connect_args={"options": "-c statement_timeout=10"},
    )
    try:
        breaches = broken_invariants(hurried)
    finally:
        hurried.dispose()

    assert len(breaches) == 2 * 100000  # neither audited nor told: every row was read


# purge_expired_keys


def add_keys(engine: Engine, *expiries: datetime) -> None:
    """One answered key per expiry, named after its position."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys"
                " (caller, key, fingerprint, answer_status, answer_body, created_at, expires_at)"
                " VALUES ('caller', :key, 'fingerprint', 200, '{}', :created_at, :expires_at)"
            ),
            [
                {
                    "key": f"key-{index}",
                    "created_at": (expires_at - timedelta(hours=24)).replace(tzinfo=None),
                    "expires_at": expires_at.astimezone(UTC).replace(tzinfo=None),
                }
                for index, expires_at in enumerate(expiries)
            ],
        )


def kept(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(text("SELECT key FROM idempotency_keys ORDER BY key")).scalars()
        )


def test_purge_deletes_the_keys_expired_by_now_and_keeps_the_others(
    clean_database: Engine,
) -> None:
    add_keys(
        clean_database,
        NOW - timedelta(days=3),
        NOW + timedelta(microseconds=1),
        NOW,
        NOW - timedelta(microseconds=1),
        NOW + timedelta(days=1),
    )

    purged = purge_expired_keys(clean_database, NOW)

    assert purged == 3
    assert kept(clean_database) == ["key-1", "key-4"]


@pytest.mark.parametrize("expired", [5, 4, 1])
def test_purge_goes_on_batch_after_batch_until_every_expired_key_is_gone(
    clean_database: Engine, expired: int
) -> None:
    add_keys(
        clean_database,
        *[NOW - timedelta(minutes=m) for m in range(expired)],
        NOW + timedelta(hours=1),
    )

    purged = purge_expired_keys(clean_database, NOW, batch_size=2)

    assert purged == expired
    assert kept(clean_database) == [f"key-{expired}"]


def test_purge_of_a_store_without_expired_keys_deletes_nothing(clean_database: Engine) -> None:
    add_keys(clean_database, NOW + timedelta(seconds=1))

    assert purge_expired_keys(clean_database, NOW, batch_size=2) == 0
    assert kept(clean_database) == ["key-0"]


@pytest.mark.anyio
async def test_a_purged_key_can_be_used_again_for_a_new_request(
    clean_database: Engine, async_engine: AsyncEngine
) -> None:
    first, second = add_orders(clean_database, "10.00", "20.00")
    clock = SystemClock()
    await pay(first, "10.00", key="key-1", uow=SqlAlchemyUnitOfWork(async_engine), clock=clock)

    purged = purge_expired_keys(clean_database, clock.now() + timedelta(hours=25))

    reply = await pay(
        second, "20.00", key="key-1", uow=SqlAlchemyUnitOfWork(async_engine), clock=clock
    )
    assert purged == 1
    assert reply.outcome is Outcome.PAID
