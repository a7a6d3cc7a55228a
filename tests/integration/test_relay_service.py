"""The relay's process pieces on a real outbox: its probes and metrics, its log lines, its stop,
and the operator's commands (``events dead | requeue | purge``, ``relay`` without a
destination)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from payment.adapters.destinations import ConsoleDestination
from payment.adapters.sqlalchemy import migrations
from payment.domain.delivery import DeliveryFailed, OutboxEvent
from payment.entrypoints.cli import main
from payment.entrypoints.relay import RelayThread, run_relay
from tests.e2e.server import free_port
from tests.integration.conftest import CLOSED_PORT_URL, service_settings
from tests.support.databases import DatabaseServer
from tests.support.outbox_rows import add_events, outbox_rows, set_columns

SETTING_PREFIXES = ("PAYMENT_", "ORDER_DB_")


@pytest.fixture(scope="module")
def relay_url(postgres_server: DatabaseServer) -> Iterator[URL]:
    with postgres_server.scratch("payment_relay") as url:
        migrations.upgrade(url)
        yield url


@pytest.fixture
def relay_db(relay_url: URL) -> Iterator[Engine]:
    engine = create_engine(relay_url, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE orders RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, relay_db: Engine) -> None:
    """The commands' environment: this database, nothing else set."""
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("DATABASE_URL", relay_db.url.render_as_string(hide_password=False))


