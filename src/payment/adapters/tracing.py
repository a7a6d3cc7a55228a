"""OpenTelemetry traces, when the standard ``OTEL_*`` variables ask for them, and nothing
otherwise: with tracing off no provider is made, nothing is instrumented, and a request costs
what it did without it.

When tracing is on (the rule is ``requested_exporters``): a server span per request (FastAPI's
own instrumentation, given the provider made here), a client span per statement sent on a
connection of the requests' pool (``trace_statements``), the W3C ``traceparent`` of the caller
continued, the trace and span ids on the log lines, and ``inject_trace_context`` to carry the
trace on the calls the service makes. Spans leave in batches by OTLP over HTTP (protobuf); the
exporter reads its own variables (``OTEL_EXPORTER_OTLP_*``: endpoint, headers, timeout), the
provider the sampler's (``OTEL_TRACES_SAMPLER``), the resource ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, the batches ``OTEL_BSP_*``, the propagation ``OTEL_PROPAGATORS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from payment.adapters.settings import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

SERVICE_NAME = "payment-service"
SDK_DISABLED = "OTEL_SDK_DISABLED"
TRACES_EXPORTER = "OTEL_TRACES_EXPORTER"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SUPPORTED_EXPORTERS = ("otlp", "console")
"""``console`` writes the spans on standard output: for a look on a workstation."""
SUPPORTED_PROTOCOL = "http/protobuf"

_started = False
"""Whether this process traces; ``inject_trace_context`` does nothing until it does."""


def requested_exporters(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The span exporters the environment asks for; none means tracing is off.

    - ``OTEL_SDK_DISABLED=true``: off, whatever else is set;
    - ``OTEL_TRACES_EXPORTER``: ``none`` is off; ``otlp``, ``console`` or both (comma
      separated) are on; any other name is refused;
    - unset: ``otlp`` when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
      ``OTEL_EXPORTER_OTLP_ENDPOINT`` names a collector, else off. (The SDK's own default is
      OTLP to a local collector; the service sends nothing nobody asked for.)

    OTLP goes over HTTP with protobuf only: another ``OTEL_EXPORTER_OTLP_*PROTOCOL`` (``grpc``)
    is refused rather than exported to a port that would not understand it.
    ``ConfigurationError`` names the variable, never a value it did not expect.
    """
    if environ.get(SDK_DISABLED, "").strip().lower() == "true":
        return ()
    named = environ.get(TRACES_EXPORTER, "").strip().lower()
    if named:
        exporters = tuple(dict.fromkeys(part.strip() for part in named.split(",") if part.strip()))
        if exporters == ("none",):
            return ()
        if not exporters or not set(exporters) <= set(SUPPORTED_EXPORTERS):
            raise ConfigurationError(
                f"{TRACES_EXPORTER} must be none, or otlp and/or console (comma separated)"
            )
    elif any(environ.get(name, "").strip() for name in ENDPOINTS):
        exporters = ("otlp",)
    else:
        return ()
    if "otlp" in exporters:
        for name in PROTOCOLS:
            protocol = environ.get(name, "").strip().lower()
            if protocol and protocol != SUPPORTED_PROTOCOL:
                raise ConfigurationError(f"{name} must be {SUPPORTED_PROTOCOL}, if set")
    return exporters


def tracer_provider(
    exporters: tuple[str, ...], *, version: str, processors: tuple[Any, ...] = ()
) -> TracerProvider:
    """A provider exporting to ``exporters`` in batches, plus any span ``processors`` given
    (the tests' in-memory exporter). The SDK is imported here only: with tracing off it is not
    even loaded."""
    from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
    from opentelemetry.sdk.resources import SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    found = Resource.create()  # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
    own: dict[str, str] = {}
    if str(found.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
        own[SERVICE_NAME_KEY] = SERVICE_NAME
    if SERVICE_VERSION not in found.attributes:
        own[SERVICE_VERSION] = version
    provider = TracerProvider(resource=found.merge(Resource(own)))
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def tracing_from_environment(
    *, version: str, environ: Mapping[str, str] = os.environ
) -> TracerProvider | None:
    """This process's provider, made global, when the environment asks for traces; else None.
    Called once per worker process, after the fork: the batches are sent by a thread."""
    exporters = requested_exporters(environ)
    if not exporters:
        return None
    provider = tracer_provider(exporters, version=version)
    trace.set_tracer_provider(provider)
    start_propagating()
    return provider


def start_propagating() -> None:
    """From now on ``inject_trace_context`` writes the current trace into outgoing headers."""
    global _started
    _started = True


def stop_propagating() -> None:
    global _started
    _started = False


def inject_trace_context(headers: MutableMapping[str, str]) -> None:
    """Add the current trace (``traceparent``, ``tracestate``, and ``baggage``: per
    ``OTEL_PROPAGATORS``) to the headers of a call the service makes, so that the callee's
    spans join the trace. Nothing is added while tracing is off, or outside any span."""
    if _started:
        propagate.inject(headers)


def trace_statements(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A client span for each statement sent on a connection of ``engine``'s pool, inside the
    request's span: the unit of work sends its statements straight through the psycopg
    connection the pool lends, whose cursors are traced from the moment it is made. Only this
    pool: the readiness check's own connections make no spans (the probes are not traced)."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.trace import Span, SpanProcessor
    from sqlalchemy import event

    peer: dict[str, str | int] = {}

    class StatementPeer(SpanProcessor):
        """Names the database and its server on each statement's span, as the psycopg
        instrumentation does for the connections it makes itself but not for those it is
        handed."""

        def on_start(self, span: Span, parent_context: Any = None) -> None:
            scope = span.instrumentation_scope
            if scope is not None and scope.name == _PSYCOPG_SCOPE:
                span.set_attributes(peer)

    provider.add_span_processor(StatementPeer())

    def traced(dbapi_connection: Any, _record: Any) -> None:
        connection = dbapi_connection.driver_connection
        peer.update(
            {
                "db.name": connection.info.dbname,
                "net.peer.name": connection.info.host,
                "net.peer.port": connection.info.port,
            }
        )
        PsycopgInstrumentor.instrument_connection(connection, tracer_provider=provider)

    event.listen(engine.sync_engine, "connect", traced)


_PSYCOPG_SCOPE = "opentelemetry.instrumentation.psycopg"
