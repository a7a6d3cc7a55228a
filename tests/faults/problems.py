"""The refusals the fault tests expect, checked in full."""

from __future__ import annotations

import httpx2

from tests.e2e.checks import assert_problem


def assert_retry_after(response: httpx2.Response) -> None:
    """``Retry-After`` is a whole number of seconds, at least one."""
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit(), response.headers
    assert int(retry_after) >= 1, response.headers


def assert_unavailable(response: httpx2.Response) -> None:
    """A well-formed 503 service_unavailable, telling the caller when to retry."""
    assert_problem(response, 503, "service_unavailable")
    assert_retry_after(response)
