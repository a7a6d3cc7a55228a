"""The deployment files, checked offline (`make deploy-check`): no cluster, no container engine.

- the Dockerfile: hadolint, failing at error level;
- docker-compose.yml: the Compose specification's JSON schema, then what the schema cannot
  know: every variable given to the service is one it reads, and the database's credentials
  are the ones the service is given;
- helm/payment-service: linted strictly and rendered (install and upgrade) with the default
  values and with each file in its ci/ folder; every rendered manifest validated against
  Kubernetes' own schemas (`kubernetes-validate --strict`) for the oldest Kubernetes the chart
  supports and the newest the validator knows; then the rules the chart promises (non-root,
  read-only root, no privilege escalation, no capabilities, probes on the served port, the
  migration as a pre-install/pre-upgrade hook, settings the service knows); and values that
  the chart's schema must refuse.

Exit status 1 when any check fails; every failure is listed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate.utils
import yaml
from pydantic import ValidationError

from payment.adapters.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(sys.executable).parent
CHART = ROOT / "helm" / "payment-service"
RELEASE, NAMESPACE = "payment-service", "payments"
# The chart's kubeVersion floor, and the newest Kubernetes the validator knows.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
SETTINGS = {name.upper() for name in Settings.model_fields}
SECRET_SETTINGS = {"ORDER_DB_PASSWORD", "DATABASE_URL", "PAYMENT_API_KEYS"}
REFUSED_VALUES: dict[str, dict[str, Any]] = {
    "replicaCount: two": {"replicaCount": "two"},
    "config.workers: 0": {"config": {"workers": 0}},
    "config.logLevel: TRACE": {"config": {"logLevel": "TRACE"}},
    "an unknown key": {"replicas": 3},
    "a grace period shorter than the shutdown timeout": {"terminationGracePeriodSeconds": 10},
    "an API key of 8 characters": {"apiKeys": {"keys": ["12345678"]}},
}

Manifest = dict[str, Any]


@dataclass
class Report:
    failures: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(f"deploy-check: {line}", flush=True)  # noqa: T201 - this command's report

    def expect(self, condition: bool, failure: str) -> bool:
        if not condition:
            self.failures.append(failure)
            self.say(f"FAILED: {failure}")
        return condition


def main() -> int:
    report = Report()
    check_dockerfile(report)
    check_compose(report)
    check_chart(report)
    if report.failures:
        report.say(f"{len(report.failures)} check(s) failed")
        return 1
    report.say("every check passed")
    return 0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=ROOT)  # noqa: S603


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr).strip()


# -- Dockerfile -----------------------------------------------------------------------------


def check_dockerfile(report: Report) -> None:
    linted = _run(str(TOOLS / "hadolint"), "--failure-threshold", "error", "Dockerfile")
    findings = _output(linted)
    if report.expect(linted.returncode == 0, f"hadolint: errors in the Dockerfile\n{findings}"):
        notes = f" (notes: {findings})" if findings else ", nor anything else"
        report.say(f"Dockerfile: hadolint finds no error{notes}")


# -- docker-compose.yml ---------------------------------------------------------------------


def check_compose(report: Report) -> None:
    validated = _run(
        str(TOOLS / "check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        "docker-compose.yml",
    )
    report.expect(
        validated.returncode == 0,
        f"docker-compose.yml against the Compose specification:\n{_output(validated)}",
    )
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    ours = {
        name: s
        for name, s in services.items()
        if s.get("image") == services["payment-service"]["image"]
    }
    for name, service in ours.items():
        unknown = set(service.get("environment", {})) - SETTINGS
        report.expect(
            not unknown, f"compose: {name} is given variables it never reads: {sorted(unknown)}"
        )
    database = services["order-db"]["environment"]
    given = services["payment-service"]["environment"]
    report.expect(
        (database["POSTGRES_DB"], database["POSTGRES_USER"], database["POSTGRES_PASSWORD"])
        == (given["ORDER_DB_NAME"], given["ORDER_DB_USER"], given["ORDER_DB_PASSWORD"]),
        "compose: order-db's database, user or password differs from the service's ORDER_DB_*",
    )
    conditions = {
        name: spec.get("condition")
        for name, spec in services["payment-service"]["depends_on"].items()
    }
    report.expect(
        conditions == {"order-db": "service_healthy", "migrate": "service_completed_successfully"},
        f"compose: payment-service waits for a healthy order-db and a done migrate: {conditions}",
    )
    if validated.returncode == 0:
        report.say(
            "docker-compose.yml: valid against the Compose specification; services "
            f"{', '.join(services)}; the variables given are settings the service reads"
        )


# -- the Helm chart -------------------------------------------------------------------------


# Beyond the files in ci/: the ways to name the database, and numbers YAML would print as 1e+06.
MORE_VALUES: dict[str, dict[str, Any]] = {
    "numbers of seven digits": {
        "replicaCount": 1_000_000,
        "terminationGracePeriodSeconds": 1_000_000,
        "migrations": {"activeDeadlineSeconds": 1_000_000, "ttlSecondsAfterFinished": 1_000_000},
        "purgeIdempotencyKeys": {"startingDeadlineSeconds": 1_000_000},
    },
    "database.url": {"database": {"url": "postgresql://u:p@db:5432/orders"}},
    "a URL in an existingSecret": {
        "database": {"existingSecret": "credentials", "secretKeys": {"url": "database-url"}}
    },
    "an existingSecret beside a database.url": {
        "database": {"url": "postgresql://u:p@db:5432/orders", "existingSecret": "credentials"}
    },
}


def value_sets() -> Iterator[tuple[str, dict[str, Any] | None]]:
    yield "default values", None
    for path in sorted((CHART / "ci").glob("*.yaml")):
        yield f"ci/{path.name}", yaml.safe_load(path.read_text())
    yield from MORE_VALUES.items()


def check_chart(report: Report) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="deploy-check-") as folder,
        helm.Chart.load(CHART) as chart,
    ):
        rendered_files = []
        for label, values in value_sets():
            lint = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
            problems = [m for m in lint.get("messages") or [] if m["severity"] >= 2]
            problems += [{"error": e} for e in lint.get("errors") or []]
            notes = [m["error"] for m in lint.get("messages") or [] if m["severity"] < 2]
            if report.expect(not problems, f"helm lint --strict, {label}: {problems}"):
                info = f" (info: {'; '.join(notes)})" if notes else ""
                report.say(f"chart, {label}: helm lint --strict passes{info}")
            for upgrade in (False, True):
                manifests = _render(chart, values, upgrade=upgrade)
                mode = "upgrade" if upgrade else "install"
                path = Path(folder) / f"{label.replace('/', '-')}-{mode}.yaml"
                path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
                rendered_files.append(path)
                check_rules(report, f"{label}, {mode}", manifests)
        _validate(report, rendered_files)
        for label, values in REFUSED_VALUES.items():
            try:
                _render(chart, values, upgrade=False)
            except helm.HelmError as refusal:
                reason = " ".join(str(refusal).split())
                report.say(f"chart refuses {label}: ...{reason[-100:]}")
            else:
                report.expect(False, f"the chart rendered with {label}")


def _render(chart: helm.Chart, values: dict[str, Any] | None, *, upgrade: bool) -> list[Manifest]:
    rendered = chart.render(
        values, name=RELEASE, namespace=NAMESPACE, is_upgrade=upgrade, is_install=not upgrade
    )
    return [
        document
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt")
        for document in yaml.safe_load_all(text)
        if document
    ]


def _validate(report: Report, files: list[Path]) -> None:
    for version in KUBERNETES_VERSIONS:
        validated = _run(
            str(TOOLS / "kubernetes-validate"),
            "--strict",
            "--kubernetes-version",
            version,
            *map(str, files),
        )
        output = _output(validated)
        lines = output.splitlines()
        passed = sum("passed" in line for line in lines)
        unknown = {
            line.split("kind ")[1].split(" ")[0] for line in lines if "Couldn't find schema" in line
        }
        if report.expect(
            validated.returncode == 0 and passed > 0,
            f"kubernetes-validate --strict, Kubernetes {version}:\n{output}",
        ):
            report.say(
                f"kubernetes-validate --strict, Kubernetes {version}: {passed} manifests valid in"
                f" {len(files)} renderings; no schema there for {', '.join(sorted(unknown)) or '-'}"
                " (checked by rule)"
            )


def check_rules(report: Report, label: str, manifests: list[Manifest]) -> None:
    """What the chart promises, checked on one rendering."""
    by_kind: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    failures_before = len(report.failures)
    [deployment] = by_kind["Deployment"]
    [config_map] = by_kind["ConfigMap"]
    settings = config_map["data"]
    report.expect(
        set(settings) <= SETTINGS - SECRET_SETTINGS,
        f"{label}: ConfigMap holds {sorted(set(settings) - (SETTINGS - SECRET_SETTINGS))}",
    )
    try:  # as the service reads them at start-up
        Settings.model_validate({name.lower(): value for name, value in settings.items()})
    except ValidationError as refusal:
        report.expect(False, f"{label}: the service refuses the ConfigMap's settings: {refusal}")

    pods = {
        f"{workload['kind']} {workload['metadata']['name']}": workload["spec"]["template"]["spec"]
        for workload in [deployment, *by_kind.get("Job", [])]
    }
    for cron_job in by_kind.get("CronJob", []):
        pod = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        pods[f"CronJob {cron_job['metadata']['name']}"] = pod
        [purge] = pod["containers"]
        report.expect(
            purge["args"] == ["payment-service", "purge-idempotency-keys"],
            f"{label}: the CronJob runs {purge['args']}",
        )
    for test_pod in by_kind.get("Pod", []):  # helm test's
        pods[f"Pod {test_pod['metadata']['name']}"] = test_pod["spec"]
    for name, pod in pods.items():
        _check_pod(report, f"{label}, {name}", pod)

    pod = deployment["spec"]["template"]["spec"]
    [server] = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    report.expect(
        ports.get("http") == int(settings["PAYMENT_PORT"]),
        f"{label}: port http {ports} is not PAYMENT_PORT {settings['PAYMENT_PORT']}",
    )
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = server.get(probe, {}).get("httpGet", {})
        report.expect(
            (get.get("path"), get.get("port")) == (path, "http"),
            f"{label}: {probe} is {get}, not GET {path} on port http",
        )
    stop = pod["terminationGracePeriodSeconds"]
    sleep = int(
        server.get("lifecycle", {})
        .get("preStop", {})
        .get("exec", {})
        .get("command", ["sleep", "0"])[1]
    )
    report.expect(
        stop > sleep + int(settings["PAYMENT_SHUTDOWN_TIMEOUT_SECONDS"]),
        f"{label}: a grace period of {stop} s leaves no time after preStop and shutdown timeout",
    )
    secret = {variable["name"] for variable in server.get("env", [])} & SECRET_SETTINGS
    named_by_parts = {"ORDER_DB_HOST", "ORDER_DB_NAME", "ORDER_DB_USER"} <= set(settings)
    report.expect(
        ("DATABASE_URL" in secret and not named_by_parts)
        or ("ORDER_DB_PASSWORD" in secret and named_by_parts),
        f"{label}: the database is not named whole: the password or URL {sorted(secret)},"
        f" the ConfigMap {sorted(name for name in settings if name.startswith('ORDER_DB_'))}",
    )

    [service] = by_kind["Service"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    report.expect(
        selector.items() <= pod_labels.items(),
        f"{label}: the Service does not select the server's pods",
    )
    report.expect(
        [port["targetPort"] for port in service["spec"]["ports"]] == ["http"],
        f"{label}: the Service does not forward to the port named http",
    )
    for job in by_kind.get("Job", []):
        job_labels = job["spec"]["template"]["metadata"]["labels"]
        report.expect(
            not selector.items() <= job_labels.items(),
            f"{label}: the Service selects the migration's pod",
        )
        hooks = set(job["metadata"].get("annotations", {}).get("helm.sh/hook", "").split(","))
        report.expect(
            {"pre-install", "pre-upgrade"} <= hooks,
            f"{label}: the migration Job is not a pre-install/pre-upgrade hook: {hooks}",
        )
        [migrate] = job["spec"]["template"]["spec"]["containers"]
        report.expect(
            migrate["args"] == ["payment-service", "migrate"],
            f"{label}: the Job runs {migrate['args']}",
        )
    for monitor in by_kind.get("ServiceMonitor", []):
        endpoints = monitor["spec"]["endpoints"]
        report.expect(
            [(e.get("port"), e.get("path")) for e in endpoints] == [("http", "/metrics")]
            and monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items(),
            f"{label}: the ServiceMonitor does not scrape the Service's http port at /metrics",
        )
    if len(report.failures) == failures_before:
        kinds = ", ".join(
            f"{kind} x{len(items)}" if len(items) > 1 else kind
            for kind, items in sorted(by_kind.items())
        )
        report.say(f"chart, {label}: {kinds}; every rule holds")


def _check_pod(report: Report, label: str, pod: Manifest) -> None:
    security = pod.get("securityContext", {})
    report.expect(security.get("runAsNonRoot") is True, f"{label}: the pod may run as root")
    report.expect(
        security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{label}: no RuntimeDefault seccomp profile",
    )
    report.expect(
        pod.get("automountServiceAccountToken") is False,
        f"{label}: the service account token is mounted",
    )
    for container in pod["containers"]:
        where = f"{label}, container {container['name']}"
        context = container.get("securityContext", {})
        report.expect(
            context.get("readOnlyRootFilesystem") is True,
            f"{where}: the root file system is writable",
        )
        report.expect(
            context.get("allowPrivilegeEscalation") is False,
            f"{where}: privilege escalation allowed",
        )
        report.expect(
            "ALL" in context.get("capabilities", {}).get("drop", []),
            f"{where}: capabilities not dropped",
        )
        report.expect(context.get("privileged") in (None, False), f"{where}: privileged")
        resources = container.get("resources", {})
        report.expect(
            bool(resources.get("requests")) and "memory" in resources.get("limits", {}),
            f"{where}: no requests or memory limit",
        )
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        report.expect(
            "/tmp" in mounts,  # noqa: S108 - the path the chart mounts, not a file we write
            f"{where}: /tmp is not writable (several workers keep their metrics there)",
        )
        names = {variable["name"] for variable in container.get("env", [])}
        report.expect(
            names <= SETTINGS,
            f"{where}: variables the service never reads: {sorted(names - SETTINGS)}",
        )
        for variable in container.get("env", []):
            if variable["name"] in SECRET_SETTINGS:
                report.expect(
                    "secretKeyRef" in variable.get("valueFrom", {}),
                    f"{where}: {variable['name']} not from a Secret",
                )


if __name__ == "__main__":
    sys.exit(main())
