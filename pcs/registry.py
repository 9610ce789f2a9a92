"""Registries: serializable collections of repo, component, run-command and run specs.

A registry is what lets a run travel: ``components.yaml`` files (the AgentOS
shape, ``repos:`` and ``components:``), exported run bundles and the registry
server all hold the same sections. Every spec is a flat dict with an
``identifier``; in the serialized form each section maps identifier → body.

A registry file's top level holds only ``pcs_format`` and the sections in
``SECTIONS`` (plus AgentOS 0.2's empty ``registries: []``). Anything else is
refused by name rather than ignored, so a file pcs cannot interpret (such as
later AgentOS versions' ``specs:`` format) never loads as an empty registry.

``from pcs.registry import WebRegistry`` works as it did in AgentOS: a
compatibility alias, resolved lazily to :class:`pcs.web_registry.WebRegistry`
(so importing this module does not import the HTTP client).
"""

from __future__ import annotations

import copy
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs._keys import FORMAT_VERSION
from pcs._limits import MAX_YAML_BYTES
from pcs._yaml import load_yaml
from pcs.errors import InputLimitError, RegistryConflictError, RegistryError, SpecNotFoundError
from pcs.progress import ProgressCallback
from pcs.specs import (
    atomic_write_text,
    check_format_version,
    decode_value,
    dump_yaml,
    flatten_spec,
    unflatten_spec,
)

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component import Component

__all__ = ["Registry", "InMemoryRegistry", "SECTIONS", "is_record_upgrade"]

SECTIONS = ("repos", "components", "argument_sets", "run_commands", "runs")
# top-level keys a registry file may hold besides SECTIONS
_FORMAT_KEY = "pcs_format"
_AGENTOS_REGISTRIES = "registries"  # AgentOS 0.2 wrote "registries: []" (nested registries)
_SINGULAR = {
    "repos": "repo",
    "components": "component",
    "argument_sets": "argument set",
    "run_commands": "run command",
    "runs": "run",
}


