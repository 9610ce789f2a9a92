"""Data reads: the files a run opens for reading under its project folders, by content.

A component that reads a data file next to its code (``Path(__file__).parent
/ "config.json"``, ``sqlite3.connect("data.db")``, ``np.load("x.npy")``, a
``subprocess`` running ``cat``) depends on a file its source snapshot does
not hold. :class:`FileReads` finds such reads while the entry point runs, and
:func:`describe` turns them into the record: sha256 and size of each file
(never its bytes, unless it is small enough to snapshot).

Two watchers, used together:

- on Linux, inotify on every folder of the project tree (through ``ctypes``,
  no dependency): the kernel reports ``IN_OPEN`` / ``IN_ACCESS`` /
  ``IN_CLOSE_NOWRITE`` for every process, so C readers (SQLite, NumPy,
  pandas' Arrow) and child processes count. Files the run creates, writes or
  moves into place (``IN_CREATE``, ``IN_MODIFY``, ``IN_MOVED_TO``) are its
  outputs and are left out, as is any file modified since the run began;
- everywhere, Python's audit hook, which sees every ``open`` made from Python
  in this process (``open()``, ``os.open``, ``pathlib``), also in folders the
  inotify watch did not reach.

Elsewhere than Linux only the audit hook runs: reads by C code with its own
``fopen`` and by subprocesses are not seen there.

The same watch keeps what the run wrote (:meth:`FileReads.written`): files
created or changed under the project folders (inotify, every process), and
files Python opened for writing there or in the run's working folder (the
audit hook). Verification lists those the run did not log as "written, not
recorded", so a result saved to ``outputs/predictions.csv`` and never logged
is not silently left out of a verdict.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_SNAPSHOT_LIMIT",
    "SNAPSHOT_LIMIT_ENV",
    "DataFile",
    "FileReads",
    "MAX_WRITTEN_LISTED",
    "by_root",
    "data_for_rerun",
    "describe",
    "file_sha256",
    "saw_files",
    "snapshot_limit",
]

# files up to this size are snapshotted with the code (override: $PCS_DATA_SNAPSHOT_MAX_BYTES)
DEFAULT_SNAPSHOT_LIMIT = 1024 * 1024
SNAPSHOT_LIMIT_ENV = "PCS_DATA_SNAPSHOT_MAX_BYTES"
# folders never watched nor recorded: stores, caches, virtual environments, version control
_NOT_INPUTS = {
    "mlruns", "mlartifacts", ".git", ".hg", ".svn", "__pycache__", ".pcs_home", ".venv", "venv",
    "node_modules", ".tox", ".nox", ".mypy_cache", ".pytest_cache", ".ruff_cache",
    "site-packages", "dist-packages",
}
# files never recorded: code (the snapshot holds it) and MLflow's default SQLite store
_CODE_SUFFIXES = (".py", ".pyc", ".pyd", ".so")
_STORE_NAMES = {"mlflow.db", "mlflow.db-journal", "mlflow.db-wal", "mlflow.db-shm"}
# inotify watches are a per-user kernel resource: a huge tree is watched in part
MAX_WATCHED_FOLDERS = 4000
# Hydra's copy of a job's config (the params and the config snapshot hold it): not listed
_HYDRA_RECORD = ".hydra"
#: files written and kept in the record, at most (a run writing a million files keeps the count)
MAX_WRITTEN_LISTED = 1000

log = logging.getLogger(__name__)

_WATCHES: list[FileReads] = []
_WATCH_LOCK = threading.Lock()
_HOOK_INSTALLED = False


def snapshot_limit() -> int:
    """The largest data file snapshotted with the code, in bytes (0: none)."""
    raw = os.environ.get(SNAPSHOT_LIMIT_ENV, "")
    try:
        return max(0, int(raw)) if raw.strip() else DEFAULT_SNAPSHOT_LIMIT
    except ValueError:
        from pcs.errors import ArgumentError

        raise ArgumentError(
            f"{SNAPSHOT_LIMIT_ENV}={raw!r} is not a number of bytes; set it to an integer "
            f"(default {DEFAULT_SNAPSHOT_LIMIT}, 0 to snapshot no data file)."
        ) from None


class FileReads:
    """The files opened for reading under some folders while a block runs.

    Args:
        roots: the project folders (component repo roots); each is watched
            with inotify where the platform has it, and by the audit hook.

    After the block, :meth:`files` lists what was read, relative to its root.
    """

    def __init__(self, roots: Sequence[Path | str]) -> None:
        self.roots = list(dict.fromkeys(os.path.join(os.path.realpath(r), "") for r in roots))
        self._paths: set[str] = set()  # absolute, as seen
        self._written: set[str] = set()
        self._opened_to_write: set[str] = set()  # by Python, under the roots or the working folder
        self.workdir = os.path.join(os.path.realpath(os.getcwd()), "")
        self._started = time.time()
        self._inotify: _Inotify | None = None
        self.method = "audit hook"
        self.partial = False  # some folders could not be watched at the OS level
        self.overflowed = False  # the kernel dropped events

    def __enter__(self) -> FileReads:
        if not self.roots:
            return self
        self._started = time.time()
        self.workdir = os.path.join(os.path.realpath(os.getcwd()), "")
        _install_hook()
        with _WATCH_LOCK:
            _WATCHES.append(self)
        if sys.platform.startswith("linux"):
            self._inotify = _Inotify.start(self.roots)
            if self._inotify is not None:
                self.method = "inotify + audit hook"
                self.partial = self._inotify.partial
        return self

    def __exit__(self, *exc: object) -> None:
        with _WATCH_LOCK:
            if self in _WATCHES:
                _WATCHES.remove(self)
        if self._inotify is not None:
            read, written, self.overflowed = self._inotify.stop()
            self._paths |= read
            self._written |= written
            self._inotify = None

    def _saw(self, path: str) -> None:
        if any(path.startswith(root) for root in self.roots):
            self._paths.add(path)

    def _saw_write(self, path: str) -> None:
        if path.startswith(self.workdir) or any(path.startswith(root) for root in self.roots):
            self._opened_to_write.add(path)

    def written(self) -> dict[str, int]:
        """The files the run wrote that are still there at its end: path -> size in bytes.

        A path is relative to the working folder when it is inside it (posix),
        else absolute. Stores, caches, code files, MLflow's ``mlflow.db``,
        pcs's own folder and Hydra's ``.hydra`` config copies are left out; at most :data:`MAX_WRITTEN_LISTED` are
        listed (sorted), so ``len()`` of the result is not a count beyond it.
        """
        home = _home()
        out: dict[str, int] = {}
        for path in sorted(self._written | self._opened_to_write):
            if len(out) >= MAX_WRITTEN_LISTED:
                break
            if _left_out(path) or path.startswith(home) or _HYDRA_RECORD in path.split(os.sep):
                continue
            try:
                if not os.path.isfile(path):
                    continue  # a temporary file, gone again
                size = os.path.getsize(path)
            except OSError:
                continue
            if path.startswith(self.workdir):
                name = path[len(self.workdir):].replace(os.sep, "/")
            else:
                name = path
            out[name] = size
        return out

    def located(self) -> list[tuple[str, str]]:
        """``(root, path relative to it)`` of each file read, sorted; see :meth:`files`."""
        found: set[tuple[str, str]] = set()
        home = _home()
        for path in self._paths - self._written:
            if _left_out(path):
                continue
            if path.startswith(home) and not any(r.startswith(home) for r in self.roots if path.startswith(r)):
                continue  # pcs's own caches inside a project folder
            try:
                if os.path.getmtime(path) >= self._started or not os.path.isfile(path):
                    continue  # written during the run: its own output, not an input
            except OSError:
                continue  # not there (any more)
            for root in self.roots:
                if path.startswith(root):
                    found.add((root.rstrip(os.sep) or os.sep, path[len(root):].replace(os.sep, "/")))
                    break
        return sorted(found)

    def files(self) -> list[str]:
        """The files read, relative to their root (sorted, posix).

        Only files that existed before the block began and were not written
        during it count: a file the run wrote and read back is its own output.
        Code files, store folders (``mlruns``, ``.git``, virtual environments)
        and MLflow's ``mlflow.db`` are left out.
        """
        return sorted({rel for _, rel in self.located()})


def saw_files(folders: Iterable[Path | str]) -> None:
    """Tell the active watches that every file under ``folders`` was read.

    For inputs read in part that a rerun may need whole: Hydra composes only
    the config files a run selects, but a derived run may select others, so
    its config folder is recorded (and kept, up to the snapshot limit) whole.
    Left-out folders and code files are skipped as for any read.
    """
    with _WATCH_LOCK:
        watches = list(_WATCHES)
    if not watches:
        return
    for folder in folders:
        for parent, subfolders, names in os.walk(os.path.realpath(folder)):
            subfolders[:] = [d for d in subfolders if d not in _NOT_INPUTS]
            for name in names:
                path = os.path.join(parent, name)
                if not _left_out(path):
                    for watch in watches:
                        watch._saw(path)


def _home() -> str:
    """PCS_HOME, spelled as the roots are (real path, trailing separator)."""
    from pcs import _config

    return os.path.join(os.path.realpath(_config.pcs_home()), "")


def _left_out(path: str) -> bool:
    if path.endswith(_CODE_SUFFIXES) or os.path.basename(path) in _STORE_NAMES:
        return True
    parts = set(path.split(os.sep))
    return bool(parts & _NOT_INPUTS)


# -- the record of what was read ----------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One data file a run read: where, its sha256 and size, and whether its bytes were kept."""

    root: str  # the folder it was found under
    path: str  # posix, relative to root
    sha256: str
    size: int
    snapshot: bool

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "snapshot": self.snapshot}


