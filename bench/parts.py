"""Where a payment's server CPU goes: each part of a payment, measured on its own.

Run after the HTTP runs, on the same database, with the service stopped. Every part but the
first runs in this process, sequentially, under uvloop (the service's event loop): its cost
is ``time.process_time()`` (user + system time of this process) per operation, the median
of ``REPETITIONS`` repetitions of a fixed number of operations each, after a warm-up, with
the heap frozen as the service freezes it after start-up.

1. The HTTP server floor: a bare ASGI app (no framework) served by uvicorn (httptools,
   uvloop) under wrk at 16 connections with ``pay.lua``'s requests; its CPU per request
   read from ``/proc/<pid>/stat``: what uvicorn and the sockets cost alone.
2. The service's own ASGI app (FastAPI, its middleware, the route, the pay use case) on the
   in-memory store, driven with synthetic ASGI messages for ``POST /pay``; its logs as in
   production (JSON, INFO) but written to ``os.devnull``. Within it: one access log line
   alone, and the pay use case alone on the in-memory store.
3. The pay use case on PostgreSQL (the service's unit of work on its engine, with its
   settings); within it: a pool checkout and checkin, the read (``GROUND_STATEMENT``) and
   the guarded write (a ``WriteBatch`` statement, the event's CloudEvent made and staged as
   the unit of work's commit does) through the pooled psycopg connection.

A part that fails is reported as not measured; the others go on.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import uvloop
from psycopg import AsyncConnection
from pydantic import SecretStr
from sqlalchemy.pool import PoolProxiedConnection
from starlette.types import ASGIApp, Message, Scope

from bench.cpu import process_seconds
from bench.database import TOTAL, Block, Database, Orders
from bench.http_load import run_wrk
from bench.report import say
from bench.results import Part
from bench.service import HOST, answers_ready, free_port, stop_process
from payment.adapters.clock import SystemClock
from payment.adapters.cloudevents import DEFAULT_SOURCE
from payment.adapters.in_memory import InMemoryStore, InMemoryUnitOfWork
from payment.adapters.logging import configure_logging
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.engine import (
    PoolStatus,
    PoolWatch,
    build_async_engine,
    session_settings,
)
from payment.adapters.sqlalchemy.repositories import (
    GROUND_STATEMENT,
    SqlOutbox,
    WriteBatch,
    ground_params,
    to_db,
)
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain import services
from payment.domain.attempts import Outcome, PaymentAttempt
from payment.domain.events import PaymentSucceeded
from payment.domain.model import Money, Order, OrderStatus, PaymentStatus
from payment.domain.ports import UnitOfWork
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.answers import answer_for
from payment.entrypoints.http.auth import ANONYMOUS_CALLER

REPETITIONS = 3
FLOOR_CONNECTIONS = 16
FLOOR_MAX_SECONDS = 5
"""Each of the floor's wrk runs lasts the bench's run length, at most this."""
APP_REQUESTS, APP_WARMUP = 2000, 300
RESET_EVERY = 250
"""The in-memory store's commit scans every payment: its payments are emptied this often."""
LOG_LINES, LOG_WARMUP = 20_000, 2000
MEMORY_PAYMENTS, MEMORY_WARMUP = 5000, 500
PAYMENTS, PAYMENTS_WARMUP = 1000, 200
PIECES, PIECES_WARMUP = 2000, 200
START_TIMEOUT_SECONDS = 30.0
AMOUNT = Money(Decimal(TOTAL))
CLOCK = SystemClock()

BARE_APP = '''\
"""A bare ASGI app: it reads the request's body and answers 200 with a small JSON body."""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
'''

ACCESS_FIELDS: dict[str, object] = {
    "request_id": "0123456789abcdef0123456789abcdef",
    "caller": ANONYMOUS_CALLER,
    "method": "POST",
    "route": "/pay",
    "path": "/pay",
    "status": 200,
    "duration_ms": 3.125,
    "outcome": "paid",
    "order_id": 1,
    "claimed_amount": TOTAL,
    "payment_id": 1,
    "idempotency_key": None,
}
"""The fields of a payment's access line, as the service logs them."""


@dataclass(frozen=True, slots=True)
class Samples:
    """CPU microseconds per operation in each repetition, and operations per repetition."""

    microseconds: list[float]
    operations: int


Operation = Callable[[int], Awaitable[None]]
"""One operation of a part, given its index (from 0, warm-up included)."""


