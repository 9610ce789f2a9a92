"""The caches under ``$PCS_HOME``: see them, mark them in use, clean them safely.

Each cache is a folder of entries, one direct child folder each:

==============  ===================================================
``git``         bare clones of git repos
``venvs``       rebuilt environments of recorded runs
``web_registry`` artifacts pulled from registry servers (one per server)
``sources``     materialised source snapshots
``exports``     artifacts downloaded while exporting runs
==============  ===================================================

A process that uses an entry holds it with :func:`in_use` for as long as it
uses it: a shared ``flock`` on ``<entry>.lock`` next to the entry, whose mtime
is touched when taken and released, so an entry's ``last_used`` says when it
was last used. :func:`clean` takes each lock exclusively without waiting,
skips entries that are busy, and removes the others by renaming them to
``.<name>.deleting-<pid>-<random>`` before deleting, so a half-deleted entry
never looks valid. It also sweeps what dead pcs processes left behind: such
renamed folders, and temp files named ``pcs-<pid>-…`` or ``.<name>.pcs-<pid>-…``.

Example::

    with in_use(cache_dir("venvs") / fingerprint) as venv:
        if not venv.exists():
            build_into(venv)
        run_in(venv)

    clean(older_than=parse_duration("30d"))
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pcs import _config
from pcs._liveness import pid_alive
from pcs.errors import ArgumentError, CacheInUseError
from pcs.progress import tree_bytes

__all__ = [
    "CACHE_KINDS",
    "CacheEntry",
    "CacheSummary",
    "CleanResult",
    "list_caches",
    "clean",
    "remove",
    "in_use",
    "holding",
    "sweep_leftovers",
    "parse_duration",
]

CACHE_KINDS = ("git", "venvs", "web_registry", "sources", "exports")

_LOCK_SUFFIX = ".lock"
# '.<name>.deleting-<pid>-<random>': an entry being removed by process <pid>
_DELETING = re.compile(r"^\..+\.deleting-(\d+)(?:-[0-9a-f]+)?$")
# 'pcs-<pid>-<purpose>-<random>' or '.<name>.pcs-<pid>-<purpose>-<random>': a temp of process <pid>
_TEMP = re.compile(r"^(?:\..+\.)?pcs-(\d+)-.+$")
# a leftover must be at least this old (seconds) before it is swept, so a pid that
# a new process has just been given is not mistaken for the dead one in the name
_LEFTOVER_GRACE = 2.0


@dataclass(frozen=True)
class CacheEntry:
    """One cache entry: a folder under ``$PCS_HOME/<kind>``."""

    kind: str
    name: str
    path: Path
    size_bytes: int
    last_used: datetime
    in_use: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, times in ISO 8601)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "last_used": self.last_used.isoformat(),
            "in_use": self.in_use,
        }


@dataclass(frozen=True)
class CacheSummary:
    """One cache: its folder, its entries, and their size."""

    kind: str
    path: Path
    entries: list[CacheEntry]
    size_bytes: int
    other_bytes: int = 0  # temp files, leftovers and stray files beside the entries

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "other_bytes": self.other_bytes,
            "entries": [entry.to_dict() for entry in self.entries],
        }


@dataclass(frozen=True)
class CleanResult:
    """What :func:`clean` removed (or, in a dry run, would remove) and what it left."""

    removed: list[CacheEntry] = field(default_factory=list)
    skipped_in_use: list[CacheEntry] = field(default_factory=list)
    freed_bytes: int = 0
    leftovers: list[Path] = field(default_factory=list)  # swept remains of dead processes
    failed: list[CacheEntry] = field(default_factory=list)  # could not be deleted (permissions)
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "dry_run": self.dry_run,
            "freed_bytes": self.freed_bytes,
            "removed": [entry.to_dict() for entry in self.removed],
            "skipped_in_use": [entry.to_dict() for entry in self.skipped_in_use],
            "failed": [entry.to_dict() for entry in self.failed],
            "leftovers": [str(path) for path in self.leftovers],
        }


# -- durations -------------------------------------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Read a duration such as ``"30s"``, ``"30m"``, ``"2h"``, ``"1d"`` or ``"1w"``.

    Args:
        text: a non-negative number followed by one unit: s, m, h, d or w.

    Returns:
        The duration.

    Raises:
        ArgumentError: when ``text`` is not of that form.
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ArgumentError(
            f"Cannot read {text!r} as a duration. Write a number and one unit: s (seconds), "
            "m (minutes), h (hours), d (days) or w (weeks), e.g. '30m', '2h', '7d' or '1w'."
        )
    try:
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2).lower()])
    except OverflowError:
        raise ArgumentError(
            f"The duration {text!r} is too long to count. Pass a shorter one, e.g. '52w'."
        ) from None


# -- the in-use lock ---------------------------------------------------------------------


def _entry_of(path: Path) -> Path:
    """The cache entry that ``path`` lies in: a path inside an entry maps to the entry."""
    home = _config.pcs_home()
    try:
        relative = path.relative_to(home)
    except ValueError:
        try:
            relative = path.resolve().relative_to(home.resolve())
            home = home.resolve()
        except (ValueError, OSError):
            return path
    parts = relative.parts
    if len(parts) > 2 and parts[0] in CACHE_KINDS:
        return home / parts[0] / parts[1]
    return path


def _lock_path(entry: Path) -> Path:
    return entry.with_name(entry.name + _LOCK_SUFFIX)


def _open_locked(lock_file: Path, operation: int) -> tuple[int, bool] | None:
    """An fd holding ``operation`` on ``lock_file``, and whether this call created the file.

    None when the lock is busy (only with ``LOCK_NB``). Retries when the file was
    unlinked or replaced between open and lock, so a lock held on a deleted
    file never counts.
    """
    while True:
        created = True
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            created = False
            try:
                fd = os.open(lock_file, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed between the two opens
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, created
        os.close(fd)  # a cleaner removed it meanwhile: lock the new one


def _touch(fd: int) -> None:
    try:
        os.utime(fd)
    except OSError:  # pragma: no cover - a read-only cache still works, only undated
        pass


@contextmanager
def in_use(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Hold a cache entry in use, so :func:`clean` leaves it alone, until the block ends.

    Takes a shared lock on ``<entry>.lock`` next to the entry (waiting while a
    cleaner is removing it) and touches it when taken and released. Take it
    before checking whether the entry exists, then build or read it inside.
    Several processes (and threads) may hold the same entry at once.

    Args:
        path: the entry folder, e.g. ``cache_dir("venvs") / fingerprint``; a path
            deeper inside an entry of a ``$PCS_HOME`` cache holds that entry.

    Returns:
        A context manager yielding the entry's path.
    """
    with holding(path) as (entry, _fd):
        yield entry


