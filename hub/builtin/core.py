"""The hub's own plugin, loaded under the name ``core``: the shared-context tools and the hub's
resources (hub://status, hub://context, hub://budget).

It uses the same hooks and the same public API (`hub`) as every other plugin; it is simply
always loaded. `hub.host` imports it; it never imports `hub.host` at run time (one-way).
Tool names and return shapes of the context tools are those of the original slot pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hub import CONTEXT_MAX_KEY_LENGTH as MAX_KEY_LENGTH
from hub import CONTEXT_MAX_VALUE_LENGTH as MAX_VALUE_LENGTH
from hub import RegisterResource, RegisterTool, Resource, Tool, ToolCall, ToolError, hookimpl

if TYPE_CHECKING:
    from hub import PluginContext


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyArgs(_Args):
    key: str = Field(description="The context key.", min_length=1, max_length=MAX_KEY_LENGTH)


class ScopedKeyArgs(KeyArgs):
    scope: Literal["project", "global"] = Field(
        default="project", description="project (this repository) or global."
    )


class SetArgs(ScopedKeyArgs):
    value: str = Field(description="The value; text, at most 64 KiB.", max_length=MAX_VALUE_LENGTH)


class NoArgs(_Args):
    pass


@hookimpl
def hub_register_tools(register: RegisterTool, hub: PluginContext) -> None:
    context = hub.context

    async def context_set(args: SetArgs, call: ToolCall) -> dict[str, str]:
        await context.set(args.key, args.value, args.scope)
        # The slot pool's {key, value}; a global entry says so.
        return {
            "key": args.key,
            "value": args.value,
            **({"scope": "global"} if args.scope == "global" else {}),
        }

    async def context_get(args: KeyArgs, call: ToolCall) -> dict[str, str]:
        found = await context.lookup(args.key)
        if found is None:
            keys = ", ".join(sorted(await context.all())) or "none"
            raise ToolError(f"no context entry {args.key!r} (keys: {keys})")
        return {"value": found[0], "scope": found[1]}

    async def context_list(args: NoArgs, call: ToolCall) -> dict[str, Any]:
        # {key: value} as the slot pool returned it; "@scopes" and "@project" cannot be keys.
        entries = await context.entries()
        listed: dict[str, Any] = {key: value for key, (value, _) in entries.items()}
        listed["@scopes"] = {key: scope for key, (_, scope) in entries.items()}
        listed["@project"] = context.project
        return listed

    async def context_delete(args: ScopedKeyArgs, call: ToolCall) -> dict[str, Any]:
        return {"deleted": await context.delete(args.key, args.scope), "scope": args.scope}

    register(
        Tool(
            "context_set",
            context_set,
            "Set a shared context entry (key -> text), also added to pool slots' system prompts; "
            "project entries win over global ones.",
            SetArgs,
        )
    )
    register(Tool("context_get", context_get, "Get one shared context entry (and its scope).", KeyArgs))
    register(
        Tool(
            "context_list",
            context_list,
            "This project's context entries {key: value}, with '@scopes' and '@project'.",
            NoArgs,
        )
    )
    register(
        Tool(
            "context_delete",
            context_delete,
            "Delete a context entry of this project (or scope global).",
            ScopedKeyArgs,
        )
    )


@hookimpl
def hub_register_resources(register: RegisterResource, hub: PluginContext) -> None:
    register(
        Resource(
            "hub://status",
            "status",
            hub.status,
            "Loaded plugins and versions, budget, context size, downstream servers.",
        )
    )
    register(Resource("hub://context", "context", hub.context.all, "All shared context entries."))
    register(
        Resource(
            "hub://budget",
            "budget",
            hub.budget.summary,
            "The shared budget: limit, spent, reserved, remaining, spend per plugin.",
        )
    )
