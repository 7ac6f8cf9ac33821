"""Git worktree isolation: each slot works in its own worktree on branch `hub-pool/<slot>`.

Worktrees live under `<state_dir>/pool/worktrees/<repo-hash>/<slot>`. Removing one first commits
any uncommitted work to its branch, and never deletes the branch, so nothing a task did is lost. A
slot's branch that has no commits of its own is moved to the current HEAD when the slot starts
again. Leftovers from a hub that crashed are removed at start.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import anyio

from hub.errors import ToolError


class WorktreeError(ToolError):
    pass


async def git(repo: Path, *args: str) -> str:
    result = await anyio.run_process(["git", "-C", str(repo), *args], check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise WorktreeError(f"git {' '.join(args)}: {message}")
    return result.stdout.decode().strip()


class Worktrees:
    def __init__(self, repo: Path, root: Path) -> None:
        self.repo = repo
        self.root = root / hashlib.sha256(str(repo).encode()).hexdigest()[:12]

    @classmethod
    async def for_directory(cls, directory: Path, state_dir: Path) -> Worktrees:
        try:
            top = await git(directory, "rev-parse", "--show-toplevel")
        except (WorktreeError, OSError):
            raise WorktreeError(
                f"worktree = true needs a git repository, and {directory} is not in one "
                "(run the hub from a repository, or set [plugins.pool] cwd to one)"
            ) from None
        return cls(Path(top), state_dir / "pool" / "worktrees")

    @staticmethod
    def branch(slot: str) -> str:
        return f"hub-pool/{slot}"

    async def clean_stale(self) -> list[str]:
        """Remove worktrees left under our root by an earlier run (their branches stay)."""
        removed = []
        if self.root.exists():
            for path in sorted(self.root.iterdir()):
                await self._remove_path(path)
                removed.append(path.name)
        await git(self.repo, "worktree", "prune")
        return removed

    async def create(self, slot: str) -> Path:
        path = self.root / slot
        if path.exists():
            await self._remove_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        branch = self.branch(slot)
        exists = True
        try:
            await git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")
        except WorktreeError:
            exists = False
        if exists and await self._merged(branch):  # nothing of its own: start from today's HEAD
            await git(self.repo, "worktree", "add", "-B", branch, str(path), "HEAD")
        elif exists:  # an earlier slot's branch with commits not in HEAD: keep them, work on from there
            await git(self.repo, "worktree", "add", str(path), branch)
        else:
            await git(self.repo, "worktree", "add", "-b", branch, str(path), "HEAD")
        return path

    async def _merged(self, branch: str) -> bool:
        try:
            await git(self.repo, "merge-base", "--is-ancestor", branch, "HEAD")
        except WorktreeError:
            return False
        return True

    async def remove(self, slot: str) -> None:
        """Remove a slot's worktree; uncommitted work is first committed to its branch."""
        path = self.root / slot
        if path.exists():
            try:
                if await git(path, "status", "--porcelain"):
                    await git(path, "add", "-A")
                    await git(
                        path,
                        "-c",
                        "user.name=hub",
                        "-c",
                        "user.email=hub@localhost",
                        "commit",
                        "-q",
                        "--no-verify",
                        "-m",
                        f"hub pool: uncommitted work left in {slot}",
                    )
            except WorktreeError:
                pass  # keep going: the branch still has every commit made so far
        await self._remove_path(path)

    async def _remove_path(self, path: Path) -> None:
        try:
            await git(self.repo, "worktree", "remove", "--force", str(path))
        except WorktreeError:
            shutil.rmtree(path, ignore_errors=True)
            await git(self.repo, "worktree", "prune")
