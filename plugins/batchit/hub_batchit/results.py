"""A downstream's tool result as a batch reads it: the wire JSON, checked once, kept as it came.

An operation's result arrives as the JSON the server sent (`hub.call_tool_raw`). The batch reads
it in three places (its status, references from later operations, the batch's answer), and each
reads the same dicts: no result model is built per operation for the common plain text block,
which goes back to the caller as the server wrote it. `Result.from_wire` checks what those
readers rely on and names the first problem otherwise.
"""

from __future__ import annotations

import json
from typing import Any

import mcp.types as types
import pydantic_core
from pydantic import TypeAdapter, ValidationError

__all__ = ["Result"]

_BLOCK: TypeAdapter[Any] = TypeAdapter(types.ContentBlock)
ANSWER_DEPTH = 8  # how deep an operation's result sits in the batch's answer, with a margin


def _sendable(content: list[dict[str, Any]], structured: dict[str, Any] | None) -> None:
    """Raise `ValueError` if the answer could not carry this result: the check pydantic's
    serializer makes when the SDK sends the answer, at the depth the result will sit at."""
    wrapped: Any = {"content": content, "structuredContent": structured}
    for _ in range(ANSWER_DEPTH):
        wrapped = [wrapped]
    try:
        pydantic_core.to_jsonable_python(wrapped)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"it cannot be sent on: {exc}") from None


class Result:
    """One operation's result: `content` (the blocks, wire JSON), `structured` (its
    structuredContent, or None), `is_error`, and `others`, its non-text blocks as models, which
    follow the operation's text in the batch's answer."""

    __slots__ = ("content", "is_error", "others", "structured")

    def __init__(
        self,
        content: list[dict[str, Any]],
        structured: dict[str, Any] | None = None,
        is_error: bool = False,
        others: list[Any] | None = None,
    ) -> None:
        self.content = content
        self.structured = structured
        self.is_error = is_error
        self.others = others or []

    @classmethod
    def from_wire(cls, raw: Any) -> Result:
        """`raw` (a `CallToolResult` as JSON) checked; `ValueError` names what is wrong with it.

        A plain text block (`type` and `text`, the common case) is kept as it came; any other
        block is validated and kept as its model's dump, so keys the protocol does not define
        are dropped. The result must also be one the batch's answer can carry (pydantic's
        serializer refuses lone surrogates in keys and nesting past its depth limit)."""
        if not isinstance(raw, dict):
            raise ValueError(f"the result is {type(raw).__name__}, not an object")
        content = raw.get("content")
        if not isinstance(content, list):
            raise ValueError("the result has no `content` list")
        kept: list[dict[str, Any]] = []
        others: list[Any] = []
        for i, block in enumerate(content):
            if type(block) is dict and block.get("type") == "text":
                if type(block.get("text")) is not str:
                    raise ValueError(f"content[{i}] is a text block without a `text` string")
                if len(block) == 2:  # `type` and `text` only: kept as it came
                    kept.append(block)
                    continue
            try:
                model = _BLOCK.validate_python(block, by_name=False)
                kept.append(model.model_dump(by_alias=True, mode="json", exclude_none=True))
            except ValidationError as exc:
                problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                raise ValueError(f"content[{i}] is not a content block ({problem})") from None
            except (ValueError, RecursionError) as exc:
                raise ValueError(f"content[{i}] cannot be sent on: {exc}") from None
            if model.type != "text":
                others.append(model)
        structured = raw.get("structuredContent")
        if structured is not None and not isinstance(structured, dict):
            raise ValueError(f"its structuredContent is {type(structured).__name__}, not an object")
        is_error = raw.get("isError")
        if is_error is not None and type(is_error) is not bool:
            raise ValueError(f"its isError is {json.dumps(is_error)[:40]}, not true or false")
        _sendable(kept, structured)
        return cls(kept, structured, is_error is True, others)

    @property
    def has_text(self) -> bool:
        """Whether any block is a text block (every block that is not one is in `others`)."""
        return len(self.others) < len(self.content)

    @property
    def text(self) -> str:
        """The text blocks, joined by newlines."""
        return "\n".join(block["text"] for block in self.content if block.get("type") == "text")
