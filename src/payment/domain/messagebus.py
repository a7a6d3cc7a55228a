"""A small message bus: after a commit, each event goes to the handlers subscribed to its type.

The handlers see only what committed. They do the work that follows a decision inside the
process (the decision's log line, its metric, printing in development); telling other services
is the outbox's work, in the commit itself. A handler that fails is logged and the others still
run: what committed stays committed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable

from payment.domain.events import Event

Handler = Callable[[Event], None]

logger = logging.getLogger("payment.messagebus")


class MessageBus:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Event], list[Handler]] = defaultdict(list)

    def subscribe(self, event_type: type[Event], handler: Handler) -> None:
        """``handler`` gets every event of ``event_type`` (subclasses included)."""
        self._handlers[event_type].append(handler)

    def handle(self, events: Iterable[Event]) -> None:
        for event in events:
            for event_type in type(event).__mro__:
                for handler in self._handlers.get(event_type, ()):
                    try:
                        handler(event)
                    except Exception:
                        logger.exception(
                            "a handler of %s failed: %s", type(event).__name__, _name(handler)
                        )


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
