"""`payment-service relay` under faults, against a real webhook receiver: killed mid-batch, two
at once, the subscriber away for a while, the database restarted under it, and 10,000 payments
delivered while they are made (SPEC §3.8: at least once, none lost, in order per order)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.faults.load import wait_until
from tests.faults.observations import Observe
from tests.faults.relay_support import (
    SECRET,
    Received,
    assert_every_event_received_in_order,
    pay_orders,
    running_relay,
    stored_events,
    undelivered,
    webhook_settings,
)
from tests.support.aftermath import FaultDatabase, assert_verified
from tests.support.orders import add_orders
from tests.support.restartable_postgres import RestartablePostgres
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.faults

DELIVERY_TIMEOUT_SECONDS = 90.0


def paid_orders(database: FaultDatabase, count: int) -> list[tuple[int, str]]:
    """``count`` new pending orders, then paid through the use case: their events are
    written by the payments' own commits."""
    totals = [f"{10 + n % 90}.{n % 100:02d}" for n in range(count)]
    orders = list(zip(add_orders(database.engine, *totals), totals, strict=True))
    pay_orders(database.rendered_url, orders)
    return orders


def wait_for_delivery(database: FaultDatabase, what: str) -> float:
    return wait_until(
        lambda: undelivered(database.engine) == 0,
        timeout=DELIVERY_TIMEOUT_SECONDS,
        what=what,
        interval=0.1,
    )


