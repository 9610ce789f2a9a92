"""The code closure of components: every module a component loads from its own repo.

A component's file rarely stands alone: it imports helpers from its folder
(``from helpers import step``), at the top or inside a function. pcs finds
these modules, records their text with the run, and makes every later load,
first run or rerun, take them from one place:

- A :class:`Tree` says where one component's files are: its repo root on disk
  (a local folder, a git commit exported into ``$PCS_HOME/sources``, or a
  recorded snapshot materialised there), the component's folder inside it, and
  the modules already pinned (name -> path and sha256).
- A :class:`Session` loads components in a fresh module namespace. While it is
  active it holds the sources-cache entries its trees use (``pcs.cache.in_use``),
  takes out of ``sys.modules`` every entry that a tree could serve (any module
  whose file lies under a live tree's root, and every pinned name), and puts a
  finder first on ``sys.meta_path`` that serves them: a module name found in a
  component's folder, a module found on ``sys.path`` whose file lies under a
  local repo root, a submodule of a served package, or a pinned (recorded) name.
  A served module is executed from the text pcs read and hashed, with a real
  ``__file__``, so lazy imports and ``Path(__file__).parent`` work. When the
  session ends, the served modules leave ``sys.modules`` and the entries taken
  out come back.
- :meth:`Session.scan` finds literal imports in the served modules (also those
  inside functions) without running them, so the closure is known before the
  entry point runs; modules first imported while it runs (dynamic imports) are
  served and pinned too, and reported by :meth:`Session.closure`.
- :func:`session_for` builds a session from the run core's description of
  each component (a :class:`Part`: its repo, file, the snapshot and closure a
  rerun pins); :func:`absorb` adds what a session pinned to a run command's
  code map (``"<component>:<module>"`` -> ``{component, module, path, file,
  sha256}``), which the command's identifier covers.

What is never served: the standard library, pcs itself, ``__main__``, names
already imported from elsewhere (an installed module wins over a file of the
same name, as it did when the folder was put on ``sys.path``), and any file
inside the interpreter's prefixes or site-packages (a virtual environment
inside a project is not the project's code).

Thread safety: ``sys.modules`` and ``sys.meta_path`` belong to the process.
Entering and leaving a session is serialised by a lock, and sessions nest
(a component run inside another's entry point stashes and restores around
itself). While a session is active, every thread of the process sees its
modules under their names. Two sessions active at once in different threads
are safe only when their components share no module names; pcs does not run
component runs in parallel threads itself (sweeps use processes).
"""

from __future__ import annotations

import ast
import bisect
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import posixpath
import shutil
import site
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from pcs import _config
from pcs.cache import in_use
from pcs.errors import ComponentFileNotFoundError, NotReproducibleError
from pcs.record.workers import Manifest
from pcs.repo import GitRepo, Repo
from pcs.specs import sha256_bytes

__all__ = [
    "Closure",
    "ModuleFile",
    "SCRIPT_PREFIX",
    "Part",
    "Served",
    "Tree",
    "Session",
    "absorb",
    "closure_key",
    "closures",
    "component_texts",
    "excluded_path",
    "git_tree",
    "literal_imports",
    "materialise",
    "module_entries",
    "relative_file_path",
    "script_literals",
    "session_for",
    "tree_for",
]

_LOCK = threading.RLock()
_CODE_CACHE: dict[tuple[str, str], types.CodeType] = {}
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)
_NEVER_SERVED = frozenset({"__main__", "__future__", "pcs", "_pcs_components"})


@dataclass(frozen=True)
class ModuleFile:
    """One module of a closure: its import name, path under the tree root, and text's sha256."""

    name: str
    path: str  # posix, relative to the tree root: "helpers.py", "lib/__init__.py"
    sha256: str


@dataclass
class Served:
    """A module a session pinned: where it came from and the exact text it runs."""

    key: str  # the identifier of the component whose tree holds it
    module: ModuleFile
    text: str | None  # None for an extension module (it cannot be snapshotted)
    file: Path  # where it lies on disk now
    is_package: bool

    @property
    def name(self) -> str:
        return self.module.name


@dataclass
class Tree:
    """Where one component's files are, and which of its modules are already pinned.

    Args:
        key: the component's identifier.
        file_path: the component file, posix, relative to the root.
        root: the repo root on disk; or None, with ``opener`` giving it when the
            session opens (materialising a snapshot, exporting a commit).
        opener: called with the session's ExitStack; returns the root.
        known: modules pinned already (a recorded closure, or one found before).
        texts: text by sha256 for ``known``.
        live: resolve names that are not pinned in the component's folder.
        search_path: modules found on ``sys.path`` whose file lies under the root
            are the component's too (a local repo).
        fallback: (root, folder) of a live folder to resolve unpinned names in,
            for records made before closures were recorded.
    """

    key: str
    file_path: str
    root: Path | None = None
    opener: Callable[[ExitStack], Path] | None = None
    known: Sequence[ModuleFile] = ()
    texts: Mapping[str, str] = field(default_factory=dict)
    live: bool = True
    search_path: bool = False
    fallback: tuple[Path, Path] | None = None

    @property
    def component_file(self) -> Path:
        """The component's file on disk (valid once the session opened the tree)."""
        return self._paths()[0]

    @property
    def folder(self) -> Path:
        return self._paths()[1]

    def _paths(self) -> tuple[Path, Path]:
        # asked for at every import the session serves: built once per root
        if self.root is None:
            raise RuntimeError("the tree is not open")  # pragma: no cover - internal misuse
        cached = self.__dict__.get("_paths_of")
        if cached is None or cached[0] is not self.root:
            file = self.root.joinpath(*PurePosixPath(self.file_path).parts)
            cached = self.__dict__["_paths_of"] = (self.root, file, file.parent)
        return cached[1], cached[2]


