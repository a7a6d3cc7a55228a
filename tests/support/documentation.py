"""The examples of the README and docs/, read out of their fenced blocks.

A shell block (```sh) is either a list of commands, or a session: ``$ command`` lines, each
followed by what it prints (up to a blank line or the next ``$``). A line ending in ``\\`` goes
on on the next. A block after one that exports ``PAYMENT_API_KEYS`` in the same document runs
with API keys on. Other blocks are kept with their language (json, prometheus, yaml, text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = (
    "README.md",
    "docs/api.md",
    "docs/retrying.md",
    "docs/refunds.md",
    "docs/events.md",
    "docs/operations.md",
    "docs/deployment.md",
    "docs/performance.md",
    "docs/architecture.md",
)
"""The documents whose examples are run or checked, in the order a reader meets them."""
DOCUMENTED_BASE = "http://127.0.0.1:8000"
"""Where the examples reach the service: `make run`'s address."""
VOLATILE = frozenset({"created_at", "time", "request_id"})
"""Members whose value differs from one run to the next: only their presence is compared."""
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass(frozen=True, slots=True)
class Command:
    document: str
    line: int
    text: str
    shown: str | None
    """What the document shows it prints; None when it shows nothing."""
    keyed: bool

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


@dataclass(frozen=True, slots=True)
class Block:
    document: str
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line} ({self.language})"


def blocks(document: str) -> list[Block]:
    found: list[Block] = []
    lines = (ROOT / document).read_text().splitlines()
    start: int | None = None
    language = ""
    for number, line in enumerate(lines, start=1):
        fence = _FENCE.match(line)
        if fence is None:
            continue
        if start is None:
            start, language = number, fence[2]
        else:
            indent = len(fence[1])
            body = [text[indent:] for text in lines[start : number - 1]]
            found.append(Block(document, start, language, "\n".join(body)))
            start = None
    return found


def commands(document: str) -> list[Command]:
    """The shell commands of ``document``, in order."""
    found: list[Command] = []
    keyed = False
    for block in blocks(document):
        if block.language not in ("sh", "console", "shell"):
            continue
        block_commands = _commands_of(block, keyed)
        found += block_commands
        keyed = keyed or any(c.text.startswith("export PAYMENT_API_KEYS=") for c in block_commands)
    return found


def _commands_of(block: Block, keyed: bool) -> list[Command]:
    lines = _joined(block.text.splitlines())
    session = any(text.startswith("$ ") for _, text in lines)
    found: list[Command] = []
    if not session:
        return [
            Command(block.document, block.line + offset + 1, text, None, keyed)
            for offset, text in lines
            if text.strip() and not text.lstrip().startswith("#")
        ]
    current: tuple[int, str] | None = None
    shown: list[str] = []
    for offset, text in [*lines, (len(lines), "$ ")]:
        if text.startswith("$ ") or not text.strip():
            if current is not None:
                output = "\n".join(shown) if shown else None
                found.append(
                    Command(block.document, block.line + current[0] + 1, current[1], output, keyed)
                )
            current = (offset, text[2:].strip()) if text.strip() not in ("", "$") else None
            shown = []
        elif current is not None:
            shown.append(text)
    return found


def _joined(lines: list[str]) -> list[tuple[int, str]]:
    """Lines with their continuations (a trailing backslash) joined, and where each began."""
    joined: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, line in enumerate(lines):
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (offset, line.rstrip())
        if pending[1].endswith("\\"):
            pending = (pending[0], pending[1][:-1].rstrip())
            continue
        joined.append(pending)
        pending = None
    if pending is not None:
        joined.append(pending)
    return joined


def same_json(shown: Any, seen: Any, where: str = "") -> list[str]:
    """How ``seen`` differs from ``shown``: members in the same order with the same values,
    but for the volatile members, which need only be there."""
    if isinstance(shown, dict) and isinstance(seen, dict):
        if list(shown) != list(seen):
            return [f"{where or '/'}: members {list(seen)}, the document shows {list(shown)}"]
        differences: list[str] = []
        for name, value in shown.items():
            if name not in VOLATILE:
                differences += same_json(value, seen[name], f"{where}/{name}")
        return differences
    if isinstance(shown, list) and isinstance(seen, list) and len(shown) == len(seen):
        differences = []
        for index, (one, other) in enumerate(zip(shown, seen, strict=True)):
            differences += same_json(one, other, f"{where}/{index}")
        return differences
    return [] if shown == seen else [f"{where or '/'}: {seen!r}, the document shows {shown!r}"]


def parsed_output(text: str) -> Any:
    """The JSON a command prints, written over several lines in the document or not."""
    return json.loads(text.replace("\n", ""))
