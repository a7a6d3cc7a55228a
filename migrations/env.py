"""Alembic's entry: the database comes from the service's settings (ORDER_DB_* or DATABASE_URL),
or from the URL a caller of ``payment.adapters.sqlalchemy.migrations`` hands over."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from payment.adapters.settings import load_settings
from payment.adapters.sqlalchemy.migrations import VERSION_TABLE
from payment.adapters.sqlalchemy.tables import metadata

config = context.config
_LOCK_KEY = 0x7061796D656E74  # "payment"

if config.config_file_name is not None:  # run by the alembic command, with alembic.ini
    fileConfig(config.config_file_name, disable_existing_loggers=False)


MIGRATION_LOCK_TIMEOUT = "30s"
"""The longest a migration waits for a table lock (another transaction on ``orders``, say)."""


def run_migrations_online() -> None:
    settings = load_settings()
    url = config.attributes.get("database_url")
    engine = create_engine(
        url if isinstance(url, URL) else settings.sqlalchemy_url(),
        poolclass=NullPool,
        connect_args={"connect_timeout": settings.payment_db_connect_timeout_seconds},
    )
    with engine.connect() as connection:
        applied = config.attributes.get("applied")  # a caller's list: the revisions run
        context.configure(
            connection=connection,
            version_table=VERSION_TABLE,
            # What the service's tables say (tables.py): `alembic check` and a test compare
            # the migrated schema with it, so the two cannot drift apart unnoticed.
            target_metadata=metadata,
            compare_type=True,
            compare_server_default=True,
            include_name=lambda name, kind, _: not (kind == "table" and name == VERSION_TABLE),
            transactional_ddl=True,
            on_version_apply=(
                (lambda *, step, **_: applied.append(step.up_revision_id))
                if isinstance(applied, list)
                else None
            ),
        )
        with context.begin_transaction():
            # Replicas that migrate at the same moment take turns instead of racing.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
run_migrations_online()
