"""A fake Vertex AI batch prediction API for Claude: a real HTTP server on loopback speaking the
job API's REST wire format, reading and writing Cloud Storage through a real GCS emulator
(`gcp-storage-emulator`), for the batch plugin's vertex backend.

    with GcsEmulator() as gcs, FakeVertex(gcs.url) as vertex:   # vertex.url is the api_endpoint
        ...

Endpoints (``/v1/projects/{p}/locations/{l}/...``): ``POST batchPredictionJobs`` (reads the input
JSONL from the emulator at once, so a missing object is a 400), ``GET batchPredictionJobs``
(``filter=display_name="..."``, ``pageSize``, ``pageToken``), ``GET batchPredictionJobs/{id}``,
``POST batchPredictionJobs/{id}:cancel``; and ``POST /token``, an OAuth token endpoint for
service-account credentials whose ``token_uri`` points here.

Jobs move when the test says so (knobs take a job's resource name or displayName), or on polls: a job ends on its `polls_to_end`-th GET (default 2;
set it high to drive everything by hand). `process(name, n)` marks the first n requests done
(they count in completionStats), `finish(name)` ends a job (SUCCEEDED, PARTIALLY_SUCCEEDED when
some errored, FAILED when all did), `expire(name)` and `fail(name, message)` end it otherwise,
and `:cancel` makes it CANCELLING, then CANCELLED on the next GET. When a job ends, a result
line for each processed request is written under the job's output prefix, in
``prediction-model-<time>/predictions_0000N.jsonl`` (two objects when there are two or more
results, as Vertex shards them) plus a non-JSONL object that readers must skip; requests never
processed get no line.

Results: a request whose prompt contains ``[errored]`` gets an error `status` (an Anthropic error
body as a string) and no response; a request that is not a valid Vertex Claude request
(``anthropic_version`` other than vertex-2023-10-16, a ``model`` in the request, no messages or
max_tokens) gets an error too; every other request succeeds with "answer to: <prompt start>",
usage input_tokens = len(prompt) // 4 + 1 and output_tokens = 10.

Authentication: with `token` set, every job API call needs ``Authorization: Bearer <token>``
(else 401 UNAUTHENTICATED); ``/token`` issues that token, or refuses with ``invalid_grant`` while
`refuse_tokens` is true. `fail_next(status, count)` answers the next job API calls with an error.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

from loopback import LoopbackServer

ANTHROPIC_VERSION = "vertex-2023-10-16"
ENDED = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"  # nanoseconds, as Google sends


@dataclass
class FakeJob:
    name: str
    body: dict[str, Any]
    requests: list[dict[str, Any]]  # the input lines
    state: str = "JOB_STATE_PENDING"
    create_time: str = field(default_factory=_now)
    end_time: str | None = None
    retrieves: int = 0
    processed: int = 0
    output_directory: str | None = None
    error: str | None = None

    def outcome(self, index: int) -> str:
        request = self.requests[index].get("request") or {}
        return "errored" if "[errored]" in _prompt(request) or _invalid(request) else "succeeded"


def _prompt(request: dict[str, Any]) -> str:
    messages = request.get("messages") or [{}]
    content = messages[0].get("content", "")
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def _invalid(request: dict[str, Any]) -> str | None:
    if request.get("anthropic_version") != ANTHROPIC_VERSION:
        return f"anthropic_version: must be {ANTHROPIC_VERSION}"
    if "model" in request:
        return "model: Extra inputs are not permitted (the model is the job's)"
    if not request.get("messages") or not request.get("max_tokens"):
        return "messages and max_tokens are required"
    return None


class FakeVertex(LoopbackServer):
    def __init__(self, storage_url: str, *, polls_to_end: int = 2, token: str | None = None) -> None:
        self.storage_url = storage_url.rstrip("/")
        self.polls_to_end = polls_to_end
        self.token = token
        self.refuse_tokens = False
        self.jobs: dict[str, FakeJob] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self.authorizations: list[str] = []  # the Authorization header of every job API call
        self._failures: list[int] = []
        self._lock = threading.RLock()
        self._ids = iter(range(1000, 10**9))
        super().__init__(self._handler())

    # -- Cloud Storage (the emulator's JSON API) ---------------------------------------------------

    def read_object(self, uri: str) -> bytes:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        quoted = urllib.parse.quote(name, safe="")
        url = f"{self.storage_url}/download/storage/v1/b/{bucket}/o/{quoted}?alt=media"
        with urllib.request.urlopen(url, timeout=30) as response:
            data: bytes = response.read()
            return data

    def write_object(self, uri: str, data: bytes) -> None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        query = urllib.parse.urlencode({"uploadType": "media", "name": name})
        request = urllib.request.Request(
            f"{self.storage_url}/upload/storage/v1/b/{bucket}/o?{query}",
            data=data,
            headers={"Content-Type": "text/plain"},  # the emulator drops application/jsonl uploads
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    # -- knobs ---------------------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def job(self, name: str) -> FakeJob:
        """A job by its resource name or its displayName."""
        with self._lock:
            if name in self.jobs:
                return self.jobs[name]
            return next(j for j in self.jobs.values() if j.body.get("displayName") == name)

    def process(self, name: str, count: int) -> None:
        with self._lock:
            job = self.job(name)
            job.processed = min(len(job.requests), count)
            if job.state in ("JOB_STATE_PENDING", "JOB_STATE_QUEUED"):
                job.state = "JOB_STATE_RUNNING"

    def finish(self, name: str) -> None:
        with self._lock:
            job = self.job(name)
            job.processed = len(job.requests)
            outcomes = [job.outcome(i) for i in range(len(job.requests))]
            if all(o == "succeeded" for o in outcomes):
                self._end(job, "JOB_STATE_SUCCEEDED")
            elif any(o == "succeeded" for o in outcomes):
                self._end(job, "JOB_STATE_PARTIALLY_SUCCEEDED")
            else:
                self._end(job, "JOB_STATE_FAILED", "every request failed")

    def expire(self, name: str) -> None:
        with self._lock:
            self._end(self.job(name), "JOB_STATE_EXPIRED")

    def fail(self, name: str, message: str) -> None:
        with self._lock:
            self._end(self.job(name), "JOB_STATE_FAILED", message)

    def _end(self, job: FakeJob, state: str, error: str | None = None) -> None:
        if job.state in ENDED:
            return
        job.state = state
        job.error = error
        job.end_time = _now()
        prefix = job.body["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        job.output_directory = f"{prefix}/prediction-model-{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"
        lines = [self._result_line(job, i) for i in range(job.processed)]
        shards = (
            [lines[: (len(lines) + 1) // 2], lines[(len(lines) + 1) // 2 :]] if len(lines) > 1 else [lines]
        )
        for number, shard in enumerate(shards, 1):
            if shard:
                data = "".join(json.dumps(line) + "\n" for line in shard).encode()
                self.write_object(f"{job.output_directory}/predictions_{number:05d}.jsonl", data)
        self.write_object(f"{job.output_directory}/stats.txt", b"not results\n")

    def _result_line(self, job: FakeJob, index: int) -> dict[str, Any]:
        line = job.requests[index]
        request = line.get("request") or {}
        out: dict[str, Any] = {"custom_id": line.get("custom_id"), "request": request}
        problem = _invalid(request)
        if problem or job.outcome(index) == "errored":
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": problem or "prompt is malformed"},
            }
            out["status"] = json.dumps(error)
            return out
        prompt = _prompt(request)
        model = job.body["model"].removeprefix("publishers/anthropic/models/").replace("@", "-")
        out["response"] = {
            "id": f"msg_vrtx_{index:04d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": f"answer to: {prompt[:40]}"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt) // 4 + 1, "output_tokens": 10},
        }
        out["status"] = ""
        return out

    # -- the API -------------------------------------------------------------------------------

    def _job_json(self, job: FakeJob) -> dict[str, Any]:
        succeeded = sum(1 for i in range(job.processed) if job.outcome(i) == "succeeded")
        failed = job.processed - succeeded
        out: dict[str, Any] = {
            **job.body,
            "name": job.name,
            "state": job.state,
            "createTime": job.create_time,
            "updateTime": _now(),
            "completionStats": {
                "successfulCount": str(succeeded),
                "failedCount": str(failed),
                "incompleteCount": str(len(job.requests) - job.processed),
            },
        }
        if job.end_time:
            out["endTime"] = job.end_time
        if job.output_directory:
            out["outputInfo"] = {"gcsOutputDirectory": job.output_directory}
        if job.error:
            out["error"] = {"code": 13, "message": job.error}
        return out

    def _create(self, parent: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        for key in ("displayName", "model", "inputConfig", "outputConfig"):
            if key not in body:
                return 400, _error(400, "INVALID_ARGUMENT", f"{key} is required")
        if not str(body["model"]).startswith("publishers/anthropic/models/"):
            return 400, _error(400, "INVALID_ARGUMENT", f"unknown model {body['model']}")
        source = body["inputConfig"]
        if (
            source.get("instancesFormat") != "jsonl"
            or body["outputConfig"].get("predictionsFormat") != "jsonl"
        ):
            return 400, _error(400, "INVALID_ARGUMENT", "instancesFormat and predictionsFormat must be jsonl")
        if not body["outputConfig"].get("gcsDestination", {}).get("outputUriPrefix", "").startswith("gs://"):
            return 400, _error(400, "INVALID_ARGUMENT", "outputUriPrefix must be a gs:// URI")
        requests: list[dict[str, Any]] = []
        for uri in source.get("gcsSource", {}).get("uris") or []:
            try:
                data = self.read_object(uri)
            except OSError:
                return 400, _error(400, "INVALID_ARGUMENT", f"cannot read {uri}")
            requests.extend(json.loads(line) for line in data.decode().splitlines() if line.strip())
        if not requests:
            return 400, _error(400, "INVALID_ARGUMENT", "the input has no requests")
        with self._lock:
            job = FakeJob(f"{parent}/batchPredictionJobs/{next(self._ids)}", body, requests)
            self.jobs[job.name] = job
            return 200, self._job_json(job)

    def _retrieve(self, job: FakeJob) -> dict[str, Any]:
        with self._lock:
            job.retrieves += 1
            if job.state == "JOB_STATE_CANCELLING":
                self._end(job, "JOB_STATE_CANCELLED")
            elif job.state not in ENDED and job.retrieves >= self.polls_to_end:
                self.finish(job.name)
            return self._job_json(job)

    def _cancel(self, job: FakeJob) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if job.state in ENDED:
                return 400, _error(400, "FAILED_PRECONDITION", f"job {job.name} has already ended")
            job.state = "JOB_STATE_CANCELLING"
            return 200, {}

    def _list(self, parent: str, query: dict[str, list[str]]) -> dict[str, Any]:
        wanted = None
        match = re.fullmatch(r'display_name="(.*)"', query.get("filter", [""])[0])
        if match:
            wanted = match.group(1).replace('\\"', '"').replace("\\\\", "\\")
        size = int(query.get("pageSize", ["100"])[0])
        start = int(query.get("pageToken", ["0"])[0] or 0)
        with self._lock:
            jobs = [
                j
                for j in self.jobs.values()
                if j.name.startswith(parent + "/") and (wanted is None or j.body.get("displayName") == wanted)
            ]
            page = [self._job_json(j) for j in jobs[start : start + size]]
        out: dict[str, Any] = {"batchPredictionJobs": page}
        if start + size < len(jobs):
            out["nextPageToken"] = str(start + size)
        return out

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                fake.calls.append((method, url.path))
                body = (
                    self.rfile.read(int(self.headers.get("content-length") or 0)) if method == "POST" else b""
                )
                if url.path == "/token" and method == "POST":
                    form = parse_qs(body.decode())
                    if fake.refuse_tokens or not form.get("assertion"):
                        return self._send(
                            400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                        )
                    return self._send(
                        200,
                        {
                            "access_token": fake.token or "no-token",
                            "expires_in": 3600,
                            "token_type": "Bearer",
                        },
                    )
                authorization = self.headers.get("authorization", "")
                fake.authorizations.append(authorization)
                if fake.token is not None and authorization != f"Bearer {fake.token}":
                    return self._send(
                        401,
                        _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
                    )
                with fake._lock:
                    failure = fake._failures.pop(0) if fake._failures else None
                if failure is not None:
                    return self._send(failure, _error(failure, "UNAVAILABLE", "the service is unavailable"))
                match = re.fullmatch(
                    r"/v1/(projects/[^/]+/locations/[^/]+)/batchPredictionJobs(?:/([^/:]+))?(:cancel)?",
                    url.path,
                )
                if match is None:
                    return self._send(404, _error(404, "NOT_FOUND", f"no route {url.path}"))
                parent, job_id, cancel = match.groups()
                if job_id is None:
                    if method == "POST":
                        status, answer = fake._create(parent, json.loads(body or b"{}"))
                        return self._send(status, answer)
                    return self._send(200, fake._list(parent, parse_qs(url.query)))
                job = fake.jobs.get(f"{parent}/batchPredictionJobs/{job_id}")
                if job is None:
                    return self._send(404, _error(404, "NOT_FOUND", f"job {job_id} not found"))
                if cancel and method == "POST":
                    status, answer = fake._cancel(job)
                    return self._send(status, answer)
                if not cancel and method == "GET":
                    return self._send(200, fake._retrieve(job))
                return self._send(404, _error(404, "NOT_FOUND", f"no route {method} {url.path}"))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler


def _error(code: int, status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


class GcsEmulator:
    """`gcp-storage-emulator` as a real process on a free loopback port, in memory."""

    def __init__(self, command: str = "gcp-storage-emulator") -> None:
        self.command = command
        self.port = 0
        self.process: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GcsEmulator:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [
                self.command,
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--in-memory",
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # ready when it answers
            try:
                with urllib.request.urlopen(f"{self.url}/storage/v1/b?project=test", timeout=2):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError("gcp-storage-emulator did not start") from None
                time.sleep(0.05)

    def create_bucket(self, name: str, project: str = "test") -> None:
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project={project}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except Exception:
                self.process.kill()
                self.process.wait()
