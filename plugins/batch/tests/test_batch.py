"""The batch plugin through an MCP client, against the fake Message Batches API on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import hub_batch
import pytest
from fake_anthropic import FakeAnthropic

from hub.services import statusline
from hub.testing import call_error as error_of
from hub.testing import call_ok as call
from hub.testing import make_config, result_json, running_hub

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def packets(tmp_path: Path) -> Path:
    (tmp_path / "packets").mkdir()
    return tmp_path / "packets"


@pytest.fixture
def api():
    with FakeAnthropic() as fake:
        yield fake


def config_for(tmp_path: Path, api: FakeAnthropic, budget: float | None = None, **settings: Any):
    batch = {
        "api_key": api.api_key,
        "base_url": api.url,
        "results_dir": str(tmp_path / "results"),
        "packet_roots": [str(tmp_path / "packets")],
        "poll_initial_s": 0.05,
        "poll_factor": 1.0,
        "poll_jitter": 0,
        **settings,
    }
    extra = {"budget": {"limit_usd": budget}} if budget is not None else {}
    return make_config(tmp_path, plugins={"batch": batch}, **extra)


def hub_for(tmp_path: Path, api: FakeAnthropic, **kw: Any):
    return running_hub(config_for(tmp_path, api, **kw), plugins={"batch": hub_batch.BatchPlugin})


async def wait_state(client, job_id: str, *states: str) -> dict[str, Any]:
    with anyio.fail_after(20):
        while True:
            status = await call(client, "batch_status", job_id=job_id)
            if status["state"] in states:
                return status
            await anyio.sleep(0.05)


async def test_send_poll_fetch_cycle(tmp_path, api):
    (tmp_path / "packets" / "review.md").write_text("Review this code, please.")
    async with hub_for(tmp_path, api) as (hub, client):
        await hub.context.set("language", "python")
        sent = await call(
            client, "send_to_batch", packet_path=str(tmp_path / "packets" / "review.md"), label="review"
        )
        assert sent["backend"] == "anthropic" and sent["state"] == "in_progress" and sent["requests"] == 1
        assert sent["result_path"] == str(tmp_path / "results" / f"{sent['job_id']}.md")
        assert sent["reserved_usd"] > 0
        assert (await hub.budget.summary())["reserved_usd"] == sent["reserved_usd"]

        progress: list[float] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(done)

        fetched = await client.call_tool(
            "batch_fetch", {"job_id": sent["job_id"], "wait_s": 20}, progress_callback=on_progress
        )
        out = result_json(fetched)
        assert out["state"] == "succeeded" and out["request_counts"]["succeeded"] == 1
        assert (
            "## r00001 (succeeded)" in out["text"] and "answer to: Review this code, please." in out["text"]
        )
        assert not out["truncated"]

        # The request carried the shared context in its system prompt, and the raw file holds the API's lines.
        batch_id = next(iter(api.batches))
        raw = Path(out["raw_path"]).read_text().splitlines()
        assert len(raw) == 1 and json.loads(raw[0])["result"]["type"] == "succeeded"
        # Cost at the batch rate: fake usage is len(prompt)//4+1 input and 10 output tokens (sonnet: $3/$15).
        tokens_in = len("Review this code, please.") // 4 + 1
        expected = (tokens_in * 3 + 10 * 15) / 1e6 * 0.5
        assert out["cost_usd"] == pytest.approx(expected, abs=1e-6)
        budget = await hub.budget.summary()
        assert budget["spent_usd"] == pytest.approx(expected, abs=1e-6) and budget["reserved_usd"] == 0

        status = await call(client, "batch_status", job_id=sent["job_id"])
        assert status["processing_status"] == "ended" and status["batches"][0]["id"] == batch_id
        # A hub that read the job as open just before it ended cannot take its lease and fetch again.
        service = hub.plugins["batch"].plugin.service
        assert not await service.jobs.take_lease(
            sent["job_id"], "another-hub", 2e9, service.hub.instances.is_alive
        )
        assert api.downloads(batch_id) == 1
        listed = await call(client, "batch_list")
        assert [j["job_id"] for j in listed["jobs"]] == [sent["job_id"]]
        assert await call(client, "batch_poll_once") == {
            "checked": 0,
            "completed": [],
            "still_open": [],
            "errors": {},
        }
        assert statusline.read_lines(hub.config.state_dir / "hub.sqlite") == [
            "batch: 0 pending, 1 done, 0 failed"
        ]
        job = json.loads((await client.read_resource(f"batch://jobs/{sent['job_id']}")).contents[0].text)
        assert job["first_requests"][0]["status"] == "succeeded" and job["usage"]["output_tokens"] == 10


async def test_the_shared_context_reaches_the_system_prompt_unless_opted_out(tmp_path, api):
    seen: list[dict[str, Any]] = []
    original = api._create

    def spy(body: dict[str, Any]):
        seen.extend(r["params"] for r in body["requests"])
        return original(body)

    api._create = spy  # type: ignore[method-assign]
    async with hub_for(tmp_path, api) as (hub, client):
        await hub.context.set("repo", "hub")
        await call(
            client,
            "send_to_batch",
            packet_text="one",
            system="Be brief.",
            temperature=0.2,
            thinking_budget=2048,
        )
        await call(
            client,
            "send_to_batch",
            packet_text="two",
            use_context=False,
            model="claude-haiku-4-5",
            max_tokens=50,
        )
    first, second = seen
    assert first["system"] == "Be brief.\n\nShared context:\n- repo: hub"
    assert first["temperature"] == 0.2 and first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "system" not in second and second["model"] == "claude-haiku-4-5" and second["max_tokens"] == 50


async def test_mixed_results_are_partial_and_never_called_succeeded(tmp_path, api):
    async with hub_for(tmp_path, api) as (_, client):
        requests = [
            {"custom_id": "good", "prompt": "fine"},
            {"custom_id": "bad", "prompt": "broken [errored]"},
            {"custom_id": "late", "prompt": "slow [expired]"},
        ]
        sent = await call(client, "send_to_batch", requests=requests)
        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "partial"
        assert out["request_counts"] == {
            "processing": 0,
            "succeeded": 1,
            "errored": 1,
            "canceled": 0,
            "expired": 1,
        }
        text = out["text"]
        assert "## bad (errored)\n\n**Error:** invalid_request_error: prompt is malformed" in text
        assert "## late (expired)" in text and "## good (succeeded)" in text

        failed = await call(
            client, "send_to_batch", requests=[{"prompt": "x [errored]"}, {"prompt": "y [expired]"}]
        )
        expired = await call(client, "send_to_batch", packet_text="z [expired]")
        assert (await call(client, "batch_fetch", job_id=failed["job_id"], wait_s=20))["state"] == "failed"
        assert (await call(client, "batch_fetch", job_id=expired["job_id"], wait_s=20))["state"] == "expired"
        listed = await call(client, "batch_list", state="ended")
        assert listed["by_state"] == {"partial": 1, "failed": 1, "expired": 1}


async def test_a_restarted_hub_goes_on_polling_and_keeps_the_reservation(tmp_path, api):
    api.polls_to_end = 10**6  # the batch does not end until the test says so
    async with hub_for(tmp_path, api) as (hub, client):
        sent = await call(client, "send_to_batch", packet_text="long job")
        reserved = (await hub.budget.summary())["reserved_usd"]
        assert reserved > 0
    async with hub_for(tmp_path, api) as (hub, client):
        assert (await hub.budget.summary())["reserved_usd"] == reserved  # durable across the restart
        status = await call(client, "batch_status", job_id=sent["job_id"])
        assert status["state"] == "in_progress"
        api.end(next(iter(api.batches)))
        with anyio.fail_after(20):  # the background poller, not a tool, finishes it
            while (await call(client, "batch_list"))["jobs"][0]["state"] != "succeeded":
                await anyio.sleep(0.05)
        summary = await hub.budget.summary()
        assert summary["reserved_usd"] == 0 and summary["spent_usd"] > 0
        assert Path(sent["result_path"]).exists()


async def test_rate_limits_and_server_errors_are_retried_and_never_crash_the_hub(tmp_path, api):
    async with hub_for(tmp_path, api) as (_hub, client):
        api.fail_next(429, 2)  # the create call is retried by the plugin (its body is streamed)
        sent = await call(client, "send_to_batch", packet_text="retry me")
        api.fail_next(500, 3)  # one poll and both of the SDK's retries: the poller records it and backs off
        with anyio.fail_after(20):
            while "last_poll_error" not in await call(client, "batch_status", job_id=sent["job_id"]):
                await anyio.sleep(0.02)
        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "succeeded"
        assert any(path.endswith("/v1/messages/batches") for method, path in api.calls if method == "POST")


async def test_cancel(tmp_path, api):
    api.polls_to_end = 10**6
    async with hub_for(tmp_path, api) as (hub, client):
        sent = await call(client, "send_to_batch", requests=[{"prompt": "a"}, {"prompt": "b"}])
        cancelled = await call(client, "batch_cancel", job_id=sent["job_id"])
        assert cancelled["state"] in ("canceling", "canceled")
        status = await wait_state(client, sent["job_id"], "canceled")
        assert status["request_counts"]["canceled"] == 2 and status["cost_usd"] == 0
        assert (await hub.budget.summary())["reserved_usd"] == 0
        again = await error_of(client, "batch_cancel", job_id=sent["job_id"])
        assert again == f"job {sent['job_id']} has already ended (canceled); there is nothing to cancel"


async def test_an_oversized_job_is_split_into_several_batches(tmp_path, api):
    async with hub_for(tmp_path, api, max_requests_per_batch=2, max_bytes_per_batch=1024) as (_, client):
        requests = [{"custom_id": f"q{i}", "prompt": f"question {i}"} for i in range(5)]
        requests.append({"custom_id": "big", "prompt": "x" * 850})  # fits in 1024 bytes only alone
        sent = await call(client, "send_to_batch", requests=requests)
        assert sent["batches"] == 4 and sent["requests"] == 6
        assert sorted(len(b.requests) for b in api.batches.values()) == [1, 1, 2, 2]
        out = await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        assert out["state"] == "succeeded" and out["request_counts"]["succeeded"] == 6
        assert len(Path(out["raw_path"]).read_text().splitlines()) == 6


async def test_the_budget_refuses_a_job_it_cannot_cover(tmp_path, api):
    async with hub_for(tmp_path, api, budget=0.001) as (_, client):
        text = await error_of(client, "send_to_batch", packet_text="expensive", max_tokens=10000)
        assert text.startswith("budget exhausted: spent $0.00 of $0.0010; batch job job_")
        assert "needs up to $0.08. Raise [budget] limit_usd or --budget-usd" in text
        assert "send fewer requests or lower their max_tokens" in text
        assert api.calls == []  # nothing was sent
        assert (await call(client, "batch_list"))["jobs"] == []


async def test_packet_path_rules(tmp_path, api):
    packets = tmp_path / "packets"
    async with hub_for(tmp_path, api, max_packet_bytes=100) as (_, client):
        (packets / "empty.md").write_text("  \n")
        (packets / "big.md").write_text("x" * 101)
        (packets / "ok.md").write_text("fine")
        (packets / "sub").mkdir()
        outside = tmp_path / "secret.txt"
        outside.write_text("do not send")
        cases = {
            str(
                outside
            ): f"packet_path {str(outside)!r} is outside the allowed roots ({packets}); add a root to [plugins.batch] packet_roots to allow it",
            str(packets / "../secret.txt"): "is outside the allowed roots",
            str(packets / "missing.md"): "no such file",
            str(packets / "empty.md"): "is empty",
            str(packets / "big.md"): "is 101 bytes, over the limit of 100 ([plugins.batch] max_packet_bytes)",
            str(packets / "sub"): "is a directory, not a file",
        }
        for path, message in cases.items():
            assert message in await error_of(client, "send_to_batch", packet_path=path)
        (packets / "link.md").symlink_to(outside)
        assert "outside the allowed roots" in await error_of(
            client, "send_to_batch", packet_path=str(packets / "link.md")
        )
        assert api.calls == []
        assert (await call(client, "send_to_batch", packet_path=str(packets / "ok.md")))["requests"] == 1


async def test_bad_inputs_get_clear_errors(tmp_path, api, monkeypatch):
    for name in ("VERTEX_PROJECT", "VERTEX_GCS_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    async with hub_for(tmp_path, api) as (_, client):
        both = await error_of(client, "send_to_batch", packet_path="a.md", packet_text="b")
        assert (
            both
            == "give exactly one of packet_path, packet_text, requests or requests_path (got packet_path, packet_text)"
        )
        assert (
            await error_of(client, "send_to_batch")
            == "give exactly one of packet_path, packet_text, requests or requests_path"
        )
        assert await error_of(client, "send_to_batch", packet_text="   ") == "packet_text is empty"
        assert "give exactly one of prompt or packet_path" in await error_of(
            client, "send_to_batch", requests=[{"custom_id": "a"}]
        )
        dup = await error_of(
            client,
            "send_to_batch",
            requests=[{"custom_id": "a", "prompt": "x"}, {"custom_id": "a", "prompt": "y"}],
        )
        assert "custom_id 'a' is used twice in this job" in dup
        assert "requests.0.custom_id" in await error_of(
            client, "send_to_batch", requests=[{"custom_id": "no spaces", "prompt": "x"}]
        )
        assert (await error_of(client, "send_to_batch", packet_text="x", backend="vertex")).startswith(
            "the vertex backend is not configured (missing: project, bucket): set [plugins.batch.vertex] "
            "project and bucket (or the environment variables VERTEX_PROJECT and VERTEX_GCS_BUCKET)"
        )
        for tool in ("batch_status", "batch_fetch", "batch_cancel"):
            assert (await error_of(client, tool, job_id="job_nope")).startswith(
                "no batch job 'job_nope' (recent jobs: "
            )
        api.polls_to_end = 10**6
        sent = await call(client, "send_to_batch", packet_text="slow")
        early = await error_of(client, "batch_fetch", job_id=sent["job_id"])
        assert early.startswith(
            f"job {sent['job_id']} has not ended: in_progress, 1 of 1 request(s) still processing."
        )
        assert api.calls  # the calls above reached the fake only for the job that was sent
    (tmp_path / "k" / "packets").mkdir(parents=True)
    no_key = config_for(tmp_path / "k", api, api_key="${NO_SUCH_KEY_VAR:-}")
    async with running_hub(no_key, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
        assert (await error_of(client, "send_to_batch", packet_text="x")).startswith(
            "no batch backend is configured: for Anthropic set ANTHROPIC_API_KEY (or [plugins.batch] api_key); "
            "for Vertex AI set [plugins.batch.vertex] project and bucket"
        )
        assert (await error_of(client, "send_to_batch", packet_text="x", backend="anthropic")).startswith(
            "no Anthropic API key: set ANTHROPIC_API_KEY"
        )


async def test_requests_from_a_jsonl_file(tmp_path, api):
    lines = [json.dumps({"custom_id": f"j{i}", "prompt": f"line {i}"}) for i in range(3)]
    (tmp_path / "packets" / "jobs.jsonl").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "packets" / "bad.jsonl").write_text(lines[0] + '\n{"prompt": 5}\n')
    async with hub_for(tmp_path, api) as (_, client):
        sent = await call(client, "send_to_batch", requests_path=str(tmp_path / "packets" / "jobs.jsonl"))
        assert sent["requests"] == 3
        bad = await error_of(client, "send_to_batch", requests_path=str(tmp_path / "packets" / "bad.jsonl"))
        assert bad.startswith(
            f"requests_path {str(tmp_path / 'packets' / 'bad.jsonl')!r} line 2: prompt: Input should be a valid string"
        )
        assert (await call(client, "batch_list"))["shown"] == 1  # the refused job left nothing behind


async def test_a_refused_submission_fails_the_job_and_frees_its_reservation(tmp_path, api):
    async with hub_for(tmp_path, api, max_requests_per_batch=1) as (hub, client):
        calls = 0
        original = api._create

        def second_refused(body: dict[str, Any]):
            nonlocal calls
            calls += 1
            if calls == 2:
                return 400, {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "no thanks"},
                }
            return original(body)

        api._create = second_refused  # type: ignore[method-assign]
        text = await error_of(client, "send_to_batch", requests=[{"prompt": "a"}, {"prompt": "b"}])
        assert "was not submitted in full: creating the batch: HTTP 400: " in text and "no thanks" in text
        assert "the API refused a batch after 1 of 2 batches were sent; those were cancelled" in text
        first = next(iter(api.batches.values()))
        assert first.cancel_initiated_at is not None  # the part that did go through was cancelled
        job = (await call(client, "batch_list"))["jobs"][0]
        status = await wait_state(client, job["job_id"], "canceled")  # fetched and settled like any job
        assert status["request_counts"]["canceled"] == 1 and status["cost_usd"] == 0
        assert (await hub.budget.summary())["reserved_usd"] == 0

        api._create = original  # type: ignore[method-assign]
        api.fail_next(400)
        text = await error_of(client, "send_to_batch", packet_text="refused outright")
        assert text.startswith("job job_") and "was not submitted: creating the batch: HTTP 400" in text
        job = (await call(client, "batch_list", state="failed"))["jobs"][0]
        assert job["error"] == "the API refused a batch while this job was being submitted; nothing was sent"
        assert (await hub.budget.summary())["reserved_usd"] == 0
        assert (await error_of(client, "batch_fetch", job_id=job["job_id"])).startswith(
            f"job {job['job_id']} failed and has no results: the API refused a batch"
        )


async def test_a_job_is_paid_for_once_and_orphaned_reservations_are_freed(tmp_path, api):
    async with hub_for(tmp_path, api) as (hub, client):
        sent = await call(client, "send_to_batch", packet_text="pay once")
        await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20)
        spent = (await hub.budget.summary())["spent_usd"]
        # A second download (as after a kill between settling and recording the end) charges nothing more.
        await call(client, "batch_fetch", job_id=sent["job_id"], force=True)
        assert (await hub.budget.summary())["spent_usd"] == spent
        # A reservation whose job was never recorded (the hub stopped right after reserving).
        await hub.budget.reserve("batch", 1.0, "batch job job_lost", durable=True)
    async with hub_for(tmp_path, api) as (hub, _):
        summary = await hub.budget.summary()
        assert summary["reserved_usd"] == 0 and summary["spent_usd"] == spent


async def test_anthropic_base_url_and_api_key_come_from_the_environment(tmp_path, api, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", api.api_key)
    config = config_for(tmp_path, api, base_url=None, api_key="${ANTHROPIC_API_KEY:-}")
    async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
        sent = await call(client, "send_to_batch", packet_text="from the environment")
        assert (await call(client, "batch_fetch", job_id=sent["job_id"], wait_s=20))["state"] == "succeeded"


async def test_a_fifo_is_refused_and_no_job_is_left(tmp_path, api):
    """A FIFO used to block send_to_batch forever with the job left 'submitting'."""
    import os

    fifo = tmp_path / "packets" / "pipe"
    os.mkfifo(fifo)
    async with hub_for(tmp_path, api) as (_, client):
        for arguments in (
            {"packet_path": str(fifo)},
            {"requests_path": str(fifo)},
            {"requests": [{"packet_path": str(fifo)}]},
        ):
            with anyio.fail_after(10):
                message = await error_of(client, "send_to_batch", **arguments)
            assert "is not a regular file" in message and "give a regular file" in message, message
        assert (await call(client, "batch_list", state="all"))["jobs"] == []
    assert api.batches == {}  # nothing reached the API


async def test_requests_path_is_bounded_in_bytes_and_line_length(tmp_path, api):
    big = tmp_path / "packets" / "big.jsonl"
    big.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(100)))
    long_line = tmp_path / "packets" / "long.jsonl"
    long_line.write_text(json.dumps({"prompt": "x" * 5000}) + "\n")
    no_newline = tmp_path / "packets" / "flat.jsonl"
    no_newline.write_text("y" * 20_000)
    async with hub_for(tmp_path, api, max_requests_file_bytes=1000) as (_, client):
        too_big = await error_of(client, "send_to_batch", requests_path=str(big))
        assert (
            "big.jsonl' is 1,790 bytes, over the limit of 1,000 ([plugins.batch] max_requests_file_bytes)"
            in too_big
        )
        assert (await call(client, "batch_list", state="all"))["jobs"] == []
    async with hub_for(tmp_path, api, max_request_line_bytes=2000) as (_, client):
        for path in (long_line, no_newline):  # a file without newlines is one long line
            too_long = await error_of(client, "send_to_batch", requests_path=str(path))
            assert "line 1 is over 2,000 bytes ([plugins.batch] max_request_line_bytes)" in too_long
        assert (await call(client, "batch_list", state="all"))["jobs"] == []


async def test_a_packet_in_the_temp_dir_is_accepted_by_default(tmp_path, api):
    """The original batch workflow writes the prompt to /tmp/batch_prompt.md: the default roots are
    the working directory and the system's temporary directory."""
    import tempfile

    from hub_batch import default_packet_roots

    assert default_packet_roots()[:2] == [".", tempfile.gettempdir()]
    config = config_for(tmp_path, api)
    del config.plugins.tables()["batch"]["packet_roots"]  # the default roots
    with tempfile.NamedTemporaryFile("w", suffix="_batch_prompt.md", delete=False) as f:
        f.write("Summarise the design.")
    try:
        async with running_hub(config, plugins={"batch": hub_batch.BatchPlugin}) as (_, client):
            sent = await call(client, "send_to_batch", packet_path=f.name)
            assert sent["requests"] == 1
            outside = await error_of(client, "send_to_batch", packet_path="/etc/passwd")
            assert "outside the allowed roots" in outside
    finally:
        Path(f.name).unlink()
