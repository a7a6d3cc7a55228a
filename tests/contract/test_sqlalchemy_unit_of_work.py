from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

import anyio
import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from payment.adapters.sqlalchemy.repositories import to_db
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.attempts import Outcome
from payment.domain.errors import IdempotencyKeyTaken, OrderChanged
from payment.domain.model import Money, Order, OrderStatus
from payment.domain.ports import UnitOfWork
from tests.contract.unit_of_work_contract import (
    FINGERPRINT,
    KEY,
    RECORD,
    RefundContract,
    audit_record,
)
from tests.support.attempts import CALLER
from tests.support.orders import add_orders

NO_LOCK_WAIT_SECONDS = 1.0
"""Far longer than an unlocked statement takes, and shorter than the lock timeout (2 s) that
ends a wait for a lock."""
NO_HANG_SECONDS = 15


class TestSqlAlchemyUnitOfWork(RefundContract):
    engine: Engine
    async_engine: AsyncEngine

    @pytest.fixture(autouse=True)
    def empty_database(self, clean_database: Engine, async_engine: AsyncEngine) -> None:
        self.engine = clean_database
        self.async_engine = async_engine

    def unit_of_work_factory(self) -> Callable[[], UnitOfWork]:
        return partial(SqlAlchemyUnitOfWork, self.async_engine)

    def add_orders(self, *totals: str, status: str = "pending") -> list[int]:
        return add_orders(self.engine, *totals, status=status)

    def change_order(
        self,
        order_id: int,
        *,
        status: str,
        total: str | None = None,
        paid_at: datetime | None = None,
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE orders SET status = :status, paid_at = :paid_at,"
                    " total_price = coalesce(CAST(:total AS numeric), total_price)"
                    " WHERE id = :id"
                ),
                {
                    "id": order_id,
                    "status": status,
                    "total": None if total is None else Decimal(total),
                    "paid_at": None if paid_at is None else to_db(paid_at),
                },
            )

    # Only a database has units of work that really overlap: the in-memory store commits one
    # at a time, and its reads never wait.

    @contextmanager
    def held(self, statement: str, **params: object) -> Iterator[Connection]:
        """A transaction of another writer that ran ``statement`` and holds what it locked
        until the block ends, when it rolls back."""
        with self.engine.connect() as connection:
            connection.execute(text(statement), params)
            yield connection
            connection.rollback()

    def lock_waits(self) -> int:
        """How many sessions on this database wait for a lock right now."""
        with self.engine.connect() as connection:
            waiting: int = connection.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                )
            ).scalar_one()
            return waiting

    async def race(
        self, commit: Callable[[int], Coroutine[Any, Any, None]], statement: str, **params: object
    ) -> None:
        """Run ``commit(0)`` and ``commit(1)`` together, both held up by what another
        writer's ``statement`` locked until both wait; then let them go at once."""
        with self.held(statement, **params) as holder:
            async with anyio.create_task_group() as racing:
                racing.start_soon(commit, 0)
                racing.start_soon(commit, 1)
                with anyio.fail_after(NO_HANG_SECONDS):
                    while self.lock_waits() != 2:
                        await anyio.sleep(0.01)
                holder.rollback()

    async def test_reads_take_no_lock_and_wait_for_none(self) -> None:
        [order_id] = self.add_orders("10.00")

        with (
            self.held("SELECT 1 FROM orders WHERE id = :id FOR UPDATE", id=order_id),
            self.held(
                "INSERT INTO idempotency_keys (caller, key, fingerprint, created_at, expires_at)"
                " VALUES (:caller, :key, :fingerprint, now(), now())",
                caller=CALLER,
                key=KEY,
                fingerprint=FINGERPRINT,
            ),
        ):
            start = time.monotonic()
            async with self.new_unit_of_work() as uow:
                ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
                order = await uow.orders.get(order_id)
            took = time.monotonic() - start

        assert took < NO_LOCK_WAIT_SECONDS, took
        pending = Order(id=order_id, status=OrderStatus.PENDING, total=Money(Decimal("10.00")))
        assert ground.order == order == pending
        assert ground.kept is None
        assert ground.payment_id is not None

    async def test_no_lock_is_held_between_the_read_and_the_commit(self) -> None:
        [order_id] = self.add_orders("10.00")

        async with self.new_unit_of_work() as uow:
            ground = await uow.ground_for(order_id, caller=CALLER, key=KEY)
            # NOWAIT fails at once if the unit of work held the order's row.
            with self.engine.begin() as order_service:
                order_service.execute(
                    text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE NOWAIT"),
                    {"id": order_id},
                )
                order_service.execute(
                    text("UPDATE orders SET total_price = 10.01 WHERE id = :id"),
                    {"id": order_id},
                )
            self.stage_all(uow, ground)
            with pytest.raises(OrderChanged):
                await uow.commit()

        assert (await self.stored(order_id)).payments == []

    async def test_a_unit_of_work_takes_a_connection_at_its_first_statement_and_gives_it_back(
        self,
    ) -> None:
        [order_id] = self.add_orders("10.00")
        pool = self.async_engine.pool
        assert isinstance(pool, QueuePool)
        in_use: dict[str, int] = {}

        async def read_then_fail() -> None:
            async with self.new_unit_of_work() as uow:
                in_use["entered"] = pool.checkedout()
                await uow.ground_for(order_id, caller=CALLER, key=None)
                await uow.orders.get(order_id)
                in_use["after two reads"] = pool.checkedout()
                raise RuntimeError("leaves with an error")

        with pytest.raises(RuntimeError, match="leaves with an error"):
            await read_then_fail()
        in_use["after an error"] = pool.checkedout()
        async with self.new_unit_of_work() as uow:
            uow.audit.add(audit_record(order_id, Outcome.ORDER_NOT_PAYABLE))
            await uow.commit()
        in_use["after a commit"] = pool.checkedout()

        assert in_use == {
            "entered": 0,
            "after two reads": 1,
            "after an error": 0,
            "after a commit": 0,
        }

    async def test_two_units_of_work_racing_to_pay_one_order_commit_once(self) -> None:
        [order_id] = self.add_orders("10.00")
        racers = [self.new_unit_of_work(), self.new_unit_of_work()]
        results: list[Exception | None] = [None, None]

        async def commit(number: int) -> None:
            try:
                await racers[number].commit()
            except OrderChanged as refused:
                results[number] = refused

        async with racers[0] as first, racers[1] as second:
            grounds = [
                await first.ground_for(order_id, caller=CALLER, key=None),
                await second.ground_for(order_id, caller=CALLER, key=None),
            ]
            payments = [self.stage_payment(uow, g) for uow, g in zip(racers, grounds, strict=True)]
            # Both guarded writes are in flight together, queued behind another writer's
            # lock on the order; its release lets them run one after the other.
            await self.race(commit, "SELECT 1 FROM orders WHERE id = :id FOR UPDATE", id=order_id)

        refused = [result for result in results if result is not None]
        assert len(refused) == 1, results
        [winner] = [p for p, r in zip(payments, results, strict=True) if r is None]
        stored = await self.stored(order_id)
        assert stored.payments == [winner]
        assert stored.order is not None
        assert stored.order.status == OrderStatus.PAID

    async def test_two_units_of_work_racing_to_keep_one_key_commit_once(self) -> None:
        [order_id] = self.add_orders("10.00")
        racers = [self.new_unit_of_work(), self.new_unit_of_work()]
        results: list[Exception | None] = [None, None]

        async def commit(number: int) -> None:
            try:
                await racers[number].commit()
            except IdempotencyKeyTaken as refused:
                results[number] = refused

        async with racers[0] as first, racers[1] as second:
            for uow in (first, second):
                assert (await uow.ground_for(order_id, caller=CALLER, key=KEY)).kept is None
                uow.audit.add(audit_record(order_id, Outcome.AMOUNT_MISMATCH))
                self.stage_key(uow, RECORD)
            # Another writer's uncommitted insert of the key makes both inserts wait on it.
            await self.race(
                commit,
                "INSERT INTO idempotency_keys (caller, key, fingerprint, created_at, expires_at)"
                " VALUES (:caller, :key, 'another', now(), now())",
                caller=CALLER,
                key=KEY,
            )

        assert len([result for result in results if result is not None]) == 1, results
        assert await self.kept() == RECORD
        assert len((await self.stored(order_id)).trail) == 1
