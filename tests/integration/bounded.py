"""Running a call that might hang, without letting it hang the test run."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio


def error_within(seconds: float, action: Callable[[], Any]) -> BaseException | None:
    """Run ``action`` in a thread: the error it raised, or None if it returned.

    Fails the test if it is still running after ``seconds``.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds} s"
    return outcome[0]


async def error_awaited_within(
    seconds: float, action: Callable[[], Awaitable[Any]]
) -> BaseException | None:
    """Await ``action()``: the error it raised, or None if it returned.

    Fails the test if it is still running after ``seconds`` (and cancels it).
    """
    outcome: list[BaseException | None] = []
    with anyio.move_on_after(seconds):
        try:
            await action()
        except Exception as error:
            outcome.append(error)
        else:
            outcome.append(None)
    assert outcome, f"still waiting after {seconds} s"
    return outcome[0]
