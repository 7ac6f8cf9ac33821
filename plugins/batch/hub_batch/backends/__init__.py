"""Batch backends: one small interface, one module each.

`anthropic` (the Message Batches API, `anthropic.py`) and `vertex` (Vertex AI batch prediction
for Claude, the original's second backend, `vertex.py`). Both take the spool's Anthropic body and
give Anthropic result lines, so jobs, result files and costs are the same whichever runs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

__all__ = ["BACKENDS", "Backend", "BackendError", "RemoteBatch"]

BACKENDS = ("anthropic", "vertex")


class BackendError(Exception):
    """A failed API call. `retryable`: rate limits, server errors and network trouble."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


@dataclass
class RemoteBatch:
    """A batch as the backend reports it."""

    id: str
    processing_status: str  # in_progress | canceling | ended
    request_counts: dict[str, int] = field(default_factory=dict)
    results_url: str | None = None
    created_at: str | None = None
    ended_at: str | None = None
    expires_at: str | None = None

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"


class Backend(Protocol):
    name: str
    # True when one API batch takes one model (Vertex: a job has one model): the spool then
    # starts a part per model.
    one_model_per_batch: bool

    async def create(self, body: Path, size: int, name: str) -> RemoteBatch:
        """Submit the JSON body in file `body` (`size` bytes): ``{"requests": [...]}``. `name` is
        unique to this API batch (`<job_id>-<part>`), for backends that can label a batch."""
        ...

    async def find_created(self, name: str, count: int, since: float) -> list[RemoteBatch]:
        """Batches created at or after unix time `since` that may be the one a `create(..., name)`
        of `count` requests made when the hub died before its answer came: by label where the API
        keeps one, else by request count. Oldest first."""
        ...

    async def retrieve(self, batch_id: str) -> RemoteBatch: ...

    async def cancel(self, batch_id: str) -> RemoteBatch: ...

    def result_lines(self, batch_id: str) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """The batch's result lines, as the API sent them, streamed."""
        ...

    async def aclose(self) -> None: ...