class Subscriber:
    name = "webhook:https://shop.example/hooks"

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.taken: list[str] = []

    async def deliver(self, event: OutboxEvent) -> None:
        if event.subject in self.refuse:
            raise DeliveryFailed("answered 500")
        self.taken.append(event.event_id)

    async def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_the_relay_serves_its_probes_and_metrics_and_logs_each_outcome(
    relay_db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    written = add_events(relay_db, ["a", "b", "c"])
    refused = written[2].subject
    port = free_port()
    settings = service_settings(
        relay_db.url,
        payment_host="127.0.0.1",
        payment_relay_port=port,
        payment_relay_poll_interval_ms=20,
        payment_relay_max_attempts=1,
    )
    subscriber = Subscriber(refuse={refused})
    stop = asyncio.Event()
    started = asyncio.Event()
    caplog.set_level(logging.INFO, logger="payment.relay")
    relay = asyncio.create_task(run_relay(settings, [subscriber], stop, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                given_up = outbox_rows(relay_db)[written[2].position].status == "dead"
                if given_up and len(subscriber.taken) == 2:
                    break
                await asyncio.sleep(0.02)
            livez = await client.get("/livez")
            readyz = await client.get("/readyz")
            metrics = await client.get("/metrics")
            missing = await client.get("/nowhere")
            posted = await client.post("/livez")
    finally:
        stop.set()
        await asyncio.wait_for(relay, 10)

    assert (livez.status_code, readyz.status_code, missing.status_code) == (200, 200, 404)
    assert posted.status_code == 405
    scraped = metrics.text
    destination = 'destination="webhook:https://shop.example/hooks"'
    assert f"payment_outbox_delivered_total{{{destination}}} 2.0" in scraped
    assert f"payment_outbox_failed_total{{{destination}}} 1.0" in scraped
    assert "payment_outbox_dead 1.0" in scraped
    assert "payment_outbox_pending 0.0" in scraped
    assert "payment_outbox_oldest_pending_age_seconds 0.0" in scraped
    lines = [r for r in caplog.records if r.name == "payment.relay"]
    delivered = [r for r in lines if r.getMessage() == "event delivered"]
    [dead] = [r for r in lines if r.getMessage().startswith("event dead-lettered")]
    assert len(delivered) == 2
    assert dead.fields["subject"] == refused  # type: ignore[attr-defined]
    assert dead.fields["error"] == "webhook:https://shop.example/hooks: answered 500"  # type: ignore[attr-defined]
    assert set(dead.fields) >= {"event_id", "type", "attempts"}  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_the_relay_is_not_ready_while_the_database_is_away() -> None:
    port = free_port()
    settings = service_settings(
        CLOSED_PORT_URL,
        payment_host="127.0.0.1",
        payment_relay_port=port,
        payment_db_connect_timeout_seconds=1,
        payment_ready_timeout_ms=500,
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    relay = asyncio.create_task(run_relay(settings, [Subscriber(set())], stop, started=started))
    try:
        await asyncio.wait_for(started.wait(), 10)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            livez = await client.get("/livez")
            readyz = await client.get("/readyz")
            metrics = await client.get("/metrics")
    finally:
        stop.set()
        await asyncio.wait_for(relay, 10)

    assert (livez.status_code, readyz.status_code, metrics.status_code) == (200, 503, 200)


@pytest.mark.usefixtures("environment")
def test_relay_refuses_to_start_without_a_destination(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["relay"]) == 2
    said = capsys.readouterr().err
    assert "PAYMENT_WEBHOOK_URLS" in said
    assert "PAYMENT_RABBITMQ_URL" in said


@pytest.mark.usefixtures("environment")
def test_events_dead_lists_the_dead_letters_and_requeue_brings_them_back(
    relay_db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    dead, other, alive = add_events(relay_db, ["a", "b", "c"])
    set_columns(
        relay_db,
        [dead.position, other.position],
        "status = 'dead', attempts = 25, last_error = 'rabbitmq: not confirmed'",
    )
    rows = outbox_rows(relay_db)

    assert main(["events", "dead"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].split("\t")[:4] == ["EVENT_ID", "TYPE", "SUBJECT", "ATTEMPTS"]
    assert [line.split("\t")[0] for line in listed[1:]] == [
        rows[dead.position].event_id,
        rows[other.position].event_id,
    ]
    assert listed[1].split("\t")[2:4] == [dead.subject, "25"]
    assert listed[1].endswith("rabbitmq: not confirmed")

    assert main(["events", "requeue", rows[dead.position].event_id]) == 0
    assert "re-queued 1 event(s)" in capsys.readouterr().out
    assert outbox_rows(relay_db)[dead.position].status == "pending"

    assert main(["events", "requeue", rows[alive.position].event_id]) == 1
    assert rows[alive.position].event_id in capsys.readouterr().err

    assert main(["events", "requeue", "--all-dead"]) == 0
    assert {row.status for row in outbox_rows(relay_db).values()} == {"pending"}
    assert main(["events", "dead"]) == 0
    assert "no dead-lettered event" in capsys.readouterr().out


@pytest.mark.usefixtures("environment")
def test_events_purge_deletes_what_was_delivered_before_the_retention(
    relay_db: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, recent = add_events(relay_db, ["a", "b"])
    set_columns(
        relay_db,
        [old.position, recent.position],
        "status = 'delivered', delivered_at = now() AT TIME ZONE 'UTC' - interval '3 hours'",
    )
    set_columns(relay_db, [recent.position], "delivered_at = now() AT TIME ZONE 'UTC'")
    monkeypatch.setenv("PAYMENT_OUTBOX_RETENTION_HOURS", "2")

    assert main(["events", "purge"]) == 0

    assert "purged 1 event(s)" in capsys.readouterr().out
    assert list(outbox_rows(relay_db)) == [recent.position]


@pytest.mark.usefixtures("environment")
def test_the_events_commands_say_when_the_database_cannot_be_reached(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", CLOSED_PORT_URL)
    monkeypatch.setenv("PAYMENT_DB_CONNECT_TIMEOUT_SECONDS", "1")

    assert main(["events", "dead"]) == 1

    assert "cannot reach the database" in capsys.readouterr().err


class Stalled:
    """A subscriber whose answers wait until ``go`` is set."""

    name = "webhook:https://slow.example/hooks"

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started: list[str] = []

    async def deliver(self, event: OutboxEvent) -> None:
        self.started.append(event.event_id)
        await self.go.wait()

    async def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_a_stopped_relay_finishes_its_deliveries_and_gives_back_the_other_leases(
    relay_db: Engine,
) -> None:
    written = add_events(relay_db, [f"order-{n}" for n in range(40)])
    settings = service_settings(relay_db.url, payment_relay_lease_seconds=60)
    subscriber = Stalled()
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(settings, [subscriber], stop, probes=False))
    for _ in range(500):
        if len(subscriber.started) >= 16:
            break
        await asyncio.sleep(0.01)

    stop.set()
    await asyncio.sleep(0.05)
    assert not relay.done(), "the deliveries under way are waited for"
    subscriber.go.set()
    await asyncio.wait_for(relay, 10)

    rows = outbox_rows(relay_db)
    delivered = {row.event_id for row in rows.values() if row.status == "delivered"}
    assert delivered == set(subscriber.started)
    assert len(delivered) == 16
    untried = [row for row in rows.values() if row.status == "pending"]
    assert len(untried) == len(written) - 16
    assert all(row.claimed_until is None for row in untried), "claimable again at once"


def test_the_relay_of_dev_runs_in_a_thread_and_prints_each_event(relay_db: Engine) -> None:
    """``payment-service dev`` runs the relay beside its server, printing the events."""
    [written] = add_events(relay_db, ["a"])
    printed = io.StringIO()
    settings = service_settings(relay_db.url, payment_relay_poll_interval_ms=20)
    relay = RelayThread(settings, [ConsoleDestination(printed)])
    relay.start()
    try:
        for _ in range(500):
            if outbox_rows(relay_db)[written.position].status == "delivered":
                break
            time.sleep(0.01)
    finally:
        relay.stop(timeout=10)

    row = outbox_rows(relay_db)[written.position]
    assert row.status == "delivered"
    assert row.delivered_to == ["console"]
    assert row.event_id in printed.getvalue()
    assert relay.error is None