def measure_parts(
    database: Database, orders: Orders, work_dir: Path, *, seconds: int, warmup_seconds: int
) -> list[Part]:
    """Every part, one after the other; printed as each is measured."""
    say("\nwhere a payment's server CPU goes: measuring each part on its own")
    floor_seconds = min(seconds, FLOOR_MAX_SECONDS)
    block = orders.add_pending(PAYMENTS_WARMUP + REPETITIONS * PAYMENTS)
    orders.settle()
    settings = service_settings(database)
    return [
        _part(
            "http_floor",
            "HTTP server floor: bare ASGI app on uvicorn (wrk, 16 connections)",
            f"uvicorn (httptools, uvloop), one process, under wrk with pay.lua's requests;"
            f" CPU from /proc/<pid>/stat; {REPETITIONS} runs of {floor_seconds} s after"
            f" {warmup_seconds} s of warm-up",
            lambda: _http_floor(work_dir, seconds=floor_seconds, warmup_seconds=warmup_seconds),
        ),
        _part(
            "app_in_memory",
            "the service's ASGI app, POST /pay, in-memory store",
            "FastAPI app from create_app (middleware, route, pay use case) on the in-memory"
            " store, driven in-process with synthetic ASGI messages; JSON INFO logs to"
            " os.devnull",
            lambda: uvloop.run(_app_in_memory()),
        ),
        _part(
            "access_log_line",
            "one access log line (JSON formatter, to os.devnull)",
            "logging.getLogger('payment.access').info with a payment's fields",
            _access_log_line,
            within="app_in_memory",
        ),
        _part(
            "pay_in_memory",
            "the pay use case alone, in-memory store",
            "payment.domain.services.pay on InMemoryUnitOfWork, answer_for",
            lambda: uvloop.run(_pay_in_memory()),
            within="app_in_memory",
        ),
        _part(
            "pay_postgres",
            "the pay use case on PostgreSQL (sequential)",
            "payment.domain.services.pay on SqlAlchemyUnitOfWork over build_async_engine with"
            " the service's default settings, answer_for; one payment at a time",
            lambda: uvloop.run(_pay_on_postgres(settings, block)),
        ),
        _part(
            "pool_checkout",
            "pool checkout + checkin",
            "await engine.raw_connection(), then .close(), as the unit of work does",
            lambda: uvloop.run(_pool_checkout(settings)),
            within="pay_postgres",
        ),
        _part(
            "read_statement",
            "the read: GROUND_STATEMENT through psycopg",
            "execute and fetchall on the pooled psycopg connection, for orders just paid"
            " (no nextval)",
            lambda: uvloop.run(_read_statement(settings, block)),
            within="pay_postgres",
        ),
        _part(
            "guarded_write",
            "the guarded write: a WriteBatch statement through psycopg",
            "the statement of a payment (guarded update, payment, audit record) built and"
            " sent, its row read; on orders already paid, so the guard holds nothing and"
            " nothing is written: the client's work is the same",
            lambda: uvloop.run(_guarded_write(settings, block)),
            within="pay_postgres",
        ),
    ]


def service_settings(database: Database) -> Settings:
    """The service's settings as the runs had them: every default, and DATABASE_URL. Given
    as arguments, which win over the environment (the served process gets none of the
    service's variables either)."""
    values: dict[str, Any] = {
        name: field.get_default(call_default_factory=True)
        for name, field in Settings.model_fields.items()
        if not field.is_required()
    }
    values["database_url"] = SecretStr(database.service_url())
    return Settings(**values)


def _part(
    key: str,
    label: str,
    detail: str,
    measure: Callable[[], Samples],
    *,
    within: str | None = None,
) -> Part:
    """``measure`` run and its samples kept; a failure is reported and kept as such."""
    try:
        samples = measure()
    except Exception as error:
        say(f"  {label}: not measured ({type(error).__name__}: {error})")
        return Part(key, label, [], 0, f"not measured: {type(error).__name__}: {error}", within)
    part = Part(key, label, samples.microseconds, samples.operations, detail, within)
    runs = " ".join(f"{sample:.1f}" for sample in samples.microseconds)
    say(f"  {label}: {part.microseconds:.1f} us ({runs}; {samples.operations} per run)")
    return part


# Measuring


