"""`hub servers import | list | check | refresh | login | logout`: bring existing MCP servers under
the hub, see them, and sign in to the remote ones.

- `import [PATH]` reads the `mcpServers` of an `.mcp.json` (default `./.mcp.json`), Claude
  Desktop's `claude_desktop_config.json` or `~/.claude.json` (its top level and this project's
  entry), and writes one `[servers.NAME]` table per server into the project's hub.toml with
  tomlkit, so the file's comments and layout stay as they were. The hub's own entry is left out;
  a server already in hub.toml is kept as it is unless `--replace`. Then it starts the servers
  now in hub.toml (at most 4 at once) to learn what they list, for the hub's first session
  (`--no-start`: not now; the hub starts a server it has never listed when it starts).
- `list` shows the configured servers: where each comes from, whether a hub on this state
  directory runs it now, and how many tools it listed when last asked, for its configuration as
  it is now (from the store, no server started).
- `check [NAME]` starts each server through the hub's connection cache, lists everything it
  offers and keeps it for the hub (`hub.client.listing`), says what it offers that the hub does
  not pass on, and reports a failure with the tail of the server's stderr.
- `refresh [NAME]` asks each server again and keeps its lists (after a server was upgraded, say).
- `login NAME` signs the hub in to a remote server with OAuth (`hub.client.auth.sign_in`): it
  prints the authorization URL, opens a browser when there is one (not with `--no-browser`) and
  waits for the redirect on a loopback listener; the tokens go to the store, where every hub on
  the state directory uses them. `logout NAME` revokes and forgets them.
`list` and `check` say where a remote server's sign-in stands: `signed in (expires in ...)`,
`needs login`, `token refresh failed: ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.cli.options import add_common, config_from
from hub.services.instances import process_alive

if TYPE_CHECKING:
    from hub.config.settings import HubConfig

__all__ = [
    "add_parser",
    "check_servers",
    "import_servers",
    "list_servers",
    "login",
    "logout",
    "read_mcp_servers",
    "run",
]

CHECK_CONCURRENCY = 4

# The keys of an .mcp.json entry the hub takes as they are.
ENTRY_KEYS = ("type", "command", "args", "env", "cwd", "url", "headers", "headersHelper", "oauth", "timeout")


class ImportError_(Exception):
    """A file that cannot be imported; the message names it and what is wrong."""


def read_mcp_servers(path: Path, cwd: Path | None = None) -> dict[str, dict[str, Any]]:
    """The `mcpServers` of a Claude Code / Claude Desktop JSON file; for `~/.claude.json`, the top
    level's and the project's (`projects[cwd].mcpServers`, which win)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ImportError_(f"{path}: no such file (give the path of an .mcp.json)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportError_(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ImportError_(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImportError_(f"{path}: expected a JSON object with mcpServers")
    servers: dict[str, Any] = {}
    if isinstance(data.get("mcpServers"), dict):
        servers.update(data["mcpServers"])
    projects = data.get("projects")
    if isinstance(projects, dict):
        here = str((cwd or Path.cwd()).resolve())
        project = projects.get(here)
        if isinstance(project, dict) and isinstance(project.get("mcpServers"), dict):
            servers.update(project["mcpServers"])
    if "mcpServers" not in data and not servers:
        raise ImportError_(f"{path}: has no mcpServers")
    return {name: entry for name, entry in servers.items() if isinstance(entry, dict)}


def is_hub_entry(entry: Mapping[str, Any]) -> bool:
    """Whether an entry starts this hub (`hub`, `hub serve`, `python -m hub`, `uvx --from X hub`)."""
    command = str(entry.get("command") or "")
    args = [str(a) for a in entry.get("args") or []]
    name = Path(command).name
    if name == "hub":
        return True
    if name.startswith("python") and args[:2] == ["-m", "hub"]:
        return True
    return name in ("uvx", "pipx", "uv") and "hub" in args


def _entry_to_table(entry: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The `[servers.NAME]` keys for an entry, and the entry's keys the hub does not take."""
    table = {key: entry[key] for key in ENTRY_KEYS if key in entry and entry[key] not in (None, [], {})}
    dropped = sorted(set(entry) - set(ENTRY_KEYS))
    return table, dropped


def import_servers(
    source: Path,
    target: Path,
    *,
    replace: bool = False,
    cwd: Path | None = None,
    moved: set[str] | None = None,
) -> list[str]:
    """Write `source`'s servers into `target` (created if missing). Returns report lines; the
    names of the servers now in `target` (imported, or there already) are added to `moved`."""
    import tomlkit

    moved = set() if moved is None else moved
    entries = read_mcp_servers(source, cwd)
    text = target.read_text() if target.exists() else ""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ImportError_(f"{target}: invalid TOML: {exc}") from None
    servers = doc.get("servers")
    if servers is None:
        servers = tomlkit.table(is_super_table=True)
        doc["servers"] = servers
    lines: list[str] = []
    added = 0
    for original, entry in entries.items():
        name, renamed = (original, "") if is_hub_entry(entry) else _server_name(original, entries, lines)
        if name is None:
            continue
        line, table = _import_one(name, entry, source, target, servers, replace=replace)
        if renamed:
            line = line.replace(f"imported {name!r}", f"imported {original!r}{renamed}", 1)
        lines.append(line)
        if table is not None:
            servers[name] = table
            added += 1
        if table is not None or line.startswith("kept "):
            moved.add(original)  # the .mcp.json key
    if added:
        _write_atomically(target, tomlkit.dumps(doc))
    lines.append(f"{added} server{'s' if added != 1 else ''} written to {target}")
    return lines


def _import_one(
    name: str, entry: Mapping[str, Any], source: Path, target: Path, servers: Any, *, replace: bool
) -> tuple[str, Any]:
    """(the report line, the `[servers.NAME]` table to write or None) for one `.mcp.json` entry."""
    import tomlkit
    from pydantic import ValidationError

    from hub.config.load import format_validation_error
    from hub.config.settings import ServerConfig

    if is_hub_entry(entry):
        return f"left out {name!r}: it is the hub itself", None
    table, dropped = _entry_to_table(entry)
    try:
        ServerConfig.model_validate(table)
    except ValidationError as exc:
        problems = format_validation_error(exc, str(source), model=ServerConfig).replace("\n", "; ")
        return f"skipped {name!r}: {problems}", None
    if name in servers and not replace:
        return f"kept {name!r}: already in {target} (use --replace to overwrite it)", None
    new = tomlkit.table()
    for key, value in table.items():
        if isinstance(value, dict):
            inline = tomlkit.inline_table()
            inline.update(value)
            new[key] = inline
        else:
            new[key] = value
    note = f" (dropped {', '.join(dropped)}: not a server setting the hub takes)" if dropped else ""
    return f"imported {name!r}{note}", new


def _server_name(name: str, entries: Mapping[str, Any], lines: list[str]) -> tuple[str | None, str]:
    """The name `name` is imported under, by the rule the hub applies to `[servers.NAME]`, and a
    note if it had to be renamed (`dotted.name` -> `dotted_name`); None, with the reason in
    `lines`, when nothing usable is left of it or the new name is another server's."""
    from hub.config.settings import SERVER_NAME, SERVER_NAME_RULE

    if SERVER_NAME.fullmatch(name):
        return name, ""
    fixed = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:32]
    if not fixed.strip("_"):
        lines.append(f"skipped {name!r}: a server name must be {SERVER_NAME_RULE}, and none of them is in it")
        return None, ""
    if fixed in entries:
        lines.append(f"skipped {name!r}: it would be renamed {fixed!r}, which is another server's name")
        return None, ""
    return fixed, f" as {fixed!r} (a server name must be {SERVER_NAME_RULE})"


def hub_entry(target: Path, cwd: Path | None = None) -> dict[str, Any]:
    """The `.mcp.json` entry that starts this hub, by its full path (it may not be on PATH), with
    `HUB_CONFIG` when the servers went into a hub.toml the hub would not find by itself."""
    import sys

    if sys.argv and Path(sys.argv[0]).name == "hub":
        command, args = str(Path(sys.argv[0]).resolve()), ["serve"]
    else:
        command, args = sys.executable, ["-m", "hub", "serve"]
    entry: dict[str, Any] = {"type": "stdio", "command": command, "args": args}
    here = (cwd or Path.cwd()).resolve()
    if target.resolve() != here / "hub.toml":
        entry["env"] = {"HUB_CONFIG": str(target.resolve())}
    return entry


def keep_only_the_hub(mcp_json: Path, moved: set[str], entry: dict[str, Any]) -> list[str]:
    """Rewrite `mcp_json` so it lists the hub instead of the servers now in hub.toml (`moved`);
    the old file is kept beside it as `.mcp.json.bak`. A server that was not imported stays."""
    original = mcp_json.read_bytes()
    data = json.loads(original)
    servers = data.get("mcpServers") or {}
    hubs = [name for name, server in servers.items() if isinstance(server, dict) and is_hub_entry(server)]
    kept = {name: server for name, server in servers.items() if name not in moved and name not in hubs}
    name = hubs[0] if hubs else "hub"
    data["mcpServers"] = {name: servers[name] if hubs else entry, **kept}
    backup = _backup_path(mcp_json, original)
    _write_atomically(backup, original.decode("utf-8", errors="replace"), like=mcp_json)
    _write_atomically(mcp_json, json.dumps(data, indent=2) + "\n")
    left = f"; it still lists {', '.join(sorted(kept))} (not imported: see above)" if kept else ""
    return [f"{mcp_json} now lists the hub{left} (the old file is {backup.name})"]


def _backup_path(mcp_json: Path, original: bytes) -> Path:
    """Where the old `.mcp.json` goes: `.mcp.json.bak`, or, when that already holds another
    file (an earlier import's), the first free `.mcp.json.bak.N`: no backup is ever overwritten."""
    candidates = [mcp_json.with_name(mcp_json.name + ".bak")]
    candidates += (mcp_json.with_name(f"{mcp_json.name}.bak.{n}") for n in range(1, 1000))
    for path in candidates:
        if not path.exists() or path.read_bytes() == original:
            return path
    raise OSError(f"{mcp_json.parent} holds 1,000 backups of {mcp_json.name}: remove some and try again")


def _write_atomically(path: Path, text: str, like: Path | None = None) -> None:
    """Write `path` in one step, with the mode of the file it replaces (or of `like`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        model = path if path.exists() else like
        if model is not None and model.exists():
            os.chmod(tmp, model.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- list --------------------------------------------------------------------------------------


def _store_rows(config: HubConfig, sql: str) -> list[tuple[Any, ...]]:
    from hub.services.backends import read_only_rows

    return [tuple(row.values()) for row in read_only_rows(config.state_dir, config.store_url(), sql)]


def _children_of(pids: set[int]) -> list[list[str]]:
    """The command lines of the processes whose parent is one of `pids` (Linux /proc)."""
    found: list[list[str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid in pids:
                found.append(
                    [a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a]
                )
        except (OSError, ValueError, IndexError):
            continue
    return found


def _runs(command: str, args: list[str], cmdlines: list[list[str]]) -> bool:
    base = Path(command).name
    for cmdline in cmdlines:
        if not any(Path(part).name == base for part in cmdline[:3]):
            continue
        if not args or cmdline[-len(args) :] == args:
            return True
    return False


def _tools_seen(config: HubConfig) -> dict[str, int]:
    """How many tools each server listed when last asked, for its configuration as it is now."""
    from hub.client.cache import ConnectionCache

    rows = dict(_store_rows(config, "SELECT config_key, listing_json FROM server_listings"))
    keys = ConnectionCache(config.servers)  # the keys as a hub computes them; nothing is started
    seen: dict[str, int] = {}
    for name in config.servers:
        try:
            seen[name] = len(json.loads(rows[keys.config_key(name)]).get("tools", []))
        except Exception:  # an unset ${VAR}, never listed, or a row that cannot be read
            continue
    return seen


def _sign_ins(config: HubConfig) -> dict[str, tuple[str, Any]]:
    """Each remote server's (url, token row) from the store, read-only."""
    from hub.client.tokens import read_rows
    from hub.services.backends import read_only_rows

    return read_rows(read_only_rows(config.state_dir, config.store_url(), "SELECT * FROM oauth_tokens"))


def list_servers(config: HubConfig) -> list[dict[str, Any]]:
    """One row per configured server: name, transport, target, set by, running, tools (last
    seen), and a remote server's sign-in."""
    from hub.config.expand import expand_vars

    tools = _tools_seen(config)
    sign_ins = _sign_ins(config)
    here = socket.gethostname()
    hubs = {
        int(pid)
        for pid, pid_start, host in _store_rows(
            config, "SELECT pid, pid_start, host FROM hub_instances WHERE stopped_at IS NULL"
        )
        if host == here and process_alive(int(pid), pid_start)  # the hub instances' own rule
    }
    cmdlines = _children_of(hubs) if hubs else []
    rows = []
    for name, server in config.servers.items():
        if server.transport == "stdio":
            assert server.command is not None
            target = " ".join([server.command, *server.args])
            try:
                command = expand_vars(server.command, os.environ, where=name)
                args = [expand_vars(a, os.environ, where=name) for a in server.args]
                running: bool | None = _runs(command, args, cmdlines)
            except Exception:
                running = False
        else:
            target, running = server.url or "", None  # a remote server: not ours to run
        stored = sign_ins.get(name)
        sign_in = stored[1].describe(name) if stored and stored[0] == _expanded_url(server) else None
        rows.append(
            {
                "name": name,
                "transport": server.transport,
                "target": target,
                "set_by": config.origin_of(f"servers.{name}"),
                "running": running,
                "tools": tools.get(name),
                "sign_in": sign_in,
            }
        )
    return rows


def _expanded_url(server: Any) -> str | None:
    from hub.config.expand import expand_vars

    try:
        return expand_vars(server.url or "", os.environ, where="url")
    except Exception:
        return None


# --- check -------------------------------------------------------------------------------------


async def check_servers(
    config: HubConfig, names: list[str], on_result: Callable[[dict[str, Any]], None] | None = None
) -> list[dict[str, Any]]:
    """Start each server through the connection cache (at most `CHECK_CONCURRENCY` at once), ask
    for everything it lists, keep that for the hub (`hub.client.listing.Listings`), close it. One
    row per server, in the order asked: name, ok, and tools, resources, prompts and `not_relayed`
    (what it offers that the hub does not pass on), or error (with the tail of its stderr);
    `on_result(row)` hears each one as it finishes."""
    import anyio

    from hub.client.cache import ConnectionCache
    from hub.client.listing import Listings
    from hub.services.backends import open_store

    unknown = [n for n in names if n not in config.servers]
    if unknown:
        known = ", ".join(config.servers) or "none"
        raise LookupError(f"no server {', '.join(map(repr, unknown))} in the configuration (known: {known})")

    chosen = names or list(config.servers)
    results: dict[str, dict[str, Any]] = {}
    limit = anyio.Semaphore(CHECK_CONCURRENCY)
    store = open_store(config)
    try:
        with tempfile.TemporaryDirectory(prefix="hub-check-") as logs:
            async with ConnectionCache(config.servers, log_dir=Path(logs), store=store) as cache:
                listings = Listings(store, cache)
                await listings.setup()

                async def check(name: str) -> None:
                    async with limit:
                        try:
                            results[name] = _checked(name, await listings.refresh(name))
                        except Exception as exc:
                            results[name] = {
                                "name": name,
                                "ok": False,
                                "error": str(exc) or type(exc).__name__,
                            }
                        finally:
                            await cache.close(name)
                        stored = _sign_ins(config).get(name)  # a remote server's sign-in, as it stands now
                        if stored is not None and stored[0] == _expanded_url(config.servers[name]):
                            results[name]["sign_in"] = stored[1].describe(name)
                        if on_result is not None:
                            on_result(results[name])

                async with anyio.create_task_group() as tg:
                    for name in chosen:
                        tg.start_soon(check, name)
    finally:
        store.close()
    return [results[name] for name in chosen]


def _checked(name: str, listing: Any) -> dict[str, Any]:
    from hub.client.listing import not_relayed

    return {
        "name": name,
        "ok": True,
        "tools": [str(t.get("name")) for t in listing.tools],
        "resources": len(listing.resources) + len(listing.templates),
        "prompts": len(listing.prompts),
        "not_relayed": not_relayed(listing),
    }


# --- login, logout -------------------------------------------------------------------------------


def _remote(config: HubConfig, name: str, action: str) -> Any:
    """The `[servers.NAME]` table `action` applies to; LookupError says why not."""
    server = config.servers.get(name)
    if server is None:
        known = ", ".join(config.servers) or "none"
        raise LookupError(f"no server {name!r} in the configuration (known: {known})")
    if server.url is None:
        raise LookupError(f"server {name!r} is a stdio server: {action} is for remote (url) servers")
    if not server.signs_in_with_oauth:
        raise LookupError(
            f"server {name!r} authenticates with headersHelper, bearer_token_env_var or an "
            f"Authorization header: the hub does not sign in to it with OAuth"
        )
    return server


async def login(config: HubConfig, name: str, *, scopes: str | None = None, browser: bool = True) -> int:
    """`hub servers login NAME`: sign in through the browser; the outcome on stdout (never a token)."""
    from hub.client.auth import SignInFailed, open_in_browser, sign_in
    from hub.client.tokens import TokenStore
    from hub.errors import ConfigError
    from hub.services.backends import open_store

    server = _remote(config, name, "sign-in")
    timeout = server.oauth.callback_timeout_s if server.oauth else 300

    async def show(url: str) -> None:
        print(
            f"Open this URL in a browser to sign in to {name} (waiting up to {timeout:g} s):\n{url}",
            flush=True,
        )
        if browser:
            await open_in_browser(url)

    with contextlib.closing(open_store(config)) as store:
        try:
            signed = await sign_in(
                name, server, TokenStore(store), show_url=show, environ=os.environ, scopes=scopes
            )
        except (SignInFailed, ConfigError) as exc:
            print(f"hub servers login: {exc}", file=sys.stderr)
            return 1
    print(f"signed in to {signed.describe()}")
    return 0


async def logout(config: HubConfig, name: str) -> int:
    """`hub servers logout NAME`: revoke where the server can, and forget the tokens."""
    from hub.client.auth import sign_out
    from hub.client.tokens import TokenStore
    from hub.services.backends import open_store

    server = _remote(config, name, "sign-out")
    with contextlib.closing(open_store(config)) as store:
        print(await sign_out(name, server, TokenStore(store), os.environ))
    return 0


# --- the command ---------------------------------------------------------------------------------


def _sign_in_action(config: HubConfig, args: Any) -> int:
    import anyio

    try:
        if args.servers_command == "login":
            return anyio.run(lambda: login(config, args.name, scopes=args.scope, browser=not args.no_browser))
        return anyio.run(logout, config, args.name)
    except LookupError as exc:
        print(f"hub servers {args.servers_command}: {exc.args[0]}", file=sys.stderr)
        return 2


def add_parser(commands: Any) -> None:
    servers = commands.add_parser(
        "servers",
        help="import servers from .mcp.json, list them, check that they start",
        description="Manage the downstream MCP servers of [servers.NAME] in hub.toml.",
    )
    add_common(servers, suppress=True)
    actions = servers.add_subparsers(dest="servers_command", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="write an .mcp.json's servers into hub.toml (comments kept; the hub's own entry left out)",
        description="Read mcpServers from PATH (an .mcp.json, Claude Desktop's config or ~/.claude.json; "
        "default ./.mcp.json) and add one [servers.NAME] table each to the project's hub.toml "
        "(--config, HUB_CONFIG, else ./hub.toml, created if missing); then rewrite the .mcp.json to "
        "list only the hub (the old file kept as .mcp.json.bak), or print the entry to paste.",
    )
    imp.add_argument("path", nargs="?", metavar="PATH", help="default: ./.mcp.json")
    imp.add_argument("--replace", action="store_true", help="overwrite servers already in hub.toml")
    imp.add_argument(
        "--no-start",
        action="store_true",
        help="do not start the servers imported to learn what they list (the hub does when it starts)",
    )
    imp.add_argument(
        "--keep-mcp-json",
        action="store_true",
        help="leave .mcp.json as it is and print the hub's entry to paste (default: rewrite it to list "
        "only the hub, the old file kept as .mcp.json.bak)",
    )
    imp.add_argument(
        "--user",
        action="store_true",
        help="write into the user's ~/.config/hub/hub.toml instead of the project's",
    )
    add_common(imp, suppress=True)
    lst = actions.add_parser("list", help="configured servers, whether running, tools count (from the store)")
    lst.add_argument("--json", action="store_true", help="print JSON")
    add_common(lst, suppress=True)
    for action, text in (
        (
            "check",
            "start each server, list what it offers and keep it for the hub, say what the hub does not "
            "pass on, report errors with its stderr",
        ),
        (
            "refresh",
            "ask each server again for what it lists and keep it for the hub (after an upgrade, say)",
        ),
    ):
        chk = actions.add_parser(action, help=text)
        chk.add_argument("names", nargs="*", metavar="NAME", help="default: every configured server")
        chk.add_argument("--json", action="store_true", help="print JSON")
        add_common(chk, suppress=True)
    _add_sign_in_parsers(actions)


def _add_sign_in_parsers(actions: Any) -> None:
    """`hub servers login NAME` and `logout NAME`."""
    sign = actions.add_parser(
        "login",
        help="sign in to a remote server (OAuth): prints the URL to open, waits for the browser",
        description="Sign the hub in to remote server NAME with OAuth 2.1 (authorization code with PKCE). "
        "The authorization URL is printed (and opened in a browser when one is available); the browser "
        "comes back to a listener on 127.0.0.1. The tokens are kept in the store for every hub on the "
        "state directory.",
    )
    sign.add_argument("name", metavar="NAME")
    sign.add_argument("--no-browser", action="store_true", help="only print the URL")
    sign.add_argument("--scope", help="scopes to ask for besides the configured ones (space-separated)")
    add_common(sign, suppress=True)
    out = actions.add_parser("logout", help="revoke and forget a remote server's tokens")
    out.add_argument("name", metavar="NAME")
    add_common(out, suppress=True)


def run(args: Any) -> int:
    """`hub servers ACTION`."""
    from hub.log import configure_logging

    configure_logging("console", "error")
    if args.servers_command == "import":
        return _import(args)
    config = config_from(args)
    if args.servers_command in ("login", "logout"):
        return _sign_in_action(config, args)
    if args.servers_command == "list":
        return _list(config, as_json=args.json)
    return _check(config, list(args.names), as_json=args.json, brief=args.servers_command == "refresh")


def _import(args: Any) -> int:
    from hub.config.paths import config_files, user_config_file

    source = Path(args.path).expanduser() if args.path else Path(".mcp.json")
    if args.user:
        target = user_config_file(os.environ)
    else:
        target = config_files(args.config, os.environ).project or Path("hub.toml")
    moved: set[str] = set()
    try:
        lines = import_servers(source, target, replace=args.replace, moved=moved)
        entry = hub_entry(target)
        if moved and source.name == ".mcp.json" and not args.keep_mcp_json:
            lines += keep_only_the_hub(source, moved, entry)
        elif moved:
            shown = json.dumps({"mcpServers": {"hub": entry}}, indent=2)
            lines.append(f"{source} is unchanged; keep only this entry in your .mcp.json:\n{shown}")
    except (ImportError_, OSError, ValueError) as exc:
        print(f"hub servers import: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    if moved and not args.no_start:
        _learn(args, sorted(moved))
    return 0


def _learn(args: Any, names: list[str]) -> None:
    """Start the servers just imported to learn what they list; a failure is said, not fatal."""
    import anyio

    from hub.errors import ConfigError

    try:
        config = config_from(args)
        results = anyio.run(check_servers, config, [n for n in names if n in config.servers])
    except (ConfigError, LookupError) as exc:
        print(f"not started to learn what they list: {exc}")
        return
    for row in results:
        if row["ok"]:
            counts = f"{len(row['tools'])} tools, {row['resources']} resources, {row['prompts']} prompts"
            print(f"learned {row['name']!r}: {counts}")
        else:
            print(f"could not learn {row['name']!r} (the hub tries again when it starts): {row['error']}")


def _list(config: HubConfig, *, as_json: bool) -> int:
    rows = list_servers(config)
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no servers configured ([servers.NAME] in hub.toml; `hub servers import` brings .mcp.json's)")
    for row in rows:
        running = {True: "running", False: "not running", None: "remote"}[row["running"]]
        tools = "tools: not seen yet" if row["tools"] is None else f"tools: {row['tools']}"
        sign_in = f", {row['sign_in']}" if row["sign_in"] else ""
        print(
            f"{row['name']}  ({row['transport']}: {row['target']})  {running}, {tools}{sign_in}  [{row['set_by']}]"
        )
    return 0


def _check(config: HubConfig, names: list[str], *, as_json: bool, brief: bool = False) -> int:
    """Each server's line as soon as it is known (a terminal also sees which are still starting);
    with --json, one document at the end. `brief` (refresh): counts only."""
    import anyio

    progress = _Progress(len(names or config.servers)) if not as_json and sys.stderr.isatty() else None

    def show(row: dict[str, Any]) -> None:
        if progress is not None:
            progress.clear()
        if not as_json:
            print(check_line(row, brief=brief), flush=True)
        if progress is not None:
            progress.done += 1
            progress.show()

    try:
        if progress is not None:
            progress.show()
        results = anyio.run(check_servers, config, names, show)
    except LookupError as exc:
        print(f"hub servers {'refresh' if brief else 'check'}: {exc.args[0]}", file=sys.stderr)
        return 2
    finally:
        if progress is not None:
            progress.clear()
    if as_json:
        print(json.dumps(results, indent=2))
    return 0 if all(row["ok"] for row in results) else 1


def check_line(row: dict[str, Any], *, brief: bool = False) -> str:
    """What `check` (or, `brief`, `refresh`) says of one server: its counts and tools, what it
    offers that the hub does not pass on, and where a remote server's sign-in stands; or why it
    failed."""
    sign_in = f"  [{row['sign_in']}]" if row.get("sign_in") else ""
    if not row["ok"]:
        return f"FAILED  {row['name']}: {row['error']}{sign_in}"
    counts = f"{len(row['tools'])} tools, {row['resources']} resources, {row['prompts']} prompts"
    if brief:
        return f"listed  {row['name']}: {counts}{sign_in}"
    line = f"ok      {row['name']}: {counts}; tools: {', '.join(row['tools'])}{sign_in}"
    if row["not_relayed"]:
        line += f"\n        {row['name']} offers what the hub does not pass on yet: {'; '.join(row['not_relayed'])}"
    return line


class _Progress:
    """ "checked 3 of 10 servers" on a terminal's stderr, rewritten in place."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0

    def show(self) -> None:
        if self.done < self.total:
            sys.stderr.write(f"\rchecking servers: {self.done} of {self.total} done ...")
            sys.stderr.flush()

    def clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
