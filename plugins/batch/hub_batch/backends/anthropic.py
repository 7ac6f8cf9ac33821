"""The Anthropic Message Batches API, through the official SDK (`AsyncAnthropic`).

The request body is streamed from a spool file (a job of 50,000 requests is never held in
memory), so this module retries that one call itself, with a fresh stream each time; every other
call relies on the SDK's own retries (429, 5xx and network errors, with backoff).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import anyio
from anthropic.types.messages import MessageBatch

from . import BackendError, RemoteBatch

CHUNK = 1 << 20
CREATE_ATTEMPTS = 4
# Creating a batch is not idempotent: retry only answers that say it was not processed. After a
# timeout or a 500 the batch may exist, and a second one would run (and be billed) unseen.
CREATE_RETRY_STATUSES = (429, 503, 529)


def _remote(batch: MessageBatch) -> RemoteBatch:
    def iso(value: Any) -> str | None:
        return None if value is None else value.isoformat().replace("+00:00", "Z")

    return RemoteBatch(
        id=batch.id,
        processing_status=batch.processing_status,
        request_counts=batch.request_counts.model_dump(),
        results_url=batch.results_url,
        created_at=iso(batch.created_at),
        ended_at=iso(batch.ended_at),
        expires_at=iso(batch.expires_at),
    )


def _error(exc: Exception, what: str) -> BackendError:
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = exc.message
        retryable = status == 429 or status >= 500
        return BackendError(f"{what}: HTTP {status}: {detail}", retryable=retryable, status=status)
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APITimeoutError):
        return BackendError(f"{what}: cannot reach the API: {exc}", retryable=True)
    return BackendError(f"{what}: {type(exc).__name__}: {exc}", retryable=False)


class AnthropicBackend:
    name = "anthropic"
    one_model_per_batch = False

    def __init__(self, *, api_key: str, base_url: str | None, max_retries: int = 2) -> None:
        self.client = anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=max_retries)

    async def create(self, body: Path, size: int, name: str) -> RemoteBatch:
        """`name` is not sent: a Message Batch has no name (`find_created` matches by time and size)."""

        async def stream() -> AsyncGenerator[bytes, None]:
            async with await anyio.open_file(body, "rb") as f:
                while chunk := await f.read(CHUNK):
                    yield chunk

        client = self.client.with_options(max_retries=0)  # a consumed stream cannot be resent
        for attempt in range(CREATE_ATTEMPTS):
            body_stream = stream()
            try:
                batch = await client.post(
                    "/v1/messages/batches",
                    cast_to=MessageBatch,
                    content=body_stream,
                    options={"headers": {"Content-Type": "application/json", "Content-Length": str(size)}},
                )
                return _remote(batch)
            except Exception as exc:
                error = _error(exc, "creating the batch")
                if error.status not in CREATE_RETRY_STATUSES or attempt == CREATE_ATTEMPTS - 1:
                    if error.status is None or error.status >= 500:
                        error = BackendError(
                            f"{error}; the API may have created the batch anyway (check the Anthropic console)",
                            retryable=False,
                            status=error.status,
                        )
                    raise error from None
                await anyio.sleep(min(8.0, 0.5 * 2**attempt))
            finally:
                await body_stream.aclose()  # closes the spool file whatever happened
        raise AssertionError("unreachable")

    async def find_created(self, name: str, count: int, since: float) -> list[RemoteBatch]:
        """The API keeps no label: batches of exactly `count` requests created since `since`."""
        found = []
        try:
            async for batch in self.client.messages.batches.list(limit=100):  # newest first
                if batch.created_at.timestamp() < since:
                    break
                if sum(batch.request_counts.model_dump().values()) == count:
                    found.append(_remote(batch))
        except Exception as exc:
            raise _error(exc, "listing batches") from None
        return found[::-1]

    async def retrieve(self, batch_id: str) -> RemoteBatch:
        try:
            return _remote(await self.client.messages.batches.retrieve(batch_id))
        except Exception as exc:
            raise _error(exc, f"reading batch {batch_id}") from None

    async def cancel(self, batch_id: str) -> RemoteBatch:
        try:
            return _remote(await self.client.messages.batches.cancel(batch_id))
        except Exception as exc:
            raise _error(exc, f"cancelling batch {batch_id}") from None

    @contextlib.asynccontextmanager
    async def result_lines(self, batch_id: str) -> AsyncIterator[AsyncIterator[str]]:
        what = f"downloading the results of batch {batch_id}"
        async with contextlib.AsyncExitStack() as stack:
            try:
                response = await stack.enter_async_context(
                    self.client.messages.batches.with_streaming_response.results(batch_id)
                )
            except Exception as exc:
                raise _error(exc, what) from None

            async def lines() -> AsyncIterator[str]:
                try:
                    async for line in response.iter_lines():
                        yield line
                except Exception as exc:
                    raise _error(exc, what) from None

            yield lines()

    async def aclose(self) -> None:
        await self.client.close()
