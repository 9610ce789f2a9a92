"""The code part of a record: the source snapshot, and where the code was in git.

- ``pcs/code/<path>``: the text of every component and of every module of its
  closure, as run, under the file's own path in its repo (``pcs/code/agent.py``,
  ``pcs/code/pkg/helpers.py``), so MLflow's UI shows the code as the project
  lays it out; each file once (:func:`write_sources`, :func:`code_file_paths`).
  Runs recorded before kept it as ``pcs/source/<sha256>.py``, as sweeps still
  do; :func:`read_sources_dir` reads either, by sha256;
- ``pcs/code.yaml``: per component and closure module, its snapshot's sha256,
  where it was on disk and its git state (commit, branch, remote, whether it
  had uncommitted edits), with ``pcs/git_diff/<name>.diff`` for a dirty tree
  (:func:`capture_code`, :func:`describe_closure`);
- ``pcs/requirements/<name>.txt``: a component's declared requirements file
  (:func:`capture_requirements`).

Each function takes the code map of a run command (see :mod:`pcs.run_command`)
and the components as :class:`~pcs.record.closure.Part` descriptions.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pcs import _keys
from pcs.record.closure import Part, module_entries
from pcs.record.workers import process_folder
from pcs.repo import GitRepo, GitState, LocalRepo, git_state
from pcs.specs import sha256_bytes

__all__ = [
    "capture_code",
    "capture_requirements",
    "code_file_paths",
    "describe_closure",
    "link_anew",
    "place_text",
    "read_sources_dir",
    "source_artifact_name",
    "stored_text",
    "write_sources",
]

Code = Mapping[str, dict[str, str]]  # a run command's code map


def source_artifact_name(digest: str) -> str:
    """The name of a snapshot text's file in ``pcs/source``."""
    return f"{digest}.py"


def read_sources_dir(folder: Path) -> dict[str, str]:
    """Snapshot texts by sha256 from a downloaded ``pcs/code`` (or older ``pcs/source``) folder."""
    out: dict[str, str] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        if path.parent == folder and path.suffix == ".py" and _SHA256.fullmatch(path.stem):
            out[path.stem] = path.read_text(encoding="utf-8")  # pcs/source/<sha256>.py
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            continue  # not a snapshot pcs wrote
        out.setdefault(sha256_bytes(text.encode("utf-8")), text)
    return out


def code_file_paths(code: Code) -> dict[str, str]:
    """Where each file of a code map lies under ``pcs/code``, by code-map key.

    A file keeps its path in its repo (``agent.py``, ``pkg/helpers.py``). When
    the components come from several repos, each path starts with its repo's
    name, so two ``agent.py`` stay apart; two texts left at one path (which the
    paths of one repo cannot make) tell themselves apart by their sha256.
    Only safe path parts are kept: no ``..``, no absolute paths.
    """
    located: dict[str, tuple[str, str]] = {}
    for key, entry in code.items():
        if not entry.get("sha256"):
            continue
        repo, sep, path = str(entry.get("file") or "").partition(":")
        if not sep:
            repo, path = "", repo
        if entry.get("path"):
            path = str(entry["path"])
        located[key] = ("" if repo.startswith("<") else repo, path)
    several = len({repo for repo, _ in located.values()}) > 1
    out: dict[str, str] = {}
    held: dict[str, str] = {}  # path -> sha256 of the text there
    for key in sorted(located):
        repo, path = located[key]
        digest = str(code[key]["sha256"])
        parts = [_safe_part(p) for p in PurePosixPath(path.replace("\\", "/")).parts
                 if p not in ("/", ".", "..")]
        parts = [p for p in parts if p]
        if several and repo:
            parts.insert(0, _safe_part(repo) or "repo")
        name = "/".join(parts) or source_artifact_name(digest)
        if held.get(name, digest) != digest:
            stem, dot, suffix = name.rpartition(".")
            name = f"{stem}.{digest[:12]}.{suffix}" if dot and stem else f"{name}.{digest[:12]}"
        held[name] = digest
        out[key] = name
    return out


_SHA256 = re.compile(r"[0-9a-f]{64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+@=-]+")


def _safe_part(part: str) -> str:
    """A path part an artifact store keeps as it is (``<__main__>`` is ``__main__``)."""
    return _UNSAFE.sub("_", part.strip("<>"))


