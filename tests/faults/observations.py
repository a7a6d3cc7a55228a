"""What a fault test saw (counts, timings), noted for the run's summary; and the server's
output, for the failure messages."""

from __future__ import annotations

from collections.abc import Callable

from tests.e2e.server import RunningService
from tests.support.observations import Observe as Observe


def last_lines(text: str, count: int = 60) -> str:
    """The end of a server's output, enough to see what it did last in a failure message."""
    return "\n".join(text.splitlines()[-count:])


def explained(what: str, service: RunningService) -> Callable[[], str]:
    """``what``, then the end of the service's output as it is when a failure asks for it."""
    return lambda: f"{what}\n{last_lines(service.output())}"
