"""The outbox's commands: ``relay``, and ``events dead | requeue | purge`` for an operator.

Each is a function of the settings and the parsed arguments returning the exit status, as the
command line's other commands are: 0 done, 1 when the database cannot be reached (or an event
to re-queue was not dead-lettered), 2 for a bad setting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from payment.adapters.logging import printable
from payment.adapters.settings import Settings
from payment.adapters.sqlalchemy.outbox import OutboxMissing, SqlOutboxStore
from payment.bootstrap import outbox_access
from payment.domain.errors import StorageUnavailable

PROG = "payment-service"
DEAD_LISTED_AT_MOST = 1000
T = TypeVar("T")


def relay(settings: Settings, args: argparse.Namespace) -> int:
    """``payment-service relay``."""
    from payment.entrypoints.relay import relay_command

    return relay_command(settings)


def event_id(text: str) -> str:
    """An argparse type: an event id (a UUID), in its canonical form."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an event id (a UUID): {text!r}") from None


def add_requeue_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("event_ids", nargs="*", default=[], metavar="EVENT_ID", type=event_id)
    which.add_argument(
        "--all-dead", action="store_true", help="every dead-lettered event, whatever its id"
    )


def dead(settings: Settings, args: argparse.Namespace) -> int:
    """``payment-service events dead``: one line per dead-lettered event, oldest first."""

    async def list_dead(store: SqlOutboxStore) -> int:
        events = await store.dead(limit=DEAD_LISTED_AT_MOST + 1)
        if not events:
            _say("no dead-lettered event")
            return 0
        out = sys.stdout
        out.write("EVENT_ID\tTYPE\tSUBJECT\tATTEMPTS\tCREATED_AT\tLAST_ERROR\n")
        for event in events[:DEAD_LISTED_AT_MOST]:
            out.write(
                "\t".join(
                    (
                        event.event_id,
                        printable(event.type),
                        printable(event.subject),
                        str(event.attempts),
                        event.created_at.isoformat().replace("+00:00", "Z"),
                        printable(event.last_error or ""),
                    )
                )
                + "\n"
            )
        if len(events) > DEAD_LISTED_AT_MOST:
            _say(f"the {DEAD_LISTED_AT_MOST} oldest are listed; there are more")
        return 0

    return _on_outbox(settings, list_dead)


def requeue(settings: Settings, args: argparse.Namespace) -> int:
    """``payment-service events requeue EVENT_ID... | --all-dead``: dead-lettered events are
    delivered again, with their count of failures back to zero."""
    wanted: list[str] | None = None if args.all_dead else list(dict.fromkeys(args.event_ids))

    async def requeue_dead(store: SqlOutboxStore) -> int:
        requeued = await store.requeue(wanted)
        _say(f"re-queued {len(requeued)} event(s); the relay delivers them again")
        missed = [] if wanted is None else [i for i in wanted if i not in set(requeued)]
        if missed:
            _say("not dead-lettered, left as they are: " + ", ".join(missed), error=True)
            return 1
        return 0

    return _on_outbox(settings, requeue_dead)


def purge(settings: Settings, args: argparse.Namespace) -> int:
    """``payment-service events purge``: delete the events delivered longer ago than
    PAYMENT_OUTBOX_RETENTION_HOURS (the relays do it too, now and then)."""
    retention = timedelta(hours=settings.payment_outbox_retention_hours)

    async def purge_delivered(store: SqlOutboxStore) -> int:
        purged = await store.purge_delivered(retention)
        _say(
            f"purged {purged} event(s) delivered more than"
            f" {settings.payment_outbox_retention_hours} hour(s) ago"
        )
        return 0

    return _on_outbox(settings, purge_delivered)


def _on_outbox(settings: Settings, work: Callable[[SqlOutboxStore], Awaitable[int]]) -> int:
    async def run() -> int:
        outbox = outbox_access(settings, pool_size=1)
        try:
            return await work(outbox.store)
        finally:
            await outbox.engine.dispose()

    try:
        return asyncio.run(run())
    except OutboxMissing as error:
        _say(str(error), error=True)
    except StorageUnavailable as error:
        _say(f"cannot reach the database: {error}", error=True)
    return 1


def _say(line: str, *, error: bool = False) -> None:
    stream = sys.stderr if error else sys.stdout
    stream.write(f"{PROG}: {line}\n")
