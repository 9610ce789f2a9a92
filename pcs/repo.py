"""Repos: where a component's source lives.

``LocalRepo`` is a folder. ``GitRepo`` is a git repository given by URL or
path; it is cloned once into a bare cache under ``$PCS_HOME/git`` and files
are read at a commit, branch or tag with ``git show``, so the user's working
copy is never touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pcs import _config
from pcs.errors import ComponentFileNotFoundError, RegistryError, RepoError
from pcs.specs import sha256_bytes

__all__ = ["Repo", "LocalRepo", "GitRepo", "GitState", "git_state"]

log = logging.getLogger(__name__)


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

    The repository is cloned once (bare) into ``$PCS_HOME/git``; files are read
    with ``git show``, so no working copy, the user's included, is ever touched.
    A commit or tag is looked up in the clone and fetched only when missing. A
    branch (or HEAD) moves: it is fetched again when it was last resolved more
    than ``branch_refresh_seconds`` ago, so that one run resolves it to one
    commit while a later run picks up new commits.

    Example::

        repo = GitRepo("models", url="https://example.org/team/models.git")
        Component.from_repo(repo, identifier="model==3f2a9c1", file_path="model.py")
    """

    type = "git"
    branch_refresh_seconds: float = 5.0
    _locks: dict[str, threading.Lock] = {}

    def __init__(self, identifier: str, url: str) -> None:
        super().__init__(identifier)
        if not url or not isinstance(url, str):
            raise RepoError(f"Git repo {identifier!r} needs a URL or path.")
        if _is_relative_local_url(url) or url.startswith("~"):
            url = str(Path(url).expanduser().resolve())
        self.url = url
        self._resolved: dict[tuple[str, str], str] = {}  # (clone, name) -> sha; immutable names
        self._branches: dict[tuple[str, str], tuple[float, str]] = {}  # -> (when, sha)
        self._texts: dict[tuple[str, str, str], str] = {}  # (clone, sha, path) -> text
        self._repo: tuple[str, Any] | None = None

    def to_spec(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "type": self.type, "url": self.url}

    @property
    def cache_path(self) -> Path:
        """The bare clone of this repo under ``$PCS_HOME/git``."""
        return _config.cache_dir("git") / sha256_bytes(self.url.encode())[:24]

    def _clone(self):  # -> tuple[git.Repo, bool]
        """The cached bare clone, and whether this call made it."""
        import git

        path = self.cache_path
        if self._repo is not None and self._repo[0] == str(path) and (path / "HEAD").exists():
            return self._repo[1], False
        lock = self._locks.setdefault(str(path), threading.Lock())
        fresh = False
        with lock:
            if not (path / "HEAD").exists():
                tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
                try:
                    git.Repo.clone_from(self.url, tmp, bare=True)
                    tmp.replace(path)
                    fresh = True
                except git.GitCommandError as exc:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise RepoError(
                        f"Could not clone git repo {self.identifier!r} from {self.url}: "
                        f"{_git_message(exc)}. Check the URL and that it is reachable."
                    ) from None
                except OSError:
                    # another process finished the same clone first
                    shutil.rmtree(tmp, ignore_errors=True)
        repo = git.Repo(path)
        self._repo = (str(path), repo)
        return repo, fresh

    def resolve(self, version: str | None = None) -> str:
        """The full commit sha that ``version`` (commit, branch, tag; None: HEAD) names.

        Raises:
            RepoError: when the repo has no such commit, branch or tag, or cannot
                be cloned.
        """
        key = version or "HEAD"
        repo, fresh = self._clone()
        memo = (str(self.cache_path), key)
        if memo in self._resolved:
            return self._resolved[memo]
        branch = self._branches.get(memo)
        if branch is not None and time.monotonic() - branch[0] < self.branch_refresh_seconds:
            return branch[1]
        immutable = _looks_like_sha(key) or _is_tag(repo, key)
        sha = _rev_parse(repo, key)
        if sha and _looks_like_sha(key) and not sha.startswith(key.lower()):
            sha = None  # a branch or tag whose name looks like a sha: ask the remote
            immutable = False
        if not fresh and (sha is None or not immutable):
            try:
                self._fetch(repo)
            except RepoError as exc:
                if sha is None:
                    raise
                log.warning("pcs: %s Using the cached %s %s.", exc, key, sha[:12])
            else:
                sha = _rev_parse(repo, key)
                immutable = _looks_like_sha(key) or _is_tag(repo, key)
        if sha is None:
            raise RepoError(
                f"Git repo {self.identifier!r} ({self.url}) has no commit, branch or "
                f"tag {key!r}. Check the component's version (name==VERSION), or "
                "push that commit."
            )
        if immutable:
            self._resolved[memo] = sha
        else:
            self._branches[memo] = (time.monotonic(), sha)
        return sha

    def refresh(self) -> None:
        """Forget resolved branches, so the next read fetches them again."""
        self._branches.clear()

    def _fetch(self, repo) -> None:  # repo: git.Repo
        import git

        try:
            repo.git.fetch(
                "--quiet", "--prune", "--force", self.url,
                "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
            )
        except git.GitCommandError as exc:
            raise RepoError(
                f"Could not fetch git repo {self.identifier!r} from {self.url}: "
                f"{_git_message(exc)}. Check the URL and that it is reachable."
            ) from None

    def read_source(self, file_path: str, version: str | None = None) -> str:
        import git

        sha = self.resolve(version)
        repo, _ = self._clone()
        rel = str(PurePosixPath(file_path))
        key = (str(self.cache_path), sha, rel)
        text = self._texts.get(key)
        if text is not None:
            return text
        try:
            text = repo.git.show(f"{sha}:{rel}", strip_newline_in_stdout=False)
        except git.GitCommandError:
            raise ComponentFileNotFoundError(
                f"Git repo {self.identifier!r} ({self.url}) has no file {file_path!r} at "
                f"commit {sha[:12]}. Check the component's file_path and version."
            ) from None
        self._texts[key] = text
        return text

    def is_pushed(self, sha: str) -> bool:
        """Whether the repo at the URL holds commit ``sha``."""
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

    One ``git status`` for dirtiness; a ``git diff`` only when dirty. A file git
    does not track (untracked or ignored) counts as dirty, and its whole text is
    the diff, since no commit holds it.
    """
    if not paths:
        return None
    root = _find_git_root(paths[0].parent)
    if root is None:
        return None
    try:
        import git
    except ImportError:  # no git executable: there is no git state to record
        return None

    try:
        repo = git.Repo(root)
        try:
            commit = repo.head.commit.hexsha
        except ValueError:
            return None  # no commit yet
        rels = tuple(
            os.path.relpath(Path(p).resolve(), root) for p in paths if _inside(Path(p), root)
        )
        if not rels:
            return None
        status = repo.git.status(
            "--porcelain", "-z", "--untracked-files=all", "--ignored", "--", *rels
        )
        entries = [e for e in status.split("\0") if e]
        untracked = tuple(e[3:] for e in entries if e[:2] in ("??", "!!"))
        dirty = bool(entries)
        diff = ""
        if dirty:
            diff = repo.git.diff("HEAD", "--", *rels, strip_newline_in_stdout=False)
            for rel in untracked:
                # exits 1 when the files differ, which they do
                diff += repo.git.diff(
                    "--no-index", "--", os.devnull, rel,
                    with_exceptions=False, strip_newline_in_stdout=False,
                )
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
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError):
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


def _is_tag(repo, name: str) -> bool:  # repo: git.Repo
    """Whether ``name`` is a tag (and not also a branch) in ``repo``."""
    if name == "HEAD" or name.startswith("refs/heads/"):
        return False
    if name.startswith("refs/tags/"):
        return _rev_parse(repo, name) is not None
    return _rev_parse(repo, f"refs/tags/{name}") is not None and (
        _rev_parse(repo, f"refs/heads/{name}") is None
    )


def _rev_parse(repo, name: str) -> str | None:  # repo: git.Repo
    """The commit ``name`` names in ``repo``, or None."""
    import git

    try:
        return repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}") or None
    except git.GitCommandError:
        return None


def _looks_like_sha(text: str) -> bool:
    return 7 <= len(text) <= 40 and all(c in "0123456789abcdef" for c in text.lower())


def _is_relative_local_url(url: str) -> bool:
    return "://" not in url and not url.startswith("/") and ":" not in url.split("/")[0]


def _git_message(exc: Exception) -> str:
    text = str(getattr(exc, "stderr", "") or exc).strip()
    return " ".join(text.split())[:300]
