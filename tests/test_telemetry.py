"""OpenTelemetry: one trace from the client's call through the hub to the downstream server, for
a proxied call and for `batch_execute`; pool task and batch job spans in the trace of the call
that asked for them; the hub's metrics (calls, latency, spend, the pool's gauges); export by
OTLP/HTTP from the shared process when the standard variables ask; nothing when it is off.

The client and the hub run in this process, their spans caught by an in-memory exporter
installed as the process's tracer provider (which the hub then uses as it is, adding no exporter);
the downstream server is a real process (tests/peers/downstream.py) whose own spans, made by the
MCP SDK from the trace context the hub put in `_meta`, are written to a file. The export test runs
a real bridge and shared process against an OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import gzip
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_anthropic import FakeAnthropic
from hubtests import DOWNSTREAM, TESTS, HubProcess, hub_env, stop_shared_hubs
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
FAKE_CLAUDE = TESTS / "peers" / "fake_claude.py"


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


async def _finished(exporter: InMemorySpanExporter, name: str) -> Any:
    """The span `name` once it has ended (a task's and a job's end after the call that asked)."""
    with anyio.fail_after(30):
        while True:
            found = [s for s in exporter.get_finished_spans() if s.name == name]
            if found:
                return found[-1]
            await anyio.sleep(0.02)


async def test_pool_tasks_and_batch_jobs_are_spans_in_the_trace_of_their_call(tmp_path, otel):
    exporter, reader = otel
    with FakeAnthropic() as api:
        config = make_config(
            tmp_path,
            plugins={
                "enabled": ["pool", "batch"],
                "pool": {"claude_command": f"{sys.executable} {FAKE_CLAUDE}", "slots": 1},
                "batch": {
                    "api_key": api.api_key,
                    "base_url": api.url,
                    "results_dir": str(tmp_path / "results"),
                    "poll_initial_s": 0.05,
                    "poll_factor": 1.0,
                    "poll_jitter": 0,
                },
            },
            telemetry={"enabled": True},
        )
        async with running_hub(config) as (_, client):
            ran = await call_ok(client, "pool_run", prompt="traced work [cost=0.05]")
            job = (await call_ok(client, "send_to_batch", packet_text="traced batch"))["job_id"]
            task_span = await _finished(exporter, "pool task")
            job_span = await _finished(exporter, "batch job")
            data = reader.get_metrics_data()  # while the pool is there to observe
    for span, call in ((task_span, "hub.tool pool_run"), (job_span, "hub.tool send_to_batch")):
        asked = next(s for s in exporter.get_finished_spans() if s.name == call)
        assert (
            span.context.trace_id == asked.context.trace_id and span.parent.span_id == asked.context.span_id
        )
    assert task_span.attributes["pool.task_id"] == ran["task_id"]
    assert (
        task_span.attributes["pool.status"] == "completed" and task_span.attributes["pool.spend_usd"] == 0.05
    )
    assert job_span.attributes["batch.job_id"] == job and job_span.attributes["batch.state"] == "succeeded"
    seen = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"hub.spend", "hub.pool.queue_length", "hub.pool.slots_busy"} <= set(seen), sorted(seen)
    spent = [p for p in seen["hub.spend"].data.data_points if p.attributes == {"plugin": "pool"}]
    assert spent and spent[0].value >= 0.05


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


class OtlpReceiver:
    """An OTLP/HTTP receiver on loopback: keeps each POST's path and (protobuf) body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                with receiver.changed:
                    receiver.received.append((self.path, body))
                    receiver.changed.notify_all()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path: str, *needles: bytes, timeout: float = 30.0) -> bytes:
        """A body POSTed to `path` holding every needle (the spans or metrics asked for)."""
        with self.changed:
            found = self.changed.wait_for(
                lambda: next(
                    (b for p, b in self.received if p == path and all(n in b for n in needles)), None
                ),
                timeout,
            )
        assert found, f"nothing POSTed to {path} holds {needles}: {[p for p, _ in self.received]}"
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_shared_process_exports_by_otlp_what_the_variables_ask(tmp_path):
    """The standard variables alone turn export on: a call through the bridge to the shared
    process, carrying the client's `traceparent` in `_meta`, reaches an OTLP/HTTP receiver as
    spans of the client's trace, and the metrics follow."""
    receiver = OtlpReceiver()
    (tmp_path / "hub.toml").write_text(
        f"[plugins]\nenabled = ['proxy']\n[servers.d]\ncommand = '{sys.executable}'\nargs = ['{DOWNSTREAM}']\n"
    )
    env = hub_env(
        tmp_path,
        HUB_SHARE="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="50",  # spans leave in 50 ms batches, not 5 s ones
        HUB_TELEMETRY__METRICS_INTERVAL_S="1",
    )
    hub = HubProcess(tmp_path, "client", env, "--config", str(tmp_path / "hub.toml"))
    try:
        trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
        meta = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        reply = hub.request("tools/call", {"name": "d__echo", "arguments": {"text": "hi"}, "_meta": meta})
        assert isinstance(reply, dict) and not reply["result"].get("isError"), reply
        receiver.wait_for(
            "/v1/traces", bytes.fromhex(trace_id), b"hub.tool d__echo", b"MCP send tools/call echo"
        )
        receiver.wait_for("/v1/metrics", b"hub.tool.calls", b"hub.downstream.duration", b"d__echo")
    finally:
        hub.close()
        stop_shared_hubs(env, tmp_path / "client")
        receiver.close()


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
