"""Component: a Python module, class or class instance, with a DAG of dependencies.

A component knows where its source lives (a repo and a file path, or source
captured from ``__main__``), how to build its managed object (the module, the
class, or an instance of the class), and which other components to inject as
attributes before ``__init__`` runs. Running an entry point through a
component records a reproducible ``ComponentRun``.

A component file is loaded fresh for every run, together with the modules it
imports from its own repo (its closure, see :mod:`pcs.record.closure`): they are
served from the files as they are (a first run), from a git commit exported
into ``$PCS_HOME/sources``, or from a recorded snapshot materialised there (a
rerun), never from a stale ``sys.modules`` entry; ``__file__`` is a real path.
"""

from __future__ import annotations

import difflib
import inspect
import sys
import textwrap
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcs import _keys
from pcs._features import feature
from pcs.argument_set import ArgumentSet
from pcs.errors import (
    ArgumentError,
    ComponentError,
    ComponentFileNotFoundError,
    DependencyError,
    EntryPointNotFoundError,
    ScriptError,
)
from pcs.record import closure
from pcs.record.closure import Closure, Part, relative_file_path
from pcs.record.script import SCRIPT_CLASS_NAME, SCRIPT_ENTRY_POINT, ScriptTarget
from pcs.registry import InMemoryRegistry, Registry
from pcs.repo import GitRepo, LocalRepo, Repo
from pcs.run import Run, run_class
from pcs.specs import sha256_bytes, to_recordable

__all__ = ["Component", "DEFAULT_ENTRY_POINT_NAME"]

DEFAULT_ENTRY_POINT_NAME = "run"


