"""The stdio bridge: `hub serve` as a thin pipe to one shared hub process per launch.

Every Claude Code session, sub-agent and resumed session starts its own copy of each stdio MCP
server. So by default `hub serve` (stdio) does not host the plugins itself: it connects to the
shared hub process for this launch over a Unix socket and copies messages both ways, and the
shared process serves each connection as its own MCP session with one set of downstream servers,
one pool, one batch poller. This module imports nothing heavy (no MCP SDK, no pydantic, no anyio):
a bridge starts in tens of milliseconds.

Which launches share: the same hub version, resolved configuration (the user's and the
project's hub.toml, path and bytes; the command line; every `HUB_*` variable), working directory, state directory, and the same
values of the environment variables the hub reads (`SHARED_ENV`, plus every `${VAR}` hub.toml
names). Anything else gets its own process. The shared process inherits the environment of the
bridge that started it.

The socket and its lock live in a directory only this user can read (0700): `$XDG_RUNTIME_DIR/hub`,
else `<state_dir>/run`, else (a path too long for a socket) `/tmp/hub-<uid>`. The first bridge
takes the lock, starts the process (detached, its log in `<state_dir>/logs/shared-<key>.log`) and
waits for the socket; others wait on the lock, then connect: one start however many race. A
socket left by a dead process is replaced.

Faults: if the shared process dies, the bridge starts a new one and replays the session's
handshake (`initialize`, `notifications/initialized`, open `subscriptions/listen`), so the
client's session goes on; requests in flight get a JSON-RPC error saying the hub restarted. At end
of input the bridge waits for the answers to requests already sent, then exits; on SIGTERM,
SIGINT or SIGHUP it cancels them (`notifications/cancelled`) and exits at once. Background work
(`pool_submit`, batch jobs) goes on in the shared process, which exits after `[daemon]
idle_exit_s` with no session and no work.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hub import __version__

__all__ = ["SHARED_ENV", "Launch", "run_bridge", "sharing_enabled"]

# Environment variables the hub and its built-in plugins read: launches that differ in any of
# them do not share a process.
SHARED_ENV = (
    "PATH",
    "HOME",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "VERTEX_PROJECT",
    "VERTEX_LOCATION",
    "VERTEX_GCS_BUCKET",
    "VERTEX_GCS_PREFIX",
    "STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
START_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 30.0
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
RESTARTED = -32603
HANDSHAKE = ("initialize", "notifications/initialized")
LISTEN = "subscriptions/listen"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def sharing_enabled(no_share: bool, environ: Mapping[str, str]) -> bool:
    return not no_share and environ.get("HUB_SHARE", "1") not in ("0", "false", "no", "off")


class Launch:
    """What identifies a launch, and where its shared process listens."""

    def __init__(
        self,
        argv: Sequence[str],
        environ: Mapping[str, str],
        state_dir: Path,
        config_files: Sequence[Path],
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.environ = dict(environ)
        self.state_dir = state_dir
        self.config_files = list(config_files)  # the user's and the project's hub.toml
        self.cwd = cwd or Path.cwd()
        self.key = self._key()
        self.directory = runtime_dir(environ, state_dir, self.key)
        self.socket_path = self.directory / f"{self.key}.sock"
        self.lock_path = self.directory / f"{self.key}.lock"
        self.log_path = state_dir / "logs" / f"shared-{self.key}.log"

    def _key(self) -> str:
        files = []
        names = {k for k in self.environ if k.startswith("HUB_") and k != "HUB_SHARE"}
        names.update(SHARED_ENV)
        for path in self.config_files:
            content = b""
            with contextlib.suppress(OSError):
                content = path.read_bytes()
            names.update(_VAR.findall(content.decode("utf-8", errors="replace")))
            files.append((str(path.resolve()), hashlib.sha256(content).hexdigest()))
        identity = {
            "version": __version__,
            "argv": self.argv,
            "cwd": str(self.cwd.resolve()),
            "state_dir": str(self.state_dir.expanduser().resolve()),
            "config_files": files,
            "env": sorted((name, self.environ.get(name)) for name in names),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def runtime_dir(environ: Mapping[str, str], state_dir: Path, key: str) -> Path:
    """A 0700 directory of this user's for the socket (see the module docstring)."""
    candidates = []
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(environ["XDG_RUNTIME_DIR"]) / "hub")
    candidates.append(state_dir.expanduser() / "run")
    candidates.append(Path("/tmp") / f"hub-{os.getuid()}")
    for directory in candidates:
        if len(str(directory / f"{key}.sock")) > SOCKET_PATH_MAX:
            continue
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = directory.stat()
        except OSError:
            continue
        if info.st_uid != os.getuid():
            continue  # someone else's: never put our socket there
        if info.st_mode & 0o077:
            os.chmod(directory, 0o700)
        return directory
    raise OSError("no private directory for the hub's socket (set XDG_RUNTIME_DIR)")


