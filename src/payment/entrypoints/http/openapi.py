"""The OpenAPI document: every error of every endpoint, with its schema and an example."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from payment.entrypoints.http.problems import (
    AMOUNT_MISMATCH,
    EVENT_NOT_FOUND,
    IDEMPOTENCY_KEY_IN_USE,
    IDEMPOTENCY_KEY_REUSED,
    MALFORMED_REQUEST,
    ORDER_NOT_FOUND,
    ORDER_NOT_PAYABLE,
    PAYLOAD_TOO_LARGE,
    PAYMENT_NOT_FOUND,
    PAYMENT_NOT_REFUNDABLE,
    PROBLEM_JSON,
    REFUND_EXCEEDS_PAYMENT,
    REFUND_NOT_FOUND,
    SERVICE_UNAVAILABLE,
    UNAUTHORIZED,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION_ERROR,
    Problem,
    ProblemKind,
)

_EXAMPLES: dict[ProblemKind, dict[str, Any]] = {
    MALFORMED_REQUEST: {"detail": "The body is not valid JSON."},
    UNAUTHORIZED: {"detail": "The API key is not valid."},
    ORDER_NOT_FOUND: {"detail": "Order 123 does not exist."},
    PAYMENT_NOT_FOUND: {"detail": "Payment 456 does not exist."},
    EVENT_NOT_FOUND: {"detail": "Event 0b6f4c1e-5d3a-4a51-9a07-3f7f2b2f9c11 does not exist."},
    REFUND_NOT_FOUND: {"detail": "Refund 17 does not exist."},
    PAYMENT_NOT_REFUNDABLE: {
        "detail": "Payment 456 is refunded in full; nothing remains to refund."
    },
    REFUND_EXCEEDS_PAYMENT: {
        "detail": "A refund of 200.00 exceeds what remains of payment 456: 194.99.",
        "amount_refundable": "194.99",
    },
    ORDER_NOT_PAYABLE: {
        "detail": "Order 123 is paid; only a pending order can be paid.",
        "order_status": "paid",
    },
    IDEMPOTENCY_KEY_IN_USE: {
        "detail": "A request with this Idempotency-Key is being processed; retry shortly with "
        "the same key to get its answer."
    },
    PAYLOAD_TOO_LARGE: {"detail": "The body exceeds 65536 bytes."},
    UNSUPPORTED_MEDIA_TYPE: {"detail": "The body must be sent as Content-Type: application/json."},
    VALIDATION_ERROR: {
        "detail": "The request is invalid.",
        "errors": [{"pointer": "/amount", "detail": "amount must have at most two decimal places"}],
    },
    AMOUNT_MISMATCH: {"detail": "The amount does not match the total of order 123."},
    IDEMPOTENCY_KEY_REUSED: {
        "detail": "This Idempotency-Key was used before with a different request; use a new "
        "key for a new request."
    },
    SERVICE_UNAVAILABLE: {
        "detail": "The database could not be reached in time. Nothing was written; retry shortly."
    },
}


def parameter_validation_example(parameter: str) -> dict[str, Any]:
    """The members of a validation_error example about a path parameter."""
    return {
        "detail": "The request is invalid.",
        "errors": [
            {"parameter": parameter, "detail": "Input should be greater than or equal to 1"}
        ],
    }


def example(kind: ProblemKind, members: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": kind.type,
        "title": kind.title,
        "status": kind.status,
        "code": kind.code,
        **(_EXAMPLES[kind] if members is None else members),
    }


def problem_responses(
    *kinds: ProblemKind, examples: dict[ProblemKind, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer with these problems; ``examples`` replaces
    the members of a kind's standard example for this route."""
    examples = examples or {}
    responses: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        response = responses.setdefault(
            kind.status,
            {
                "model": Problem,
                "description": "",
                "content": {"application/json": {"examples": {}}},
            },
        )
        response["description"] = "; or ".join(
            filter(None, [response["description"], f"{kind.title} (`{kind.code}`)"])
        )
        response["content"]["application/json"]["examples"][kind.code] = {
            "summary": kind.title,
            "value": example(kind, examples.get(kind)),
        }
    return responses


def _documented(kind: ProblemKind) -> dict[str, Any]:
    """A problem response as it stands in the finished document."""
    return {
        "description": f"{kind.title} (`{kind.code}`)",
        "content": {
            "application/json": {
                "schema": {"$ref": f"#/components/schemas/{Problem.__name__}"},
                "examples": {kind.code: {"summary": kind.title, "value": example(kind)}},
            }
        },
    }


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads and validates its JSON body itself."""
    return {
        "requestBody": {
            "description": (
                "JSON in UTF-8, without a byte-order mark, sent as `Content-Type: "
                "application/json` (a `charset=utf-8` parameter is fine; any other media type, "
                "or none, is refused with 415)."
            ),
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


API_KEY_SCHEME = "apiKey"
API_KEY_SECURITY = {
    "type": "http",
    "scheme": "bearer",
    "description": (
        "One of the keys in PAYMENT_API_KEYS, as `Authorization: Bearer <key>`. Needed on every "
        "endpoint but /livez, /readyz and /metrics when keys are configured; without keys "
        "configured, the service asks for none."
    ),
}


_REQUEST_ID = {
    "description": "The request's id: the caller's X-Request-ID if usable, else a new one.",
    "schema": {"type": "string"},
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying (on a 409, only with idempotency_key_in_use).",
    "schema": {"type": "integer"},
}
_CHALLENGE = {
    "description": "The scheme to authenticate with: Bearer.",
    "schema": {"type": "string"},
}
_REPLAYED = {
    "description": "`true` when this is the kept answer to an earlier request with the same "
    "Idempotency-Key.",
    "schema": {"type": "string", "enum": ["true"]},
}


def _document_headers(operation: dict[str, Any]) -> None:
    """The response headers: the request id on every answer, Retry-After where a retry is
    invited, the challenge on a 401, the replay mark on what a keyed request can replay."""
    replayable = "Idempotency-Key" in {p.get("name") for p in operation.get("parameters", [])}
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        headers["X-Request-ID"] = _REQUEST_ID
        if status in {"409", "503"}:
            headers["Retry-After"] = _RETRY_AFTER
        if status == "401":
            headers["WWW-Authenticate"] = _CHALLENGE
        if replayable and status in {"200", "404", "409", "422"}:
            headers["Idempotent-Replayed"] = _REPLAYED


def install_openapi(app: FastAPI, *, body_models: list[type[BaseModel]]) -> None:
    """Serve error responses as ``application/problem+json`` in the document, and add the
    schemas of the bodies the routes read themselves."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in body_models:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
            document["components"]["securitySchemes"] = {API_KEY_SCHEME: API_KEY_SECURITY}
            document["security"] = [{API_KEY_SCHEME: []}]
            for path in document["paths"].values():
                for operation in path.values():
                    if operation.get("security") != []:
                        operation["responses"].setdefault(
                            str(UNAUTHORIZED.status), _documented(UNAUTHORIZED)
                        )
                    _document_headers(operation)
                    for status, response in operation.get("responses", {}).items():
                        content = response.get("content", {})
                        if status[0] in "45" and "application/json" in content:
                            content[PROBLEM_JSON] = content.pop("application/json")
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
