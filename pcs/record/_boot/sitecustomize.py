"""pcs: worker processes of a component run import the run's own code.

While a component run is active, pcs puts this folder first on the
``PYTHONPATH`` its child processes inherit and names a manifest in
``PCS_CLOSURE_MANIFEST``. Python imports ``sitecustomize`` at start-up, so every
Python child (multiprocessing spawn or forkserver, joblib/loky,
concurrent.futures, ``subprocess.run([sys.executable, ...])``) installs, before
any of its own code or any unpickling runs, a finder that serves the modules
the parent pinned (the component modules ``_pcs_components.*`` and their
closure) from the exact texts the parent ran. A function of the component's
file then pickles by reference and runs the recorded version in the worker.

It imports nothing of pcs (a child stays fast), and then runs the
``sitecustomize`` that this one hides, if there is one.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys


def _install(manifest_path: str) -> None:
    state: dict = {"mtime": None, "modules": {}, "namespaces": {}}

    def load() -> None:
        try:
            info = os.stat(manifest_path)
        except OSError:
            return
        mtime = (info.st_ino, info.st_mtime_ns)  # a new file each time the parent writes it
        if mtime == state["mtime"]:
            return
        try:
            with open(manifest_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return
        state["mtime"] = mtime
        state["modules"] = data.get("modules") or {}
        state["namespaces"] = data.get("namespaces") or {}

    class Loader(importlib.abc.Loader):
        def __init__(self, entry):
            self.entry = entry

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            if self.entry is None:
                return  # a namespace package
            with open(self.entry["text"], encoding="utf-8") as handle:
                text = handle.read()
            if self.entry.get("parent"):
                module.__package__ = self.entry["parent"]  # a component file inside a package
            exec(compile(text, self.entry["file"], "exec", dont_inherit=True), module.__dict__)  # noqa: S102

    class Finder:
        def find_spec(self, fullname, path=None, target=None):
            # read again when the parent wrote it since: a module pinned after this process
            # started, or the next run's modules in a process started by an earlier run
            # (a forkserver)
            load()
            entry = state["modules"].get(fullname)
            if entry is not None:
                spec = importlib.machinery.ModuleSpec(
                    fullname, Loader(entry), origin=entry["file"], is_package=bool(entry.get("package"))
                )
                spec.has_location = not entry["file"].startswith("<")
                if entry.get("package"):
                    spec.submodule_search_locations = [os.path.dirname(entry["file"])]
                return spec
            dirs = state["namespaces"].get(fullname)
            if dirs is None and fullname != "_pcs_components":
                return None
            spec = importlib.machinery.ModuleSpec(fullname, Loader(None), is_package=True)
            spec.submodule_search_locations = list(dirs or [])
            return spec

    load()
    sys.meta_path.insert(0, Finder())


def _chain() -> None:
    """Import the ``sitecustomize`` this one hides (later on ``sys.path``), if any."""
    here = os.path.dirname(os.path.abspath(__file__))
    this = sys.modules.pop("sitecustomize", None)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        import sitecustomize  # noqa: F401
    except ImportError:
        if this is not None:
            sys.modules["sitecustomize"] = this
    finally:
        sys.path[:] = saved


_manifest = os.environ.get("PCS_CLOSURE_MANIFEST")
if _manifest:
    try:
        _install(_manifest)
    except Exception as exc:  # noqa: BLE001 - a child must start even so; say why it may differ
        sys.stderr.write(f"pcs: this worker imports the live files, not the run's code: {exc}\n")
_chain()