async def _cost(operation: Operation, *, count: int, warmup: int) -> Samples:
    """``operation`` ``warmup`` times, then ``REPETITIONS`` times ``count`` times, each
    repetition timed on the process's CPU clock; the heap frozen meanwhile."""
    with _frozen_heap():
        for index in range(warmup):
            await operation(index)
        samples = []
        for repetition in range(REPETITIONS):
            first = warmup + repetition * count
            started = time.process_time()
            for index in range(first, first + count):
                await operation(index)
            samples.append((time.process_time() - started) * 1e6 / count)
    return Samples(samples, count)


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """What exists now out of the collector's sight, as the service does after start-up."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _production_logging() -> Iterator[None]:
    """The service's loggers as in production (JSON, INFO), their lines sent to
    ``os.devnull``; as they were afterwards."""
    logger = logging.getLogger("payment")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    with open(os.devnull, "w") as sink:
        configure_logging("INFO", "json")
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)
        try:
            yield
        finally:
            logger.handlers, logger.level, logger.propagate = saved[0], saved[1], saved[2]


# 1. The HTTP server floor


def _http_floor(work_dir: Path, *, seconds: int, warmup_seconds: int) -> Samples:
    """The bare app's server under wrk: one warm-up run, then ``REPETITIONS`` measured."""
    with _bare_server(work_dir) as (base_url, pid):
        endless = Block(1, 2**40)  # the bare app reads no order: no block to run past
        run_wrk(base_url, connections=FLOOR_CONNECTIONS, seconds=warmup_seconds, block=endless)
        samples, fewest = [], sys.maxsize
        for _ in range(REPETITIONS):
            before = process_seconds([pid])
            load = run_wrk(base_url, connections=FLOOR_CONNECTIONS, seconds=seconds, block=endless)
            spent = process_seconds([pid]) - before
            if load.errors or not load.requests:
                raise RuntimeError(
                    f"the bare server answered {load.statuses}, {load.errors} errors"
                )
            samples.append(spent * 1e6 / load.requests)
            fewest = min(fewest, load.requests)
    return Samples(samples, fewest)


