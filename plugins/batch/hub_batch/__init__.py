"""batch: Claude batch jobs at half price (results within 24 h, usually within 1 h), on the
Anthropic Message Batches API or on Vertex AI batch prediction (`backends/`).

Tools (the original's names and shapes, plus `batch_cancel`): `send_to_batch`, `batch_status`,
`batch_fetch`, `batch_list`, `batch_poll_once`, `batch_cancel`. Resources `batch://jobs` and
`batch://jobs/{job_id}`. Jobs live in the hub's store and are polled in the background while any
is open, so a restarted hub picks up where it stopped. Results are written to `results_dir` as
`<job_id>.md` (readable) and `<job_id>.raw.jsonl` (the API's lines). The `hub statusline`
command prints "batch: N pending, N done, N failed".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub import (
    Instance,
    Lifecycle,
    Plugin,
    PluginContext,
    RegisterPanel,
    RegisterResource,
    RegisterTool,
    Resource,
    ResourceTemplate,
    Tool,
    ToolCall,
    hookimpl,
)

from .backends.vertex import VertexSettings
from .panels import batch_panel
from .service import BatchService
from .spool import MAX_TOKENS, RequestItem

__all__ = ["BatchPlugin", "SendArgs", "Settings"]


class PriceOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_mtok: float = Field(
        ge=0, le=100_000, description="USD per million input tokens, standard rate."
    )
    output_per_mtok: float = Field(
        ge=0, le=100_000, description="USD per million output tokens, standard rate."
    )


def default_packet_roots() -> list[str]:
    """The working directory and the system's temporary directory (also /tmp where that is another
    directory, as on macOS, whose TMPDIR is per user)."""
    import tempfile

    roots = [".", tempfile.gettempdir()]
    if Path("/tmp").is_dir() and Path("/tmp").resolve() != Path(tempfile.gettempdir()).resolve():
        roots.append("/tmp")
    return roots


class Settings(BaseModel):
    """`[plugins.batch]`."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["auto", "anthropic", "vertex"] = Field(
        default="auto",
        description="Where jobs go: auto = anthropic when an API key is set, else vertex when configured.",
    )
    vertex: VertexSettings = Field(
        default_factory=VertexSettings, description="[plugins.batch.vertex]: the Vertex AI backend."
    )
    api_key: str = Field(
        default="${ANTHROPIC_API_KEY:-}", description="The key, or a ${VARIABLE} holding it."
    )
    base_url: str | None = Field(
        default=None, description="API base URL; default ANTHROPIC_BASE_URL, else the SDK's."
    )
    model: str = "claude-sonnet-4-5"
    max_tokens: int = Field(default=8192, ge=1, le=MAX_TOKENS)
    system: str | None = Field(
        default=None, description="System prompt for every request (before shared context)."
    )
    results_dir: str = Field(
        default="~/.claude/batches/results", description="Where <job_id>.md and .raw.jsonl go."
    )
    fetch_limit_chars: int = Field(
        default=16000, ge=100, description="batch_fetch returns at most this much text."
    )
    packet_roots: list[str] = Field(
        default_factory=default_packet_roots,
        description="packet_path must be under one of these (default: the working directory and the "
        "system's temporary directory, where the original batch workflow writes /tmp/batch_prompt.md).",
    )
    max_packet_bytes: int = Field(default=10_000_000, ge=1)
    max_requests_file_bytes: int = Field(
        default=1_000_000_000, ge=1, description="requests_path files are refused past this size."
    )
    max_request_line_bytes: int = Field(
        default=16_000_000, ge=100, description="One line (one request) of requests_path at most."
    )
    max_requests_per_batch: int = Field(default=100_000, ge=1, le=100_000)
    max_bytes_per_batch: int = Field(default=256_000_000, ge=1024, le=256_000_000)
    max_requests_per_job: int = Field(default=1_000_000, ge=1)
    poll_initial_s: float = Field(default=15.0, gt=0, le=86_400)
    poll_factor: float = Field(default=1.7, ge=1, le=100)
    poll_max_s: float = Field(default=300.0, gt=0, le=86_400)
    poll_jitter: float = Field(default=0.25, ge=0, lt=1)
    prices: dict[str, PriceOverride] = Field(
        default_factory=dict, description="Per model id prefix, standard USD per MTok; batches cost half."
    )


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SendArgs(_Args):
    packet_path: str | None = Field(
        default=None, description="A file holding the prompt (under packet_roots)."
    )
    packet_text: str | None = Field(default=None, description="The prompt itself, for short ones.")
    requests: list[RequestItem] | None = Field(
        default=None,
        description="Several requests: [{custom_id?, prompt | packet_path, ...}].",
    )
    requests_path: str | None = Field(
        default=None, description="A JSONL file of such requests, one per line (for big jobs)."
    )
    backend: Literal["auto", "anthropic", "vertex"] = Field(
        default="auto",
        description="anthropic (Message Batches) or vertex (Vertex AI); auto follows [plugins.batch] backend.",
    )
    label: str | None = Field(default=None, max_length=200, description="Shown in batch_list.")
    custom_id: str | None = Field(
        default=None, pattern=r"^[a-zA-Z0-9_-]{1,64}$", description="For a single packet."
    )
    model: str | None = Field(default=None, description="Default: [plugins.batch] model.")
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="Default: [plugins.batch] max_tokens."
    )
    system: str | None = Field(default=None, description="System prompt for every request.")
    temperature: float | None = Field(default=None, ge=0, le=1, description="Sampling temperature.")
    thinking_budget: int | None = Field(
        default=None, ge=1024, le=MAX_TOKENS, description="Thinking budget, in tokens."
    )
    use_context: bool = Field(
        default=True, description="Add the shared context entries to the system prompt."
    )


