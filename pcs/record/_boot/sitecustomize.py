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

_HEADER_SIZE = 30  # pcs.record.workers.HEADER_SIZE (this file imports nothing of pcs)


def _read_at(fd: int, size: int, offset: int) -> bytes:
    chunks = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _install(manifest_path: str) -> None:
    # the journal pcs.record.workers writes: a header naming its generation, then JSON lines
    state: dict = {"fd": None, "texts": None, "header": None, "offset": 0, "modules": {}, "namespaces": {}}

    def load() -> None:
        # read again when the parent wrote since: a module pinned after this process
        # started, or the next run's modules in a process started by an earlier run
        # (a forkserver); costs a pread and an fstat when nothing changed
        fd = state["fd"]
        if fd is None:
            try:
                fd = state["fd"] = os.open(manifest_path, os.O_RDONLY)
            except OSError:
                return
        try:
            header = os.pread(fd, _HEADER_SIZE, 0)
            if len(header) < _HEADER_SIZE:
                return  # being written again
            if header != state["header"]:
                state.update(header=header, offset=_HEADER_SIZE, modules={}, namespaces={})
            size = os.fstat(fd).st_size
            if size <= state["offset"]:
                return
            data = _read_at(fd, size - state["offset"], state["offset"])
            end = data.rfind(b"\n") + 1  # whole lines only: the parent may be appending
            if not end:
                return
            if os.pread(fd, _HEADER_SIZE, 0) != header:
                state["header"] = None  # written again while read: read the new one next time
                return
            for line in data[:end].splitlines():
                entry = json.loads(line)
                if "m" in entry:
                    state["modules"][entry["m"]] = entry
                elif "ns" in entry:
                    state["namespaces"][entry["ns"]] = entry["folders"]
            state["offset"] += end
        except (OSError, ValueError):
            return

    def text_of(entry: dict) -> str:
        if state["texts"] is None:
            state["texts"] = os.open(os.path.join(os.path.dirname(manifest_path), "texts"), os.O_RDONLY)
        offset, length = entry["at"]
        return _read_at(state["texts"], length, offset).decode("utf-8")

    class Loader(importlib.abc.Loader):
        def __init__(self, entry):
            self.entry = entry

        def create_module(self, spec):
            return None

        def exec_module(self, module):
            if self.entry is None:
                return  # a namespace package
            text = text_of(self.entry)
            if self.entry.get("parent"):
                module.__package__ = self.entry["parent"]  # a component file inside a package
            exec(compile(text, self.entry["file"], "exec", dont_inherit=True), module.__dict__)  # noqa: S102

    class Finder:
        def find_spec(self, fullname, path=None, target=None):
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
