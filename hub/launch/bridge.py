"""The stdio bridge: `hub serve` as a thin pipe to one shared hub process per launch.

Every Claude Code session, sub-agent and resumed session starts its own copy of each stdio MCP
server. So by default `hub serve` (stdio) does not host the plugins itself: it connects to the
shared hub process for this launch over a Unix socket and hands it its stdin and stdout
(`hub.launch.handoff`), and the shared process serves each client as its own MCP session on those
descriptors, with one set of downstream servers, one pool, one batch poller. No message passes
through the bridge, so it costs no time per call; it stays, waiting on the socket, as the process
the client started. This module imports nothing heavy (no MCP SDK, no pydantic, no anyio): a
bridge starts in tens of milliseconds.

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

Starting cold: with no shared process running, starting one takes a second or more (the SDK
import, every plugin's start). Claude Code waits for the answers to its first list requests
before its first model request, so meanwhile the bridge answers those from the answers the last
run gave (`hub.launch.fast_start`, kept per launch in `<state_dir>/fastfront.json`) and holds everything
else; the handoff carries what it held, and the shared process serves that first, asks itself
the same questions and sends `list_changed` to the client's open subscriptions if an answer
changed. With a warm shared process this is not needed (it answers in milliseconds);
`HUB_FAST_START=0` turns it off.

Faults: the shared process reports on the socket each request before it takes its bytes from
the client's input, each answer before the newline that delivers it, and the lines a new process
would need (`hub.launch.handoff`). If it dies, even by kill -9, the bridge settles what it was
doing at that instant (the bytes of its last report still in the input or not; an answer begun,
spoiled, or reported, finished), answers the requests in flight with a JSON-RPC error saying the
hub restarted (each request is answered exactly once), starts a new process and hands the
client over again with the session's handshake (`initialize`, `notifications/initialized`, open
`subscriptions/listen`) to replay, so the client's session goes on. At end of input the shared process writes the answers
to requests already received, then ends the session, and the bridge exits; on SIGTERM, SIGINT or
SIGHUP the bridge closes the socket, which cancels the session's calls, and exits at once.
Background work (`pool_submit`, batch jobs) goes on in the shared process, which exits after
`[daemon] idle_exit_s` with no session and no work.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hub import __version__
from hub.config.paths import open_private, private_dir
from hub.launch.fast_start import AnswerCache, EarlyAnswers, answer_until, digest
from hub.launch.handoff import classify, decode_event, send_handoff
from hub.wire.envelope import LISTEN
from hub.wire.jsonrpc import NO_ID, recover_id
from hub.wire.lines import LineBuffer
from hub.wire.peek import Peeker

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
    "TMPDIR",  # where the socket goes when no other place will do (`runtime_dir`)
)
START_TIMEOUT_S = 60.0
# A ping answers in milliseconds; one that has not in this long (connect included) comes from a
# process that is stopped or wedged: it is replaced, so a new session is served within the few
# seconds MCP clients wait for a server to start.
PING_TIMEOUT_S = 2.5
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS
RESTARTED = -32603
# The events stay in the socket until read, a dead process's included: the bridge reads them in
# batches, which costs it a wake-up per batch instead of two per call, and notices the end of a
# session or of the process within this delay.
EVENT_BATCH_S = 0.05
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
        self.socket_path = socket_path_in(self.directory, self.key)
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
            files.append((str(path.resolve()), digest(content)))
        identity = {
            "version": __version__,
            "argv": self.argv,
            "cwd": str(self.cwd.resolve()),
            "state_dir": str(self.state_dir.expanduser().resolve()),
            "config_files": files,
            "env": sorted((name, self.environ.get(name)) for name in names),
        }
        return digest(json.dumps(identity, sort_keys=True).encode())[:16]


def runtime_dir(environ: Mapping[str, str], state_dir: Path, key: str) -> Path:
    """A 0700 directory of this user's for the socket (see the module docstring). In the
    system's temporary directory, shared with every user, only a real directory this user owns
    and nobody else can enter is used (never a symlink, never one made private by chmod): a
    name squatted by someone else is passed over for the next (`hub-<uid>-1`, ...)."""
    uid = os.getuid()
    candidates: list[tuple[Path, bool]] = []  # (directory, in a directory every user can write)
    if environ.get("XDG_RUNTIME_DIR"):
        candidates.append((Path(environ["XDG_RUNTIME_DIR"]) / "hub", False))
    candidates.append((state_dir.expanduser() / "run", False))
    shared = Path(tempfile.gettempdir())
    candidates += [(shared / (f"hub-{uid}-{n}" if n else f"hub-{uid}"), True) for n in range(4)]
    problems = []
    for directory, public in candidates:
        if len(str(directory / f"{key}.sock")) > SOCKET_PATH_MAX:
            continue
        problem = _private_dir(directory, public)
        if problem is None:
            return directory
        problems.append(problem)
    raise OSError(
        "no private directory for the hub's socket: "
        + "; ".join(problems)
        + ". Set XDG_RUNTIME_DIR to a directory only you can enter (mode 0700)"
    )


def _private_dir(directory: Path, public: bool) -> str | None:
    """None if `directory` is (or was just made) this user's alone; else what is wrong with it."""
    uid = os.getuid()
    try:
        directory.mkdir(mode=0o700, parents=not public)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"{directory} cannot be created ({exc.strerror})"
    try:
        info = os.lstat(directory)
        if stat.S_ISLNK(info.st_mode):
            if public or info.st_uid != uid:
                return f"{directory} is a symbolic link (owned by uid {info.st_uid}); it is not used"
            info = os.stat(directory)  # the user's own link in the user's own tree
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if info.st_uid != uid:
        return f"{directory} belongs to uid {info.st_uid}, not to you"
    if info.st_mode & 0o077:
        if public:
            return f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):o}); remove it"
        os.chmod(directory, 0o700)  # the user's own directory, in the user's own tree
    return None


