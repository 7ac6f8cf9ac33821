"""An MCP client's side of what servers ask (sampling, elicitation, roots, log messages), for the
relay tests: `Answers` holds the callbacks `mcp.Client` takes and records what each was asked.
`ASKING` is the asking downstream server (tests/peers/asking.py) and `EXPECTED` what its tools
answer when a client answers as `Answers` does."""

from __future__ import annotations

import json
import sys
from typing import Any

import mcp.types as types
from hubtests import TESTS

ASKING = TESTS / "peers" / "asking.py"
ROOT_URI = "file:///work/project"
SAMPLE = {"model": "fake-llm", "text": "answer to P"}
FORM = {"action": "accept", "content": {"name": "Ada"}}
URL = {"action": "accept", "content": None}
ROOTS = {"roots": [ROOT_URI]}
EXPECTED = {
    "sample": {"sample": SAMPLE},
    "form": {"form": FORM},
    "url": {"url": URL},
    "roots": {"roots": ROOTS},
    "all": {"sample": SAMPLE, "form": FORM, "url": URL, "roots": ROOTS},
    "chain": {"form": FORM, "sample": {"model": "fake-llm", "text": "answer to Greet Ada"}},
}


def asking_server(**extra: Any) -> dict[str, Any]:
    """A `[servers.NAME]` table for the asking server (stdio)."""
    return {"command": sys.executable, "args": [str(ASKING)], **extra}


class Answers:
    """Callbacks for `mcp.Client` that answer like a user and a model would, recording each
    question (`asked`: method names, `prompts`: sampling texts, `logs`: levels received)."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.asked: list[str] = []
        self.prompts: list[str] = []
        self.logs: list[str] = []

    async def sampling(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        prompt = getattr(params.messages[0].content, "text", "")
        self.asked.append("sampling")
        self.prompts.append(prompt)
        text = f"answer to {prompt}"
        return types.CreateMessageResult(
            role="assistant", model="fake-llm", content=types.TextContent(type="text", text=text)
        )

    async def elicitation(self, ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        if isinstance(params, types.ElicitRequestURLParams):
            self.asked.append("elicitation:url")
            return types.ElicitResult(action="accept")
        self.asked.append("elicitation:form")
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def roots(self, ctx: Any) -> types.ListRootsResult:
        self.asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri=ROOT_URI, name="project")])  # type: ignore[arg-type]

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(params.level)

    def callbacks(self) -> dict[str, Any]:
        """The keyword arguments of `mcp.Client` (all three capabilities, and log messages)."""
        return {
            "sampling_callback": self.sampling,
            "elicitation_callback": self.elicitation,
            "list_roots_callback": self.roots,
            "logging_callback": self.log,
        }


def answer_of(result: types.CallToolResult) -> Any:
    """The asking server's answer (JSON in the first text block), or the failure's text."""
    text = "".join(block.text for block in result.content if isinstance(block, types.TextContent))
    assert not result.is_error, text
    return json.loads(text)
