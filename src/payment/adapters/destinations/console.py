"""The destination of ``payment-service dev``: each event printed where the developer sees it,
instead of sent anywhere."""

from __future__ import annotations

import sys
from typing import TextIO

from payment.domain.delivery import OutboxEvent


class ConsoleDestination:
    """Writes each event it is given to a stream (standard output by default): a line naming
    it, then its body as it would be delivered."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def deliver(self, event: OutboxEvent) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(f"event {event.type} {event.event_id} (order {event.subject})\n")
        stream.write(f"{event.body}\n")
        stream.flush()

    async def close(self) -> None:
        """Nothing to release: the stream is not ours."""
