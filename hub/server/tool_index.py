"""The search index behind `find_tools` (`hub.server.discovery`): every tool the hub could list,
ranked for a natural-language query with SQLite FTS5's BM25.

Why FTS5: it is in the `sqlite3` module every Python has (the hub's store already uses SQLite),
so it adds no dependency; BM25 is the standard bag-of-words ranking (term frequency, inverse
document frequency, length normalisation) with a weight per column; the porter tokenizer folds
"files", "reading" and "listed" onto "file", "read" and "list"; and an in-memory index of 1,000
tools is built in a few milliseconds and answers in well under one. A learned ranker (embeddings)
would need a model the hub cannot ship.

Each tool is one row, in four columns, weighted in that order:

- `name`: the tool's name split into words (`fs__read_text_file` -> fs read text file; camelCase
  and `-` too), with the name itself;
- `description`;
- `params`: each parameter's name (split the same way) and description;
- `server`: its server's name (the downstream server for a proxied tool, else its plugin) and
  that server's instructions, when the hub has them.

A query keeps its words minus common English ones, adds a few synonyms that tool texts tend to
use for the words people ask with ("folder" finds "directory"), and matches any of them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["IndexedTool", "ToolIndex", "name_words", "query_terms"]

#: BM25 weights of the columns name, description, params, server.
WEIGHTS = (6.0, 2.0, 1.0, 0.6)

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

_STOP_TEXT = """a about above after again all also am an and any are as at be been before being below
    between both but by can could did do does doing done down during each else few for from
    further get got had has have having he her here hers him his how i if in into is it its
    itself just let like me might more most much must my need no nor not of off on once only
    or other our out over own please same say see she should so some such than that the their
    them then there these they this those through to too under until up use using very want was
    way we were what when where which while who whom why will with would you your yours"""
STOPWORDS = frozenset(_STOP_TEXT.split())

#: Words people ask with -> words tool texts use. Small and general on purpose: each line is a
#: common paraphrase, not a fit to any one server.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "folder": ("directory",),
    "folders": ("directory",),
    "dir": ("directory",),
    "subfolder": ("directory",),
    "open": ("read",),
    "show": ("read", "list"),
    "view": ("read",),
    "contents": ("read", "content"),
    "save": ("write", "create"),
    "store": ("write", "create"),
    "change": ("edit", "update"),
    "modify": ("edit", "update"),
    "replace": ("edit",),
    "rename": ("move",),
    "remove": ("delete",),
    "erase": ("delete",),
    "forget": ("delete",),
    "find": ("search",),
    "look": ("search",),
    "lookup": ("search",),
    "locate": ("search",),
    "grep": ("search",),
    "download": ("fetch", "url"),
    "webpage": ("fetch", "url"),
    "website": ("fetch", "url"),
    "page": ("url",),
    "web": ("fetch", "url"),
    "http": ("fetch", "url"),
    "link": ("url",),
    "remember": ("memory", "create", "observation"),
    "note": ("observation",),
    "notes": ("observation",),
    "fact": ("observation",),
    "facts": ("observation",),
    "knowledge": ("graph", "entity"),
    "person": ("entity",),
    "people": ("entity",),
    "relationship": ("relation",),
    "relationships": ("relation",),
    "clock": ("time", "current"),
    "now": ("current", "time"),
    "timezone": ("time", "zone"),
    "tz": ("timezone",),
    "convert": ("conversion",),
    "history": ("log",),
    "commits": ("commit", "log"),
    "changes": ("diff", "status"),
    "diff": ("difference",),
    "compare": ("diff", "difference"),
    "dump": ("read", "export"),
    "picture": ("image",),
    "photo": ("image",),
    "screenshot": ("image",),
    "png": ("image",),
    "jpg": ("image",),
    "staged": ("stage", "index"),
    "unstaged": ("unstage", "working"),
    "branches": ("branch",),
    "checkout": ("switch", "branch"),
    "undo": ("reset",),
    "sum": ("add",),
    "plus": ("add",),
    "repeat": ("echo",),
    "size": ("info", "metadata"),
    "metadata": ("info",),
    "tree": ("directory",),
    "allowed": ("allow",),
    "parallel": ("batch", "many"),
    "subagent": ("pool", "task"),
    "agent": ("pool", "task"),
    "cheaper": ("batch",),
    "cost": ("budget",),
    "spend": ("budget",),
}


def name_words(name: str) -> list[str]:
    """`fs__read_text_file` -> [fs, read, text, file]; `getUserInfo` -> [get, user, info]."""
    words: list[str] = []
    for part in _WORD.findall(name):
        words.extend(w.lower() for w in _CAMEL.split(part) if w)
    return words


def query_terms(query: str) -> list[str]:
    """The words of `query` that count, with their synonyms, each once, in order."""
    terms: list[str] = []
    for word in name_words(query):
        if word in STOPWORDS:
            continue
        for term in (word, *SYNONYMS.get(word, ())):
            if term not in terms:
                terms.append(term)
    return terms


@dataclass(frozen=True)
class IndexedTool:
    """What the index knows of one tool."""

    name: str
    server: str
    description: str
    schema: dict[str, Any]
    server_text: str = ""


def _params_text(schema: dict[str, Any], depth: int = 0) -> str:
    parts: list[str] = []
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return ""
    for key, spec in properties.items():
        parts.append(" ".join(name_words(str(key))))
        if isinstance(spec, dict):
            description = spec.get("description")
            if isinstance(description, str):
                parts.append(description)
            if depth < 1:
                items = spec.get("items")
                for nested in (spec, items if isinstance(items, dict) else {}):
                    parts.append(_params_text(nested, depth + 1))
    return " ".join(p for p in parts if p)


class ToolIndex:
    """An in-memory FTS5 index of tools; `rebuild` replaces them all, `search` ranks them."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.execute(
            "CREATE VIRTUAL TABLE tools USING fts5("
            "name, description, params, server, tokenize = 'porter unicode61')"
        )
        self.tools: list[IndexedTool] = []

    def rebuild(self, tools: Iterable[IndexedTool]) -> None:
        self.tools = list(tools)
        with self.db:
            self.db.execute("DELETE FROM tools")
            self.db.executemany(
                "INSERT INTO tools (rowid, name, description, params, server) VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        n,
                        f"{tool.name} {' '.join(name_words(tool.name))}",
                        tool.description,
                        _params_text(tool.schema),
                        f"{' '.join(name_words(tool.server))} {tool.server_text}",
                    )
                    for n, tool in enumerate(self.tools)
                ],
            )

    def search(self, query: str, limit: int = 5, server: str | None = None) -> list[IndexedTool]:
        """The best `limit` tools for `query` (of `server` only, when given), best first."""
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        match = " OR ".join('"' + term.replace('"', "") + '"' for term in terms)
        sql = f"SELECT rowid FROM tools WHERE tools MATCH ? ORDER BY bm25(tools, {', '.join(map(str, WEIGHTS))})"
        found: list[IndexedTool] = []
        for (rowid,) in self.db.execute(sql, (match,)):
            tool = self.tools[rowid]
            if server is not None and tool.server != server:
                continue
            found.append(tool)
            if len(found) >= limit:
                break
        return found
