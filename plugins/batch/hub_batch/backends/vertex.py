"""Vertex AI batch prediction for Claude (the original's second backend), behind the same small
interface as the Anthropic one.

One API batch is one BatchPredictionJob. `create` rewrites the spool file's Anthropic body
(``{"requests": [{"custom_id", "params"}]}``) line by line as Vertex JSONL
(``{"custom_id", "request": {params without model, "anthropic_version": "vertex-2023-10-16"}}``),
uploads it to ``gs://BUCKET/PREFIX/NAME/input.jsonl`` and creates the job, whose output goes
under ``gs://BUCKET/PREFIX/NAME/output``. A job takes one model, so the spool starts a part per
model for this backend (`one_model_per_batch`).

`result_lines` reads every ``.jsonl`` object of the job's output directory and turns each line
into an Anthropic result line (``{"custom_id", "result": {"type": "succeeded", "message"} |
{"type": "errored", "error"}}``), so the result files, per-request outcomes and costs are the
same for both backends; a request the job never answered gets a line of its own: ``canceled``
(cancelled job), ``expired`` (expired job) or ``errored`` (anything else, with the job's error).

google-cloud-storage is synchronous: its calls run in worker threads, and uploads and downloads
are streamed (a request body is never held whole in memory). It follows STORAGE_EMULATOR_HOST.
The job API is plain REST over httpx2 (the client the anthropic SDK uses); credentials come from
google-auth: application-default, a service-account file, or anonymous (emulators and fakes).
The Google libraries are the `[vertex]` extra and are imported only when this backend is used.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.to_thread
import httpx2
from pydantic import BaseModel, ConfigDict, Field

from . import BackendError, RemoteBatch

ANTHROPIC_VERSION = "vertex-2023-10-16"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
CHUNK = 1 << 20
UPLOAD_CHUNK = 8 << 20  # resumable uploads in 8 MB pieces (a multiple of 256 KiB)
REQUESTS_LABEL = "hub-requests"  # the job's request count, so any hub can report its progress
ATTEMPTS = 3
# Creating a job is not idempotent: retry only answers that say it was not processed.
CREATE_RETRY_STATUSES = (429, 503)
CLOCK_SKEW_S = 60.0
ENDED = {
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
}
# What a request with no output line becomes when its job ended in this state.
UNANSWERED = {"JOB_STATE_CANCELLED": "canceled", "JOB_STATE_EXPIRED": "expired"}
SETTINGS_HELP = (
    "[plugins.batch.vertex] project and bucket (or the environment variables VERTEX_PROJECT and "
    "VERTEX_GCS_BUCKET); location (VERTEX_LOCATION), prefix (VERTEX_GCS_PREFIX), api_endpoint and "
    "credentials are optional"
)
CREDENTIALS_HELP = (
    "check [plugins.batch.vertex] credentials: 'default' (application-default credentials: "
    "`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS), the path of a "
    "service-account key file, or 'anonymous' (emulators only)"
)


class VertexSettings(BaseModel):
    """`[plugins.batch.vertex]`: where Vertex AI batch jobs run. ``${VAR}`` is expanded in each."""

    model_config = ConfigDict(extra="forbid")
    project: str = Field(default="${VERTEX_PROJECT:-}", description="Google Cloud project id.")
    location: str = Field(
        default="${VERTEX_LOCATION:-us-east5}", description="Region of the jobs (or 'global')."
    )
    bucket: str = Field(
        default="${VERTEX_GCS_BUCKET:-}", description="GCS bucket for the jobs' input and output."
    )
    prefix: str = Field(default="${VERTEX_GCS_PREFIX:-hub-batch}", description="Object prefix in the bucket.")
    api_endpoint: str | None = Field(
        default=None,
        description="The job API's base URL; default https://{location}-aiplatform.googleapis.com.",
    )
    credentials: str = Field(
        default="default",
        description="'default' (application-default credentials), a service-account file, or 'anonymous'.",
    )


@dataclass(frozen=True)
class VertexConfig:
    project: str
    location: str
    bucket: str
    prefix: str  # '' or ending in '/'
    api_endpoint: str
    credentials: str

    @property
    def jobs_path(self) -> str:
        return f"/v1/projects/{self.project}/locations/{self.location}/batchPredictionJobs"


def resolve(settings: VertexSettings, expand: Any) -> tuple[VertexConfig | None, list[str]]:
    """The configuration with variables expanded (`expand(text, where)`), or None and the keys
    that are missing."""
    values = {
        key: expand(getattr(settings, key), f"plugins.batch.vertex.{key}").strip()
        for key in ("project", "location", "bucket", "prefix", "credentials")
    }
    missing = [key for key in ("project", "location", "bucket") if not values[key]]
    if missing:
        return None, missing
    bucket = values["bucket"].removeprefix("gs://").strip("/")
    prefix = values["prefix"].strip("/")
    location = values["location"]
    endpoint = settings.api_endpoint and expand(settings.api_endpoint, "plugins.batch.vertex.api_endpoint")
    if not endpoint:
        host = (
            "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
        )
        endpoint = f"https://{host}"
    return (
        VertexConfig(
            project=values["project"],
            location=location,
            bucket=bucket,
            prefix=f"{prefix}/" if prefix else "",
            api_endpoint=endpoint.rstrip("/"),
            credentials=values["credentials"] or "default",
        ),
        [],
    )


def _google() -> Any:
    """The Google modules, or a clear error naming the install command."""
    try:
        import google.auth
        import google.auth.credentials
        import google.auth.exceptions
        import google.auth.transport.requests
        import google.oauth2.service_account
        from google.api_core import exceptions as api_exceptions
        from google.cloud import storage
        from google.cloud.storage.retry import DEFAULT_RETRY
    except ImportError as exc:
        raise BackendError(
            f"the vertex backend needs the hub's [vertex] extra (google-auth and google-cloud-storage; "
            f"{exc.name or exc} is missing): install them with `{sys.executable} -m pip install google-auth "
            "google-cloud-storage`, or reinstall the hub as `pip install '.[vertex]'` from its checkout",
            retryable=False,
        ) from None
    return type(
        "Google",
        (),
        {
            "auth": google.auth,
            "credentials": google.auth.credentials,
            "exceptions": google.auth.exceptions,
            "requests": google.auth.transport.requests,
            "service_account": google.oauth2.service_account,
            "api_exceptions": api_exceptions,
            "storage": storage,
            "storage_retry": DEFAULT_RETRY,
        },
    )


# -- the request body: Anthropic batch JSON in, Vertex JSONL out -------------------------------


def anthropic_requests(source: IO[bytes]) -> Iterator[dict[str, Any]]:
    """The requests of a ``{"requests": [...]}`` body, decoded one at a time from a stream."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8")()
    buffer, position, ended, want = "", 0, False, CHUNK

    def more() -> bool:
        nonlocal buffer, position, ended
        if ended:
            return False
        chunk = source.read(want)
        if not chunk:
            ended = True
            buffer = buffer[position:] + text.decode(b"", final=True)
        else:
            buffer = buffer[position:] + text.decode(chunk)
        position = 0
        return True

    def skip(chars: str) -> None:
        nonlocal position
        while True:
            while position < len(buffer) and buffer[position] in chars:
                position += 1
            if position < len(buffer) or not more():
                return

    skip(" \t\r\n")
    head = re.compile(r'\{\s*"requests"\s*:\s*\[')
    while not ended and len(buffer) - position < 64:
        more()
    match = head.match(buffer, position)
    if match is None:
        raise ValueError('the body does not start with {"requests": [')
    position = match.end()
    while True:
        skip(" \t\r\n,")
        if position >= len(buffer):
            raise ValueError("the body ends inside its request list")
        if buffer[position] == "]":
            return
        try:
            request, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError:
            if not more():
                raise
            want = min(want * 2, 64 * CHUNK)  # a request larger than what was read so far
            continue
        want = CHUNK
        position = end
        yield request


