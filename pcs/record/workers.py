"""Worker processes import the run's own code: the manifest a session hands its children.

A component run's modules are served from the texts pcs read and hashed
(:mod:`pcs.record.closure`); a worker process started by the run
(multiprocessing spawn or forkserver, joblib/loky, concurrent.futures, a
``subprocess`` running Python) is a fresh interpreter that would import the
live files, or fail to import ``_pcs_components.*`` at all. While a session is
active, a :class:`Manifest` lists every module it serves (name, file, and the
exact text, kept in a folder of the manifest's own) and the environment of
the process names it: ``PCS_CLOSURE_MANIFEST``, and ``PYTHONPATH`` led by
``pcs/record/_boot``, whose ``sitecustomize`` installs a finder serving those
modules in every Python child before its own code runs. Forked children
inherit the parent's finder and need none of it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from pcs import _signals
from pcs.specs import sha256_bytes

__all__ = ["BOOT_DIR", "MANIFEST_VARIABLE", "Manifest"]

#: the folder whose sitecustomize.py a child process runs at start-up
BOOT_DIR = str(Path(__file__).resolve().parent / "_boot")
#: the environment variable naming the manifest of the active session
MANIFEST_VARIABLE = "PCS_CLOSURE_MANIFEST"

_ENV_LOCK = threading.RLock()
# The manifest's folder, one per process: a forkserver, or a worker reused by a pool,
# started during one run reads the same file in the next (rewritten for each session)
_FOLDER: tuple[int, Path] | None = None
_ACTIVE: list[Manifest] = []  # the manifests of the sessions active now, innermost last


def _folder() -> Path:
    global _FOLDER
    if _FOLDER is None or _FOLDER[0] != os.getpid():
        _remove_orphans()
        folder = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-workers-"))
        _FOLDER = (os.getpid(), folder)
        atexit.register(shutil.rmtree, folder, True)
        # a process ended by SIGTERM/SIGHUP runs no atexit: pcs's last words remove it then
        _signals.on_termination(lambda: shutil.rmtree(folder, True))
    return _FOLDER[1]


class Manifest:
    """The modules a session serves, written where its child processes read them."""

    def __init__(self) -> None:
        # name -> (sha256, file, is a package, __package__ when not its name's)
        self._modules: dict[str, tuple[str, str, bool, str | None]] = {}
        self._texts: dict[str, str] = {}  # sha256 -> text
        self._namespaces: dict[str, list[str]] = {}
        self._saved_env: list[tuple[str | None, str | None]] = []
        self._changed = True

    def add_module(
        self, name: str, text: str, file: str, package: bool, parent: str | None = None,
        digest: str | None = None,
    ) -> None:
        """Serve module ``name`` with ``text`` (run as ``file``) to the children.

        Args:
            parent: the ``__package__`` to run it in, when not its name's (a component module).
            digest: the text's sha256, when known already.
        """
        digest = digest or sha256_bytes(text.encode("utf-8"))
        entry = (digest, file, package, parent)
        if self._modules.get(name) != entry:
            self._modules[name] = entry
            self._texts[digest] = text
            self._changed = True

    def add_namespace(self, name: str, folders: list[str]) -> None:
        """Serve ``name`` as a namespace package over ``folders``."""
        if self._namespaces.get(name) != folders:
            self._namespaces[name] = list(folders)
            self._changed = True

    def write(self, force: bool = False) -> None:
        """Write the manifest when this session is the innermost active one and it changed."""
        with _ENV_LOCK:
            if not _ACTIVE or _ACTIVE[-1] is not self or not (self._changed or force):
                return
            folder = _folder()
            modules = {}
            for name, (digest, file, package, parent) in self._modules.items():
                target = folder / f"{digest}.py"
                if not target.exists():
                    _write_file(target, self._texts[digest])
                modules[name] = {"file": file, "text": str(target), "package": package, "parent": parent}
            _write_file(folder / "manifest.json",
                        json.dumps({"modules": modules, "namespaces": self._namespaces}))
            self._changed = False

    def activate(self) -> None:
        """Write the manifest and point this process's children at it (until :meth:`deactivate`)."""
        with _ENV_LOCK:
            _ACTIVE.append(self)
            self.write(force=True)
            old = os.environ.get("PYTHONPATH")
            self._saved_env.append((os.environ.get(MANIFEST_VARIABLE), old))
            os.environ[MANIFEST_VARIABLE] = str(_folder() / "manifest.json")
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
                _ACTIVE[-1].write(force=True)
            else:
                _write_file(_folder() / "manifest.json", json.dumps({"modules": {}, "namespaces": {}}))
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


def _write_file(target: Path, text: str) -> None:
    """Write through a temp file and rename, so a child reads the old text or the new one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)


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