def test_a_relay_killed_mid_batch_leaves_its_events_to_another_after_the_lease(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    paid_orders(fault_database, 150)
    with WebhookReceiver.running() as receiver:
        receiver.hang()
        settings = webhook_settings(
            fault_database.rendered_url,
            receiver,
            PAYMENT_RELAY_LEASE_SECONDS="2",
            PAYMENT_RELAY_BATCH_SIZE="100",
        )
        with running_relay(settings, tmp_path, name="killed") as killed:
            under_way = len(receiver.wait_for(10))  # mid-batch: deliveries sent, none answered
            killed.kill()
        receiver.answer(204)
        with running_relay(settings, tmp_path, name="heir") as heir:
            wait_for_delivery(fault_database, f"the heir's delivery\n{heir.output()}")
            assert heir.stop() == 0
        received = Received.of(receiver.requests)

    assert_every_event_received_in_order(fault_database.engine, received)
    assert received.duplicates() + received.cut_short >= under_way, (
        "what the killed relay was sending, sent again"
    )
    observe("events", len(stored_events(fault_database.engine)))
    observe("duplicates", received.duplicates())


def test_two_relays_at_once_deliver_everything_once_or_again_with_the_same_id_in_order(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    with WebhookReceiver.running() as receiver:
        settings = webhook_settings(
            fault_database.rendered_url, receiver, PAYMENT_RELAY_BATCH_SIZE="20"
        )
        with (
            running_relay(settings, tmp_path, name="first") as first,
            running_relay(settings, tmp_path, name="second") as second,
        ):
            orders = paid_orders(fault_database, 600)
            # More events of some of those orders, written after their payments: each order's
            # events must arrive in the order they were written, whichever relay takes them.
            add_later_events(fault_database, [order_id for order_id, _ in orders[:100]])
            wait_for_delivery(fault_database, f"{first.output()}\n{second.output()}")
            by_first = len(first.lines("event delivered"))
            by_second = len(second.lines("event delivered"))
            assert first.stop() == 0
            assert second.stop() == 0
        received = Received.of(receiver.requests)

    assert_every_event_received_in_order(fault_database.engine, received)
    assert by_first > 0
    assert by_second > 0
    observe("by_first", by_first)
    observe("by_second", by_second)
    observe("duplicates", received.duplicates())


def add_later_events(database: FaultDatabase, order_ids: list[int]) -> None:
    """Two more events for each order (of another type than ``payment.succeeded``, as later
    events of an order will be), written after its payment's."""
    with database.engine.begin() as connection:
        for _ in range(2):
            connection.execute(
                text(
                    "INSERT INTO outbox_events (event_id, type, subject, payment_id, body,"
                    " created_at, next_attempt_at)"
                    " SELECT e.id, 'test.later', e.subject, e.payment_id,"
                    " json_build_object('id', e.id, 'subject', e.subject)::text,"
                    " now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'"
                    " FROM (SELECT gen_random_uuid() AS id, order_id::text AS subject,"
                    " id AS payment_id FROM payments WHERE order_id = ANY(:orders)"
                    " ORDER BY order_id) e"
                ),
                {"orders": order_ids},
            )


def test_a_subscriber_away_for_a_while_gets_every_event_once_it_is_back(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    with WebhookReceiver.running() as receiver:
        settings = webhook_settings(fault_database.rendered_url, receiver)
        with running_relay(settings, tmp_path) as relay:
            receiver.answer(500)
            paid_orders(fault_database, 100)
            receiver.wait_for(20)
            receiver.disappear()
            wait_until(
                lambda: len(relay.lines("event delivery failed")) >= 150,
                timeout=30,
                what=lambda: f"failures while the subscriber is away\n{relay.output()}",
            )
            receiver.answer(204)
            receiver.come_back()
            took = wait_for_delivery(fault_database, f"delivery after the return\n{relay.output()}")
            failures = relay.lines("event delivery failed")
            assert relay.stop() == 0
            output = relay.output()
        received = Received.of(receiver.requests)

    assert_every_event_received_in_order(fault_database.engine, received)
    assert all(line["destination"] == f"webhook:{receiver.url}" for line in failures)
    assert SECRET not in output
    observe("failures", len(failures))
    observe("seconds_to_deliver_after_return", round(took, 2))


def test_the_relay_rides_out_a_database_restart(
    fault_database: FaultDatabase,
    fault_postgres: RestartablePostgres,
    tmp_path: Path,
    observe: Observe,
) -> None:
    with WebhookReceiver.running() as receiver:
        settings = webhook_settings(fault_database.rendered_url, receiver)
        with running_relay(settings, tmp_path) as relay:
            paid_orders(fault_database, 50)
            wait_for_delivery(fault_database, relay.output())
            assert relay.probe("/readyz") == 200

            fault_postgres.stop()
            try:
                wait_until(
                    lambda: bool(relay.lines("the outbox cannot be reached; trying again")),
                    timeout=20,
                    what=lambda: f"the relay noticing\n{relay.output()}",
                )
                assert relay.probe("/readyz") == 503
                assert relay.probe("/livez") == 200
                time.sleep(1.0)
            finally:
                fault_postgres.start()

            paid_orders(fault_database, 50)
            took = wait_for_delivery(
                fault_database, f"delivery after the restart\n{relay.output()}"
            )
            assert relay.process.poll() is None, "the same process, never restarted"
            assert relay.probe("/readyz") == 200
            assert relay.lines("the outbox answers again")
            assert relay.stop() == 0
        received = Received.of(receiver.requests)

    assert_every_event_received_in_order(fault_database.engine, received)
    assert len(received.ids()) == 100
    assert_verified(fault_database)
    observe("seconds_to_deliver_after_restart", round(took, 2))


def test_ten_thousand_payments_with_the_relay_running_are_all_delivered(
    fault_database: FaultDatabase, tmp_path: Path, observe: Observe
) -> None:
    with WebhookReceiver.running() as receiver:
        settings = webhook_settings(fault_database.rendered_url, receiver)
        with running_relay(settings, tmp_path) as relay:
            started = time.monotonic()
            orders = paid_orders(fault_database, 10_000)
            paid_in = time.monotonic() - started
            wait_for_delivery(fault_database, relay.output())
            delivered_in = time.monotonic() - started
            assert relay.stop() == 0
        received = Received.of(receiver.requests)

    events = stored_events(fault_database.engine)
    assert len(events) == len(orders) == 10_000
    assert {e.subject for e in events} == {str(order_id) for order_id, _ in orders}
    assert_every_event_received_in_order(fault_database.engine, received)
    assert_verified(fault_database)  # each payment has its one event, which says it
    observe("paid_in_s", round(paid_in, 1))
    observe("delivered_in_s", round(delivered_in, 1))
    observe("duplicates", received.duplicates())
