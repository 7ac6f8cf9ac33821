"""OpenTelemetry for the hub: a trace for every tool call (client -> hub -> downstream), spans for
the plugins' long work (pool tasks, batch jobs), and metrics, through the OpenTelemetry API.

**Off, it costs nothing.** `configure` runs once per hub start; unless ``[telemetry] enabled`` or
the standard ``OTEL_*`` variables ask for export, `STATE.on` stays False and the hot paths
(`hub.server.dispatch`, `hub.client.raw`, `hub.client.cache`, the budget) test that one flag and
do nothing else: no span, no context lookup, no instrument. Plugins get no-op tracer and meter
objects (`PluginTelemetry`).

**On**, the hub uses the OpenTelemetry SDK with OTLP/HTTP exporters (the optional extra
``mcp-plugin-hub[telemetry]``; asked for without it, the hub says so once and runs without).
OpenTelemetry's providers are process-wide, so this module's state is too: a provider already
installed (by the application embedding the hub, or a test's in-memory exporter) is used as it
is, and the hub adds no exporter to it.

What is traced:

- a tool call: the SDK's server span when the request took the SDK's path, else (the transports'
  shortcuts) a `SERVER` span ``tools/call NAME`` whose parent is the W3C trace context the client
  sent in ``params._meta`` (``traceparent``, ``tracestate``), as the MCP SDK reads it; inside it
  a span for the hub's handling (``hub.tool NAME``: plugin, outcome);
- the call to a downstream server: a `CLIENT` span ``MCP send tools/call TOOL``, its context
  written into the request's ``_meta`` as the SDK does (`inject`), so the downstream server's own
  spans join the trace (the SDK's session path does this itself);
- what plugins trace with `PluginTelemetry` (pool tasks, batch jobs).

Metrics (`Instruments`): ``hub.tool.calls``, ``hub.tool.errors``, ``hub.tool.duration`` (by tool
and plugin), ``hub.downstream.calls`` and ``hub.downstream.duration`` (by server and tool),
``hub.spend`` (USD, by plugin), and the plugins' own (the pool's queue length and busy slots).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

if TYPE_CHECKING:
    from hub.config.settings import TelemetryConfig

__all__ = ["STATE", "PluginTelemetry", "configure", "env_asks", "flush", "inject", "traced_tool_call"]

ENDPOINT_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)
INSTALL_HINT = "pip install 'mcp-plugin-hub[telemetry]'"


class Instruments:
    """The hub's own metric instruments, made on the meter in use."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.tool_calls = meter.create_counter("hub.tool.calls", "{call}", "Tool calls the hub answered.")
        self.tool_errors = meter.create_counter(
            "hub.tool.errors", "{call}", "Tool calls answered with an error result."
        )
        self.tool_duration = meter.create_histogram("hub.tool.duration", "s", "Time to answer a tool call.")
        self.downstream_calls = meter.create_counter(
            "hub.downstream.calls", "{call}", "Tool calls sent to downstream servers."
        )
        self.downstream_duration = meter.create_histogram(
            "hub.downstream.duration", "s", "Time a downstream server took to answer a tool call."
        )
        self.spend = meter.create_counter("hub.spend", "USD", "Spend recorded in the budget's ledger.")


class _State:
    """Whether telemetry is on, and the tracer, meter and instruments in use (no-ops when off)."""

    def __init__(self) -> None:
        self.on = False
        self.problem: str | None = None  # why it is off although asked for (the SDK is missing)
        self.tracer: trace.Tracer = trace.NoOpTracer()
        self.meter: metrics.Meter = metrics.NoOpMeter("hub")
        self.instruments = Instruments(self.meter)
        self._providers: list[Any] = []  # SDK providers this module made (flushed at exit)


STATE = _State()