def describe(located: Iterable[tuple[str, str]], limit: int | None = None) -> list[DataFile]:
    """Hash every file read; mark the ones small enough to snapshot.

    Args:
        located: ``(root, relative path)`` pairs from :meth:`FileReads.located`.
        limit: the largest file snapshotted (default: :func:`snapshot_limit`).
    """
    limit = snapshot_limit() if limit is None else limit
    out = []
    for root, rel in located:
        path = os.path.join(root, *rel.split("/"))
        try:
            digest, size = file_sha256(path)
        except OSError:
            continue  # gone since: nothing to record
        out.append(DataFile(root, rel, digest, size, limit > 0 and size <= limit))
    return out


def file_sha256(path: str | Path) -> tuple[str, int]:
    """sha256 (hex) and size of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def by_root(files: Sequence[DataFile], roots: Mapping[str, str]) -> dict[str, dict[str, dict[str, Any]]]:
    """The record's ``data`` map: per component key, per relative path, its entry.

    Args:
        files: from :func:`describe`.
        roots: root folder (as :class:`FileReads` spells it, no trailing separator) -> component key.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for f in files:
        out.setdefault(roots.get(f.root, f.root), {})[f.path] = f.to_dict()
    return out


# -- the audit hook --------------------------------------------------------------------------


