"""RunCommand: component + entry point + ArgumentSet + seed + code, content-addressed.

The identifier is the sha256 of the command's canonical spec, which covers the
component DAG's structure, the entry point, every argument, the seed and a
sha256 of every component's source. Editing a component file therefore makes
a different command; running the same command again is the same computation.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys
from pcs._keys import FORMAT_VERSION
from pcs.argument_set import ArgumentSet
from pcs.component import Component
from pcs.environment import draw_seed
from pcs.errors import ArgumentError, ComponentError, NotReproducibleError, RegistryError
from pcs.registry import InMemoryRegistry, Registry
from pcs.run import run_class
from pcs.specs import check_format_version, content_hash, dump_yaml, sha256_bytes

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component_run import ComponentRun
    from pcs.run import Run

__all__ = ["RunCommand"]


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

    @classmethod
    def create(
        cls,
        component: Component,
        entry_point: str,
        argument_set: ArgumentSet | Mapping[str, Any] | None = None,
        seed: int | None = None,
    ) -> RunCommand:
        """A command for running ``entry_point`` on ``component`` now.

        Reads every component's source (the snapshot a rerun will use) and draws
        a seed when none is given. Refuses unknown entry points and arguments
        that name components outside the DAG before anything is recorded.
        """
        arg_set = ArgumentSet.coerce(argument_set)
        components = component.dependency_list()
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
        component.check_argument_names(arg_set)
        return cls(
            component,
            entry_point,
            arg_set,
            seed if seed is not None else draw_seed(),
            code,
            sources,
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
                ArgumentSet(spec.get("argument_set") or {}),
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
        """Add the command, its argument set, components and repos to a registry."""
        registry = registry if registry is not None else InMemoryRegistry()
        self.component.to_registry(registry, recurse=True, force=force)
        registry.add_argument_set_spec(self.argument_set.to_spec(), force=force)
        registry.add_run_command_spec(self.to_spec(), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> RunCommand:
        spec = registry.get_run_command_spec(identifier)
        component = Component.from_registry(registry, str(spec.get("component")))
        return cls.from_spec(spec, component)

    def to_yaml_text(self) -> str:
        """The ``pcs/run_command.yaml`` artifact: a registry holding only this command."""
        return dump_yaml(self.to_registry().to_dict())

    def use_sources(self, sources: Mapping[str, str]) -> None:
        """Make every component run the recorded source text (a rerun of recorded code)."""
        for component in self.component.dependency_list():
            entry = self.code.get(component.identifier)
            if entry is None:
                raise NotReproducibleError(
                    f"The run command records no code for component {component.identifier!r}."
                )
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
            component._source_override = text
        self.sources.update(sources)

    def with_current_code(self) -> RunCommand:
        """The same command over the component files as they are now."""
        for component in self.component.dependency_list():
            component._source_override = None
        return RunCommand.create(self.component, self.entry_point, self.argument_set, self.seed)

    def run(
        self,
        *,
        outer_run: Run | None = None,
        rerun_of: Run | None = None,
        run_name: str | None = None,
        experiment_id: str | None = None,
        return_value_format: str = "auto",
    ) -> ComponentRun:
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


def source_artifact_name(digest: str) -> str:
    return f"{digest}.py"


def read_sources_dir(folder: Path) -> dict[str, str]:
    """Snapshot texts by sha256 from a downloaded ``pcs/source`` folder."""
    out: dict[str, str] = {}
    if folder.is_dir():
        for path in folder.iterdir():
            if path.suffix == ".py":
                out[path.stem] = path.read_text(encoding="utf-8")
    return out