def socket_path_in(directory: Path, key: str) -> Path:
    """Where the socket of launch `key` goes: `<key>.sock`, or if something that is not a
    socket sits there (a directory, a file), the first free or socket of `<key>-1.sock` ...;
    every bridge of the launch picks the same one."""
    names = [f"{key}.sock", *(f"{key}-{n}.sock" for n in range(1, 4))]
    for name in names:
        path = directory / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return path
        except OSError:
            continue
        if stat.S_ISSOCK(mode):
            return path
    raise OSError(
        f"{directory / names[0]} and the other names the hub tries for its socket are taken by "
        f"files that are not sockets; remove them"
    )


class _Probe:
    """What a liveness probe found on the socket path."""

    ANSWERED, GONE, HUNG = "answered", "gone", "hung"


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


# Sockets that took a connection and did not answer a ping in time (a stopped or wedged
# process): this bridge does not wait on them again, and replaces them under the lock.
_HUNG: set[tuple[int, int]] = set()


def _probe(path: Path) -> str:
    """Whether a shared process answers on `path`: a `ping` round trip on a connection of its own
    (the first message on a session fixes its protocol era, so the session itself is not used),
    within `PING_TIMEOUT_S` in all. A process that is dying still takes connections while its
    files close: it fails this."""
    identity = _identity(path)
    if identity is None:
        return _Probe.GONE
    if identity in _HUNG:
        return _Probe.HUNG
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + PING_TIMEOUT_S
    try:
        probe.settimeout(PING_TIMEOUT_S)
        probe.connect(str(path))
        probe.sendall(b'{"jsonrpc":"2.0","id":"hub-bridge-ping","method":"ping"}\n')
        reply = b""
        while b"\n" not in reply:
            probe.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = probe.recv(4096)
            if not chunk:
                return _Probe.GONE
            reply += chunk
        return _Probe.ANSWERED if b"hub-bridge-ping" in reply else _Probe.GONE
    except TimeoutError:
        _HUNG.add(identity)
        return _Probe.HUNG
    except OSError:
        return _Probe.GONE
    finally:
        probe.close()


def _connect(path: Path) -> socket.socket | None:
    """A connection to a shared process that answers (see `_probe`), else None."""
    if _probe(path) != _Probe.ANSWERED:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


def connect_or_start(launch: Launch, daemon_argv: Sequence[str]) -> socket.socket:
    """A connection to the launch's shared process, starting it if none runs (once, under a lock)."""
    sock = _connect(launch.socket_path)
    if sock is not None:
        return sock
    try:
        lock = open(launch.lock_path, "a+")
    except OSError as exc:
        raise StartError(f"hub: cannot open the start lock {launch.lock_path}: {exc.strerror}", 2) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # racing bridges wait here while the first one starts it
        sock = _connect(launch.socket_path)
        if sock is not None:
            return sock
        # Left by a process that died, or one that took the connection and never answered: the
        # new process binds the path afresh (the old one, if it ever wakes, leaves it alone:
        # it removes the path only while it is still its own).
        with contextlib.suppress(FileNotFoundError):
            launch.socket_path.unlink()
        return _start(launch, daemon_argv, lock.fileno())