@contextmanager
def _bare_server(work_dir: Path) -> Iterator[tuple[str, int]]:
    """uvicorn serving ``BARE_APP`` from a module in ``work_dir`` on a free loopback port:
    its base URL and process id; stopped afterwards."""
    folder = work_dir / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bare_app.py").write_text(BARE_APP)
    log = folder / "bare-server.log"
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bare_app:app", "--app-dir", str(folder)]
    command += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    with log.open("ab") as output:
        process = subprocess.Popen(  # noqa: S603 - our own arguments, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base_url = f"http://{HOST}:{port}"
        _wait_until_answering(process, base_url, log)
        yield base_url, process.pid
    finally:
        stop_process(process)


def _wait_until_answering(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bare server exited: {log.read_text(errors='replace')[-500:]}")
        if answers_ready(base_url):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the bare server did not answer in {START_TIMEOUT_SECONDS} s")


# 2. The application without a database


async def _app_in_memory() -> Samples:
    """``POST /pay`` through the service's ASGI app on the in-memory store, one order each."""
    store = _store_with_orders(APP_WARMUP + REPETITIONS * APP_REQUESTS)
    app = create_app(
        Services(
            unit_of_work=partial(InMemoryUnitOfWork, store),
            clock=CLOCK,
            database_ready=_always_ready,
            pool_report=_pool_status,
        )
    )

    async def pay(index: int) -> None:
        if index % RESET_EVERY == 0:
            store.payments.clear()
            store.audit.clear()
        status = await _post_pay(app, order_id=index + 1)
        if status != 200:
            raise RuntimeError(f"POST /pay for order {index + 1} was answered {status}")

    with _production_logging():
        return await _cost(pay, count=APP_REQUESTS, warmup=APP_WARMUP)


def _store_with_orders(count: int) -> InMemoryStore:
    """A store holding pending orders 1 to ``count``, each of ``TOTAL``."""
    store = InMemoryStore()
    for order_id in range(1, count + 1):
        store.orders[order_id] = Order(id=order_id, status=OrderStatus.PENDING, total=AMOUNT)
    return store


async def _always_ready() -> bool:
    return True


def _pool_status() -> PoolStatus:
    """What the service's pool reports after each request (its gauges are set from it)."""
    return PoolStatus(size=10, in_use=1, waiting=0)


async def _post_pay(app: ASGIApp, *, order_id: int) -> int:
    """One ``POST /pay`` as uvicorn hands it to the app: the answer's status."""
    body = json.dumps({"order_id": order_id, "amount": TOTAL}).encode()
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/pay",
        "raw_path": b"/pay",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8004"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8004),
        "state": {},
    }
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _access_log_line() -> Samples:
    """One access line of a payment, formatted as JSON and written to ``os.devnull``."""
    access = logging.getLogger("payment.access")
    extra = {"fields": ACCESS_FIELDS}

    async def log(index: int) -> None:
        access.info("request", extra=extra)

    with _production_logging():
        return uvloop.run(_cost(log, count=LOG_LINES, warmup=LOG_WARMUP))


async def _pay_in_memory() -> Samples:
    """The pay use case on the in-memory store, one order each."""
    store = _store_with_orders(MEMORY_WARMUP + REPETITIONS * MEMORY_PAYMENTS)

    async def pay(index: int) -> None:
        if index % RESET_EVERY == 0:
            store.payments.clear()
            store.audit.clear()
        await _pay(InMemoryUnitOfWork(store), order_id=index + 1)

    return await _cost(pay, count=MEMORY_PAYMENTS, warmup=MEMORY_WARMUP)


async def _pay(uow: UnitOfWork, *, order_id: int) -> None:
    attempt = PaymentAttempt(
        order_id=order_id, amount=AMOUNT, caller=ANONYMOUS_CALLER, request_id=secrets.token_hex(16)
    )
    reply = await services.pay(attempt, uow=uow, clock=CLOCK, answer_for=answer_for)
    if reply.outcome is not Outcome.PAID:
        raise RuntimeError(f"order {order_id}: {reply.outcome}, not paid")


# 3. The use case on PostgreSQL, and its pieces


async def _pay_on_postgres(settings: Settings, block: Block) -> Samples:
    """The pay use case as the service wires it, one order of ``block`` each."""
    engine = build_async_engine(settings)
    unit_of_work = partial(
        SqlAlchemyUnitOfWork,
        engine,
        pool_watch=PoolWatch(engine),
        session=session_settings(settings),
    )

    async def pay(index: int) -> None:
        await _pay(unit_of_work(), order_id=block.first + index * block.stride)

    try:
        return await _cost(pay, count=PAYMENTS, warmup=PAYMENTS_WARMUP)
    finally:
        await engine.dispose()


async def _pool_checkout(settings: Settings) -> Samples:
    engine = build_async_engine(settings)

    async def checkout(index: int) -> None:
        lent = await engine.raw_connection()
        lent.close()

    try:
        return await _cost(checkout, count=PIECES, warmup=PIECES_WARMUP)
    finally:
        await engine.dispose()


async def _read_statement(settings: Settings, block: Block) -> Samples:
    """The unit of work's first statement, on orders of ``block`` (paid by now)."""
    engine = build_async_engine(settings)
    lent = await engine.raw_connection()
    connection = _psycopg(lent)

    async def read(index: int) -> None:
        order_id = _order_of(block, index)
        params = ground_params(order_id, caller=ANONYMOUS_CALLER, key=None)
        cursor = await connection.execute(GROUND_STATEMENT, params)
        [row] = await cursor.fetchall()
        if row[0] != order_id:
            raise RuntimeError(f"the read found no order {order_id}")

    try:
        return await _cost(read, count=PIECES, warmup=PIECES_WARMUP)
    finally:
        lent.close()
        await engine.dispose()


async def _guarded_write(settings: Settings, block: Block) -> Samples:
    """A payment's write (the order's guarded update, the payment, its audit record, its
    event), built from a ``WriteBatch`` and sent, for orders of ``block`` that are paid by
    now."""
    engine = build_async_engine(settings)
    lent = await engine.raw_connection()
    connection = _psycopg(lent)
    now = CLOCK.now()

    async def write(index: int) -> None:
        batch = _payment_batch(_order_of(block, index), at=now)
        statement, params = batch.statement()
        cursor = await connection.execute(statement, params)
        [(changed,)] = await cursor.fetchall()
        if changed != 0:
            raise RuntimeError("the guarded write changed an order it should have left")

    try:
        return await _cost(write, count=PIECES, warmup=PIECES_WARMUP)
    finally:
        lent.close()
        await engine.dispose()


def _psycopg(lent: PoolProxiedConnection) -> AsyncConnection[Any]:
    """The psycopg connection the pool lent, as the unit of work uses it."""
    connection = lent.driver_connection
    if not isinstance(connection, AsyncConnection):
        raise TypeError(f"the pool lent a {type(connection).__name__}, not psycopg's")
    return connection


def _order_of(block: Block, index: int) -> int:
    return block.first + (index % block.count) * block.stride


def _payment_batch(order_id: int, *, at: datetime) -> WriteBatch:
    """The writes of a payment of ``order_id``, staged as the SQL unit of work stages them."""
    batch = WriteBatch()
    batch.guard(Order(id=order_id, status=OrderStatus.PENDING, total=AMOUNT, paid_at=at))
    batch.insert(
        "payments",
        id=order_id,
        order_id=order_id,
        amount=AMOUNT.amount,
        status=PaymentStatus.SUCCEEDED.value,
        created_at=to_db(at),
    )
    batch.insert(
        "payment_attempts",
        created_at=to_db(at),
        request_id=secrets.token_hex(16),
        caller=ANONYMOUS_CALLER,
        order_id=order_id,
        claimed_amount=AMOUNT.amount,
        outcome=Outcome.PAID.value,
        payment_id=order_id,
        idempotency_key=None,
    )
    event = PaymentSucceeded(payment_id=order_id, order_id=order_id, amount=AMOUNT, created_at=at)
    SqlOutbox(batch, source=DEFAULT_SOURCE).add(event)
    return batch
