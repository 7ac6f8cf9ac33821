"""`CallMetrics`: what the dashboard shows per downstream tool (calls, errors, last error,
nearest-rank percentiles over the latest calls)."""

from __future__ import annotations

from hub.client.metrics import WINDOW, CallMetrics, percentile


def test_percentiles_are_nearest_rank():
    ordered = [float(n) for n in range(1, 11)]  # 1..10
    assert percentile(ordered, 0.5) == 5.0
    assert percentile(ordered, 0.9) == 9.0
    assert percentile(ordered, 0.99) == 10.0
    assert percentile([7.0], 0.5) == 7.0


def test_calls_errors_and_a_window_of_latencies():
    metrics = CallMetrics()
    for _ in range(10):
        metrics.record("d", "echo", 1.0)  # slow calls, then enough fast ones to push them out
    for _ in range(WINDOW):
        metrics.record("d", "echo", 0.001)
    metrics.record("d", "fail", 0.002, "Error executing tool fail")
    shown = metrics.snapshot()["d"]
    assert shown["echo"]["calls"] == WINDOW + 10 and shown["echo"]["errors"] == 0
    assert shown["echo"]["last_error"] is None and shown["echo"]["p99_ms"] == 1.0
    assert shown["fail"] == {
        "calls": 1,
        "errors": 1,
        "last_error": "Error executing tool fail",
        "mean_ms": 2.0,
        "p50_ms": 2.0,
        "p90_ms": 2.0,
        "p99_ms": 2.0,
    }
