"""OpenTelemetry: one trace from the client's call through the hub to the downstream server, for
a proxied call and for `batch_execute`; the hub's metrics; nothing when it is off.

The client and the hub run in this process, their spans caught by an in-memory exporter
installed as the process's tracer provider (which the hub then uses as it is, adding no exporter);
the downstream server is a real process (tests/peers/downstream.py) whose own spans, made by the
MCP SDK from the trace context the hub put in `_meta`, are written to a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hubtests import DOWNSTREAM
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hub import telemetry
from hub.config.settings import TelemetryConfig
from hub.testing import call_ok, make_config, running_hub

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def otel():
    """The process's providers, once (OpenTelemetry allows one per process), with an in-memory
    exporter and reader; spans are dropped again after this module."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, TracerProvider):
        tracer_provider = TracerProvider()
        trace.set_tracer_provider(tracer_provider)
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    processor = SimpleSpanProcessor(exporter)
    tracer_provider.add_span_processor(processor)
    yield exporter, reader
    processor.shutdown()  # later tests' spans go nowhere
    telemetry.STATE.on = False


def _config(tmp_path: Path, spans: Path, **values: Any) -> Any:
    server = {
        "command": sys.executable,
        "args": [str(DOWNSTREAM)],
        "env": {"DOWNSTREAM_SPANS_FILE": str(spans)},
    }
    return make_config(
        tmp_path,
        plugins={"enabled": ["proxy", "batchit"]},
        servers={"d": server},
        telemetry={"enabled": True},
        **values,
    )


def _downstream_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def _one_trace(exporter: InMemorySpanExporter, spans_file: Path, tool: str, downstream_tool: str) -> None:
    """The client's span is the root of one trace holding the hub's spans for `tool` and, in the
    downstream process, the server span of `downstream_tool`, a child of the hub's client span."""
    finished = exporter.get_finished_spans()
    client = next(s for s in finished if s.name == f"MCP send tools/call {tool}")
    trace_id = client.context.trace_id
    ours = [s for s in finished if s.context.trace_id == trace_id]
    names = {s.name for s in ours}
    assert f"tools/call {tool}" in names and f"hub.tool {tool}" in names, names
    sent = [s for s in ours if s.name == f"MCP send tools/call {downstream_tool}"]
    assert sent and all(s.kind == trace.SpanKind.CLIENT for s in sent), names
    theirs = [s for s in _downstream_spans(spans_file) if s["trace_id"] == _hex(trace_id, 32)]
    assert theirs, _downstream_spans(spans_file)
    server = next(s for s in theirs if s["name"] == f"tools/call {downstream_tool}")
    assert server["kind"] == "SERVER"
    assert server["parent_id"] in {_hex(s.context.span_id, 16) for s in sent}


async def test_a_proxied_call_is_one_trace_from_client_to_downstream(tmp_path, otel):
    exporter, reader = otel
    spans = tmp_path / "downstream-spans.jsonl"
    async with running_hub(_config(tmp_path, spans)) as (_, client):
        assert telemetry.STATE.on
        await call_ok(client, "d__echo", text="traced")
    _one_trace(exporter, spans, "d__echo", "echo")
    data = reader.get_metrics_data()
    seen = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"hub.tool.calls", "hub.tool.duration", "hub.downstream.calls"} <= set(seen), sorted(seen)
    calls = [p for p in seen["hub.tool.calls"].data.data_points if p.attributes.get("tool") == "d__echo"]
    assert calls and calls[0].value >= 1 and calls[0].attributes["outcome"] == "ok"


async def test_batch_execute_is_one_trace_from_client_to_downstream(tmp_path, otel):
    exporter, _ = otel
    spans = tmp_path / "downstream-spans.jsonl"
    operations = [
        {"tool": "echo", "arguments": {"text": "a"}},
        {"tool": "add", "arguments": {"a": 1, "b": 2}},
    ]
    async with running_hub(_config(tmp_path, spans)) as (_, client):
        await call_ok(client, "batch_execute", targetServer={"name": "d"}, operations=operations)
    _one_trace(exporter, spans, "batch_execute", "echo")
    _one_trace(exporter, spans, "batch_execute", "add")


async def test_a_shortcut_call_continues_the_clients_trace_from_meta(otel):
    """The transports' shortcuts pass the SDK by: the hub's own server span takes its parent from
    the `traceparent` in `_meta`, as the SDK's does."""
    exporter, _ = otel
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    meta = {"traceparent": f"00-{trace_id}-{parent}-01"}

    async def run() -> dict[str, Any]:
        return {"content": [], "isError": True}

    telemetry.STATE.on = True
    await telemetry.traced_tool_call("t", "p", {"_meta": meta}, run)
    server = next(s for s in exporter.get_finished_spans() if s.name == "tools/call t")
    assert server.kind == trace.SpanKind.SERVER
    assert _hex(server.context.trace_id, 32) == trace_id and _hex(server.parent.span_id, 16) == parent
    inner = next(s for s in exporter.get_finished_spans() if s.name == "hub.tool t")
    assert inner.status.status_code == trace.StatusCode.ERROR


def test_off_unless_asked_and_said_when_the_sdk_is_missing(monkeypatch):
    assert not telemetry.env_asks({})
    assert telemetry.env_asks({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert telemetry.env_asks({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not telemetry.env_asks({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not telemetry.wanted(TelemetryConfig(enabled=False), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert telemetry.configure(TelemetryConfig(), {}) is None and not telemetry.STATE.on
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if the extra were not installed
    problem = telemetry.configure(TelemetryConfig(enabled=True), {})
    assert problem is not None and "pip install 'mcp-plugin-hub[telemetry]'" in problem
    assert not telemetry.STATE.on
