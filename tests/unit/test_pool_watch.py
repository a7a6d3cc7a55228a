"""What the pool reports for the metrics: its size, the connections lent out, the units of
work waiting for one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from payment.adapters.sqlalchemy.engine import PoolStatus, PoolWatch
from payment.adapters.sqlalchemy.unit_of_work import SqlAlchemyUnitOfWork
from payment.domain.errors import StorageUnavailable


def engine_on(port: int, **options: object) -> AsyncEngine:
    """The request path's kind of engine, on a server that is not a database: building it
    connects to nothing."""
    return create_async_engine(
        f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing",
        connect_args={"connect_timeout": 30},
        **options,
    )


@pytest.fixture
def pooled() -> Iterator[AsyncEngine]:
    engine = engine_on(1, pool_size=4, max_overflow=0)
    yield engine
    engine.sync_engine.dispose()


def test_an_idle_pool_reports_its_size_and_nothing_in_use(pooled: AsyncEngine) -> None:
    assert PoolWatch(pooled).status() == PoolStatus(size=4, in_use=0, waiting=0)


def test_the_units_of_work_waiting_are_reported_as_counted(pooled: AsyncEngine) -> None:
    watch = PoolWatch(pooled)

    watch.waiting += 2
    busy = watch.status()
    watch.waiting -= 2

    assert busy == PoolStatus(size=4, in_use=0, waiting=2)
    assert watch.status().waiting == 0


def test_a_pool_that_keeps_no_connections_reports_size_zero() -> None:
    engine = engine_on(1, poolclass=NullPool)
    watch = PoolWatch(engine)
    watch.waiting += 1

    assert watch.status() == PoolStatus(size=0, in_use=0, waiting=1)


class SilentServer:
    """Accepts connections and never answers, until ``hang_up`` closes them and any new one."""

    def __init__(self) -> None:
        self.connections: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.hung_up = False

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer)
        if self.hung_up:
            writer.close()

    def hang_up(self) -> None:
        self.hung_up = True
        for writer in self.connections:
            writer.close()

    async def stop(self) -> None:
        self.hang_up()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def silent_server() -> AsyncIterator[SilentServer]:
    server = SilentServer()
    yield server
    await server.stop()


async def wait_for(condition: Callable[[], object], seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_a_unit_of_work_is_counted_waiting_while_its_connection_is_made_and_not_after(
    silent_server: SilentServer,
) -> None:
    engine = engine_on(await silent_server.start(), pool_size=4, max_overflow=0)
    watch = PoolWatch(engine)

    async def read() -> None:
        async with SqlAlchemyUnitOfWork(engine, pool_watch=watch) as uow:
            await uow.ground_for(1, caller="shop", key=None)

    try:
        reading = asyncio.create_task(read())
        await wait_for(lambda: silent_server.connections)
        waiting = watch.status().waiting
        silent_server.hang_up()
        with pytest.raises(StorageUnavailable):
            await reading
    finally:
        await engine.dispose()

    assert waiting == 1
    assert watch.status().waiting == 0