class Registry(ABC):
    """What every registry offers: get and add specs, and run artifact folders."""

    base_dir: Path | None = None

    # -- primitives a registry implements ------------------------------------------

    @abstractmethod
    def _get(self, section: str, identifier: str) -> dict[str, Any] | None:
        """The body stored under ``identifier`` (without the identifier), or None."""

    @abstractmethod
    def _put(self, section: str, identifier: str, body: dict[str, Any], overwrite: bool) -> None:
        """Store ``body`` under ``identifier``; without ``overwrite``, refuse a different body."""

    @abstractmethod
    def identifiers(self, section: str) -> list[str]:
        """Every identifier stored in a section."""

    @abstractmethod
    def add_run_artifacts(
        self, run_id: str, local_dir: Path, progress: ProgressCallback | None = None
    ) -> None:
        """Store a copy of a run's artifact folder (``progress`` hears of bytes sent)."""

    @abstractmethod
    def run_artifacts_dir(
        self, run_id: str, progress: ProgressCallback | None = None
    ) -> Path | None:
        """A local folder with the run's artifacts, or None when the registry has none."""

    # -- spec access -------------------------------------------------------------

    def get_spec(self, section: str, identifier: str) -> dict[str, Any]:
        _check_section(section)
        body = self._get(section, identifier)
        if body is None and section == "components" and "==" not in identifier:
            matches = [i for i in self.identifiers(section) if i.split("==")[0] == identifier]
            if len(matches) == 1:
                identifier = matches[0]
                body = self._get(section, identifier)
        if body is None:
            known = ", ".join(sorted(self.identifiers(section))[:10]) or "none"
            raise SpecNotFoundError(
                f"The registry has no {_SINGULAR[section]} {identifier!r} (it has: {known}). "
                f"Check the identifier, or add the {_SINGULAR[section]} to the registry."
            )
        spec = _copy(body)
        spec["identifier"] = identifier
        return spec

    def has_spec(self, section: str, identifier: str) -> bool:
        _check_section(section)
        return self._get(section, identifier) is not None

    def add_spec(self, section: str, spec: Mapping[str, Any], force: bool = False) -> None:
        """Add a spec; an equal spec is a no-op, a different one needs ``force``."""
        _check_section(section)
        identifier = spec.get("identifier") if isinstance(spec, Mapping) else None
        if not isinstance(identifier, str) or not identifier:
            raise RegistryError(f"A {_SINGULAR[section]} spec needs a string 'identifier'.")
        body = {k: _copy(v) for k, v in spec.items() if k != "identifier"}
        existing = self._get(section, identifier)
        if section == "runs" and existing is not None and is_record_upgrade(existing, body):
            force = True  # the same run, recorded before records kept its Run.to_spec() fields
        if existing is not None and existing != body and not force:
            raise RegistryConflictError(
                f"The registry already holds a different {_SINGULAR[section]} "
                f"{identifier!r}. Pass force=True (CLI: --force) to overwrite it, or give "
                "the new one another identifier."
            )
        if existing != body:
            # overwrite only what was seen and forced; a spec someone else added meanwhile
            # is refused by a registry that checks (the server answers 409)
            self._put(section, identifier, body, overwrite=existing is not None and force)

    def get_repo_spec(
        self,
        identifier: str,
        flatten: bool | None = None,
        error_if_not_found: bool = True,
    ) -> dict[str, Any]:
        """A repo spec: flat with ``identifier`` (pcs's form), or AgentOS's forms.

        Args:
            identifier: the repo's identifier.
            flatten: None (default) for pcs's flat spec; False for AgentOS's nested
                ``{identifier: body}``; True for AgentOS's flat spec, which also
                carries ``name`` and ``version``.
            error_if_not_found: with False, a missing repo is ``{}`` instead of a
                ``SpecNotFoundError`` (AgentOS's in-memory registry gave None; both
                are falsy).
        """
        return self._agentos_get("repos", identifier, flatten, error_if_not_found)

    def add_repo_spec(self, spec: Mapping[str, Any], force: bool = False) -> None:
        self.add_spec("repos", spec, force)

    def get_component_spec(
        self,
        name: str,
        version: str | None = None,
        flatten: bool | None = None,
        error_if_not_found: bool = True,
    ) -> dict[str, Any]:
        """A component spec by identifier, or by AgentOS's name and version.

        Args:
            name: an identifier (``agent==1.0``) or a name; a name alone matches a
                component stored under it, or the one version stored of it.
            version: the version; with it, ``name==version`` is looked up.
            flatten: None (default) for pcs's flat spec; False for AgentOS's nested
                ``{identifier: body}``; True for AgentOS's flat spec, which also
                carries ``name`` and ``version``.
            error_if_not_found: with False, a missing component is ``{}`` (as in
                AgentOS) instead of a ``SpecNotFoundError``.
        """
        identifier = f"{name}=={version}" if version is not None else name
        return self._agentos_get("components", identifier, flatten, error_if_not_found)

    def add_component_spec(self, spec: Mapping[str, Any], force: bool = False) -> None:
        self.add_spec("components", spec, force)

    def get_argument_set_spec(self, identifier: str) -> dict[str, Any]:
        return self.get_spec("argument_sets", identifier)

    def add_argument_set_spec(self, spec: Mapping[str, Any], force: bool = False) -> None:
        self.add_spec("argument_sets", spec, force)

    def get_run_command_spec(
        self,
        identifier: str,
        flatten: bool | None = None,
        error_if_not_found: bool = True,
    ) -> dict[str, Any]:
        """A run command spec; ``flatten`` and ``error_if_not_found`` as for repos."""
        return self._agentos_get("run_commands", identifier, flatten, error_if_not_found)

    def add_run_command_spec(self, spec: Mapping[str, Any], force: bool = False) -> None:
        self.add_spec("run_commands", spec, force)

    def get_run_spec(
        self,
        identifier: str,
        flatten: bool | None = None,
        error_if_not_found: bool = True,
    ) -> dict[str, Any]:
        """A run's spec in ``Run.to_spec()``'s shape, as AgentOS answered it.

        ``registry.get_run_spec(run.identifier) == run.to_spec()`` holds once
        ``run.to_registry(registry)`` added the run (credentials aside, which a
        registry never holds). ``flatten`` and ``error_if_not_found`` as for
        repos. What pcs imports is the run's record: ``get_run_record``.
        """
        spec = self._agentos_get("runs", identifier, None, error_if_not_found)
        if spec and _is_run_record(spec):
            spec = _spec_from_record(spec)
        if flatten is None or not spec:
            return spec
        nested = unflatten_spec(spec)
        return flatten_spec(nested) if flatten else nested

    def get_run_record(self, identifier: str) -> dict[str, Any]:
        """The record of a run as ``run.to_registry`` stored it, which imports read.

        It holds the run's whole metric histories, its inner runs, the hashes of
        its carried artifacts and its experiment's name (see
        :func:`pcs.transfer.bundle.run_spec`).
        """
        return self.get_spec("runs", identifier)

    def add_run_spec(self, spec: Mapping[str, Any], force: bool = False) -> None:
        self.add_spec("runs", spec, force)

    def has_run(self, run_id: str) -> bool:
        return self.has_spec("runs", run_id)

    # -- AgentOS's names ----------------------------------------------------------------

    @staticmethod
    def from_dict(data: Mapping[str, Any], base_dir: str | Path | None = None) -> InMemoryRegistry:
        """A registry holding ``data`` (the serialized shape), as AgentOS's ``Registry.from_dict``."""
        return InMemoryRegistry(data, base_dir=base_dir)

    @staticmethod
    def from_yaml(path: str | Path) -> InMemoryRegistry:
        """A registry read from a YAML file, as AgentOS's ``Registry.from_yaml``."""
        return InMemoryRegistry.from_yaml(path)

    def get_component_specs(
        self, filter_by_name: str | None = None, filter_by_version: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every component spec as ``{identifier: body}``, filtered by name and/or version.

        Args:
            filter_by_name: keep only identifiers whose part before ``==`` is this.
            filter_by_version: keep only identifiers whose part after ``==`` is this.

        Returns:
            A new dict (empty when nothing matches).
        """
        out: dict[str, dict[str, Any]] = {}
        for identifier in sorted(self.identifiers("components")):
            name, _, version = identifier.partition("==")
            if filter_by_name is not None and name != filter_by_name:
                continue
            if filter_by_version is not None and (version or None) != filter_by_version:
                continue
            body = self._get("components", identifier)
            if body is not None:
                out[identifier] = _copy(body)
        return out

    def add_component(self, component: Component, recurse: bool = True, force: bool = False) -> None:
        """Add a component (with ``recurse``, its dependencies and repos), as AgentOS did.

        A different spec already under one of the identifiers raises
        ``RegistryConflictError`` unless ``force``.
        """
        component.to_registry(self, recurse=recurse, force=force)

    def _agentos_get(
        self, section: str, identifier: str, flatten: bool | None, error_if_not_found: bool
    ) -> dict[str, Any]:
        if not error_if_not_found:
            try:
                spec = self.get_spec(section, identifier)
            except SpecNotFoundError:
                return {}
        else:
            spec = self.get_spec(section, identifier)
        if flatten is None:
            return spec
        nested = unflatten_spec(spec)
        return flatten_spec(nested) if flatten else nested

    def get_component_dag_specs(
        self, component_id: str
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Every component spec reachable from ``component_id`` and the repos they use.

        Returns ``(components, repos)``, each keyed by identifier.
        """
        components: dict[str, dict[str, Any]] = {}
        repos: dict[str, dict[str, Any]] = {}
        todo = [component_id]
        while todo:
            current = todo.pop()
            spec = self.get_component_spec(current)
            if spec["identifier"] in components:
                continue
            components[spec["identifier"]] = spec
            repo_id = spec.get("repo")
            if repo_id and repo_id not in repos:
                repos[repo_id] = self.get_repo_spec(repo_id)
            deps = spec.get("dependencies") or {}
            if not isinstance(deps, Mapping):
                raise RegistryError(
                    f"Component {current!r} has 'dependencies' of type "
                    f"{type(deps).__name__}; it must map attribute names to component ids."
                )
            todo.extend(str(d) for d in deps.values())
        return components, repos

    def update(self, other: Registry, force: bool = False) -> None:
        """Add every spec of ``other`` (and its run artifacts) to this registry."""
        for section in SECTIONS:
            for identifier in other.identifiers(section):
                self.add_spec(section, other.get_spec(section, identifier), force=force)
        for run_id in other.identifiers("runs"):
            folder = other.run_artifacts_dir(run_id)
            if folder is not None:
                self.add_run_artifacts(run_id, folder)

    def to_dict(self) -> dict[str, Any]:
        """All specs, in the serialized shape (section → identifier → body)."""
        out: dict[str, Any] = {"pcs_format": FORMAT_VERSION}
        for section in SECTIONS:
            ids = self.identifiers(section)
            out[section] = {i: self._get(section, i) for i in sorted(ids)}
        return out


class InMemoryRegistry(Registry):
    """A registry held in memory, with YAML in and out.

    Example::

        registry = InMemoryRegistry.from_yaml("components.yaml")
        agent = Component.from_registry(registry, "agent")
    """

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        self._data: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SECTIONS}
        self.base_dir = Path(base_dir).resolve() if base_dir is not None else None
        self._artifacts: dict[str, Path] = {}
        if data:
            self._load(data)

    def _load(self, data: Mapping[str, Any], what: str = "This registry") -> None:
        if not isinstance(data, Mapping):
            raise RegistryError(
                f"{what} is not a registry: a registry is a mapping of sections "
                f"({', '.join(SECTIONS)}); got {type(data).__name__}."
            )
        _check_top_level(data, what)
        check_format_version(dict(data), what)
        for section in SECTIONS:
            entries = data.get(section) or {}
            if not isinstance(entries, Mapping):
                raise RegistryError(
                    f"Registry section {section!r} must map identifiers to specs; got "
                    f"{type(entries).__name__}."
                )
            for identifier, body in entries.items():
                if not isinstance(body, Mapping):
                    raise RegistryError(
                        f"Registry entry {section}.{identifier} must be a mapping; got "
                        f"{type(body).__name__}."
                    )
                self._data[section][str(identifier)] = _copy(dict(body))

    def _get(self, section: str, identifier: str) -> dict[str, Any] | None:
        return self._data[section].get(identifier)

    def _put(self, section: str, identifier: str, body: dict[str, Any], overwrite: bool) -> None:
        self._data[section][identifier] = body

    def identifiers(self, section: str) -> list[str]:
        return list(self._data[section])

    def add_run_artifacts(
        self, run_id: str, local_dir: Path, progress: ProgressCallback | None = None
    ) -> None:
        self._artifacts[run_id] = Path(local_dir)

    def run_artifacts_dir(
        self, run_id: str, progress: ProgressCallback | None = None
    ) -> Path | None:
        if run_id in self._artifacts:
            return self._artifacts[run_id]
        if self.base_dir is not None:
            candidate = self.base_dir / "artifacts" / run_id
            if candidate.is_dir():
                return candidate
        return None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | Path | None = None) -> InMemoryRegistry:
        return cls(data, base_dir=base_dir)

    @classmethod
    def from_yaml(cls, path: str | Path) -> InMemoryRegistry:
        """Load a registry file; relative local repo paths resolve against its folder.

        The file is read with pcs's safe YAML loader (``pcs._yaml.load_yaml``).

        Args:
            path: a ``components.yaml``, a bundle's ``registry.yaml``, or any file
                written by ``to_yaml``.

        Returns:
            The registry.

        Raises:
            RegistryError: the file is missing, not UTF-8, not valid YAML, or holds
                top-level keys pcs does not understand (such as ``specs:``).
            InputLimitError: the file is too large, expands too much through YAML
                aliases, nests too deep, or holds values no store can keep.
        """
        path = Path(path)
        what = f"Registry file {path}"
        try:
            size = path.stat().st_size
            if size > MAX_YAML_BYTES:  # refuse before reading it into memory
                raise InputLimitError(
                    f"{what} is {size} bytes, more than the {MAX_YAML_BYTES} bytes pcs reads "
                    "from one YAML document. Keep large data in artifacts, not in YAML."
                )
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RegistryError(
                f"Registry file {path} does not exist. Pass the path of a components.yaml "
                "or an exported bundle."
            ) from None
        except (UnicodeDecodeError, OSError) as exc:
            raise RegistryError(
                f"Registry file {path} cannot be read as UTF-8 text ({exc}). Save it as UTF-8."
            ) from None
        data = load_yaml(text, what, RegistryError)
        registry = cls(base_dir=path.parent)
        registry._load({} if data is None else data, what)
        return registry

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(path, dump_yaml(self.to_dict()))

    def write_bundle(self, folder: str | Path, registry_name: str = "registry.yaml") -> Path:
        """Write the registry YAML and every run's artifacts into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for run_id in self.identifiers("runs"):
            source = self.run_artifacts_dir(run_id)
            target = folder / "artifacts" / run_id
            if source is not None and source.resolve() != target.resolve():
                if target.exists():
                    shutil.rmtree(target)
                shutil.copytree(source, target)
        self.to_yaml(folder / registry_name)
        return folder / registry_name

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(self._data[s])}" for s in SECTIONS)
        return f"InMemoryRegistry({counts})"


# what a run's record keeps only for get_run_spec (Run.to_spec()'s fields beyond an import's)
_SPEC_ONLY_KEYS = ("experiment_id", "user_id", "artifact_uri", "latest_metrics")


def is_record_upgrade(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` is ``old`` (a run's record written before these fields) plus them alone.

    Such a record replaces the old one without ``force``: it is the same run,
    not a changed one, so re-exporting or re-publishing it is no conflict.
    """
    if any(key in old for key in _SPEC_ONLY_KEYS):
        return False
    return {k: v for k, v in new.items() if k not in _SPEC_ONLY_KEYS and k != "identifier"} == {
        k: v for k, v in old.items() if k != "identifier"
    }


