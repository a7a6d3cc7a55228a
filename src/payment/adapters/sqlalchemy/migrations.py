"""Running the alembic migrations from code, with the service's own settings."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

import payment

VERSION_TABLE = "payment_alembic_version"
"""Not ``alembic_version``: the order service may keep its own migrations in the same database."""


def migrations_folder() -> Path:
    """The alembic scripts: inside the installed package, or at the root of a checkout."""
    package = Path(payment.__file__).resolve().parent
    for candidate in (package / "migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations folder is missing from this installation")


def alembic_config(url: URL | None = None) -> Config:
    """A config for the migrations; ``url`` overrides the settings' database."""
    config = Config()
    config.set_main_option("script_location", str(migrations_folder()))
    config.attributes["database_url"] = url
    return config


def upgrade(url: URL | None = None, revision: str = "head") -> list[str]:
    """Migrate to ``revision``; the revisions applied, oldest first (none when already there)."""
    config = alembic_config(url)
    applied: list[str] = []
    config.attributes["applied"] = applied
    command.upgrade(config, revision)
    return applied


def head() -> str:
    """The latest revision."""
    return str(ScriptDirectory.from_config(alembic_config()).get_current_head())


def downgrade(url: URL | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
