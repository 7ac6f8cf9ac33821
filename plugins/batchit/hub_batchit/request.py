"""The `batch_execute` request: BatchIt's shape, plus `server` (or a bare server name as
`targetServer`), per-operation `server`, `id` and `timeoutMs`, and `options.cancelOnError`,
`options.include` and `options.maxResultBytes`.

Field names are BatchIt's (camelCase), so a BatchIt request works unchanged. Every field has a
one-line description: it is what the model reads to fill the request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
MAX_TIMEOUT_MS = 86_400_000  # a day
MAX_CONCURRENT = 10_000  # [plugins.batchit] max_concurrency caps it further


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transport(_Strict):
    """How BatchIt reached a server it was not configured with (refused unless allowed)."""

    type: Literal["stdio", "http", "streamable-http", "websocket"] = Field(
        default="stdio", description="stdio (command), or http / streamable-http (url)."
    )
    command: str | None = Field(default=None, description="stdio: the command to run.")
    args: list[str] = Field(default_factory=list, description="stdio: its arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="stdio: extra environment variables.")
    cwd: str | None = Field(default=None, description="stdio: its working directory.")
    url: str | None = Field(default=None, description="http: the streamable HTTP endpoint.")


class TargetServer(_Strict):
    """BatchIt's target server. A `name` configured in hub.toml uses that server."""

    name: str = Field(min_length=1, description="A server name from hub.toml, or a name for `transport`.")
    serverType: dict[str, Any] | None = Field(default=None, description="Accepted and ignored (BatchIt).")
    transport: Transport | None = Field(
        default=None,
        description="Only for servers not in hub.toml, and only with [plugins.batchit] allow_inline_servers.",
    )
    maxIdleTimeMs: int | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_MS, description="Idle timeout of an inline server."
    )


class Operation(_Strict):
    tool: str = Field(min_length=1, description="The downstream tool's name (without any hub prefix).")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="The tool's arguments; any value may be a $ref, $text or $literal (see above).",
    )
    server: str | None = Field(default=None, description="Server for this operation (default: the batch's).")
    id: str | None = Field(default=None, pattern=ID_PATTERN, description="Name to reference this result by.")
    timeoutMs: int | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_MS, description="Overrides options.timeoutMs for this one."
    )


Include = Literal["all", "errors", "status"]


class Options(_Strict):
    """How the batch runs and how much of it comes back."""

    maxConcurrent: int = Field(default=10, ge=1, le=MAX_CONCURRENT, description="Operations running at once.")
    timeoutMs: int = Field(
        default=30000,
        gt=0,
        le=MAX_TIMEOUT_MS,
        description="Per operation; on expiry the downstream call is cancelled.",
    )
    stopOnError: bool = Field(
        default=False,
        description="After a failure, start nothing new; the rest are skipped.",
    )
    cancelOnError: bool = Field(
        default=False, description="Like stopOnError, and also cancel the operations still running."
    )
    keepAlive: SkipJsonSchema[bool] = Field(  # BatchIt's; not advertised
        default=False,
        description="Accepted for BatchIt requests; the hub keeps connections open until idle_timeout_s.",
    )
    include: Include = Field(
        default="all",
        description="all, errors (failed ones only) or status (statuses only).",
    )
    maxResultBytes: int | None = Field(
        default=None,
        gt=0,
        description="Cut each operation's result to this many bytes, saying how much was cut.",
    )


class BatchRequest(_Strict):
    """Many tool calls on downstream servers in one request."""

    server: str | None = Field(default=None, description="A server from hub.toml for every operation.")
    # BatchIt's object form is accepted but not advertised: it costs every turn ~1 KB of schema,
    # and a configured server's bare name does the same job.
    targetServer: Annotated[str, Field(min_length=1)] | SkipJsonSchema[TargetServer] | None = Field(
        default=None, description="BatchIt's name for `server` (its {name, transport} object works too)."
    )
    operations: list[Operation] = Field(
        min_length=1, description="Run in order, up to maxConcurrent at once."
    )
    options: Options = Field(default_factory=Options, description="How to run, and how much to return.")

    @property
    def target(self) -> TargetServer | None:
        """`targetServer` as an object (a bare name is `{"name": name}`)."""
        if isinstance(self.targetServer, str):
            return TargetServer(name=self.targetServer)
        return self.targetServer

    @model_validator(mode="after")
    def _one_default_server(self) -> BatchRequest:
        if self.server is not None and self.target is not None and self.server != self.target.name:
            raise ValueError("give `server` or `targetServer`, not both")
        return self
