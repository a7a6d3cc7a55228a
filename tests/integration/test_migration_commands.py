"""`alembic upgrade head` and `payment-service migrate`, run as an operator runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import Popen

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from payment.adapters.sqlalchemy import migrations
from tests.integration.schema import (
    recorded_versions,
    revisions_oldest_first,
    table_names,
    table_shape,
)

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent
SECRET = "Pa55-w0rd-n0t-t0-leak"
MIGRATED_TABLES = {"orders", "payments", "idempotency_keys", "payment_attempts"}


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without any database setting, plus ``settings``."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name != "DATABASE_URL" and not name.startswith("ORDER_DB_")
    }
    return {**inherited, **settings}


def order_db_settings(url: URL, engine: Engine) -> dict[str, str]:
    """ORDER_DB_* for ``url``: a TCP host and port, or the embedded server's socket folder."""
    with engine.connect() as connection:
        port = connection.execute(text("SELECT current_setting('port')")).scalar_one()
    settings = {
        "ORDER_DB_HOST": url.host or str(url.query["host"]),
        "ORDER_DB_PORT": str(port),
        "ORDER_DB_NAME": str(url.database),
        "ORDER_DB_USER": str(url.username),
    }
    if url.password is not None:
        settings["ORDER_DB_PASSWORD"] = str(url.password)
    return settings


def run(
    *command: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / command[0]), *command[1:]],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def started(*command: str, env: dict[str, str], copies: int) -> Iterator[list[Popen[str]]]:
    """``copies`` processes of ``command`` at once; any still running at the end are killed."""
    processes = [
        Popen(
            [str(SCRIPTS / command[0]), *command[1:]],
            cwd=REPOSITORY,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def waiting_for_a_lock(engine: Engine) -> int:
    """How many sessions on the database wait for a lock right now."""
    with engine.connect() as connection:
        count: int = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()
        return count


def schema(engine: Engine) -> dict[str, object]:
    return {table: table_shape(engine, table) for table in table_names(engine)}


def test_alembic_upgrade_head_migrates_the_database_named_by_order_db_settings(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    env = environment(**order_db_settings(scratch_url, scratch_engine))

    result = run("alembic", "upgrade", "head", env=env)

    assert result.returncode == 0, result.stderr
    assert table_names(scratch_engine) >= MIGRATED_TABLES
    assert recorded_versions(scratch_engine) == [migrations.head()]


def test_payment_service_migrate_after_alembic_upgrade_head_changes_nothing(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    env = environment(**order_db_settings(scratch_url, scratch_engine))
    assert run("alembic", "upgrade", "head", env=env).returncode == 0
    before = schema(scratch_engine)

    result = run("payment-service", "migrate", env=env)

    assert result.returncode == 0, result.stderr
    assert schema(scratch_engine) == before


def test_payment_service_migrate_succeeds_and_a_second_run_is_a_no_op(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    env = environment(DATABASE_URL=scratch_url.render_as_string(hide_password=False))

    first = run("payment-service", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert table_names(scratch_engine) >= MIGRATED_TABLES
    migrated = schema(scratch_engine)

    second = run("payment-service", "migrate", env=env)

    assert second.returncode == 0, second.stderr
    assert schema(scratch_engine) == migrated
    assert recorded_versions(scratch_engine) == [migrations.head()]
    every_revision = ", ".join(revision for revision, _ in revisions_oldest_first())
    assert first.stdout == (
        f"payment-service: applied {every_revision}; the database is at {migrations.head()},"
        " the latest migration\n"
    )
    assert second.stdout == (
        f"payment-service: the database was already at {migrations.head()}, the latest migration;"
        " nothing to apply\n"
    )


def test_payment_service_migrate_on_an_unreachable_database_fails_in_one_line_without_secret() -> (
    None
):
    env = environment(DATABASE_URL=f"postgresql://payer:{SECRET}@127.0.0.1:1/order_db")

    result = run("payment-service", "migrate", env=env)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database" in lines[0]
    assert SECRET not in result.stderr
    assert SECRET not in result.stdout


def test_payment_service_migrate_over_orders_without_paid_at_fails_naming_the_column(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    with scratch_engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE orders (id SERIAL PRIMARY KEY, status VARCHAR(20) NOT NULL,"
                " total_price NUMERIC(10, 2) NOT NULL)"
            )
        )
    env = environment(DATABASE_URL=scratch_url.render_as_string(hide_password=False))

    result = run("payment-service", "migrate", env=env)

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(r"orders\W+lacks[^;]*\bpaid_at\b", lines[0]), lines[0]
    assert table_names(scratch_engine) <= {"orders", "payment_alembic_version"}
    assert recorded_versions(scratch_engine) == []


def test_payment_service_migrate_on_a_server_that_never_answers_gives_up_within_seconds(
    silent_port: int,
) -> None:
    env = environment(
        DATABASE_URL=f"postgresql://payer:{SECRET}@127.0.0.1:{silent_port}/order_db",
        PAYMENT_DB_CONNECT_TIMEOUT_SECONDS="1",
    )

    try:
        result = run("payment-service", "migrate", env=env, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("payment-service migrate still waits for the database after 15 s")

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert SECRET not in result.stderr


def test_two_migrations_started_together_take_turns_and_both_succeed(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    with scratch_engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE orders (id SERIAL PRIMARY KEY, status VARCHAR(20) NOT NULL,"
                " total_price NUMERIC(10, 2) NOT NULL, paid_at TIMESTAMP NULL)"
            )
        )
    env = environment(DATABASE_URL=scratch_url.render_as_string(hide_password=False))

    with scratch_engine.connect() as order_service:
        order_service.execute(text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
        with started("payment-service", "migrate", env=env, copies=2) as migrators:
            deadline = time.monotonic() + 60
            while waiting_for_a_lock(scratch_engine) < 2:
                assert all(m.poll() is None for m in migrators), "a migration ended too early"
                assert time.monotonic() < deadline, "the migrations never reached the database"
                time.sleep(0.05)
            order_service.rollback()
            outcomes = [(m.wait(timeout=60), m.communicate()[1]) for m in migrators]

    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert table_names(scratch_engine) >= MIGRATED_TABLES
    assert recorded_versions(scratch_engine) == [migrations.head()]
