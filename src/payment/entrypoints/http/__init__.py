"""The HTTP API: parse, call a use case, map the outcome. Nothing else."""

from payment.entrypoints.http.app import create_app
from payment.entrypoints.http.dependencies import Services

__all__ = ["Services", "create_app"]
