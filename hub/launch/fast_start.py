"""A fast start for stdio: answer a client's first list requests from the last run's answers
while the hub is still importing the MCP SDK (which alone takes most of a second).

Claude Code 2.1 opens with `server/discover`, `subscriptions/listen`, `prompts/list`,
`resources/list` and `tools/list` (the 2026-07-28 protocol era, where each request stands alone)
and waits for the answers before its first model request. This module, importing nothing heavy:

1. keeps, in `<state_dir>/fastfront.json`, the last answer the hub gave to each of those list
   requests (per protocol version), recorded as they pass while the hub serves;
2. at the next start, if the configuration is unchanged (same hub version, command line, HUB_*
   variables, hub.toml and the variables it names, working directory), answers those requests from the file at once, and holds every other
   message until the hub is up, then hands them over in order;
3. once the hub is up, asks it the same questions, and if an answer differs (a plugin changed),
   sends `list_changed` so the client reads the new list.

Handshake-era clients (`initialize` first) are not answered early: their session has state.
`HUB_FAST_START=0` turns this off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hub.config.paths import private_dir
from hub.wire.envelope import (
    ACKNOWLEDGED,
    CAPABILITIES_KEY,
    CLIENT_INFO_KEY,
    LISTEN,
    SESSION_TOOLS_KEY,
    SUBSCRIPTION_KEY,
    VERSION_KEY,
)
from hub.wire.lines import LineBuffer, write_all

try:  # the C module itself: `hashlib` loads OpenSSL, several MB in every bridge process
    from _blake2 import blake2b as _blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b as _blake2b

TRACKED = {
    "server/discover": None,
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resources",
}
CHECK_PREFIX = "hub-fastfront-check-"
HOLD_LINE_MAX = 1 << 20  # bytes of one line the bridge holds while the hub starts
FILE_NAME = "fastfront.json"


def request_key(message: Mapping[str, Any]) -> str | None:
    """`method|protocol version` for a list request the cache may answer, else None."""
    method = message.get("method")
    if method not in TRACKED or "id" not in message:
        return None
    params = message.get("params") or {}
    if not isinstance(params, dict) or params.get("cursor"):
        return None
    meta = params.get("_meta") or {}
    version = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
    return f"{method}|{version}" if isinstance(version, str) else None


def listen_key(message: Mapping[str, Any]) -> str | None:
    """A key for the acknowledgement of a `subscriptions/listen` request: version + what it asks."""
    if message.get("method") != LISTEN or "id" not in message:
        return None
    params = message.get("params") or {}
    meta = params.get("_meta") or {} if isinstance(params, dict) else {}
    version = meta.get(VERSION_KEY) if isinstance(meta, dict) else None
    if not isinstance(version, str):
        return None
    return f"{LISTEN}|{version}|{json.dumps(params.get('notifications'), sort_keys=True)}"


# What a result must hold to be the answer to each tracked list.
RESULT_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}


def _answers(key: str, result: Any) -> bool:
    """Whether `result` is an answer to the request `key` stands for (not a ping's `{}`, not a
    call's result under the same id)."""
    if not isinstance(result, dict):
        return False
    meta = result.get("_meta")
    if isinstance(meta, dict) and SESSION_TOOLS_KEY in meta:
        return False  # a session's own list (tools it loaded): not the next session's
    wanted = RESULT_KEYS.get(key.split("|", 1)[0])
    return wanted is None or isinstance(result.get(wanted), list)


def digest(data: bytes) -> str:
    """A hex digest of `data` (blake2b), without importing `hashlib`."""
    return _blake2b(data, digest_size=32).hexdigest()


_VAR = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def fingerprint(
    version: str,
    argv: Sequence[str],
    environ: Mapping[str, str],
    config_files: Sequence[Path],
    cwd: Path | None = None,
) -> str:
    """What the answers depend on: the hub's version, its arguments, `HUB_*`, every hub.toml read
    (user and project scope) and the values of the `${VAR}`s it names, and the working directory
    (where a server's relative paths point: another project lists other tools)."""
    digest = _blake2b(digest_size=32)
    digest.update(version.encode())
    digest.update(json.dumps(list(argv)).encode())
    names = {k for k in environ if k.startswith("HUB_")}
    digest.update(str((cwd or Path.cwd()).resolve()).encode())
    for config_file in config_files:
        digest.update(str(config_file.resolve()).encode())
        with contextlib.suppress(OSError):
            content = config_file.read_bytes()
            digest.update(content)
            names.update(name.decode() for name in _VAR.findall(content))
    digest.update(json.dumps(sorted((k, environ.get(k)) for k in names)).encode())
    return digest.hexdigest()


class AnswerCache:
    """The answers kept between runs, and the recording of new ones while the hub serves."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.answers: dict[str, Any] = {}
        self._pending: dict[Any, str] = {}  # request id -> key, for answers on their way back
        self._dirty = False
        try:
            data = json.loads(path.read_text())
            if data.get("fingerprint") == fingerprint:
                self.answers = dict(data.get("answers") or {})
        except (OSError, ValueError, AttributeError):
            pass

    # -- recording (called for every line in and out while serving; cheap for other lines) -----

    def saw_request(self, line: str) -> None:
        if "list" not in line and "discover" not in line:
            return
        try:
            message = json.loads(line)
        except ValueError:
            return
        request_id = message.get("id") if isinstance(message, dict) else None
        if isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool)):
            key = request_key(message) or listen_key(message)
            if key is not None:
                self._pending[request_id] = key

    def saw_answer(self, line: str) -> tuple[Any, str, bool | None] | None:
        """For an answer to a tracked request: (request id, key, whether it differs from what was
        kept), after keeping it; whether it differs is None for an error, or a result that is not
        the answer its key asks for (an id used twice), neither of which is kept. None for every
        other line."""
        if not self._pending or (
            '"result"' not in line and '"error"' not in line and ACKNOWLEDGED not in line
        ):
            return None
        try:
            message = json.loads(line)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        if message.get("method") == ACKNOWLEDGED:  # a listen request's acknowledgement
            params = message.get("params") or {}
            request_id = (params.get("_meta") or {}).get(SUBSCRIPTION_KEY)
            value, acknowledged = params.get("notifications"), True
        elif "method" not in message and ("result" in message or "error" in message):
            request_id, value, acknowledged = message.get("id"), message.get("result"), False
        else:
            return None
        if not isinstance(request_id, str | int):
            return None
        key = self._pending.pop(request_id, None)
        if key is None:
            return None
        if acknowledged != key.startswith(f"{LISTEN}|") or not (acknowledged or _answers(key, value)):
            return request_id, key, None  # an error, or not what was asked: nothing kept
        changed = self.answers.get(key) != value
        if changed:
            self.answers[key] = value
            self._dirty = True
        return request_id, key, changed

    def save(self) -> None:
        """Write the answers; several hubs may save at once, so each writes its own temporary file
        and renames it over the old one. A cache that cannot be written never stops a hub."""
        if not self._dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            private_dir(self.path.parent)  # the state directory: 0700 (`hub.config.paths`)
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "answers": self.answers}))
            tmp.replace(self.path)
        except OSError as exc:
            print(f"hub: could not keep the start-up answers in {self.path}: {exc}", file=sys.stderr)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._dirty = False


class EarlyAnswers:
    """What happened before the hub was up: input held back, requests already answered, and
    whether the client closed its end."""

    def __init__(self) -> None:
        self.held = b""
        self.answered: dict[str, Any] = {}  # key -> request params, to ask the hub again
        self.acknowledged: set[Any] = set()  # listen requests acknowledged early (held for the hub)
        self.ended = False
        self.era: str | None = None  # fixed by the first request: only "modern" is answered early

    def to_json(self) -> dict[str, Any]:
        """For the handoff to the shared process (`hub.launch.handoff`); `from_json` reads it back."""
        return {
            "held": self.held.decode("latin-1"),
            "answered": self.answered,
            "acknowledged": sorted(self.acknowledged, key=str),
            "ended": self.ended,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EarlyAnswers:
        early = cls()
        early.held = data["held"].encode("latin-1")
        early.answered = data["answered"]
        early.acknowledged = set(data["acknowledged"])
        early.ended = data["ended"]
        return early


def answer_until(
    ready: threading.Event, cache: AnswerCache, *, read_fd: int = 0, write_fd: int = 1
) -> EarlyAnswers:
    """Answer tracked requests from `cache` until `ready` is set (or input ends); hold the rest,
    in order, for the hub. In this protocol era each request stands alone, so answering some
    before others that are held changes nothing for the client."""
    early = EarlyAnswers()
    lines = LineBuffer()
    begun = 0  # bytes of a line begun and not complete
    while not ready.is_set():
        readable, _, _ = select.select([read_fd], [], [], 0.02)
        if not readable:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            early.ended = True  # the client went away before the hub was up
            break
        newline = chunk.rfind(b"\n")
        begun = begun + len(chunk) if newline < 0 else len(chunk) - newline - 1
        for line in lines.feed(chunk):
            if not _answer(line, cache, early, write_fd):
                early.held += line + b"\n"
        if begun > HOLD_LINE_MAX:  # a long line: the hub reads the rest (and applies its limit)
            ready.wait()
            break
    early.held += lines.rest()
    return early


def _answer(line: bytes, cache: AnswerCache, early: EarlyAnswers, write_fd: int) -> bool:
    """Answer `line` from the cache if it can be; False means hold it for the hub."""
    try:
        message = json.loads(line)
    except ValueError:
        return False
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if early.era is None:  # the first request fixes the connection's era, as the SDK fixes it
        early.era = "modern" if isinstance(meta, dict) and VERSION_KEY in meta else "handshake"
    if early.era != "modern" or not _well_formed(message, meta):
        return False  # the hub answers it (or refuses it) once up
    listen = listen_key(message)
    if listen is not None and listen in cache.answers and message["id"] not in early.acknowledged:
        # Acknowledge the subscription now (the client waits for it); the hub takes it over later.
        ack = {
            "jsonrpc": "2.0",
            "method": ACKNOWLEDGED,
            "params": {"_meta": {SUBSCRIPTION_KEY: message["id"]}, "notifications": cache.answers[listen]},
        }
        write_all(write_fd, json.dumps(ack).encode() + b"\n")
        early.acknowledged.add(message["id"])
        return False  # still held: the hub serves the subscription
    key = request_key(message)
    if key is None or key not in cache.answers:
        return False
    reply = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": cache.answers[key]})
    write_all(write_fd, reply.encode() + b"\n")
    early.answered[key] = message.get("params") or {}
    return True


def _well_formed(message: Mapping[str, Any], meta: Any) -> bool:
    """A 2026-era request the hub would answer, not refuse: JSON-RPC 2.0, a string or integer id,
    and the whole envelope in its `_meta` (version, client info, client capabilities)."""
    request_id = message.get("id")
    return (
        message.get("jsonrpc") == "2.0"
        and (type(request_id) is str or type(request_id) is int)
        and isinstance(meta, dict)
        and isinstance(meta.get(CLIENT_INFO_KEY), dict)
        and CAPABILITIES_KEY in meta
    )


def check_requests(early: EarlyAnswers) -> list[tuple[str, str]]:
    """Lines asking the hub, once up, what it would have answered: (request id, line)."""
    lines = []
    for n, (key, params) in enumerate(sorted(early.answered.items())):
        method = key.split("|", 1)[0]
        request_id = f"{CHECK_PREFIX}{n}"
        lines.append(
            (request_id, json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
        )
    return lines


def answer_while_loading(
    state_dir: Path,
    config_files: Sequence[Path],
    argv: Sequence[str],
    environ: Mapping[str, str],
    load: Callable[[], object],
) -> tuple[AnswerCache, EarlyAnswers | None] | None:
    """For `hub serve --no-share` over stdio: while `load()` imports the hub's modules in a
    thread, answer list requests from the last run. Returns (answer cache, early answers or None:
    nothing to answer with yet), or None when stdin is not a pipe or socket or
    `HUB_FAST_START=0`."""
    import stat

    from hub import __version__

    if environ.get("HUB_FAST_START", "1") == "0":
        return None
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return None
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return None
    cache = AnswerCache(state_dir / FILE_NAME, fingerprint(__version__, argv, environ, config_files))
    if not cache.answers:
        return cache, None  # record this run's answers for the next
    ready = threading.Event()

    def loading() -> None:
        try:
            load()
        finally:
            ready.set()

    threading.Thread(target=loading, name="hub-import", daemon=True).start()
    early = answer_until(ready, cache)
    if early.ended and early.held.strip():
        ready.wait()  # input ended early, but requests wait for answers: let the imports finish first
    return cache, early
