"""What a database holds, read from PostgreSQL's catalogue, for comparing before and after."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from payment.adapters.sqlalchemy.migrations import VERSION_TABLE, alembic_config

Column = tuple[str, str, bool, str | None]
"""name, type as PostgreSQL prints it, NOT NULL, default expression."""


@dataclass(frozen=True)
class TableShape:
    """Everything about a table that a migration could change, its rows included."""

    columns: tuple[Column, ...]
    constraints: frozenset[tuple[str, str, str]]
    indexes: frozenset[tuple[str, str]]
    comment: str | None
    rows: tuple[tuple[Any, ...], ...]


def revisions_oldest_first() -> list[tuple[str, str]]:
    """Each revision with the one it follows ("base" for the first)."""
    script = ScriptDirectory.from_config(alembic_config())
    return [
        (revision.revision, str(revision.down_revision or "base"))
        for revision in reversed(list(script.walk_revisions("base", "heads")))
    ]


def table_names(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(
            connection.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            ).scalars()
        )


def columns(connection: Connection, table: str) -> tuple[Column, ...]:
    rows = connection.execute(
        text(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid)
            FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = to_regclass(:table) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """
        ),
        {"table": table},
    )
    return tuple((row[0], row[1], row[2], row[3]) for row in rows)


def constraints(connection: Connection, table: str) -> frozenset[tuple[str, str, str]]:
    """name, kind and definition of each constraint. PostgreSQL 18 also lists NOT NULL ones."""
    rows = connection.execute(
        text(
            "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = to_regclass(:table)"
        ),
        {"table": table},
    )
    return frozenset((row[0], row[1], row[2]) for row in rows)


def table_constraints(connection: Connection, table: str) -> frozenset[tuple[str, str, str]]:
    """The constraints of every server version alike: NOT NULL ones left out."""
    return frozenset(c for c in constraints(connection, table) if c[1] != "n")


def indexes(connection: Connection, table: str) -> frozenset[tuple[str, str]]:
    rows = connection.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE schemaname = current_schema() AND tablename = :table"
        ),
        {"table": table},
    )
    return frozenset((row[0], row[1]) for row in rows)


def table_shape(engine: Engine, table: str) -> TableShape:
    with engine.connect() as connection:
        comment = connection.execute(
            text("SELECT obj_description(to_regclass(:table), 'pg_class')"), {"table": table}
        ).scalar_one()
        rows = connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
        return TableShape(
            columns=columns(connection, table),
            constraints=constraints(connection, table),
            indexes=indexes(connection, table),
            comment=comment,
            rows=tuple(tuple(row) for row in rows),
        )


def recorded_versions(engine: Engine) -> list[str]:
    """The revisions in the service's version table; empty when there is no such table."""
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT to_regclass(:table) IS NOT NULL"), {"table": VERSION_TABLE}
        ).scalar_one()
        if not exists:
            return []
        return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
