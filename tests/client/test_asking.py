"""Whom a downstream server's request goes to (`hub.client.asking.Calls`): exactly when the
transport says, by elimination otherwise, refused when it cannot be told, and outside calls to a
session that can be asked there."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from hub.client.asking import AMBIGUOUS, CALLER, Calls

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeCaller:
    def __init__(
        self, name: str, session: Hashable | None, *, can: bool = True, outside: bool = False
    ) -> None:
        self.name = name
        self.session_key = session
        self.log_level: str | None = None
        self.can = can
        self.reachable_outside = outside
        self.asked: list[str] = []

    def can_ask(self, method: str, params: Any = None) -> bool:
        return self.can

    async def relay_request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(method)
        return {"roots": [{"uri": f"file:///{self.name}"}]} if method == "roots/list" else {"by": self.name}

    async def relay_log(self, params: dict[str, Any]) -> None:
        self.asked.append("log")

    def outside(self) -> FakeCaller | None:
        return self if self.reachable_outside else None


async def test_a_request_goes_to_its_call_or_is_refused_when_it_cannot_be_told():
    asked: list[Any] = []
    calls = Calls("s", on_asked=asked.append)
    a1, a2, b = FakeCaller("a1", "A"), FakeCaller("a2", "A"), FakeCaller("b", "B")
    with calls.running(a1):
        CALLER.set(None)  # as on stdio: nothing on the wire says whose request it is
        assert await calls.ask("sampling/createMessage", {}) == {"by": "a1"}
        with calls.running(a2):
            CALLER.set(None)
            assert await calls.ask("sampling/createMessage", {}) == {
                "by": "a2"
            }  # one session: its newest call
            with calls.running(b):
                CALLER.set(None)
                assert calls.attribute() is AMBIGUOUS
                with pytest.raises(MCPError, match="cannot tell which of its clients"):
                    await calls.ask("sampling/createMessage", {})
                CALLER.set(b)  # the transport knows (streamable HTTP)
                assert await calls.ask("sampling/createMessage", {}) == {"by": "b"}
    assert asked == ["A", "A", None, "B"]


async def test_outside_calls_a_session_that_can_be_asked_then_the_last_roots():
    calls = Calls("s")
    with pytest.raises(MCPError, match="outside any call"):
        await calls.ask("roots/list", {})
    reachable = FakeCaller("r", "R", outside=True)
    with calls.running(FakeCaller("x", "X")), calls.running(reachable):
        pass
    assert await calls.ask("roots/list", {}) == {"roots": [{"uri": "file:///r"}]}
    reachable.reachable_outside = False  # its session ended
    assert await calls.ask("roots/list", {}) == {"roots": [{"uri": "file:///r"}]}  # the last answer
    with pytest.raises(MCPError, match="did not declare the sampling capability"):
        with calls.running(FakeCaller("n", "N", can=False)):
            await calls.ask("sampling/createMessage", {})