class Component:
    """A module, class or class instance that pcs can run reproducibly.

    Build one with :meth:`from_class`, :meth:`from_repo` or :meth:`from_registry`.

    Example::

        c = Component.from_class(Simple, instantiate=True)
        run = c.run_with_arg_set("fn", {"Simple": {"__init__": {"x": 1}, "fn": {"input": "hi"}}})
        run.return_value
    """

    def __init__(
        self,
        identifier: str,
        *,
        repo: Repo | None = None,
        file_path: str | None = None,
        class_name: str | None = None,
        instantiate: bool = False,
        requirements_path: str | None = None,
        managed_obj: Any = None,
        inline_source: str | None = None,
        inline_problems: list[str] | None = None,
    ) -> None:
        if not identifier or not isinstance(identifier, str):
            raise ComponentError("A component needs a non-empty string identifier.")
        self.identifier = identifier
        self.name, _, version = identifier.partition("==")
        self.version: str | None = version or None
        self.repo = repo
        self.file_path = file_path
        self.class_name = class_name
        self.instantiate = bool(instantiate)
        self.requirements_path = requirements_path
        self.dependencies: dict[str, Component] = {}
        self._managed = managed_obj
        self._inline_source = inline_source
        if repo is not None and not file_path:
            raise ComponentError(
                f"Component {identifier!r} has a repo but no file_path; pass the path of its "
                "source file inside the repo."
            )
        self._inline_problems = list(inline_problems or [])
        self._ran_live_class = False
        self._package: str | None = None  # the package its file was last loaded in
        # a class of a script's __main__: the script, whose folder holds the helpers it imports
        self._main_file: Path | None = None
        self._source_override: str | None = None
        self._requirements_override: str | None = None
        # a rerun of recorded code: the recorded closure, served from a materialised snapshot
        self._recorded_closure: Closure | None = None
        # a record from before closures were recorded: (root, folder) on disk where its
        # sibling imports were found, as they were then
        self._legacy_dirs: tuple[Path, Path] | None = None
        # a rerun of recorded code: the data files the run read next to its code (see Part.data)
        self._recorded_data: dict[str, bytes | Path] = {}
        self._recorded_data_root: Path | None = None
        # the entry point when none is named (a function component: the function)
        self._default_entry_point: str | None = None

    # -- constructors -------------------------------------------------------------

    @classmethod
    def from_class(
        cls,
        managed_cls: type,
        repo: Repo | None = None,
        identifier: str | None = None,
        instantiate: bool = False,
    ) -> Component:
        """A component that manages a class already imported in this process.

        A class from a module file is recorded as that file in a LocalRepo of its
        folder, named after the module's import path (not the folder's place on
        disk, so two copies of the code record the same command). A class
        defined in ``__main__`` (a script or a REPL), or inside a function, has
        its source and the globals it uses captured with dill.
        """
        if not inspect.isclass(managed_cls):
            raise ComponentError(
                f"Component.from_class needs a class; got {type(managed_cls).__name__}."
            )
        identifier = identifier or managed_cls.__name__
        module = sys.modules.get(managed_cls.__module__)
        module_file = getattr(module, "__file__", None)
        top_level = getattr(module, managed_cls.__name__, None) is managed_cls
        if managed_cls.__module__ != "__main__" and module_file and top_level:
            path = Path(module_file).resolve()
            # the folder's import name (the package, or the top-level module itself)
            where = managed_cls.__module__.rpartition(".")[0] or managed_cls.__module__
            repo = repo or LocalRepo(f"local_dir_{sha256_bytes(where.encode())[:8]}", path.parent)
            if isinstance(repo, LocalRepo):
                file_path = relative_file_path(path, repo.local_dir)
            else:
                file_path = path.name
            return cls(
                identifier,
                repo=repo,
                file_path=file_path,
                class_name=managed_cls.__name__,
                instantiate=instantiate,
                managed_obj=managed_cls,
            )
        source, problems = _capture_main_source(managed_cls)
        component = cls(
            identifier,
            class_name=managed_cls.__name__,
            instantiate=instantiate,
            managed_obj=managed_cls,
            inline_source=source,
            inline_problems=problems,
        )
        component._main_file = _script_file(managed_cls)
        return component

    @classmethod
    def from_repo(
        cls,
        repo: Repo,
        identifier: str,
        file_path: str,
        class_name: str | None = None,
        instantiate: bool = False,
        requirements_path: str | None = None,
    ) -> Component:
        """A component whose source is ``file_path`` in ``repo``.

        For a ``GitRepo`` the version in ``identifier`` (``name==VERSION``) picks
        the commit, branch or tag; without one, the repo's HEAD.
        """
        if not isinstance(repo, Repo):
            raise ComponentError(
                f"Component.from_repo needs a LocalRepo or GitRepo; got {type(repo).__name__}."
            )
        if not file_path:
            raise ComponentError(f"Component {identifier!r} needs a file_path.")
        return cls(
            identifier,
            repo=repo,
            file_path=file_path,
            class_name=class_name,
            instantiate=instantiate,
            requirements_path=requirements_path,
        )

    @classmethod
    def from_script(cls, path: str | Path, identifier: str | None = None) -> Component:
        """A component that runs the Python script at ``path`` as ``__main__``.

        Its one entry point, ``run``, takes ``argv`` (the script's ``sys.argv[1:]``).
        The script's folder is its repo: the helper modules it imports from there
        are part of its recorded code. What the script parses with argparse or
        click becomes params of the run under the script's own names.

        Raises:
            ScriptError: ``path`` does not exist, is a folder, or does not compile.
        """
        file = Path(path)
        if not file.exists():
            raise ScriptError(
                f"No script at {path}: the file does not exist. Check the path (relative to "
                f"{Path.cwd()})."
            )
        if file.is_dir():
            raise ScriptError(
                f"{path} is a folder, not a Python script. Give the script's file "
                f"(pcs run {path}/main.py), or run a package's __main__.py with -m PACKAGE."
            )
        file = file.resolve()
        _check_compiles(file, str(path))
        name = identifier or _script_name(file.stem)
        repo = LocalRepo(f"{name}_folder", file.parent)
        return cls(name, repo=repo, file_path=file.name, class_name=SCRIPT_CLASS_NAME)

    @classmethod
    def from_module(cls, module: str, identifier: str | None = None) -> Component:
        """A component that runs module ``module`` as ``__main__``, as ``python -m module`` does.

        A package runs its ``__main__.py``. The folder on ``sys.path`` that holds
        the module's top-level package is its repo.

        Raises:
            ScriptError: no such module is installed or importable from here, or it
                is not a Python source file.
        """
        import importlib.util

        if not module or not all(part.isidentifier() for part in module.split(".")):
            raise ScriptError(f"{module!r} is not a module name (like package.module).")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            spec, why = None, f" ({type(exc).__name__}: {exc})"
        else:
            why = ""
        if spec is not None and spec.submodule_search_locations is not None:
            module = f"{module}.__main__"
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):
                spec = None
            if spec is None:
                raise ScriptError(
                    f"{module.rpartition('.')[0]} is a package without a __main__.py, so it cannot "
                    "be run with -m. Run one of its modules (-m package.module)."
                )
        if spec is None or not spec.origin:
            raise ScriptError(
                f"No module named {module!r}{why}: it is not installed in this Python "
                f"({sys.executable}) nor importable from {Path.cwd()}. Install it, or run it "
                "from the folder that holds it."
            )
        origin = Path(spec.origin)
        if origin.suffix != ".py" or not origin.is_file():
            raise ScriptError(
                f"Module {module!r} is {origin.name}, not a Python source file pcs can run and record."
            )
        origin = origin.resolve()
        root = origin.parents[module.count(".")]
        _check_compiles(origin, module)
        name = identifier or _script_name(module.removesuffix(".__main__").replace(".", "_"))
        repo = LocalRepo(f"{name}_folder", root)
        return cls(name, repo=repo, file_path=relative_file_path(origin, root),
                   class_name=SCRIPT_CLASS_NAME)

    @classmethod
    def from_function(cls, fn: Any, identifier: str | None = None) -> Component:
        """A component that is one function: its entry point is the function's name.

        A function from a module file is recorded as that module (a module
        component); one defined in ``__main__`` (a notebook, a script, a REPL)
        has its source and the globals it uses captured, as ``from_class`` does
        for a class, so runs of it can be rerun without the notebook.

        Example::

            def train(lr=0.1, epochs=3):
                ...
            run = Component.from_function(train).run_with_arg_set(
                "train", {"train": {"train": {"lr": 0.5}}}, seed=1)
        """
        if not inspect.isfunction(fn):
            raise ComponentError(
                f"Component.from_function needs a function defined with def; got "
                f"{type(fn).__name__}. For a class use Component.from_class."
            )
        if fn.__name__ == "<lambda>" or "<locals>" in fn.__qualname__:
            raise ComponentError(
                f"{fn.__qualname__} is a lambda or is defined inside another function, so pcs "
                "cannot record it as a component. Define it at the top level with def."
            )
        name: str = fn.__name__
        identifier = identifier or name
        module = sys.modules.get(fn.__module__)
        module_file = getattr(module, "__file__", None)
        if fn.__module__ != "__main__" and module_file and getattr(module, fn.__name__, None) is fn:
            path = Path(module_file).resolve()
            where = fn.__module__.rpartition(".")[0] or fn.__module__
            repo = LocalRepo(f"local_dir_{sha256_bytes(where.encode())[:8]}", path.parent)
            component = cls(identifier, repo=repo, file_path=relative_file_path(path, repo.local_dir))
            component._default_entry_point = name
            return component
        source, problems = _capture_main_source(fn)
        holder = types.SimpleNamespace(**{fn.__name__: fn, "DEFAULT_ENTRY_POINT": fn.__name__})
        return cls(identifier, managed_obj=holder, inline_source=source, inline_problems=problems)

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> Component:
        """Build a component and its whole dependency DAG from a registry."""
        component_specs, repo_specs = registry.get_component_dag_specs(identifier)
        repos = {
            rid: Repo.from_spec(spec, base_dir=registry.base_dir) for rid, spec in repo_specs.items()
        }
        built: dict[str, Component] = {}
        for cid, spec in component_specs.items():
            built[cid] = cls._from_spec(spec, repos)
        for cid, spec in component_specs.items():
            for attr, dep_id in (spec.get("dependencies") or {}).items():
                dep_spec_id = registry.get_component_spec(str(dep_id))["identifier"]
                built[cid].dependencies[str(attr)] = built[dep_spec_id]
        root_id = registry.get_component_spec(identifier)["identifier"]
        root = built[root_id]
        root.dependency_list()  # refuses cycles now, not at run time
        return root

    @classmethod
    def from_registry_file(cls, path: str | Path, identifier: str) -> Component:
        """Build a component from a registry YAML file (e.g. ``components.yaml``)."""
        return cls.from_registry(InMemoryRegistry.from_yaml(path), identifier)

    @classmethod
    def _from_spec(cls, spec: Mapping[str, Any], repos: Mapping[str, Repo]) -> Component:
        identifier = spec["identifier"]
        repo_id = spec.get("repo")
        file_path = spec.get("file_path")
        if repo_id is not None and file_path is None:
            raise ComponentError(f"Component {identifier!r} has a repo but no file_path.")
        if repo_id is None and file_path is not None:
            raise ComponentError(f"Component {identifier!r} has a file_path but no repo.")
        instantiate = spec.get("instantiate", False)
        if not isinstance(instantiate, bool):
            raise ComponentError(
                f"Component {identifier!r} has instantiate={instantiate!r}; use true or false."
            )
        return cls(
            identifier,
            repo=repos[repo_id] if repo_id is not None else None,
            file_path=str(file_path) if file_path is not None else None,
            class_name=spec.get("class_name"),
            instantiate=instantiate,
            requirements_path=spec.get("requirements_path"),
        )

    # -- the DAG ---------------------------------------------------------------------

    def add_dependency(self, component: Component, attribute_name: str | None = None) -> None:
        """Inject ``component``'s managed object as ``attribute_name`` (default: its name)."""
        if not isinstance(component, Component):
            raise DependencyError(
                f"add_dependency needs a Component; got {type(component).__name__}."
            )
        attribute_name = attribute_name or component.name
        if not attribute_name.isidentifier():
            raise DependencyError(
                f"{attribute_name!r} is not a valid attribute name for a dependency."
            )
        wired = self.dependencies.get(attribute_name)
        if wired is component:
            return
        if wired is not None:
            raise DependencyError(
                f"Component {self.identifier!r} already has the dependency {wired.identifier!r} "
                f"as {attribute_name!r}; adding {component.identifier!r} there would silently "
                "replace it. Pass another attribute_name, or build the component again without "
                "the first one."
            )
        self.dependencies[attribute_name] = component
        try:
            self.dependency_list()
        except DependencyError:
            del self.dependencies[attribute_name]
            raise

    def dependency_list(self) -> list[Component]:
        """This component and every component it depends on, each once, self first."""
        order: list[Component] = []
        seen: dict[str, Component] = {}

        def visit(component: Component, path: tuple[str, ...]) -> None:
            if component.identifier in path:
                cycle = " -> ".join(path + (component.identifier,))
                raise DependencyError(
                    f"Dependency cycle {cycle}. Components must form a DAG; remove one "
                    "of these dependencies."
                )
            if component.identifier in seen:
                if seen[component.identifier] is not component:
                    _check_same(seen[component.identifier], component)
                return
            seen[component.identifier] = component
            order.append(component)
            for dep in component.dependencies.values():
                visit(dep, path + (component.identifier,))

        visit(self, ())
        return order

    # -- source ------------------------------------------------------------------------

    @property
    def is_script(self) -> bool:
        """Whether this component is a plain script run as ``__main__`` (see :meth:`from_script`)."""
        return self.class_name == SCRIPT_CLASS_NAME and self.repo is not None

    @property
    def is_inline(self) -> bool:
        """Whether the source was captured from ``__main__`` rather than read from a file."""
        return self.repo is None

    def source(self) -> str:
        """The source text this component runs now (a rerun's snapshot when set)."""
        if self._source_override is not None:
            return self._source_override
        if self.repo is None:
            if self._inline_source is None:
                raise ComponentError(
                    f"Component {self.identifier!r} has no source pcs could capture "
                    f"({'; '.join(self._inline_problems) or 'no file and no inline source'}). "
                    "Define the class in a module file and use Component.from_repo."
                )
            return self._inline_source
        if not self.file_path:
            raise ComponentError(
                f"Component {self.identifier!r} has repo {self.repo.identifier!r} but no "
                "file_path, so pcs cannot find its source. Set file_path to the path of its "
                "file inside the repo."
            )
        return self.repo.read_source(self.file_path, self._repo_version())

    def _repo_version(self) -> str | None:
        return self.version if isinstance(self.repo, GitRepo) else None

    def _use_git_commit(
        self, repo: GitRepo, file_path: str, commit: str, requirements_path: str | None
    ) -> None:
        """Read this component from ``repo`` at ``commit`` from now on (``code="git"``)."""
        self.repo = repo
        self.file_path = file_path
        self.version = commit
        self.identifier = f"{self.name}=={commit}"
        self.requirements_path = requirements_path
        self._managed = None
        self._source_override = None
        self._requirements_override = None
        self._recorded_closure = None
        self._legacy_dirs = None

    def source_label(self) -> str:
        """A readable name for the component's source file."""
        if self.repo is None:
            return f"<__main__>/{self.class_name or self.name}.py"
        return f"{self.repo.identifier}:{self.file_path}"

    def local_source_file(self) -> Path | None:
        """The file on this machine's disk that holds the source, when there is one."""
        if self.repo is None or self.file_path is None or self._source_override is not None:
            return None
        return self.repo.local_file(self.file_path)

    def snapshot_problems(self) -> list[str]:
        """Reasons the source snapshot may not be enough to rerun anywhere."""
        problems = list(self._inline_problems)
        if self._ran_live_class:
            problems.append(
                f"{self.source_label()} cannot be executed on its own (it imports relative to "
                "its package), so the class imported in this process ran; the snapshot "
                "may not match it if the file changed since the import"
            )
        try:
            text = self.source()
        except ComponentError as exc:
            return problems + [str(exc)]
        relative = _relative_imports(text)
        if relative and self._package is None:
            problems.append(
                f"{self.source_label()} imports files next to it relative to its package "
                f"({', '.join(relative)}), which pcs can only import from the package as installed"
            )
        return problems

    # -- building the managed object ----------------------------------------------------------

    def _part(self) -> Part:
        """This component as the record sees it (see :class:`pcs.record.closure.Part`)."""
        return Part(
            key=self.identifier,
            name=self.name,
            repo=self.repo,
            file_path=self.file_path,
            version=self._repo_version(),
            snapshot=self._source_override,
            recorded=self._recorded_closure,
            legacy=self._legacy_dirs,
            data=dict(self._recorded_data),
            data_root=self._recorded_data_root,
            live_root=self._live_root(),
            local_file=self.local_source_file(),
            requirements_path=self.requirements_path,
            source=self.source,
            requirements=self.requirements_text,
            problems=self.snapshot_problems,
            main_file=self._main_file if self._source_override is None else None,
        )

    def _live_root(self) -> Path | None:
        """The folder a first run resolves this component's files from (its repo root)."""
        if not isinstance(self.repo, LocalRepo) or not self.file_path or self._source_override is not None:
            return None
        local = self.repo.local_file(self.file_path)
        root = self.repo.local_dir
        try:
            local.relative_to(root)
        except ValueError:
            return local.parent  # a file_path leading out of the repo folder
        return root

    def _load_target(self) -> Any:
        """The module or class this component manages, freshly executed from its source."""
        return self._load_targets(components=[self])[self.identifier]

    def _load_target_in(self, session: closure.Session) -> Any:
        """Execute this component's source in ``session``'s namespace; its module or class."""
        tree = session.tree(self.identifier)
        path = tree.component_file if tree is not None else None
        if self._managed is not None and self._source_override is None:
            if self.repo is None:
                return self._managed  # captured from __main__: the snapshot is this class
            # A class imported from a module file runs from the file's text, like its
            # snapshot, so an edit since the import cannot make the record lie. A module
            # that only works inside its package falls back to the imported class.
            try:
                target = self._exec_target(self.source(), path, session)
                self._ran_live_class = False
                return target
            except ComponentError as exc:
                if not isinstance(exc.__cause__, ImportError):
                    raise
                self._ran_live_class = True
                return self._managed
        return self._exec_target(self.source(), path, session)

    def _exec_target(self, text: str, path: Path | None, session: closure.Session) -> Any:
        if path is not None:
            session.note_local_file(path)
        if self.is_script:
            # a script runs when its entry point is called, inside the run, not when loaded
            return ScriptTarget(text, path, self.file_path or "", self.source_label())
        package = session.package_of(self.identifier)
        self._package = package
        module = _exec_module(text, self.source_label(), self.name, path, package)
        session.note_component_module(
            module.__name__, text, module.__file__ or self.source_label(), package
        )
        if self.class_name is None:
            return module
        try:
            target = getattr(module, self.class_name)
        except AttributeError:
            raise ComponentError(
                f"{self.source_label()} defines no class {self.class_name!r} (component "
                f"{self.identifier!r}). Check 'class_name' in the registry."
            ) from None
        if not inspect.isclass(target):
            raise ComponentError(
                f"{self.class_name!r} in {self.source_label()} is a "
                f"{type(target).__name__}, not a class."
            )
        return target

    def resolve_entry_point(self, entry_point: str | None) -> str:
        """The entry point to call: the given one, or ``DEFAULT_ENTRY_POINT``, or ``run``."""
        if entry_point:
            return entry_point
        if self.is_script:
            return SCRIPT_ENTRY_POINT
        if self._default_entry_point:
            return self._default_entry_point
        target = self._load_target()
        return str(getattr(target, "DEFAULT_ENTRY_POINT", DEFAULT_ENTRY_POINT_NAME))

    def check_entry_point(self, entry_point: str, target: Any = None) -> None:
        """Refuse an entry point the managed object does not have, before any run starts."""
        target = target if target is not None else self._load_target()
        member = getattr(target, entry_point, None)
        if entry_point.startswith("__") or not callable(member):
            available = sorted(
                n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None))
            )
            raise EntryPointNotFoundError(
                f"Component {self.identifier!r} has no entry point {entry_point!r}. "
                f"Available: {', '.join(available) or 'none'}."
            )

    def get_object(self, arg_set: ArgumentSet | Mapping[str, Any] | None = None) -> Any:
        """Build the managed object with its dependencies injected and ``__init__`` called."""
        objects = self._build_objects(ArgumentSet.coerce(arg_set), self._load_targets())
        return objects[self.identifier]

    def _load_targets(self, components: list[Component] | None = None) -> dict[str, Any]:
        """Load the DAG's components (or ``components``) in a session of their own."""
        components = components if components is not None else self.dependency_list()
        session = closure.session_for([c._part() for c in components])
        try:
            with session:
                return self._load_targets_in(session, components)
        finally:
            session.close()

    def _load_targets_in(
        self, session: closure.Session, components: list[Component] | None = None
    ) -> dict[str, Any]:
        components = components if components is not None else self.dependency_list()
        return {c.identifier: c._load_target_in(session) for c in components}

    def check_argument_names(self, arg_set: ArgumentSet) -> None:
        """Refuse arguments for components that are not in this component's DAG."""
        names = {c.name for c in self.dependency_list()}
        unknown = [n for n in arg_set.component_names() if n not in names]
        if unknown:
            raise ArgumentError(
                f"The arguments name component(s) {', '.join(unknown)}, which are not part of "
                f"{self.identifier!r} (its components: {', '.join(sorted(names))}). "
                "Use component names as the top-level keys of the ArgumentSet."
            )

    def check_arguments(
        self, arg_set: ArgumentSet, entry_point: str, targets: Mapping[str, Any] | None = None
    ) -> None:
        """Bind the arguments to the functions they are for, before any run exists.

        Refuses arguments for components outside the DAG, functions a component
        does not have, names a function does not take (naming the closest one),
        required arguments that are missing, and an instance method as the entry
        point of a component that is not instantiated.

        Raises:
            ArgumentError: with what is wrong and how to fix it.
        """
        self.check_argument_names(arg_set)
        targets = targets if targets is not None else self._load_targets()
        by_name = {c.name: c for c in self.dependency_list()}
        given = arg_set.to_dict()
        for component in by_name.values():
            target = targets[component.identifier]
            functions = dict(given.get(component.name, {}))
            if component is self:
                functions.setdefault(entry_point, {})
            if component.instantiate:
                functions.setdefault("__init__", {})
            for function, kwargs in functions.items():
                _check_call(component, target, function, kwargs, entry=function == entry_point
                            and component is self)

    def _build_objects(self, arg_set: ArgumentSet, targets: Mapping[str, Any]) -> dict[str, Any]:
        self.check_argument_names(arg_set)
        built: dict[str, Any] = {}

        def build(component: Component) -> Any:
            if component.identifier in built:
                return built[component.identifier]
            deps = {attr: build(dep) for attr, dep in component.dependencies.items()}
            target = targets[component.identifier]
            init_args = arg_set.get_function_args(component.name, "__init__")
            if component.instantiate:
                obj = target.__new__(target)
                for attr, dep_obj in deps.items():
                    setattr(obj, attr, dep_obj)
                try:
                    obj.__init__(**init_args)
                except TypeError as exc:
                    raise _argument_error(component, "__init__", obj.__init__, init_args, exc)
            else:
                if init_args:
                    raise ArgumentError(
                        f"Component {component.identifier!r} is not instantiated, so it takes "
                        "no __init__ arguments. Set instantiate=True, or drop the "
                        "__init__ arguments."
                    )
                obj = target
                for attr, dep_obj in deps.items():
                    setattr(obj, attr, dep_obj)
            _mark_managed(obj, component)
            built[component.identifier] = obj
            return obj

        build(self)
        return built

    # -- running --------------------------------------------------------------------

    def run(self, entry_point: str | None = None, seed: int | None = None, **kwargs: Any) -> Any:
        """Run an entry point with keyword arguments and return its value (recorded as a run)."""
        entry_point = self.resolve_entry_point(entry_point)
        arg_set = ArgumentSet({self.name: {entry_point: kwargs}} if kwargs else {})
        return self.run_with_arg_set(entry_point, arg_set, seed=seed).return_value

    def run_with_arg_set(
        self,
        entry_point: str | None,
        args: ArgumentSet | Mapping[str, Any] | None = None,
        seed: int | None = None,
        *,
        run_name: str | None = None,
        experiment_id: str | None = None,
        return_value_format: str = "auto",
    ) -> Run:
        """Run an entry point with an ArgumentSet (or a dict of that shape).

        Returns:
            The finished ``ComponentRun``; its ``return_value`` is the entry point's.
        """
        run_type = run_class(_keys.RUN_TYPE_COMPONENT)  # pcs.ComponentRun, above this module
        return run_type.from_component(  # type: ignore[attr-defined, no-any-return]
            self,
            entry_point,
            ArgumentSet.coerce(args),
            seed,
            run_name=run_name,
            experiment_id=experiment_id,
            return_value_format=return_value_format,
        )

    def sweep(
        self,
        entry_point: str | None = None,
        arg_set: ArgumentSet | Mapping[str, Any] | None = None,
        grid: Mapping[str, Sequence[Any]] | None = None,
        samples: int | None = None,
        seeds: Sequence[int | None] = (None,),
        executor: str = "process",
        max_workers: int | None = None,
        run_name: str | None = None,
        **options: Any,
    ) -> Run:
        """Run ``entry_point`` once per combination of ``grid`` values and seeds, as one sweep.

        Args:
            entry_point: the entry point every trial calls (default as for ``run``).
            arg_set: the arguments every trial shares.
            grid: ``{"COMPONENT.FUNCTION.ARG": [values]}``: every combination is a trial.
            samples: draw this many distinct combinations from ``grid`` (recorded seed).
            seeds: repeat every combination once per seed (None: a drawn seed).
            executor: ``"process"`` (a local process pool), ``"serial"`` or ``"ray"``.
            max_workers: parallel trials (default: the CPU count).
            run_name: the sweep run's name.
            **options: see ``pcs.sweep.run_sweep`` (``ray_address``, ``plot_metric``, ...).

        Returns:
            The finished ``SweepRun``: the outer run, with one ComponentRun per trial.

        Example::

            sweep = agent.sweep("run_episodes", grid={"agent.run_episodes.num_episodes": [5, 10]},
                                seeds=(1, 2, 3))
            sweep.best("mean_reward").rerun(verify=True)
        """
        return feature("sweep")(  # type: ignore[no-any-return]
            self, entry_point, arg_set, grid, samples, seeds, executor, max_workers, run_name,
            **options,
        )

    # -- specs and registries ----------------------------------------------------------

    def to_spec(self) -> dict[str, Any]:
        """This component's flat spec (dependencies by identifier)."""
        spec: dict[str, Any] = {
            "identifier": self.identifier,
            "repo": self.repo.identifier if self.repo is not None else None,
            "file_path": self.file_path,
            "class_name": self.class_name,
            "instantiate": self.instantiate,
            "dependencies": {a: d.identifier for a, d in sorted(self.dependencies.items())},
        }
        if self.requirements_path:
            spec["requirements_path"] = self.requirements_path
        return spec

    def to_registry(
        self, registry: Registry | None = None, recurse: bool = True, force: bool = False
    ) -> Registry:
        """Add this component (and, with ``recurse``, its DAG and repos) to a registry."""
        registry = registry if registry is not None else InMemoryRegistry()
        components = self.dependency_list() if recurse else [self]
        for component in components:
            if component.repo is not None:
                registry.add_repo_spec(component.repo.to_spec(), force=force)
            registry.add_component_spec(component.to_spec(), force=force)
        return registry

    def requirements_text(self) -> str | None:
        """The content of the component's requirements file, when it declares one."""
        if not self.requirements_path:
            return None
        if self._requirements_override is not None:
            return self._requirements_override
        if self.repo is None:
            return None
        try:
            return self.repo.read_source(self.requirements_path, self._repo_version())
        except ComponentFileNotFoundError:
            raise ComponentFileNotFoundError(
                f"Component {self.identifier!r} declares requirements_path "
                f"{self.requirements_path!r}, but the file does not exist in repo "
                f"{self.repo.identifier!r}. Fix or remove requirements_path."
            ) from None

    def to_versioned_component(self, force: bool = False) -> Component:
        """This component pinned to the current commit of the git repo holding its file."""
        return feature("versioned_component")(self, force=force)  # type: ignore[no-any-return]

    def to_frozen_registry(self, force: bool = False) -> InMemoryRegistry:
        """A registry of this component's DAG with every component pinned to a commit."""
        return feature("frozen_registry")(self, force=force)  # type: ignore[no-any-return]

    def print_status_tree(self) -> None:
        """Print the component's dependency tree."""
        feature("print_component_tree")(self)

    def __repr__(self) -> str:
        return f"Component({self.identifier!r})"