class JobArgs(_Args):
    job_id: str = Field(min_length=1, description="From send_to_batch or batch_list.")


class FetchArgs(JobArgs):
    force: bool = Field(default=False, description="Download the results again even if they are on disk.")
    wait_s: float = Field(default=0, ge=0, le=3600, description="Wait up to this long for the job to end.")


class ListArgs(_Args):
    state: Literal[
        "all",
        "open",
        "ended",
        "submitting",
        "in_progress",
        "canceling",
        "succeeded",
        "partial",
        "failed",
        "expired",
        "canceled",
    ] = Field(default="all", description="Only jobs in this state.")
    limit: int = Field(default=10, ge=1, le=1000, description="Newest first, at most this many.")


class NoArgs(_Args):
    pass


class BatchPlugin(Plugin):
    """The batch plugin (entry point ``hub_batch:BatchPlugin``): one `BatchService` per hub run."""

    service: BatchService  # set by hub_startup, which runs before every other hook

    @hookimpl
    def hub_config_model(self) -> type[BaseModel]:
        return Settings

    @hookimpl
    def hub_startup(self, hub: PluginContext) -> Lifecycle:
        async def start() -> None:
            settings = hub.config
            assert isinstance(settings, Settings)
            self.service = BatchService(hub, settings)
            await self.service.start()
            hub.start_soon(self.service.poll_loop, name="poll")

        return start

    @hookimpl
    def hub_shutdown(self) -> Lifecycle:
        async def stop() -> None:
            await self.service.stop()
            await self.service.aclose()

        return stop

    @hookimpl
    def hub_recover(self, instance: Instance) -> Lifecycle:
        return self.service.recover(instance)

    @hookimpl
    def hub_register_tools(self, register: RegisterTool) -> None:
        register_tools(register, self.service)

    @hookimpl
    def hub_register_resources(self, register: RegisterResource) -> None:
        register_resources(register, self.service)

    @hookimpl
    def hub_dashboard_panels(self, register: RegisterPanel) -> None:
        register(batch_panel(self.service))


def register_tools(register: RegisterTool, service: BatchService) -> None:
    async def send_to_batch(args: SendArgs, call: ToolCall) -> dict[str, Any]:
        return await service.send(args)

    async def batch_status(args: JobArgs, call: ToolCall) -> dict[str, Any]:
        return await service.status(args.job_id)

    async def batch_fetch(args: FetchArgs, call: ToolCall) -> dict[str, Any]:
        return await service.fetch(args.job_id, args.force, args.wait_s, call)

    async def batch_list(args: ListArgs, call: ToolCall) -> dict[str, Any]:
        return await service.list_jobs(args.state, args.limit)

    async def batch_poll_once(args: NoArgs, call: ToolCall) -> dict[str, Any]:
        return await service.poll_once()

    async def batch_cancel(args: JobArgs, call: ToolCall) -> dict[str, Any]:
        return await service.cancel(args.job_id)

    register(
        Tool(
            "send_to_batch",
            send_to_batch,
            "Submit prompts as a batch job at half price (results usually within 1 h, at most 24 h): one of "
            "packet_path, packet_text, requests or requests_path. Returns job_id and the result files.",
            SendArgs,
        )
    )
    register(
        Tool("batch_status", batch_status, "A job's state, processing status and request counts.", JobArgs)
    )
    register(
        Tool(
            "batch_fetch",
            batch_fetch,
            "A finished job's results as text (cut at fetch_limit_chars; the whole file's path is given); "
            "wait_s waits for the end, with progress.",
            FetchArgs,
        )
    )
    register(Tool("batch_list", batch_list, "Jobs, newest first, optionally by state.", ListArgs))
    register(
        Tool("batch_poll_once", batch_poll_once, "Poll every open job now; says which completed.", NoArgs)
    )
    register(
        Tool(
            "batch_cancel",
            batch_cancel,
            "Cancel an open job (requests not yet processed are canceled).",
            JobArgs,
        )
    )


def register_resources(register: RegisterResource, service: BatchService) -> None:
    async def jobs() -> dict[str, Any]:
        return await service.list_jobs("all", 1000)

    async def job(params: dict[str, str]) -> dict[str, Any]:
        return await service.job_resource(params["job_id"])

    register(Resource("batch://jobs", "jobs", jobs, "Every batch job, newest first."))
    register(
        ResourceTemplate(
            "batch://jobs/{job_id}", "job", job, "One job: batches, counts, usage, first requests."
        )
    )