def env_asks(environ: Mapping[str, str]) -> bool:
    """Whether the standard OpenTelemetry variables ask for OTLP export."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if any(environ.get(name) for name in ENDPOINT_VARIABLES):
        return True
    exporters = f"{environ.get('OTEL_TRACES_EXPORTER', '')},{environ.get('OTEL_METRICS_EXPORTER', '')}"
    return "otlp" in exporters.lower()


def wanted(settings: TelemetryConfig, environ: Mapping[str, str]) -> bool:
    """``[telemetry] enabled`` when set, else what the environment asks."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return settings.enabled if settings.enabled is not None else env_asks(environ)


def configure(settings: TelemetryConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """Turn telemetry on or off for this process; returns why it is off although asked for
    (one sentence), else None. Idempotent: providers are set up once per process."""
    environ = os.environ if environ is None else environ
    if not wanted(settings, environ):
        STATE.on = False
        return None
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError:
        STATE.on, STATE.problem = (
            False,
            (
                "telemetry is asked for ([telemetry] or OTEL_* variables) but the OpenTelemetry SDK is not "
                f"installed: {INSTALL_HINT}; running without it"
            ),
        )
        return STATE.problem
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, TracerProvider) and _exporting(environ, "OTEL_TRACES_EXPORTER"):
        tracer_provider = _tracer_provider(settings)
    meter_provider = metrics.get_meter_provider()
    if not isinstance(meter_provider, MeterProvider) and _exporting(environ, "OTEL_METRICS_EXPORTER"):
        meter_provider = _meter_provider(settings)
    from hub import __version__

    STATE.tracer = tracer_provider.get_tracer("hub", __version__)
    STATE.meter = meter_provider.get_meter("hub", __version__)
    STATE.instruments = Instruments(STATE.meter)
    STATE.on, STATE.problem = True, None
    return None


def _exporting(environ: Mapping[str, str], variable: str) -> bool:
    return environ.get(variable, "otlp").strip().lower() != "none"


def _endpoint(settings: TelemetryConfig, signal: str) -> str | None:
    return f"{settings.endpoint.rstrip('/')}/v1/{signal}" if settings.endpoint else None


def _resource(settings: TelemetryConfig) -> dict[str, Any]:
    """The resource's attributes: `service_name`, unless OTEL_SERVICE_NAME names it and the
    configuration keeps the default."""
    if settings.service_name == "hub" and os.environ.get("OTEL_SERVICE_NAME"):
        return {}
    return {"service.name": settings.service_name}


def _tracer_provider(settings: TelemetryConfig) -> Any:
    """An SDK tracer provider exporting by OTLP/HTTP in batches, installed process-wide."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create(_resource(settings)))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_endpoint(settings, "traces"))))
    trace.set_tracer_provider(provider)
    STATE._providers.append(provider)
    return provider


def _meter_provider(settings: TelemetryConfig) -> Any:
    """An SDK meter provider exporting by OTLP/HTTP every `metrics_interval_s`, installed process-wide."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=_endpoint(settings, "metrics")),
        export_interval_millis=settings.metrics_interval_s * 1000,
    )
    provider = MeterProvider(resource=Resource.create(_resource(settings)), metric_readers=[reader])
    metrics.set_meter_provider(provider)
    STATE._providers.append(provider)
    return provider


def flush(timeout_s: float = 5.0) -> None:
    """Export what is buffered (at the hub's exit); errors are the exporter's to log."""
    for provider in STATE._providers:
        with contextlib.suppress(Exception):
            provider.force_flush(int(timeout_s * 1000))


# -- the hot paths (called only when STATE.on) --------------------------------------------------


