"""The README and docs/ checked against what they describe, without a server: links lead
somewhere, every setting is in a table with its default, every command they show is one that
works here (make targets, CLI options, compose services, chart paths), and every JSON body is
one the service reads or writes, members in its order. tests/e2e/test_documented_examples.py
runs the curls at `make run`'s address."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shlex
import tomllib
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.routing import APIRoute
from pydantic import SecretStr

from payment.adapters.settings import Settings
from payment.entrypoints import cli
from payment.entrypoints.http.body import decode_json_object, validate
from payment.entrypoints.http.events import CloudEvent
from payment.entrypoints.http.routes import router
from payment.entrypoints.http.schemas import PaymentReceipt, PayRequest
from tests.support.documentation import (
    DOCUMENTED_BASE,
    DOCUMENTS,
    ROOT,
    Block,
    Command,
    blocks,
    commands,
)

README_MOST_LINES = 120
ALL_DOCUMENTS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
_ALLOWED_ELSEWHERE = {"git", "openssl", "time"}
"""Commands of other tools that the documents show and that need no check of ours."""


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()

    assert len(lines) <= README_MOST_LINES


def _anchor(heading: str) -> str:
    """The anchor a heading gets on a rendered page (GitHub's rule)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {
        _anchor(line.lstrip("#"))
        for line in path.read_text().splitlines()
        if re.match(r"^#{1,6} ", line)
    }


@pytest.mark.parametrize("document", ALL_DOCUMENTS)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document: str) -> None:
    source = ROOT / document
    broken = []
    for target in _LINK.findall(source.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        path_text, _, anchor = target.partition("#")
        path = (source.parent / path_text).resolve() if path_text else source
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(target)

    assert broken == [], f"{document}: links that lead nowhere: {broken}"


def _documented_defaults() -> dict[str, str]:
    """Each setting's row in a table of docs/: its name and its default, as written."""
    rows: dict[str, str] = {}
    for document in ALL_DOCUMENTS:
        for line in (ROOT / document).read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if line.startswith("| `") and len(cells) >= 3:
                rows.setdefault(cells[0].strip("`"), cells[1].strip("`"))
    return rows


def _same_default(written: str, default: object) -> bool:
    if default is None:
        return written == "unset"
    if isinstance(default, SecretStr):
        return written == default.get_secret_value()
    if isinstance(default, bool):
        return written == str(default).lower()
    if isinstance(default, int | float):
        try:
            return Decimal(written) == Decimal(str(default))
        except ArithmeticError:
            return False
    return written == str(default)


def test_every_setting_is_in_a_table_of_the_docs_with_its_default() -> None:
    documented = _documented_defaults()

    missing = [name.upper() for name in Settings.model_fields if name.upper() not in documented]
    wrong = {
        name.upper(): documented[name.upper()]
        for name, field in Settings.model_fields.items()
        if name.upper() in documented and not _same_default(documented[name.upper()], field.default)
    }

    assert missing == [], "settings no table of docs/ lists"
    assert wrong == {}, "defaults the docs give wrong"


def _makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.MULTILINE))


