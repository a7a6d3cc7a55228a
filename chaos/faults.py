"""The faults, and when each is injected.

``schedule`` spreads cycles of the seven faults (``CYCLE``) over the soak, after a quiet
start (the fault-free rate the checks compare with) and before a quiet end (for the service
to recover and the retries to finish): one cycle per ~200 s, at least one. Faults that hold
(a freeze, a blackhole, a row lock) hold for half the time between two faults, 4 to 10 s:
longer than the service's request deadline, so that a request caught by one must be answered
503 within its deadline, not when the fault ends.

Each fault undoes itself however the soak ends: the frozen PostgreSQL is thawed, the link
restored, the row lock released.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from chaos.database import ChaosPostgres
from chaos.proxy import LinkProxy
from chaos.service import Service
from chaos.slow_clients import SlowClient, slow_burst
from chaos.traffic import Traffic

WORKER_KILLED = "worker killed"
BACKENDS_TERMINATED = "backends terminated"
HOT_ORDER_LOCKED = "hot order locked"
POSTGRES_FROZEN = "PostgreSQL frozen"
SLOW_CLIENTS = "slow clients"
LINK_BLACKHOLED = "link blackholed"
POSTGRES_RESTARTED = "PostgreSQL restarted"
CYCLE = (
    WORKER_KILLED,
    BACKENDS_TERMINATED,
    HOT_ORDER_LOCKED,
    POSTGRES_FROZEN,
    SLOW_CLIENTS,
    LINK_BLACKHOLED,
    POSTGRES_RESTARTED,
)
SECONDS_PER_CYCLE = 200
MIN_HOLD_SECONDS, MAX_HOLD_SECONDS = 4.0, 10.0
RESTART_DOWN_SECONDS = 1.0
WORKER_RESTART_TIMEOUT_SECONDS = 30.0


def quiet_start(seconds: float) -> float:
    return max(6.0, 0.1 * seconds)


def quiet_end(seconds: float) -> float:
    return max(10.0, 0.12 * seconds)


@dataclass(frozen=True, slots=True)
class Planned:
    at: float
    """Seconds from the soak's start."""
    kind: str
    hold: float


@dataclass(frozen=True, slots=True)
class Span:
    """A fault as it happened, in seconds from the soak's start."""

    kind: str
    started: float
    ended: float
    detail: str

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "started": round(self.started, 2),
            "ended": round(self.ended, 2),
            "detail": self.detail,
        }


def schedule(seconds: float) -> list[Planned]:
    cycles = max(1, round(seconds / SECONDS_PER_CYCLE))
    count = cycles * len(CYCLE)
    first = quiet_start(seconds)
    slot = (seconds - first - quiet_end(seconds)) / count
    hold = min(MAX_HOLD_SECONDS, max(MIN_HOLD_SECONDS, slot / 2))
    return [Planned(first + i * slot, CYCLE[i % len(CYCLE)], hold) for i in range(count)]


class Faults:
    def __init__(
        self,
        *,
        postgres: ChaosPostgres,
        proxy: LinkProxy,
        service: Service,
        traffic: Traffic,
        origin: float,
        slow_clients: int,
        slow_hold_seconds: float,
        seed: int,
    ) -> None:
        self._postgres = postgres
        self._proxy = proxy
        self._service = service
        self._traffic = traffic
        self._origin = origin
        self._slow_clients = slow_clients
        self._slow_hold_seconds = slow_hold_seconds
        self._rng = random.Random(seed)
        self.spans: list[Span] = []
        self.errors: list[str] = []
        self.slow: list[SlowClient] = []
        self._inject: dict[str, Callable[[float], Awaitable[str]]] = {
            WORKER_KILLED: self._kill_worker,
            BACKENDS_TERMINATED: self._terminate_backends,
            HOT_ORDER_LOCKED: self._lock_hot_order,
            POSTGRES_FROZEN: self._freeze,
            SLOW_CLIENTS: self._slow_burst,
            LINK_BLACKHOLED: self._blackhole,
            POSTGRES_RESTARTED: self._restart,
        }

    def _now(self) -> float:
        return time.monotonic() - self._origin

    async def run(self, plan: list[Planned]) -> None:
        """Each fault at its time; a fault that lasts is not waited for before the next."""
        tasks = []
        try:
            for planned in plan:
                await asyncio.sleep(max(0.0, planned.at - self._now()))
                tasks.append(asyncio.ensure_future(self._one(planned)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, planned: Planned) -> None:
        started = self._now()
        try:
            detail = await self._inject[planned.kind](planned.hold)
        except Exception as error:  # a fault that could not be injected fails the soak
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            self.errors.append(f"{planned.kind} at {started:.1f} s: {reason}")
            detail = f"failed: {reason}"
        self.spans.append(Span(planned.kind, started, self._now(), detail))

    async def _kill_worker(self, hold: float) -> str:
        """SIGKILL to a worker; the span lasts until uvicorn's replacement has started."""
        started_before = self._service.workers_started()
        victim = self._service.kill_worker(self._rng)
        if victim is None:
            raise RuntimeError("no worker to kill")
        give_up_at = time.monotonic() + WORKER_RESTART_TIMEOUT_SECONDS
        while self._service.workers_started() <= started_before:
            if time.monotonic() > give_up_at:
                raise RuntimeError(
                    f"worker {victim} killed; none started in its place within"
                    f" {WORKER_RESTART_TIMEOUT_SECONDS:g} s"
                )
            await asyncio.sleep(0.1)
        return f"worker {victim} SIGKILLed, replaced"

    async def _terminate_backends(self, hold: float) -> str:
        count = await asyncio.to_thread(self._postgres.terminate_backends)
        return f"{count} backends terminated"

    async def _lock_hot_order(self, hold: float) -> str:
        order_id = self._traffic.take_fresh()
        if order_id is None:
            raise RuntimeError("no fresh order left to lock")
        async with self._postgres.row_locked(order_id):
            self._traffic.hot_order = order_id
            try:
                await asyncio.sleep(hold)
            finally:
                self._traffic.hot_order = None
        return f"order {order_id} locked FOR UPDATE for {hold:.1f} s under a retry storm"

    async def _freeze(self, hold: float) -> str:
        try:
            frozen = self._postgres.freeze()
            await asyncio.sleep(hold)
        finally:
            self._postgres.thaw()
        return f"{frozen} processes SIGSTOPped for {hold:.1f} s"

    async def _blackhole(self, hold: float) -> str:
        try:
            self._proxy.blackhole()
            await asyncio.sleep(hold)
        finally:
            self._proxy.restore()
        return f"nothing forwarded for {hold:.1f} s, no connection closed"

    async def _restart(self, hold: float) -> str:
        await asyncio.to_thread(self._postgres.restart, RESTART_DOWN_SECONDS)
        return f"fast stop, {RESTART_DOWN_SECONDS:g} s down, start"

    async def _slow_burst(self, hold: float) -> str:
        burst = await slow_burst(self._service.port, self._slow_clients, self._slow_hold_seconds)
        self.slow.extend(burst)
        cut = sum(client.cut_after is not None for client in burst)
        return f"{len(burst)} slow clients, {cut} closed by the service"
