"""RunCommand: component + entry point + ArgumentSet + seed + code, content-addressed.

The identifier is the sha256 of the command's canonical spec, which covers the
component DAG's structure, the entry point, every argument, the seed and a
sha256 of every component's source and of every module in its closure (the
modules it loads from its own repo, see :mod:`pcs.record.closure`). Editing a
component file or a helper it imports therefore makes a different command;
running the same command again is the same computation.

``code`` maps each component identifier to ``{file, sha256}``, and each module
of a component's closure, under ``"<component>:<module>"``, to ``{component,
module, path, file, sha256}`` (``path`` relative to the component's repo root).
Nothing in a command depends on where its files lie on disk: a local repo is
written into the command's registry as ``path: "."`` (where the files were is
in the run's ``pcs/code.yaml``), so the same code in two folders makes the same
command, and publishing it from either does not conflict.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs._keys import FORMAT_VERSION
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.errors import ArgumentError, ComponentError, NotReproducibleError, RegistryError
from pcs.record import Facts, closure
from pcs.record.closure import Closure
from pcs.record.determinism import seeded
from pcs.record.environment import draw_seed
from pcs.record.staging import LoadReads, watch_loading
from pcs.registry import InMemoryRegistry, Registry
from pcs.repo import LocalRepo, Repo
from pcs.run import run_class
from pcs.specs import check_format_version, content_hash, dump_yaml, sha256_bytes

if TYPE_CHECKING:  # pragma: no cover
    from pcs.run import Run

__all__ = ["RunCommand"]

#: the path of every local repo in a run command's registry: where the files lay is
#: machine-specific and lives in the run's pcs/code.yaml instead
PORTABLE_LOCAL_PATH = "."


class RunCommand:
    """Everything needed to execute one component run again.

    Build one with :meth:`create` (reads the sources now) or load one with
    :meth:`from_registry`; :meth:`run` executes it as a new ``ComponentRun``.
    """

    def __init__(
        self,
        component: Component,
        entry_point: str,
        argument_set: ArgumentSet,
        seed: int,
        code: Mapping[str, Mapping[str, str]],
        sources: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ArgumentError(f"A seed is a non-negative integer; got {seed!r}.")
        if not entry_point or not isinstance(entry_point, str):
            raise ArgumentError("A RunCommand needs an entry point name.")
        self.component = component
        self.entry_point = entry_point
        self.argument_set = argument_set
        self.seed = seed
        self.code = {cid: dict(v) for cid, v in sorted(code.items())}
        # source text by sha256, when this process holds it (not part of the spec)
        self.sources: dict[str, str] = dict(sources or {})
        self._identifier: str | None = None
        # a session that loaded the components for this command, kept for its first run
        self._prepared: tuple[closure.Session, dict[str, Any]] | None = None
        self._loaded: LoadReads | None = None  # what loading the components read
        self.closure_problems: list[str] = []  # closure modules the snapshot cannot hold
        self.imports: set[str] = set()  # top-level names the closure imports from elsewhere
        # the code.yaml of the run a rerun of recorded code reproduces (its git state)
        self.recorded_code: dict[str, Any] | None = None
        self._registry_data: dict[str, Any] | None = None  # the registry it was read from

    @classmethod
    def create(
        cls,
        component: Component,
        entry_point: str,
        argument_set: ArgumentSet | Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> RunCommand:
        """A command for running ``entry_point`` on ``component`` now.

        Reads every component's source (the snapshot a rerun will use), loads
        the components in a fresh namespace to find the modules they import from
        their repos (and the ones their code imports literally, inside functions
        too), and draws a seed when none is given. Refuses unknown entry points
        and arguments that name components outside the DAG before anything is
        recorded. The loaded components are kept for this command's first run.
        """
        arg_set = ArgumentSet.coerce(argument_set)
        components = component.dependency_list()
        component.check_argument_names(arg_set)
        code: dict[str, dict[str, str]] = {}
        sources: dict[str, str] = {}
        for c in components:
            try:
                text = c.source()
            except ComponentError:
                if not c.is_inline:
                    raise
                # a class whose source cannot be captured still runs; it is graded
                # not-rerunnable instead of being refused
                code[c.identifier] = {"file": c.source_label(), "sha256": ""}
                continue
            digest = sha256_bytes(text.encode("utf-8"))
            code[c.identifier] = {"file": c.source_label(), "sha256": digest}
            sources[digest] = text
        command = cls(
            component,
            entry_point,
            arg_set,
            seed if seed is not None else draw_seed(),
            code,
            sources,
        )
        session = closure.session_for([c._part() for c in components])
        try:
            # seeded while the modules load too: randomness at module level (a split drawn at
            # import) is then the same in every run of this seed
            with session, seeded(command.seed):
                with watch_loading(session) as command._loaded:
                    targets = component._load_targets_in(session, components)
                command.scan(session)
        finally:
            session.close()
        command._prepared = (session, targets)
        return command

    def scan(self, session: closure.Session) -> None:
        """Find the closure's literal imports (inside functions too) in ``session``, and absorb it."""
        session.scan(closure.component_texts(self.code, self.sources))
        self.absorb(session)

    def absorb(self, session: closure.Session) -> bool:
        """Add the modules ``session`` pinned to the closure; whether the code map changed."""
        repo_ids = {
            c.identifier: c.repo.identifier if c.repo is not None else "<inline>"
            for c in self.component.dependency_list()
        }
        changed = closure.absorb(session, self.code, self.sources, repo_ids)
        if changed:
            self.code = dict(sorted(self.code.items()))
            self._identifier = None
        self.imports.update(session.imports)
        for problem in session.problems:
            if problem not in self.closure_problems:
                self.closure_problems.append(problem)
        return changed

    def closure_entries(self, component_id: str) -> dict[str, dict[str, str]]:
        """The code entries of ``component_id``'s closure, by key."""
        return closure.module_entries(self.code, component_id)

    def closures(self) -> dict[str, Closure]:
        """Per component identifier: its closure's modules and the texts this process holds."""
        return closure.closures(self.code, self.sources, [c.identifier for c in self.component.dependency_list()])

    def take_session(self) -> tuple[closure.Session, dict[str, Any] | None]:
        """The session that loaded this command's components (once), else a new one to load in."""
        if self._prepared is not None:
            session, targets = self._prepared
            self._prepared = None
            return session, targets
        parts = [c._part() for c in self.component.dependency_list()]
        return closure.session_for(parts, self.closures()), None

    def _facts(self) -> Facts:
        """What the record is told of this command, as it is now."""
        return Facts(
            identifier=self.identifier,
            entry_point=self.entry_point,
            seed=self.seed,
            parts=[c._part() for c in self.component.dependency_list()],
            code=self.code,
            sources=self.sources,
            imports=self.imports,
            closure_problems=self.closure_problems,
            recorded_code=self.recorded_code,
            registry_text=self.to_yaml_text,
            loaded=self._loaded,
        )

    @property
    def identifier(self) -> str:
        if self._identifier is None:
            self._identifier = content_hash(self._content())
        return self._identifier

    def _content(self) -> dict[str, Any]:
        dag = {
            c.identifier: {
                "class_name": c.class_name,
                "instantiate": c.instantiate,
                "dependencies": {a: d.identifier for a, d in sorted(c.dependencies.items())},
            }
            for c in self.component.dependency_list()
        }
        return {
            "component": self.component.identifier,
            "entry_point": self.entry_point,
            "argument_set": self.argument_set.to_dict(),
            "seed": self.seed,
            "code": self.code,
            "dag": dag,
        }

    def to_spec(self) -> dict[str, Any]:
        """The flat spec stored in registries (``identifier`` included)."""
        content = self._content()
        return {
            "identifier": self.identifier,
            "pcs_format": FORMAT_VERSION,
            "component": content["component"],
            "entry_point": self.entry_point,
            "argument_set": content["argument_set"],
            "argument_set_id": self.argument_set.identifier,
            "seed": self.seed,
            "code": self.code,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], component: Component) -> RunCommand:
        """Rebuild a command from its spec and its (already built) root component."""
        check_format_version(dict(spec), f"Run command {spec.get('identifier')!r}")
        try:
            command = cls(
                component,
                str(spec["entry_point"]),
                ArgumentSet.recorded(spec.get("argument_set") or {}),
                int(spec["seed"]),
                spec.get("code") or {},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"Run command spec {spec.get('identifier')!r} is incomplete or damaged "
                f"({type(exc).__name__}: {exc})."
            ) from None
        claimed = spec.get("identifier")
        if claimed and claimed != command.identifier:
            raise RegistryError(
                f"Run command spec claims identifier {claimed} but its content hashes to "
                f"{command.identifier}: the record was edited or damaged, so pcs will not "
                "pretend to rerun it."
            )
        return command

    def to_registry(self, registry: Registry | None = None, force: bool = False) -> Registry:
        """Add the command, its argument set, components and repos to a registry.

        Local repos are added as ``path: "."`` (:data:`PORTABLE_LOCAL_PATH`), so the
        same command from two folders or machines adds equal specs.
        """
        registry = registry if registry is not None else InMemoryRegistry()
        for component in self.component.dependency_list():
            if component.repo is not None:
                registry.add_repo_spec(_portable_repo_spec(component.repo), force=force)
            registry.add_component_spec(component.to_spec(), force=force)
        registry.add_argument_set_spec(self.argument_set.registry_spec(), force=force)
        registry.add_run_command_spec(self.to_spec(), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> RunCommand:
        """Rebuild the command ``identifier`` and its components from a registry."""
        spec = registry.get_run_command_spec(identifier)
        component = Component.from_registry(registry, str(spec.get("component")))
        command = cls.from_spec(spec, component)
        _, repo_specs = registry.get_component_dag_specs(str(spec.get("component")))
        for c in component.dependency_list():
            raw = repo_specs.get(c.repo.identifier) if c.repo is not None else None
            if (
                isinstance(c.repo, LocalRepo) and raw is not None and c.file_path
                and raw.get("path") != PORTABLE_LOCAL_PATH and Path(str(raw.get("path"))).is_absolute()
                and not command.closure_entries(c.identifier)
            ):
                # written before closures were recorded: its sibling imports came from
                # its folder, so a rerun may still find them there
                local = c.repo.local_file(c.file_path)
                if local.parent.is_dir():
                    c._legacy_dirs = (c.repo.local_dir, local.parent)
        if isinstance(registry, InMemoryRegistry):
            command._registry_data = registry.to_dict()
        return command

    def copy(self) -> RunCommand:
        """A new command with new Component objects, read back from this command's record."""
        data = self._registry_data if self._registry_data is not None else self.to_registry().to_dict()
        command = RunCommand.from_registry(InMemoryRegistry(copy.deepcopy(data)), self.identifier)
        command.sources.update(self.sources)
        return command

    def use_argument_set(self, argument_set: ArgumentSet) -> None:
        """Run with ``argument_set`` instead (a derived run): a different command, same code."""
        self.argument_set = argument_set
        self._identifier = None
        self._registry_data = None

    def to_yaml_text(self) -> str:
        """The ``pcs/run_command.yaml`` artifact: a registry holding only this command."""
        return dump_yaml(self.to_registry().to_dict())

    def use_sources(self, sources: Mapping[str, str]) -> None:
        """Make every component run the recorded source text and closure (a rerun of recorded code)."""
        for component in self.component.dependency_list():
            entry = self.code.get(component.identifier)
            if entry is None:
                raise NotReproducibleError(
                    f"The run command records no code for component {component.identifier!r}."
                )
            component._source_override = _recorded_text(entry, sources)
            known: list[closure.ModuleFile] = []
            texts: dict[str, str] = {}
            for module_entry in self.closure_entries(component.identifier).values():
                if not module_entry.get("sha256"):
                    continue  # a compiled module: the run was graded local for it
                texts[module_entry["sha256"]] = _recorded_text(module_entry, sources)
                known.append(closure.ModuleFile(
                    str(module_entry["module"]), str(module_entry["path"]), module_entry["sha256"]
                ))
            component._recorded_closure = (known, texts)
        self.sources.update(sources)

    def with_current_code(self) -> RunCommand:
        """The same command over the component files (and the modules they import) as they are now."""
        for component in self.component.dependency_list():
            component._source_override = None
            component._recorded_closure = None
            component._legacy_dirs = None
        return RunCommand.create(self.component, self.entry_point, self.argument_set, self.seed)

    def run(
        self,
        *,
        outer_run: Run | None = None,
        rerun_of: Run | None = None,
        run_name: str | None = None,
        experiment_id: str | None = None,
        return_value_format: str = "auto",
    ) -> Run:
        """Execute the command as a new ``ComponentRun`` and return it when finished."""
        return run_class(_keys.RUN_TYPE_COMPONENT).execute(  # type: ignore[attr-defined, no-any-return]
            self,
            outer_run=outer_run,
            rerun_of=rerun_of,
            run_name=run_name,
            experiment_id=experiment_id,
            return_value_format=return_value_format,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunCommand) and other.identifier == self.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        return (
            f"RunCommand({self.component.identifier!r}, {self.entry_point!r}, "
            f"seed={self.seed}, id={self.identifier[:12]})"
        )


def _recorded_text(entry: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    """The recorded text of a code entry, checked against its sha256."""
    text = sources.get(entry["sha256"])
    if text is None:
        raise NotReproducibleError(
            f"The snapshot of {entry['file']} (sha256 {entry['sha256'][:12]}) is missing "
            "from the run's artifacts, so the recorded code cannot be run. Rerun with "
            "code='current' to run the files as they are now."
        )
    if sha256_bytes(text.encode("utf-8")) != entry["sha256"]:
        raise NotReproducibleError(
            f"The snapshot of {entry['file']} does not match its recorded sha256; the "
            "artifact was altered."
        )
    return text


def _portable_repo_spec(repo: Repo) -> dict[str, Any]:
    """A repo's spec without the place of a local folder on this machine."""
    spec = repo.to_spec()
    if isinstance(repo, LocalRepo):
        spec["path"] = PORTABLE_LOCAL_PATH
    return spec