def write_sources(parts: Sequence[Part], code: Code, sources: Mapping[str, str], folder: Path) -> None:
    """Every snapshot text the code map names, under its own path in ``folder`` (``pcs/code``).

    Each file is a hard link to the process's copy of that text (:func:`stored_text`),
    written once per process: a run of unchanged code creates no file here, and its
    upload to a local artifact store links them again (``Run._log_staged``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    made = {folder}
    by_key = {p.key: p for p in parts}
    for key, name in code_file_paths(code).items():
        digest = code[key]["sha256"]
        text = sources.get(digest)
        if text is None and key in by_key:
            text = by_key[key].source()
        if text is None:
            continue
        target = folder / name
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        # bytes as they were: no newline translation, so the file's sha256 is the recorded one
        place_text(target, text)


_STORED: dict[str, Path] = {}  # sha256 -> the process's file of that text
_STORED_PID = 0
_STORE_LOCK = threading.Lock()


def stored_text(data: bytes) -> Path:
    """The file holding ``data`` in this process's store of snapshot texts, written the first time.

    The store lies in the process's own temp folder (removed when it ends). Its
    files are named by the sha256 of their bytes and never written again, so
    links to them (staged snapshots, a local artifact store's copies) can share them.
    """
    global _STORED_PID
    if _STORED_PID != os.getpid():  # a forked child writes to a folder of its own
        _STORED.clear()
        _STORED_PID = os.getpid()
    digest = sha256_bytes(data)
    with _STORE_LOCK:
        path = _STORED.get(digest)
        if path is None:
            store = process_folder() / "code"
            store.mkdir(exist_ok=True)
            path = store / digest
            try:
                with open(path, "xb") as handle:  # no rename: it costs as much again on a busy disk
                    handle.write(data)
            except FileExistsError:  # not written by this store: put the whole text in its place
                tmp = store / f".{digest}.tmp"
                tmp.write_bytes(data)
                tmp.replace(path)
            except BaseException:
                path.unlink(missing_ok=True)  # never a half text under its name
                raise
            _STORED[digest] = path
    return path


def place_text(path: Path, text: str) -> None:
    """Stage ``text`` at ``path`` as a link to the process's copy of it (see :func:`stored_text`).

    For the record's files that repeat from run to run of one process (the
    environment, the code map, the modules used, the inputs): creating a file
    costs a millisecond on a busy disk, a link almost nothing. The bytes are
    the UTF-8 text, as ``write_text`` writes it on POSIX.
    """
    data = text.encode("utf-8")
    try:
        source = stored_text(data)
    except OSError:  # no room for the store: write the file itself
        source = None
    if source is None or not link_anew(source, path):
        path.unlink(missing_ok=True)  # a file there may be a link to a text other runs share
        path.write_bytes(data)


def link_anew(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Hard-link ``source`` as ``path``, replacing a file there; False where links are not possible.

    A file already at ``path`` is unlinked, never written into: it may be a link to a
    text that other runs' records share (staged snapshots, a local store's copies).
    """
    for _ in range(2):
        try:
            os.link(source, path)  # a staging folder is new: the name is free but for a rewrite
            return True
        except FileExistsError:
            os.unlink(path)
        except OSError:  # another file system, or one without hard links
            return False
    return False


