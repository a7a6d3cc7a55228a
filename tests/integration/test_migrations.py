"""The alembic migrations on scratch databases: what they create, what they leave alone."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL

from payment.adapters.sqlalchemy import migrations
from payment.adapters.sqlalchemy.migrations import VERSION_TABLE
from payment.adapters.sqlalchemy.tables import metadata
from tests.integration.schema import (
    columns,
    indexes,
    recorded_versions,
    revisions_oldest_first,
    table_constraints,
    table_names,
    table_shape,
)

SPEC_ORDERS_COLUMNS = (
    ("id", "integer", True, "nextval('orders_id_seq'::regclass)"),
    ("status", "character varying(20)", True, None),
    ("total_price", "numeric(10,2)", True, None),
    ("paid_at", "timestamp without time zone", False, None),
)

ORDER_SERVICE_ORDERS = """
CREATE TABLE orders (
  id SERIAL PRIMARY KEY,
  user_id INTEGER NOT NULL,
  status VARCHAR(20) NOT NULL DEFAULT 'pending'
    CONSTRAINT ck_orders_status CHECK (status IN ('pending', 'paid', 'cancelled', 'shipped')),
  total_price NUMERIC(10, 2) NOT NULL CONSTRAINT ck_orders_total CHECK (total_price >= 0),
  paid_at TIMESTAMP NULL,
  created_at TIMESTAMP NOT NULL DEFAULT now(),
  note TEXT
);
CREATE INDEX ix_orders_user_id ON orders (user_id);
COMMENT ON TABLE orders IS 'owned by the order service';
CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('order_0042');
INSERT INTO orders (user_id, status, total_price, paid_at, created_at, note) VALUES
  (7, 'pending', 199.99, NULL, '2026-11-20 08:00:00', 'gift wrap'),
  (7, 'paid', 25.00, '2026-11-21 09:30:00', '2026-11-21 09:00:00', NULL),
  (8, 'shipped', 1234.50, '2026-11-19 10:00:00', '2026-11-19 09:59:00', NULL);
