"""The outbox on PostgreSQL as the relays use it: claims that two relays never share, leases
that run out, outcomes, per-order order, the purge, the dead letters and their re-queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from payment.adapters.sqlalchemy import migrations
from payment.adapters.sqlalchemy.engine import build_async_engine, session_settings
from payment.adapters.sqlalchemy.outbox import OutboxMissing, SqlOutboxStore
from payment.domain.errors import StorageUnavailable
from payment.domain.relay import DeliveryOutcome, EventStatus
from tests.integration.conftest import CLOSED_PORT_URL, service_settings
from tests.support.databases import DatabaseServer
from tests.support.outbox_rows import add_events, outbox_rows, set_columns

pytestmark = pytest.mark.anyio

LEASE = timedelta(seconds=30)


@pytest.fixture(scope="module")
def outbox_url(postgres_server: DatabaseServer) -> Iterator[URL]:
    """A migrated database of this module's own: its orders and payments come without the
    audit records ``verify`` expects, so they stay out of the run's shared database."""
    with postgres_server.scratch("payment_outbox") as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture
def outbox_db(outbox_url: URL) -> Iterator[Engine]:
    engine = create_engine(outbox_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE orders RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


async def _store(url: URL) -> SqlOutboxStore:
    engine = build_async_engine(service_settings(url, payment_db_pool_size=4))
    return SqlOutboxStore(engine, timeout=5.0)


@pytest.fixture
async def store(outbox_db: Engine) -> AsyncIterator[SqlOutboxStore]:
    built = await _store(outbox_db.url)
    yield built
    await built.engine.dispose()


@pytest.fixture
async def other_store(outbox_db: Engine) -> AsyncIterator[SqlOutboxStore]:
    """A second relay's view of the same outbox."""
    built = await _store(outbox_db.url)
    yield built
    await built.engine.dispose()


def delivered(position: int, *names: str) -> DeliveryOutcome:
    return DeliveryOutcome(position, EventStatus.DELIVERED, frozenset(names), 0)


async def test_a_claim_takes_due_events_oldest_first_and_leases_them(
    outbox_db: Engine, store: SqlOutboxStore, other_store: SqlOutboxStore
) -> None:
    written = add_events(outbox_db, ["a", "b", "c"])

    claimed = await store.claim(10, LEASE)

    assert [e.position for e in claimed] == [w.position for w in written]
    assert [e.subject for e in claimed] == [w.subject for w in written]
    assert all(e.attempts == 0 and e.delivered_to == frozenset() for e in claimed)
    assert claimed[0].body.startswith("{")
    assert claimed[0].created_at.tzinfo is not None
    assert await other_store.claim(10, LEASE) == []
    assert await store.claim(10, LEASE) == []
    assert all(row.claimed_until is not None for row in outbox_rows(outbox_db).values())


async def test_two_relays_claiming_at_once_never_get_the_same_event(
    outbox_db: Engine, store: SqlOutboxStore, other_store: SqlOutboxStore
) -> None:
    written = add_events(outbox_db, range(300))

    async def claim_all(outbox: SqlOutboxStore) -> list[int]:
        taken: list[int] = []
        while batch := await outbox.claim(7, LEASE):
            taken += [e.position for e in batch]
            await asyncio.sleep(0)
        return taken

    first, second = await asyncio.gather(claim_all(store), claim_all(other_store))

    assert not set(first) & set(second)
    assert sorted(first + second) == [w.position for w in written]
    assert first, "the first relay claimed some"
    assert second, "the second relay claimed some"


async def test_only_the_first_pending_event_of_an_order_is_claimed(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    first, other, second, third = add_events(outbox_db, ["x", "y", "x", "x"])

    claimed = await store.claim(10, LEASE)
    assert [e.position for e in claimed] == [first.position, other.position]

    await store.record([delivered(first.position, "d")])
    assert [e.position for e in await store.claim(10, LEASE)] == [second.position]

    await store.record(
        [DeliveryOutcome(second.position, EventStatus.DEAD, frozenset(), 25, "down")]
    )
    assert [e.position for e in await store.claim(10, LEASE)] == [third.position], (
        "a dead event does not hold its order's later events back"
    )


async def test_a_failed_event_waits_for_its_retry_and_holds_its_order_back(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    failing, later = add_events(outbox_db, ["x", "x"])
    assert [e.position for e in await store.claim(10, LEASE)] == [failing.position]

    await store.record(
        [
            DeliveryOutcome(
                failing.position,
                EventStatus.PENDING,
                frozenset({"rabbitmq"}),
                1,
                "webhook:https://shop.example/h: status 500",
                retry_in=timedelta(seconds=0.3),
            )
        ]
    )

    row = outbox_rows(outbox_db)[failing.position]
    assert (row.status, row.attempts, row.delivered_to) == ("pending", 1, ["rabbitmq"])
    assert row.last_error == "webhook:https://shop.example/h: status 500"
    assert row.claimed_until is None
    assert await store.claim(10, LEASE) == [], "neither it nor the later one before the retry"
    await asyncio.sleep(0.4)
    [again] = await store.claim(10, LEASE)
    assert (again.position, again.attempts, again.delivered_to) == (
        failing.position,
        1,
        frozenset({"rabbitmq"}),
    )
    assert later.position != again.position


async def test_the_destinations_that_took_an_event_add_up_across_claims(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    [written] = add_events(outbox_db, ["x"])
    await store.claim(1, LEASE)
    await store.record(
        [
            DeliveryOutcome(
                written.position,
                EventStatus.PENDING,
                frozenset({"webhook:a"}),
                1,
                "b: down",
                retry_in=timedelta(0),
            )
        ]
    )
    await store.claim(1, LEASE)

    await store.record([delivered(written.position, "webhook:b")])

    row = outbox_rows(outbox_db)[written.position]
    assert row.status == "delivered"
    assert row.delivered_to == ["webhook:a", "webhook:b"]
    assert row.delivered_at is not None
    assert row.attempts == 1


async def test_an_outcome_recorded_late_leaves_a_delivered_event_as_it_is(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    [written] = add_events(outbox_db, ["x"])
    await store.claim(1, LEASE)
    await store.record([delivered(written.position, "d")])

    await store.record(
        [
            DeliveryOutcome(
                written.position, EventStatus.PENDING, frozenset(), 1, "late", timedelta(0)
            )
        ]
    )

    row = outbox_rows(outbox_db)[written.position]
    assert (row.status, row.attempts, row.last_error) == ("delivered", 0, None)


async def test_a_lease_that_ran_out_lets_another_relay_claim_the_event(
    outbox_db: Engine, store: SqlOutboxStore, other_store: SqlOutboxStore
) -> None:
    [written] = add_events(outbox_db, ["x"])
    await store.claim(1, timedelta(seconds=0.2))
    assert await other_store.claim(1, LEASE) == []

    await asyncio.sleep(0.3)

    assert [e.position for e in await other_store.claim(1, LEASE)] == [written.position]


async def test_released_events_are_claimed_again_at_once_but_another_relays_lease_stands(
    outbox_db: Engine, store: SqlOutboxStore, other_store: SqlOutboxStore
) -> None:
    first, second = add_events(outbox_db, ["x", "y"])
    claimed = await store.claim(2, timedelta(seconds=0.2))
    await asyncio.sleep(0.3)
    [retaken] = await other_store.claim(1, LEASE)  # the first one's lease ran out

    await store.release(claimed)

    assert retaken.position == first.position
    assert outbox_rows(outbox_db)[first.position].claimed_until is not None
    assert [e.position for e in await store.claim(2, LEASE)] == [second.position]


async def test_the_purge_deletes_only_events_delivered_before_the_retention(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    old, recent, pending, dead = add_events(outbox_db, ["a", "b", "c", "d"])
    set_columns(
        outbox_db,
        [old.position, recent.position],
        "status = 'delivered', delivered_at = now() AT TIME ZONE 'UTC' - interval '2 hours'",
    )
    set_columns(outbox_db, [recent.position], "delivered_at = now() AT TIME ZONE 'UTC'")
    set_columns(
        outbox_db,
        [pending.position, dead.position],
        "created_at = created_at - interval '3 days'",
    )
    set_columns(outbox_db, [dead.position], "status = 'dead'")

    purged = await store.purge_delivered(timedelta(hours=1), batch=1)

    assert purged == 1
    assert sorted(outbox_rows(outbox_db)) == [recent.position, pending.position, dead.position]


async def test_dead_events_are_listed_and_requeued_by_id_or_all(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    one, two, three, alive = add_events(outbox_db, ["a", "b", "c", "d"])
    set_columns(
        outbox_db,
        [one.position, two.position, three.position],
        "status = 'dead', attempts = 25, last_error = 'rabbitmq: no confirm',"
        " next_attempt_at = now() AT TIME ZONE 'UTC' + interval '1 hour'",
    )
    rows = outbox_rows(outbox_db)

    dead = await store.dead()
    assert [d.position for d in dead] == [one.position, two.position, three.position]
    assert (dead[0].event_id, dead[0].attempts, dead[0].last_error) == (
        rows[one.position].event_id,
        25,
        "rabbitmq: no confirm",
    )

    requeued = await store.requeue([rows[two.position].event_id, rows[alive.position].event_id])
    assert requeued == [rows[two.position].event_id], "a pending event is not re-queued"
    row = outbox_rows(outbox_db)[two.position]
    assert (row.status, row.attempts, row.claimed_until) == ("pending", 0, None)
    assert [e.position for e in await store.claim(10, LEASE)] == [two.position, alive.position]

    assert sorted(await store.requeue(None)) == sorted(
        [rows[one.position].event_id, rows[three.position].event_id]
    )
    assert await store.dead() == []


async def test_a_requeue_with_an_id_that_is_not_a_uuid_changes_nothing(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    [written] = add_events(outbox_db, ["a"])
    set_columns(outbox_db, [written.position], "status = 'dead'")
    event_id = outbox_rows(outbox_db)[written.position].event_id

    with pytest.raises(ValueError, match="UUID"):
        await store.requeue([event_id, "not-an-id"])

    assert outbox_rows(outbox_db)[written.position].status == "dead"


async def test_the_figures_count_pending_and_dead_events_and_the_oldest_wait(
    outbox_db: Engine, store: SqlOutboxStore
) -> None:
    empty = await store.stats()
    old, _, dead, done = add_events(outbox_db, ["a", "b", "c", "d"])
    set_columns(outbox_db, [old.position], "created_at = created_at - interval '90 seconds'")
    set_columns(outbox_db, [dead.position], "status = 'dead'")
    set_columns(outbox_db, [done.position], "status = 'delivered'")

    stats = await store.stats()

    assert (empty.pending, empty.oldest_pending_age, empty.dead) == (0, None, 0)
    assert (stats.pending, stats.dead) == (2, 1)
    assert stats.oldest_pending_age is not None
    assert 90 <= stats.oldest_pending_age.total_seconds() < 120


async def test_an_unreachable_database_is_storage_unavailable_and_not_ready() -> None:
    store = SqlOutboxStore(
        build_async_engine(service_settings(CLOSED_PORT_URL, payment_db_connect_timeout_seconds=1)),
        timeout=2.0,
    )

    with pytest.raises(StorageUnavailable):
        await store.claim(10, LEASE)
    assert await store.ready() is False
    await store.engine.dispose()


async def test_a_database_that_never_answers_is_given_up_on_within_the_timeout(
    silent_port: int,
) -> None:
    store = SqlOutboxStore(
        build_async_engine(
            service_settings(
                f"postgresql://postgres@127.0.0.1:{silent_port}/none",
                payment_db_connect_timeout_seconds=30,
            )
        ),
        timeout=0.5,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()

    with pytest.raises(StorageUnavailable):
        await store.claim(10, LEASE)

    assert loop.time() - started < 2.0
    await store.engine.dispose()


async def test_a_database_without_the_outbox_says_to_migrate(
    postgres_server: DatabaseServer,
) -> None:
    store = await _store(postgres_server.admin_url)  # the server's own database: no tables

    with pytest.raises(OutboxMissing, match="migrate"):
        await store.claim(10, LEASE)
    await store.engine.dispose()


async def test_the_outbox_works_with_its_settings_sent_in_each_transaction(
    outbox_db: Engine,
) -> None:
    """Behind a pooler in transaction mode (PgBouncer), each statement carries the timeouts."""
    settings = service_settings(
        outbox_db.url, payment_db_pool_size=2, payment_db_transaction_pooling=True
    )
    engine = build_async_engine(settings)
    store = SqlOutboxStore(engine, session=session_settings(settings), timeout=5.0)
    first, second = add_events(outbox_db, ["a", "b"])
    try:
        claimed = await store.claim(10, LEASE)
        await store.record([delivered(first.position, "d")])
        await store.release([e for e in claimed if e.position == second.position])
        stats = await store.stats()
    finally:
        await engine.dispose()

    rows = outbox_rows(outbox_db)
    assert [e.position for e in claimed] == [first.position, second.position]
    assert rows[first.position].status == "delivered"
    assert rows[second.position].claimed_until is None
    assert (stats.pending, stats.dead) == (1, 0)
