"""Git worktree isolation: each slot works in its own worktree on its own branch.

Worktrees live under `<state_dir>/pool/worktrees/<repo-hash>/<owner>/<slot>` on branch
`hub-pool/<owner>/<slot>`, where the owner is the hub instance (hub.instances) running the slot,
so two hubs on one state directory never share a worktree or a branch. Removing one first
commits any uncommitted work to its branch, and never deletes the branch, so nothing a task did
is lost. A slot's branch that has no commits of its own is moved to the current HEAD when the
slot starts again. The worktrees of a hub that died are retired the same way by the hub that
recovers its work (`retire_left_behind`).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

import anyio

from hub import ToolError


class WorktreeError(ToolError):
    pass


async def git(repo: Path, *args: str) -> str:
    result = await anyio.run_process(["git", "-C", str(repo), *args], check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise WorktreeError(f"git {' '.join(args)}: {message}")
    return result.stdout.decode().strip()


def worktrees_root(state_dir: Path) -> Path:
    return state_dir / "pool" / "worktrees"


class Worktrees:
    def __init__(self, repo: Path, root: Path, owner: str) -> None:
        self.repo = repo
        self.repo_root = root / hashlib.sha256(str(repo).encode()).hexdigest()[:12]
        self.owner = owner
        self.root = self.repo_root / owner

    @classmethod
    async def for_directory(cls, directory: Path, state_dir: Path, owner: str) -> Worktrees:
        try:
            top = await git(directory, "rev-parse", "--show-toplevel")
        except (WorktreeError, OSError):
            raise WorktreeError(
                f"worktree = true needs a git repository, and {directory} is not in one "
                "(run the hub from a repository, or set [plugins.pool] cwd to one)"
            ) from None
        return cls(Path(top), worktrees_root(state_dir), owner)

    def branch(self, slot: str) -> str:
        return f"hub-pool/{self.owner}/{slot}"

    async def clean_legacy(self) -> list[str]:
        """Retire worktrees of hubs from before owners (`<repo-hash>/slot-N`, branch
        `hub-pool/slot-N`): their work is committed to their branch, which stays."""
        removed = []
        if self.repo_root.exists():
            for path in sorted(self.repo_root.glob("slot-*")):
                await commit_leftovers(path, path.name)
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
            await commit_leftovers(path, slot)
        await self._remove_path(path)

    async def _remove_path(self, path: Path) -> None:
        await remove_worktree(self.repo, path)


async def commit_leftovers(path: Path, slot: str) -> None:
    """Commit whatever is uncommitted in worktree `path` to its branch."""
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
    except (WorktreeError, OSError):
        pass  # keep going: the branch still has every commit made so far


async def remove_worktree(repo: Path | None, path: Path) -> None:
    """Remove worktree `path` of `repo` (its branch stays); a broken one is deleted and pruned."""
    try:
        if repo is None:
            raise WorktreeError("repository unknown")
        await git(repo, "worktree", "remove", "--force", str(path))
    except (WorktreeError, OSError):
        shutil.rmtree(path, ignore_errors=True)
        if repo is not None:
            with contextlib.suppress(WorktreeError, OSError):
                await git(repo, "worktree", "prune")


async def retire_left_behind(state_dir: Path, owner: str) -> list[str]:
    """Retire every worktree of dead hub instance `owner`, in whatever repository: uncommitted work
    is committed to its branch, the worktree removed, the branch kept. Returns the slots."""
    retired = []
    for path in sorted(worktrees_root(state_dir).glob(f"*/{owner}/*")):
        repo: Path | None = None
        try:
            common = await git(path, "rev-parse", "--path-format=absolute", "--git-common-dir")
            repo = Path(common).parent
        except (WorktreeError, OSError):
            pass
        await commit_leftovers(path, path.name)
        await remove_worktree(repo, path)
        retired.append(path.name)
    for folder in worktrees_root(state_dir).glob(f"*/{owner}"):
        with contextlib.suppress(OSError):
            folder.rmdir()
    return retired