def _connect(path: Path) -> socket.socket | None:
    """A connection to a shared process that answers: a `ping` round trip first, so a process
    that is dying (its socket still takes connections while its files close) is not used."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        sock.settimeout(PING_TIMEOUT_S)
        sock.sendall(b'{"jsonrpc":"2.0","id":"hub-bridge-ping","method":"ping"}\n')
        reply = b""
        while b"\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionResetError("closed before answering")
            reply += chunk
        if b"hub-bridge-ping" not in reply:
            raise ConnectionResetError("not the answer to the ping")
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    return sock


def connect_or_start(launch: Launch, daemon_argv: Sequence[str]) -> socket.socket:
    """A connection to the launch's shared process, starting it if none runs (once, under a lock)."""
    sock = _connect(launch.socket_path)
    if sock is not None:
        return sock
    with open(launch.lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # racing bridges wait here while the first one starts it
        sock = _connect(launch.socket_path)
        if sock is not None:
            return sock
        with contextlib.suppress(FileNotFoundError):
            launch.socket_path.unlink()  # left by a process that died
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(launch.log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "hub", *daemon_argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=launch.cwd,
                env=launch.environ,
                start_new_session=True,  # not in the client's process group: it outlives this session
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            sock = _connect(launch.socket_path)
            if sock is not None:
                return sock
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                tail = _tail(launch.log_path)
                what = (
                    f"exited with code {code}"
                    if code is not None
                    else f"did not start in {START_TIMEOUT_S:g} s"
                )
                raise RuntimeError(
                    f"the shared hub process {what}; its log ({launch.log_path}) ends:\n{tail}"
                )
            time.sleep(0.01)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Bridge:
    """Copies one client's messages to the shared process and back, and survives its restart."""

    def __init__(self, launch: Launch, daemon_argv: Sequence[str], stdin: int = 0, stdout: int = 1) -> None:
        self.launch = launch
        self.daemon_argv = list(daemon_argv)
        self.stdin = stdin
        self.stdout = stdout
        self.lock = threading.Lock()  # guards the socket and the session's state
        self.out_lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.generation = 0
        self.pending: dict[Any, str] = {}  # request id -> method, for requests not answered yet
        self.handshake: list[bytes] = []  # initialize + initialized, replayed after a restart
        self.listens: dict[Any, bytes] = {}  # open subscriptions/listen requests, replayed too
        self.swallow: set[Any] = set()  # ids whose answers the client already had
        self.stdin_done = False
        self.all_answered = threading.Condition(self.lock)
        self.stopping = False

    # -- the two directions ------------------------------------------------------------------

    def run(self) -> int:
        self.sock = connect_or_start(self.launch, self.daemon_argv)
        reader = threading.Thread(target=self._client_to_hub, name="hub-bridge-in", daemon=True)
        reader.start()
        self._hub_to_client()
        return 0

    def _client_to_hub(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self.stdin, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self._forward(line + b"\n")
        if buffer.strip():
            self._forward(buffer + b"\n")
        with self.lock:
            self.stdin_done = True
            # End of input: the answers to requests already sent are still written (a listen
            # subscription never ends on its own, so it is not waited for).
            while any(method != LISTEN for method in self.pending.values()) and not self.stopping:
                self.all_answered.wait(0.5)
            self.stopping = True
            sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _forward(self, line: bytes) -> None:
        message = _parse(line)
        with self.lock:
            if isinstance(message, dict) and "method" in message:
                method = message["method"]
                if "id" in message:
                    self.pending[_key(message["id"])] = method
                    if method == "initialize":
                        self.handshake = [line]
                    elif method == LISTEN:
                        self.listens[_key(message["id"])] = line
                elif method == "notifications/initialized":
                    self.handshake.append(line)
                elif method == "notifications/cancelled":
                    cancelled = _key((message.get("params") or {}).get("requestId"))
                    self.listens.pop(cancelled, None)
            if self.sock is None:
                return
            # Under the lock: never to a socket being replaced. A broken one is noticed by the
            # reader side, which restarts the hub.
            with contextlib.suppress(OSError):
                self.sock.sendall(line)

    def _hub_to_client(self) -> None:
        while True:
            sock = self.sock
            assert sock is not None
            buffer = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._deliver(line + b"\n")
            with self.lock:
                if self.stopping or (self.stdin_done and not self.pending):
                    return
            self._restart()

    def _deliver(self, line: bytes) -> None:
        message = _parse(line)
        if isinstance(message, dict) and "method" not in message and "id" in message:
            request_id = _key(message["id"])
            with self.lock:
                self.pending.pop(request_id, None)
                if request_id in self.listens and "error" in message:
                    self.listens.pop(request_id, None)
                if request_id in self.swallow:
                    self.swallow.discard(request_id)
                    self.all_answered.notify_all()
                    return
                self.all_answered.notify_all()
        elif (
            isinstance(message, dict) and message.get("method") == "notifications/subscriptions/acknowledged"
        ):
            subscription = _key(((message.get("params") or {}).get("_meta") or {}).get(_SUBSCRIPTION_KEY))
            with self.lock:
                if ("ack", subscription) in self.swallow:
                    self.swallow.discard(("ack", subscription))
                    return
        self._write(line)

    def _write(self, data: bytes) -> None:
        with self.out_lock:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.stdout, view) :]
                except BlockingIOError:
                    time.sleep(0.001)
                except OSError:
                    return  # the client is gone

    # -- a shared process that died ------------------------------------------------------------

    def _restart(self) -> None:
        """Start (or find) a new shared process, tell the client its requests in flight failed,
        and replay the session's handshake so it goes on."""
        with self.lock:  # held throughout: the client's next messages go to the new process
            self._restart_locked()

    def _restart_locked(self) -> None:
        lost = [rid for rid, method in self.pending.items() if method not in ("initialize", LISTEN)]
        for rid in lost:
            self.pending.pop(rid, None)
        handshake = list(self.handshake)
        listens = dict(self.listens)
        for rid in lost:
            error = {
                "jsonrpc": "2.0",
                "id": rid,
                "error": {
                    "code": RESTARTED,
                    "message": "the hub restarted while this request was running (its process died); send it again",
                },
            }
            self._write(json.dumps(error).encode() + b"\n")
        print("hub: the shared hub process died; starting a new one", file=sys.stderr, flush=True)
        sock = connect_or_start(self.launch, self.daemon_argv)
        self.sock = sock
        self.generation += 1
        replay = []
        for line in handshake:
            message = _parse(line)
            if isinstance(message, dict) and "id" in message:
                self.swallow.add(_key(message["id"]))
                self.pending[_key(message["id"])] = message.get("method", "")
            replay.append(line)
        for rid, line in listens.items():
            self.swallow.add(("ack", rid))
            self.pending[rid] = LISTEN
            replay.append(line)
        for line in replay:
            with contextlib.suppress(OSError):
                sock.sendall(line)

    # -- going away ------------------------------------------------------------------------------

    def cancel_all(self) -> None:
        """The client is gone: cancel what it asked for and close the connection."""
        with self.lock:
            self.stopping = True
            sock, pending = self.sock, list(self.pending)
            self.all_answered.notify_all()
        if sock is None:
            return
        for rid in pending:
            note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}}
            with contextlib.suppress(OSError):
                sock.sendall(json.dumps(note).encode() + b"\n")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_SUBSCRIPTION_KEY = "io.modelcontextprotocol/subscriptionId"


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _key(value: Any) -> Any:
    """A request id usable as a dict key (ids are strings or numbers)."""
    return value if isinstance(value, str | int | float) or value is None else json.dumps(value)


def run_bridge(launch: Launch, daemon_argv: Sequence[str]) -> int:
    """Serve the client on stdin/stdout through the shared process; returns the exit code."""
    bridge = Bridge(launch, daemon_argv)

    def on_signal(signum: int, frame: Any) -> None:
        bridge.cancel_all()
        os._exit(130 if signum == signal.SIGINT else 0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return bridge.run()
    except RuntimeError as exc:
        print(f"hub: {exc}", file=sys.stderr, flush=True)
        return 1
