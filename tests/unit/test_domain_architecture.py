from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

import payment.domain

DOMAIN = Path(payment.domain.__file__).parent
DOMAIN_MODULES = sorted(DOMAIN.rglob("*.py"))


def package_of(source: Path) -> str:
    """The package a relative import in ``source`` starts from."""
    folders = source.relative_to(DOMAIN).parent.parts
    return ".".join(("payment", "domain", *folders))


def imported_modules(source: Path) -> list[str]:
    """Every module ``source`` imports, relative imports resolved to absolute names."""
    modules: list[str] = []
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), filename=str(source))):
        if isinstance(node, ast.Import):
            modules.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            relative = "." * node.level + (node.module or "")
            modules.append(importlib.util.resolve_name(relative, package_of(source)))
    return modules


def is_allowed(module: str) -> bool:
    top = module.partition(".")[0]
    return (
        top in sys.stdlib_module_names
        or module == "payment.domain"
        or (module.startswith("payment.domain."))
    )


def test_the_domain_has_modules_to_check() -> None:
    names = {path.stem for path in DOMAIN_MODULES}

    assert {"model", "policy", "errors", "ports", "services"} <= names


@pytest.mark.parametrize("module", DOMAIN_MODULES, ids=lambda path: path.stem)
def test_the_domain_imports_only_the_standard_library_and_itself(module: Path) -> None:
    outside = [name for name in imported_modules(module) if not is_allowed(name)]

    assert outside == []


@pytest.mark.parametrize(
    "module", ["sqlalchemy", "fastapi.responses", "payment.adapters.in_memory", "payment"]
)
def test_the_import_rule_tells_an_outside_import(module: str) -> None:
    assert not is_allowed(module)