class Session:
    """Components loaded in a fresh module namespace, with their closure watched.

    Use as a context manager around loading the components and running the
    entry point; it can be entered again later (the modules it loaded come
    back under their names). See the module docstring for what it promises.
    """

    def __init__(self, trees: Sequence[Tree]) -> None:
        self.trees = list(trees)
        self._by_key = {t.key: t for t in self.trees}
        self._pinned: dict[str, Served] = {}
        self._namespaces: dict[str, tuple[Tree, list[Path], Path]] = {}
        self._loaded: dict[str, types.ModuleType] = {}
        self._stashed: list[dict[str, Any]] = []
        self._local_files: set[str] = set()
        self._listings: dict[Path, dict[str, str]] = {}
        self._misses: set[str] = set()  # top-level names not found on sys.path under a root
        self._stack: ExitStack | None = None
        self._opened = False
        self._finder: _Finder | None = None
        self._depth = 0
        self.imports: set[str] = set()  # top-level names of modules the closure imports from elsewhere
        self.problems: list[str] = []
        self.workers = Manifest()  # what the run's child processes import
        self._packages: dict[str, str] = {}  # component key -> the package its file lies in

    # -- entering and leaving ---------------------------------------------------------------

    def open(self) -> None:
        """Hold the trees' roots (materialised or exported when missing) in use until :meth:`close`."""
        if self._stack is not None:
            return
        stack = ExitStack()
        try:
            for tree in self.trees:
                if tree.opener is not None:
                    tree.root = tree.opener(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        if self._opened:
            return
        self._opened = True
        for tree in self.trees:
            if tree.root is None:
                continue
            self._local_files.add(str(tree.component_file))
            for module in tree.known:
                if module.name not in self._pinned:
                    self._pin(tree, module, tree.root, tree.texts.get(module.sha256))

    def close(self) -> None:
        """Release the cache entries the trees use (the session can be opened again)."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __enter__(self) -> Session:
        self.open()
        with _LOCK:
            if self._depth == 0:
                stash = self._take_out()
                for name, module in self._loaded.items():
                    sys.modules[name] = module
                self._finder = _Finder(self)
                sys.meta_path.insert(0, self._finder)
                self._stashed.append(stash)
                self.workers.activate()
            self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with _LOCK:
            self._depth -= 1
            if self._depth > 0:
                return
            self.workers.deactivate()
            if self._finder is not None:
                try:
                    sys.meta_path.remove(self._finder)
                except ValueError:
                    pass
                self._finder = None
            for name, module in self._loaded.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]
            stash = self._stashed.pop() if self._stashed else {}
            for name, module in stash.items():
                sys.modules.setdefault(name, module)

    def _take_out(self) -> dict[str, Any]:
        """Take out of ``sys.modules`` every entry this session may serve.

        That is: every module whose file lies under a live tree's root, and every
        name a tree serves (pinned, or a module in a component's folder) unless
        the entry in ``sys.modules`` is installed (site-packages, the standard
        library): an installed library keeps its name, so that pcs and MLflow,
        which run inside the session too, never get a project's ``yaml.py``.
        """
        index = _MODULES.refresh()
        candidates = set(self._pinned)
        live = [t for t in self.trees if t.root is not None and t.live and not excluded_path(str(t.root))]
        for tree in live:
            candidates.update(n for n, kind in self._listing(tree.folder).items() if kind != "dir"
                              or (tree.folder / n / "__init__.py").is_file())
        for tree in self.trees:
            if tree.fallback is not None:
                candidates.update(self._listing(tree.fallback[1]))
        names: set[str] = set()
        for name in candidates:
            if sys.modules.get(name) is None or name.split(".", 1)[0] in _NEVER_SERVED \
                    or name in sys.stdlib_module_names:
                continue
            if not index.installed(name):
                names.add(name)
        roots = tuple(str(t.root) + os.sep for t in live) + tuple(
            str(t.fallback[1]) + os.sep for t in self.trees if t.fallback is not None
        )
        for root in roots:
            names.update(index.local_under(root))
        names = {n for n in names if n.split(".", 1)[0] not in _NEVER_SERVED}
        if not names:
            return {}
        taken = set(names)
        for name in names:
            taken.update(index.below(name))
        return {name: sys.modules.pop(name) for name in sorted(taken) if name in sys.modules}

    # -- what was found -------------------------------------------------------------------------

    def tree(self, key: str) -> Tree | None:
        """The opened tree of component ``key``, or None (an inline component)."""
        tree = self._by_key.get(key)
        return tree if tree is not None and tree.root is not None else None

    def note_component_module(self, name: str, text: str, file: str, package: str | None = None) -> None:
        """A component module this session loaded (``_pcs_components.*``): its workers import it too.

        Args:
            package: the package its relative imports resolve against (``__package__``).
        """
        with _LOCK:
            _MODULES.note(name)
        self.workers.add_module(name, text, file, package=False, parent=package)

    def package_of(self, key: str) -> str | None:
        """The package component ``key``'s file lies in, pinned with its parents; or None.

        A file ``pkg/agent.py`` under the repo root, next to ``pkg/__init__.py``, is
        in package ``pkg``: its relative imports (``from .helpers import step``) then
        load ``pkg.helpers`` under its real name. Only folders inside the root count
        (the root itself is the folder the component's files are measured from).
        """
        if key in self._packages:
            return self._packages[key]
        tree = self.tree(key)
        if tree is None or tree.root is None:
            return None
        folders = PurePosixPath(tree.file_path).parts[:-1]
        names: list[str] = []
        for depth in range(len(folders), 0, -1):
            folder = tree.root.joinpath(*folders[:depth])
            if not folders[depth - 1].isidentifier() or not (folder / "__init__.py").is_file():
                break
            names.insert(0, folders[depth - 1])
        if not names:
            return None
        base = tree.root.joinpath(*folders[: len(folders) - len(names)])
        for depth in range(1, len(names) + 1):
            name = ".".join(names[:depth])
            if name not in self._pinned:
                init = base.joinpath(*names[:depth], "__init__.py")
                if self._pin_file(tree, name, init, tree.root, is_package=True) is None:
                    return None
        package = ".".join(names)
        self._packages[key] = package
        return package

    def note_local_file(self, path: str | os.PathLike[str]) -> None:
        """Count imports made by code in ``path`` as the closure's own (a component module)."""
        self._local_files.add(str(path))

    def closure(self) -> list[Served]:
        """Every module pinned: served, or found by :meth:`scan`, in the order first seen."""
        return list(self._pinned.values())

    def scan(self, texts: Iterable[tuple[str, str]] = ()) -> None:
        """Pin the local modules that ``texts`` and the pinned modules import literally.

        Imports inside functions count too; nothing is executed. Names that are
        not local are added to :attr:`imports`.

        Args:
            texts: (module name or "", source text) of component files.
        """
        # a component file inside a package resolves its relative imports against it
        queue: list[tuple[str, bool, str]] = [
            (f"{self._packages[key]}._" if key in self._packages else "", False, text)
            for key, text in texts
        ]
        for served in list(self._pinned.values()):
            if served.text is not None:
                queue.append((served.name, served.is_package, served.text))
        done: set[tuple[str, str]] = set()
        while queue:
            name, is_package, text = queue.pop()
            key = (name, sha256_bytes(text.encode("utf-8")))
            if key in done:
                continue
            done.add(key)
            for target in _absolute_names(name, is_package, literal_imports(text)):
                for found in self._resolve_chain(target):
                    if found.text is not None:
                        queue.append((found.name, found.is_package, found.text))
            if not queue:
                # Python files the code runs as programs (subprocess, runpy), and their imports
                for script in self._scripts(texts):
                    if script.text is not None:
                        queue.append(("", False, script.text))

    def _scripts(self, texts: Iterable[tuple[str, str]]) -> list[Served]:
        """Pin the Python files next to the code that its string literals name; the new ones.

        ``subprocess.run([sys.executable, "prepare.py"])`` and
        ``runpy.run_path(Path(__file__).parent / "prepare.py")`` run a file no import
        reaches; a literal ``"*.py"`` naming a file in the folder of the code that
        says it (or of its component) is pinned as a script (``@prepare.py``), so the
        snapshot holds it next to the code and a rerun runs the recorded text.
        """
        sources: list[tuple[Tree, list[Path], str]] = []
        for key, text in texts:
            tree = self.tree(key)
            if tree is not None:
                sources.append((tree, [tree.folder], text))
        for served in list(self._pinned.values()):
            tree = self._by_key.get(served.key)
            if served.text is not None and tree is not None and tree.root is not None:
                sources.append((tree, [served.file.parent, tree.folder], served.text))
        new: list[Served] = []
        for tree, folders, text in sources:
            if tree.root is None:
                continue
            for literal in script_literals(text):
                for folder in folders:
                    path = Path(os.path.normpath(folder / literal))
                    if not path.is_file() or excluded_path(str(path)):
                        continue
                    name = SCRIPT_PREFIX + _relative(path, tree.root)
                    if name not in self._pinned:
                        found = self._pin_file(tree, name, path, tree.root, is_package=False)
                        if found is not None:
                            new.append(found)
                    break
        return new

    def _resolve_chain(self, target: str) -> list[Served]:
        """Pin ``target`` and its parent packages when local; newly pinned ones are returned."""
        parts = target.split(".")
        new: list[Served] = []
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            before = name in self._pinned or name in self._namespaces
            found = self._lookup(name)
            if found is None:
                if i == 1:
                    self.imports.add(name)
                return new
            if not before and isinstance(found, Served):
                new.append(found)
        return new

    # -- resolution -------------------------------------------------------------------------------

    def _lookup(
        self, name: str, by_local_code: bool = True
    ) -> Served | tuple[Tree, list[Path], Path] | None:
        """What this session serves for ``name``: a pinned module, a namespace package, or None.

        Args:
            name: the full module name.
            by_local_code: the import comes from the closure's own code (a static
                scan), so modules on ``sys.path`` under a repo root are looked for
                without looking at who imports.
        """
        if name in self._pinned:
            return self._pinned[name]
        if name in self._namespaces:
            return self._namespaces[name]
        parent, _, last = name.rpartition(".")
        if parent:
            holder = self._pinned.get(parent) or self._namespaces.get(parent)
            if holder is None:
                # a recorded closure names its packages' modules; a synthesised parent
                # package covers names recorded under it
                return None
            if isinstance(holder, Served):
                if not holder.is_package:
                    return None
                tree = self._by_key[holder.key]
                dirs = [holder.file.parent]
                base = self._base_of(tree, holder.file)
            else:
                tree, dirs, base = holder
            if not (tree.live or tree.fallback is not None):
                return None
            for folder in dirs:
                found = self._in_folder(tree, folder, last, name, base)
                if found is not None:
                    return found
            return None
        if name in _NEVER_SERVED or name in sys.stdlib_module_names:
            return None
        if name in sys.modules and name not in self._loaded:
            return None  # imported from elsewhere before: it wins, as it did on sys.path
        for tree in self.trees:
            if tree.root is None:
                continue
            for base, folder in self._search_folders(tree):
                found = self._in_folder(tree, folder, name, name, base)
                if found is not None:
                    return found
        if name in self._misses or not (by_local_code or self._importer_is_local()):
            # the closure's own imports only: a library probing for an optional module
            # (torch, pyspark) must not pay for a search of sys.path on every run
            return None
        for tree in self.trees:
            if tree.root is not None and tree.search_path and tree.live:
                found = self._on_sys_path(tree, name)
                if found is not None:
                    return found
        self._misses.add(name)
        return None

    def _search_folders(self, tree: Tree) -> list[tuple[Path, Path]]:
        """(root, folder) pairs where unpinned top-level names of ``tree`` are looked up."""
        out: list[tuple[Path, Path]] = []
        if tree.live and tree.root is not None and not excluded_path(str(tree.root)):
            out.append((tree.root, tree.folder))
        if tree.fallback is not None:
            out.append(tree.fallback)
        return out

    def _base_of(self, tree: Tree, file: Path) -> Path:
        """The root a pinned file's relative path is measured from."""
        if tree.fallback is not None and _is_under(str(file), str(tree.fallback[0])) and not (
            tree.root is not None and _is_under(str(file), str(tree.root))
        ):
            return tree.fallback[0]
        return tree.root if tree.root is not None else file.parent

    def _listing(self, folder: Path) -> dict[str, str]:
        """Importable names in ``folder``: name -> "dir", "py" or an extension module's file name."""
        listing = self._listings.get(folder)
        if listing is not None:
            return listing
        listing = {}
        try:
            entries = list(os.scandir(folder))
        except OSError:
            entries = []
        for entry in entries:
            fname = entry.name
            if fname.endswith(".py"):
                if fname[:-3].isidentifier() and listing.get(fname[:-3]) != "dir":
                    listing[fname[:-3]] = "py"
            elif fname.isidentifier():
                try:
                    if entry.is_dir():
                        listing[fname] = "dir"  # looked at first, as Python's own finder does
                except OSError:
                    pass
            else:
                for suffix in _EXTENSION_SUFFIXES:
                    stem = fname[: -len(suffix)]
                    if fname.endswith(suffix) and stem.isidentifier() and stem not in listing:
                        listing[stem] = fname
                        break
        self._listings[folder] = listing
        return listing

    def _in_folder(
        self, tree: Tree, folder: Path, last: str, name: str, base: Path
    ) -> Served | tuple[Tree, list[Path], Path] | None:
        """Pin ``name`` when ``folder`` holds it as a package, a module or a namespace folder."""
        kind = self._listing(folder).get(last)
        if kind is None:
            return None
        if kind == "dir":
            init = folder / last / "__init__.py"
            if init.is_file():
                return self._pin_file(tree, name, init, base, is_package=True)
            module = folder / f"{last}.py"
            if module.is_file():
                return self._pin_file(tree, name, module, base, is_package=False)
            if "." not in name:
                spec = importlib.machinery.PathFinder.find_spec(name)
                if spec is not None and spec.origin not in (None, "namespace"):
                    return None  # a regular module elsewhere beats a namespace folder here
            return self._add_namespace(name, (tree, [folder / last], base))
        if kind == "py":
            return self._pin_file(tree, name, folder / f"{last}.py", base, is_package=False)
        return self._pin_extension(tree, name, folder / kind, base)

    def _on_sys_path(self, tree: Tree, name: str) -> Served | tuple[Tree, list[Path], Path] | None:
        """A module found on sys.path whose file lies under a local repo root."""
        if tree.root is None:  # a snapshot or git tree: no live folder for sys.path to find
            return None
        try:
            spec = importlib.machinery.PathFinder.find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        root = str(tree.root)
        origin = spec.origin
        if origin and origin != "namespace":
            real = os.path.realpath(origin)
            # inside the project: anywhere but the environment (stdlib, site-packages,
            # pcs). A folder the run put on sys.path (sys.path.insert(0, "../shared"))
            # holds the project's code as much as the component's own folder does.
            if excluded_path(real):
                return None
            path = Path(real)
            if origin.endswith(_EXTENSION_SUFFIXES):
                return self._pin_extension(tree, name, path, tree.root)
            if not origin.endswith(".py"):
                return None
            return self._pin_file(
                tree, name, path, tree.root, is_package=spec.submodule_search_locations is not None
            )
        locations = [Path(os.path.realpath(p)) for p in (spec.submodule_search_locations or [])]
        # a namespace package spreads over many folders: only its parts under the root count
        inside = [p for p in locations if _is_under(str(p), root) and not excluded_path(str(p))]
        if not inside:
            return None
        return self._add_namespace(name, (tree, inside, tree.root))

    def _pin_file(self, tree: Tree, name: str, path: Path, base: Path, is_package: bool) -> Served | None:
        try:
            text, digest = read_source(path)
        except (OSError, UnicodeDecodeError, SyntaxError) as exc:
            self.problems.append(f"{name} ({path.name}) cannot be read as Python source: {exc}")
            return None
        rel = _relative(path, base)
        module = ModuleFile(name, rel, digest)
        return self._pin(tree, module, base, text, is_package)

    def _pin_extension(self, tree: Tree, name: str, path: Path, base: Path) -> Served:
        rel = _relative(path, base)
        served = Served(tree.key, ModuleFile(name, rel, ""), None, path, False)
        self._pinned[name] = served
        self.problems.append(
            f"{tree.key} imports {name}, a compiled module in its repo ({rel}), which the "
            "source snapshot cannot hold"
        )
        return served

    def _pin(
        self, tree: Tree, module: ModuleFile, base: Path, text: str | None,
        is_package: bool | None = None,
    ) -> Served:
        file = Path(os.path.normpath(os.path.join(base, module.path)))
        if text is None:
            try:
                text = read_source(file)[0]
            except (OSError, UnicodeDecodeError, SyntaxError):
                text = ""
        package = module.path.endswith("/__init__.py") or module.path == "__init__.py"
        served = Served(tree.key, module, text, file, package if is_package is None else is_package)
        self._pinned[module.name] = served
        if not module.name.startswith(SCRIPT_PREFIX):
            # the session's child processes import it too, from their next import on when active
            self.workers.add_module(module.name, text, str(file), served.is_package,
                                    digest=module.sha256 or None)
        self._local_files.add(str(file))
        parent = module.name.rpartition(".")[0] if not module.name.startswith(SCRIPT_PREFIX) else ""
        while parent and parent not in self._pinned and parent not in self._namespaces:
            # a recorded submodule whose package holds no __init__.py (or is not recorded)
            folder = file.parent
            depth = module.name.count(".") - parent.count(".")
            for _ in range(depth - 1):
                folder = folder.parent
            self._add_namespace(parent, (tree, [folder], base))
            parent = parent.rpartition(".")[0]
        return served

    def _add_namespace(
        self, name: str, space: tuple[Tree, list[Path], Path]
    ) -> tuple[Tree, list[Path], Path]:
        self._namespaces[name] = space
        self.workers.add_namespace(name, [str(p) for p in space[1]])
        return space

    def _importer_is_local(self) -> bool:
        """Whether the code asking for an import (past importlib's and pcs's frames) is the closure's."""
        frame = sys._getframe(1)
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if isinstance(module, str) and not module.startswith(
                ("importlib", "_frozen_importlib", __name__)
            ):
                if not frame.f_code.co_filename.startswith("<frozen"):
                    file = frame.f_globals.get("__file__")
                    return isinstance(file, str) and file in self._local_files
            frame = frame.f_back  # type: ignore[assignment]
        return False


class _Finder:
    """The meta path finder of a session: serves its modules, notes other imports."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        session = self.session
        found = session._lookup(fullname, by_local_code=False)
        if found is None:
            if "." not in fullname and session._importer_is_local():
                session.imports.add(fullname)
            return None
        if isinstance(found, tuple):
            spec = importlib.machinery.ModuleSpec(fullname, _Loader(session, None), is_package=True)
            spec.submodule_search_locations = [str(p) for p in found[1]]
            return spec
        if found.text is None:
            return importlib.util.spec_from_file_location(fullname, found.file)
        spec = importlib.machinery.ModuleSpec(
            fullname, _Loader(session, found), origin=str(found.file), is_package=found.is_package
        )
        spec.has_location = True
        if found.is_package:
            spec.submodule_search_locations = [str(found.file.parent)]
        return spec

    def invalidate_caches(self) -> None:
        self.session._listings.clear()
        self.session._misses.clear()


class _Loader(importlib.abc.Loader):
    """Executes a served module from the exact text the session pinned."""

    def __init__(self, session: Session, served: Served | None) -> None:
        self.session = session
        self.served = served

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        session = self.session
        session._loaded[module.__name__] = module
        if self.served is None or self.served.text is None:
            return  # a namespace package: nothing to run
        try:
            code = compiled(self.served.text, str(self.served.file), self.served.module.sha256)
            exec(code, module.__dict__)  # noqa: S102 - running the component's own modules is the point
        except BaseException:
            session._loaded.pop(module.__name__, None)  # importlib drops it from sys.modules too
            raise

    def get_source(self, fullname: str) -> str | None:
        return self.served.text if self.served is not None else None

    def is_package(self, fullname: str) -> bool:
        return self.served.is_package if self.served is not None else True

    def get_filename(self, fullname: str) -> str:
        if self.served is None:
            raise ImportError(f"{fullname} is a namespace package")
        return str(self.served.file)


class _ModuleIndex:
    """What each ``sys.modules`` entry is, kept up to date by looking only at what changed.

    A session asks, each time it is entered, which loaded modules have their file
    under a component's root and which are installed. Walking all of
    ``sys.modules`` for that made a run's cost grow with what the process had
    imported (a process that imported torch holds thousands of modules). Here a
    look compares ``sys.modules`` with the copy taken at the last look (one
    C-level dict comparison, identity first: no Python code per entry); only when
    they differ are the entries added or replaced since then classified, and a
    replaced entry (same name, another object) is classified again because the
    object is compared, not the name. Entries are held by the copy, so an object
    classified is never mistaken for a new one that reuses its ``id``.

    Not thread-safe on its own: sessions use it under ``_LOCK``.
    """

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}  # sys.modules as of the last look
        self._kind: dict[str, tuple[Any, str | None, bool]] = {}  # name -> (module, file, installed)
        self._local: list[tuple[str, str]] = []  # (file, name) of uninstalled modules, sorted
        self._names: list[str] = []  # every name, sorted (submodules of a name are a range)
        self.refreshes = 0  # looks that found a change (the tests read it)

    def refresh(self) -> _ModuleIndex:
        """Bring the index up to ``sys.modules`` as it is now."""
        current = sys.modules
        if len(current) == len(self._seen) and current == self._seen:
            return self
        self.refreshes += 1
        kind, seen = self._kind, self._seen
        # one pass in Python over the entries, classifying only those added or replaced;
        # entries removed since are left in the index and checked against sys.modules
        # when asked for (pruned when they pile up), which spares a second pass
        # one copy, made in C without running Python code (list(items()) makes a tuple per
        # entry, and a garbage collection in between can switch threads): another thread
        # importing meanwhile (a sweep preloading matplotlib) raised "dictionary changed size
        # during iteration" here, and an entry it added after the walk would count as seen
        snapshot = dict(current)
        for name, module in [(n, m) for n, m in snapshot.items() if seen.get(n, _ABSENT) is not m]:
            self._add(name, module)
        self._seen = snapshot
        if len(kind) > 2 * len(current) + 1000:
            for name in [n for n in kind if kind[n][0] is not current.get(n, _ABSENT)]:
                self._forget(name)
        return self

    def note(self, name: str) -> None:
        """Classify entry ``name`` (and its parents) now: pcs put it in ``sys.modules`` itself.

        A component's module is a fresh module under the same name in each run;
        noting it keeps the next look on its fast path (nothing else changed)
        instead of walking every entry to find the one that did.
        """
        if not self._seen:
            return  # never looked yet: the first look classifies everything
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):
            key = ".".join(parts[:depth])
            module = sys.modules.get(key, _ABSENT)
            if module is _ABSENT or self._seen.get(key, _ABSENT) is module:
                continue
            self._add(key, module)
            self._seen[key] = module

    def _add(self, name: str, module: Any) -> None:
        if name in self._kind:
            self._forget(name)
        found = self._kind[name] = _classify(module)
        bisect.insort(self._names, name)
        if found[1] is not None and not found[2]:
            bisect.insort(self._local, (found[1], name))

    def _forget(self, name: str) -> None:
        _, file, installed = self._kind.pop(name)
        _remove_sorted(self._names, name)
        if file is not None and not installed:
            _remove_sorted(self._local, (file, name))

    def installed(self, name: str) -> bool:
        """Whether the entry ``name`` is a module of the environment (stdlib, site-packages, pcs)."""
        found = self._kind.get(name)
        if found is None or found[0] is not sys.modules.get(name, _ABSENT):
            found = _classify(sys.modules.get(name))
        return found[2]

    def local_under(self, root: str) -> list[str]:
        """Names of loaded modules whose file lies under ``root`` (ending in a separator)."""
        out = []
        at = bisect.bisect_left(self._local, (root, ""))
        while at < len(self._local) and self._local[at][0].startswith(root):
            name = self._local[at][1]
            if self._kind[name][0] is sys.modules.get(name, _ABSENT):
                out.append(name)
            at += 1
        return out

    def below(self, name: str) -> list[str]:
        """Loaded submodules of ``name`` (``name.*``)."""
        prefix = name + "."
        out = []
        at = bisect.bisect_left(self._names, prefix)
        while at < len(self._names) and self._names[at].startswith(prefix):
            if self._names[at] in sys.modules:
                out.append(self._names[at])
            at += 1
        return out


_ABSENT = object()


def _remove_sorted(items: list[Any], item: Any) -> None:
    at = bisect.bisect_left(items, item)
    if at < len(items) and items[at] == item:
        del items[at]


def _classify(module: Any) -> tuple[Any, str | None, bool]:
    """A ``sys.modules`` entry's file, and whether it is installed."""
    try:
        file = getattr(module, "__file__", None)
    except Exception:  # noqa: BLE001 - lazy modules may raise on any attribute
        file = None
    path = file if isinstance(file, str) else None
    return module, path, path is not None and excluded_path(path)


_MODULES = _ModuleIndex()


def compiled(text: str, filename: str, digest: str | None = None) -> types.CodeType:
    """``text`` compiled for ``filename``, cached by content."""
    key = (digest or sha256_bytes(text.encode("utf-8")), filename)
    code = _CODE_CACHE.get(key)
    if code is None:
        code = compile(text, filename, "exec", dont_inherit=True)
        _CODE_CACHE[key] = code
    return code


# -- static scan ------------------------------------------------------------------------------

Imports = tuple[tuple[int, str, tuple[str, ...]], ...]
_SCANS: dict[str, tuple[Imports, tuple[str, ...]]] = {}
_SCAN_FORMAT = 1  # of the files in $PCS_HOME/scans; a file of another format is scanned again
_PERSIST_MIN = 8192  # characters: below this, parsing costs less than a cache file

#: the name prefix of a closure entry that is a script (a file run, not imported)
SCRIPT_PREFIX = "@"


def literal_imports(text: str) -> Imports:
    """Every import statement of ``text``, anywhere in it: (level, module, names), cached by content."""
    return _scanned(text)[0]


def script_literals(text: str) -> tuple[str, ...]:
    """String literals of ``text`` that name a relative ``.py`` file, cached by content."""
    return _scanned(text)[1]


def _scanned(text: str) -> tuple[Imports, tuple[str, ...]]:
    """What a static scan finds in ``text``: its imports and its ``*.py`` literals.

    One parse per content, kept in this process and, for a text of at least
    ``_PERSIST_MIN`` characters, in ``$PCS_HOME/scans`` under its sha256, so a
    new process reads a large module's scan instead of parsing it again (a
    small module parses faster than a cache file is written and read). The key is the content itself, so an entry can never be
    stale; an unreadable or foreign entry is scanned again and rewritten.
    """
    digest = sha256_bytes(text.encode("utf-8"))
    found = _SCANS.get(digest)
    if found is not None:
        return found
    cached = _cache_file("scans", digest) if len(text) >= _PERSIST_MIN else None
    found = _read_scan(cached) if cached is not None else None
    if found is None:
        found = _scan_text(text)
        if cached is not None:
            _write_cache(cached, json.dumps({"pcs_format": _SCAN_FORMAT, "imports": found[0],
                                             "scripts": found[1]}))
    _SCANS[digest] = found
    return found


def _scan_text(text: str) -> tuple[Imports, tuple[str, ...]]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        tree = None
    imports: list[tuple[int, str, tuple[str, ...]]] = []
    scripts: list[str] = []
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            imports.extend((0, alias.name, ()) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", tuple(a.name for a in node.names)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
            if (value.endswith(".py") and len(value) < 256 and "\n" not in value
                    and not os.path.isabs(value) and value not in scripts):
                scripts.append(value)
    return tuple(imports), tuple(scripts)


def _read_scan(path: Path) -> tuple[Imports, tuple[str, ...]] | None:
    """A scan read back from the cache; None when missing, unreadable or not of this format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("pcs_format") != _SCAN_FORMAT:
            return None
        imports = tuple((int(level), str(module), tuple(str(n) for n in names))
                        for level, module, names in data["imports"])
        return imports, tuple(str(s) for s in data["scripts"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _cache_file(kind: str, digest: str) -> Path | None:
    """Where a cache entry of ``kind`` keyed by ``digest`` lives; None when the cache cannot be made."""
    try:
        return _config.cache_dir(kind) / digest[:2] / f"{digest}.json"
    except OSError:
        return None  # a read-only home: the cache is an optimisation only


def _write_cache(path: Path, text: str) -> None:
    """Write a cache entry through a temp file and a rename (never half a file); errors ignored."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


# file -> (its identity when read, text, sha256): a module's source read once while the file stays put
_READS: dict[str, tuple[tuple[int, int, int, int], str, str]] = {}
# A file changed within this long of its last read may keep its size and mtime
# (coarse timestamps, several writes within one tick): such a read is not
# remembered, so a change in place is always seen, as git does with racy files.
_RACY_NS = 2_000_000_000


def read_source(path: Path) -> tuple[str, str]:
    """The source text of a Python file and its sha256, read again only when the file changed.

    Remembered by the file's identity (size, mtime, ctime, inode) as seen before
    and after the read, and only when its mtime is more than two seconds old, so
    an edit in place that keeps the size and lands within the same timestamp
    tick (on a file system with coarse timestamps) is never answered from memory;
    the ctime, which no one can set back, catches an mtime restored by hand.

    Raises:
        OSError, UnicodeDecodeError, SyntaxError: the file cannot be read as Python source.
    """
    key = str(path)
    before = os.stat(key)
    identity = (before.st_size, before.st_mtime_ns, before.st_ctime_ns, before.st_ino)
    cached = _READS.get(key)
    if cached is not None and cached[0] == identity:
        return cached[1], cached[2]
    text = importlib.util.decode_source(path.read_bytes())
    digest = sha256_bytes(text.encode("utf-8"))
    after = os.stat(key)
    settled = time.time_ns() - after.st_mtime_ns > _RACY_NS
    if settled and identity == (after.st_size, after.st_mtime_ns, after.st_ctime_ns, after.st_ino):
        _READS[key] = (identity, text, digest)
    else:
        _READS.pop(key, None)
    return text, digest


def _absolute_names(
    module: str, is_package: bool, imports: Iterable[tuple[int, str, tuple[str, ...]]]
) -> list[str]:
    """Absolute module names an import list may load, resolved against ``module``'s package."""
    names: list[str] = []
    for level, target, attrs in imports:
        if level:
            if not module:
                continue  # a component file's relative import: graded where it is noticed
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(level - 1):
                package = package.rpartition(".")[0]
            if not package:
                continue
            target = f"{package}.{target}" if target else package
        if not target:
            continue
        names.append(target)
        names.extend(f"{target}.{a}" for a in attrs if a != "*")
    return names


# -- where trees come from ---------------------------------------------------------------------


def materialise(files: Mapping[str, str | bytes | Path], stack: ExitStack) -> Path:
    """A folder in ``$PCS_HOME/sources`` holding ``files``, held in use.

    ``files`` maps a posix path to its text, its bytes (a data file), or a
    ``Path`` the folder links to (a data file too large to snapshot). The
    folder's name is a hash of the paths and contents, so equal snapshots share
    one folder; it is written through a temp folder marked with this process's
    id and renamed into place, so it appears complete or not at all.
    """

    def digest(content: str | bytes | Path) -> str:
        if isinstance(content, Path):
            return f"link:{content}"
        return sha256_bytes(content.encode("utf-8") if isinstance(content, str) else content)

    lines = sorted(f"{p}\0{digest(t)}" for p, t in files.items())
    entry = _config.cache_dir("sources") / sha256_bytes("\n".join(lines).encode("utf-8"))[:40]
    # A module found outside the component's folder (sys.path.insert(0, "../shared"))
    # is recorded as "../shared/featurize.py": the root goes that many folders down,
    # so the snapshot keeps the files' places relative to each other.
    depth = max((_climbs(rel) for rel in files), default=0)
    root = entry.joinpath(*[_ROOT_FOLDER] * depth)
    stack.enter_context(in_use(entry))
    if not entry.is_dir():
        def write(tmp: Path) -> None:
            base = tmp.joinpath(*[_ROOT_FOLDER] * depth)
            for rel, content in files.items():
                target = Path(os.path.normpath(base.joinpath(*_safe_parts(rel))))
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    target.symlink_to(content)
                    continue  # never chmod through a link: that would change the user's file
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content, encoding="utf-8")
                target.chmod(0o444)  # a snapshot is not edited in place
            base.mkdir(parents=True, exist_ok=True)
        _publish(entry, "materialise", write)
    return root


# the folder name a snapshot's root takes below the folders its ".." paths climb to
_ROOT_FOLDER = "_pcs_root"


def _climbs(rel: str) -> int:
    """How many folders a recorded path climbs above the root (its leading ".." parts)."""
    count = 0
    for part in PurePosixPath(rel).parts:
        if part != "..":
            break
        count += 1
    return count


def git_tree(repo: Any, commit: str, folder: str, stack: ExitStack) -> Path:
    """The files of ``folder`` (posix; "" for all) of a git commit, in ``$PCS_HOME/sources``.

    Args:
        repo: a ``GitRepo``; its cached clone is fetched only when it lacks the commit.
        commit: a full commit sha.
        folder: the folder to export, relative to the repo root.
        stack: holds the entry in use until it closes.
    """

    key = sha256_bytes(f"{repo.url}\0{commit}\0{folder}".encode())
    entry = _config.cache_dir("sources") / f"git-{key[:36]}"
    stack.enter_context(in_use(entry))
    if not entry.is_dir():
        _publish(entry, "export", lambda tmp: repo.export_files(
            commit, [folder] if folder else None, tmp
        ))
    return entry


def _publish(entry: Path, purpose: str, build: Callable[[Path], Any]) -> None:
    """Build a cache entry in a pid-marked temp folder next to it, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.pcs-{os.getpid()}-{purpose}-"))
    try:
        tmp.rmdir()  # builders that need a new folder (export_files) get one that does not exist
        build(tmp)
        tmp.mkdir(exist_ok=True)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process made the same entry first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _safe_parts(rel: str) -> tuple[str, ...]:
    """The parts of a recorded relative path: ".." only at its start (a module beside the root)."""
    parts = PurePosixPath(rel).parts
    climbs = _climbs(rel)
    rest = parts[climbs:]
    if not rest or PurePosixPath(rel).is_absolute() or any(p in ("", "..") for p in rest):

        raise NotReproducibleError(
            f"The recorded source path {rel!r} is not a relative path inside the repo; the "
            "record was altered, so pcs will not write it."
        )
    return parts


def _relative(path: Path, base: Path) -> str:
    if os.sep == "/":
        text, prefix = str(path), str(base).rstrip("/") + "/"
        if text.startswith(prefix) and "/." not in text and "//" not in text:
            return text[len(prefix):]  # a clean path under base: what relpath would say, quicker
        return os.path.relpath(path, base)
    return PurePosixPath(*Path(os.path.relpath(path, base)).parts).as_posix()


def _is_under(path: str, root: str) -> bool:
    return path.startswith(root.rstrip(os.sep) + os.sep)


@lru_cache(maxsize=1)
def _excluded_prefixes() -> tuple[str, ...]:
    """Folders whose files are never a component's own: the interpreter, site-packages, pcs."""
    places = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    try:
        places.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv's site module
        pass
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user, str):
        places.add(user)
    places.add(str(Path(__file__).resolve().parent.parent))  # the pcs package
    out: set[str] = set()
    for place in places:
        if place:
            out.add(place.rstrip(os.sep) + os.sep)
            out.add(os.path.realpath(place).rstrip(os.sep) + os.sep)
    return tuple(sorted(out))


def excluded_path(path: str) -> bool:
    """Whether ``path`` lies inside the interpreter's prefixes, site-packages or pcs."""
    candidate = path if path.endswith(os.sep) else path + os.sep
    return candidate.startswith(_excluded_prefixes())


# -- components: their trees, and their closures in a run command's code map ------------------

#: the file name of a class captured from __main__ in a snapshot of its closure
MAIN_FILE = "__pcs_main__.py"

# A closure handed to a tree: the modules pinned, and their text by sha256.
Closure = tuple[Sequence[ModuleFile], Mapping[str, str]]


@dataclass(frozen=True, kw_only=True)
class Part:
    """One component as the record sees it: where its source lives and what a rerun pins.

    The run core describes each component once (``Component._part()``) and
    hands the descriptions down; nothing here calls back into the core. What
    costs a read (the source text, the requirements file, the snapshot's
    problems) is asked for only when a record needs it.
    """

    key: str  # the component's identifier
    name: str
    repo: Repo | None
    file_path: str | None
    version: str | None  # the commit, branch or tag asked of a GitRepo
    snapshot: str | None  # the recorded text a rerun runs instead of the file
    recorded: Closure | None  # the recorded closure a rerun of recorded code serves
    legacy: tuple[Path, Path] | None  # (root, folder) where a record older than closures found helpers
    live_root: Path | None  # the folder a first run resolves the component's files from
    local_file: Path | None  # the file on this machine's disk that holds the source
    requirements_path: str | None
    source: Callable[[], str]  # the source text the component runs now
    requirements: Callable[[], str | None]  # the requirements file's text, when it declares one
    problems: Callable[[], list[str]]  # why the source snapshot may not be enough to rerun anywhere
    # a rerun of recorded code: data files read next to the code (posix path -> the recorded
    # bytes, or the live file a link points to), placed with the snapshot (pcs.record.reads)
    data: Mapping[str, bytes | Path] = field(default_factory=dict)
    data_root: Path | None = None  # where the recorded run read them, watched in a rerun too
    main_file: Path | None = None  # the script whose __main__ defines a captured class


def tree_for(part: Part, closure: Closure | None = None) -> Tree | None:
    """Where a component's files are for a load: live folder, git commit or snapshot.

    Args:
        part: the component.
        closure: modules pinned already (default: the recorded closure of a rerun).

    Returns:
        None for a component without files (captured from ``__main__``).
    """
    known, texts = closure if closure is not None else (part.recorded or ((), {}))
    if part.repo is None:
        # a class captured from a script's __main__: its helpers are the script folder's
        if part.snapshot is not None and known:
            files: dict[str, str | bytes | Path] = {MAIN_FILE: part.snapshot}
            files.update({m.path: texts[m.sha256] for m in known if m.sha256 in texts})
            return Tree(part.key, MAIN_FILE, opener=lambda stack: materialise(files, stack),
                        known=known, texts=texts, live=False)
        if part.main_file is not None and part.snapshot is None:
            return Tree(part.key, part.main_file.name, root=part.main_file.parent, known=known,
                        texts=texts, search_path=True)
        return None
    if not part.file_path:
        return None
    file_path = PurePosixPath(part.file_path.replace("\\", "/")).as_posix()
    if part.snapshot is not None:
        files = {**part.data, file_path: part.snapshot}
        files.update({m.path: texts[m.sha256] for m in known if m.sha256 in texts})
        return Tree(
            part.key, file_path,
            opener=lambda stack: materialise(files, stack),
            known=known, texts=texts, live=False, fallback=part.legacy,
        )
    if isinstance(part.repo, GitRepo):
        repo, version = part.repo, part.version
        folder = posixpath.dirname(file_path)

        def export(stack: ExitStack) -> Path:
            return git_tree(repo, repo.resolve(version), folder, stack)

        return Tree(part.key, file_path, opener=export, known=known, texts=texts)
    local, root = part.local_file, part.live_root
    if local is None or root is None:  # nothing live to load from
        return None
    installed = excluded_path(str(root))
    return Tree(
        part.key, relative_file_path(local, root), root=root, known=known,
        texts=texts, live=not installed, search_path=not installed,
    )


def session_for(parts: Sequence[Part], closures: Mapping[str, Closure] | None = None) -> Session:
    """A session over the trees of ``parts``.

    Args:
        parts: the components to load, root first.
        closures: modules pinned per component identifier (default: none for a
            first run, the recorded closure for a rerun of recorded code).
    """
    trees = []
    for part in parts:
        tree = tree_for(part, (closures or {}).get(part.key))
        if tree is not None:
            trees.append(tree)
    return Session(trees)


def relative_file_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, posix; refused when it lies outside."""
    try:
        return str(PurePosixPath(path.relative_to(root)))
    except ValueError:
        raise ComponentFileNotFoundError(
            f"{path} is not inside the repo folder {root}; pass a repo that contains it."
        ) from None


def closure_key(component_id: str, module: str) -> str:
    """The key of a closure module's entry in a command's code map."""
    return f"{component_id}:{module}"


def module_entries(code: Mapping[str, dict[str, str]], component_id: str) -> dict[str, dict[str, str]]:
    """The entries of ``component_id``'s closure modules in a code map, by key."""
    return {
        key: entry for key, entry in code.items()
        if key != component_id and entry.get("component") == component_id and "module" in entry
    }


def closures(
    code: Mapping[str, dict[str, str]], sources: Mapping[str, str], keys: Iterable[str]
) -> dict[str, Closure]:
    """Per component identifier in ``keys``: its closure's modules and the texts held of them."""
    out: dict[str, Closure] = {}
    for key in keys:
        known = [
            ModuleFile(str(e["module"]), str(e["path"]), str(e["sha256"]))
            for e in module_entries(code, key).values()
            if e.get("sha256")
        ]
        out[key] = (known, {m.sha256: sources[m.sha256] for m in known if m.sha256 in sources})
    return out


def component_texts(
    code: Mapping[str, Mapping[str, str]], sources: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(identifier, source text) of every component whose text is held: what a scan starts from."""
    return [
        (cid, sources[entry["sha256"]])
        for cid, entry in code.items()
        if "module" not in entry and entry.get("sha256") in sources
    ]


def absorb(
    session: Session,
    code: dict[str, dict[str, str]],
    sources: dict[str, str],
    repo_ids: Mapping[str, str],
) -> bool:
    """Add the modules ``session`` pinned to a code map, and their texts to ``sources``.

    Args:
        session: the session that loaded the components.
        code: the code map, changed in place.
        sources: texts by sha256, added to in place.
        repo_ids: the repo identifier of each component (``"<inline>"`` without one).

    Returns:
        Whether the code map changed.
    """
    changed = False
    for served in session.closure():
        repo_id = repo_ids.get(served.key)
        if repo_id is None:
            continue
        key = closure_key(served.key, served.name)
        entry = {
            "component": served.key,
            "module": served.name,
            "path": served.module.path,
            "file": f"{repo_id}:{served.module.path}",
            "sha256": served.module.sha256,
        }
        if served.text is not None:
            sources.setdefault(served.module.sha256, served.text)
        if code.get(key) != entry:
            code[key] = entry
            changed = True
    return changed

