"""The documentation's examples, run: `payment-service dev` as `make run` starts it on a fresh
clone, the curl it prints, then every curl of the README and docs/ against it, in the order a
reader meets them, each answer compared with the one the document shows. Then `dev` again on
the same data, with API keys: its curl still pays, and the keyed examples run."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.e2e.server import free_port
from tests.support.documentation import (
    DOCUMENTED_BASE,
    DOCUMENTS,
    Command,
    blocks,
    commands,
    parsed_output,
    same_json,
)

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_PRINTED_CURL = re.compile(r"^\s+(curl -s .*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class DevServer:
    base_url: str
    printed_curl: str
    environment: Mapping[str, str]

    def run(self, command: str) -> str:
        """``command`` (a curl of the documents) through bash, at this server."""
        done = subprocess.run(
            ["bash", "-c", command.replace(DOCUMENTED_BASE, self.base_url)],
            env=dict(self.environment),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"{command}: exit status {done.returncode}\n{done.stderr}"
        return done.stdout


def _environment(**settings: str) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PAYMENT_", "ORDER_DB_")) and name != "DATABASE_URL"
    }
    return {**environment, "PYTHONUNBUFFERED": "1", **settings}


@contextmanager
def dev_server(data_dir: Path, log: Path, **settings: str) -> Iterator[DevServer]:
    """`payment-service dev` on a free port over ``data_dir``, until its curl is printed and
    it answers; stopped with Ctrl-C (SIGINT) after the block."""
    port = free_port()
    environment = _environment(**settings)
    script = Path(sys.executable).parent / "payment-service"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(script), "dev", "--port", str(port), "--data-dir", str(data_dir)],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        printed = _wait_until_up(process, base_url, log)
        yield DevServer(base_url, printed, environment)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _wait_until_up(process: subprocess.Popen[bytes], base_url: str, log: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    with httpx2.Client(base_url=base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            output = log.read_text(errors="replace")
            if process.poll() is not None:
                pytest.fail(f"dev exited with status {process.returncode}:\n{output}")
            printed = _PRINTED_CURL.search(output)
            if printed is not None:
                try:
                    if client.get("/livez").status_code == 200:
                        return printed[1].strip()
                except httpx2.TransportError:
                    pass
            time.sleep(0.2)
    pytest.fail(f"dev did not come up in {START_TIMEOUT_SECONDS} s:\n{log.read_text()}")


def _curls(*, keyed: bool) -> list[Command]:
    """The curls at `make run`'s address (the others are checked by tests/unit)."""
    return [
        command
        for document in DOCUMENTS
        for command in commands(document)
        if command.keyed == keyed
        and command.text.startswith("curl ")
        and DOCUMENTED_BASE in command.text
    ]


def _differences(server: DevServer, examples: list[Command]) -> list[str]:
    """Each example run in turn; how its answer differs from the one shown."""
    differences: list[str] = []
    for example in examples:
        seen = server.run(example.text)
        if example.shown is None:
            continue
        try:
            differences += [
                f"{example}\n    {d}"
                for d in same_json(parsed_output(example.shown), parsed_output(seen))
            ]
        except ValueError:
            differences.append(f"{example}\n    answered {seen!r}")
    return differences


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Where dev keeps its database, as `.payment-dev/` in a clone: a folder the database's
    own user may enter (pytest's temporary folders are closed to it)."""
    folder = Path(tempfile.mkdtemp(prefix="payment-dev-"))
    folder.chmod(0o755)
    yield folder / "payment-dev"
    shutil.rmtree(folder, ignore_errors=True)


def test_every_curl_of_the_documents_answers_as_shown_and_dev_pays_on_each_run(
    tmp_path: Path, data_dir: Path
) -> None:
    plain, keyed = _curls(keyed=False), _curls(keyed=True)
    assert plain, "no curl example found in the documents"
    assert keyed, "no example with API keys found in the documents"

    with dev_server(data_dir, tmp_path / "first.log") as server:
        # On a fresh clone, `make run` prints the README's first command, word for word.
        printed = server.printed_curl.replace(server.base_url, DOCUMENTED_BASE)
        assert printed == next(c for c in plain if c.document == "README.md").text

        differences = _differences(server, plain)
        metrics = httpx2.get(f"{server.base_url}/metrics", timeout=10).text

    assert differences == [], "\n".join(differences)
    shown_metrics = [
        line.split("{")[0].split()[0]
        for document in DOCUMENTS
        for block in blocks(document)
        if block.language == "prometheus"
        for line in block.text.splitlines()
        if line.strip()
    ]
    assert shown_metrics, "no metrics example found"
    assert [name for name in shown_metrics if name not in metrics] == []

    key = secrets.token_hex(32)
    with dev_server(data_dir, tmp_path / "second.log", PAYMENT_API_KEYS=key) as server:
        # Another run on the same data: the curl it prints pays an order still pending.
        argv = shlex.split(server.printed_curl)
        assert f"Authorization: Bearer {key}" in argv
        paid = parsed_output(server.run(server.printed_curl))
        assert paid["status"] == "succeeded", paid
        # dev runs the relay in-process: it prints the payment's event as it would deliver it.
        told = "event payment.succeeded "
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            printed_events = (tmp_path / "second.log").read_text(errors="replace")
            if f'"payment_id": {paid["payment_id"]}' in printed_events and told in printed_events:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"dev printed no event for payment {paid['payment_id']}")

        differences = _differences(server, keyed)

    assert differences == [], "\n".join(differences)
