from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    """The machine's clock, in aware UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)
