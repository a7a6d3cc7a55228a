"""The order gate: one payment of an order at a time in a process; a payment that finds the
order's payment under way waits for it, but never past that one's patience, and is then
answered ``OrderBusy`` at once; other orders are not held up."""

from __future__ import annotations

import asyncio
import time

import pytest

from payment.adapters.sqlalchemy.unit_of_work import OrderGate
from payment.domain.errors import OrderBusy, TooMuchContention

pytestmark = pytest.mark.anyio

PATIENCE = 0.2
QUICK = 0.05


async def test_a_second_payment_of_an_order_waits_for_the_first_then_goes_in() -> None:
    gate = OrderGate(PATIENCE)
    await gate.enter(1)
    second = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0.01)
    assert not second.done()

    gate.leave(1)
    await asyncio.wait_for(second, timeout=QUICK)

    assert len(gate) == 1  # the second holds it now
    gate.leave(1)
    assert len(gate) == 0


async def test_payments_of_other_orders_go_in_at_once() -> None:
    gate = OrderGate(PATIENCE)
    await gate.enter(1)

    await asyncio.wait_for(gate.enter(2), timeout=QUICK)

    assert len(gate) == 2


async def test_a_waiting_payment_is_answered_busy_once_the_first_has_been_at_it_too_long() -> None:
    gate = OrderGate(PATIENCE)
    await gate.enter(1)
    started = time.monotonic()

    with pytest.raises(OrderBusy) as refused:
        await gate.enter(1)

    assert PATIENCE - 0.01 <= time.monotonic() - started < PATIENCE + QUICK
    assert refused.value.order_id == 1
    assert isinstance(refused.value, TooMuchContention)  # answered 503 with Retry-After
    assert len(gate) == 1  # the first still holds it


async def test_a_payment_arriving_after_the_patience_is_answered_busy_at_once() -> None:
    gate = OrderGate(PATIENCE)
    await gate.enter(1)
    await asyncio.sleep(PATIENCE)
    started = time.monotonic()

    with pytest.raises(OrderBusy):
        await gate.enter(1)

    assert time.monotonic() - started < QUICK


async def test_payments_waiting_together_go_in_one_at_a_time() -> None:
    gate = OrderGate(PATIENCE)
    inside = 0
    most = 0

    async def pay() -> None:
        nonlocal inside, most
        await gate.enter(7)
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.005)
        inside -= 1
        gate.leave(7)

    await asyncio.wait_for(asyncio.gather(*(pay() for _ in range(10))), timeout=PATIENCE * 5)

    assert most == 1
    assert len(gate) == 0


async def test_a_cancelled_wait_leaves_the_gate_as_it_was() -> None:
    gate = OrderGate(PATIENCE)
    await gate.enter(1)
    waiting = asyncio.create_task(gate.enter(1))
    await asyncio.sleep(0.01)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.leave(1)

    await asyncio.wait_for(gate.enter(1), timeout=QUICK)
