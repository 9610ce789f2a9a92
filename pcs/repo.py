"""Repos: where a component's source lives.

``LocalRepo`` is a folder. ``GitRepo`` is a git repository given by URL or
path; it is cloned once into a bare cache under ``$PCS_HOME/git`` and files
are read at a commit, branch or tag with ``git show``, so the user's working
copy is never touched.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pcs import _config
from pcs._redact import redact_text, redact_url
from pcs.errors import ComponentFileNotFoundError, RegistryError, RepoError
from pcs.registry import InMemoryRegistry, Registry
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

    # -- AgentOS's names ----------------------------------------------------------------

    def to_registry(
        self, registry: Registry | None = None, recurse: bool = True, force: bool = False
    ) -> Registry:
        """Add this repo's spec to a registry (a new in-memory one by default).

        Args:
            registry: where to add it.
            recurse: kept for AgentOS's signature; a repo has nothing below it.
            force: replace a different spec already under the identifier instead
                of raising ``RegistryConflictError``.

        Returns:
            The registry.
        """
        registry = registry if registry is not None else InMemoryRegistry()
        registry.add_repo_spec(self.to_spec(), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> Repo:
        """The repo stored in ``registry`` under ``identifier``.

        Relative local paths resolve against the registry's folder.
        """
        spec = registry.get_repo_spec(identifier)
        return Repo.from_spec(spec, base_dir=registry.base_dir)

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

    @property
    def local_repo_path(self) -> Path:
        """The folder (AgentOS's name for ``local_dir``)."""
        return self.local_dir

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
    A commit or tag is looked up in the clone and fetched only when missing; a
    commit that no branch or tag holds (a pull request's head) is fetched by
    its full sha. A branch (or HEAD) moves: it is fetched again when it was
    last resolved more than ``branch_refresh_seconds`` ago, so that one run
    resolves it to one commit while a later run picks up new commits.

    A URL with credentials (``https://user:token@host/repo.git``) reaches the
    repo from this process, but only its clean form is kept in ``url``, the
    spec, the cache key and every message; elsewhere the clean URL works when
    a git credential helper supplies the secret.

    Example::

        repo = GitRepo("models", url="https://example.org/team/models.git")
        Component.from_repo(repo, identifier="model==3f2a9c1", file_path="model.py")
    """

    type = "git"
    branch_refresh_seconds: float = 5.0
    _locks: dict[str, threading.Lock] = {}

    def __init__(
        self, identifier: str, url: str, *, fallback: str | os.PathLike | None = None
    ) -> None:
        """A repo at ``url``; ``fallback`` is a local repository to read commits the URL lacks.

        Args:
            identifier: the repo's name in registries.
            url: a git URL or a path (relative paths resolve against the cwd).
            fallback: a local git repository (e.g. the working copy a component
                was frozen from) whose commits are used when the URL does not hold
                them yet; kept in memory only, never in the spec.
        """
        super().__init__(identifier)
        if not url or not isinstance(url, str):
            raise RepoError(f"Git repo {identifier!r} needs a URL or path.")
        if url.startswith("-"):
            # it would reach git as an option (--upload-pack=...), from a registry file
            raise RepoError(
                f"Git repo {identifier!r} has the URL {redact_url(url)!r}, which starts with "
                "'-'; a git URL or path cannot. Fix the repo's 'url'."
            )
        if _is_relative_local_url(url) or url.startswith("~"):
            url = str(Path(url).expanduser().resolve())
        self.url = redact_url(url)
        # the URL as given, credentials included: reaches the repo from this process only
        self._fetch_url = url
        self._fallback = str(Path(fallback).expanduser().resolve()) if fallback else None
        self._resolved: dict[tuple[str, str], str] = {}  # (clone, name) -> sha; immutable names
        self._branches: dict[tuple[str, str], tuple[float, str]] = {}  # -> (when, sha)
        self._texts: dict[tuple[str, str, str], str] = {}  # (clone, sha, path) -> text
        self._repo: tuple[str, Any] | None = None

    @classmethod
    def for_url(
        cls, url: str, identifier: str | None = None, *,
        fallback: str | os.PathLike | None = None,
    ) -> GitRepo:
        """A repo reached by its URL alone, named after the URL's last path part.

        Args:
            url: a git URL or path, e.g. the remote recorded in a run's git state.
            identifier: the repo's name; default ``<last part>_git``.
            fallback: as for :class:`GitRepo`.

        Returns:
            The repo; nothing is cloned until it is read.
        """
        return cls(identifier or _identifier_for(url), url=url, fallback=fallback)

    def to_spec(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "type": self.type, "url": self.url}

    def __repr__(self) -> str:
        return f"GitRepo({self.identifier!r}, url={self.url!r})"

    @property
    def cache_path(self) -> Path:
        """The bare clone of this repo under ``$PCS_HOME/git``."""
        return _config.cache_dir("git") / sha256_bytes(self.url.encode())[:24]

    def _clone(self):  # -> tuple[git.Repo, bool]
        """The cached bare clone, and whether this call made it.

        The clone is made with ``git init`` and ``git fetch`` rather than
        ``git clone``, which would write the URL, credentials included, into
        the clone's config.
        """
        import git

        path = self.cache_path
        if self._repo is not None and self._repo[0] == str(path) and (path / "HEAD").exists():
            return self._repo[1], False
        lock = self._locks.setdefault(str(path), threading.Lock())
        fresh = False
        with lock:
            if not (path / "HEAD").exists():
                tmp = Path(tempfile.mkdtemp(
                    dir=path.parent, prefix=f".{path.name}.pcs-{os.getpid()}-clone-"
                ))
                try:
                    # no template: the sample hooks are of no use in a cache
                    git.Git().execute(["git", "init", "--quiet", "--bare", "--template=", str(tmp)])
                    made = git.Repo(tmp)
                    head = self._remote_head(made)
                    self._fetch(made, action="clone")
                    if head is not None:
                        made.git.symbolic_ref("HEAD", head)
                    made.close()
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                try:
                    tmp.replace(path)
                    fresh = True
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    if not (path / "HEAD").exists():
                        raise
                    # else another process finished the same clone first
        repo = git.Repo(path)
        self._repo = (str(path), repo)
        return repo, fresh

    def _git(self, repo, *args: str, action: str) -> str:  # repo: git.Repo
        """Run ``git <args>`` in the clone; a failure is a RepoError with git's redacted words."""
        import git

        try:
            return repo.git.execute(["git", *args], env=_git_env())
        except git.CommandError as exc:  # GitCommandNotFound too: no secret in a traceback
            raise RepoError(
                f"Could not {action} git repo {self.identifier!r} from {self.url}: "
                f"{_git_message(exc)}. {_reach_advice(exc)}"
            ) from None

    def _remote_head(self, repo) -> str | None:  # repo: git.Repo
        """The branch the remote's HEAD names (``refs/heads/main``), or None when it has none."""
        out = self._git(repo, "ls-remote", "--symref", "--", self._fetch_url, "HEAD", action="clone")
        for line in out.splitlines():
            if line.startswith("ref: ") and line.endswith("\tHEAD"):
                return line[len("ref: "):-len("\tHEAD")]
        return None

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
        sha, immutable = _lookup(repo, key)
        if not fresh and (sha is None or not immutable):
            try:
                self._fetch(repo)
            except RepoError as exc:
                if sha is None:
                    raise
                log.warning("pcs: %s Using the cached %s %s.", exc, key, sha[:12])
            else:
                sha, immutable = _lookup(repo, key)
        refusal = ""
        if sha is None and _is_full_sha(key):
            # no branch or tag holds it (a pull request's head): ask for the commit itself
            refusal = self._fetch_commit(repo, key.lower())
            sha, immutable = _lookup(repo, key)
        if sha is None and self._fallback is not None and _looks_like_sha(key):
            self._fetch_fallback(repo)
            sha, immutable = _lookup(repo, key)
            if sha is not None:
                self._git(repo, "update-ref", f"refs/pcs/local/{sha}", sha, action="read")
        if sha is None:
            raise RepoError(
                f"Git repo {self.identifier!r} ({self.url}) has no commit, branch or "
                f"tag {key!r}{_missing_detail(key, refusal)}. Check the component's "
                "version (name==VERSION), or push that commit."
            )
        if immutable:
            self._resolved[memo] = sha
        else:
            self._branches[memo] = (time.monotonic(), sha)
        return sha

    def refresh(self) -> None:
        """Forget resolved branches, so the next read fetches them again."""
        self._branches.clear()

    def _fetch(self, repo, action: str = "fetch") -> None:  # repo: git.Repo
        self._git(
            repo, "fetch", "--quiet", "--prune", "--force", "--", self._fetch_url,
            "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
            action=action,
        )

    def _fetch_commit(self, repo, sha: str) -> str:  # repo: git.Repo
        """Fetch one commit by its full sha; '' on success, else git's (redacted) reason."""
        import git

        try:
            repo.git.execute(
                ["git", "fetch", "--quiet", "--no-tags", "--", self._fetch_url,
                 f"+{sha}:refs/pcs/pinned/{sha}"],
                env=_git_env(),
            )
        except git.CommandError as exc:
            return _git_message(exc) or "git fetch failed"
        return ""

    def _fetch_fallback(self, repo) -> None:  # repo: git.Repo
        """Fetch the fallback repository's branches and HEAD under ``refs/pcs/local/``."""
        try:
            self._git(
                repo, "fetch", "--quiet", "--no-tags", "--force", "--", str(self._fallback),
                "+HEAD:refs/pcs/local/HEAD", "+refs/heads/*:refs/pcs/local/heads/*",
                action="fetch",
            )
        except RepoError as exc:
            log.warning("pcs: %s", exc)

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

    def export_files(
        self, commit: str, paths: Iterable[str] | None, dest: str | os.PathLike
    ) -> Path:
        """Write the files of ``commit`` into the new folder ``dest``, from the cached clone.

        No working copy is touched: the files come out of the bare clone under
        ``$PCS_HOME/git`` (fetched when it lacks the commit). ``dest`` appears
        complete or not at all. Executable bits and symbolic links are kept;
        submodules are left out.

        Args:
            commit: a commit sha (or any branch or tag name).
            paths: files or folders of the commit to write; None writes all its files.
            dest: a folder that does not exist yet (or is empty).

        Returns:
            ``dest``.

        Raises:
            RepoError: the repo cannot be reached or lacks the commit, a path is
                not relative, or ``dest`` holds files.
            ComponentFileNotFoundError: the commit has no such path.
        """
        sha = self.resolve(commit)
        repo, _ = self._clone()
        target = Path(dest)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise RepoError(
                f"Cannot export commit {sha[:12]} of git repo {self.identifier!r} into "
                f"{target}: it exists and is not an empty folder. Choose a new folder."
            )
        tree = repo.commit(sha).tree
        if isinstance(paths, str):
            paths = [paths]  # one path, not its characters
        if paths is None:
            roots = [tree]
        else:
            roots, missing = [], []
            for raw in paths:
                rel = _checked_rel(raw, f"git repo {self.identifier!r}")
                try:
                    roots.append(tree / rel)
                except KeyError:
                    missing.append(rel)
            if missing:
                raise ComponentFileNotFoundError(
                    f"Git repo {self.identifier!r} ({self.url}) has no "
                    f"{', '.join(repr(m) for m in missing)} at commit {sha[:12]}. Check the "
                    "recorded file paths."
                )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(
            dir=target.parent, prefix=f".{target.name}.pcs-{os.getpid()}-export-"
        ))
        try:
            written: set[str] = set()
            for root in roots:
                if root.type == "blob":
                    blobs = [root]
                elif root.type == "tree":
                    blobs = root.traverse()
                else:
                    blobs = []  # a submodule: its commits live in another repo
                for item in blobs:
                    if item.type == "blob" and item.path not in written:
                        _write_blob(item, tmp, f"git repo {self.identifier!r}")
                        written.add(item.path)
            if target.exists():
                target.rmdir()
            tmp.replace(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def is_pushed(self, sha: str) -> bool:
        """Whether the repo at the URL itself holds commit ``sha`` (not only the fallback).

        Args:
            sha: a commit sha, full or short.

        Returns:
            True when a branch or tag of the URL holds it, or the URL gives it
            when asked by its full sha; False when it cannot tell or the URL is
            unreachable.
        """
        try:
            repo, fresh = self._clone()
            if not fresh:
                self._fetch(repo)
        except RepoError:
            return False
        full = _rev_parse(repo, sha)
        if full is not None:
            held = repo.git.for_each_ref(
                "--count=1", "--contains", full, "refs/heads", "refs/tags", "refs/pcs/pinned"
            )
            if held.strip():
                return True
        if full is None and not _is_full_sha(sha):
            return False
        if full is not None and _rev_parse(repo, f"refs/pcs/local/{full}") is not None:
            return False  # only the fallback gave it; a fetch by sha would not ask the URL
        return self._fetch_commit(repo, full or sha.lower()) == ""


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
    remote_name: str | None = None  # which remote remote_url is (not recorded)

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


def _absolute_if_local(url: str, root: Path) -> str:
    """A remote given as a relative path (``../remote.git``) as the absolute path git resolves it to.

    git reads such a remote relative to the working tree's root; recorded as it
    is, it would later be read relative to wherever pcs runs.
    """
    if "://" in url or os.path.isabs(url) or re.match(r"^[^/]+:", url):
        return url  # a URL, an absolute path, or scp-like host:path
    return os.path.normpath(os.path.join(root, url))


def git_state(paths: list[Path]) -> GitState | None:
    """The git state of files in one working tree, or None when not in git.

    One ``git status`` for dirtiness; a ``git diff`` only when dirty. A file git
    does not track (untracked or ignored) counts as dirty, and its whole text is
    the diff, since no commit holds it. The remote is the current branch's
    upstream remote, else ``origin``, else the first; its URL is recorded
    without credentials, and ``pushed`` says whether a branch of that remote (as
    last fetched) holds the commit.
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
        remote = _main_remote(repo)
        if remote is not None:
            try:
                remote_url = _absolute_if_local(redact_url(remote.url), root)
            except Exception:  # noqa: BLE001 - a broken remote config is just "unknown"
                remote_url = None
            pushed = bool(
                repo.git.branch("-r", "--contains", commit, "--list", f"{remote.name}/*").strip()
            )
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
            remote_name=remote.name if remote is not None else None,
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


def _is_full_sha(text: str) -> bool:
    return len(text) == 40 and _looks_like_sha(text)


def _lookup(repo, key: str) -> tuple[str | None, bool]:  # repo: git.Repo
    """The commit ``key`` names in the clone, and whether that name can never move."""
    immutable = _looks_like_sha(key) or _is_tag(repo, key)
    sha = _rev_parse(repo, key)
    if sha and _looks_like_sha(key) and not sha.startswith(key.lower()):
        return None, False  # a branch or tag whose name looks like a sha: ask the remote
    return sha, immutable


def _missing_detail(key: str, refusal: str) -> str:
    """Why a sha was not found, for the end of a 'has no commit' message."""
    if refusal:
        return f" (fetching it by its sha failed too: {refusal})"
    if _looks_like_sha(key) and not _is_full_sha(key):
        return (
            " (a commit that no branch or tag holds, such as a pull request's head, can "
            "only be fetched by its full 40-character sha)"
        )
    return ""


def _main_remote(repo):  # repo: git.Repo -> git.Remote | None
    """The current branch's upstream remote, else ``origin``, else the first remote."""
    remotes = list(repo.remotes)
    if not remotes:
        return None
    try:
        upstream = repo.active_branch.tracking_branch()
    except (TypeError, ValueError):  # detached HEAD, or a broken upstream
        upstream = None
    names = [upstream.remote_name] if upstream is not None else []
    names.append("origin")
    for name in names:
        for remote in remotes:
            if remote.name == name:
                return remote
    return remotes[0]


def _identifier_for(url: str) -> str:
    """A repo identifier from a URL's last path part: ``.../models.git`` -> ``models_git``."""
    clean = redact_url(url).split("?", 1)[0].split("#", 1)[0]
    tail = clean.rstrip("/").replace("\\", "/").split("/")[-1].split(":")[-1]
    tail = tail.removesuffix(".git") or "repo"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tail)
    return f"{safe}_git"


def _checked_rel(raw: str, where: str) -> str:
    """``raw`` as a relative POSIX path inside a repo, or a RepoError."""
    rel = PurePosixPath(str(raw).replace("\\", "/"))
    if rel.is_absolute() or not rel.parts or any(part in ("", "..") for part in rel.parts):
        raise RepoError(
            f"Path {raw!r} in {where} is not a relative path inside the repo; give paths "
            "like 'pkg/module.py'."
        )
    return str(rel)


def _write_blob(blob, root: Path, where: str) -> None:  # blob: git.Blob
    """Write one git blob under ``root``: a file (with its executable bit) or a symlink."""
    rel = _checked_rel(blob.path, where)
    target = root.joinpath(*PurePosixPath(rel).parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if blob.mode == _SYMLINK_MODE:
        os.symlink(os.fsdecode(blob.data_stream.read()), target)
        return
    mode = 0o777 if blob.mode & 0o111 else 0o666  # the umask trims it, as git does
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        blob.stream_data(out)


_SYMLINK_MODE = 0o120000


def _git_env() -> dict[str, str]:
    """Environment for git commands: never wait for a password typed at a terminal."""
    return {"GIT_TERMINAL_PROMPT": os.environ.get("GIT_TERMINAL_PROMPT", "0")}


_AUTH_WORDS = (
    "authentication failed", "could not read username", "could not read password",
    "terminal prompts disabled", "permission denied", "401", "403",
)


def _reach_advice(exc: Exception) -> str:
    """What to do about a failed clone or fetch."""
    text = str(getattr(exc, "stderr", "") or exc).lower()
    if any(word in text for word in _AUTH_WORDS):
        return (
            "The repo needs credentials: set up a git credential helper (git config "
            "credential.helper) or an ssh key for it; pcs records URLs without secrets, "
            "so a helper must supply them."
        )
    return "Check the URL and that it is reachable."


def _git_message(exc: Exception) -> str:
    """git's own words from a failed command: one line, without credentials or progress."""
    text = str(getattr(exc, "stderr", "") or exc).strip()
    if text.startswith("stderr:"):  # GitPython's wrapping: stderr: '...'
        text = text[len("stderr:"):].strip().removeprefix("'").removesuffix("'")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Cloning into")]
    unique = dict.fromkeys(
        ln.removeprefix("fatal: ").removeprefix("error: ").rstrip(".") for ln in lines
    )
    return redact_text(" ".join("; ".join(unique).split()))[:300]
