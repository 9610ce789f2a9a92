"""Repos: where a component's source lives.

``LocalRepo`` is a folder. ``GitRepo`` is a git repository given by URL or
path; it is cloned once into a bare cache under ``$PCS_HOME/git`` and files
are read at a commit, branch or tag with ``git show``, so the user's working
copy is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from pcs import _config
from pcs.errors import ComponentFileNotFoundError, RegistryError, RepoError
from pcs.specs import sha256_bytes

__all__ = ["Repo", "LocalRepo", "GitRepo", "GitState", "git_state"]


class Repo(ABC):
    """A place that holds component source files, possibly at many versions."""

    type: str = ""

    def __init__(self, identifier: str) -> None:
        if not identifier or not isinstance(identifier, str):
            raise RepoError("A repo needs a non-empty string identifier.")
        self.identifier = identifier

    @abstractmethod
    def read_source(self, file_path: str, version: str | None = None) -> str:
        """The text of ``file_path`` at ``version`` (None: the current one)."""

    @abstractmethod
    def to_spec(self) -> dict[str, Any]:
        """A flat spec with ``identifier`` and ``type``."""

    def local_file(self, file_path: str) -> Path | None:
        """The file on this machine's disk, when the repo is a folder."""
        return None

    @staticmethod
    def from_spec(spec: Mapping[str, Any], base_dir: str | Path | None = None) -> Repo:
        """Build a repo from its spec; relative local paths resolve against ``base_dir``."""
        identifier = spec.get("identifier")
        repo_type = spec.get("type")
        if repo_type == "local":
            path = spec.get("path")
            if not isinstance(path, str):
                raise RegistryError(f"Local repo {identifier!r} needs a 'path' string.")
            local = Path(path).expanduser()
            if not local.is_absolute():
                local = Path(base_dir or ".") / local
            return LocalRepo(str(identifier), local_dir=local)
        if repo_type in ("git", "github"):
            url = spec.get("url")
            if not isinstance(url, str):
                raise RegistryError(f"Git repo {identifier!r} needs a 'url' string.")
            if _is_relative_local_url(url) and base_dir is not None:
                url = str((Path(base_dir) / url).resolve())
            return GitRepo(str(identifier), url=url)
        raise RegistryError(
            f"Repo {identifier!r} has type {repo_type!r}; pcs knows 'local', 'git' and "
            "'github'. Fix the 'type' of this repo in the registry."
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Repo) and self.to_spec() == other.to_spec()

    def __hash__(self) -> int:
        return hash((self.identifier, self.type))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identifier!r})"


class LocalRepo(Repo):
    """A folder on this machine."""

    type = "local"

    def __init__(self, identifier: str, local_dir: str | os.PathLike | None = None) -> None:
        super().__init__(identifier)
        self.local_dir = Path(local_dir if local_dir is not None else ".").expanduser().resolve()

    def local_file(self, file_path: str) -> Path:
        return (self.local_dir / file_path).resolve()

    def read_source(self, file_path: str, version: str | None = None) -> str:
        path = self.local_file(file_path)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ComponentFileNotFoundError(
                f"Component file {path} does not exist (repo {self.identifier!r} at "
                f"{self.local_dir}, file_path {file_path!r}). Check 'file_path' and the "
                "repo's 'path' in the registry, or restore the file."
            ) from None
        except IsADirectoryError:
            raise ComponentFileNotFoundError(
                f"Component file_path {file_path!r} in repo {self.identifier!r} is a "
                "directory; it must name a Python file."
            ) from None

    def to_spec(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "type": self.type, "path": str(self.local_dir)}


