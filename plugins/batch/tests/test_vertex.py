"""The batch plugin's vertex backend through an MCP client, against a fake Vertex AI job API on
loopback and a real GCS emulator (`gcp-storage-emulator`, started as a process)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import hub_batch
import pytest
from fake_anthropic import FakeAnthropic
from fake_vertex import FakeVertex, GcsEmulator
from hub_batch.backends import vertex as vertex_backend

from hub.testing import call_error as error_of
from hub.testing import call_ok as call
from hub.testing import make_config, running_hub

pytestmark = pytest.mark.anyio

BUCKET = "hub-test-bucket"
PROJECT = "test-project"
LOCATION = "us-east5"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gcs():
    command = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).parent / "gcp-storage-emulator"
    )
    with GcsEmulator(command) as emulator:
        emulator.create_bucket(BUCKET)
        yield emulator


@pytest.fixture
def vertex(gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    for name in (
        "VERTEX_PROJECT",
        "VERTEX_LOCATION",
        "VERTEX_GCS_BUCKET",
        "VERTEX_GCS_PREFIX",
        "ANTHROPIC_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    with FakeVertex(gcs.url) as fake:
        yield fake


@pytest.fixture(autouse=True)
def packets(tmp_path: Path) -> Path:
    (tmp_path / "packets").mkdir()
    return tmp_path / "packets"


def vertex_settings(tmp_path: Path, fake: FakeVertex, **overrides: Any) -> dict[str, Any]:
    return {
        "project": PROJECT,
        "location": LOCATION,
        "bucket": BUCKET,
        "prefix": f"tests/{tmp_path.name}",  # each test its own corner of the bucket
        "api_endpoint": fake.url,
        "credentials": "anonymous",
        **overrides,
    }


def config_for(tmp_path: Path, fake: FakeVertex, *, vertex: dict[str, Any] | None = None, **settings: Any):
    batch = {
        "api_key": "",
        "results_dir": str(tmp_path / "results"),
        "packet_roots": [str(tmp_path / "packets")],
        "poll_initial_s": 0.05,
        "poll_factor": 1.0,
        "poll_jitter": 0,
        "vertex": vertex_settings(tmp_path, fake, **(vertex or {})),
        **settings,
    }
    return make_config(tmp_path, plugins={"batch": batch})


def hub_for(tmp_path: Path, fake: FakeVertex, **kw: Any):
    return running_hub(config_for(tmp_path, fake, **kw), plugins={"batch": hub_batch.BatchPlugin})


async def wait_state(client, job_id: str, *states: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            status = await call(client, "batch_status", job_id=job_id)
            if status["state"] in states:
                return status
            await anyio.sleep(0.02)


def service_account_file(tmp_path: Path, token_uri: str) -> Path:
    """A service-account key whose token endpoint is the fake's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": PROJECT,
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "batch@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


