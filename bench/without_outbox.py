"""The service with its outbox write switched off: the benchmark's yardstick for the outbox.

``python -m bench.without_outbox serve`` is ``payment-service serve`` with ``SqlOutbox.add``
doing nothing, so that a payment's write carries no event: the same code, settings and
statements otherwise. It is the benchmark's alone, never a setting of the product: a
payment without its event breaks the service's promise (SPEC §3.8), and the harness writes
the missing events after its runs, before ``payment-service verify``.

With one worker uvicorn serves in this very process, where the patch is made; more workers
would each import the service afresh, without it, so only one is accepted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from payment.adapters.sqlalchemy.repositories import SqlOutbox
from payment.domain.events import Event
from payment.entrypoints import cli

WORKERS_VARIABLE = "PAYMENT_WORKERS"


def _tell_nobody(self: SqlOutbox, event: Event) -> None:
    """In place of ``SqlOutbox.add``: no event staged, so the write inserts none."""


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if os.environ.get(WORKERS_VARIABLE) != "1" or any(
        argument.startswith("--workers") for argument in arguments
    ):
        sys.stderr.write(
            f"bench.without_outbox: set {WORKERS_VARIABLE}=1 (and no --workers): the patch"
            " holds only in the process that serves\n"
        )
        return 2
    SqlOutbox.add = _tell_nobody  # type: ignore[method-assign]
    return cli.main(arguments)


if __name__ == "__main__":
    sys.exit(main())