def _install_hook() -> None:
    global _HOOK_INSTALLED
    with _WATCH_LOCK:
        if not _HOOK_INSTALLED:
            sys.addaudithook(_audit)
            _HOOK_INSTALLED = True


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or not _WATCHES:
        return
    try:  # an exception here would fail the user's open(): never raise
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(path, int) or path is None:
            return  # a file descriptor
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
        text = os.path.realpath(os.fsdecode(path))
        if text.endswith(_CODE_SUFFIXES) or "__pycache__" in text:
            return
        for watch in list(_WATCHES):
            if writes:
                watch._saw_write(text)  # an output; opened read-write, not an input either
            else:
                watch._saw(text)
    except Exception:  # noqa: BLE001, S110 - see above
        pass


# -- inotify ---------------------------------------------------------------------------------

_IN_ACCESS = 0x00000001
_IN_MODIFY = 0x00000002
_IN_CLOSE_WRITE = 0x00000008
_IN_CLOSE_NOWRITE = 0x00000010
_IN_OPEN = 0x00000020
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_IN_ISDIR = 0x40000000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
# IN_CLOSE_WRITE means "opened for writing", not "written": SQLite opens its file read-write
# to read it. What was written shows as IN_MODIFY (or a new file, IN_CREATE / IN_MOVED_TO).
_READ_EVENTS = _IN_OPEN | _IN_ACCESS | _IN_CLOSE_NOWRITE | _IN_CLOSE_WRITE
_WRITE_EVENTS = _IN_MOVED_TO | _IN_CREATE | _IN_MODIFY
_MASK = _READ_EVENTS | _WRITE_EVENTS | _IN_ONLYDIR
_HEADER = struct.Struct("iIII")
_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return _LIBC


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


