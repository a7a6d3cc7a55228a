"""The relay's rules on an outbox and destinations in memory: at least once to every
destination, in order per order, back-off and dead letters, a graceful stop, and an outbox
that goes away."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from payment.domain.delivery import Backoff, OutboxEvent
from payment.domain.errors import StorageUnavailable
from payment.domain.relay import EventStatus, Relay, RelayPolicy
from tests.unit.relay_fakes import FakeDestination, FakeOutbox, RecordingObserver

pytestmark = pytest.mark.anyio

FAST = RelayPolicy(
    batch_size=10,
    lease=timedelta(seconds=30),
    max_attempts=3,
    backoff=Backoff(base=timedelta(milliseconds=1), cap=timedelta(milliseconds=5)),
    poll_interval=timedelta(milliseconds=5),
    store_retry_cap=timedelta(milliseconds=20),
)


async def until(condition: object, timeout: float = 2.0) -> None:
    assert callable(condition)
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.002)


async def test_every_event_reaches_every_destination_and_is_recorded_delivered() -> None:
    outbox = FakeOutbox()
    events = outbox.add("1", "2", "3")
    webhook, broker = FakeDestination("webhook:a"), FakeDestination("rabbitmq")
    observer = RecordingObserver()

    claimed = await Relay(outbox, [webhook, broker], FAST, observer=observer).deliver_batch()

    assert claimed == 3
    assert webhook.taken == events
    assert broker.taken == events
    assert all(outbox.status(e.position) is EventStatus.DELIVERED for e in events)
    assert {o.delivered_to for o in outbox.recorded} == {frozenset({"webhook:a", "rabbitmq"})}
    assert len(observer.of("delivered")) == 6


async def test_a_failed_delivery_is_retried_after_a_jittered_backoff() -> None:
    outbox = FakeOutbox()
    outbox.add("1")
    policy = RelayPolicy(
        max_attempts=5, backoff=Backoff(base=timedelta(seconds=2), cap=timedelta(minutes=5))
    )
    relay = Relay(outbox, [FakeDestination("d", failures=1)], policy, rng=random.Random(7))

    await relay.deliver_batch()

    [outcome] = outbox.recorded
    expected = policy.backoff.delay(1, rng=random.Random(7))
    assert outcome.status is EventStatus.PENDING
    assert outcome.attempts == 1
    assert outcome.retry_in == expected
    assert timedelta(0) <= expected <= timedelta(seconds=2)
    assert outcome.last_error == "d: status 500"
    assert await relay.deliver_batch() == 0, "not due before its back-off"


async def test_later_retries_wait_longer_up_to_the_cap() -> None:
    outbox = FakeOutbox()
    [event] = outbox.add("1")
    backoff = Backoff(base=timedelta(milliseconds=1), cap=timedelta(milliseconds=4))
    always = random.Random(0)
    always.random = lambda: 0.999  # type: ignore[method-assign]  # the top of each jitter range
    policy = RelayPolicy(max_attempts=10, backoff=backoff, poll_interval=timedelta(seconds=1))
    relay = Relay(outbox, [FakeDestination("d", down=True)], policy, rng=always)

    for _ in range(5):
        outbox.events[event.position].due_at = 0.0
        await relay.deliver_batch()

    waits = [o.retry_in.total_seconds() * 1000 for o in outbox.recorded if o.retry_in]
    assert [round(w) for w in waits] == [1, 2, 4, 4, 4]
    assert [o.attempts for o in outbox.recorded] == [1, 2, 3, 4, 5]


async def test_an_event_is_dead_lettered_after_the_maximum_of_attempts() -> None:
    outbox = FakeOutbox()
    [event] = outbox.add("1")
    observer = RecordingObserver()
    relay = Relay(outbox, [FakeDestination("d", down=True)], FAST, observer=observer)

    for _ in range(FAST.max_attempts):
        outbox.events[event.position].due_at = 0.0
        await relay.deliver_batch()

    assert outbox.status(event.position) is EventStatus.DEAD
    assert [o.status for o in outbox.recorded] == [
        EventStatus.PENDING,
        EventStatus.PENDING,
        EventStatus.DEAD,
    ]
    assert outbox.recorded[-1].retry_in is None
    assert observer.of("dead") == [("dead", event.position, 3, "d: connection refused")]
    assert await relay.deliver_batch() == 0


async def test_a_retry_goes_only_to_the_destinations_that_did_not_take_the_event() -> None:
    outbox = FakeOutbox()
    [event] = outbox.add("1")
    took, refused = FakeDestination("webhook:a"), FakeDestination("webhook:b", failures=1)
    relay = Relay(outbox, [took, refused], FAST)

    await relay.deliver_batch()
    outbox.events[event.position].due_at = 0.0
    await relay.deliver_batch()

    assert len(took.taken) == 1
    assert len(refused.taken) == 1
    first, second = outbox.recorded
    assert first.delivered_to == frozenset({"webhook:a"})
    assert second.delivered_to == frozenset({"webhook:a", "webhook:b"})
    assert second.status is EventStatus.DELIVERED


async def test_the_events_of_one_order_go_out_in_the_order_they_were_written() -> None:
    outbox = FakeOutbox()
    outbox.add("x", "y", "x", "z", "x", "y")
    destination = FakeDestination("d")
    relay = Relay(outbox, [destination], FAST)

    while await relay.deliver_batch():
        pass

    by_subject: dict[str, list[int]] = {}
    for taken in destination.taken:
        by_subject.setdefault(taken.subject, []).append(taken.position)
    assert by_subject == {"x": [1, 3, 5], "y": [2, 6], "z": [4]}


async def test_a_failure_stops_the_later_events_of_its_order_in_the_batch() -> None:
    """A batch may hold several events of an order (an outbox that hands them out together):
    they are delivered one after the other, and the first failure gives the rest back."""
    outbox = FakeOutbox(whole_orders=True)
    first, second, third, other = outbox.add("x", "x", "x", "y")
    destination = FakeDestination("d", failures=1)

    assert await Relay(outbox, [destination], FAST).deliver_batch() == 4

    assert [e.position for e in destination.started if e.subject == "x"] == [first.position]
    assert sorted(outbox.released) == [second.position, third.position]
    assert {o.position for o in outbox.recorded} == {first.position, other.position}


async def test_a_destination_that_hangs_is_given_up_on_within_half_the_lease() -> None:
    outbox = FakeOutbox()
    outbox.add("1")
    hanging = FakeDestination("slow", hang=asyncio.Event())
    policy = RelayPolicy(lease=timedelta(seconds=0.4), max_attempts=5)
    loop = asyncio.get_running_loop()
    started = loop.time()

    await Relay(outbox, [hanging], policy).deliver_batch()

    assert 0.2 <= loop.time() - started < 0.35
    [outcome] = outbox.recorded
    assert outcome.status is EventStatus.PENDING
    assert outcome.last_error == "slow: no answer within 0.2 s"


async def test_a_defect_in_a_destination_is_a_failed_delivery_that_shows_no_message() -> None:
    outbox = FakeOutbox()
    outbox.add("1")
    broken = FakeDestination("d", error=RuntimeError("amqp://payer:s3cr3t@broker"))
    observer = RecordingObserver()

    await Relay(outbox, [broken], FAST, observer=observer).deliver_batch()

    [outcome] = outbox.recorded
    assert outcome.last_error == "d: unexpected RuntimeError"
    assert "s3cr3t" not in repr(observer.lines)


async def test_outcomes_the_outbox_could_not_take_are_recorded_before_the_next_claim() -> None:
    outbox = FakeOutbox()
    [event] = outbox.add("1")
    destination = FakeDestination("d")
    relay = Relay(outbox, [destination], FAST)

    claims = outbox.claims

    async def claim_then_go_away(limit: int, lease: timedelta) -> list[OutboxEvent]:
        claimed = await FakeOutbox.claim(outbox, limit, lease)
        outbox.unavailable = 1  # the record that follows fails
        return claimed

    outbox.claim = claim_then_go_away  # type: ignore[method-assign]
    with pytest.raises(StorageUnavailable):
        await relay.deliver_batch()
    del outbox.claim
    assert outbox.status(event.position) is EventStatus.PENDING

    await relay.deliver_batch()

    assert outbox.status(event.position) is EventStatus.DELIVERED
    assert outbox.claims == claims + 2
    assert len(destination.taken) == 1, "recorded, not delivered again"


async def test_run_waits_out_an_unavailable_outbox_and_goes_on() -> None:
    outbox = FakeOutbox()
    outbox.add("1", "2")
    outbox.unavailable = 3
    destination = FakeDestination("d")
    observer = RecordingObserver()
    stopping = asyncio.Event()
    relay = Relay(outbox, [destination], FAST, observer=observer)

    running = asyncio.create_task(relay.run(stopping))
    await until(lambda: len(destination.taken) == 2)
    stopping.set()
    await running

    pauses = [line[1] for line in observer.of("unavailable")]
    assert pauses == [0.005, 0.01, 0.02]
    assert observer.of("back") == [("back",)]


async def test_run_polls_at_its_interval_when_there_is_nothing_to_deliver() -> None:
    outbox = FakeOutbox()
    destination = FakeDestination("d")
    stopping = asyncio.Event()
    policy = RelayPolicy(poll_interval=timedelta(milliseconds=50))
    running = asyncio.create_task(Relay(outbox, [destination], policy).run(stopping))

    await asyncio.sleep(0.26)
    [event] = outbox.add("late")
    await until(lambda: destination.taken == [event])
    stopping.set()
    await running

    assert 4 <= outbox.claims <= 8


async def test_a_graceful_stop_finishes_the_deliveries_under_way_and_gives_back_the_rest() -> None:
    outbox = FakeOutbox()
    events = outbox.add(*[str(n) for n in range(6)])
    gate = asyncio.Event()
    destination = FakeDestination("d", hang=gate)
    stopping = asyncio.Event()
    policy = RelayPolicy(concurrency=2, batch_size=10)
    running = asyncio.create_task(Relay(outbox, [destination], policy).run(stopping))
    await until(lambda: len(destination.started) == 2)

    stopping.set()
    await asyncio.sleep(0.01)
    assert not running.done(), "it waits for the deliveries under way"
    gate.set()
    async with asyncio.timeout(2):
        await running

    delivered = [e.position for e in events if outbox.status(e.position) is EventStatus.DELIVERED]
    assert delivered == [e.position for e in destination.taken]
    assert len(delivered) == 2
    assert sorted(outbox.released) == sorted({e.position for e in events} - set(delivered))
    assert all(outbox.events[p].leased_until is None for p in outbox.released)


async def test_a_relay_needs_destinations_with_distinct_names() -> None:
    with pytest.raises(ValueError, match="destination"):
        Relay(FakeOutbox(), [])
    with pytest.raises(ValueError, match="same name"):
        Relay(FakeOutbox(), [FakeDestination("d"), FakeDestination("d")])