def _start(launch: Launch, daemon_argv: Sequence[str], lock_fd: int) -> socket.socket:
    """Start the shared process (the caller holds the lock) and wait until it answers.

    The process inherits the locked start lock (`--start-lock-fd`) and lets go of it only once it
    listens: a bridge that dies while the process starts (its client gave up) cannot let the next
    bridge find no socket, take the lock and start a second process for the launch."""
    with _open_log(launch) as log:
        logged_before = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "hub", *daemon_argv, "--start-lock-fd", str(lock_fd)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=launch.cwd,
            env=launch.environ,
            pass_fds=(lock_fd,),
            start_new_session=True,  # not in the client's process group: it outlives this session
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        sock = _connect(launch.socket_path)
        if sock is not None:
            return sock
        code = process.poll()
        if code is not None or time.monotonic() > deadline:
            said = _tail(launch.log_path, logged_before)
            if code is not None and said == "(nothing)" and _unwritable(launch.state_dir):
                said = f"hub: {_unwritable(launch.state_dir)}"  # it could not even write its log
                code = 2
            if code == 2:  # a configuration error: say it as `hub serve --no-share` would
                raise StartError(said, 2)
            if code is None:  # it holds the start lock: a process that never listens would keep it
                process.kill()
            what = (
                f"exited with code {code}" if code is not None else f"did not start in {START_TIMEOUT_S:g} s"
            )
            raise StartError(f"hub: the shared hub process {what}; it said ({launch.log_path}):\n{said}", 1)
        time.sleep(0.01)


ELSEWHERE = "or set another state directory (--state-dir or HUB_STATE_DIR)"


def _open_log(launch: Launch) -> Any:
    """The shared process's log, private (0600 in a 0700 directory), for appending; a state
    directory where it cannot be made is a `StartError` in one line."""
    try:
        private_dir(launch.log_path.parent)
        return os.fdopen(open_private(launch.log_path), "ab")
    except OSError as exc:
        raise StartError(
            f"hub: cannot write the shared hub process's log {launch.log_path} "
            f"({exc.strerror or exc}): make {launch.state_dir} writable, {ELSEWHERE}.",
            2,
        ) from None


def _unwritable(state_dir: Path) -> str:
    """Why nothing can be written in `state_dir` (a full or read-only filesystem), else ""."""
    try:
        fs = os.statvfs(state_dir)
    except OSError:
        return ""
    if fs.f_flag & os.ST_RDONLY:
        return f"the hub's state directory {state_dir} is on a read-only filesystem: make it writable, {ELSEWHERE}."
    if fs.f_bavail == 0:
        return f"the filesystem holding the hub's state directory {state_dir} is full: free space on it, {ELSEWHERE}."
    return ""