def _compose_services() -> set[str]:
    return set(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"])


def _route_patterns() -> list[re.Pattern[str]]:
    paths = [route.path for route in router.routes if isinstance(route, APIRoute)]
    paths += ["/docs", "/redoc", "/openapi.json"]
    return [re.compile("^" + re.sub(r"\{\w+\}", r"[^/]+", path) + "$") for path in paths]


def _cli_refusal(argv: list[str]) -> str | None:
    """Why the CLI refuses ``argv``, or None when it takes it."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.build_parser().parse_args(argv)
        except SystemExit as exit_:
            return None if exit_.code == 0 else err.getvalue().strip()
    return None


def _curl_problem(argv: list[str]) -> str | None:
    url = next(arg for arg in argv if arg.startswith("http"))
    path = "/" + url.split("://", 1)[1].partition("/")[2]
    if not any(pattern.match(path) for pattern in _route_patterns()):
        return f"no route {path}"
    if "-d" not in argv:
        return None
    headers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]
    if "Content-Type: application/json" not in headers:
        return "a body sent without Content-Type: application/json"
    validate(PayRequest, decode_json_object(argv[argv.index("-d") + 1].encode()))
    return None


def _docker_problem(argv: list[str]) -> str | None:
    if argv[1] == "compose":
        named = [arg for arg in argv[3:] if not arg.startswith("-")]
        unknown = [name for name in named[:1] if name not in _compose_services()]
        return f"no compose service {unknown}" if unknown else None
    if argv[1] == "build":
        return None if (ROOT / "Dockerfile").exists() else "no Dockerfile"
    if argv[1] == "run":
        image = next(arg for arg in argv[2:] if arg.startswith("payment-service:"))
        if image != f"payment-service:{version('payment-service')}":
            return f"the image {image} is not of this version"
        rest = argv[argv.index(image) + 1 :]
        return _cli_refusal(rest[1:]) if rest else None
    return f"docker {argv[1]} is not checked"


def command_problem(command: Command) -> str | None:
    """Why ``command`` would not work on a clone of this repository, or None."""
    if command.text.startswith("export "):
        name = command.text.removeprefix("export ").split("=")[0]
        known = name.lower() in Settings.model_fields
        return None if known else f"{name} is no setting"
    argv = shlex.split(command.text, comments=True)
    while argv and _ASSIGNMENT.match(argv[0]):
        argv.pop(0)
    if not argv:
        return None
    head = argv[0]
    if head == "make":
        unknown = [arg for arg in argv[1:] if "=" not in arg and arg not in _makefile_targets()]
        return f"no make target {unknown}" if unknown else None
    if head == "curl":
        return None if DOCUMENTED_BASE in command.text else _curl_problem(argv)
    if head in ("payment-service", ".venv/bin/payment-service"):
        return _cli_refusal(argv[1:])
    if head == "docker-compose":
        return "docker-compose (v1) has reached its end of life: docker compose"
    if head == "docker":
        return _docker_problem(argv)
    if head == "helm" and argv[1] in ("install", "upgrade"):
        return None if (ROOT / argv[3] / "Chart.yaml").exists() else f"no chart at {argv[3]}"
    if head == ".venv/bin/pytest":
        markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
        declared = {m.split(":")[0] for m in markers["ini_options"]["markers"]}
        marker = argv[argv.index("-m") + 1] if "-m" in argv else None
        return None if marker in (None, *declared) else f"no marker {marker}"
    if head == ".venv/bin/python" and argv[1] == "-m":
        return None if (ROOT / argv[2]).is_dir() else f"no module {argv[2]}"
    if head in _ALLOWED_ELSEWHERE:
        return None
    return "a command these checks do not know: check it here"


SHELL_COMMANDS = [command for document in DOCUMENTS for command in commands(document)]


@pytest.mark.parametrize("command", SHELL_COMMANDS, ids=str)
def test_every_shell_command_of_the_documents_works_on_a_clone(command: Command) -> None:
    assert command_problem(command) is None


def _json_problem(block: Block) -> str | None:
    members = json.loads(block.text)
    if set(members) <= {"order_id", "amount"}:
        validate(PayRequest, decode_json_object(block.text.encode()))
        return None
    if members.get("message") == "Payment successful":
        written = PaymentReceipt.model_validate(members).model_dump(mode="json")
        return None if list(written) == list(members) else f"members in {list(written)} order"
    if "logger" in members:
        missing = {"time", "level", "logger", "message"} - set(members)
        return f"a log line without {missing}" if missing else None
    if members.get("specversion") == "1.0":  # an event, as GET /events/{id} documents it
        CloudEvent.model_validate(members)
        return None
    return "a JSON example these checks do not know: check it here"


JSON_BLOCKS = [b for d in DOCUMENTS for b in blocks(d) if b.language == "json"]


@pytest.mark.parametrize("block", JSON_BLOCKS, ids=str)
def test_every_json_example_is_a_body_the_service_reads_or_writes(block: Block) -> None:
    assert _json_problem(block) is None


@pytest.mark.parametrize(
    "block", [b for d in DOCUMENTS for b in blocks(d) if b.language == "yaml"], ids=str
)
def test_every_yaml_example_parses(block: Block) -> None:
    assert yaml.safe_load(block.text)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_start_up_lines_shown_name_the_fields_serve_logs() -> None:
    [shown] = [
        line
        for document in DOCUMENTS
        for block in blocks(document)
        if block.language == "text"
        for line in block.text.splitlines()
        if " serving  " in line
    ]
    records = _Records()
    logger = logging.getLogger("payment.startup")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        cli.announce(Settings(), mode="serving", host="127.0.0.1", port=9000, workers=2)
    finally:
        logger.removeHandler(records)
        logger.setLevel(logging.NOTSET)

    [record] = records.records
    fields: dict[str, Any] = record.__dict__["fields"]
    assert re.findall(r"(\w+)=", shown) == list(fields)
    assert shown.split()[1:4] == record.getMessage().split()