def to_vertex_jsonl(source: Path, target: Path) -> tuple[str, int]:
    """Rewrite an Anthropic batch body as Vertex JSONL, streamed; returns (model, request count)."""
    model: str | None = None
    count = 0
    with source.open("rb") as src, target.open("w", encoding="utf-8") as out:
        for request in anthropic_requests(src):
            params = dict(request["params"])
            this = params.pop("model")
            if model is None:
                model = this
            elif this != model:
                raise BackendError(
                    f"one Vertex job takes one model, and this batch has {model} and {this}",
                    retryable=False,
                )
            params["anthropic_version"] = ANTHROPIC_VERSION
            line = {"custom_id": request["custom_id"], "request": params}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            count += 1
    if model is None:
        raise BackendError("the batch has no requests", retryable=False)
    return model, count


# -- results: Vertex output lines in, Anthropic result lines out -------------------------------


def _error_result(kind: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}


def result_line(line: Mapping[str, Any]) -> dict[str, Any]:
    """One Vertex output line as an Anthropic result line."""
    request = line.get("request") if isinstance(line.get("request"), dict) else {}
    custom_id = line.get("custom_id") or (request or {}).get("custom_id") or ""
    response = line.get("response")
    status = line.get("status")
    if isinstance(response, dict) and response.get("type") == "error":
        error = response.get("error") or {}
        result = _error_result(str(error.get("type", "api_error")), str(error.get("message", "no message")))
    elif isinstance(response, dict) and "content" in response:  # a message, whatever `status` says
        result = {"type": "succeeded", "message": response}
    else:
        result = _error_result("api_error", _status_message(status))
    return {"custom_id": custom_id, "result": result}


