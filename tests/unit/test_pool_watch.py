"""What the pool reports for the metrics: its size, the connections lent out, the waits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool, QueuePool

from payment.adapters.sqlalchemy.engine import PoolStatus, PoolWatch


@pytest.fixture
def sqlite_engine() -> Iterator[Engine]:
    # SQLite in memory: a real pool without a server; each connection is its own database.
    engine = create_engine("sqlite://", poolclass=QueuePool, pool_size=4, max_overflow=0)
    yield engine
    engine.dispose()


def test_an_idle_pool_reports_its_size_and_nothing_in_use(sqlite_engine: Engine) -> None:
    assert PoolWatch(sqlite_engine).status() == PoolStatus(size=4, in_use=0, waiting=0)


def test_connections_lent_out_are_in_use_until_returned(sqlite_engine: Engine) -> None:
    watch = PoolWatch(sqlite_engine)

    with sqlite_engine.connect(), sqlite_engine.connect():
        busy = watch.status()
    idle = watch.status()

    assert busy.in_use == 2
    assert idle.in_use == 0


def test_waits_are_counted_while_they_last_even_when_they_fail(sqlite_engine: Engine) -> None:
    watch = PoolWatch(sqlite_engine)

    with watch.waiting():
        with watch.waiting():
            assert watch.status().waiting == 2
        assert watch.status().waiting == 1
    with pytest.raises(RuntimeError), watch.waiting():
        raise RuntimeError("the pool timed out")

    assert watch.status().waiting == 0


def test_a_pool_that_keeps_no_connections_reports_size_zero() -> None:
    engine = create_engine("sqlite://", poolclass=NullPool)
    watch = PoolWatch(engine)

    with watch.waiting():
        assert watch.status() == PoolStatus(size=0, in_use=0, waiting=1)