class StartError(RuntimeError):
    """The shared process could not be started: what it said, and the exit code for the bridge."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _tail(path: Path, start: int, lines: int = 15) -> str:
    """The last `lines` lines written to `path` from byte `start` on (this start's own output)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


class Bridge:
    """Hands one client's stdin and stdout to the shared process, follows its session on the
    control channel (`hub.launch.handoff`), and survives the process's death."""

    def __init__(
        self,
        launch: Launch,
        daemon_argv: Sequence[str],
        stdin: int = 0,
        stdout: int = 1,
        cache: AnswerCache | None = None,
        initial: bytes = b"",
    ) -> None:
        self.launch = launch
        self.initial = initial  # input read before the handoff (a terminal's first line)
        self.cache = cache  # the last run's answers (cold start); the shared process keeps them up
        self.daemon_argv = list(daemon_argv)
        self.stdin = stdin
        self.stdout = stdout
        self.sock: socket.socket | None = None
        self.pending: dict[Any, str] = {}  # request id -> method, for requests not answered yet
        self.handshake: list[bytes] = []  # initialize + initialized, replayed after a restart
        self.listens: dict[Any, bytes] = {}  # open subscriptions/listen requests, replayed too
        # The last `T` event, while the process may not have taken its bytes yet (handoff.py).
        self.unsettled: dict[str, Any] | None = None
        self.unsettled_ids: set[Any] = set()
        self.inside: tuple[bool, Any] = (False, None)  # the process took part of a line (its id)
        # What the process left on the client's output: "clean"; "open": a line begun, not to
        # be taken (an answer not committed, or a line half written); "committed": an answer
        # whose newline may not be out yet (hub.launch.handoff).
        self.output = "clean"
        self.stopping = False

    def run(self) -> int:
        sock = _connect(self.launch.socket_path)  # warm: the shared process answers at once
        early: EarlyAnswers | None = None
        if sock is None and self.cache is not None and self.cache.answers and _pollable(self.stdin):
            sock, early = self._start_answering_early()
        self.sock = sock or connect_or_start(self.launch, self.daemon_argv)
        if self.initial:
            early = early or EarlyAnswers()
            early.held = self.initial + early.held
        self._hand_over(early=early)
        return self._follow()

    def _start_answering_early(self) -> tuple[socket.socket, EarlyAnswers]:
        """Start the shared process in a thread; meanwhile answer list requests from the cache."""
        assert self.cache is not None
        ready = threading.Event()
        started: dict[str, Any] = {}

        def start() -> None:
            try:
                started["sock"] = connect_or_start(self.launch, self.daemon_argv)
            except BaseException as exc:
                started["error"] = exc
            finally:
                ready.set()

        threading.Thread(target=start, name="hub-bridge-start", daemon=True).start()
        early = answer_until(ready, self.cache, read_fd=self.stdin, write_fd=self.stdout)
        ready.wait()
        if "error" in started:
            raise started["error"]
        return started["sock"], early

    def _hand_over(
        self,
        *,
        early: EarlyAnswers | None = None,
        replay: bytes = b"",
        swallow: Sequence[Any] = (),
        swallow_acks: Sequence[Any] = (),
    ) -> None:
        """Give the client's stdin and stdout to the shared process, with what it must do first:
        serve what the cold start held back and ask its questions again (`early`), or replay a
        dead process's handshake (`replay`) without answering it twice (`swallow`: the ids
        whose answers the client had; `swallow_acks`: the listens it had acknowledged)."""
        assert self.sock is not None
        message: dict[str, Any] = {
            "replay": replay.decode("latin-1"),
            "swallow": list(swallow),
            "swallow_acks": list(swallow_acks),
            "skip_first": self.inside[0],  # the dead process took part of a line: drop its rest
            # Who the client is, for the dashboard and the spend by session.
            "client": {"claude_session": os.environ.get("CLAUDE_CODE_SESSION_ID"), "cwd": os.getcwd()},
        }
        if self.cache is not None:
            message["cache"] = {"path": str(self.cache.path), "fingerprint": self.cache.fingerprint}
        if early is not None:
            message["early"] = early.to_json()
            self._account(early.held)  # read by this bridge, not from the pipe: no `T` for them
        send_handoff(
            self.sock, message, [_usable(self.stdin, os.O_RDONLY), _usable(self.stdout, os.O_WRONLY)]
        )

    def _follow(self) -> int:
        """Track the session from its events until it is over; restart a process that died."""
        while True:
            sock = self.sock
            assert sock is not None

            def read(sock: socket.socket = sock) -> bytes:
                chunk = sock.recv(65536)
                if chunk:  # let events gather: a wake-up per batch, not two per call
                    time.sleep(EVENT_BATCH_S)
                return chunk

            for line in _lines(read, partial_last=False):
                kind, value = decode_event(line)
                if kind == "B":
                    return 0
                if kind == "S":  # `hub stop`: end this session rather than start another process
                    print(
                        "hub: the shared hub process was stopped (hub stop); this session ends",
                        file=sys.stderr,
                    )
                    return 0
                self._event(kind, value)
            if self.stopping:
                return 0
            self._restart()

    def _event(self, kind: str, value: Any) -> None:
        """One event of the session (`hub.launch.handoff`)."""
        if kind == "T":
            if self.unsettled is not None:  # the process took those bytes: it looks at more now
                self._take(self.unsettled)
            self.unsettled, self.unsettled_ids = None, set()
            if value.get("crc") is None:  # told after the bytes were taken
                self._take(value)
            else:
                self.unsettled, self.unsettled_ids = value, {_key(r) for r in value["r"]}
        elif kind == "A":
            key = _key(value)
            if key in self.unsettled_ids:  # it answers only what it took
                self._take(self.unsettled)  # type: ignore[arg-type]
                self.unsettled, self.unsettled_ids = None, set()
            self.pending.pop(key, None)
            self.listens.pop(key, None)  # a subscription's answer is its end
            self.output = "committed"
        elif kind in ("W", "O"):
            self.output = "open"
        elif kind in ("N", "C"):
            self.output = "clean"

    def _take(self, event: dict[str, Any]) -> None:
        """The process took the bytes of a `T` event: its requests are in flight."""
        for request_id in event["r"]:
            self.pending.setdefault(_key(request_id), "request")
        for line in event["k"]:
            self._keep(line.encode() + b"\n")
        self.inside = (bool(event["in"]), event["id"])

    def _account(self, held: bytes) -> None:
        """Requests this bridge read itself (a cold start's held input) are in flight once handed over."""
        lines = held.split(b"\n")
        for line in lines[:-1]:
            kind, value = classify(line)
            if kind == "request":
                self.pending.setdefault(_key(value), "request")
            elif kind == "keep":
                self._keep(value.encode() + b"\n")
        if lines[-1].strip():  # a line begun: the process reads its end from the pipe
            found = recover_id(lines[-1][:4096])
            self.inside = (True, None if found is NO_ID else found)

    def _settle(self) -> None:
        """The process died: did it take the bytes of the last `T`? If they are still at the
        front of the input, no (the next process reads them); else yes."""
        event, self.unsettled, self.unsettled_ids = self.unsettled, None, set()
        if event is None:
            return
        peeker = Peeker.for_fd(self.stdin)
        try:
            still_there = peeker is not None and peeker.starts_with(event["n"], event["crc"])
        finally:
            if peeker is not None:
                peeker.close()
        if not still_there:
            self._take(event)

    def _keep(self, line: bytes) -> None:
        message = _parse(line)
        if not (isinstance(message, dict) and "method" in message):
            return
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
            self.pending.pop(cancelled, None)

    def _write(self, data: bytes) -> None:
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
        """Tell the client its requests in flight failed, start (or find) a new shared process,
        and hand the client over again with the session's handshake to replay."""
        self._settle()
        if self.output == "open":  # spoil the line it began: a client must not take it
            self._write(b"#\n")
        elif self.output == "committed":  # deliver the answer it reported (an empty line if out)
            self._write(b"\n")
        self.output = "clean"
        lost = [rid for rid, method in self.pending.items() if method not in ("initialize", LISTEN)]
        inside, inside_id = self.inside
        if inside and inside_id is not None and inside_id not in self.pending:
            lost.append(inside_id)  # a request the dead process had begun to read: it is dropped
        self.inside = (inside, None)
        for rid in lost:
            self.pending.pop(rid, None)
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
        if self.sock is not None:
            self.sock.close()
        self.sock = connect_or_start(self.launch, self.daemon_argv)
        swallow: list[Any] = []  # answers the client already had; one it still waits for goes through
        for line in self.handshake:
            message = _parse(line)
            if isinstance(message, dict) and "id" in message and _key(message["id"]) not in self.pending:
                swallow.append(_key(message["id"]))
        replay = b"".join(self.handshake) + b"".join(self.listens.values())
        self._hand_over(replay=replay, swallow=swallow, swallow_acks=list(self.listens))

    # -- going away ------------------------------------------------------------------------------

    def cancel_all(self) -> None:
        """The client is gone: closing the connection cancels its session's calls."""
        self.stopping = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _usable(fd: int, flags: int) -> int:
    """`fd` if open, else /dev/null (a client that started us without stdin or stdout)."""
    try:
        os.fstat(fd)
    except OSError:
        return os.open(os.devnull, flags)
    return fd


def _lines(read: Callable[[], bytes], *, partial_last: bool = True) -> Iterator[bytes]:
    """Non-empty lines (with their newline) from `read()` until it returns nothing or fails; a last
    line without a newline is given too when `partial_last` (a client's last request)."""
    buffer = LineBuffer()
    while True:
        try:
            chunk = read()
        except OSError:
            chunk = b""
        if not chunk:
            break
        for line in buffer.feed(chunk):
            if line.strip():
                yield line + b"\n"
    rest = buffer.rest()
    if partial_last and rest.strip():
        yield rest + b"\n"


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _key(value: Any) -> Any:
    """A request id usable as a dict key (ids are strings or numbers)."""
    return value if isinstance(value, str | int | float) or value is None else json.dumps(value)


def _pollable(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def run_bridge(
    launch: Launch, daemon_argv: Sequence[str], cache: AnswerCache | None = None, *, initial: bytes = b""
) -> int:
    """Serve the client on stdin/stdout through the shared process; returns the exit code.
    `cache`: the start-up answers (`hub.launch.fast_start`), for a cold start and for the next one."""
    bridge = Bridge(launch, daemon_argv, cache=cache, initial=initial)

    def on_signal(signum: int, frame: Any) -> None:
        bridge.cancel_all()
        os._exit(130 if signum == signal.SIGINT else 0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        return bridge.run()
    except StartError as exc:
        print(str(exc).rstrip(), file=sys.stderr, flush=True)
        return exc.code