def _status_message(status: Any) -> str:
    """Vertex's error `status`: a string (often an Anthropic error body as JSON) or an object."""
    if isinstance(status, str):
        with contextlib.suppress(ValueError):
            parsed = json.loads(status)
            if isinstance(parsed, dict):
                status = parsed
    if isinstance(status, dict):
        inner = status.get("error")
        error: dict[str, Any] = inner if isinstance(inner, dict) else status
        kind = error.get("type") or error.get("status") or error.get("code")
        message = error.get("message") or json.dumps(status)
        return f"{kind}: {message}" if kind else str(message)
    return str(status) if status else "Vertex returned neither a response nor an error for this request"


def unanswered_result(state: str, job_error: str | None) -> dict[str, Any]:
    kind = UNANSWERED.get(state)
    if kind is not None:
        return {"type": kind}
    why = f"the Vertex job ended {state.removeprefix('JOB_STATE_')} without a result for this request"
    return _error_result("api_error", f"{why}: {job_error}" if job_error else why)


# -- the job resource --------------------------------------------------------------------------


def _timestamp(value: str | None) -> float | None:
    """RFC 3339 (nanoseconds allowed) to unix time."""
    if not value:
        return None
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return None


def remote(job: Mapping[str, Any], count: int | None = None) -> RemoteBatch:
    """A job resource as the hub's RemoteBatch: Vertex's states mapped to processing_status and
    its completion stats to request counts (requests with no outcome are processing while the
    job runs, and canceled, expired or errored once it has ended)."""
    state = str(job.get("state") or "JOB_STATE_UNSPECIFIED")
    labels = job.get("labels") or {}
    if count is None:
        try:
            count = int(labels.get(REQUESTS_LABEL, 0))
        except (TypeError, ValueError):
            count = 0
    stats = job.get("completionStats") or {}
    succeeded = int(stats.get("successfulCount") or 0)
    failed = int(stats.get("failedCount") or 0)
    rest = max(0, count - succeeded - failed)
    counts = {"processing": 0, "succeeded": succeeded, "errored": failed, "canceled": 0, "expired": 0}
    if state in ENDED:
        counts[UNANSWERED.get(state, "errored")] += rest
        processing_status = "ended"
    else:
        counts["processing"] = rest
        processing_status = "canceling" if state == "JOB_STATE_CANCELLING" else "in_progress"
    return RemoteBatch(
        id=str(job.get("name", "")),
        processing_status=processing_status,
        request_counts=counts,
        results_url=_output_directory(job) if state in ENDED else None,
        created_at=job.get("createTime"),
        ended_at=job.get("endTime") if state in ENDED else None,
        expires_at=None,
    )