class GitRepo(Repo):
    """A git repository given by URL or path, read at commits without a checkout.

    Example::

        repo = GitRepo("models", url="https://example.org/team/models.git")
        Component.from_repo(repo, identifier="model==3f2a9c1", file_path="model.py")
    """

    type = "git"
    _locks: dict[str, threading.Lock] = {}

    def __init__(self, identifier: str, url: str) -> None:
        super().__init__(identifier)
        if not url:
            raise RepoError(f"Git repo {identifier!r} needs a URL or path.")
        if _is_relative_local_url(url) or url.startswith("~"):
            url = str(Path(url).expanduser().resolve())
        self.url = url
        self._resolved: dict[str, str] = {}

    def to_spec(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "type": self.type, "url": self.url}

    @property
    def cache_path(self) -> Path:
        return _config.cache_dir("git") / sha256_bytes(self.url.encode())[:24]

    def _clone(self):  # -> git.Repo
        import git

        path = self.cache_path
        lock = self._locks.setdefault(str(path), threading.Lock())
        with lock:
            if (path / "HEAD").exists():
                return git.Repo(path)
            tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
            try:
                git.Repo.clone_from(self.url, tmp, bare=True)
                tmp.replace(path)
            except git.GitCommandError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise RepoError(
                    f"Could not clone git repo {self.identifier!r} from {self.url}: "
                    f"{_git_message(exc)}. Check the URL and that it is reachable."
                ) from None
            except OSError:
                # another process finished the same clone first
                shutil.rmtree(tmp, ignore_errors=True)
            return git.Repo(path)

    def resolve(self, version: str | None = None) -> str:
        """The full commit sha that ``version`` (commit, branch, tag; None: HEAD) names."""
        import git

        key = version or "HEAD"
        if key in self._resolved:
            return self._resolved[key]
        repo = self._clone()
        try:
            sha = repo.git.rev_parse("--verify", "--quiet", f"{key}^{{commit}}")
        except git.GitCommandError:
            sha = ""
        if not sha or (version and not sha.startswith(version) and _looks_like_sha(version)):
            self._fetch(repo)
            try:
                sha = repo.git.rev_parse("--verify", "--quiet", f"{key}^{{commit}}")
            except git.GitCommandError:
                raise RepoError(
                    f"Git repo {self.identifier!r} ({self.url}) has no commit, branch or "
                    f"tag {key!r}. Check the component's version (name==VERSION), or "
                    "push that commit."
                ) from None
        if _looks_like_sha(key) or key.startswith("refs/tags/"):
            self._resolved[key] = sha  # immutable names only; branches move
        return sha

    def _fetch(self, repo) -> None:
        import git

        try:
            repo.git.fetch(
                "--quiet", "origin", "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"
            )
        except git.GitCommandError as exc:
            raise RepoError(
                f"Could not fetch git repo {self.identifier!r} from {self.url}: "
                f"{_git_message(exc)}."
            ) from None

    def read_source(self, file_path: str, version: str | None = None) -> str:
        import git

        sha = self.resolve(version)
        repo = self._clone()
        rel = str(PurePosixPath(file_path))
        try:
            return repo.git.show(f"{sha}:{rel}", strip_newline_in_stdout=False)
        except git.GitCommandError:
            raise ComponentFileNotFoundError(
                f"Git repo {self.identifier!r} ({self.url}) has no file {file_path!r} at "
                f"commit {sha[:12]}. Check the component's file_path and version."
            ) from None

    def is_pushed(self, sha: str) -> bool:
        """Whether a remote of the cloned repo (the URL itself) holds ``sha``."""
        try:
            self.resolve(sha)
            return True
        except RepoError:
            return False


# -- capture of a working tree's state at run start ---------------------------------


@dataclass(frozen=True)
class GitState:
    """Where a file on disk sits in git, as recorded when a run starts."""

    root: str
    commit: str
    branch: str | None
    remote_url: str | None
    dirty: bool
    rel_paths: tuple[str, ...]
    diff: str = ""
    untracked: tuple[str, ...] = field(default_factory=tuple)
    pushed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "commit": self.commit,
            "branch": self.branch,
            "remote_url": self.remote_url,
            "dirty": self.dirty,
            "files": list(self.rel_paths),
            "untracked": list(self.untracked),
            "diff_sha256": sha256_bytes(self.diff.encode()) if self.diff else None,
            "pushed": self.pushed,
        }


def git_state(paths: list[Path]) -> GitState | None:
    """The git state of files in one working tree, or None when not in git.

    One ``git status`` for dirtiness; a ``git diff`` only when dirty.
    """
    if not paths:
        return None
    root = _find_git_root(paths[0].parent)
    if root is None:
        return None
    import git

    try:
        repo = git.Repo(root)
        try:
            commit = repo.head.commit.hexsha
        except ValueError:
            return None  # no commit yet
        rels = tuple(os.path.relpath(p, root) for p in paths if _inside(p, root))
        if not rels:
            return None
        status = repo.git.status("--porcelain", "--", *rels)
        untracked = tuple(line[3:] for line in status.splitlines() if line.startswith("??"))
        dirty = bool(status.strip())
        diff = repo.git.diff("HEAD", "--", *rels) if dirty else ""
        try:
            branch: str | None = repo.active_branch.name
        except TypeError:
            branch = None  # detached HEAD
        remote_url = None
        pushed = False
        if repo.remotes:
            try:
                remote_url = repo.remotes[0].url
            except Exception:  # noqa: BLE001 - a broken remote config is just "unknown"
                remote_url = None
            pushed = bool(repo.git.branch("-r", "--contains", commit).strip())
        return GitState(
            root=str(root),
            commit=commit,
            branch=branch,
            remote_url=remote_url,
            dirty=dirty,
            rel_paths=rels,
            diff=diff,
            untracked=untracked,
            pushed=pushed,
        )
    except git.GitCommandError:
        return None


def _find_git_root(start: Path) -> Path | None:
    current = start.resolve()
    for candidate in (current, *current.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except ValueError:
        return False


def _looks_like_sha(text: str) -> bool:
    return 7 <= len(text) <= 40 and all(c in "0123456789abcdef" for c in text.lower())


def _is_relative_local_url(url: str) -> bool:
    return "://" not in url and not url.startswith("/") and ":" not in url.split("/")[0]


def _git_message(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return " ".join(text.split())[:300]