async def traced_tool_call(
    name: str, plugin: str, params: Mapping[str, Any], run: Callable[[], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """`run()` (a tool call's execution, its result as wire JSON) in the call's spans, counted."""
    tracer = STATE.tracer
    attributes = {"gen_ai.tool.name": name, "gen_ai.operation.name": "execute_tool", "hub.plugin": plugin}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if not trace.get_current_span().get_span_context().is_valid:  # a shortcut: no SDK span
            meta = params.get("_meta")
            parent = propagate.extract(meta) if isinstance(meta, dict) else None
            stack.enter_context(
                tracer.start_as_current_span(
                    f"tools/call {name}",
                    context=parent,
                    kind=SpanKind.SERVER,
                    attributes={"mcp.method.name": "tools/call", **attributes},
                )
            )
        span = stack.enter_context(tracer.start_as_current_span(f"hub.tool {name}", attributes=attributes))
        result = await run()
        failed = result.get("isError") is True or ("error" in result and "content" not in result)
        if failed:
            span.set_status(StatusCode.ERROR)
            span.set_attribute("error.type", "tool_error")
    _count_call(name, plugin, time.perf_counter() - started, failed)
    return result


def _count_call(name: str, plugin: str, seconds: float, failed: bool) -> None:
    labels = {"tool": name, "plugin": plugin}
    instruments = STATE.instruments
    instruments.tool_calls.add(1, {**labels, "outcome": "error" if failed else "ok"})
    if failed:
        instruments.tool_errors.add(1, labels)
    instruments.tool_duration.record(seconds, labels)


@contextlib.contextmanager
def downstream_span(tool: str, params: dict[str, Any]) -> Iterator[None]:
    """A `CLIENT` span for a `tools/call` the hub sends on its own pipe, its context written into
    `params["_meta"]` (a copy: the caller's dict is not changed under it)."""
    with STATE.tracer.start_as_current_span(
        f"MCP send tools/call {tool}",
        kind=SpanKind.CLIENT,
        attributes={"mcp.method.name": "tools/call", "gen_ai.tool.name": tool},
    ):
        inject(params)
        yield


def inject(params: dict[str, Any]) -> None:
    """Write the current trace context into `params["_meta"]` (W3C traceparent / tracestate)."""
    meta = dict(params.get("_meta") or {})
    propagate.inject(meta)
    params["_meta"] = meta


def count_downstream(server: str, tool: str, seconds: float, failed: bool) -> None:
    labels = {"server": server, "tool": tool}
    STATE.instruments.downstream_calls.add(1, {**labels, "outcome": "error" if failed else "ok"})
    STATE.instruments.downstream_duration.record(seconds, labels)


def count_spend(plugin: str, amount_usd: float) -> None:
    if amount_usd:
        STATE.instruments.spend.add(amount_usd, {"plugin": plugin})


# -- what plugins get ----------------------------------------------------------------------------


class PluginTelemetry:
    """OpenTelemetry as a plugin sees it (``hub.telemetry``): free when telemetry is off.

    ``on`` says whether spans and metrics go anywhere; ``tracer`` and ``meter`` are the
    OpenTelemetry API objects in use (no-ops when off); ``span(name, attributes=, parent=,
    start_time=)`` is a context manager giving the span (a non-recording one when off);
    ``current()`` the active trace context, to parent later work on (None when off)."""

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin

    @property
    def on(self) -> bool:
        return STATE.on

    @property
    def tracer(self) -> trace.Tracer:
        return STATE.tracer

    @property
    def meter(self) -> metrics.Meter:
        return STATE.meter

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        attributes: Mapping[str, Any] | None = None,
        parent: otel_context.Context | None = None,
        start_time: float | None = None,
    ) -> Iterator[trace.Span]:
        """A span named `name` (attributes, the parent context from `current()`, a start time in
        seconds since the epoch); an exception leaving it marks it failed."""
        if not STATE.on:
            yield INVALID_SPAN
            return
        with STATE.tracer.start_as_current_span(
            name,
            context=parent,
            attributes={"hub.plugin": self.plugin, **(attributes or {})},
            start_time=None if start_time is None else int(start_time * 1e9),
        ) as span:
            yield span

    def current(self) -> otel_context.Context | None:
        """The active trace context (to parent work that runs later), or None when off."""
        return otel_context.get_current() if STATE.on else None
