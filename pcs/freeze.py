"""Freezing: pin local components to git commits so a registry runs anywhere.

A component whose file sits in a git working tree becomes a component of a
``GitRepo`` at the current commit (``name==<sha>``). The repo's URL is the
working tree's remote (without credentials), so others can clone it; when the
commit is not on the remote yet, or there is no remote and the local path is
pinned instead, the result says so in its notes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pcs._features import provides
from pcs.component import Component
from pcs.errors import ComponentError, DirtyRepoError, RepoError
from pcs.record import closure
from pcs.registry import InMemoryRegistry
from pcs.repo import GitRepo, GitState, git_state
from pcs.specs import sha256_bytes

__all__ = ["FreezeResult", "freeze_components", "versioned_component", "frozen_registry"]


@dataclass
class FreezeResult:
    """A frozen registry, and what its user should know before sharing it."""

    registry: InMemoryRegistry
    notes: list[str] = field(default_factory=list)


def freeze_components(component: Component, force: bool = False) -> FreezeResult:
    """``component``'s DAG pinned to git commits, in a registry, with notes for the user.

    A note is given when a commit is not on its remote yet (push it), when a
    working tree has no remote (the local path is pinned, which only this
    machine can read), and when ``force`` froze a commit without uncommitted
    changes.

    Args:
        component: the root of the DAG to freeze.
        force: freeze the last commit of files with uncommitted changes.

    Returns:
        A :class:`FreezeResult` with the registry and the notes, one sentence each.

    Raises:
        DirtyRepoError: a component file (or its requirements file) has uncommitted
            changes, and ``force`` is False; or it was never committed.
        RepoError: a component file is not in a git repository with a commit.
    """
    notes: list[str] = []
    registry = InMemoryRegistry()
    _versioned(component, force, notes).to_registry(registry)
    return FreezeResult(registry, notes)


@provides("versioned_component")
def versioned_component(component: Component, force: bool = False) -> Component:
    """``component`` and its dependencies, each pinned to a git commit (a new DAG).

    Args:
        component: the root of the DAG to pin.
        force: pin the last commit of files with uncommitted changes.

    Returns:
        The pinned root component; it runs here even before its commit is pushed.

    Raises:
        DirtyRepoError: a component file (or its requirements file) has uncommitted
            changes, and ``force`` is False; or it was never committed.
        RepoError: a component file is not in a git repository with a commit.
    """
    return _versioned(component, force, [])


@provides("frozen_registry")
def frozen_registry(component: Component, force: bool = False) -> InMemoryRegistry:
    """A registry holding the pinned DAG of ``component`` and its git repos.

    Args:
        component: the root of the DAG to freeze.
        force: freeze the last commit of files with uncommitted changes.

    Returns:
        The registry; :func:`freeze_components` also gives the notes.
    """
    return freeze_components(component, force=force).registry


def _versioned(component: Component, force: bool, notes: list[str]) -> Component:
    frozen: dict[str, Component] = {}
    repos: dict[str, GitRepo] = {}  # clean url -> repo, one identifier per url

    def freeze(c: Component) -> Component:
        if c.identifier in frozen:
            return frozen[c.identifier]
        pinned = _pin(c, force, repos, notes)
        frozen[c.identifier] = pinned
        for attr, dep in c.dependencies.items():
            pinned.dependencies[attr] = freeze(dep)
        return pinned

    return freeze(component)


def _pin(c: Component, force: bool, repos: dict[str, GitRepo], notes: list[str]) -> Component:
    if isinstance(c.repo, GitRepo):
        commit = c.repo.resolve(c.version)
        if not _is_remote_url(c.repo.url):
            _note(notes, (
                f"Git repo {c.repo.identifier!r} is a local path ({c.repo.url}), which only "
                "this machine can read; give it the URL of a remote to share the registry."
            ))
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
    helpers = _closure_files(c)
    outside = [p for p in helpers if not _under(p, root)]
    if outside:
        raise DirtyRepoError(
            f"Component {c.identifier!r} imports {_listed(outside)}, which lie outside its git "
            f"repository {root}, so no commit of it holds them and the frozen component would "
            "run other code. Move them into the repository (or make them an installed "
            "package) and commit them."
        )
    if helpers:
        state = git_state([local] + helpers + ([req_local] if req_local is not None else []))
        if state is None:  # pragma: no cover - the component's own state was read above
            raise RepoError(f"{local} is no longer in a git repository with a commit.")
    if state.untracked:
        # checked first: force cannot help, the last commit does not hold the file
        raise DirtyRepoError(
            f"{', '.join(state.untracked)} (component {c.identifier!r}) is not committed to "
            f"git in {root}, so no commit holds it. Add and commit it first."
        )
    changed = _changed_files(state, root)
    if state.dirty and not force:
        raise DirtyRepoError(
            f"{', '.join(changed) or local} (component {c.identifier!r}"
            f"{' and the modules it imports' if helpers else ''}) "
            f"{'has' if len(changed) <= 1 else 'have'} uncommitted changes, so the commit "
            f"{state.commit[:12]} does not hold the code you are running. Commit the changes, "
            "or pass force=True (CLI: --force) to freeze the last commit anyway."
        )
    if state.dirty:
        _note(notes, (
            f"{', '.join(changed) or local} {'has' if len(changed) <= 1 else 'have'} "
            f"uncommitted changes; the frozen registry holds commit {state.commit[:12]} "
            "without them."
        ))
    repo = _repo_for(state, repos, notes)
    requirements = (
        _posix_relpath(req_local, root) if req_local is not None else c.requirements_path
    )
    return Component.from_repo(
        repo, f"{c.name}=={state.commit}", _posix_relpath(local, root), c.class_name,
        c.instantiate, requirements,
    )


def _closure_files(c: Component) -> list[Path]:
    """The files of the modules ``c`` imports from its project (its closure), on disk.

    The component is loaded as a run loads it (its module-level code runs, so
    ``sys.path`` entries it adds count) and its imports are scanned, also
    those inside functions; modules imported only by name at run time
    (``importlib.import_module(name)``) are not seen.
    """
    session = closure.session_for([c._part()])
    try:
        with session:
            c._load_target_in(session)
            session.scan([(c.identifier, c.source())])
            return [s.file.resolve() for s in session.closure() if s.file.is_file()]
    finally:
        session.close()


def _changed_files(state: GitState, root: Path) -> list[str]:
    """The files of a dirty git state that differ from its commit, relative to ``root``."""
    out = list(state.untracked)
    for line in state.diff.splitlines():
        if line.startswith("diff --git a/"):
            name = line[len("diff --git a/"):].split(" b/", 1)[0]
            if name not in out:
                out.append(name)
    return out


def _under(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _listed(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _repo_for(state: GitState, repos: dict[str, GitRepo], notes: list[str]) -> GitRepo:
    """The GitRepo a working tree's components are pinned to: its remote, else its path."""
    if state.remote_url:
        url = state.remote_url
        if not state.pushed:
            _note(notes, (
                f"Commit {state.commit[:12]} of {state.root} is not on its remote {url} yet "
                "(as last fetched): push it (git push) before others use the frozen registry."
            ))
    else:
        url = state.root
        _note(notes, (
            f"{state.root} has no git remote, so the frozen registry pins its local path, "
            "which only this machine can read. Add a remote and push "
            "(git remote add origin URL; git push -u origin HEAD) to share it."
        ))
    repo = repos.get(url)
    if repo is None:
        # the remote's URL as configured (credentials and all) reaches it from this
        # process; the working tree gives commits not pushed yet
        reach = _configured_remote_url(state) or url
        fallback = state.root if state.remote_url else None
        repo = GitRepo.for_url(reach, fallback=fallback)
        if any(r.identifier == repo.identifier for r in repos.values()):
            identifier = f"{repo.identifier}_{sha256_bytes(url.encode())[:8]}"
            repo = GitRepo.for_url(reach, identifier, fallback=fallback)
        repos[url] = repo
    return repo


def _configured_remote_url(state: GitState) -> str | None:
    if not state.remote_name:
        return None
    import git

    try:
        return git.Repo(state.root).remote(state.remote_name).url
    except (ValueError, git.GitError):
        return None


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _is_remote_url(url: str) -> bool:
    """Whether ``url`` names a repo another machine can reach (not a local path)."""
    if url.startswith("file://"):
        return False
    if "://" in url:
        return True
    first = url.split("/", 1)[0]
    return ":" in first and len(first.split(":", 1)[0]) > 1  # scp-like host:path, not C:


def _posix_relpath(path: Path, root: Path) -> str:
    return str(PurePosixPath(*os.path.relpath(path, root).split(os.sep)))