# -- helpers -----------------------------------------------------------------------------------


def _check_same(first: Component, second: Component) -> None:
    if first.to_spec() != second.to_spec():
        raise DependencyError(
            f"Two different components share the identifier {first.identifier!r}. "
            "Give them different identifiers (name==version)."
        )


def _exec_module(
    source: str, label: str, name: str, path: Path | None = None, package: str | None = None
) -> types.ModuleType:
    """Execute ``source`` as a fresh module.

    Each run gets a fresh module (no state leaks between runs); compiled code is
    cached by content. The module is registered in ``sys.modules`` under a name
    derived from its content so dataclasses and pickling can find it. Its
    ``__file__`` is ``path``, the file on disk it was read from (a live file,
    an exported commit or a materialised snapshot), or the label when the
    source has no file (captured from ``__main__``). Imports of the files next
    to it are served by the active closure session, not by ``sys.path``. A file
    inside a package runs with ``__package__`` set to it, so its relative
    imports load the package's modules under their real names.
    """
    digest = sha256_bytes(source.encode("utf-8"))
    filename = str(path) if path is not None else label
    try:
        code = closure.compiled(source, filename, digest)
    except SyntaxError as exc:
        raise ComponentError(f"{label} does not compile: {exc}") from None
    safe = "".join(c if c.isalnum() else "_" for c in name)
    module_name = f"_pcs_components.{safe}_{digest[:12]}"
    module = types.ModuleType(module_name)
    module.__file__ = filename
    if package:
        module.__package__ = package
    if "_pcs_components" not in sys.modules:
        # the package of component modules, so that importing one by name works (pickle does,
        # to send a function of a component's file to a worker process by reference)
        holder = types.ModuleType("_pcs_components")
        holder.__path__ = []
        sys.modules["_pcs_components"] = holder
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - running the component's code is the point
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ComponentError(
            f"Loading {label} failed with {type(exc).__name__}: {exc}"
        ) from exc
    return module


