"""Facts a test observed (counts, timings), noted with the ``observe`` fixture and listed at
the end of the run: the figures a closing note or a reader of CI's output can quote."""

from __future__ import annotations

from collections.abc import Callable

Observe = Callable[[str, object], None]
"""``observe(name, value)``: the ``observe`` fixture's type."""
