"""A fake Anthropic API: a real HTTP server on loopback speaking the real wire format, for the
batch plugin (Message Batches) and for the real `claude` CLI (Messages, streamed as SSE), which is
pointed at it with ANTHROPIC_BASE_URL.

Messages: `POST /v1/messages` answers every request with one text block, "reply to: <the start of
the last user message>", streamed (message_start, content_block_start/delta/stop, message_delta,
message_stop) when `stream` is true. `[slow=S]` in the prompt delays the answer S seconds.
`script(...)` queues whole replies (content blocks, e.g. a `tool_use`) for the next requests;
`messages` keeps every request body.

    with FakeAnthropic() as api:          # api.url, api.api_key
        ...                               # AsyncAnthropic(base_url=api.url, api_key=api.api_key)

Endpoints: POST /v1/messages/batches, GET /v1/messages/batches[?limit&after_id&before_id],
GET /v1/messages/batches/{id}, POST /v1/messages/batches/{id}/cancel, DELETE
/v1/messages/batches/{id}, GET /v1/messages/batches/{id}/results (JSONL, streamed).

Behaviour is scripted through the prompts and a few knobs:
- a batch ends on its `polls_to_end`-th retrieve (default 2), or at once with `end(batch_id)`;
- a request whose first user message contains ``[errored]``, ``[expired]`` or ``[canceled]``
  gets that result; every other request succeeds, echoing the start of its prompt, with usage
  input_tokens = len(prompt) // 4 + 1 and output_tokens = 10 (or ``[tokens=N]`` in the prompt);
- `fail_next(status, count)` answers the next `count` API calls with that status (429 with a
  `retry-after: 0` header, 5xx with an `api_error` body);
- `hold_creates(take_effect=True)` holds the answer to every later batch create until the
  returned `threading.Event` is set, as when a hub is killed mid-call (`creates_waiting` counts
  them); the batch exists at once, or with `take_effect=False` only after the event;
- `downloads(batch_id)` counts the result downloads of a batch;
- every request is checked for the key (`x-api-key`, or `Authorization: Bearer` as SDK 2.x sends
  it) and for `anthropic-version`.
Requests are kept as (custom_id, outcome) pairs only, so large batches stay cheap.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from loopback import LoopbackServer

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass
class FakeBatch:
    id: str
    requests: list[tuple[str, str, int]]  # custom_id, outcome, input tokens (+ output in outcome)
    models: list[str]
    created_at: datetime = field(default_factory=_now)
    retrieves: int = 0
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    outputs: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.ended_at is not None:
            return "ended"
        return "canceling" if self.cancel_initiated_at is not None else "in_progress"


class FakeAnthropic(LoopbackServer):
    def __init__(self, *, polls_to_end: int = 2, api_key: str = "test-key") -> None:
        self.polls_to_end = polls_to_end
        self.api_key = api_key
        self.batches: dict[str, FakeBatch] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self._failures: list[int] = []
        self.messages: list[dict[str, Any]] = []  # bodies of POST /v1/messages
        self._scripted: list[list[dict[str, Any]]] = []
        self._hold: threading.Event | None = None
        self._hold_before = False
        self.creates_waiting = 0  # create calls being held now
        self._lock = threading.Lock()
        super().__init__(self._handler())

    # -- knobs ---------------------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def hold_creates(self, *, take_effect: bool = True) -> threading.Event:
        """From now on a batch create waits for the returned event before it answers; with
        `take_effect` the batch exists (and runs) at once, else only once the event is set."""
        with self._lock:
            self._hold = threading.Event()
            self._hold_before = not take_effect
            self.creates_waiting = 0
            return self._hold

    def downloads(self, batch_id: str) -> int:
        return self.calls.count(("GET", f"/v1/messages/batches/{batch_id}/results"))

    def script(self, *replies: list[dict[str, Any]]) -> None:
        """Queue replies (each a list of content blocks) for the next Messages requests."""
        with self._lock:
            self._scripted.extend(replies)

    def _reply_blocks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self._lock:
            self.messages.append(body)
            if self._scripted:
                return self._scripted.pop(0)
        last = _last_user_text(body.get("messages") or [])
        slow = re.search(r"\[slow=([\d.]+)\]", last)
        if slow:
            time.sleep(float(slow.group(1)))
        return [{"type": "text", "text": f"reply to: {last.strip()[:60]}"}]

    def end(self, batch_id: str) -> None:
        with self._lock:
            batch = self.batches[batch_id]
            if batch.ended_at is None:
                batch.ended_at = _now()

    # -- the API -------------------------------------------------------------------------------

    def _batch_json(self, batch: FakeBatch) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended_at is None:
            counts["processing"] = len(batch.requests)
        else:
            for _, outcome, _ in batch.requests:
                counts[outcome] += 1
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "ended_at": _iso(batch.ended_at),
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch.id}/results" if batch.ended_at else None,
        }

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return 400, _error("invalid_request_error", "requests: must be a non-empty list")
        if len(requests) > MAX_REQUESTS:
            return 400, _error(
                "invalid_request_error", f"requests: at most {MAX_REQUESTS} requests per batch"
            )
        seen: set[str] = set()
        kept: list[tuple[str, str, int]] = []
        outputs, texts, models = [], [], []
        for i, request in enumerate(requests):
            custom_id = request.get("custom_id", "")
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                return 400, _error(
                    "invalid_request_error", f"requests.{i}.custom_id: must match {CUSTOM_ID.pattern}"
                )
            if custom_id in seen:
                return 400, _error(
                    "invalid_request_error", f"requests.{i}.custom_id: {custom_id!r} is not unique"
                )
            seen.add(custom_id)
            params = request.get("params") or {}
            if not params.get("model") or not params.get("max_tokens") or not params.get("messages"):
                return 400, _error(
                    "invalid_request_error",
                    f"requests.{i}.params: model, max_tokens and messages are required",
                )
            prompt = _first_text(params["messages"])
            outcome = "succeeded"
            for marker in ("errored", "expired", "canceled"):
                if f"[{marker}]" in prompt:
                    outcome = marker
            tokens = re.search(r"\[tokens=(\d+)\]", prompt)
            kept.append((custom_id, outcome, len(prompt) // 4 + 1))
            outputs.append(int(tokens.group(1)) if tokens else 10)
            texts.append(prompt[:40])
            models.append(params["model"])
        batch = FakeBatch(f"msgbatch_{uuid.uuid4().hex[:24]}", kept, models, outputs=outputs, texts=texts)
        with self._lock:
            self.batches[batch.id] = batch
        return 200, self._batch_json(batch)

    def _retrieve(self, batch: FakeBatch) -> dict[str, Any]:
        with self._lock:
            batch.retrieves += 1
            if batch.ended_at is None and (
                batch.retrieves >= self.polls_to_end or batch.cancel_initiated_at is not None
            ):
                batch.ended_at = _now()
        return self._batch_json(batch)

    def _cancel(self, batch: FakeBatch) -> dict[str, Any]:
        with self._lock:
            if batch.ended_at is None and batch.cancel_initiated_at is None:
                batch.cancel_initiated_at = _now()
                batch.requests = [
                    (cid, "canceled" if out == "succeeded" else out, tok) for cid, out, tok in batch.requests
                ]
        return self._batch_json(batch)

    def _result_lines(self, batch: FakeBatch) -> Iterator[bytes]:
        for i in reversed(range(len(batch.requests))):  # results come in no particular order
            custom_id, outcome, input_tokens = batch.requests[i]
            result: dict[str, Any]
            if outcome == "succeeded":
                result = {
                    "type": "succeeded",
                    "message": {
                        "id": f"msg_{custom_id}",
                        "type": "message",
                        "role": "assistant",
                        "model": batch.models[i],
                        "content": [{"type": "text", "text": f"answer to: {batch.texts[i]}"}],
                        "stop_reason": "end_turn",
                        "stop_sequence": None,
                        "usage": {
                            "input_tokens": input_tokens,
                            "output_tokens": batch.outputs[i],
                            "cache_creation_input_tokens": 0,
                            "cache_read_input_tokens": 0,
                        },
                    },
                }
            elif outcome == "errored":
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": {"type": "invalid_request_error", "message": "prompt is malformed"},
                    },
                }
            else:
                result = {"type": outcome}
            yield (json.dumps({"custom_id": custom_id, "result": result}) + "\n").encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("content-length") or 0))

            def _route(self, method: str) -> None:
                path = urlparse(self.path)
                fake.calls.append((method, path.path))
                body = self._body() if method == "POST" else b""
                key = self.headers.get("x-api-key") or self.headers.get("authorization", "").removeprefix(
                    "Bearer "
                )
                if key != fake.api_key:
                    return self._send(401, _error("authentication_error", "invalid x-api-key"))
                if not self.headers.get("anthropic-version"):
                    return self._send(
                        400, _error("invalid_request_error", "anthropic-version header is required")
                    )
                with fake._lock:
                    failure = fake._failures.pop(0) if fake._failures else None
                if failure == 429:
                    return self._send(429, _error("rate_limit_error", "rate limited"), {"retry-after": "0"})
                if failure is not None:
                    return self._send(failure, _error("api_error", "internal server error"))
                parts = path.path.rstrip("/").split("/")
                if parts == ["", "v1", "messages"] and method == "POST":
                    return self._messages(json.loads(body or b"{}"))
                if parts[:4] != ["", "v1", "messages", "batches"]:
                    return self._send(404, _error("not_found_error", f"no route {path.path}"))
                rest = parts[4:]
                if not rest:
                    if method == "POST":
                        if len(body) > MAX_BYTES:
                            return self._send(413, _error("request_too_large", "batch over 256 MB"))
                        hold = fake._hold
                        if hold is not None:
                            with fake._lock:
                                fake.creates_waiting += 1
                            if fake._hold_before:
                                hold.wait(60)
                        status, answer = fake._create(json.loads(body))
                        if hold is not None:
                            hold.wait(60)
                        return self._send(status, answer)
                    if method == "GET":
                        return self._send(200, fake._list(parse_qs(path.query)))
                batch = fake.batches.get(rest[0])
                if batch is None:
                    return self._send(404, _error("not_found_error", f"batch {rest[0]} not found"))
                if len(rest) == 1 and method == "GET":
                    return self._send(200, fake._retrieve(batch))
                if len(rest) == 1 and method == "DELETE":
                    if batch.ended_at is None:
                        return self._send(400, _error("invalid_request_error", "batch has not ended"))
                    del fake.batches[batch.id]
                    return self._send(200, {"id": batch.id, "type": "message_batch_deleted"})
                if rest[1:] == ["cancel"] and method == "POST":
                    return self._send(200, fake._cancel(batch))
                if rest[1:] == ["results"] and method == "GET":
                    if batch.ended_at is None:
                        return self._send(400, _error("invalid_request_error", "batch has not ended"))
                    self.send_response(200)
                    self.send_header("content-type", "application/binary")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for line in fake._result_lines(batch):
                        self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                    return None
                return self._send(404, _error("not_found_error", f"no route {method} {path.path}"))

            def _messages(self, body: dict[str, Any]) -> None:
                blocks = fake._reply_blocks(body)
                model = body.get("model", "claude-sonnet-4-5")
                input_tokens = max(1, len(json.dumps(body.get("messages", []))) // 4)
                output_tokens = sum(max(1, len(json.dumps(b)) // 4) for b in blocks)
                stop = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
                message = {
                    "id": f"msg_{uuid.uuid4().hex[:24]}",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": input_tokens,
                        "output_tokens": output_tokens,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                }
                if not body.get("stream"):
                    return self._send(200, message)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()

                def event(kind: str, data: dict[str, Any]) -> None:
                    chunk = f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")

                start = {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "usage": {**message["usage"], "output_tokens": 1},
                }
                event("message_start", {"message": start})
                for index, block in enumerate(blocks):
                    if block["type"] == "text":
                        event(
                            "content_block_start",
                            {"index": index, "content_block": {"type": "text", "text": ""}},
                        )
                        event(
                            "content_block_delta",
                            {"index": index, "delta": {"type": "text_delta", "text": block["text"]}},
                        )
                    elif block["type"] == "tool_use":
                        event(
                            "content_block_start", {"index": index, "content_block": {**block, "input": {}}}
                        )
                        event(
                            "content_block_delta",
                            {
                                "index": index,
                                "delta": {
                                    "type": "input_json_delta",
                                    "partial_json": json.dumps(block.get("input", {})),
                                },
                            },
                        )
                    event("content_block_stop", {"index": index})
                event(
                    "message_delta",
                    {
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": output_tokens},
                    },
                )
                event("message_stop", {})
                self.wfile.write(b"0\r\n\r\n")

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_DELETE(self) -> None:
                self._route("DELETE")

        return Handler

    def _list(self, query: dict[str, list[str]]) -> dict[str, Any]:
        limit = int(query.get("limit", ["20"])[0])
        with self._lock:
            ordered = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
        ids = [b.id for b in ordered]
        if query.get("after_id") and query["after_id"][0] in ids:  # the next (older) page
            ordered = ordered[ids.index(query["after_id"][0]) + 1 :]
        elif query.get("before_id") and query["before_id"][0] in ids:  # the previous (newer) page
            ordered = ordered[: ids.index(query["before_id"][0])][-limit:]
        data = [self._batch_json(b) for b in ordered[:limit]]
        return {
            "data": data,
            "has_more": len(ordered) > limit,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if texts:
            return texts[-1]
    return ""


def _first_text(messages: list[dict[str, Any]]) -> str:
    content = messages[0].get("content", "")
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


if __name__ == "__main__":  # run by hand: python fake_anthropic.py
    with FakeAnthropic() as api:
        print(f"fake Anthropic API at {api.url} (x-api-key: {api.api_key})", flush=True)
        while True:
            time.sleep(3600)
