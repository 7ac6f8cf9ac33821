"""Turning `send_to_batch` input into API request bodies on disk, split at the API's limits.

Runs in a worker thread: prompts are read (packet files only from the allowed roots), each
request is serialized once and appended to the current part's spool file, and a new part starts
when the next request would pass `max_requests` or `max_bytes` (with `one_model_per_part`, each
model has its own current part). Nothing but the request ids is
kept in memory, so a 50,000-request job costs no more memory than a small one.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub import ToolError

from .pricing import PriceTable

MAX_TOKENS = 1_000_000  # upper bound of max_tokens and thinking_budget (no model goes near it)
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
HEAD, SEP, TAIL = b'{"requests":[', b",", b"]}"


class RequestItem(BaseModel):
    """One request of a job (an item of `requests`, or a line of `requests_path`)."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str | None = Field(
        default=None, pattern=CUSTOM_ID.pattern, description="Unique in the job; default r00001, ..."
    )
    prompt: str | None = Field(default=None, description="The user message.")
    packet_path: str | None = Field(default=None, description="A file holding the user message.")
    system: str | None = Field(default=None, description="Overrides the job's system prompt.")
    model: str | None = Field(default=None, description="Overrides the job's model.")
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="Overrides the job's max_tokens."
    )
    temperature: float | None = Field(default=None, ge=0, le=1, description="Overrides the job's.")
    thinking_budget: int | None = Field(
        default=None, ge=1024, le=MAX_TOKENS, description="Thinking budget, in tokens."
    )


@dataclass
class Defaults:
    model: str
    max_tokens: int
    system: str | None
    temperature: float | None
    thinking_budget: int | None
    context: str  # shared context block appended to every system prompt ('' for none)


@dataclass
class Part:
    path: Path
    count: int = 0
    size: int = 0


@dataclass
class Spooled:
    parts: list[Part] = field(default_factory=list)
    rows: list[tuple[str, int, str]] = field(default_factory=list)  # custom_id, part, model
    reserve_usd: float = 0.0
    models: set[str] = field(default_factory=set)
    unknown_models: set[str] = field(default_factory=set)


