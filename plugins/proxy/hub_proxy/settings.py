"""The proxy's configuration: `[plugins.proxy]` (`Settings`) and the keys it adds to every
`[servers.NAME]` table (`ServerKeys`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServerKeys(BaseModel):
    """The proxy's keys in every `[servers.NAME]` table (declared by `hub_server_config_model`)."""

    expose: bool = Field(default=True, description="Serve this server's tools through the hub.")
    eager: bool = Field(
        default=False,
        description="Start at hub start instead of on first use, and restart (with backoff) when it dies.",
    )
    prefix: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,50}$",
        description="Tool name prefix; default: the server name.",
    )
    include: list[str] | None = Field(default=None, description="Serve only these downstream tools.")
    exclude: list[str] = Field(default_factory=list, description="Never serve these downstream tools.")


class Settings(BaseModel):
    """`[plugins.proxy]`."""

    model_config = ConfigDict(extra="forbid")
    separator: str = Field(
        default="__", pattern=r"^[A-Za-z0-9_-]{1,3}$", description="Between prefix and tool."
    )
    first_list_wait_s: float = Field(
        default=5.0,
        ge=0,
        le=120,
        description="How long a session's first lists (and initialize / server/discover) wait for servers "
        "the hub has never listed, started with it; one that misses it arrives with list_changed.",
    )
    instructions_chars: int = Field(
        default=1000,
        ge=0,
        le=100_000,
        description="Per downstream server, how much of its instructions go into the hub's (0: none).",
    )