def call_entry_point(fn: Any, kwargs: Mapping[str, Any]) -> Any:
    """Call an entry point and return its value, its body run to the end.

    An ``async def`` entry point (or one returning an awaitable) is awaited:
    with ``asyncio.run`` when this thread runs no event loop, else (a notebook)
    in a thread of its own, in a copy of this context (so the active run is
    the same), while this thread waits. A generator is consumed into a list,
    an async generator too; the list is the return value. So a run never ends
    FINISHED with a body that did not run.

    Args:
        fn: the bound entry point.
        kwargs: its arguments.
    """
    value = fn(**kwargs)
    if inspect.isgenerator(value):
        return list(value)
    if inspect.isasyncgen(value):
        return _await(_collect(value))
    if inspect.isawaitable(value):
        return _await(value)
    return value


async def _collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


async def _result(awaitable: Any) -> Any:
    value = await awaitable
    if inspect.isasyncgen(value):
        return await _collect(value)
    return list(value) if inspect.isgenerator(value) else value


def _await(awaitable: Any) -> Any:
    """The result of ``awaitable``, awaited to the end from synchronous code."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_result(awaitable))
    # A loop runs in this thread (a notebook, an async caller): it cannot be re-entered
    # from here, so the entry point gets a loop in a thread of its own, with this
    # thread's context variables and MLflow's active-run stack (a thread-local, shared
    # as the same list: this thread only waits meanwhile).
    import contextvars
    import threading

    context = contextvars.copy_context()
    fluent = sys.modules.get("mlflow.tracking.fluent")
    stack = fluent._active_run_stack.get() if fluent is not None else None
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            if fluent is not None:
                fluent._active_run_stack.set(stack)
            outcome["value"] = context.run(asyncio.run, _result(awaitable))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="pcs-entry-point")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _check_compiles(file: Path, label: str) -> None:
    """Refuse a script that cannot be read or does not compile, before any run exists."""
    import importlib.util

    try:
        text = importlib.util.decode_source(file.read_bytes())
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:
        raise ScriptError(f"{label} cannot be read as Python source: {exc}.") from None
    try:
        compile(text, str(file), "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ScriptError(
            f"{label} does not compile{where}: {message}. Fix the script; no run was created."
        ) from None


def _script_name(stem: str) -> str:
    """A component name for a script: its file's stem, as a Python identifier."""
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem)
    return name if name and not name[0].isdigit() else f"script_{name}"


