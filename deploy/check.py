"""The deployment files, checked offline (`make deploy-check`): no cluster, no container engine.

- the Dockerfile: hadolint, failing at error level;
- docker-compose.yml: the Compose specification's JSON schema, then what the schema cannot
  know: every variable given to the service is one it reads, the database's and the broker's
  credentials are the ones the service and the relay are given, and each waits for what it needs;
- helm/payment-service: linted strictly and rendered (install and upgrade) with the default
  values and with each file in its ci/ folder; every rendered manifest validated against
  Kubernetes' own schemas (`kubernetes-validate --strict`) for the oldest Kubernetes the chart
  supports and the newest the validator knows; the PrometheusRule (a kind those schemas do not
  know) against a structural copy of its CRD (deploy/schemas/), then `promtool check rules`
  and `promtool test rules` proving each alert fires when it should and only then (promtool
  comes from Debian's `prometheus` package, installed when missing if we are root; elsewhere
  without it these two are skipped and said so); then the rules the chart promises
  (non-root, read-only root, no privilege escalation, no capabilities, probes on the served
  ports, the migration as a pre-install/pre-upgrade hook, settings the service knows, the
  relay's destinations and secrets, every extension reaching the pods); and values that the
  chart's schema or its checks must refuse.

Exit status 1 when any check fails; every failure is listed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
SECRET_SETTINGS = {
    "ORDER_DB_PASSWORD",
    "DATABASE_URL",
    "PAYMENT_API_KEYS",
    "PAYMENT_WEBHOOK_SECRET",
    "PAYMENT_RABBITMQ_URL",
}
# What a container given each secret variable (from a Secret, unknown here) would read: values
# of the right form, so that the service's own validation of the rest can run.
SECRET_STAND_INS = {
    "ORDER_DB_PASSWORD": "stand-in",
    "DATABASE_URL": "postgresql://user:password@database:5432/orders",
    "PAYMENT_API_KEYS": "a-stand-in-api-key-0001",
    "PAYMENT_WEBHOOK_SECRET": "a-stand-in-signing-secret",
    "PAYMENT_RABBITMQ_URL": "amqp://user:password@broker:5672/",
}
# The chart's own containers (the others come from values: sidecars, init containers).
CHART_CONTAINERS = {"payment-service", "relay", "migrate", "purge-idempotency-keys", "readyz"}
PROMETHEUS_RULE_SCHEMA = ROOT / "deploy" / "schemas" / "prometheusrule.json"
RELAY_ON = {"relay": {"enabled": True, "webhook": {"urls": ["https://shop.example/hooks"]}}}
REFUSED_VALUES: dict[str, dict[str, Any]] = {
    "replicaCount: two": {"replicaCount": "two"},
    "config.workers: 0": {"config": {"workers": 0}},
    "config.logLevel: TRACE": {"config": {"logLevel": "TRACE"}},
    "an unknown key": {"replicas": 3},
    "a grace period shorter than the shutdown timeout": {"terminationGracePeriodSeconds": 10},
    "an API key of 8 characters": {"apiKeys": {"keys": ["12345678"]}},
    "the relay without a destination": {"relay": {"enabled": True}},
    "webhooks without a signing secret": RELAY_ON,
    "a webhook URL with credentials": {
        "relay": {
            "enabled": True,
            "webhook": {"urls": ["https://u:p@shop.example/"], "secret": "s"},
        }
    },
    "a relay grace period within the shutdown timeout": {
        "relay": {
            **RELAY_ON["relay"],
            "webhook": {"urls": ["https://shop.example/hooks"], "secret": "s"},
            "terminationGracePeriodSeconds": 20,
        }
    },
    "a RabbitMQ URL that is not amqp": {
        "relay": {"enabled": True, "rabbitmq": {"url": "http://broker:5672"}}
    },
    "an API key in extraEnv": {"extraEnv": [{"name": "PAYMENT_API_KEYS", "value": "x" * 20}]},
    "an extraEnv entry with value and valueFrom": {
        "extraEnv": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}]
    },
    "an extraEnvFrom naming neither a ConfigMap nor a Secret": {"extraEnvFrom": [{"prefix": "A_"}]},
    "an extra volume named tmp": {"extraVolumes": [{"name": "tmp", "emptyDir": {}}]},
    "an extra volume with two sources": {
        "extraVolumes": [{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]
    },
    "an extra mount over /tmp": {
        "extraVolumeMounts": [{"name": "v", "mountPath": "/tmp"}]  # noqa: S108 - the chart's
    },
    "a sidecar without an image": {"sidecars": [{"name": "proxy"}]},
    "a sidecar with an unknown field": {"sidecars": [{"name": "p", "image": "p", "imag": "p"}]},
    "a pod label replacing the chart's component": {
        "podLabels": {"app.kubernetes.io/component": "x"}
    },
    "a topology spread with an unknown policy": {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "Never"}
        ]
    },
    "an error-rate threshold above 1": {"prometheusRule": {"errorRate": {"threshold": 5}}},
    "an alert duration of 5 minutes written out": {
        "prometheusRule": {"payLatency": {"for": "5 minutes"}}
    },
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
    check_compose_relay(report, services)
    if validated.returncode == 0:
        report.say(
            "docker-compose.yml: valid against the Compose specification; services "
            f"{', '.join(services)}; the variables given are settings the service reads"
        )


def _interpolated(value: Any) -> str:
    """A compose value as it reads when the shell sets none of its variables (their defaults)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def check_compose_relay(report: Report, services: dict[str, Any]) -> None:
    """The relay: its command, what it waits for, the broker's credentials, its health check."""
    relay, broker = services["relay"], services["rabbitmq"]
    report.expect(
        relay["command"] == ["payment-service", "relay"], f"compose: relay runs {relay['command']}"
    )
    conditions = {name: spec.get("condition") for name, spec in relay["depends_on"].items()}
    report.expect(
        conditions
        == {
            "order-db": "service_healthy",
            "migrate": "service_completed_successfully",
            "rabbitmq": "service_healthy",
        },
        f"compose: relay waits for healthy order-db and rabbitmq, and a done migrate: {conditions}",
    )
    given = {name: _interpolated(v) for name, v in relay["environment"].items() if v is not None}
    broker_url = urlsplit(given["PAYMENT_RABBITMQ_URL"])
    credentials = {k: _interpolated(v) for k, v in broker["environment"].items()}
    report.expect(
        (broker_url.username, broker_url.password, broker_url.hostname)
        == (credentials["RABBITMQ_DEFAULT_USER"], credentials["RABBITMQ_DEFAULT_PASS"], "rabbitmq"),
        "compose: the relay's PAYMENT_RABBITMQ_URL is not rabbitmq's user and password",
    )
    report.expect("healthcheck" in broker, "compose: rabbitmq has no health check")
    report.expect(
        f"127.0.0.1:{given['PAYMENT_RELAY_PORT']}/livez" in " ".join(relay["healthcheck"]["test"]),
        "compose: the relay's health check does not ask its PAYMENT_RELAY_PORT's /livez",
    )
    try:
        Settings.model_validate({name.lower(): value for name, value in given.items()})
    except ValidationError as refusal:
        report.expect(False, f"compose: the relay refuses its settings: {refusal}")


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
    "the relay on RabbitMQ alone, from an existingSecret, behind a NetworkPolicy": {
        "relay": {"enabled": True, "rabbitmq": {"existingSecret": "broker", "port": 5671}},
        "networkPolicy": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "topologySpreadConstraints": [],
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
                check_rules(report, f"{label}, {mode}", manifests, values or {})
                if not upgrade:
                    check_prometheus_rules(report, label, manifests, Path(folder))
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


def check_rules(
    report: Report, label: str, manifests: list[Manifest], values: dict[str, Any]
) -> None:
    """What the chart promises, checked on one rendering."""
    by_kind: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    failures_before = len(report.failures)
    deployments = {_component(d): d for d in by_kind["Deployment"]}
    config_maps = {_component(c): c["data"] for c in by_kind["ConfigMap"]}
    deployment, settings = deployments["server"], config_maps["server"]
    for component, data in config_maps.items():
        report.expect(
            set(data) <= SETTINGS - SECRET_SETTINGS,
            f"{label}: the {component} ConfigMap holds"
            f" {sorted(set(data) - (SETTINGS - SECRET_SETTINGS))}",
        )
    relay_wanted = bool(values.get("relay", {}).get("enabled"))
    report.expect(
        set(deployments) == {"server", "relay"} if relay_wanted else set(deployments) == {"server"},
        f"{label}: Deployments {sorted(deployments)} with relay.enabled={relay_wanted}",
    )

    pods = {
        f"{workload['kind']} {workload['metadata']['name']}": workload["spec"]["template"]
        for workload in [*deployments.values(), *by_kind.get("Job", [])]
    }
    for cron_job in by_kind.get("CronJob", []):
        template = cron_job["spec"]["jobTemplate"]["spec"]["template"]
        pods[f"CronJob {cron_job['metadata']['name']}"] = template
        [purge] = template["spec"]["containers"]
        report.expect(
            purge["args"] == ["payment-service", "purge-idempotency-keys"],
            f"{label}: the CronJob runs {purge['args']}",
        )
    for test_pod in by_kind.get("Pod", []):  # helm test's
        pods[f"Pod {test_pod['metadata']['name']}"] = test_pod
    extra_env = {variable["name"] for variable in values.get("extraEnv", [])}
    for name, template in pods.items():
        _check_pod(report, f"{label}, {name}", template["spec"], SETTINGS | extra_env)
        if not name.startswith("Pod "):
            _check_extensions(report, f"{label}, {name}", template, values)
    for name in ("server", "relay"):
        if name in deployments:
            spec = deployments[name]["spec"]["template"]["spec"]
            environment = {**settings, **config_maps.get(name, {})} if name == "relay" else settings
            [main] = [c for c in spec["containers"] if c["name"] in CHART_CONTAINERS]
            _check_settings(report, f"{label}, the {name}", environment, main)
            _check_placement(report, f"{label}, the {name}", deployments[name])

    [server] = [
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "payment-service"
    ]
    _check_served(report, f"{label}, the server", server, "PAYMENT_PORT", settings)
    pod = deployment["spec"]["template"]["spec"]
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
    report.expect(
        not secret & {"PAYMENT_WEBHOOK_SECRET", "PAYMENT_RABBITMQ_URL"},
        f"{label}: the server is given the relay's secrets",
    )
    if "relay" in deployments:
        _check_relay(report, label, deployments["relay"], {**settings, **config_maps["relay"]})

    services = {_component(service): service for service in by_kind["Service"]}
    for component, service in services.items():
        selector = service["spec"]["selector"]
        chosen = [
            name
            for name, template in pods.items()
            if selector.items() <= template["metadata"]["labels"].items()
        ]
        owner = deployments.get(component, {"metadata": {"name": "-"}})
        report.expect(
            chosen == [f"Deployment {owner['metadata']['name']}"],
            f"{label}: Service {service['metadata']['name']} selects {chosen}",
        )
        report.expect(
            [port["targetPort"] for port in service["spec"]["ports"]] == ["http"],
            f"{label}: Service {service['metadata']['name']} does not forward to the port http",
        )
    for job in by_kind.get("Job", []):
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
    for budget in by_kind.get("PodDisruptionBudget", []):
        chosen = [
            name
            for name, workload in deployments.items()
            if budget["spec"]["selector"]["matchLabels"].items() <= _pod_labels(workload).items()
        ]
        report.expect(
            chosen == [_component(budget)],
            f"{label}: PodDisruptionBudget {budget['metadata']['name']} selects {chosen}",
        )
    budgeted = {_component(b) for b in by_kind.get("PodDisruptionBudget", [])}
    wanted = {
        name
        for name, switch in (
            ("server", values.get("podDisruptionBudget", {})),
            ("relay", values.get("relay", {}).get("podDisruptionBudget", {})),
        )
        if name in deployments and switch.get("enabled", True)
    }
    report.expect(budgeted == wanted, f"{label}: PodDisruptionBudgets for {budgeted}, not {wanted}")
    for monitor in by_kind.get("ServiceMonitor", []):
        endpoints = monitor["spec"]["endpoints"]
        watched = services.get(_component(monitor), {"metadata": {"labels": {}}})
        report.expect(
            [(e.get("port"), e.get("path")) for e in endpoints] == [("http", "/metrics")]
            and monitor["spec"]["selector"]["matchLabels"].items()
            <= watched["metadata"]["labels"].items(),
            f"{label}: ServiceMonitor {monitor['metadata']['name']} does not scrape its"
            " Service's http port at /metrics",
        )
    _check_network_policies(
        report, label, by_kind, deployments, settings, config_maps.get("relay", {}), values
    )
    if len(report.failures) == failures_before:
        kinds = ", ".join(
            f"{kind} x{len(items)}" if len(items) > 1 else kind
            for kind, items in sorted(by_kind.items())
        )
        report.say(f"chart, {label}: {kinds}; every rule holds")


def _component(manifest: Manifest) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def _pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"]["labels"])


def _check_settings(
    report: Report, label: str, environment: dict[str, str], container: Manifest
) -> None:
    """The container's settings as the service reads them at start-up: the ConfigMaps', and
    stand-ins of the right form for the ones it takes from Secrets."""
    given = {**environment}
    for variable in container.get("env", []):
        if variable["name"] in SECRET_STAND_INS:
            given[variable["name"]] = SECRET_STAND_INS[variable["name"]]
    try:
        Settings.model_validate({name.lower(): value for name, value in given.items()})
    except ValidationError as refusal:
        report.expect(False, f"{label}: the service refuses its settings: {refusal}")


def _check_served(
    report: Report, label: str, container: Manifest, port_setting: str, settings: dict[str, str]
) -> None:
    """The port named http is the one the process listens on, and the probes ask it."""
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    report.expect(
        ports.get("http") == int(settings[port_setting]),
        f"{label}: port http {ports} is not {port_setting} {settings[port_setting]}",
    )
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet", {})
        report.expect(
            (get.get("path"), get.get("port")) == (path, "http"),
            f"{label}: {probe} is {get}, not GET {path} on port http",
        )


def _check_relay(
    report: Report, label: str, deployment: Manifest, settings: dict[str, str]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    [relay] = pod["containers"]
    report.expect(
        relay["args"] == ["payment-service", "relay"], f"{label}: the relay runs {relay['args']}"
    )
    _check_served(report, f"{label}, the relay", relay, "PAYMENT_RELAY_PORT", settings)
    secret = {variable["name"] for variable in relay.get("env", [])} & SECRET_SETTINGS
    webhooks = "PAYMENT_WEBHOOK_URLS" in settings
    report.expect(
        webhooks or "PAYMENT_RABBITMQ_URL" in secret,
        f"{label}: the relay has no destination (it would refuse to start)",
    )
    report.expect(
        webhooks == ("PAYMENT_WEBHOOK_SECRET" in secret),
        f"{label}: webhook URLs and their signing secret go together: {sorted(secret)}",
    )
    report.expect(
        "PAYMENT_API_KEYS" not in secret, f"{label}: the relay is given the API keys it never uses"
    )
    report.expect(
        pod["terminationGracePeriodSeconds"] > int(settings["PAYMENT_SHUTDOWN_TIMEOUT_SECONDS"]),
        f"{label}: the relay's grace period ends before its deliveries under way may end",
    )


def _check_placement(report: Report, label: str, deployment: Manifest) -> None:
    """Each topology spread constraint counts the pods of this Deployment (labels it has)."""
    labels = _pod_labels(deployment)
    for constraint in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        chosen = constraint.get("labelSelector", {}).get("matchLabels", {})
        report.expect(
            bool(chosen) and chosen.items() <= labels.items(),
            f"{label}: the spread over {constraint['topologyKey']} counts other pods: {chosen}",
        )


def _check_extensions(
    report: Report, label: str, template: Manifest, values: dict[str, Any]
) -> None:
    """Each extension given in values reaches the pods it is documented for."""
    pod, metadata = template["spec"], template["metadata"]
    component = metadata["labels"].get("app.kubernetes.io/component")
    report.expect(
        values.get("podLabels", {}).items() <= metadata["labels"].items(),
        f"{label}: podLabels missing",
    )
    if component in ("server", "relay"):
        report.expect(
            values.get("podAnnotations", {}).items() <= metadata.get("annotations", {}).items(),
            f"{label}: podAnnotations missing",
        )
    if component == "server":
        names = [c["name"] for c in pod["containers"]]
        wanted = ["payment-service", *(c["name"] for c in values.get("sidecars", []))]
        report.expect(names == wanted, f"{label}: containers {names}, not {wanted}")
        init = [c["name"] for c in pod.get("initContainers", [])]
        wanted = [c["name"] for c in values.get("initContainers", [])]
        report.expect(init == wanted, f"{label}: init containers {init}, not {wanted}")
    volumes = [volume["name"] for volume in pod["volumes"]]
    wanted = ["tmp", *(volume["name"] for volume in values.get("extraVolumes", []))]
    report.expect(volumes == wanted, f"{label}: volumes {volumes}, not {wanted}")
    for container in pod["containers"]:
        if container["name"] not in CHART_CONTAINERS:
            continue
        where = f"{label}, container {container['name']}"
        names = [variable["name"] for variable in container.get("env", [])]
        wanted = [variable["name"] for variable in values.get("extraEnv", [])]
        report.expect(names[len(names) - len(wanted) :] == wanted, f"{where}: extraEnv missing")
        report.expect(len(names) == len(set(names)), f"{where}: a variable is given twice: {names}")
        sources = container.get("envFrom", [])
        wanted = values.get("extraEnvFrom", [])
        report.expect(
            sources[len(sources) - len(wanted) :] == wanted, f"{where}: extraEnvFrom missing"
        )
        mounts = [mount["mountPath"] for mount in container.get("volumeMounts", [])]
        wanted = ["/tmp", *(mount["mountPath"] for mount in values.get("extraVolumeMounts", []))]  # noqa: S108
        report.expect(mounts == wanted, f"{where}: mounts {mounts}, not {wanted}")


def _check_network_policies(
    report: Report,
    label: str,
    by_kind: dict[str, list[Manifest]],
    deployments: dict[str, Manifest],
    settings: dict[str, str],
    relay_settings: dict[str, str],
    values: dict[str, Any],
) -> None:
    """Each Deployment's pods are chosen by exactly one policy, their own, which lets them
    reach the database and DNS; the relay's also lets it reach its destinations."""
    policies = by_kind.get("NetworkPolicy", [])
    if not policies:
        return
    database_port = int(settings.get("ORDER_DB_PORT", "5432"))
    for name, workload in deployments.items():
        labels = _pod_labels(workload)
        chosen = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        report.expect(
            [_component(p) for p in chosen] == [name],
            f"{label}: the {name}'s pods are chosen by {[p['metadata']['name'] for p in chosen]}",
        )
        for policy in chosen:
            ports = {
                port.get("port")
                for rule in policy["spec"]["egress"]
                for port in rule.get("ports", [])
            }
            report.expect(
                {database_port, 53} <= ports,
                f"{label}: the {name} may not reach the database and DNS: egress ports {ports}",
            )
            if name == "relay":
                missing = _destination_ports(workload, relay_settings, values) - ports
                report.expect(
                    not missing,
                    f"{label}: the relay's NetworkPolicy keeps it from its destinations' ports"
                    f" {sorted(missing)}",
                )
                report.expect(
                    all(
                        port["port"] == "http"
                        for rule in policy["spec"]["ingress"]
                        for port in rule["ports"]
                    ),
                    f"{label}: the relay's NetworkPolicy opens more than its http port",
                )


def _destination_ports(
    relay: Manifest, settings: dict[str, str], values: dict[str, Any]
) -> set[int]:
    """The ports the relay connects to: each webhook URL's, and the broker's."""
    ports = set()
    for url in filter(None, settings.get("PAYMENT_WEBHOOK_URLS", "").split(",")):
        parts = urlsplit(url)
        ports.add(parts.port or {"http": 80, "https": 443}[parts.scheme])
    [container] = relay["spec"]["template"]["spec"]["containers"]
    if any(v["name"] == "PAYMENT_RABBITMQ_URL" for v in container.get("env", [])):
        ports.add(int(values.get("relay", {}).get("rabbitmq", {}).get("port", 5672)))
    return ports


def _selects(selector: Manifest, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        present = labels.get(expression["key"])
        inside = present in expression.get("values", [])
        if {"In": not inside, "NotIn": inside}.get(expression["operator"], False):
            return False
    return True


def _check_pod(report: Report, label: str, pod: Manifest, known: set[str]) -> None:
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
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
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
        if container["name"] not in CHART_CONTAINERS:
            continue  # a sidecar's own mounts and variables are its business
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        report.expect(
            "/tmp" in mounts,  # noqa: S108 - the path the chart mounts, not a file we write
            f"{where}: /tmp is not writable (several workers keep their metrics there)",
        )
        names = {variable["name"] for variable in container.get("env", [])}
        report.expect(
            names <= known,
            f"{where}: variables the service never reads: {sorted(names - known)}",
        )
        for variable in container.get("env", []):
            if variable["name"] in SECRET_SETTINGS:
                report.expect(
                    "secretKeyRef" in variable.get("valueFrom", {}),
                    f"{where}: {variable['name']} not from a Secret",
                )


# -- the PrometheusRule ---------------------------------------------------------------------

# The series Prometheus stores for each kind of metric the service defines.
SERIES_SUFFIXES = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "Summary": ("", "_sum", "_count"),
}
DEFINITION = re.compile(r"""\b(Counter|Gauge|Histogram|Summary)\(\s*["'](payment_[a-z0-9_]+)["']""")
METRIC_NAME = re.compile(r"\b(payment_[a-z0-9_]+)\b")


def exposed_metrics() -> set[str]:
    """The series of every metric the service and the relay define, as their sources do."""
    return {
        name + suffix
        for path in (ROOT / "src" / "payment").rglob("*.py")
        for kind, name in DEFINITION.findall(path.read_text())
        for suffix in SERIES_SUFFIXES[kind]
    }


def check_prometheus_rules(
    report: Report, label: str, manifests: list[Manifest], folder: Path
) -> None:
    """The PrometheusRule: valid for its CRD, about metrics that exist, and (with promtool)
    rules Prometheus loads, each alert firing on a failure and silent on a healthy service."""
    rules = [m for m in manifests if m["kind"] == "PrometheusRule"]
    if not rules:
        return
    [rule] = rules
    where = f"chart, {label}, PrometheusRule"
    path = folder / f"prometheusrule-{len(list(folder.glob('prometheusrule-*')))}.yaml"
    path.write_text(yaml.safe_dump(rule, sort_keys=False))
    validated = _run(
        str(TOOLS / "check-jsonschema"), "--schemafile", str(PROMETHEUS_RULE_SCHEMA), str(path)
    )
    report.expect(validated.returncode == 0, f"{where}: against its CRD:\n{_output(validated)}")
    known = exposed_metrics()
    exprs = [str(r["expr"]) for group in rule["spec"]["groups"] for r in group["rules"]]
    unknown = {name for expr in exprs for name in METRIC_NAME.findall(expr)} - known
    report.expect(not unknown, f"{where}: metrics the service does not expose: {sorted(unknown)}")
    alerts = [
        r["alert"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r
    ]
    promtool = _promtool(report)
    if promtool is None:
        report.say(
            f"{where}: valid for its CRD, alerts {', '.join(alerts)} on exposed metrics;"
            " promtool not installed (Debian's `prometheus` package): rules not loaded"
        )
        return
    rule_file = path.with_suffix(".rules.yaml")
    rule_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    checked = subprocess.run(  # noqa: S603
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    report.expect(checked.returncode == 0, f"{where}: promtool check rules:\n{_output(checked)}")
    tested = _test_alerts(promtool, rule, folder)
    if report.expect(tested.returncode == 0, f"{where}: promtool test rules:\n{_output(tested)}"):
        report.say(
            f"{where}: valid for its CRD, on exposed metrics, loaded by promtool; alerts"
            f" {', '.join(alerts)} fire on a failing service and stay silent on a healthy one"
        )


def _promtool(report: Report) -> str | None:
    """promtool, from Debian's `prometheus` package when missing and we may (root, apt-get)."""
    found = shutil.which("promtool")
    if found is not None or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return found
    report.say("installing prometheus for its promtool (apt-get)")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ([install], [["apt-get", "update", "-q"], install]):
        if all(
            subprocess.run(step, env=environment, capture_output=True, check=False).returncode == 0  # noqa: S603
            for step in attempt
        ):
            break
    return shutil.which("promtool")


def _test_alerts(promtool: str, rule: Manifest, folder: Path) -> subprocess.CompletedProcess[str]:
    """promtool unit tests of the chart's own alerts, on the series of this release."""
    groups = rule["spec"]["groups"]
    ours = {"PaymentService" + n for n in ("ErrorRate", "PayLatencyHigh", "DatabaseUnavailable")}
    ours |= {"PaymentServiceOutboxBacklog", "PaymentServiceOutboxDeadLetters"}
    # The annotations' texts are promtool check's business; the tests compare labels.
    stripped = [
        {
            "name": group["name"],
            "rules": [
                {k: v for k, v in r.items() if k != "annotations"}
                for r in group["rules"]
                if r.get("alert") in ours
            ],
        }
        for group in groups
    ]
    rules_path = folder / "alerts.rules.yaml"
    rules_path.write_text(yaml.safe_dump({"groups": stripped}, sort_keys=False))
    by_name = {r["alert"]: r for group in stripped for r in group["rules"]}
    namespace = rule["metadata"]["namespace"]
    server = f'namespace="{namespace}",job="{rule["metadata"]["name"]}"'
    relay = f'namespace="{namespace}",job="{rule["metadata"]["name"]}-relay"'

    def requests(route: str, method: str, status: int, per_minute: int) -> dict[str, str]:
        labels = f'{server},route="{route}",method="{method}",status="{status}"'
        return {
            "series": f"payment_http_requests_total{{{labels}}}",
            "values": f"0+{per_minute}x40",
        }

    def buckets(bounds: dict[str, int]) -> list[dict[str, str]]:
        labels = f'{server},route="/pay",method="POST",status="200"'
        return [
            {
                "series": f'payment_http_request_duration_seconds_bucket{{{labels},le="{le}"}}',
                "values": f"0+{count}x40",
            }
            for le, count in bounds.items()
        ]

    def fired(name: str) -> list[dict[str, Any]]:
        if name not in by_name:
            return []
        return [{"exp_labels": {"alertname": name, **by_name[name].get("labels", {})}}]

    at = "30m"
    failing = [
        requests("/pay", "POST", 200, 100),
        requests("/pay", "POST", 503, 30),
        requests("/readyz", "GET", 503, 12),
        requests("/readyz", "GET", 200, 1),
        *buckets({"0.5": 10, "1": 50, "2.5": 100, "+Inf": 100}),
        {"series": f"payment_outbox_oldest_pending_age_seconds{{{relay}}}", "values": "7200x40"},
        {"series": f"payment_outbox_dead{{{relay}}}", "values": "0x5 3x35"},
    ]
    healthy = [
        # Little traffic, and probes failing now and then (a pod stopping): neither an error
        # rate (probes are left out of it) nor an outage.
        requests("/pay", "POST", 200, 20),
        requests("/pay", "POST", 503, 0),
        requests("/readyz", "GET", 503, 2),
        requests("/readyz", "GET", 200, 12),
        *buckets({"0.05": 18, "0.1": 20, "+Inf": 20}),
        {"series": f"payment_outbox_oldest_pending_age_seconds{{{relay}}}", "values": "2x40"},
        {"series": f"payment_outbox_dead{{{relay}}}", "values": "0x40"},
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": at, "alertname": name, "exp_alerts": fired(name) if fires else []}
                for name in sorted(by_name)
            ],
        }
        for series, fires in ((failing, True), (healthy, False))
    ]
    test_path = folder / "alerts.test.yaml"
    test_path.write_text(
        yaml.safe_dump({"rule_files": [rules_path.name], "tests": tests}, sort_keys=False)
    )
    return subprocess.run(  # noqa: S603
        [promtool, "test", "rules", test_path.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=folder,
    )


if __name__ == "__main__":
    sys.exit(main())
