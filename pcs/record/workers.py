"""Worker processes import the run's own code: the manifest a session hands its children.

A component run's modules are served from the texts pcs read and hashed
(:mod:`pcs.record.closure`); a worker process started by the run
(multiprocessing spawn or forkserver, joblib/loky, concurrent.futures, a
``subprocess`` running Python) is a fresh interpreter that would import the
live files, or fail to import ``_pcs_components.*`` at all. While a session is
active, a :class:`Manifest` lists every module it serves (name, file, and the
exact text) in a folder of the process's own, and the environment of the
process names it: ``PCS_CLOSURE_MANIFEST``, and ``PYTHONPATH`` led by
``pcs/record/_boot``, whose ``sitecustomize`` installs a finder serving those
modules in every Python child before its own code runs. Forked children
inherit the parent's finder and need none of it.

The folder holds two files, both written through descriptors the process
keeps open, never renamed, so that a module pinned costs one ``write`` and
not a file of its own (a file created or renamed costs a millisecond on a
busy disk, and a session pins a module per helper it imports):

- ``texts``: every module text served, appended once per process and
  addressed by (offset, length); it only grows, so what a child read stays
  valid.
- ``manifest``: a journal. A fixed-size header holds a generation; JSON lines
  follow, one per module (``{"m": name, "file", "at": [offset, length],
  "package", "parent"}``) or namespace package (``{"ns": name, "folders"}``),
  a later line for a name winning over an earlier one. A module pinned while
  the session is active appends its line, so a child started before that
  (a pool's worker, a forkserver kept from an earlier run) finds it at its
  next import. When the innermost session changes, the journal is truncated
  and written again whole under a new generation. A child reads only whole
  lines, and checks the header before and after reading, so it never mixes
  lines of two generations.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pcs import _signals
from pcs.specs import sha256_bytes

__all__ = ["BOOT_DIR", "HEADER_SIZE", "MANIFEST_VARIABLE", "Manifest", "process_folder"]

#: the folder whose sitecustomize.py a child process runs at start-up
BOOT_DIR = str(Path(__file__).resolve().parent / "_boot")
#: the environment variable naming the manifest of the active session
MANIFEST_VARIABLE = "PCS_CLOSURE_MANIFEST"
#: the size of the journal's header, ``pcs-manifest <16 hex digits of the generation>\n``
HEADER_SIZE = 30

_ENV_LOCK = threading.RLock()
_ACTIVE: list[Manifest] = []  # the manifests of the sessions active now, innermost last


@dataclass
class _Files:
    """The manifest folder of one process and its open files.

    One per process: a forkserver, or a worker reused by a pool, started during
    one run reads the same journal in the next (written again for each session).
    """

    pid: int
    folder: Path
    journal: int = -1  # descriptor, opened for appending
    texts: int = -1
    texts_end: int = 0
    stored: dict[str, tuple[int, int]] = field(default_factory=dict)  # sha256 -> (offset, length)
    generation: int = 0

    def open(self) -> None:
        if self.journal < 0:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self.texts = os.open(self.folder / "texts", flags, 0o600)
            self.texts_end = os.fstat(self.texts).st_size
            self.journal = os.open(self.folder / "manifest", flags, 0o600)

    def store(self, digest: str, text: str) -> tuple[int, int]:
        """Where ``text`` lies in ``texts``, appended when it is not there yet."""
        at = self.stored.get(digest)
        if at is None:
            self.open()
            data = text.encode("utf-8")
            _write_all(self.texts, data)
            at = (self.texts_end, len(data))
            self.texts_end += len(data)
            self.stored[digest] = at
        return at

    def append(self, lines: list[str]) -> None:
        if lines:
            self.open()
            _write_all(self.journal, "".join(lines).encode("utf-8"))

    def rewrite(self, lines: list[str]) -> None:
        """Start a new generation holding ``lines``: truncate, then one write of header and lines."""
        self.open()
        self.generation += 1
        os.ftruncate(self.journal, 0)
        header = f"pcs-manifest {self.generation:016x}\n"
        _write_all(self.journal, (header + "".join(lines)).encode("utf-8"))

    def close(self) -> None:
        for fd in (self.journal, self.texts):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.journal = self.texts = -1


_FILES: _Files | None = None


def process_folder() -> Path:
    """A temporary folder of this process's own (the manifest's), removed when the process ends."""
    return _files().folder


def _files() -> _Files:
    global _FILES
    if _FILES is None or _FILES.pid != os.getpid():
        if _FILES is not None:
            _FILES.close()  # a forked child's copies of its parent's descriptors
        _remove_orphans()
        folder = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-workers-"))
        _FILES = _Files(os.getpid(), folder)
        atexit.register(shutil.rmtree, folder, True)
        # a process ended by SIGTERM/SIGHUP runs no atexit: pcs's last words remove it then
        _signals.on_termination(lambda: shutil.rmtree(folder, True))
    return _FILES


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Manifest:
    """The modules a session serves, written where its child processes read them."""

    def __init__(self) -> None:
        # name -> (sha256, file, is a package, __package__ when not its name's)
        self._modules: dict[str, tuple[str, str, bool, str | None]] = {}
        self._texts: dict[str, str] = {}  # sha256 -> text
        self._namespaces: dict[str, list[str]] = {}
        self._saved_env: list[tuple[str | None, str | None]] = []

    def add_module(
        self, name: str, text: str, file: str, package: bool, parent: str | None = None,
        digest: str | None = None,
    ) -> None:
        """Serve module ``name`` with ``text`` (run as ``file``) to the children.

        While this session is the innermost active one, its children see it from
        their next import on.

        Args:
            parent: the ``__package__`` to run it in, when not its name's (a component module).
            digest: the text's sha256, when known already.
        """
        digest = digest or sha256_bytes(text.encode("utf-8"))
        entry = (digest, file, package, parent)
        if self._modules.get(name) == entry:
            return
        self._modules[name] = entry
        self._texts[digest] = text
        with _ENV_LOCK:
            if self._innermost():
                files = _files()
                files.append([self._module_line(files, name)])

    def add_namespace(self, name: str, folders: list[str]) -> None:
        """Serve ``name`` as a namespace package over ``folders``."""
        if self._namespaces.get(name) == folders:
            return
        self._namespaces[name] = list(folders)
        with _ENV_LOCK:
            if self._innermost():
                _files().append([self._namespace_line(name)])

    def _innermost(self) -> bool:
        return bool(_ACTIVE) and _ACTIVE[-1] is self

    def _module_line(self, files: _Files, name: str) -> str:
        digest, file, package, parent = self._modules[name]
        at = files.store(digest, self._texts[digest])
        return json.dumps({"m": name, "file": file, "at": at, "package": package, "parent": parent}) + "\n"

    def _namespace_line(self, name: str) -> str:
        return json.dumps({"ns": name, "folders": self._namespaces[name]}) + "\n"

    def _write(self) -> None:
        """Write the whole manifest as a new generation (under ``_ENV_LOCK``)."""
        files = _files()
        lines = [self._module_line(files, name) for name in self._modules]
        lines.extend(self._namespace_line(name) for name in self._namespaces)
        files.rewrite(lines)

    def activate(self) -> None:
        """Write the manifest and point this process's children at it (until :meth:`deactivate`)."""
        with _ENV_LOCK:
            _ACTIVE.append(self)
            self._write()
            old = os.environ.get("PYTHONPATH")
            self._saved_env.append((os.environ.get(MANIFEST_VARIABLE), old))
            os.environ[MANIFEST_VARIABLE] = str(_files().folder / "manifest")
            parts = [p for p in (old or "").split(os.pathsep) if p and p != BOOT_DIR]
            os.environ["PYTHONPATH"] = os.pathsep.join([BOOT_DIR, *parts])

    def deactivate(self) -> None:
        """Give the environment back as it was before :meth:`activate`; the outer session's manifest too."""
        with _ENV_LOCK:
            if not self._saved_env:
                return
            manifest, pythonpath = self._saved_env.pop()
            for key, value in ((MANIFEST_VARIABLE, manifest), ("PYTHONPATH", pythonpath)):
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            if self in _ACTIVE:
                _ACTIVE.remove(self)
            if _ACTIVE:
                _ACTIVE[-1]._write()
            else:
                _files().rewrite([])
        _stop_reused_workers()


def _remove_orphans() -> None:
    """Delete the manifest folders of processes that are gone.

    A process removes its folder at exit, but one killed, or a forked worker
    ending with ``os._exit``, cannot.
    """
    for folder in Path(tempfile.gettempdir()).glob("pcs-*-workers-*"):
        pid = folder.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass  # alive, or another user's: not ours to judge


def _stop_reused_workers() -> None:
    """Stop joblib's reusable loky workers, which would keep this run's modules for the next."""
    for name in ("joblib.externals.loky.reusable_executor", "loky.reusable_executor"):
        module = sys.modules.get(name)
        executor = getattr(module, "_executor", None) if module is not None else None
        if executor is not None:
            try:
                executor.shutdown(wait=True, kill_workers=True)
            except Exception:  # noqa: BLE001, S110 - an executor already broken needs no stopping
                pass