def _argument_error(
    component: Component, function: str, fn: Any, kwargs: Mapping[str, Any], exc: TypeError
) -> ArgumentError:
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as bind_error:
        return ArgumentError(
            f"Arguments {sorted(kwargs)} do not fit {component.name}.{function}: {bind_error}. "
            f"Check the ArgumentSet entry {component.name}.{function}."
        )
    raise exc


def _relative_imports(source: str) -> list[str]:
    """Modules ``source`` imports relative to its package (``from . import x``)."""
    found = [
        "." * level + module
        for level, module, _ in closure.literal_imports(source)
        if level > 0
    ]
    return sorted(set(found))


def _script_file(managed_cls: type) -> Path | None:
    """The script whose ``__main__`` defines ``managed_cls``, when it is a file of the project."""
    if managed_cls.__module__ != "__main__":
        return None
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not isinstance(file, str):
        return None  # a REPL or python -c: no folder to find helpers in
    path = Path(file).resolve()
    if not path.is_file() or closure.excluded_path(str(path)):
        return None
    return path


def _capture_main_source(managed_cls: Any) -> tuple[str | None, list[str]]:
    """Source for a class (or function) defined in ``__main__``: its globals, then the class.

    Modules it uses become imports, functions and classes defined next to it
    are captured too, and plain values are written as literals. Anything else
    is reported as a problem, which makes runs of it ``not-rerunnable``.
    """
    import dill.detect
    import dill.source

    problems: list[str] = []
    try:
        class_source = textwrap.dedent(dill.source.getsource(managed_cls))
    except (OSError, TypeError, IndexError):
        return None, [f"the source of class {managed_cls.__name__} could not be read"]
    globals_used: dict[str, Any] = {}
    members = [managed_cls] if inspect.isfunction(managed_cls) else list(vars(managed_cls).values())
    for member in members:
        func = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
        if inspect.isfunction(func):
            free = [v for v in func.__code__.co_freevars if v != "__class__"]
            if free:
                problems.append(
                    f"{managed_cls.__name__}.{func.__name__} uses variables of an enclosing "
                    f"function ({', '.join(free)}), which pcs cannot record"
                )
            try:
                globals_used.update(dill.detect.globalvars(func, recurse=True))
            except Exception:  # noqa: BLE001 - dill gives up on odd closures
                problems.append(f"the globals of {managed_cls.__name__}.{func.__name__} could not be traced")
    imports, values, definitions = [], [], []
    for name, value in sorted(globals_used.items()):
        if name == managed_cls.__name__:
            continue
        if inspect.ismodule(value):
            real = value.__name__
            imports.append(f"import {real}" if real == name else f"import {real} as {name}")
        elif (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ != "__main__":
            real = value.__name__
            alias = "" if real == name else f" as {name}"
            imports.append(f"from {value.__module__} import {real}{alias}")
        elif inspect.isfunction(value) or inspect.isclass(value):
            try:
                definitions.append(textwrap.dedent(dill.source.getsource(value)))
            except (OSError, TypeError, IndexError):
                problems.append(f"the source of {name} could not be read")
        else:
            try:
                literal = to_recordable(value, name)
                values.append(f"{name} = {literal!r}")
            except ArgumentError:
                problems.append(
                    f"the global {name} ({type(value).__name__}) used by "
                    f"{managed_cls.__name__} cannot be recorded"
                )
    parts = [
        f"# source of {managed_cls.__name__}, captured by pcs from __main__",
        *imports,
        *values,
        *definitions,
        class_source,
    ]
    return "\n".join(p.rstrip("\n") for p in parts) + "\n", problems


def _mark_managed(obj: Any, component: Component) -> None:
    """Give a managed object its component as ``__component__`` (AgentOS code reads it)."""
    try:
        obj.__component__ = component
    except (AttributeError, TypeError):
        pass  # objects with __slots__ or read-only types cannot carry it


def _check_call(
    component: Component, target: Any, function: str, kwargs: Mapping[str, Any], entry: bool
) -> None:
    where = f"{component.name}.{function}"
    if function == "__init__":
        if not component.instantiate:
            if kwargs:
                raise ArgumentError(
                    f"Component {component.identifier!r} is not instantiated, so it takes no "
                    f"__init__ arguments ({', '.join(sorted(kwargs))}). Set instantiate: true in "
                    "its spec (instantiate=True), or drop the __init__ arguments."
                )
            return
        fn = target.__init__ if inspect.isclass(target) else None
        takes_self = True
        if fn is object.__init__:
            fn, takes_self = None, False
    else:
        member = getattr(target, function, None)
        if function.startswith("__") or member is None or not callable(member):
            available = sorted(
                n for n in dir(target) if not n.startswith("_") and callable(getattr(target, n, None))
            )
            close = difflib.get_close_matches(function, available, n=1)
            hint = f" Did you mean {component.name}.{close[0]}?" if close else ""
            raise ArgumentError(
                f"The arguments name {where}, but component {component.identifier!r} has no "
                f"function {function!r}.{hint} Its functions: {', '.join(available) or 'none'}."
            )
        fn = member
        takes_self = inspect.isclass(target) and _is_instance_method(target, function)
        if takes_self and not component.instantiate and entry:
            raise ArgumentError(
                f"{where} is an instance method, but component {component.identifier!r} is not "
                "instantiated, so there is no instance to call it on. Set instantiate: true in its "
                "spec (instantiate=True), or make the method a classmethod or staticmethod."
            )
    if fn is None:
        if kwargs:
            raise ArgumentError(
                f"{where} takes no arguments, but the ArgumentSet gives "
                f"{', '.join(sorted(kwargs))}. Remove them."
            )
        return
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: Python checks the call itself
    params = list(signature.parameters.values())
    if takes_self and params and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    ):
        params = params[1:]
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = [
        p.name for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = [k for k in kwargs if k not in names]
    if unknown and not accepts_any:
        name = unknown[0]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {where}.{close[0]}?" if close else ""
        raise ArgumentError(
            f"{where} has no argument {name!r}.{hint} It takes: "
            f"{', '.join(names) or 'no arguments'}."
        )
    for p in params:
        if p.default is not inspect.Parameter.empty or p.name in kwargs:
            continue
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            raise ArgumentError(
                f"{where} needs the argument {p.name!r}, which the ArgumentSet does not give. "
                f"Add it (CLI: -a {where}.{p.name}=VALUE)."
            )
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ArgumentError(
                f"{where} needs the positional-only argument {p.name!r}, which pcs cannot pass "
                "by name. Give it a default, or make it a keyword argument."
            )


def _is_instance_method(cls: type, name: str) -> bool:
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            return inspect.isfunction(raw)
    return False
