"""OpenTelemetry traces of a job's life: accept, route, admission (inline, or the wait in its queue),
the attempt (the provider call) and delivery to a waiting caller.

Off unless the standard variables ask for it: ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``) or an
OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, OTLP over HTTP);
``OTEL_SDK_DISABLED=true`` keeps it off. The SDK reads the rest itself (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, the exporter's headers and timeouts). Off, every
helper here returns at once, before any OpenTelemetry object is made: no cost on the hot path.

A job's trace context travels with it as a W3C ``traceparent`` (``JobSpec.traceparent``): the caller's
(a ``traceparent`` header), or the accept span's when tracing is on. The scheduler's admission span
and the attempt's span are its children, and the provider call carries the attempt's context (or,
tracing off, the caller's own) so a provider or proxy that traces continues the same trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

log = logging.getLogger("gateway.tracing")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_NOTHING = contextlib.nullcontext()
_state: dict[str, Any] = {"tracer": None, "propagator": None}
incoming: ContextVar[str | None] = ContextVar("incoming_traceparent", default=None)


def enabled() -> bool:
    return _state["tracer"] is not None


def wanted(env: dict[str, str] | None = None) -> bool:
    """Whether the standard variables ask for traces (see the module docstring)."""
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(service: str) -> bool:
    """Start exporting this process's spans when the environment asks for it; True when it does.
    ``service`` names the process unless ``OTEL_SERVICE_NAME`` does."""
    if not wanted():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    _state["tracer"] = provider.get_tracer("ai-gateway")
    _state["propagator"] = TraceContextTextMapPropagator()
    log.info("tracing on: spans of %s go to %s", service, os.environ.get("OTEL_TRACES_EXPORTER") or "otlp")
    return True


def _exporter() -> Any:
    names = [n.strip() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",")]
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if "otlp" not in names:
        raise ValueError(f"OTEL_TRACES_EXPORTER={os.environ.get('OTEL_TRACES_EXPORTER')!r}: the gateway exports "
                         "with otlp (over HTTP) or console")
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the gateway exports OTLP over HTTP "
                         "(http/protobuf); point it at the collector's HTTP port (4318)")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Flush the spans still buffered (a process that ends)."""
    tracer = _state["tracer"]
    if tracer is not None:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.shutdown()  # type: ignore[attr-defined]


def valid_traceparent(value: str | None) -> str | None:
    """A caller's ``traceparent`` when it is a well-formed W3C one (others are ignored, as the spec says)."""
    if value and len(value) == 55 and _TRACEPARENT.match(value):
        return value
    return None


def _context(traceparent: str | None) -> Any:
    if not traceparent:
        return None
    return _state["propagator"].extract({"traceparent": traceparent})


def span(name: str, parent: str | None = None, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A span ``gateway.<name>`` around a block, the child of ``parent`` (a traceparent) or of the current
    span; attributes are ``gateway.<key>``. A shared do-nothing context when tracing is off."""
    tracer = _state["tracer"]
    if tracer is None:
        return _NOTHING
    return _started(tracer, name, parent, attributes)


@contextlib.contextmanager
def _started(tracer: Any, name: str, parent: str | None, attributes: dict[str, Any]) -> Iterator[Any]:
    context = _context(parent) if parent else None
    with tracer.start_as_current_span(f"gateway.{name}", context=context, attributes=_clean(attributes)) as current:
        yield current


def record(name: str, parent: str | None, start: float, end: float | None = None, **attributes: Any) -> None:
    """A span that already happened (a job's wait in its queue): from ``start`` to ``end`` (Unix seconds)."""
    tracer = _state["tracer"]
    if tracer is None:
        return
    current = tracer.start_span(f"gateway.{name}", context=_context(parent), attributes=_clean(attributes),
                                start_time=int(start * 1e9))
    current.end(end_time=int((end or time.time()) * 1e9))


def current_traceparent() -> str | None:
    """The current span's context as a ``traceparent`` (None when tracing is off or no span is open)."""
    if _state["tracer"] is None:
        return None
    carrier: dict[str, str] = {}
    _state["propagator"].inject(carrier)
    return carrier.get("traceparent")


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {f"gateway.{k}": v for k, v in attributes.items() if v is not None}
