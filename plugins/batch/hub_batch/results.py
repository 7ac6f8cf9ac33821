"""Results on disk: `<job_id>.raw.jsonl` (the API's lines as received) and `<job_id>.md` (one
section per request: its custom_id, status, text or error, usage). Both are written line by line
as the results stream in, never held in memory."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .jobs import add_counts
from .pricing import PriceTable

FLUSH_ROWS = 1000


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=lambda: add_counts([]))
    cost_usd: float = 0.0


def outcome(line: dict[str, Any], model_of: Callable[[str], str], prices: PriceTable) -> dict[str, Any]:
    """One request's row for the store from one result line."""
    result = line.get("result") or {}
    kind = result.get("type", "errored")
    row: dict[str, Any] = {
        "custom_id": line.get("custom_id", ""),
        "status": kind if kind in ("succeeded", "errored", "canceled", "expired") else "errored",
        "input_tokens": None,
        "output_tokens": None,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
        "cost_usd": None,
        "error": None,
    }
    if kind == "succeeded":
        message = result.get("message") or {}
        usage = message.get("usage") or {}
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
        ):
            row[key] = usage.get(key)
        row["cost_usd"] = prices.cost(message.get("model") or model_of(row["custom_id"]), usage)
    elif kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        row["error"] = f"{error.get('type', 'error')}: {error.get('message', 'no message')}"
    return row


def markdown_section(line: dict[str, Any], row: dict[str, Any]) -> str:
    head = f"## {row['custom_id']} ({row['status']})\n\n"
    if row["status"] == "succeeded":
        message = line["result"].get("message") or {}
        parts = []
        for block in message.get("content") or []:
            if block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "thinking":
                parts.append(
                    "<details><summary>thinking</summary>\n\n" + block.get("thinking", "") + "\n\n</details>"
                )
        usage = f"_{row['input_tokens'] or 0} input and {row['output_tokens'] or 0} output tokens, ${row['cost_usd']:.6f} at the batch rate_"
        stop = message.get("stop_reason")
        if stop and stop != "end_turn":
            usage += f" _(stopped: {stop})_"
        return head + "\n\n".join(parts).strip() + "\n\n" + usage + "\n\n"
    if row["status"] == "errored":
        return head + f"**Error:** {row['error']}\n\n"
    if row["status"] == "expired":
        return head + "**Expired:** the API did not process this request within 24 hours.\n\n"
    return head + "**Canceled** before it was processed.\n\n"


class ResultWriter:
    """Writes one job's two files; `add_lines` for each API batch, then `finish`."""

    def __init__(self, job: dict[str, Any], prices: PriceTable, model_of: Callable[[str], str]) -> None:
        self.job = job
        self.prices = prices
        self.model_of = model_of
        self.tally = Tally()
        self.raw_path = Path(job["raw_path"])
        self.md_path = Path(job["result_path"])
        # Prompts and outputs: private to the user whatever the umask (0700 when made here, 0600 files).
        self.raw_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Unique names: another hub may write the same job's files (a forced fetch) at the same time;
        # the complete file replaces the old one in one rename.
        unique = f"{os.getpid()}.{secrets.token_hex(4)}.part"
        self._tmp_raw = self.raw_path.with_name(f".{self.raw_path.name}.{unique}")
        self._tmp_md = self.md_path.with_name(f".{self.md_path.name}.{unique}")
        self.raw: IO[str] = _private(self._tmp_raw)
        self.md: IO[str] = _private(self._tmp_md)
        label = f": {job['label']}" if job.get("label") else ""
        self.md.write(
            f"# Batch job {job['id']}{label}\n\n"
            f"Backend {job['backend']}, model {job['model']}, {job['request_count']} request(s), "
            f"submitted {job['created_at']}. Results in the order the API returned them; the summary is at the end.\n\n"
        )

    async def add_lines(
        self, lines: AsyncIterator[str], record: Callable[[list[dict[str, Any]]], Awaitable[None]]
    ) -> None:
        rows: list[dict[str, Any]] = []
        async for text in lines:
            if not text.strip():
                continue
            self.raw.write(text.rstrip("\n") + "\n")
            try:
                line = json.loads(text)
            except ValueError:
                self.md.write(f"## (unreadable line)\n\n```\n{text[:500]}\n```\n\n")
                continue
            row = outcome(line, self.model_of, self.prices)
            self.tally.counts[row["status"]] = self.tally.counts.get(row["status"], 0) + 1
            self.tally.cost_usd += row["cost_usd"] or 0.0
            self.md.write(markdown_section(line, row))
            rows.append(row)
            if len(rows) >= FLUSH_ROWS:
                await record(rows)
                rows = []
        if rows:
            await record(rows)

    def finish(self, state: str) -> None:
        counts = ", ".join(f"{n} {k}" for k, n in self.tally.counts.items() if n and k != "processing")
        self.md.write(
            f"---\n\n**Summary:** {state}: {counts or 'no results'}; "
            f"cost ${self.tally.cost_usd:.6f} at the batch rate (50% of standard).\n"
        )
        self.close()
        self._tmp_raw.replace(self.raw_path)
        self._tmp_md.replace(self.md_path)

    def close(self) -> None:
        self.raw.close()
        self.md.close()

    def discard(self) -> None:
        self.close()
        self._tmp_raw.unlink(missing_ok=True)
        self._tmp_md.unlink(missing_ok=True)


def _private(path: Path) -> IO[str]:
    """A new file only this user can read (0600), for writing text."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8")