class PacketReader:
    """Reads prompt files and JSONL request files, only from under the allowed roots, only regular
    files (a FIFO or device would block the read forever), and only up to the configured sizes."""

    def __init__(
        self,
        roots: list[Path],
        max_bytes: int,
        max_file_bytes: int = 1_000_000_000,
        max_line_bytes: int = 16_000_000,
    ) -> None:
        self.roots = roots
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self.max_line_bytes = max_line_bytes

    def resolve(self, given: str, what: str = "packet_path") -> Path:
        path = Path(given).expanduser()
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            roots = ", ".join(str(r) for r in self.roots)
            raise ToolError(
                f"{what} {given!r} is outside the allowed roots ({roots}); "
                "add a root to [plugins.batch] packet_roots to allow it"
            )
        if not resolved.exists():
            raise ToolError(f"{what} {given!r}: no such file")
        if resolved.is_dir():
            raise ToolError(f"{what} {given!r} is a directory, not a file")
        return resolved

    def open(self, given: str, what: str, limit: int, setting: str) -> BinaryIO:
        """The file, opened without blocking, checked to be a regular file within `limit` bytes."""
        path = self.resolve(given, what)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ToolError(f"{what} {given!r} cannot be read: {exc.strerror or exc}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise ToolError(
                f"{what} {given!r} is not a regular file (a FIFO, socket or device cannot be read "
                "safely); give a regular file"
            )
        if info.st_size > limit:
            os.close(fd)
            raise ToolError(
                f"{what} {given!r} is {info.st_size:,} bytes, over the limit of {limit:,} ([plugins.batch] {setting})"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def read(self, given: str, what: str = "packet_path") -> str:
        with self.open(given, what, self.max_bytes, "max_packet_bytes") as handle:
            try:
                data = handle.read(self.max_bytes + 1)
            except OSError as exc:
                raise ToolError(f"{what} {given!r} cannot be read: {exc.strerror or exc}") from None
        if len(data) > self.max_bytes:  # it grew since it was checked
            raise ToolError(
                f"{what} {given!r} is over the limit of {self.max_bytes:,} bytes ([plugins.batch] max_packet_bytes)"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError(f"{what} {given!r} is not UTF-8 text (byte {exc.start})") from None
        if not text.strip():
            raise ToolError(f"{what} {given!r} is empty")
        return text


def jsonl_items(reader: PacketReader, given: str) -> Iterator[RequestItem]:
    """The requests of a JSONL file, one per line (blank lines skipped), read as a stream as they
    are used; a line over `max_line_bytes` or a file over `max_file_bytes` is refused."""
    what = "requests_path"
    total = 0
    with reader.open(given, what, reader.max_file_bytes, "max_requests_file_bytes") as handle:
        number = 0
        while True:
            raw = handle.readline(reader.max_line_bytes + 1)
            if not raw:
                return
            number += 1
            total += len(raw)
            if len(raw) > reader.max_line_bytes:
                raise ToolError(
                    f"{what} {given!r} line {number} is over {reader.max_line_bytes:,} bytes "
                    "([plugins.batch] max_request_line_bytes); put a long prompt in a packet_path file"
                )
            if total > reader.max_file_bytes:
                raise ToolError(
                    f"{what} {given!r} is over the limit of {reader.max_file_bytes:,} bytes "
                    "([plugins.batch] max_requests_file_bytes)"
                )
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ToolError(f"{what} {given!r} line {number} is not UTF-8 (byte {exc.start})") from None
            try:
                yield RequestItem.model_validate_json(line)
            except ValidationError as exc:
                problem = "; ".join(
                    f"{'.'.join(map(str, e['loc'])) or '(line)'}: {e['msg']}" for e in exc.errors()[:3]
                )
                raise ToolError(f"{what} {given!r} line {number}: {problem}") from None


def params_for(item: RequestItem, prompt: str, defaults: Defaults) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": item.model or defaults.model,
        "max_tokens": item.max_tokens or defaults.max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }
    system = "\n\n".join(s for s in (item.system or defaults.system, defaults.context) if s)
    if system:
        params["system"] = system
    temperature = item.temperature if item.temperature is not None else defaults.temperature
    if temperature is not None:
        params["temperature"] = temperature
    thinking = item.thinking_budget or defaults.thinking_budget
    if thinking:
        if thinking >= params["max_tokens"]:
            raise ToolError(f"thinking_budget {thinking} must be below max_tokens {params['max_tokens']}")
        params["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    return params


def spool(
    items: Iterable[RequestItem],
    *,
    directory: Path,
    job_id: str,
    defaults: Defaults,
    reader: PacketReader,
    prices: PriceTable,
    max_requests: int,
    max_bytes: int,
    max_total: int,
    on_rows: Callable[[list[tuple[str, int, str]]], None] | None = None,
    one_model_per_part: bool = False,
) -> Spooled:
    """Write the request bodies of `items` to part files under `directory`; see the module doc.
    `one_model_per_part`: requests for different models go to different parts (a Vertex job
    takes one model)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = Spooled()
    seen: set[str] = set()
    files = _PartFiles(directory, job_id, out.parts, max_requests, max_bytes, one_model_per_part)
    try:
        for index, item in enumerate(items, 1):
            if index > max_total:
                raise ToolError(
                    f"more than {max_total:,} requests in one job ([plugins.batch] max_requests_per_job)"
                )
            custom_id, prompt, params, line = _request_line(item, index, seen, reader, defaults, max_bytes)
            model = params["model"]
            number = files.write(model, line)
            _count(out, prices, model, prompt, params)
            out.rows.append((custom_id, number, model))
            if on_rows is not None and len(out.rows) >= 5000:
                on_rows(out.rows)
                out.rows = []
        if not out.parts:
            raise ToolError("no requests: the job is empty")
        files.finish()
    finally:
        files.close()
    if on_rows is not None and out.rows:
        on_rows(out.rows)
        out.rows = []
    return out


def _request_line(
    item: RequestItem,
    index: int,
    seen: set[str],
    reader: PacketReader,
    defaults: Defaults,
    max_bytes: int,
) -> tuple[str, str, dict[str, Any], bytes]:
    """Check request number `index` and serialize it: its custom_id, prompt, params and JSON line.
    `seen` holds the custom_ids taken so far, this one added."""
    where = f"request {item.custom_id or index}"
    if (item.prompt is None) == (item.packet_path is None):
        raise ToolError(f"{where}: give exactly one of prompt or packet_path")
    prompt = (
        item.prompt
        if item.prompt is not None
        else reader.read(item.packet_path or "", f"{where}: packet_path")
    )
    if not prompt.strip():
        raise ToolError(f"{where}: the prompt is empty")
    custom_id = item.custom_id or f"r{index:05d}"
    if custom_id in seen:
        raise ToolError(f"{where}: custom_id {custom_id!r} is used twice in this job")
    seen.add(custom_id)
    params = params_for(item, prompt, defaults)
    line = json.dumps({"custom_id": custom_id, "params": params}, ensure_ascii=False).encode()
    if len(line) + len(HEAD) + len(TAIL) > max_bytes:
        raise ToolError(f"{where} is {len(line):,} bytes, over the {max_bytes:,} bytes one batch may hold")
    return custom_id, prompt, params, line


def _count(out: Spooled, prices: PriceTable, model: str, prompt: str, params: dict[str, Any]) -> None:
    """Add one written request to the job's models and to what it reserves."""
    out.models.add(model)
    if not prices.price(model)[1]:
        out.unknown_models.add(model)
    input_bytes = len(prompt.encode()) + len((params.get("system") or "").encode())
    out.reserve_usd += prices.upper_bound(model, input_bytes, params["max_tokens"])


class _PartFiles:
    """The part files a job is being written to: the open part each request goes to (one per
    model when a batch takes one model, else one for all), a new one when it would be too big."""

    def __init__(
        self,
        directory: Path,
        job_id: str,
        parts: list[Part],
        max_requests: int,
        max_bytes: int,
        one_model_per_part: bool,
    ) -> None:
        self.directory = directory
        self.job_id = job_id
        self.parts = parts  # every part made, in order (the job's `Spooled.parts`)
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.one_model_per_part = one_model_per_part
        self.open_parts: dict[str, tuple[int, Part, BinaryIO]] = {}

    def write(self, model: str, line: bytes) -> int:
        """Append one request line to its part; returns the part's number."""
        key = model if self.one_model_per_part else ""
        entry = self.open_parts.get(key)
        if entry is not None and (
            entry[1].count >= self.max_requests
            or entry[1].size + len(SEP) + len(line) + len(TAIL) > self.max_bytes
        ):
            self._close(entry[1], entry[2])
            entry = None
        if entry is None:
            current = Part(self.directory / f"{self.job_id}.{len(self.parts)}.json")
            entry = self.open_parts[key] = (len(self.parts), current, current.path.open("wb"))
            self.parts.append(current)
            entry[2].write(HEAD)
            current.size = len(HEAD)
        else:
            entry[2].write(SEP)
            entry[1].size += len(SEP)
        number, current, handle = entry
        handle.write(line)
        current.size += len(line)
        current.count += 1
        return number

    def finish(self) -> None:
        """End every open part's JSON."""
        for _, part, handle in self.open_parts.values():
            self._close(part, handle)

    def close(self) -> None:
        """Close every file, finished or not (on an error too)."""
        for _, _, handle in self.open_parts.values():
            handle.close()

    @staticmethod
    def _close(part: Part, handle: BinaryIO) -> None:
        handle.write(TAIL)
        part.size += len(TAIL)
        handle.close()
