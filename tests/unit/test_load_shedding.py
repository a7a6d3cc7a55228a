"""Load shedding in the front (SPEC §3.6): beyond its maximum of requests in progress, a worker
answers a new request 503 with ``Retry-After`` at once, before the application sees it, and
counts it; the probes and the metrics are neither counted nor refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from starlette.types import Receive, Scope, Send

from payment.entrypoints.http.front import RequestFront
from payment.entrypoints.http.lifecycle import Lifecycle
from payment.entrypoints.http.observe import Metrics
from payment.entrypoints.http.routes import router
from tests.unit.test_http_front import Server, http_scope, nothing_more

pytestmark = pytest.mark.anyio

LIMIT = 2


class Held:
    """An application that holds each request until released, then answers 200."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def front_over(app: Held, metrics: Metrics, limit: int | None = LIMIT) -> RequestFront:
    return RequestFront(
        app,
        lifecycle=Lifecycle(),
        metrics=metrics,
        pool_report=None,
        routes=router.routes,
        max_in_flight=limit,
    )


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never came")


def shed_count(metrics: Metrics) -> float:
    value = metrics.registry.get_sample_value("payment_http_requests_shed_total")
    return 0.0 if value is None else value


async def send_to(front: RequestFront, path: str, server: Server) -> None:
    await front(http_scope(path), nothing_more, server.send)


async def test_a_request_beyond_the_limit_in_progress_is_answered_503_at_once_and_counted() -> None:
    app, metrics = Held(), Metrics()
    front = front_over(app, metrics)
    held = [Server() for _ in range(LIMIT)]
    tasks = [asyncio.create_task(send_to(front, "/pay", server)) for server in held]
    await until(lambda: len(app.seen) == LIMIT)

    refused = Server()
    await asyncio.wait_for(send_to(front, "/pay", refused), timeout=1)

    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    assert "x-request-id" in refused.headers
    assert refused.body()["code"] == "service_unavailable"
    assert app.seen == ["/pay"] * LIMIT  # the application never saw it
    assert shed_count(metrics) == 1
    app.release.set()
    await asyncio.gather(*tasks)
    assert [server.status for server in held] == [200] * LIMIT


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
async def test_the_probes_and_the_metrics_pass_a_full_worker_and_take_no_place(path: str) -> None:
    app, metrics = Held(), Metrics()
    front = front_over(app, metrics)
    tasks = [asyncio.create_task(send_to(front, "/pay", Server())) for _ in range(LIMIT)]
    await until(lambda: len(app.seen) == LIMIT)

    probe = asyncio.create_task(send_to(front, path, Server()))
    await until(lambda: len(app.seen) == LIMIT + 1)

    assert app.seen[-1] == path
    assert front.working == LIMIT
    assert shed_count(metrics) == 0
    app.release.set()
    await asyncio.gather(*tasks, probe)
    assert front.working == 0


async def test_a_place_is_given_back_when_a_request_ends_however_it_ends() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("broken")

    front = RequestFront(
        failing, lifecycle=Lifecycle(), metrics=Metrics(), pool_report=None, max_in_flight=1
    )
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await front(http_scope("/pay"), nothing_more, Server().send)

    assert front.working == 0


async def test_without_a_limit_nothing_is_shed() -> None:
    app, metrics = Held(), Metrics()
    front = front_over(app, metrics, limit=None)
    servers = [Server() for _ in range(50)]
    tasks = [asyncio.create_task(send_to(front, "/pay", server)) for server in servers]
    await until(lambda: len(app.seen) == 50)
    app.release.set()
    await asyncio.gather(*tasks)

    assert {server.status for server in servers} == {200}
    assert shed_count(metrics) == 0
