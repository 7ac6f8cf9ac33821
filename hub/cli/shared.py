"""`hub shared --key KEY --socket PATH`: the shared hub process of a launch. A bridge starts it
(`hub.launch.bridge`); it is never run by hand, so `hub --help` does not list it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hub.cli.options import add_common, config_from

__all__ = ["build_parser", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub shared", description=__doc__)
    parser.add_argument("--key", required=True)
    parser.add_argument("--socket", required=True)
    # The bridge's locked start lock, inherited: released once the process listens.
    parser.add_argument("--start-lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    add_common(parser, suppress=False)
    return parser


def run(args: argparse.Namespace) -> int:
    import anyio

    from hub.launch.shared_process import serve_shared
    from hub.log import configure_logging

    if args.start_lock_fd is not None:  # ours alone: a child of ours must not keep the lock held
        os.set_inheritable(args.start_lock_fd, False)
    config = config_from(args)
    configure_logging(config.log_format, config.log_level)
    anyio.run(serve_shared, config, args.key, Path(args.socket), args.start_lock_fd)
    return 0