def _is_run_record(spec: Mapping[str, Any]) -> bool:
    """Whether a stored run is pcs's record (``run.to_registry``), not a ``Run.to_spec()``."""
    return "info" not in spec and "data" not in spec


def _spec_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's record in ``Run.to_spec()``'s shape (``ComponentRun``'s when it has a command)."""
    latest = record.get("latest_metrics")
    if not isinstance(latest, Mapping):  # recorded before pcs kept them: from the histories
        latest = {
            key: max(history, key=lambda point: (point[1], point[2], decode_value(point[0])))[0]
            for key, history in (record.get("metrics") or {}).items()
            if isinstance(history, list) and history
        }
    spec: dict[str, Any] = {
        "identifier": record["identifier"],
        "info": {
            "run_id": record["identifier"],
            "run_name": record.get("run_name"),
            "experiment_id": record.get("experiment_id"),
            "user_id": record.get("user_id"),
            "status": record.get("status"),
            "start_time": record.get("start_time"),
            "end_time": record.get("end_time"),
            "lifecycle_stage": record.get("lifecycle_stage"),
            "artifact_uri": record.get("artifact_uri"),
        },
        "data": {
            "params": dict(record.get("params") or {}),
            "metrics": {key: decode_value(value) for key, value in latest.items()},
            "tags": dict(record.get("tags") or {}),
        },
    }
    if record.get("run_command"):
        spec["run_command"] = record["run_command"]
    return spec


def _check_top_level(data: Mapping[str, Any], what: str) -> None:
    """Refuse top-level keys pcs cannot interpret, naming them."""
    unknown = [
        key for key in data
        if key not in SECTIONS and key != _FORMAT_KEY and key != _AGENTOS_REGISTRIES
    ]
    if data.get(_AGENTOS_REGISTRIES):
        raise RegistryError(
            f"{what} lists other registries under 'registries:' (AgentOS's nested "
            "registries), which pcs does not follow. Merge their repos and components into "
            "this file, or load each one with InMemoryRegistry.from_yaml and update()."
        )
    if not unknown:
        return
    names = ", ".join(repr(_short_key(k)) for k in unknown[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    if "specs" in unknown:
        raise RegistryError(
            f"{what} is in the 'specs:' format of later AgentOS versions (every spec under "
            f"'specs:' with a 'type:'), which pcs does not read; its top-level key(s) {names}"
            f"{more} are not understood. Write it in the AgentOS 0.2 shape pcs reads: "
            "'repos:' (type local/git/github) and 'components:' (repo, file_path, "
            "class_name, instantiate, dependencies)."
        )
    raise RegistryError(
        f"{what} has top-level key(s) {names}{more}, which pcs does not understand; a "
        f"registry holds {_FORMAT_KEY} and the sections {', '.join(SECTIONS)}. Fix the key "
        "(a typo or wrong indentation?) or move the data into one of those sections."
    )


def _short_key(key: Any) -> str:
    text = key if isinstance(key, str) else repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def __getattr__(name: str) -> Any:
    # AgentOS exported WebRegistry from its registry module; keep that import working
    # without loading the HTTP client until it is asked for
    if name == "WebRegistry":
        from pcs.web_registry import WebRegistry

        return WebRegistry
    raise AttributeError(f"module 'pcs.registry' has no attribute {name!r}")


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise RegistryError(f"Unknown registry section {section!r}; known: {', '.join(SECTIONS)}.")


def _copy(value: Any) -> Any:
    """A deep copy of a spec: plain dicts, lists and scalars by hand, anything else by ``copy``.

    ``copy.deepcopy`` spent more time on its memo than on copying: a run
    command's code map has an entry per module of its closure.
    """
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)