"""


def create_orders_as_the_order_service(engine: Engine, ddl: str = ORDER_SERVICE_ORDERS) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql(ddl)


def add_order_and_payment(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO orders (status, total_price, paid_at)"
                " VALUES ('pending', 10.00, NULL), ('paid', 20.00, '2026-11-26 10:15:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO payments (order_id, amount, status, created_at)"
                " VALUES (2, 20.00, 'succeeded', '2026-11-26 10:15:00')"
            )
        )
        if "payment_attempts" in table_names_of(connection):
            add_key_and_audit_record(connection)


def table_names_of(connection: Connection) -> set[str]:
    return set(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
    )


def add_key_and_audit_record(connection: Connection) -> None:
    connection.execute(
        text(
            "INSERT INTO idempotency_keys"
            " (caller, key, fingerprint, answer_status, answer_body, created_at, expires_at)"
            " VALUES ('shop', 'key-1', repeat('f', 64), 200, '{}',"
            " '2026-11-26 10:15:00', '2026-11-27 10:15:00')"
        )
    )
    connection.execute(
        text(
            "INSERT INTO payment_attempts"
            " (created_at, request_id, caller, order_id, claimed_amount, outcome, payment_id,"
            " idempotency_key)"
            " VALUES ('2026-11-26 10:15:00', 'request-1', 'shop', 2, 20.00, 'paid', 1, 'key-1')"
        )
    )


def test_upgrade_on_an_empty_database_creates_orders_exactly_as_the_spec_shows_it(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    with scratch_engine.connect() as connection:
        assert columns(connection, "orders") == SPEC_ORDERS_COLUMNS
        assert table_constraints(connection, "orders") == {("orders_pkey", "p", "PRIMARY KEY (id)")}


def test_upgrade_creates_payments_with_its_foreign_key_check_and_partial_unique_index(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    with scratch_engine.connect() as connection:
        assert columns(connection, "payments") == (
            ("id", "integer", True, "nextval('payments_id_seq'::regclass)"),
            ("order_id", "integer", True, None),
            ("amount", "numeric(10,2)", True, None),
            ("status", "character varying(20)", True, None),
            ("created_at", "timestamp without time zone", True, None),
            ("amount_refunded", "numeric(10,2)", True, "'0'::numeric"),
        )
        kinds = {
            (kind, definition) for _, kind, definition in table_constraints(connection, "payments")
        }
        assert (
            "c",
            "CHECK (((amount_refunded >= (0)::numeric) AND (amount_refunded <= amount)))",
        ) in kinds
        assert ("f", "FOREIGN KEY (order_id) REFERENCES orders(id)") in kinds
        assert ("p", "PRIMARY KEY (id)") in kinds
        check = connection.execute(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE conname = 'ck_payments_amount_positive'"
                " AND conrelid = 'payments'::regclass AND contype = 'c'"
            )
        ).scalar_one()
        assert check == "CHECK ((amount > (0)::numeric))"
        index = connection.execute(
            text(
                """
                SELECT i.indisunique,
                       array_agg(a.attname ORDER BY a.attnum),
                       pg_get_expr(i.indpred, i.indrelid)
                FROM pg_index i
                JOIN pg_class c ON c.oid = i.indexrelid
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE c.relname = 'uq_payments_one_succeeded_per_order'
                  AND i.indrelid = 'payments'::regclass
                GROUP BY i.indisunique, i.indpred, i.indrelid
                """
            )
        ).one()
        assert index[0] is True
        assert index[1] == ["order_id"]
        assert index[2] == "((status)::text = 'succeeded'::text)"


def index_definitions(connection: Connection, table: str) -> dict[str, str]:
    """Each index by name, its definition from ``USING`` on (no schema name)."""
    return {
        name: definition[definition.index(" USING ") + 1 :]
        + (" UNIQUE" if definition.startswith("CREATE UNIQUE") else "")
        for name, definition in indexes(connection, table)
    }


def test_upgrade_creates_idempotency_keys_keyed_by_caller_and_key_and_indexed_by_expiry(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    with scratch_engine.connect() as connection:
        assert columns(connection, "idempotency_keys") == (
            ("caller", "character varying(100)", True, None),
            ("key", "character varying(255)", True, None),
            ("fingerprint", "character varying(64)", True, None),
            ("answer_status", "smallint", False, None),
            ("answer_body", "text", False, None),
            ("created_at", "timestamp without time zone", True, None),
            ("expires_at", "timestamp without time zone", True, None),
        )
        assert {
            (kind, definition)
            for _, kind, definition in table_constraints(connection, "idempotency_keys")
        } == {("p", "PRIMARY KEY (caller, key)")}
        assert index_definitions(connection, "idempotency_keys") == {
            "pk_idempotency_keys": "USING btree (caller, key) UNIQUE",
            "ix_idempotency_keys_expires_at": "USING btree (expires_at)",
        }


def test_upgrade_creates_the_audit_trail_with_at_most_one_record_per_payment(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    with scratch_engine.connect() as connection:
        assert columns(connection, "payment_attempts") == (
            ("id", "bigint", True, None),
            ("created_at", "timestamp without time zone", True, None),
            ("request_id", "character varying(128)", True, None),
            ("caller", "character varying(100)", True, None),
            ("order_id", "integer", True, None),
            ("claimed_amount", "numeric(10,2)", True, None),
            ("outcome", "character varying(32)", True, None),
            ("payment_id", "integer", False, None),
            ("idempotency_key", "character varying(255)", False, None),
        )
        identity = connection.execute(
            text(
                "SELECT attidentity FROM pg_attribute"
                " WHERE attrelid = 'payment_attempts'::regclass AND attname = 'id'"
            )
        ).scalar_one()
        assert identity == "a"  # GENERATED ALWAYS: the trail numbers its records itself
        # No foreign key on order_id: an attempt on an order that does not exist is recorded.
        assert {
            (kind, definition)
            for _, kind, definition in table_constraints(connection, "payment_attempts")
        } == {("p", "PRIMARY KEY (id)"), ("f", "FOREIGN KEY (payment_id) REFERENCES payments(id)")}
        assert index_definitions(connection, "payment_attempts") == {
            "pk_payment_attempts": "USING btree (id) UNIQUE",
            "ix_payment_attempts_order_id": "USING btree (order_id)",
            "uq_payment_attempts_one_paid_per_payment": (
                "USING btree (payment_id) WHERE (payment_id IS NOT NULL) UNIQUE"
            ),
        }


def test_downgrade_to_0001_drops_keys_and_audit_trail_and_keeps_payments_and_orders(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url, "0002")
    add_order_and_payment(scratch_engine)
    kept_before = {table: table_shape(scratch_engine, table) for table in ("orders", "payments")}
    ours_before = {
        table: table_shape(scratch_engine, table)
        for table in ("idempotency_keys", "payment_attempts")
    }
    assert all(len(shape.rows) == 1 for shape in ours_before.values())

    migrations.downgrade(scratch_url, "0001")

    assert table_names(scratch_engine) == {"orders", "payments", VERSION_TABLE}
    assert {table: table_shape(scratch_engine, table) for table in kept_before} == kept_before
    assert recorded_versions(scratch_engine) == ["0001"]

    migrations.upgrade(scratch_url, "0002")

    assert {table: table_shape(scratch_engine, table) for table in kept_before} == kept_before
    again = {table: table_shape(scratch_engine, table) for table in ours_before}
    assert again == {table: replace(shape, rows=()) for table, shape in ours_before.items()}
    assert recorded_versions(scratch_engine) == ["0002"]


def test_upgrade_records_the_head_in_its_own_version_table_not_alembic_version(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    assert VERSION_TABLE == "payment_alembic_version"
    assert table_names(scratch_engine) == {
        "orders",
        "payments",
        "idempotency_keys",
        "payment_attempts",
        "outbox_events",
        "refunds",
        "refund_attempts",
        "payment_alembic_version",
    }
    assert recorded_versions(scratch_engine) == [migrations.head()]


def test_a_second_upgrade_changes_neither_the_schema_nor_the_rows_nor_the_version(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)
    add_order_and_payment(scratch_engine)
    before = {table: table_shape(scratch_engine, table) for table in table_names(scratch_engine)}

    migrations.upgrade(scratch_url)

    after = {table: table_shape(scratch_engine, table) for table in table_names(scratch_engine)}
    assert after == before
    assert recorded_versions(scratch_engine) == [migrations.head()]


def test_every_revision_goes_up_down_and_up_again(scratch_url: URL, scratch_engine: Engine) -> None:
    for revision, previous in revisions_oldest_first():
        migrations.upgrade(scratch_url, revision)
        shapes = {
            table: table_shape(scratch_engine, table) for table in table_names(scratch_engine)
        }

        migrations.downgrade(scratch_url, previous)
        migrations.upgrade(scratch_url, revision)

        again = {table: table_shape(scratch_engine, table) for table in table_names(scratch_engine)}
        assert again == shapes
        assert recorded_versions(scratch_engine) == [revision]


def test_downgrade_to_base_drops_every_table_of_ours_and_leaves_orders_and_its_rows(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)
    add_order_and_payment(scratch_engine)
    orders_before = table_shape(scratch_engine, "orders")

    migrations.downgrade(scratch_url, "base")

    assert table_names(scratch_engine) == {"orders", VERSION_TABLE}
    assert table_shape(scratch_engine, "orders") == orders_before
    assert [row[2] for row in orders_before.rows] == [Decimal("10.00"), Decimal("20.00")]
    assert recorded_versions(scratch_engine) == []


def test_upgrade_over_the_order_services_orders_leaves_it_exactly_as_it_was(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    create_orders_as_the_order_service(scratch_engine)
    orders_before = table_shape(scratch_engine, "orders")
    their_versions_before = table_shape(scratch_engine, "alembic_version")

    migrations.upgrade(scratch_url)

    assert table_shape(scratch_engine, "orders") == orders_before
    assert len(orders_before.rows) == 3
    assert table_shape(scratch_engine, "alembic_version") == their_versions_before
    assert "payments" in table_names(scratch_engine)
    with scratch_engine.connect() as connection:
        foreign_keys = {
            definition
            for _, kind, definition in table_constraints(connection, "payments")
            if kind == "f"
        }
    assert foreign_keys == {"FOREIGN KEY (order_id) REFERENCES orders(id)"}
    assert recorded_versions(scratch_engine) == [migrations.head()]


@pytest.mark.parametrize("missing", ["status", "total_price", "paid_at"])
def test_upgrade_over_orders_without_a_required_column_fails_naming_it_and_writes_nothing(
    scratch_url: URL, scratch_engine: Engine, missing: str
) -> None:
    create_orders_as_the_order_service(
        scratch_engine,
        f"""
        CREATE TABLE orders (
          id SERIAL PRIMARY KEY, user_id INTEGER NOT NULL,
          status VARCHAR(20) NOT NULL DEFAULT 'pending',
          total_price NUMERIC(10, 2) NOT NULL DEFAULT 5.00, paid_at TIMESTAMP NULL
        );
        ALTER TABLE orders DROP COLUMN {missing};
        INSERT INTO orders (user_id) VALUES (1);
        """,
    )
    orders_before = table_shape(scratch_engine, "orders")

    with pytest.raises(RuntimeError, match=rf"orders\W+lacks[^;]*\b{missing}\b"):
        migrations.upgrade(scratch_url)

    assert table_names(scratch_engine) <= {"orders", VERSION_TABLE}
    assert recorded_versions(scratch_engine) == []
    assert table_shape(scratch_engine, "orders") == orders_before


def test_the_outbox_tells_each_payment_made_before_it_once_as_the_service_would(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url, "0002")
    add_order_and_payment(scratch_engine)

    migrations.upgrade(scratch_url, "0003")

    with scratch_engine.connect() as connection:
        rows = connection.execute(
            text("SELECT event_id, type, subject, payment_id, body, status FROM outbox_events")
        ).all()
    [(event_id, type_, subject, payment_id, body, status)] = rows
    assert (type_, subject, payment_id, status) == ("payment.succeeded", "2", 1, "pending")
    assert json.loads(body) == {
        "specversion": "1.0",
        "id": str(event_id),
        "source": "/payment-service",
        "type": "payment.succeeded",
        "subject": "2",
        "time": "2026-11-26T10:15:00.000000Z",
        "datacontenttype": "application/json",
        "data": {
            "order_id": 2,
            "payment_id": 1,
            "amount": "20.00",
            "created_at": "2026-11-26T10:15:00.000000Z",
        },
    }

    migrations.downgrade(scratch_url, "0002")

    assert "outbox_events" not in table_names(scratch_engine)
    assert table_shape(scratch_engine, "payments").rows


def test_the_migrated_schema_is_the_one_the_service_declares_in_tables_py(
    scratch_url: URL, scratch_engine: Engine
) -> None:
    migrations.upgrade(scratch_url)

    with scratch_engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "include_name": lambda name, kind, _: name != VERSION_TABLE,
            },
        )
        assert compare_metadata(context, metadata) == []