def _output_directory(job: Mapping[str, Any]) -> str | None:
    output = (job.get("outputInfo") or {}).get("gcsOutputDirectory")
    if output:
        return str(output)
    destination = ((job.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix")
    return str(destination) if destination else None


def _split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise BackendError(f"not a Cloud Storage URI: {uri!r}", retryable=False)
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


class VertexBackend:
    name = "vertex"
    one_model_per_batch = True

    def __init__(self, config: VertexConfig) -> None:
        self.config = config
        self.google = _google()
        self._credentials: Any = None
        if config.credentials == "anonymous":
            self._credentials = self.google.credentials.AnonymousCredentials()
        elif config.credentials != "default":
            path = Path(config.credentials).expanduser()
            try:
                self._credentials = self.google.service_account.Credentials.from_service_account_file(
                    str(path), scopes=SCOPES
                )
            except FileNotFoundError:
                raise BackendError(
                    f"the Vertex credentials file {str(path)!r} does not exist; {CREDENTIALS_HELP}",
                    retryable=False,
                ) from None
            except (ValueError, KeyError, OSError) as exc:
                raise BackendError(
                    f"the Vertex credentials file {str(path)!r} is not a service-account key ({exc}); "
                    f"{CREDENTIALS_HELP}",
                    retryable=False,
                ) from None
        self._auth_lock = anyio.Lock()
        self._storage_lock = anyio.Lock()
        self._storage: Any = None
        self.http = httpx2.AsyncClient(base_url=config.api_endpoint, timeout=httpx2.Timeout(60.0))

    # -- credentials and clients ---------------------------------------------------------------

    async def _creds(self) -> Any:
        if self._credentials is None:

            def default() -> Any:
                credentials, _ = self.google.auth.default(scopes=SCOPES)
                return credentials

            try:
                self._credentials = await anyio.to_thread.run_sync(default)
            except self.google.exceptions.DefaultCredentialsError as exc:
                raise BackendError(
                    f"no Google application-default credentials: {exc}; {CREDENTIALS_HELP}", retryable=False
                ) from None
        return self._credentials

    async def _auth_headers(self) -> dict[str, str]:
        credentials = await self._creds()
        if isinstance(credentials, self.google.credentials.AnonymousCredentials):
            return {}
        async with self._auth_lock:
            if not credentials.valid:
                try:
                    await anyio.to_thread.run_sync(credentials.refresh, self.google.requests.Request())
                except self.google.exceptions.RefreshError as exc:
                    raise BackendError(
                        f"the Google credentials were refused: {exc}; {CREDENTIALS_HELP}",
                        retryable=False,
                        status=401,
                    ) from None
                except self.google.exceptions.TransportError as exc:
                    raise BackendError(
                        f"cannot reach Google's token service: {exc}", retryable=True
                    ) from None
        headers: dict[str, str] = {}
        credentials.apply(headers)
        quota_project = getattr(credentials, "quota_project_id", None)
        if quota_project:
            headers["x-goog-user-project"] = quota_project
        return headers

    async def _bucket(self, name: str) -> Any:
        async with self._storage_lock:
            if self._storage is None:
                credentials = await self._creds()
                if not isinstance(credentials, self.google.credentials.AnonymousCredentials):
                    await self._auth_headers()  # a refused key is reported once, clearly
                self._storage = await anyio.to_thread.run_sync(
                    lambda: self.google.storage.Client(project=self.config.project, credentials=credentials)
                )
        return self._storage.bucket(name)

    def _gcs_error(self, exc: BaseException, what: str) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        g = self.google
        if isinstance(exc, g.exceptions.RefreshError):
            return BackendError(
                f"{what}: the Google credentials were refused: {exc}; {CREDENTIALS_HELP}", retryable=False
            )
        if isinstance(exc, g.api_exceptions.GoogleAPICallError):
            code = int(exc.code or 0) or None
            retryable = code is None or code == 429 or code >= 500
            hint = f"; {CREDENTIALS_HELP}" if code in (401, 403) else ""
            return BackendError(f"{what}: HTTP {code}: {exc.message}{hint}", retryable=retryable, status=code)
        if isinstance(exc, OSError | g.exceptions.TransportError) or "Connection" in type(exc).__name__:
            return BackendError(f"{what}: cannot reach Cloud Storage: {exc}", retryable=True)
        return BackendError(f"{what}: {type(exc).__name__}: {exc}", retryable=False)

    # -- the job API -----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        attempts: int = ATTEMPTS,
        retry_statuses: tuple[int, ...] | None = None,
    ) -> dict[str, Any]:
        for attempt in range(attempts):
            try:
                headers = await self._auth_headers()
                response = await self.http.request(
                    method, path, json=json_body, params=params, headers=headers
                )
            except BackendError:
                raise
            except httpx2.HTTPError as exc:
                error = BackendError(f"{what}: cannot reach the Vertex AI API: {exc!r}", retryable=True)
            else:
                if response.status_code < 300:
                    try:
                        data = response.json() if response.content else {}
                    except ValueError:
                        raise BackendError(
                            f"{what}: the Vertex AI API answered with something not JSON", retryable=True
                        ) from None
                    return data if isinstance(data, dict) else {}
                error = self._http_error(response, what)
            retryable = (
                error.retryable
                if retry_statuses is None
                else (error.status in retry_statuses if error.status else False)
            )
            if not retryable or attempt == attempts - 1:
                raise error
            await anyio.sleep(min(8.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    @staticmethod
    def _http_error(response: httpx2.Response, what: str) -> BackendError:
        status = response.status_code
        detail = response.text[:500]
        with contextlib.suppress(ValueError, AttributeError):
            error = response.json()["error"]
            detail = f"{error.get('status') or error.get('code')}: {error.get('message')}"
        hint = f"; {CREDENTIALS_HELP}" if status in (401, 403) else ""
        retryable = status == 429 or status >= 500
        return BackendError(f"{what}: HTTP {status}: {detail}{hint}", retryable=retryable, status=status)

    # -- the interface -----------------------------------------------------------------------------

    async def create(self, body: Path, size: int, name: str) -> RemoteBatch:
        """Convert the batch to Vertex JSONL, upload it and create a job named `name`."""
        cfg = self.config
        jsonl = body.with_suffix(".vertex.json")  # beside the spool file, dropped with it
        object_name = f"{cfg.prefix}{name}/input.jsonl"
        try:
            model, count = await anyio.to_thread.run_sync(to_vertex_jsonl, body, jsonl)
            bucket = await self._bucket(cfg.bucket)

            def upload() -> None:
                blob = bucket.blob(object_name, chunk_size=UPLOAD_CHUNK)
                # application/octet-stream: Vertex reads the file by instancesFormat, and the GCS
                # emulator drops media uploads typed application/jsonl. Writing this object again
                # is harmless, so transient failures are retried (the library's default retry).
                blob.upload_from_filename(
                    str(jsonl), content_type="application/octet-stream", retry=self.google.storage_retry
                )

            try:
                await anyio.to_thread.run_sync(upload)
            except Exception as exc:
                raise self._gcs_error(
                    exc, f"uploading the requests to gs://{cfg.bucket}/{object_name}"
                ) from None
        finally:
            jsonl.unlink(missing_ok=True)
        job = {
            "displayName": name,
            "model": f"publishers/anthropic/models/{model}",
            "inputConfig": {
                "instancesFormat": "jsonl",
                "gcsSource": {"uris": [f"gs://{cfg.bucket}/{object_name}"]},
            },
            "outputConfig": {
                "predictionsFormat": "jsonl",
                "gcsDestination": {"outputUriPrefix": f"gs://{cfg.bucket}/{cfg.prefix}{name}/output"},
            },
            "labels": {REQUESTS_LABEL: str(count)},
        }
        try:
            created = await self._call(
                "POST",
                cfg.jobs_path,
                "creating the Vertex batch job",
                json_body=job,
                attempts=4,
                retry_statuses=CREATE_RETRY_STATUSES,
            )
        except BackendError as exc:
            if exc.status is None or exc.status >= 500:
                raise BackendError(
                    f"{exc}; Vertex may have created the job anyway (look for {name!r} in the console)",
                    retryable=False,
                    status=exc.status,
                ) from None
            raise
        return remote(created, count)

    async def retrieve(self, batch_id: str) -> RemoteBatch:
        return remote(await self._call("GET", f"/v1/{batch_id}", f"reading Vertex job {batch_id}"))

    async def cancel(self, batch_id: str) -> RemoteBatch:
        try:
            await self._call(
                "POST", f"/v1/{batch_id}:cancel", f"cancelling Vertex job {batch_id}", json_body={}
            )
        except BackendError as exc:
            if exc.status != 400:  # 400 FAILED_PRECONDITION: it has already ended; say how
                raise
        return await self.retrieve(batch_id)

    async def find_created(self, name: str, count: int, since: float) -> list[RemoteBatch]:
        """Jobs named `name` created at or after `since` (less a minute for clock skew) with
        `count` requests: what `create` may have made before the hub stopped."""
        found: list[RemoteBatch] = []
        token: str | None = None
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        while True:
            params: dict[str, Any] = {"filter": f'display_name="{quoted}"', "pageSize": 100}
            if token:
                params["pageToken"] = token
            page = await self._call("GET", self.config.jobs_path, "listing Vertex batch jobs", params=params)
            for job in page.get("batchPredictionJobs") or []:
                if job.get("displayName") != name:
                    continue
                created = _timestamp(job.get("createTime"))
                if created is not None and created < since - CLOCK_SKEW_S:
                    continue
                batch = remote(job)
                labelled = (job.get("labels") or {}).get(REQUESTS_LABEL)
                if labelled is not None and str(labelled) != str(count):
                    continue
                found.append(batch)
            token = page.get("nextPageToken") or None
            if not token:
                return found

    @contextlib.asynccontextmanager
    async def result_lines(self, batch_id: str) -> AsyncIterator[AsyncIterator[str]]:
        what = f"downloading the results of Vertex job {batch_id}"
        job = await self._call("GET", f"/v1/{batch_id}", f"reading Vertex job {batch_id}")
        state = str(job.get("state") or "")
        job_error = (job.get("error") or {}).get("message")
        output = _output_directory(job)
        inputs = ((job.get("inputConfig") or {}).get("gcsSource") or {}).get("uris") or []

        async def lines() -> AsyncIterator[str]:
            seen: set[str] = set()
            if output:
                bucket_name, directory = _split_gs(output.rstrip("/") + "/")
                try:
                    bucket = await self._bucket(bucket_name)
                    names = await anyio.to_thread.run_sync(
                        lambda: sorted(
                            blob.name
                            for blob in bucket.client.list_blobs(bucket_name, prefix=directory)
                            if blob.name.endswith(".jsonl")
                        )
                    )
                except Exception as exc:
                    raise self._gcs_error(exc, what) from None
                for object_name in names:
                    async for text in self._object_lines(bucket_name, object_name, what):
                        try:
                            line = json.loads(text)
                        except ValueError:
                            yield text  # the result file shows it as unreadable
                            continue
                        converted = result_line(line)
                        if converted["custom_id"] in seen:
                            continue  # never count (or bill) one request twice
                        seen.add(converted["custom_id"])
                        yield json.dumps(converted, ensure_ascii=False)
            # Requests the job never answered: from its input, which is still in the bucket.
            missing = unanswered_result(state, job_error)
            for uri in inputs:
                bucket_name, object_name = _split_gs(uri)
                async for text in self._object_lines(bucket_name, object_name, what):
                    with contextlib.suppress(ValueError, AttributeError):
                        custom_id = json.loads(text).get("custom_id")
                        if custom_id and custom_id not in seen:
                            seen.add(custom_id)
                            yield json.dumps({"custom_id": custom_id, "result": missing})

        yield lines()

    async def _object_lines(self, bucket_name: str, object_name: str, what: str) -> AsyncIterator[str]:
        """The lines of one object, read in 1 MB pieces in a worker thread."""
        try:
            bucket = await self._bucket(bucket_name)
            reader = await anyio.to_thread.run_sync(
                lambda: bucket.blob(object_name).open("rb", chunk_size=CHUNK)
            )
        except Exception as exc:
            raise self._gcs_error(exc, f"{what}: gs://{bucket_name}/{object_name}") from None
        try:
            tail = b""
            while True:
                try:
                    chunk = await anyio.to_thread.run_sync(reader.read, CHUNK)
                except Exception as exc:
                    raise self._gcs_error(exc, f"{what}: gs://{bucket_name}/{object_name}") from None
                if not chunk:
                    break
                *complete, tail = (tail + chunk).split(b"\n")
                for line in complete:
                    if line.strip():
                        yield line.decode("utf-8", errors="replace")
            if tail.strip():
                yield tail.decode("utf-8", errors="replace")
        finally:
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(reader.close)

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._storage is not None:
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self._storage.close)
