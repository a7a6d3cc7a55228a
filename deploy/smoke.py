"""The container smoke test (`make smoke-image`).

Builds the image with buildah on a base made from Debian's packages (deploy/base-image.sh),
runs it with podman against a PostgreSQL on loopback, migrates with it, pays an order over
HTTP, and checks what the image promises: an unprivileged user, no compiler, a read-only root
file system, a health check, a clean stop on SIGTERM, no secret in its logs. Its relay
(`payment-service relay`, as the chart and the compose file run it) then delivers the
payment's event, signed, to a webhook receiver on loopback. Then it pays
again through PgBouncer in transaction mode (PAYMENT_DB_TRANSACTION_POOLING=true).

Exit status: 0 when every step passed; 1 when the image or the service failed one; 3 when
this machine cannot build or run images at all (the reason is printed), or 0 then with
`--if-unable=pass`, which `.ci/run` gives so that it reports the reason and goes on.

SMOKE_DATABASE_URL names the PostgreSQL (default: the one on 127.0.0.1:5432); the test makes
a database of its own there and drops it afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import pwd
import queue
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/payment-service:smoke"
DATABASE = f"payment_smoke_{os.getpid()}"  # two runs on one server never meet
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Each command, and the Debian package that brings it. runc: where crun cannot start a
# container (cgroups v1 in hybrid mode, as on some sandboxed machines), runc can.
TOOLS = {
    "buildah": "buildah",
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "pgbouncer": "pgbouncer",
}
# Podman's default limits for a root container exceed what some sandboxes let a process set.
LIMITS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
# The container runs as the chart runs it: read-only root, no capabilities, no new privileges.
HARDENED = (
    "--network=host",
    "--read-only",
    "--tmpfs=/tmp:rw,size=64m",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CANNOT = 3


class CannotRunImages(Exception):
    """This machine cannot build or run images: not a fault of the image."""


class SmokeFailed(Exception):
    """The image or the service failed a step."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.smoke", description=__doc__)
    parser.add_argument(
        "--if-unable",
        choices=("fail", "pass"),
        default="fail",
        help="the exit status when this machine cannot build or run images: 3, or 0",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        _ensure_tools()
        admin_url = os.environ.get("SMOKE_DATABASE_URL", DEFAULT_DATABASE_URL)
        _check_database(admin_url)
        base = _base_image()
        runtime = _working_runtime(base)
        _build(base, runtime)
        _inspect(runtime)
        with _fresh_database(admin_url) as database:
            _migrate(runtime, database)
            [order_id] = _add_orders(database, "49.90")
            with _served(runtime, database) as service:
                _pay(service, order_id, "49.90")
            _relay(runtime, database, order_id)
            _verify_and_purge(runtime, database)
            with _pgbouncer(database) as pooled:
                _pay_through(runtime, pooled, orders=_add_orders(database, *["10.00"] * 20))
                _verify_and_purge(runtime, pooled)
    except CannotRunImages as reason:
        _say(f"SKIPPED, this machine cannot run the smoke test: {reason}")
        return 0 if args.if_unable == "pass" else CANNOT
    except SmokeFailed as failure:
        _say(f"FAILED: {failure}")
        return 1
    _say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


def _say(line: str) -> None:
    print(f"smoke: {line}", flush=True)  # noqa: T201 - this command's report


def _run(
    args: Sequence[str], *, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(  # noqa: S603 - fixed tools, no shell
            list(args), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SmokeFailed(f"`{' '.join(args[:4])} ...` took longer than {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise SmokeFailed(
            f"`{' '.join(args[:4])} ...` exited {result.returncode}:\n{_tail(result)}"
        )
    return result


def _tail(result: subprocess.CompletedProcess[str], lines: int = 25) -> str:
    return "\n".join((result.stdout + result.stderr).strip().splitlines()[-lines:])


# -- the machine ----------------------------------------------------------------------------


def _ensure_tools() -> None:
    """buildah, podman and mmdebstrap, from the system's packages when missing and we may."""
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise CannotRunImages(
            f"{', '.join(missing)} missing, and installing them needs root and apt-get"
        )
    _say(f"installing {' '.join(missing)} (apt-get)")
    install = ["apt-get", "install", "-y", "-q", *missing]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([install], [["apt-get", "update", "-q"], install]):
        if all(
            subprocess.run(step, env=environment, capture_output=True, check=False).returncode == 0  # noqa: S603
            for step in attempt
        ):
            return
    raise CannotRunImages(f"apt-get could not install {' '.join(missing)}")


def _check_database(admin_url: str) -> None:
    try:
        psycopg.connect(admin_url, connect_timeout=3).close()
    except psycopg.Error as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "no answer"
        raise CannotRunImages(
            f"no PostgreSQL answers at {make_url(admin_url).render_as_string()} ({first_line});"
            " set SMOKE_DATABASE_URL"
        ) from None


def _base_image() -> str:
    """The Debian base, built once per codename and reused."""
    codename = _os_release().get("VERSION_CODENAME", "")
    if not codename:
        raise CannotRunImages("/etc/os-release names no Debian codename to build a base from")
    tag = f"localhost/payment-base:{codename}"
    if _run(["podman", "image", "exists", tag], check=False).returncode == 0:
        _say(f"base image {tag}: reused (`podman rmi {tag}` to rebuild it)")
        return tag
    began = time.monotonic()
    built = _run([str(ROOT / "deploy" / "base-image.sh"), tag], check=False, timeout=900)
    if built.returncode != 0:
        raise CannotRunImages(f"the Debian base could not be built:\n{_tail(built)}")
    _say(f"base image {tag}: built from Debian's packages in {time.monotonic() - began:.0f} s")
    return tag


def _os_release() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    return {key: value.strip('"') for key, value in pairs}


def _working_runtime(base: str) -> list[str]:
    """Podman's default OCI runtime, else runc or crun: some sandboxes refuse one of them."""
    reasons = []
    for runtime in ([], ["--runtime", "runc"], ["--runtime", "crun"]):
        if runtime and shutil.which(runtime[1]) is None:
            continue
        tried = _run(["podman", *runtime, "run", "--rm", *LIMITS, base, "true"], check=False)
        if tried.returncode == 0:
            _say(f"runtime: {runtime[1] if runtime else 'podman default'}")
            _expect_python_3_11(runtime, base)
            return runtime
        reasons.append(f"{runtime[1] if runtime else 'default'}: {_tail(tried, 1)}")
    raise CannotRunImages("no OCI runtime starts a container here: " + "; ".join(reasons))


def _expect_python_3_11(runtime: list[str], base: str) -> None:
    """The service needs Python 3.11; the base has the Python of this machine's Debian."""
    version = _run(
        [
            "podman",
            *runtime,
            "run",
            "--rm",
            *LIMITS,
            base,
            "python3",
            "-c",
            "import sys; print('%d.%d' % sys.version_info[:2])",
        ]
    ).stdout.strip()
    if tuple(int(part) for part in version.split(".")) < (3, 11):
        raise CannotRunImages(f"the Debian base of this machine has Python {version}, not 3.11+")


# -- the image ------------------------------------------------------------------------------


def _build(base: str, runtime: list[str]) -> None:
    # Docker's format keeps the HEALTHCHECK, which OCI's image format has no place for. The
    # host's CA bundle is lent to the build (never kept in the image) so that pip trusts
    # whatever this machine trusts on its way to the package index.
    lend_ca = (
        ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.is_file() else []
    )
    build = [
        "buildah",
        "build",
        *runtime,
        *LIMITS,
        "--layers",
        "--network=host",
        "--format=docker",
        *lend_ca,
        "--build-arg",
        f"BASE={base}",
        "--tag",
        IMAGE,
        str(ROOT),
    ]
    began = time.monotonic()
    first = _run(build, check=False, timeout=1800)
    if first.returncode != 0:  # the package index may have dropped a download: once more
        _say(f"the build failed, once more (the layers built are kept):\n{_tail(first, 5)}")
        _run(build, timeout=1800)
    _say(f"built {IMAGE} with buildah in {time.monotonic() - began:.0f} s")


def _inspect(runtime: list[str]) -> None:
    config = json.loads(_run(["podman", "image", "inspect", IMAGE]).stdout)[0]
    size = int(config["Size"])
    layers = len(config["RootFS"]["Layers"])
    _say(f"image size: {size / 1_000_000:.0f} MB ({size} bytes), {layers} layers")
    user = config["Config"].get("User", "")
    if user in ("", "0", "root") or user.startswith(("0:", "root:")):
        raise SmokeFailed(f"the image runs as root (User={user!r})")
    healthcheck = config.get("Healthcheck") or config["Config"].get("Healthcheck")
    if not healthcheck or "/livez" not in " ".join(healthcheck.get("Test", [])):
        raise SmokeFailed("the image has no HEALTHCHECK on /livez")
    command = config["Config"].get("Cmd")
    if command != ["payment-service", "serve"]:
        raise SmokeFailed(f"the image's CMD is {command}, not payment-service serve")
    compilers = "gcc cc c++ g++ clang make"
    found = _run(
        [
            "podman",
            *runtime,
            "run",
            "--rm",
            *LIMITS,
            IMAGE,
            "sh",
            "-c",
            f"for c in {compilers}; do command -v $c; done; id -u",
        ]
    ).stdout.split()
    uid = found.pop()
    if found:
        raise SmokeFailed(f"the final image holds build tools: {', '.join(found)}")
    _say(
        f"runs as uid {uid} (User {user}), CMD payment-service serve, HEALTHCHECK on /livez;"
        f" none of {compilers} in the image"
    )


# -- the database ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    url: str
    transaction_pooling: bool = False
    """Reached through PgBouncer in transaction mode."""

    def environment(self) -> list[str]:
        """The database as the compose file and the chart give it: ORDER_DB_*."""
        url = make_url(self.url)
        pairs = {
            "ORDER_DB_HOST": url.host or "127.0.0.1",
            "ORDER_DB_PORT": str(url.port or 5432),
            "ORDER_DB_NAME": url.database or "",
            "ORDER_DB_USER": url.username or "postgres",
            "ORDER_DB_PASSWORD": url.password or "",
        }
        if self.transaction_pooling:
            pairs["PAYMENT_DB_TRANSACTION_POOLING"] = "true"
        return _environment(pairs)


@contextmanager
def _fresh_database(admin_url: str) -> Iterator[Database]:
    def recreate(create: bool) -> None:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
            )
            if create:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    recreate(create=True)
    url = make_url(admin_url).set(database=DATABASE)
    _say(f"database {DATABASE} made on {url.render_as_string()}")
    try:
        yield Database(url.render_as_string(hide_password=False))
    finally:
        recreate(create=False)


def _migrate(runtime: list[str], database: Database) -> None:
    for attempt in ("first", "again"):
        migrated = _one_shot(runtime, database, "migrate")
        _say(f"migrate ({attempt}): {migrated.stdout.strip()}")
    with psycopg.connect(database.url) as connection:
        row = connection.execute("SELECT version_num FROM payment_alembic_version").fetchone()
        tables = connection.execute(
            "SELECT string_agg(tablename, ', ' ORDER BY tablename) FROM pg_tables"
            " WHERE schemaname = 'public'"
        ).fetchone()
    revision = row[0] if row else None
    _say(f"the database is at revision {revision}; tables: {tables[0] if tables else ''}")


def _add_orders(database: Database, *totals: str) -> list[int]:
    with psycopg.connect(database.url) as connection:
        ids = [
            int(row[0])
            for total in totals
            for row in connection.execute(
                "INSERT INTO orders (status, total_price) VALUES ('pending', %s) RETURNING id",
                (total,),
            )
        ]
    amounts = ", ".join(dict.fromkeys(totals))
    _say(f"{len(ids)} order(s) pending: #{ids[0]}..#{ids[-1]}, totals {amounts}")
    return ids


@contextmanager
def _pgbouncer(database: Database) -> Iterator[Database]:
    """PgBouncer in transaction mode before ``database``, on a free loopback port."""
    url = make_url(database.url)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="smoke-pgbouncer-") as folder:
        config = Path(folder) / "pgbouncer.ini"
        users = Path(folder) / "users.txt"
        users.write_text(f'"{url.username}" "{url.password or ""}"\n')
        config.write_text(
            "[databases]\n"
            f"* = host={url.host} port={url.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\n"
            "pool_mode = transaction\ndefault_pool_size = 4\n"
        )
        # PgBouncer will not run as root: it drops to nobody, who must read its files.
        run_as: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            for path in (Path(folder), config, users):
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            run_as = ["--user", "nobody"]
        log = Path(folder) / "pgbouncer.log"
        with log.open("w") as output:
            bouncer = subprocess.Popen(  # noqa: S603 - a fixed tool, no shell
                [shutil.which("pgbouncer") or "pgbouncer", *run_as, str(config)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for_port(port, bouncer, log)
            version = _run(["pgbouncer", "--version"]).stdout.splitlines()[0]
            _say(f"{version} in transaction mode on 127.0.0.1:{port}, pool of 4 server connections")
            yield Database(
                url.set(port=port).render_as_string(hide_password=False), transaction_pooling=True
            )
        finally:
            bouncer.terminate()
            bouncer.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SmokeFailed(f"pgbouncer exited: {log.read_text().strip()}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SmokeFailed(f"nothing listens on port {port} after 10 s")


# -- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    base_url: str
    api_key: str
    container: str
    runtime: list[str]


@contextmanager
def _served(runtime: list[str], database: Database) -> Iterator[Service]:
    port = _free_port()
    api_key = secrets.token_urlsafe(24)
    name = f"payment-smoke-{os.getpid()}"
    settings = {"PAYMENT_PORT": str(port), "PAYMENT_WORKERS": "2", "PAYMENT_API_KEYS": api_key}
    service = Service(f"http://127.0.0.1:{port}", api_key, name, runtime)
    try:
        container = [*LIMITS, *HARDENED, *database.environment(), *_environment(settings)]
        _run(["podman", *runtime, "run", "--detach", "--name", name, *container, IMAGE])
        _wait_ready(service)
        yield service
        _stop(service)
    finally:
        _run(["podman", *runtime, "rm", "--force", "--time", "0", name], check=False)


def _environment(settings: dict[str, str]) -> list[str]:
    return [arg for name, value in settings.items() for arg in ("--env", f"{name}={value}")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(service: Service) -> None:
    began = time.monotonic()
    while time.monotonic() - began < 60:
        status, _, _ = _request(service, "GET", "/readyz")
        if status == 200:
            _say(
                f"serve (2 workers) ready on {service.base_url} in {time.monotonic() - began:.1f} s"
            )
            return
        state = _run(["podman", "inspect", "--format", "{{.State.Status}}", service.container])
        if state.stdout.strip() != "running":
            logs = _run(["podman", "logs", service.container], check=False)
            raise SmokeFailed(f"the service exited before it was ready:\n{_tail(logs)}")
        time.sleep(0.3)
    raise SmokeFailed("/readyz did not answer 200 within 60 s")


def _request(
    service: Service,
    method: str,
    path: str,
    body: object = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(  # noqa: S310 - a loopback URL of our own
        service.base_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, _lowered(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, _lowered(error.headers), error.read().decode()
    except OSError:
        return 0, {}, ""


def _lowered(headers: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _pay(service: Service, order_id: int, amount: str) -> None:
    authorized = {"Authorization": f"Bearer {service.api_key}", "Idempotency-Key": "smoke-1"}
    payment = {"order_id": order_id, "amount": amount}

    status, _, body = _request(service, "POST", "/pay", payment)
    _expect(status == 401, f"POST /pay without a key -> {status}, not 401")
    _say("POST /pay without an API key -> 401")

    status, _, body = _request(service, "POST", "/pay", payment, authorized)
    _say(f"POST /pay -> HTTP {status} {body}")
    _expect(status == 200, f"POST /pay -> {status}, not 200")
    payment_id = json.loads(body)["payment_id"]

    replay_status, replay_headers, replay_body = _request(
        service, "POST", "/pay", payment, authorized
    )
    _expect(
        (replay_status, replay_headers.get("idempotent-replayed"), replay_body)
        == (200, "true", body),
        f"the retry got {replay_status} {replay_body}, not the stored answer",
    )
    _say("POST /pay again, same Idempotency-Key -> HTTP 200, Idempotent-Replayed: true, same body")

    status, _, body = _request(service, "GET", f"/payments/{payment_id}", headers=authorized)
    _expect(status == 200, f"GET /payments/{payment_id} -> {status}, not 200")
    _say(f"GET /payments/{payment_id} -> HTTP {status}")

    status, _, metrics = _request(service, "GET", "/metrics")
    paid = [line for line in metrics.splitlines() if line.startswith("payment_decisions_total")]
    _expect(
        status == 200 and any('outcome="paid"' in line and line.endswith(" 1.0") for line in paid),
        f"/metrics -> {status}, decisions {paid}",
    )
    _say(f"GET /metrics -> HTTP {status}: {'; '.join(paid)}")

    health = _run(
        ["podman", *service.runtime, "healthcheck", "run", service.container], check=False
    )
    _expect(health.returncode == 0, f"the HEALTHCHECK failed: {_tail(health)}")
    _say("podman healthcheck run -> healthy")


def _pay_through(runtime: list[str], database: Database, *, orders: list[int]) -> None:
    """Every order paid by the image through ``database``, its first payment replayed."""
    with _served(runtime, database) as service:
        authorized = {"Authorization": f"Bearer {service.api_key}"}
        statuses = []
        for order_id in orders:
            status, _, _ = _request(
                service,
                "POST",
                "/pay",
                {"order_id": order_id, "amount": "10.00"},
                {**authorized, "Idempotency-Key": f"pooled-{order_id}"},
            )
            statuses.append(status)
        replay_status, replay_headers, _ = _request(
            service,
            "POST",
            "/pay",
            {"order_id": orders[0], "amount": "10.00"},
            {**authorized, "Idempotency-Key": f"pooled-{orders[0]}"},
        )
        _expect(statuses == [200] * len(orders), f"through PgBouncer: {statuses}")
        _expect(
            (replay_status, replay_headers.get("idempotent-replayed")) == (200, "true"),
            f"through PgBouncer, the retry got {replay_status}",
        )
        _say(
            f"through PgBouncer (PAYMENT_DB_TRANSACTION_POOLING=true): {len(orders)} x POST /pay"
            " -> HTTP 200, the retry replayed"
        )


def _stop(service: Service) -> None:
    began = time.monotonic()
    _run(["podman", *service.runtime, "stop", "--time", "30", service.container])
    state = _run(
        ["podman", "inspect", "--format", "{{.State.ExitCode}}", service.container]
    ).stdout.strip()
    printed = _run(["podman", "logs", service.container])
    logs = printed.stdout + printed.stderr
    _expect(state == "0", f"the service exited {state} on SIGTERM")
    _expect(service.api_key not in logs, "the API key appears in the service's logs")
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    _expect(
        bool(lines) and len(lines) == len(logs.strip().splitlines()),
        "the service's log lines are not all JSON",
    )
    _say(
        f"SIGTERM -> exit 0 in {time.monotonic() - began:.1f} s; {len(lines)} log lines, all JSON,"
        " no API key among them"
    )


# -- the relay ------------------------------------------------------------------------------


Delivery = tuple[dict[str, str], bytes]


@contextmanager
def _webhook_receiver() -> Iterator[tuple[str, queue.Queue[Delivery]]]:
    """A subscriber on loopback that takes every POST (204) and hands over its headers and body."""
    received: queue.Queue[Delivery] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.put((_lowered(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the smoke test reports what it received."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks", received
    finally:
        server.shutdown()
        server.server_close()


def _relay(runtime: list[str], database: Database, order_id: int) -> None:
    """The image's relay delivers the paid order's event to a webhook, signed; its probes and
    metrics answer on PAYMENT_RELAY_PORT; SIGTERM stops it with status 0, no secret logged."""
    secret = secrets.token_hex(24)
    port = _free_port()
    name = f"payment-smoke-{os.getpid()}-relay"
    relay = Service(f"http://127.0.0.1:{port}", "", name, runtime)
    with _webhook_receiver() as (url, received):
        settings = {
            "PAYMENT_WEBHOOK_URLS": url,
            "PAYMENT_WEBHOOK_SECRET": secret,
            "PAYMENT_RELAY_PORT": str(port),
            "PAYMENT_RELAY_POLL_INTERVAL_MS": "100",
        }
        # The image's HEALTHCHECK asks the server's port; the chart and compose ask the relay's.
        container = ["--no-healthcheck", *LIMITS, *HARDENED, *database.environment()]
        container += _environment(settings)
        command = ["payment-service", "relay"]
        try:
            _run(
                ["podman", *runtime, "run", "--detach", "--name", name, *container, IMAGE, *command]
            )
            began = time.monotonic()
            try:
                headers, body = received.get(timeout=60)
            except queue.Empty:
                logs = _run(["podman", "logs", name], check=False)
                raise SmokeFailed(f"no event reached the webhook in 60 s:\n{_tail(logs)}") from None
            event = json.loads(body)
            _expect(
                (event.get("type"), event.get("data", {}).get("order_id"))
                == ("payment.succeeded", order_id),
                f"the webhook got {body!r}",
            )
            fields = dict(part.split("=", 1) for part in headers["payment-signature"].split(","))
            signed = f"{fields['t']}.".encode() + body
            expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
            _expect(hmac.compare_digest(fields["v1"], expected), "the webhook's signature is wrong")
            _say(
                f"relay: payment.succeeded of order {order_id} delivered to the webhook in"
                f" {time.monotonic() - began:.1f} s, Payment-Signature verified"
            )
            _relay_probes(relay)
            _stop_relay(relay, secret)
        finally:
            _run(["podman", *runtime, "rm", "--force", "--time", "0", name], check=False)


def _relay_probes(relay: Service) -> None:
    statuses = [_request(relay, "GET", path)[0] for path in ("/livez", "/readyz")]
    _expect(statuses == [200, 200], f"the relay's /livez and /readyz -> {statuses}")
    delivered: list[str] = []
    deadline = time.monotonic() + 10
    while not delivered and time.monotonic() < deadline:  # counted once the event is marked
        _, _, metrics = _request(relay, "GET", "/metrics")
        delivered = [
            line
            for line in metrics.splitlines()
            if line.startswith("payment_outbox_delivered_total") and line.endswith(" 1.0")
        ]
        time.sleep(0.2)
    _expect(bool(delivered), "the relay's /metrics does not count the delivery")
    _say(f"relay: /livez 200, /readyz 200, /metrics: {delivered[0]}")


def _stop_relay(relay: Service, secret: str) -> None:
    began = time.monotonic()
    _run(["podman", *relay.runtime, "stop", "--time", "30", relay.container])
    state = _run(
        ["podman", "inspect", "--format", "{{.State.ExitCode}}", relay.container]
    ).stdout.strip()
    printed = _run(["podman", "logs", relay.container])
    _expect(state == "0", f"the relay exited {state} on SIGTERM")
    _expect(
        secret not in printed.stdout + printed.stderr, "the signing secret is in the relay's logs"
    )
    _say(f"relay: SIGTERM -> exit 0 in {time.monotonic() - began:.1f} s, no secret in its logs")


def _verify_and_purge(runtime: list[str], database: Database) -> None:
    """`verify` must find every invariant holding; `purge-idempotency-keys` (the chart's
    CronJob) must run, with nothing expired to delete yet."""
    for command in ("verify", "purge-idempotency-keys"):
        _say(f"{command}: {_one_shot(runtime, database, command).stdout.strip()}")


def _one_shot(
    runtime: list[str], database: Database, command: str
) -> subprocess.CompletedProcess[str]:
    """``payment-service <command>`` in a container of the image, hardened, on ``database``;
    the container is removed even when the command fails or outlasts its time."""
    name = f"payment-smoke-{os.getpid()}-{command}"
    container = ["--rm", "--name", name, "--no-healthcheck", *LIMITS, *HARDENED]
    container += database.environment()
    try:
        return _run(["podman", *runtime, "run", *container, IMAGE, "payment-service", command])
    finally:
        _run(["podman", *runtime, "rm", "--force", "--ignore", "--time", "0", name], check=False)


def _expect(condition: bool, failure: str) -> None:
    if not condition:
        raise SmokeFailed(failure)


if __name__ == "__main__":
    sys.exit(main())