class _Inotify:
    """One inotify instance over a project tree, drained by a thread while the run runs."""

    def __init__(self, fd: int, folders: dict[int, str], partial: bool) -> None:
        self.fd = fd
        self.folders = folders  # watch descriptor -> folder (with a trailing separator)
        self.partial = partial
        self.read: set[str] = set()
        self.written: set[str] = set()
        self.overflowed = False
        self._stop_r, self._stop_w = os.pipe()
        self._done = threading.Event()  # the thread has drained the last events
        self._fds_lock = threading.Lock()  # a closed descriptor's number may be reused at once
        self._events_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._drain_loop, name="pcs-inotify", daemon=True)

    @classmethod
    def start(cls, roots: Sequence[str]) -> _Inotify | None:
        """Watch every folder under ``roots`` (not the left-out ones); None when inotify is missing."""
        try:
            libc = _libc()
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        folders: dict[int, str] = {}
        partial = False
        home = _home()
        for root in roots:
            skip_home = not root.startswith(home)
            for folder, subfolders, _ in os.walk(root):
                subfolders[:] = [
                    d for d in subfolders
                    if d not in _NOT_INPUTS and not d.endswith(".egg-info")
                    and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))
                    and not (skip_home and os.path.join(folder, d, "") == home)
                ]
                if len(folders) >= MAX_WATCHED_FOLDERS:
                    partial = True
                    subfolders[:] = []
                    continue
                wd = libc.inotify_add_watch(fd, os.fsencode(folder), _MASK)
                if wd < 0:
                    if _errno() == errno.ENOSPC:  # the user's watch limit
                        partial = True
                    continue
                folders[wd] = os.path.join(folder, "")
        if not folders:
            os.close(fd)
            return None
        watcher = cls(fd, folders, partial)
        watcher._thread.start()
        return watcher

    def _drain_loop(self) -> None:
        try:
            poller = select.poll()  # not select(): it refuses descriptors above 1023
            poller.register(self.fd, select.POLLIN)
            poller.register(self._stop_r, select.POLLIN)
            while True:
                try:
                    ready = {fd for fd, _ in poller.poll()}
                except InterruptedError:
                    continue
                self._drain()
                if self._stop_r in ready:
                    return  # stop() has been told: the events up to it are drained
        except (OSError, ValueError) as exc:
            log.debug("pcs: the inotify watch stopped early: %s", exc)
            with self._events_lock:
                self.overflowed = True  # events after this were not seen: say so
        finally:
            self._done.set()
            # Closing an inotify descriptor waits for the kernel to retire its watches (an
            # RCU grace period, 1-10 ms and more on a busy machine): done here, off the run's path.
            with self._fds_lock:
                self._closed = True
                for fd in (self.fd, self._stop_r, self._stop_w):
                    try:
                        os.close(fd)
                    except OSError:
                        pass

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            self._parse(data)

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            name = data[offset + _HEADER.size: offset + _HEADER.size + length].rstrip(b"\0")
            offset += _HEADER.size + length
            if mask & _IN_Q_OVERFLOW:
                self.overflowed = True
                continue
            if mask & (_IN_ISDIR | _IN_IGNORED) or not name:
                continue
            folder = self.folders.get(wd)
            if folder is None:
                continue
            path = folder + os.fsdecode(name)
            with self._events_lock:  # stop() may copy the sets meanwhile (after a timeout)
                if mask & _WRITE_EVENTS:
                    self.written.add(path)
                elif mask & _READ_EVENTS:
                    self.read.add(path)

    def stop(self) -> tuple[set[str], set[str], bool]:
        """Stop watching; (files read, files written, whether events were lost).

        Returns once the thread has drained every event queued before the call;
        the thread then closes the descriptors on its own time.
        """
        with self._fds_lock:
            if not self._closed:  # else the thread ended already, after a failed select
                os.write(self._stop_w, b"x")
        drained = self._done.wait(timeout=10)
        with self._events_lock:
            if not drained:
                self.overflowed = True  # could not drain in time: say events may be missing
            return set(self.read), set(self.written), self.overflowed


