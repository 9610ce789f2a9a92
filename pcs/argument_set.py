"""ArgumentSet: the arguments of every function a run calls, by component."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pcs.errors import ArgumentError
from pcs.specs import atomic_write_text, content_hash, dump_yaml, to_recordable

if TYPE_CHECKING:  # pragma: no cover
    from pcs.registry import Registry

__all__ = ["ArgumentSet"]


class ArgumentSet:
    """``{component_name: {function_name: {argument: value}}}``, content-addressed.

    ``function_name`` is ``__init__`` for constructor arguments or the name of
    an entry point. Values must be plain data (YAML/JSON), so that a rerun can
    pass exactly the same arguments again.

    Example::

        ArgumentSet({"agent": {"__init__": {"x": 1}, "run_episodes": {"num_episodes": 5}}})
    """

    def __init__(self, arguments: Mapping[str, Any] | None = None) -> None:
        self._args: dict[str, dict[str, dict[str, Any]]] = _validate(arguments or {})
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

    @property
    def identifier(self) -> str:
        if self._identifier is None:
            self._identifier = content_hash(self._args)
        return self._identifier

    def to_dict(self) -> dict[str, dict[str, dict[str, Any]]]:
        return copy.deepcopy(self._args)

    def get_function_args(self, component_name: str, function_name: str) -> dict[str, Any]:
        """The keyword arguments for one function of one component (a copy)."""
        return copy.deepcopy(self._args.get(component_name, {}).get(function_name, {}))

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

    def to_spec(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "args": self.to_dict()}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ArgumentSet:
        if not isinstance(spec, Mapping) or "args" not in spec:
            raise ArgumentError(
                "An ArgumentSet spec is a mapping with an 'args' key; "
                f"got {type(spec).__name__}."
            )
        arg_set = cls(spec["args"])
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
        registry.add_argument_set_spec(self.to_spec(), force=force)
        return registry

    @classmethod
    def from_registry(cls, registry: Registry, identifier: str) -> ArgumentSet:
        return cls.from_spec(registry.get_argument_set_spec(identifier))

    def to_yaml(self, path: str | Path) -> None:
        atomic_write_text(path, dump_yaml(self._args, sort_keys=True))

    @classmethod
    def from_yaml(cls, path: str | Path) -> ArgumentSet:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArgumentError(f"Argument set file {path} does not exist.") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ArgumentError(
                f"Argument set file {path} cannot be read as UTF-8 text ({exc})."
            ) from None
        except yaml.YAMLError as exc:
            raise ArgumentError(f"Argument set file {path} is not valid YAML: {exc}") from None
        return cls(data or {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArgumentSet):
            return NotImplemented
        return self.identifier == other.identifier

    def __hash__(self) -> int:
        return hash(self.identifier)

    def __repr__(self) -> str:
        return f"ArgumentSet({self._args!r})"


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