@pytest.fixture
def no_google_defaults(tmp_path, monkeypatch):
    """Application-default credentials from nowhere but GOOGLE_APPLICATION_CREDENTIALS."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server


async def test_send_poll_fetch_cycle_with_a_job_per_model(tmp_path, vertex, no_google_defaults, monkeypatch):
    vertex.token = "ya29.test-token"  # every job API call must carry it, got with the key file
    key = service_account_file(tmp_path, f"{vertex.url}/token")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))  # credentials = "default"
    (tmp_path / "packets" / "review.md").write_text("Review this code, please.")
    async with hub_for(tmp_path, vertex, vertex={"credentials": "default"}) as (hub, client):
        await hub.context.set("language", "python")
        requests = [
            {"custom_id": "review", "packet_path": str(tmp_path / "packets" / "review.md")},
            {"custom_id": "haiku1", "prompt": "Say hi.", "model": "claude-haiku-4-5@20251001"},
            {"custom_id": "sonnet2", "prompt": "Say bye.", "system": "Be brief.", "temperature": 0.3},
        ]
        sent = await call(client, "send_to_batch", requests=requests, label="review")
        assert sent["backend"] == "vertex" and sent["state"] == "in_progress" and sent["requests"] == 3
        assert (
            sent["backend_choice"] == "auto: no Anthropic API key, and [plugins.batch.vertex] is configured"
        )
        # One Vertex job per model, named after the job and its part.
        assert sent["batches"] == 2
        assert sorted(j.body["displayName"] for j in vertex.jobs.values()) == [
            f"{sent['job_id']}-0",
            f"{sent['job_id']}-1",
        ]
        first = vertex.job(f"{sent['job_id']}-0")
        assert first.body["model"] == "publishers/anthropic/models/claude-sonnet-4-5"
        assert (
            vertex.job(f"{sent['job_id']}-1").body["model"]
            == "publishers/anthropic/models/claude-haiku-4-5@20251001"
        )
        prefix = f"gs://{BUCKET}/tests/{tmp_path.name}/{sent['job_id']}-0"
        assert first.body["inputConfig"] == {
            "instancesFormat": "jsonl",
            "gcsSource": {"uris": [f"{prefix}/input.jsonl"]},
        }
        assert first.body["outputConfig"]["gcsDestination"] == {"outputUriPrefix": f"{prefix}/output"}
        # The input in the bucket is Vertex JSONL: the model is the job's, anthropic_version is Vertex's.
        lines = [
            json.loads(line) for line in vertex.read_object(f"{prefix}/input.jsonl").decode().splitlines()
        ]
        assert [line["custom_id"] for line in lines] == ["review", "sonnet2"]
        review = lines[0]["request"]
        assert review["anthropic_version"] == "vertex-2023-10-16" and "model" not in review
        assert review["messages"] == [{"role": "user", "content": "Review this code, please."}]
        assert review["system"] == "Shared context:\n- language: python" and review["max_tokens"] == 8192
        assert (
            lines[1]["request"]["system"].startswith("Be brief.")
            and lines[1]["request"]["temperature"] == 0.3
        )

        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "succeeded" and out["request_counts"]["succeeded"] == 3
        text = out["text"]
        assert "## review (succeeded)" in text and "answer to: Review this code, please." in text
        assert "## haiku1 (succeeded)" in text and "answer to: Say hi." in text
        raw = [json.loads(line) for line in Path(out["raw_path"]).read_text().splitlines()]
        assert sorted(r["custom_id"] for r in raw) == ["haiku1", "review", "sonnet2"]
        assert all(r["result"]["type"] == "succeeded" for r in raw)
        # Cost at the batch rate from each result's usage and model: sonnet $3/$15, haiku $1/$5 per MTok.
        tokens = {
            cid: len(p) // 4 + 1
            for cid, p in [
                ("review", "Review this code, please."),
                ("haiku1", "Say hi."),
                ("sonnet2", "Say bye."),
            ]
        }
        expected = (
            ((tokens["review"] + tokens["sonnet2"]) * 3 + 20 * 15 + tokens["haiku1"] * 1 + 10 * 5) / 1e6 * 0.5
        )
        assert out["cost_usd"] == pytest.approx(expected, abs=1e-6)
        budget = await hub.budget.summary()
        assert budget["spent_usd"] == pytest.approx(expected, abs=1e-6) and budget["reserved_usd"] == 0

        status = await call(client, "batch_status", job_id=sent["job_id"])
        assert status["processing_status"] == "ended" and status["backend"] == "vertex"
        assert {b["id"] for b in status["batches"]} == set(vertex.jobs)
        job = json.loads((await client.read_resource(f"batch://jobs/{sent['job_id']}")).contents[0].text)
        assert {r["status"] for r in job["first_requests"]} == {"succeeded"} and job["usage"][
            "output_tokens"
        ] == 30
    assert vertex.authorizations and set(vertex.authorizations) == {"Bearer ya29.test-token"}


async def test_a_job_is_split_per_model_and_at_the_limits(tmp_path, vertex):
    async with hub_for(tmp_path, vertex, max_requests_per_batch=2) as (_, client):
        models = [
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "claude-sonnet-4-5",
        ]
        requests = [
            {"custom_id": f"q{i}", "prompt": f"question {i}", "model": m} for i, m in enumerate(models)
        ]
        sent = await call(client, "send_to_batch", requests=requests)
        assert sent["batches"] == 3 and sent["requests"] == 5
        jobs = {j.body["displayName"]: j for j in vertex.jobs.values()}
        sizes = {
            name: (j.body["model"].rsplit("/", 1)[1], [r["custom_id"] for r in j.requests])
            for name, j in jobs.items()
        }
        assert sizes == {
            f"{sent['job_id']}-0": ("claude-sonnet-4-5", ["q0", "q2"]),
            f"{sent['job_id']}-1": ("claude-haiku-4-5", ["q1", "q3"]),
            f"{sent['job_id']}-2": ("claude-sonnet-4-5", ["q4"]),
        }
        job = json.loads((await client.read_resource(f"batch://jobs/{sent['job_id']}")).contents[0].text)
        assert {r["custom_id"]: r["part"] for r in job["first_requests"]} == {
            "q0": 0,
            "q1": 1,
            "q2": 0,
            "q3": 1,
            "q4": 2,
        }
        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "succeeded" and out["request_counts"]["succeeded"] == 5


async def test_unavailable_answers_are_retried_and_never_crash_the_hub(tmp_path, vertex):
    async with hub_for(tmp_path, vertex) as (_, client):
        vertex.fail_next(503)  # creating the job is retried: 503 says it was not created
        sent = await call(client, "send_to_batch", packet_text="retry me")
        assert len(vertex.jobs) == 1
        vertex.fail_next(500, 3)  # a poll and its retries fail: recorded, and polling goes on
        with anyio.fail_after(20):
            while "last_poll_error" not in await call(client, "batch_status", job_id=sent["job_id"]):
                await anyio.sleep(0.02)
        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "succeeded"


async def test_a_partial_job_and_honest_end_states(tmp_path, vertex):
    vertex.polls_to_end = 10**6  # the test ends each job
    async with hub_for(tmp_path, vertex) as (hub, client):
        partial = await call(
            client,
            "send_to_batch",
            requests=[
                {"custom_id": "good", "prompt": "fine"},
                {"custom_id": "bad", "prompt": "broken [errored]"},
            ],
        )
        vertex.finish(f"{partial['job_id']}-0")
        assert vertex.job(f"{partial['job_id']}-0").state == "JOB_STATE_PARTIALLY_SUCCEEDED"
        out = await call(client, "batch_fetch", job_id=partial["job_id"], wait_s=20)
        assert out["state"] == "partial"
        assert out["request_counts"] == {
            "processing": 0,
            "succeeded": 1,
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        }
        assert (
            "## bad (errored)\n\n**Error:** api_error: invalid_request_error: prompt is malformed"
            in out["text"]
        )

        # Expired after one of three requests: the two never answered are expired, not succeeded.
        expired = await call(client, "send_to_batch", requests=[{"prompt": p} for p in ("a", "b", "c")])
        name = f"{expired['job_id']}-0"
        vertex.process(name, 1)
        running = await call(client, "batch_status", job_id=expired["job_id"])
        assert running["state"] == "in_progress"
        assert running["request_counts"] == {
            "processing": 2,
            "succeeded": 1,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
        vertex.expire(name)
        out = await call(client, "batch_fetch", job_id=expired["job_id"], wait_s=20)
        assert out["state"] == "partial" and out["request_counts"]["expired"] == 2
        assert "## r00002 (expired)" in out["text"]

        # A job Vertex failed outright: every request errored with the job's error.
        failed = await call(client, "send_to_batch", packet_text="doomed")
        vertex.fail(f"{failed['job_id']}-0", "quota exceeded for publishers/anthropic")
        out = await call(client, "batch_fetch", job_id=failed["job_id"], wait_s=20)
        assert out["state"] == "failed" and out["cost_usd"] == 0
        assert "the Vertex job ended FAILED without a result for this request: quota exceeded" in out["text"]
        listed = await call(client, "batch_list", state="ended")
        assert listed["by_state"] == {"partial": 2, "failed": 1}
        assert (await hub.budget.summary())["reserved_usd"] == 0


async def test_cancel(tmp_path, vertex):
    vertex.polls_to_end = 10**6
    async with hub_for(tmp_path, vertex) as (hub, client):
        sent = await call(
            client, "send_to_batch", requests=[{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}]
        )
        name = f"{sent['job_id']}-0"
        vertex.process(name, 1)  # one request ran before the cancel
        cancelled = await call(client, "batch_cancel", job_id=sent["job_id"])
        assert cancelled["state"] in ("canceling", "partial")
        assert ("POST", f"/v1/{vertex.job(name).name}:cancel") in vertex.calls
        status = await wait_state(client, sent["job_id"], "partial")
        assert status["request_counts"] == {
            "processing": 0,
            "succeeded": 1,
            "errored": 0,
            "canceled": 2,
            "expired": 0,
        }
        assert status["cost_usd"] > 0 and (await hub.budget.summary())["reserved_usd"] == 0
        assert (await error_of(client, "batch_cancel", job_id=sent["job_id"])).endswith(
            "there is nothing to cancel"
        )

        untouched = await call(client, "send_to_batch", packet_text="never ran")
        await call(client, "batch_cancel", job_id=untouched["job_id"])
        status = await wait_state(client, untouched["job_id"], "canceled")
        assert status["request_counts"]["canceled"] == 1 and status["cost_usd"] == 0
        fetched = await call(client, "batch_fetch", job_id=untouched["job_id"])
        assert "## r00001 (canceled)" in fetched["text"]


async def test_a_restarted_hub_goes_on_polling_the_vertex_job(tmp_path, vertex):
    vertex.polls_to_end = 10**6
    async with hub_for(tmp_path, vertex) as (hub, client):
        sent = await call(client, "send_to_batch", packet_text="long job")
        reserved = (await hub.budget.summary())["reserved_usd"]
        assert reserved > 0
    async with hub_for(tmp_path, vertex) as (hub, client):  # a new hub on the same state directory
        assert (await hub.budget.summary())["reserved_usd"] == reserved
        assert (await call(client, "batch_status", job_id=sent["job_id"]))["state"] == "in_progress"
        vertex.finish(f"{sent['job_id']}-0")
        with anyio.fail_after(20):  # the background poller, not a tool, finishes it
            while (await call(client, "batch_list"))["jobs"][0]["state"] != "succeeded":
                await anyio.sleep(0.02)
        summary = await hub.budget.summary()
        assert summary["reserved_usd"] == 0 and summary["spent_usd"] > 0
        assert "answer to: long job" in Path(sent["result_path"]).read_text()


async def test_bad_credentials_get_clear_errors_and_lose_nothing(tmp_path, vertex, no_google_defaults):
    vertex.token = "ya29.test-token"
    vertex.refuse_tokens = True
    key = service_account_file(tmp_path, f"{vertex.url}/token")
    async with hub_for(tmp_path, vertex, vertex={"credentials": str(key)}) as (hub, client):
        text = await error_of(client, "send_to_batch", packet_text="x")
        assert text.startswith("job job_") and "was not submitted: " in text
        assert "the Google credentials were refused: ('invalid_grant: Invalid JWT Signature." in text
        assert "check [plugins.batch.vertex] credentials" in text
        assert not vertex.jobs and (await hub.budget.summary())["reserved_usd"] == 0
        assert (await call(client, "batch_list", state="failed"))["shown"] == 1

    (tmp_path / "b" / "packets").mkdir(parents=True)
    missing = tmp_path / "nope.json"
    async with hub_for(tmp_path / "b", vertex, vertex={"credentials": str(missing)}) as (_, client):
        assert await error_of(client, "send_to_batch", packet_text="x") == (
            f"the Vertex credentials file {str(missing)!r} does not exist; check [plugins.batch.vertex] credentials: "
            "'default' (application-default credentials: `gcloud auth application-default login` or "
            "GOOGLE_APPLICATION_CREDENTIALS), the path of a service-account key file, or 'anonymous' (emulators only)"
        )
        assert (await call(client, "batch_list"))["shown"] == 0

    (tmp_path / "c" / "packets").mkdir(parents=True)
    (tmp_path / "not-a-key.json").write_text('{"type": "authorized_user"}')
    async with hub_for(tmp_path / "c", vertex, vertex={"credentials": str(tmp_path / "not-a-key.json")}) as (
        _,
        client,
    ):
        assert "is not a service-account key" in await error_of(client, "send_to_batch", packet_text="x")

    # No application-default credentials at all.
    (tmp_path / "g" / "packets").mkdir(parents=True)
    async with hub_for(tmp_path / "g", vertex, vertex={"credentials": "default"}) as (hub, client):
        text = await error_of(client, "send_to_batch", packet_text="x")
        assert "was not submitted: no Google application-default credentials: " in text
        assert "`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS" in text
        assert (await hub.budget.summary())["reserved_usd"] == 0

    # A job API that refuses the token (anonymous credentials where a token is needed).
    (tmp_path / "d" / "packets").mkdir(parents=True)
    async with hub_for(tmp_path / "d", vertex) as (hub, client):
        text = await error_of(client, "send_to_batch", packet_text="x")
        assert "creating the Vertex batch job: HTTP 401: UNAUTHENTICATED: Request had invalid" in text
        assert "check [plugins.batch.vertex] credentials" in text
        assert (await hub.budget.summary())["reserved_usd"] == 0


async def test_auto_chooses_each_backend_and_says_why(tmp_path, vertex, monkeypatch):
    with FakeAnthropic() as anthropic:
        config = config_for(tmp_path, vertex, api_key=anthropic.api_key, base_url=anthropic.url)
        async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
            sent = await call(client, "send_to_batch", packet_text="which one?")
            assert (
                sent["backend"] == "anthropic"
                and sent["backend_choice"] == "auto: an Anthropic API key is set"
            )
            assert anthropic.batches and not vertex.jobs
            sent = await call(client, "send_to_batch", packet_text="this one", backend="vertex")
            assert sent["backend"] == "vertex" and sent["backend_choice"] == "asked for" and vertex.jobs
        (tmp_path / "v" / "packets").mkdir(parents=True)
        config = config_for(
            tmp_path / "v", vertex, api_key=anthropic.api_key, base_url=anthropic.url, backend="vertex"
        )
        async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
            sent = await call(client, "send_to_batch", packet_text="the configured one")
            assert sent["backend"] == "vertex" and sent["backend_choice"] == "[plugins.batch] backend"
            assert (await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20))[
                "state"
            ] == "succeeded"

    # Without a key, auto goes to Vertex, configured here by the original's environment variables.
    (tmp_path / "e" / "packets").mkdir(parents=True)
    monkeypatch.setenv("VERTEX_PROJECT", PROJECT)
    monkeypatch.setenv("VERTEX_LOCATION", LOCATION)
    monkeypatch.setenv("VERTEX_GCS_BUCKET", BUCKET)
    monkeypatch.setenv("VERTEX_GCS_PREFIX", "from-env")
    config = make_config(
        tmp_path / "e",
        plugins={
            "batch": {
                "api_key": "${NO_SUCH_KEY_VAR:-}",
                "results_dir": str(tmp_path / "e" / "results"),
                "vertex": {"api_endpoint": vertex.url, "credentials": "anonymous"},
            }
        },
    )
    async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
        sent = await call(client, "send_to_batch", packet_text="from the environment")
        assert sent["backend"] == "vertex" and sent["backend_choice"].startswith("auto: no Anthropic API key")
        job = vertex.job(f"{sent['job_id']}-0")
        assert job.name.startswith(f"projects/{PROJECT}/locations/{LOCATION}/")
        assert job.body["inputConfig"]["gcsSource"]["uris"] == [
            f"gs://{BUCKET}/from-env/{sent['job_id']}-0/input.jsonl"
        ]

    # backend = "vertex" with nothing configured names the keys.
    for name in ("VERTEX_PROJECT", "VERTEX_GCS_BUCKET"):
        monkeypatch.delenv(name)
    (tmp_path / "f" / "packets").mkdir(parents=True)
    config = make_config(
        tmp_path / "f", plugins={"batch": {"backend": "vertex", "api_key": "set-but-unused"}}
    )
    async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
        assert await error_of(client, "send_to_batch", packet_text="x") == (
            "the vertex backend is not configured (missing: project, bucket): set [plugins.batch.vertex] project "
            "and bucket (or the environment variables VERTEX_PROJECT and VERTEX_GCS_BUCKET); location "
            "(VERTEX_LOCATION), prefix (VERTEX_GCS_PREFIX), api_endpoint and credentials are optional"
        )


async def test_a_missing_extra_names_the_install_command(tmp_path, vertex, monkeypatch):
    import google.cloud

    # As if google-cloud-storage were not installed.
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    monkeypatch.delattr(google.cloud, "storage", raising=False)
    async with hub_for(tmp_path, vertex) as (_, client):
        text = await error_of(client, "send_to_batch", packet_text="x")
        assert text.startswith(
            "the vertex backend needs the hub's [vertex] extra (google-auth and google-cloud-storage"
        )
        assert f"`{sys.executable} -m pip install google-auth google-cloud-storage`" in text
        assert "pip install '.[vertex]'" in text


async def test_find_created_matches_the_name_exactly(tmp_path, vertex, monkeypatch):
    settings = vertex_backend.VertexSettings(**vertex_settings(tmp_path, vertex))
    config, missing = vertex_backend.resolve(settings, lambda text, where: text)
    assert config is not None and not missing
    backend = vertex_backend.VertexBackend(config)
    body = tmp_path / "part.json"
    try:
        for name, prompts in (("job_x-0", ["a", "b"]), ("job_x-01", ["c"]), ("job_x-1", ["d"])):
            requests = [
                {
                    "custom_id": f"c{i}",
                    "params": {
                        "model": "claude-haiku-4-5",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": p}],
                    },
                }
                for i, p in enumerate(prompts)
            ]
            body.write_text(json.dumps({"requests": requests}))
            await backend.create(body, body.stat().st_size, name)
        found = await backend.find_created("job_x-0", 2, since=0)
        assert [vertex.jobs[b.id].body["displayName"] for b in found] == ["job_x-0"]
        assert found[0].request_counts["processing"] == 2
        assert await backend.find_created("job_x-0", 3, since=0) == []  # not the same batch
        assert await backend.find_created("job_x-0", 2, since=4e9) == []  # created before `since`
        assert await backend.find_created("job_y-0", 1, since=0) == []
        vertex.process(found[0].id, 1)
        retrieved = await backend.retrieve(found[0].id)
        assert retrieved.processing_status == "in_progress" and retrieved.request_counts["succeeded"] == 1
    finally:
        await backend.aclose()


def test_the_request_body_is_converted_as_a_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(vertex_backend, "CHUNK", 7)  # requests straddle every read
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "m",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "é" * (i * 40)}],
            },
        }
        for i in range(1, 6)
    ]
    source, target = tmp_path / "body.json", tmp_path / "body.jsonl"
    source.write_text(json.dumps({"requests": requests}, ensure_ascii=False), encoding="utf-8")
    assert vertex_backend.to_vertex_jsonl(source, target) == ("m", 5)
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(1, 6)]
    assert lines[4]["request"] == {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "é" * 200}],
        "anthropic_version": "vertex-2023-10-16",
    }
    requests[2]["params"]["model"] = "other"
    source.write_text(json.dumps({"requests": requests}))
    with pytest.raises(
        vertex_backend.BackendError, match="one Vertex job takes one model, and this batch has m and other"
    ):
        vertex_backend.to_vertex_jsonl(source, target)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            {"custom_id": "a", "request": {}, "response": {"type": "message", "content": []}, "status": ""},
            {"type": "succeeded", "message": {"type": "message", "content": []}},
        ),
        (
            {"request": {"custom_id": "a"}, "status": {"code": 3, "message": "bad input"}},
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "api_error", "message": "3: bad input"}},
            },
        ),
        (
            {
                "custom_id": "a",
                "response": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            },
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
            },
        ),
        (
            {"custom_id": "a", "status": "Internal error"},
            {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "api_error", "message": "Internal error"}},
            },
        ),
    ],
)
def test_vertex_output_lines_become_anthropic_result_lines(line, expected):
    assert vertex_backend.result_line(line) == {"custom_id": "a", "result": expected}
