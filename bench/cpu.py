"""CPU time spent by the service's processes and by PostgreSQL's, from ``/proc`` (Linux).

A run's CPU is what its processes used between a reading just before the load and one just
after it. The service's is the sum over its worker processes (uvicorn's master children, or
the master itself when it serves alone) of user and system time. PostgreSQL's is the sum
over the postmaster and every process it started, including the connections that ended
during the run: the kernel adds a child's times to its parent's (``cutime``, ``cstime``)
when the parent reaps it, so the postmaster's own counts carry them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import TupleRow

from bench.database import Database

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
LOOPBACK = ("localhost", "::1")
# /proc/<pid>/stat after the command's closing parenthesis: field 3 (state) is index 0.
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` from the state on; None when the process is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()


def _ticks(fields: list[str], *, reaped_children: bool) -> int:
    own = int(fields[_UTIME]) + int(fields[_STIME])
    return own + (int(fields[_CUTIME]) + int(fields[_CSTIME]) if reaped_children else 0)


def process_seconds(pids: Iterable[int]) -> float:
    """User plus system time of each of ``pids`` so far, in seconds; a process gone counts 0."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            ticks += _ticks(fields, reaped_children=False)
    return ticks / TICKS_PER_SECOND


def _comm(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def _children(parent: int) -> list[int]:
    """Every live process whose parent is ``parent``, found by a scan of /proc."""
    children = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[_PPID]) == parent:
                children.append(int(entry.name))
    return children


@dataclass(frozen=True, slots=True)
class PostgresCpu:
    """The CPU of one PostgreSQL server on this machine: its postmaster and its children."""

    postmaster: int

    def seconds(self) -> float:
        """So far, including the processes that have ended and been reaped."""
        fields = _stat(self.postmaster)
        if fields is None:
            return 0.0
        ticks = _ticks(fields, reaped_children=True)
        for child in _children(self.postmaster):
            child_fields = _stat(child)
            if child_fields is not None:
                ticks += _ticks(child_fields, reaped_children=True)
        return ticks / TICKS_PER_SECOND


def postgres_cpu(
    database: Database, connection: psycopg.Connection[TupleRow]
) -> tuple[PostgresCpu | None, str]:
    """The server behind ``connection`` when it runs on this machine and can be seen in
    /proc, with how it was found; else None and why not. Found from the process serving
    the connection (``pg_backend_pid()``): its parent is the postmaster."""
    host = database.libpq().get("host", "")
    if not (host.startswith("/") or host in LOOPBACK or host.startswith("127.")):
        return None, f"the server is not on this machine (host {host})"
    row = connection.execute("SELECT pg_backend_pid()").fetchone()
    backend = int(row[0]) if row else 0
    fields = _stat(backend)
    if fields is None or _comm(backend) != "postgres":
        return None, "the server's processes are not visible here (another PID namespace?)"
    postmaster = int(fields[_PPID])
    if _comm(postmaster) != "postgres" or not _is_ours(backend, database):
        return None, "the server's processes are not visible here (another PID namespace?)"
    return PostgresCpu(postmaster), "the postmaster and its children, from /proc"


def _is_ours(backend: int, database: Database) -> bool:
    """The process serving our connection names our database in its title, when it has one
    (``postgres: user database [local] idle``)."""
    try:
        title = (PROC / str(backend) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    if not title.startswith("postgres: "):
        return True  # update_process_title is off: nothing more to compare
    return f" {database.libpq().get('dbname', '')} " in title
