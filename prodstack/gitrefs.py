"""Throwaway `git worktree` checkouts of a ref, so a plan can be made of any commit."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prodstack.errors import UsageError


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def repository_root(start: Path) -> Path:
    found = _git(start, "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        raise UsageError(f"{start}: not inside a git repository (needed for --base/--head)")
    return Path(found.stdout.strip())


def resolve(repo: Path, ref: str, flag: str) -> str:
    """The commit a ref names, or a `UsageError` that names the flag and the ref."""
    found = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        hint = " (fetch it first: git fetch origin)" if "/" in ref else ""
        raise UsageError(f"{flag} {ref}: no such git ref in {repo}{hint}")
    return found.stdout.strip()


def has_file(repo: Path, commit: str, path: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{commit}:{path}").returncode == 0


@contextmanager
def checkout(repo: Path, commit: str) -> Iterator[Path]:
    """A detached worktree of ``commit``, removed again on exit whatever happens."""
    parent = Path(tempfile.mkdtemp(prefix="prodstack-ref-"))
    path = parent / commit[:12]
    added = _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
    if added.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        raise UsageError(f"git worktree add {commit[:12]}: {added.stderr.strip()}")
    try:
        yield path
    finally:
        _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(parent, ignore_errors=True)
        _git(repo, "worktree", "prune")