# -- a rerun's data ---------------------------------------------------------------------------


def data_for_rerun(
    run_id: str, inputs: Mapping[str, Any] | None, code_record: Mapping[str, Any],
    snapshots: Mapping[str, bytes], code: str,
) -> dict[str, dict[str, bytes | Path]]:
    """The data files a rerun places next to each component's recorded code, checked first.

    With ``code="recorded"`` a file kept in the record (``pcs/data/``) is
    placed as those bytes; a file too large to keep is linked to where the run
    read it. With ``code="current"`` the code reads the files where they are,
    so they are only checked. Either way a file that is needed and cannot be
    found refuses the rerun before it starts.

    Args:
        run_id: the run being rerun (for messages).
        inputs: its ``pcs/inputs.yaml`` (None: recorded before pcs kept one).
        code_record: its ``pcs/code.yaml`` (where each component's folder was).
        snapshots: the bytes kept of small files, by sha256.
        code: ``"recorded"``, ``"current"`` or ``"git"``.

    Returns:
        Per component key, posix path -> bytes or the live file to link.

    Raises:
        NotReproducibleError: a file the run read is neither kept nor where it was.
    """
    from pcs.errors import NotReproducibleError

    out: dict[str, dict[str, bytes | Path]] = {}
    if not inputs or code == "git":
        return out  # a commit's files are the commit's business
    components = code_record.get("components") or {}
    for key, files in (inputs.get("data") or {}).items():
        if not isinstance(files, dict):
            continue
        local_dir = (components.get(key) or {}).get("local_dir")
        placed: dict[str, bytes | Path] = {}
        for rel, entry in files.items():
            if not isinstance(entry, dict):
                continue
            kept = snapshots.get(str(entry.get("sha256")))
            if code == "recorded" and kept is not None:
                placed[str(rel)] = kept
                continue
            live = Path(local_dir).joinpath(*str(rel).split("/")) if local_dir else None
            if live is None:
                continue  # nowhere known to look: the run itself will say what it misses
            if not live.is_file():
                raise NotReproducibleError(
                    f"Run {run_id} read the data file {rel} ({entry.get('size')} bytes, sha256 "
                    f"{str(entry.get('sha256'))[:12]}), which its record does not keep and which "
                    f"is no longer at {live}; put the file back there to rerun it."
                )
            if code == "recorded":
                placed[str(rel)] = live
        if placed:
            out[str(key)] = placed
    return out
