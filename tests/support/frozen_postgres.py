"""A PostgreSQL that hangs: every one of its processes stopped (SIGSTOP), as a host that stalls
(a full disk's I/O, a VM paused, memory swapped out). Connections stay open and the kernel still
accepts new ones; nothing is answered until the processes continue (SIGCONT)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@contextmanager
def frozen(data_dir: Path) -> Iterator[None]:
    """Every process of the server on ``data_dir`` stopped for the length of the block, and
    continued at its end, however the block ends."""
    postmaster = _postmaster(data_dir)
    stopped: list[int] = []
    try:
        os.kill(postmaster, signal.SIGSTOP)  # first: it forks no new process while stopped
        stopped.append(postmaster)
        for child in _children(postmaster):
            try:
                os.kill(child, signal.SIGSTOP)
            except ProcessLookupError:  # ended meanwhile
                continue
            stopped.append(child)
        yield
    finally:
        for pid in reversed(stopped):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                continue