@contextmanager
def holding(path: str | os.PathLike[str]) -> Iterator[tuple[Path, int]]:
    """Like :func:`in_use`, also yielding the lock's file descriptor.

    A subprocess that inherits the descriptor (``pass_fds``) keeps the entry in
    use while it runs, even if this process dies first.
    """
    entry = _entry_of(Path(path))
    entry.parent.mkdir(parents=True, exist_ok=True)
    locked = _open_locked(_lock_path(entry), fcntl.LOCK_SH)
    if locked is None:  # pragma: no cover - a blocking lock never reports busy
        raise CacheInUseError(f"Could not lock the cache entry {entry}. Try again.")
    fd = locked[0]
    _touch(fd)
    try:
        yield entry, fd
    finally:
        _touch(fd)
        os.close(fd)


def _busy(entry: Path) -> bool:
    """Whether a process holds ``entry`` in use right now (never creates the lock file)."""
    try:
        fd = os.open(_lock_path(entry), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's lock
    return False


# -- listing -------------------------------------------------------------------------------


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _last_used(entry: Path) -> float:
    times = [t for t in (_mtime(entry), _mtime(_lock_path(entry))) if t is not None]
    return max(times) if times else 0.0


def _when(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp).astimezone()


def _entry_paths(root: Path) -> tuple[list[Path], list[Path]]:
    """The entry folders in ``root``, and everything else (leftovers, locks, strays)."""
    entries: list[Path] = []
    others: list[Path] = []
    try:
        children = sorted(root.iterdir())
    except OSError:  # missing, or not a folder
        return [], []
    for child in children:
        try:
            is_entry = not child.name.startswith(".") and child.is_dir() and not child.is_symlink()
        except OSError:
            continue
        (entries if is_entry else others).append(child)
    return entries, others


def _check_kinds(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(CACHE_KINDS)
    chosen = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [kind for kind in chosen if kind not in CACHE_KINDS]
    if unknown:
        raise ArgumentError(
            f"Unknown cache {', '.join(map(repr, unknown))}. The caches are: "
            f"{', '.join(CACHE_KINDS)}."
        )
    return chosen


def list_caches(kinds: Iterable[str] | None = None) -> list[CacheSummary]:
    """Every cache under ``$PCS_HOME`` with its entries and their sizes.

    Missing cache folders are listed empty; nothing is created or touched.

    Args:
        kinds: the caches to list (default: all of :data:`CACHE_KINDS`).

    Returns:
        One summary per cache, in the order of :data:`CACHE_KINDS`.

    Raises:
        ArgumentError: for an unknown cache name.
    """
    home = _config.pcs_home()
    summaries = []
    for kind in _check_kinds(kinds):
        root = home / kind
        entry_paths, others = _entry_paths(root)
        entries = [
            CacheEntry(
                kind=kind,
                name=path.name,
                path=path,
                size_bytes=tree_bytes(path),
                last_used=_when(_last_used(path)),
                in_use=_busy(path),
            )
            for path in entry_paths
        ]
        summaries.append(
            CacheSummary(
                kind=kind,
                path=root,
                entries=entries,
                size_bytes=sum(entry.size_bytes for entry in entries),
                other_bytes=sum(tree_bytes(path) for path in others),
            )
        )
    return summaries


# -- cleaning ------------------------------------------------------------------------------


def _delete(path: Path) -> bool:
    """Delete a file or folder (never following links); whether it is gone."""
    if path.is_symlink() or not path.is_dir():
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)


def _sweep(folder: Path, dry_run: bool, deleting: bool = True) -> list[tuple[Path, int]]:
    """Leftovers of dead processes in ``folder`` (deleted unless ``dry_run``), with their sizes."""
    swept: list[tuple[Path, int]] = []
    try:
        children = list(folder.iterdir())
    except OSError:
        return swept
    now = time.time()
    for child in children:
        match = _DELETING.match(child.name) if deleting else None
        if match is not None and int(match.group(1)) == os.getpid():
            dead = True  # a removal of ours that failed earlier
        elif match is not None:
            dead = not pid_alive(int(match.group(1)))
        else:
            match = _TEMP.match(child.name)
            if match is None:
                continue
            dead = not pid_alive(int(match.group(1)))
        try:
            old_enough = now - child.lstat().st_mtime >= _LEFTOVER_GRACE
        except OSError:
            continue
        if not (dead and old_enough):
            continue
        size = tree_bytes(child)
        if dry_run or _delete(child):
            swept.append((child, size))
    return swept


def sweep_leftovers(folder: str | os.PathLike[str], dry_run: bool = False) -> list[Path]:
    """Delete what dead pcs processes left in ``folder``; the paths swept.

    Swept (not recursively): ``.<name>.deleting-<pid>-…`` folders (an
    interrupted removal) and temp files or folders ``pcs-<pid>-…`` /
    ``.<name>.pcs-<pid>-…`` whose process is gone. Anything else is left alone.

    Args:
        folder: the folder to look in.
        dry_run: only list what would be swept.

    Returns:
        The paths swept (or that would be).
    """
    return [path for path, _ in _sweep(Path(folder), dry_run)]


def _remove_entry(
    kind: str, entry: Path, older_than: timedelta | None, dry_run: bool
) -> tuple[str, CacheEntry | None]:
    """Remove one entry under its exclusive lock.

    Returns:
        ("removed" | "busy" | "failed", the entry), or ("kept", None) when it
        is too recent or already gone.
    """
    now = time.time()
    limit = None if older_than is None else older_than.total_seconds()
    last = _last_used(entry)
    if limit is not None and now - last < limit:
        return "kept", None
    lock_file = _lock_path(entry)
    locked = _open_locked(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if locked is None:
        return "busy", CacheEntry(kind, entry.name, entry, tree_bytes(entry), _when(last), True)
    fd, created = locked
    doomed: Path | None = None
    try:
        if created:  # a new lock file must not make the entry look freshly used
            os.utime(fd, (last, last))
        last = _last_used(entry)  # it may have been used since we looked
        if (limit is not None and now - last < limit) or not entry.is_dir() or entry.is_symlink():
            if created:
                lock_file.unlink(missing_ok=True)
            return "kept", None
        described = CacheEntry(kind, entry.name, entry, tree_bytes(entry), _when(last), False)
        if dry_run:
            if created:
                lock_file.unlink(missing_ok=True)
            return "removed", described
        doomed = entry.with_name(f".{entry.name}.deleting-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            entry.rename(doomed)
        except OSError:  # e.g. a read-only cache folder: leave the entry whole
            return "failed", described
        # whoever opened the lock file before this unlink finds it replaced and relocks
        lock_file.unlink(missing_ok=True)
    finally:
        os.close(fd)
    # left as .deleting-<pid> when it fails: the next clean sweeps it
    return ("removed" if _delete(doomed) else "failed"), described


def _sweep_orphan_locks(root: Path) -> None:
    """Remove lock files whose entry is gone and that nobody holds."""
    try:
        children = list(root.iterdir())
    except OSError:
        return
    for child in children:
        if not child.name.endswith(_LOCK_SUFFIX) or child.name.startswith("."):
            continue
        entry = child.with_name(child.name[: -len(_LOCK_SUFFIX)])
        if os.path.lexists(entry) or not child.is_file():
            continue
        locked = _open_locked(child, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if locked is None:
            continue  # held, e.g. while its entry is being built
        try:
            if not os.path.lexists(entry):
                child.unlink(missing_ok=True)
        finally:
            os.close(locked[0])


def clean(
    older_than: timedelta | None = None,
    kinds: Iterable[str] | None = None,
    dry_run: bool = False,
) -> CleanResult:
    """Empty the caches under ``$PCS_HOME``, leaving alone the entries in use.

    An entry that a process holds with :func:`in_use` is skipped and reported
    in ``skipped_in_use``. Removal renames the entry away first, so a process
    that takes it afterwards finds it missing and rebuilds it. Leftovers of
    dead processes are swept from each cache folder and, when every cache is
    cleaned, ``pcs-<pid>-…`` temp files from the system temp folder.

    Args:
        older_than: only remove entries not used for at least this long.
        kinds: the caches to clean (default: all of :data:`CACHE_KINDS`).
        dry_run: remove nothing; report what would be removed.

    Returns:
        What was removed, what was skipped, and the bytes freed.

    Raises:
        ArgumentError: for an unknown cache name or a negative ``older_than``.
    """
    chosen = _check_kinds(kinds)
    if older_than is not None and older_than < timedelta(0):
        raise ArgumentError(
            f"older_than must not be negative (got {older_than}). Pass a duration such as "
            "parse_duration('7d')."
        )
    home = _config.pcs_home()
    removed: list[CacheEntry] = []
    busy: list[CacheEntry] = []
    failed: list[CacheEntry] = []
    swept: list[tuple[Path, int]] = []
    for kind in chosen:
        root = home / kind
        for entry in _entry_paths(root)[0]:
            status, described = _remove_entry(kind, entry, older_than, dry_run)
            if described is not None:
                {"removed": removed, "busy": busy, "failed": failed}[status].append(described)
        swept += _sweep(root, dry_run)
        if not dry_run:
            _sweep_orphan_locks(root)
    if kinds is None:
        swept += _sweep(Path(tempfile.gettempdir()), dry_run, deleting=False)
    return CleanResult(
        removed=removed,
        skipped_in_use=busy,
        freed_bytes=sum(entry.size_bytes for entry in removed) + sum(size for _, size in swept),
        leftovers=[path for path, _ in swept],
        failed=failed,
        dry_run=dry_run,
    )


def remove(path: str | os.PathLike[str]) -> bool:
    """Remove one cache entry now, unless a process uses it.

    Args:
        path: the entry folder (e.g. ``cache_dir("web_registry") / key``).

    Returns:
        Whether an entry was there and removed.

    Raises:
        CacheInUseError: when another process (or an ``in_use`` block of this
            one) holds the entry.
    """
    entry = _entry_of(Path(path))
    if not entry.is_dir() or entry.is_symlink():
        return False
    status, _ = _remove_entry("", entry, None, False)
    if status == "busy":
        raise CacheInUseError(
            f"Cannot remove the cache entry {entry}: a running pcs process uses it. Wait "
            "until it ends, or run `pcs cache clean`, which skips entries in use."
        )
    return status == "removed"
