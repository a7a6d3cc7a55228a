"""The consumers' verification helper, loaded from where the documentation publishes it
(docs/examples/verify_webhook.py: a file to copy, not a module of the service), so the tests
check the very code subscribers copy."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, cast

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "verify_webhook.py"


class VerifySignature(Protocol):
    def __call__(
        self,
        secret: str | bytes | Iterable[str | bytes],
        header: str | None,
        body: bytes | str,
        tolerance_seconds: float = ...,
        now: float | None = ...,
    ) -> int: ...


def _load() -> tuple[VerifySignature, type[ValueError]]:
    spec = importlib.util.spec_from_file_location("verify_webhook", EXAMPLE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return cast(VerifySignature, module.verify_signature), cast(
        type[ValueError], module.InvalidSignature
    )


verify_signature, InvalidSignature = _load()
