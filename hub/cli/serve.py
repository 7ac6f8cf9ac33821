"""`hub serve`: the MCP server, over stdio (a bridge to the shared hub process of the launch, or
in-process with `--no-share`) or streamable HTTP."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, common_argv, config_from, light_state_dir

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = ["add_parser", "run"]

HELP = "run the MCP server (the default when no command is given)"


def add_parser(commands: Any) -> None:
    serve = commands.add_parser("serve", help=HELP, description="Run the MCP server.")
    serve.add_argument("--transport", "-t", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", help="HTTP host (default from [http] host: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default from [http] port: 8765; 0 picks one)")
    serve.add_argument("--path", help="HTTP endpoint path (default /mcp)")
    serve.add_argument(
        "--no-share",
        action="store_true",
        help="stdio: host the plugins in this process instead of bridging to the shared hub process "
        "for this launch (also HUB_SHARE=0)",
    )
    add_common(serve, suppress=True)


def defaults(args: argparse.Namespace) -> None:
    """`hub` with no command serves over stdio."""
    if not hasattr(args, "transport"):
        args.transport, args.host, args.port, args.path, args.no_share = "stdio", None, None, None, False


def run(args: argparse.Namespace) -> int:
    from hub.launch.bridge import sharing_enabled

    defaults(args)
    ensure_stdin()
    if args.transport == "stdio" and sharing_enabled(args.no_share, os.environ):
        return bridge(args)
    try:
        fast = _fast_start(args) if args.transport == "stdio" else None
    except KeyboardInterrupt:  # Claude Code stops its servers with SIGINT, even one still starting
        return 130
    if fast is not None and fast[1] is not None and fast[1].ended and not fast[1].held.strip():
        return 0  # the client left before the hub was up, and nothing it sent waits for an answer
    import anyio

    from hub.log import configure_logging

    config = config_from(args)
    configure_logging(config.log_format, config.log_level)
    check_http(config, args.transport)
    anyio.run(serve, config, args.transport, fast)
    return 0


def no_input() -> bool:
    """Whether stdin can never carry a request: closed, /dev/null, or an empty regular file."""
    import stat

    try:
        info = os.fstat(0)
    except OSError:
        return True
    if stat.S_ISREG(info.st_mode):
        return info.st_size == 0
    if stat.S_ISCHR(info.st_mode):
        try:
            return info.st_rdev == os.stat(os.devnull).st_rdev
        except OSError:
            return False
    return False


def ensure_stdin() -> None:
    """A closed stdin reads as empty: /dev/null goes on fd 0, so the next file the hub opens (the
    event loop's epoll) cannot land there; the hub then sees end of input and exits quietly."""
    try:
        os.fstat(0)
    except OSError:
        fd = os.open(os.devnull, os.O_RDONLY)
        if fd != 0:
            os.dup2(fd, 0)
            os.close(fd)


def check_http(config: HubConfig, transport: str) -> None:
    """Refuse an unprotected public listener, or a port in use, before starting anything."""
    if transport == "http":
        from hub.server.http import bind_socket, check_http_exposure

        token = config.http.token.get_secret_value() if config.http.token else None
        check_http_exposure(config.http.host, token)
        if config.http.port:  # a port in use is said in one line before any plugin starts
            bind_socket(config.http.host, config.http.port).close()


def _fast_start(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """`hub.launch.fast_start.answer_while_loading` for this command line, or None when the state
    directory cannot be found without loading the configuration."""
    from hub.config.paths import config_files
    from hub.launch.fast_start import answer_while_loading

    try:
        state_dir = light_state_dir(args)
    except ValueError:
        return None
    files = config_files(args.config, os.environ).paths
    return answer_while_loading(state_dir, files, sys.argv[1:], os.environ, _load_the_hub)


def _load_the_hub() -> None:
    """What serving needs imported (the MCP SDK most of all), for the fast start's thread."""
    import hub.host
    import hub.launch.session  # noqa: F401


async def serve(config: HubConfig, transport: str, fast: tuple[Any, Any] | None = None) -> None:
    """Serve one hub in this process until input ends (stdio) or a signal."""
    import signal

    import anyio
    import structlog

    from hub.host import Hub

    async with Hub(config) as hub, anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async for signum in signals:
                    structlog.get_logger("hub").info("signal received; shutting down", signal=signum.name)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        if transport == "stdio":
            from hub.launch.session import serve_stdio

            cache, early = fast if fast is not None else (None, None)
            await serve_stdio(hub.server, cache=cache, early=early, limit=config.limits.max_line_bytes)
        else:
            from hub.server.http import serve_http

            http = config.http
            token = http.token.get_secret_value() if http.token else None
            await serve_http(
                hub.server, host=http.host, port=http.port, path=http.path, token=token, ready=_announce_port
            )
        tg.cancel_scope.cancel()


def _announce_port(port: int) -> None:
    # Machine-readable, on stderr (stdout is reserved for the protocol in stdio mode).
    print(f"hub: listening on port {port}", file=sys.stderr, flush=True)


def bridge(args: argparse.Namespace) -> int:
    """`hub serve` over stdio: bridge to the shared hub process of this launch (`hub.launch.bridge`)."""
    from hub import __version__
    from hub.config.paths import config_files
    from hub.launch import fast_start
    from hub.launch.bridge import Launch, run_bridge

    if no_input():
        return 0  # no client: nothing to serve, and no reason to start a shared process
    initial = b""
    if os.isatty(0):
        from hub.wire.fds import tty_hint

        print(tty_hint(), file=sys.stderr, flush=True)
        # A person at a terminal: start no shared process for the hint alone (it would stay up
        # for its idle time); wait for a first line, and leave at Ctrl-D.
        try:
            initial = os.read(0, 65536)
        except KeyboardInterrupt:
            return 130
        if not initial:
            return 0
    try:
        state_dir = light_state_dir(args)
        files = config_files(args.config, os.environ).paths
        launch = Launch(common_argv(args), os.environ, state_dir, files)
    except (OSError, ValueError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 2
    daemon_argv = ["shared", "--key", launch.key, "--socket", str(launch.socket_path), *launch.argv]
    cache = None
    if os.environ.get("HUB_FAST_START", "1") != "0":
        fingerprint = fast_start.fingerprint(__version__, ["bridge", *launch.argv], os.environ, files)
        cache = fast_start.AnswerCache(state_dir / fast_start.FILE_NAME, fingerprint)
    return run_bridge(launch, daemon_argv, cache, initial=initial)
