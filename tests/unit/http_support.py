"""The HTTP API in-process for the unit tests: a client over ``create_app`` and in-memory or
fake services, and how a problem answer is checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from payment.bootstrap import message_bus
from payment.domain.ports import UnitOfWork
from payment.entrypoints.http import Services, create_app
from payment.entrypoints.http.auth import ApiKeys
from payment.entrypoints.http.observe import Metrics, PoolReport
from tests.unit.fakes import FixedClock

PROBLEM_JSON = "application/problem+json"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code"}
PAID_AT = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)

Readiness = Callable[[], Awaitable[bool]]


def database_that(answers: bool) -> Readiness:
    """A readiness check of a database that answers, or does not."""

    async def ready() -> bool:
        return answers

    return ready


def app_on(
    unit_of_work: Callable[[], UnitOfWork],
    *,
    database_ready: Readiness | None = None,
    api_keys: ApiKeys | None = None,
    pool_report: Callable[[], PoolReport] | None = None,
) -> FastAPI:
    metrics = Metrics()
    return create_app(
        Services(
            unit_of_work=unit_of_work,
            clock=FixedClock(PAID_AT),
            database_ready=database_ready or database_that(answers=True),
            api_keys=api_keys,
            pool_report=pool_report,
            bus=message_bus(metrics),
        ),
        metrics=metrics,
    )


def client_on(
    unit_of_work: Callable[[], UnitOfWork],
    *,
    database_ready: Readiness | None = None,
    raise_server_exceptions: bool = True,
    api_keys: ApiKeys | None = None,
    pool_report: Callable[[], PoolReport] | None = None,
) -> TestClient:
    app = app_on(
        unit_of_work, database_ready=database_ready, api_keys=api_keys, pool_report=pool_report
    )
    return TestClient(app, raise_server_exceptions=raise_server_exceptions)


def post_pay(
    client: TestClient, body: str | bytes, *, headers: Sequence[tuple[str, str]] = ()
) -> Any:
    """POST /pay with a JSON body and ``headers``, a header given twice if listed twice."""
    return client.post(
        "/pay", content=body, headers=[("Content-Type", "application/json"), *headers]
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert set(problem) >= PROBLEM_MEMBERS
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"] == "/problems/" + code.replace("_", "-")
    assert problem["title"]
    assert problem["detail"]
    return problem
