"""Real filesystem faults for the adversarial tests: a small tmpfs that fills up, a read-only bind
mount, and a second local user. They need root (the test machines run the suite as root); a test
that cannot have them is skipped with the reason, never faked."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "other_user_can_read", "read_only", "tmpfs"]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root")


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted on `path` for the block."""
    _need_root("mounting a tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """`path` bind-mounted read-only onto itself for the block (chmod does not stop root)."""
    _need_root("a read-only bind mount")
    done = _run("mount", "--bind", "-o", "ro", str(path), str(path))
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


def fill(directory: Path, name: str = "filler") -> Path:
    """Write zeros into `directory/name` until its filesystem is full; returns the file."""
    filler = directory / name
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(chunk)
        with contextlib.suppress(OSError):  # the last partial page
            while True:
                f.write(b"\0" * 512)
    return filler


def other_user_can_read(path: Path, user: str = "nobody") -> bool:
    """Whether local user `user` (not root) can read `path` (a file) or list it (a directory)."""
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None:
        pytest.skip("checking file modes as another local user needs root and runuser")
    try:
        import pwd

        pwd.getpwnam(user)
    except KeyError:
        pytest.skip(f"no local user {user!r} to read as")
    argv = ["ls", str(path)] if path.is_dir() else ["head", "-c", "1", str(path)]
    return _run(runuser, "-u", user, "--", *argv).returncode == 0
