"""ArgumentSet: the arguments of every function a run calls, by component.

Argument-set files (``--arg-set FILE``) are read with pcs's safe YAML loader.
AgentOS's argument files sometimes carry a top-level section that exists only
to define YAML anchors for the others (its acme ``arguments.yaml`` has
``dummy: {shared: &shared {...}}``, merged into real sections with
``<<: *shared``). Such a section names no component: ``from_yaml`` drops it with
one warning on the ``pcs`` logger and lists its name in ``anchor_sections``,
instead of refusing the file. Every other section is kept as it is, and one
that names no component of the run is refused when the run is created.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs._limits import MAX_YAML_BYTES
from pcs._yaml import load_yaml
from pcs.errors import ArgumentError, InputLimitError
from pcs.specs import atomic_write_text, content_hash, dump_yaml, to_recordable

if TYPE_CHECKING:  # pragma: no cover
    from pcs.registry import Registry

__all__ = ["ArgumentSet"]

log = logging.getLogger("pcs")


class ArgumentSet:
    """``{component_name: {function_name: {argument: value}}}``, content-addressed.

    ``function_name`` is ``__init__`` for constructor arguments or the name of
    an entry point. Values must be plain data (YAML/JSON), so that a rerun can
    pass exactly the same arguments again.

    Example::

        ArgumentSet({"agent": {"__init__": {"x": 1}, "run_episodes": {"num_episodes": 5}}})
    """

    #: top-level sections of the file this set was read from that only defined YAML
    #: anchors, and were dropped (see ``from_yaml``); not part of the content or identifier
    anchor_sections: tuple[str, ...] = ()

    def __init__(self, arguments: Mapping[str, Any] | None = None) -> None:
        self._args: dict[str, dict[str, dict[str, Any]]] = _validate(
            _protect_secrets(arguments or {}, by_name=True)
        )
        self._identifier: str | None = None

    @classmethod
    def coerce(cls, value: ArgumentSet | Mapping[str, Any] | None) -> ArgumentSet:
        """Accept an ArgumentSet, a plain dict of the same shape, or None."""
        if isinstance(value, ArgumentSet):
            return value
        if value is None or isinstance(value, Mapping):
            return cls(value)
        raise ArgumentError(
            f"Expected an ArgumentSet or a dict of the shape "
            f"{{component: {{function: {{arg: value}}}}}}, got {type(value).__name__}."
        )

    @classmethod
    def recorded(cls, arguments: Mapping[str, Any] | None) -> ArgumentSet:
        """An ArgumentSet read back from a record: kept exactly as it was recorded.

        Unlike the constructor, a string whose argument name looks secret is not
        turned into a hash here, so runs recorded before pcs knew secret
        arguments keep their identifiers.
        """
        arg_set = cls.__new__(cls)
        arg_set._args = _validate(_protect_secrets(arguments or {}, by_name=False))
        arg_set._identifier = None
        return arg_set

    @property
    def identifier(self) -> str:
        if self._identifier is None:
            self._identifier = content_hash(self._args)
        return self._identifier

    def to_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        return copy.deepcopy(self._args)

    def get_function_args(self, component_name: str, function_name: str) -> dict[str, Any]:
        """The keyword arguments for one function of one component (a copy).

        Secret arguments are given in clear (see :mod:`pcs.secrets`): the value
        this process holds, else ``PCS_SECRET_<ARG>``; ArgumentError when neither.
        """
        kwargs = copy.deepcopy(self._args.get(component_name, {}).get(function_name, {}))
        return _reveal_secrets(kwargs, f"{component_name}.{function_name}")

    def component_names(self) -> list[str]:
        return sorted(self._args)

    def with_args(self, component_name: str, function_name: str, **kwargs: Any) -> ArgumentSet:
        """A new ArgumentSet with ``kwargs`` set for one function."""
        args = self.to_dict()
        args.setdefault(component_name, {}).setdefault(function_name, {}).update(kwargs)
        return ArgumentSet(args)

    def merged(self, other: ArgumentSet | Mapping[str, Any]) -> ArgumentSet:
        """A new ArgumentSet where ``other``'s values win."""
        args = self.to_dict()
        for comp, fns in ArgumentSet.coerce(other)._args.items():
            for fn, kwargs in fns.items():
                args.setdefault(comp, {}).setdefault(fn, {}).update(copy.deepcopy(kwargs))
        return ArgumentSet(args)

    def registry_spec(self) -> dict[str, Any]:
        """The spec registries store: ``{"identifier": ..., "args": {...}}``."""
        return {"identifier": self.identifier, "args": self.to_dict()}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ArgumentSet:
        """An ArgumentSet from its registry spec, or from AgentOS's nested or flat spec.

        The identifier a spec claims must be the hash of its content.
        """
        if isinstance(spec, Mapping) and "args" not in spec:
            spec = _from_agentos_spec(spec)
        if not isinstance(spec, Mapping) or "args" not in spec:
            raise ArgumentError(
                "An ArgumentSet spec is a mapping with an 'args' key; "
                f"got {type(spec).__name__}."
            )
        arg_set = cls.recorded(spec["args"])
        claimed = spec.get("identifier")
        if claimed is not None and claimed != arg_set.identifier:
            raise ArgumentError(
                f"ArgumentSet spec claims identifier {claimed} but its content hashes to "
                f"{arg_set.identifier}: the spec was edited or damaged."
            )
        return arg_set

    def to_registry(self, registry: Registry | None = None, force: bool = False) -> Registry:
        from pcs.registry import InMemoryRegistry

        registry = registry if registry is not None else InMemoryRegistry()
        registry.add_argument_set_spec(self.registry_spec(), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> ArgumentSet:
        return cls.from_spec(registry.get_argument_set_spec(identifier))

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(path, dump_yaml(self._args, sort_keys=True))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ArgumentSet:
        """Read an argument-set file ``{component: {function: {arg: value}}}``.

        YAML anchors and merge keys work. A top-level section that only defines
        anchors for other sections is dropped with a warning (its name is kept in
        ``anchor_sections``). A section counts as anchor-only when the document
        reuses it elsewhere through an alias, or when it has no ``__init__`` entry
        and every entry in it is reused elsewhere through an alias.

        Args:
            path: the YAML file.

        Returns:
            The ArgumentSet.

        Raises:
            ArgumentError: the file is missing, not UTF-8, not valid YAML, or not of
                the shape ``{component: {function: {arg: value}}}``.
            InputLimitError: the file is too large, expands too much through YAML
                aliases, nests too deep, or holds values no store can keep.
        """
        what = f"Argument set file {path}"
        try:
            size = Path(path).stat().st_size
            if size > MAX_YAML_BYTES:  # refuse before reading it into memory
                raise InputLimitError(
                    f"{what} is {size} bytes, more than the {MAX_YAML_BYTES} bytes pcs reads "
                    "from one YAML document. Keep large data in artifacts, not in YAML."
                )
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ArgumentError(f"Argument set file {path} does not exist.") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ArgumentError(
                f"Argument set file {path} cannot be read as UTF-8 text ({exc})."
            ) from None
        anchor_only: list[str] = []
        data = load_yaml(
            text, what, ArgumentError, inspect=lambda root: anchor_only.extend(_anchor_only(root))
        )
        if isinstance(data, dict):
            for name in anchor_only:
                if name in data:
                    del data[name]
                    log.warning(
                        "%s: section %r only defines YAML anchors that other sections use and "
                        "names no component, so pcs ignores it.",
                        what,
                        name,
                    )
        arg_set = cls({} if data is None else data)
        arg_set.anchor_sections = tuple(anchor_only)
        return arg_set

    # -- AgentOS's names ------------------------------------------------------------------
    #
    # AgentOS's ArgumentSet was a mutable dict wrapper; these keep its calls working.
    # ``update`` changes the set in place (the identifier follows the new content).

    def update(self, component_name: str, fn_name: str, args: Mapping[str, Any]) -> None:
        """Set ``args`` for one function of one component, in place (AgentOS's ``update``).

        Raises:
            ArgumentError: a name is not a string, ``args`` is not a mapping.
            UnserializableArgumentError: a value pcs cannot record.
        """
        if not isinstance(component_name, str) or not isinstance(fn_name, str):
            raise ArgumentError(
                f"ArgumentSet.update needs a component name and a function name as strings; "
                f"got {type(component_name).__name__} and {type(fn_name).__name__}."
            )
        if not isinstance(args, Mapping):
            raise ArgumentError(
                f"ArgumentSet.update needs the arguments of {component_name}.{fn_name} as a "
                f"mapping {{arg: value}}; got {type(args).__name__}."
            )
        merged = self.get_function_args(component_name, fn_name)
        merged.update(args)
        checked = _validate({component_name: {fn_name: merged}})
        self._args.setdefault(component_name, {})[fn_name] = checked[component_name][fn_name]
        self._identifier = None

    def get_component_args(self, component_name: str) -> dict[str, dict[str, Any]]:
        """Every function's arguments of one component (a copy; ``{}`` when none)."""
        return copy.deepcopy(self._args.get(component_name, {}))

    def get_arg(self, component_name: str, function_name: str, arg_key: str) -> Any:
        """One argument's value; ``{}`` when it is not set, as in AgentOS."""
        fn_args = self._args.get(component_name, {}).get(function_name, {})
        return copy.deepcopy(fn_args[arg_key]) if arg_key in fn_args else {}

    def to_spec(self, flatten: bool = False) -> dict[str, Any]:
        """AgentOS's spec: ``{identifier: args}``, or with ``flatten`` the args plus ``identifier``.

        Registries store ``registry_spec()``; ``from_spec`` reads all three forms.
        """
        if flatten:
            return {**self.to_dict(), "identifier": self.identifier}
        return {self.identifier: self.to_dict()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArgumentSet):
            return NotImplemented
        return self.identifier == other.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        return f"ArgumentSet({self._args!r})"


def _from_agentos_spec(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """AgentOS's nested ``{identifier: args}`` or flat ``{**args, identifier}`` as a registry spec."""
    if "identifier" in spec:
        return {
            "identifier": spec["identifier"],
            "args": {k: v for k, v in spec.items() if k != "identifier"},
        }
    if len(spec) == 1:
        ((identifier, args),) = spec.items()
        return {"identifier": identifier, "args": args}
    return spec


def _anchor_only(root: Any) -> list[str]:
    """Names of the top-level sections of a composed YAML document that only hold anchors.

    Aliases share node objects, so "reused elsewhere" is "referenced by more
    parents than the one being looked at". Counted on the node graph before any
    Python object is built (merge keys are still there to be counted).
    """
    import yaml

    if not isinstance(root, yaml.MappingNode):
        return []
    refs: dict[int, int] = {}  # id(node) -> how many times a parent refers to it
    seen: set[int] = set()
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen or isinstance(node, yaml.ScalarNode):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        else:
            kids = [item for pair in node.value for item in pair]
        for kid in kids:
            refs[id(kid)] = refs.get(id(kid), 0) + 1
            todo.append(kid)

    def reused(node: Any, parent: Any) -> bool:
        if isinstance(parent, yaml.SequenceNode):
            own = sum(1 for kid in parent.value if kid is node)
        else:
            own = sum((k is node) + (v is node) for k, v in parent.value)
        return refs.get(id(node), 0) > own

    found = []
    for key, section in root.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag != "tag:yaml.org,2002:str":
            continue
        if reused(section, root):
            found.append(key.value)
        elif isinstance(section, yaml.MappingNode) and section.value:
            names = {k.value for k, _ in section.value if isinstance(k, yaml.ScalarNode)}
            if "__init__" not in names and all(reused(v, section) for _, v in section.value):
                found.append(key.value)
        elif isinstance(section, yaml.SequenceNode) and section.value:
            if all(reused(v, section) for v in section.value):
                found.append(key.value)
    return found


def _validate(arguments: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    if not isinstance(arguments, Mapping):
        raise ArgumentError(
            f"An ArgumentSet is a mapping {{component: {{function: {{arg: value}}}}}}; "
            f"got {type(arguments).__name__}."
        )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for comp, fns in arguments.items():
        if not isinstance(comp, str) or not isinstance(fns, Mapping):
            raise ArgumentError(
                f"ArgumentSet entry {comp!r} must map a component name to "
                f"{{function: {{arg: value}}}}; got {type(fns).__name__}."
            )
        out[comp] = {}
        for fn, kwargs in fns.items():
            if not isinstance(fn, str) or not isinstance(kwargs, Mapping):
                raise ArgumentError(
                    f"ArgumentSet entry {comp}.{fn} must map a function name to "
                    f"{{arg: value}}; got {type(kwargs).__name__}."
                )
            out[comp][fn] = to_recordable(dict(kwargs), f"argument {comp}.{fn}")
    return out


# -- secret arguments (pcs.secret): recorded as a marker, revealed when called ---------------


def _protect_secrets(arguments: Any, by_name: bool) -> Any:
    """``arguments`` with every secret value replaced by its marker (shape left to _validate)."""
    from pcs.secrets import Secret, protect

    if not isinstance(arguments, Mapping):
        return arguments
    out: dict[Any, Any] = {}
    for comp, fns in arguments.items():
        if not isinstance(fns, Mapping):
            out[comp] = fns
            continue
        out[comp] = {}
        for fn, kwargs in fns.items():
            if not isinstance(kwargs, Mapping):
                out[comp][fn] = kwargs
                continue
            out[comp][fn] = {
                name: (protect(name, value) if by_name or isinstance(value, Secret) else value)
                if isinstance(name, str) else value
                for name, value in kwargs.items()
            }
    return out


def _reveal_secrets(kwargs: dict[str, Any], where: str) -> dict[str, Any]:
    from pcs.secrets import is_marker, reveal

    return {
        name: reveal(value, f"{where}.{name}", name) if is_marker(value) else value
        for name, value in kwargs.items()
    }