def capture_code(
    parts: Sequence[Part], code: Code, recorded_code: Mapping[str, Any] | None, pcs_dir: Path
) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Per component: source label, sha256, where it was on disk and its git state.

    A rerun of recorded code takes the git state of git-pinned components from
    the recorded ``code.yaml`` (``recorded_code``), so it reaches no git remote.

    Args:
        parts: the components, root first.
        code: the command's code map.
        recorded_code: the ``code.yaml`` of the run a rerun of recorded code reproduces.
        pcs_dir: the staged ``pcs/`` folder (diffs go next to it).

    Returns:
        The ``code.yaml`` data, the git tags of the root component, and the
        reasons the git state lowers the grade.
    """
    record: dict[str, Any] = {"components": {}}
    tags: dict[str, str] = {}
    problems: list[str] = []
    states: dict[str, GitState] = {}
    root = parts[0].key
    recorded = (recorded_code or {}).get("components") or {}
    for part in parts:
        entry: dict[str, Any] = dict(code[part.key])
        if isinstance(part.repo, GitRepo):
            old = (recorded.get(part.key) or {}).get("git") or {}
            if part.snapshot is not None and old.get("commit"):
                commit = str(old["commit"])  # the snapshot of this commit runs: no remote asked
            else:
                commit = part.repo.resolve(part.version)
            entry["git"] = {"url": part.repo.url, "commit": commit, "version": part.version}
            if not _is_remote_url(part.repo.url):
                problems.append(f"{part.key} is pinned to a git repo at a local path ({part.repo.url})")
            if part.key == root:
                tags[_keys.SOURCE_GIT_COMMIT] = commit
                tags[_keys.SOURCE_GIT_REPO_URL] = part.repo.url
        else:
            local, live_root = part.local_file, part.live_root
            if local is not None and live_root is not None:
                entry["local_dir"] = (
                    str(part.repo.local_dir) if isinstance(part.repo, LocalRepo) else str(live_root)
                )
                entry["local_path"] = str(local)
            closure_files = [
                live_root / PurePosixPath(e["path"]) for e in module_entries(code, part.key).values()
            ] if live_root is not None else []
            state = git_state([local] + closure_files) if local is not None else None
            if state is not None:
                states[part.key] = state
                entry["git"] = state.to_dict()
                if state.dirty:
                    diff_dir = pcs_dir.parent / _keys.DIFF_ARTIFACT_DIR
                    diff_dir.mkdir(exist_ok=True)
                    name = f"{part.name}.diff"
                    (diff_dir / name).write_text(state.diff or "", encoding="utf-8")
                    entry["git"]["diff_artifact"] = f"{_keys.DIFF_ARTIFACT_DIR}/{name}"
                if part.key == root:
                    tags[_keys.SOURCE_GIT_COMMIT] = state.commit
                    tags[_keys.CODE_DIRTY] = str(state.dirty).lower()
                    if state.branch:
                        tags[_keys.SOURCE_GIT_BRANCH] = state.branch
                    if state.remote_url:
                        tags[_keys.SOURCE_GIT_REPO_URL] = state.remote_url
        record["components"][part.key] = entry
    describe_closure(parts, code, record, states)
    return record, tags, problems


def describe_closure(
    parts: Sequence[Part], code: Code, record: dict[str, Any],
    states: Mapping[str, GitState] | None = None,
) -> None:
    """Add every closure module to ``record["components"]``: where it was, and its git state.

    Args:
        parts: the components whose closures are described.
        code: the command's code map.
        record: the ``code.yaml`` data; entries already in it are kept.
        states: the git state of each component's files, when just captured
            (tells which closure files have uncommitted edits).
    """
    entries = record.setdefault("components", {})
    for part in parts:
        owner = entries.get(part.key) or {}
        git = owner.get("git") or {}
        state = (states or {}).get(part.key)
        live_root = part.live_root
        for key, module in module_entries(code, part.key).items():
            if key in entries:
                continue
            entry: dict[str, Any] = dict(module)
            local = live_root / PurePosixPath(module["path"]) if live_root is not None else None
            if local is not None:
                entry["local_path"] = str(local)
            if git:
                entry["git"] = {k: git[k] for k in ("url", "commit", "version", "branch", "remote_url")
                                if k in git}
                if "dirty" in git:
                    entry["git"]["dirty"] = _file_dirty(state, local) if state else bool(git["dirty"])
            entries[key] = entry


def _file_dirty(state: GitState, local: Path | None) -> bool:
    """Whether one file of a captured git state has uncommitted edits (or is not committed)."""
    if not state.dirty or local is None:
        return state.dirty
    rel = os.path.relpath(local.resolve(), state.root).replace(os.sep, "/")
    return rel in state.untracked or f"diff --git a/{rel} b/{rel}" in state.diff


def capture_requirements(parts: Sequence[Part], pcs_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Stage each component's requirements file; its path and sha256, and the unpinned ones."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for part in parts:
        text = part.requirements()
        if text is None:
            continue
        req_dir = pcs_dir.parent / _keys.REQUIREMENTS_DIR
        req_dir.mkdir(exist_ok=True)
        (req_dir / f"{part.name}.txt").write_text(text, encoding="utf-8")
        digest = sha256_bytes(text.encode())
        out[part.key] = {"path": part.requirements_path, "sha256": digest}
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        unpinned = [ln for ln in lines if "==" not in ln and not ln.startswith("-")]
        if unpinned:
            problems.append(
                f"{part.requirements_path} of {part.key} does not pin "
                f"{', '.join(unpinned[:5])} to exact versions"
            )
    return out, problems


def _is_remote_url(url: str) -> bool:
    return url.startswith(("http://", "https://", "ssh://", "git://")) or (
        "@" in url and ":" in url and not url.startswith("file://")
    )
