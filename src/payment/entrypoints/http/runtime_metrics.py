"""The process and the interpreter, as Prometheus's client shows them by default (``process_*``,
``python_info``, ``python_gc_*``), also when several workers share one metrics folder.

With one process, the client's own collectors are used as they are. With several workers, a
scrape is answered by one of them and the client's collectors would show that one alone:

- ``process_*`` (memory, CPU time, open files, start time) are read at the scrape, by the
  worker answering it, from ``/proc`` for every live worker, each with a ``pid`` label. A
  worker is one that has written to the shared folder and is a child of the same parent (a
  pid reused by an unrelated process is left out); one that has died is no longer shown, and
  its live gauges (the pool's) are dropped from the sums (``forget_dead_workers``).
- ``python_gc_*`` cannot be read from another process: each worker adds its collector's
  counts to counters in the shared folder every ``GC_PUBLISH_SECONDS`` (and the one answering a
  scrape just before it), so the totals are over all workers, those since replaced included,
  and at most that many seconds old.
- ``python_info`` is the same for every worker: the answering one's.

Linux only, like the client's process collector (``/proc``); elsewhere ``process_*`` is absent.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import mark_process_dead

GC_PUBLISH_SECONDS = 5.0
_PID_OF_FILE = re.compile(r"_(\d+)\.db$")
_PROC = "/proc"


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid``, or None when it is gone (or ``/proc`` is absent)."""
    try:
        with open(os.path.join(_PROC, str(pid), "stat"), "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[-1].split()
        return int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def _writers(folder: str) -> set[int]:
    """The pids that have written to ``folder``."""
    try:
        names = os.listdir(folder)
    except OSError:
        names = []
    return {int(m.group(1)) for name in names if (m := _PID_OF_FILE.search(name))}


def live_workers(folder: str) -> list[int]:
    """The pids of the live workers sharing ``folder``, this one first."""
    me = os.getpid()
    parent = os.getppid()
    return [me, *sorted(pid for pid in _writers(folder) - {me} if _parent_of(pid) == parent)]


def forget_dead_workers(folder: str) -> None:
    """Drop the live gauges (``livesum``: the pool's) of the workers gone, as the client asks a
    server to do when a worker exits (``mark_process_dead``), which uvicorn gives no hook for:
    otherwise a replaced worker's last pool figures would stay in the sums. Their counters and
    histograms stay: the counts they made still happened."""
    for pid in _writers(folder) - set(live_workers(folder)):
        mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]


class WorkerProcesses:
    """``process_*`` of each live worker sharing the folder, labelled by ``pid``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for pid in live_workers(self.folder):
            label = str(pid)
            one = ProcessCollector(pid=lambda label=label: label, registry=None)  # type: ignore[misc]
            for family in one.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    target.add_sample(sample.name, {**sample.labels, "pid": label}, sample.value)
        return list(merged.values())


class WorkerGarbageCollection:
    """This worker's ``python_gc_*`` counts, added to counters the workers share. The names,
    help and labels are those of the client's ``GCCollector``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ("generation",)
        self._counters = (
            Counter(
                "python_gc_objects_collected",
                "Objects collected during gc",
                labels,
                registry=registry,
            ),
            Counter(
                "python_gc_objects_uncollectable",
                "Uncollectable objects found during GC",
                labels,
                registry=registry,
            ),
            Counter(
                "python_gc_collections",
                "Number of times this generation was collected",
                labels,
                registry=registry,
            ),
        )
        self._published: dict[tuple[int, int], int] = {}

    def publish(self) -> None:
        """Add what the collector counted since the last time."""
        for generation, stats in enumerate(gc.get_stats()):
            counts = (stats["collected"], stats["uncollectable"], stats["collections"])
            for which, (counter, count) in enumerate(zip(self._counters, counts, strict=True)):
                grown = count - self._published.get((generation, which), 0)
                if grown > 0 or (generation, which) not in self._published:
                    counter.labels(str(generation)).inc(grown)
                    self._published[(generation, which)] = count
