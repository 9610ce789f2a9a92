"""Freezing: pin local components to git commits so a registry runs anywhere.

A component whose file sits in a git working tree becomes a component of a
``GitRepo`` at the current commit (``name==<sha>``); its repo URL is the
remote's when the commit is pushed, else the local repository's path.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pcs._features import provides
from pcs.component import Component
from pcs.errors import ComponentError, DirtyRepoError, RepoError
from pcs.registry import InMemoryRegistry
from pcs.repo import GitRepo, git_state
from pcs.specs import sha256_bytes

__all__ = ["versioned_component", "frozen_registry"]


@provides("versioned_component")
def versioned_component(component: Component, force: bool = False) -> Component:
    """``component`` and its dependencies, each pinned to a git commit (a new DAG).

    Raises:
        DirtyRepoError: a component file (or its requirements file) has uncommitted
            changes, and ``force`` is False; or it was never committed.
        RepoError: a component file is not in a git repository with a commit.
    """
    frozen: dict[str, Component] = {}
    repos: dict[str, GitRepo] = {}  # url -> repo, one identifier per url

    def freeze(c: Component) -> Component:
        if c.identifier in frozen:
            return frozen[c.identifier]
        pinned = _pin(c, force, repos)
        frozen[c.identifier] = pinned
        for attr, dep in c.dependencies.items():
            pinned.dependencies[attr] = freeze(dep)
        return pinned

    return freeze(component)


@provides("frozen_registry")
def frozen_registry(component: Component, force: bool = False) -> InMemoryRegistry:
    """A registry holding the pinned DAG of ``component`` and its git repos."""
    registry = InMemoryRegistry()
    versioned_component(component, force=force).to_registry(registry)
    return registry


def _pin(c: Component, force: bool, repos: dict[str, GitRepo]) -> Component:
    if isinstance(c.repo, GitRepo):
        commit = c.repo.resolve(c.version)
        return Component.from_repo(
            c.repo, f"{c.name}=={commit}", c.file_path or "", c.class_name, c.instantiate,
            c.requirements_path,
        )
    local = c.local_source_file()
    if local is None:
        raise ComponentError(
            f"Component {c.identifier!r} has no file on disk (it was captured from __main__), "
            "so it cannot be pinned to a commit. Move the class into a module file in a git "
            "repository and load it with Component.from_repo."
        )
    req_local = (
        c.repo.local_file(c.requirements_path)
        if c.requirements_path and c.repo is not None
        else None
    )
    state = git_state([local] + ([req_local] if req_local is not None else []))
    if state is None:
        raise RepoError(
            f"{local} (component {c.identifier!r}) is not in a git repository with a commit, "
            "so it cannot be frozen. Commit it to a git repository first."
        )
    root = Path(state.root)
    if state.untracked:
        # checked first: force cannot help, the last commit does not hold the file
        raise DirtyRepoError(
            f"{', '.join(state.untracked)} (component {c.identifier!r}) is not committed to "
            f"git in {root}, so no commit holds it. Add and commit it first."
        )
    if state.dirty and not force:
        raise DirtyRepoError(
            f"{local} (component {c.identifier!r}) has uncommitted changes, so the commit "
            f"{state.commit[:12]} does not hold the code you are running. Commit the changes, "
            "or pass force=True (CLI: --force) to freeze the last commit anyway."
        )
    url = state.remote_url if (state.remote_url and state.pushed) else state.root
    repo = repos.get(url)
    if repo is None:
        identifier = _repo_identifier(url)
        if any(r.identifier == identifier for r in repos.values()):
            identifier = f"{identifier}_{sha256_bytes(url.encode())[:8]}"
        repo = repos[url] = GitRepo(identifier, url=url)
    requirements = (
        _posix_relpath(req_local, root) if req_local is not None else c.requirements_path
    )
    return Component.from_repo(
        repo, f"{c.name}=={state.commit}", _posix_relpath(local, root), c.class_name,
        c.instantiate, requirements,
    )


def _posix_relpath(path: Path, root: Path) -> str:
    return str(PurePosixPath(*os.path.relpath(path, root).split(os.sep)))


def _repo_identifier(url: str) -> str:
    tail = url.rstrip("/").split("/")[-1].removesuffix(".git") or "repo"
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tail)
    return f"{safe}_git"


class FreezeResult:
    """A frozen registry, and notes on what others may not be able to fetch."""

    def __init__(self, registry: InMemoryRegistry, notes: list[str]) -> None:
        self.registry = registry
        self.notes = notes


def freeze_components(component: Component, force: bool = False) -> FreezeResult:
    """The frozen registry of ``component``'s DAG, with notes (interim: no notes yet)."""
    return FreezeResult(frozen_registry(component, force=force), [])
