"""Canonical forms, content hashes and safe file writes for specs.

A spec is a plain dict of JSON-compatible values. Its identifier is the
sha256 of its canonical JSON form (sorted keys, compact separators), so equal
content always gives the same identifier.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pcs._keys import FORMAT_VERSION
from pcs._limits import (
    MAX_DEPTH,
    MAX_DOCUMENT_DEPTH,
    check_int,
    check_text,
    depth_error,
    describe_int,
)
from pcs.errors import FormatVersionError, RegistryError, UnserializableArgumentError

__all__ = [
    "canonical_json",
    "content_hash",
    "sha256_bytes",
    "check_recordable",
    "to_recordable",
    "check_format_version",
    "atomic_write_text",
    "dump_yaml",
    "flatten_spec",
    "unflatten_spec",
    "NON_FINITE",
    "encode_value",
    "decode_value",
]


def dump_yaml(data: Any, sort_keys: bool = False) -> str:
    """Safe YAML text of plain data, with libyaml's C emitter when installed (same output).

    Data that appears twice is written out twice, never as an anchor and alias,
    so what pcs writes never counts against the alias limit of what pcs reads.

    The last few texts of plain data (dicts, lists, strings, numbers, booleans
    and None, of exactly those types) are remembered by the data's ``repr``,
    which is exact for them: a run writes the same code map as the run before
    it, and its YAML costs about 0.1 ms per module of the closure. Anything
    else (a float subclass whose ``repr`` looks plain, which the safe dumper
    refuses) is dumped afresh every time, so what is refused never depends on
    what was dumped before.
    """
    import yaml

    key = (repr(data), sort_keys) if _plain(data) else None
    if key is not None:
        with _DUMPED_LOCK:
            text = _DUMPED.get(key)
            if text is not None:
                _DUMPED.move_to_end(key)
                return text
    text = yaml.dump(data, Dumper=_dumper(), sort_keys=sort_keys, allow_unicode=False)
    if key is not None and len(key[0]) + len(text) <= _DUMPED_MAX_CHARS:
        with _DUMPED_LOCK:
            _DUMPED[key] = text
            while len(_DUMPED) > _DUMPED_ENTRIES:
                _DUMPED.popitem(last=False)
    return text


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(data: Any) -> bool:
    """Whether ``data`` is made only of dicts, lists and scalars of exactly the built-in types."""
    stack = [data]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        else:
            return False
    return True


_DUMPED: collections.OrderedDict[tuple[str, bool], str] = collections.OrderedDict()
_DUMPED_LOCK = threading.Lock()
_DUMPED_ENTRIES = 16
_DUMPED_MAX_CHARS = 2_000_000  # a text this large is remembered no more than made again


@functools.lru_cache(maxsize=1)
def _dumper() -> Any:
    import yaml

    str_tag = "tag:yaml.org,2002:str"
    resolved: dict[tuple[str, tuple[bool, bool]], str] = {}

    class _NoAliasDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        # A run's record holds a few entries per module of its closure, and PyYAML's
        # Python half (representer, resolver) cost more than the writing: the two
        # shortcuts below give the same nodes and tags, faster.
        def ignore_aliases(self, data: Any) -> bool:
            return True

        def represent_data(self, data: Any) -> Any:
            if type(data) is str:  # what SafeRepresenter.represent_str makes, with no alias to note
                return yaml.ScalarNode(str_tag, data, style=self.default_style)
            return super().represent_data(data)

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            # a scalar's implicit tag depends on its text alone (no path resolvers here),
            # and the same keys and values come back in every record
            if kind is not yaml.ScalarNode or self.yaml_path_resolvers or len(value) > 256:
                return super().resolve(kind, value, implicit)
            key = (value, implicit)
            tag = resolved.get(key)
            if tag is None:
                if len(resolved) > 100_000:
                    resolved.clear()
                tag = resolved[key] = super().resolve(kind, value, implicit)
            return tag

    return _NoAliasDumper


def canonical_json(value: Any) -> str:
    """The one JSON text of a recordable value (sorted keys, no spaces)."""
    return json.dumps(
        to_recordable(value, "value", MAX_DOCUMENT_DEPTH),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def content_hash(value: Any) -> str:
    """sha256 (hex) of the canonical JSON form of ``value``."""
    return sha256_bytes(canonical_json(value).encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_recordable(value: Any, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """Return ``value`` as plain JSON data (tuples become lists).

    Limits (``pcs._limits``) are enforced on the way, with a depth counter, so
    any value gives a one-line error, never a ``RecursionError``.

    Args:
        value: the value to record (an argument, a return value, a spec).
        where: what it is, for messages (``"argument agent.run"``).
        max_depth: how many nested lists/dicts are allowed (``MAX_DEPTH``; specs,
            which hold values inside their own structure, use ``MAX_DOCUMENT_DEPTH``).

    Returns:
        A copy of ``value`` made of dicts, lists, strings, numbers, bools and None.

    Raises:
        UnserializableArgumentError: when ``value`` holds something that
            YAML/JSON cannot record faithfully (objects, functions, NaN,
            non-string keys).
        InputLimitError: nesting deeper than ``max_depth`` (or a value that
            contains itself), an int beyond ``MAX_INT_BITS`` bits, or text with a
            lone surrogate; the message names the field.
    """
    return _recordable(value, where, max_depth, 0)


def _recordable(value: Any, where: str, max_depth: int, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_text(value, where)
    if isinstance(value, int):
        return check_int(int(value), where)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise UnserializableArgumentError(
                f"{where} is {value!r}, which JSON cannot record exactly. "
                "Pass a finite number, or a string such as 'inf'."
            )
        return float(value)
    if isinstance(value, (list, tuple, dict)):
        if depth >= max_depth:
            raise depth_error(_short_path(where), max_depth)
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise UnserializableArgumentError(
                        f"{where} has the key {_short_repr(key)} of type {type(key).__name__}; "
                        "recorded mappings need string keys. Convert the key to a string."
                    )
                check_text(key, f"a key of {where}")
                out[key] = _recordable(item, f"{where}[{_short_repr(key)}]", max_depth, depth + 1)
            return out
        return [
            _recordable(v, f"{where}[{i}]", max_depth, depth + 1) for i, v in enumerate(value)
        ]
    raise UnserializableArgumentError(
        f"{where} is a {type(value).__name__} ({_short_repr(value)}), which pcs cannot "
        "record in YAML/JSON, so a rerun could not pass it again. Pass plain data "
        "(numbers, strings, lists, dicts) and build the object inside the component, "
        "or make the object a dependency component."
    )


def check_recordable(value: Any, where: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a value that ``to_recordable`` would refuse.

    Args:
        value: the value to check.
        where: what it is, for messages.
        max_depth: how many nested lists/dicts are allowed.
    """
    to_recordable(value, where, max_depth)


def _short_path(where: str) -> str:
    # the path to a value 100 levels down is mostly "[0][0]..."; keep both ends
    return where if len(where) <= 160 else f"{where[:100]}...{where[-40:]}"


def _short_repr(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return describe_int(value)  # repr of a huge int raises
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_format_version(data: dict, what: str) -> int:
    """Refuse data written by a newer pcs; return its format version."""
    version = data.get("pcs_format", FORMAT_VERSION)
    if not isinstance(version, int) or version < 1:
        raise FormatVersionError(
            f"{what} has pcs_format {version!r}, which is not a format version. "
            "The file is damaged or was not written by pcs."
        )
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{what} was written in pcs format {version}, but this pcs reads formats "
            f"up to {FORMAT_VERSION}. Upgrade pcs (pip install -U pcs) to read it."
        )
    return version


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file, so a crash leaves no half file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- AgentOS's nested and flat spec forms ---------------------------------------------
#
# AgentOS wrote a spec either nested, ``{identifier: {key: value}}``, or flat, with the
# identifier (and its name and version, split at ``==``) beside the other keys. pcs
# keeps specs flat with ``identifier`` only; these two functions convert for code
# written against AgentOS.

_RESERVED = ("identifier", "name", "version")


def flatten_spec(nested: Mapping[str, Any]) -> dict[str, Any]:
    """``{identifier: body}`` as one flat dict with ``identifier``, ``name`` and ``version``.

    ``name`` and ``version`` are the parts of the identifier around ``==``
    (``version`` is None without one), as in AgentOS.

    Args:
        nested: a spec with exactly one key, its identifier.

    Returns:
        A deep copy of the body with the three reserved keys added.

    Raises:
        RegistryError: the spec has not exactly one key, the identifier is not a
            string or has more than one ``==``, or the body holds a reserved key
            whose value disagrees with the identifier.

    Example::

        flatten_spec({"agent==1.0": {"class_name": "Agent"}})
        # {"class_name": "Agent", "identifier": "agent==1.0", "name": "agent", "version": "1.0"}
    """
    if not isinstance(nested, Mapping) or len(nested) != 1:
        keys = list(nested)[:5] if isinstance(nested, Mapping) else type(nested).__name__
        raise RegistryError(
            f"Only a spec with exactly one key (its identifier) can be flattened; got {keys}. "
            "Pass {identifier: body}, as unflatten_spec returns it."
        )
    ((identifier, body),) = nested.items()
    if not isinstance(body, Mapping):
        raise RegistryError(
            f"Spec {identifier!r} maps to a {type(body).__name__}; its body must be a mapping."
        )
    name, version = _split_identifier(identifier)
    flat = copy.deepcopy(dict(body))
    for key, expected in zip(_RESERVED, (identifier, name, version), strict=True):
        if key in flat and flat[key] != expected:
            raise RegistryError(
                f"Spec {identifier!r} holds {key!r}: {flat[key]!r}, which disagrees with its "
                f"identifier ({key} {expected!r}). '{key}' is reserved: remove it from the "
                "body or make it match the identifier."
            )
    flat.update(identifier=identifier, name=name, version=version)
    return flat


def unflatten_spec(
    flat: Mapping[str, Any], preserve_inner_identifier: bool = False
) -> dict[str, dict[str, Any]]:
    """A flat spec as ``{identifier: body}``.

    Args:
        flat: a spec with an ``identifier`` key.
        preserve_inner_identifier: keep ``identifier``, ``name`` and ``version`` in
            the body too (by default they are removed).

    Returns:
        A deep copy, nested under the identifier.

    Raises:
        RegistryError: ``flat`` has no string ``identifier``.
    """
    if not isinstance(flat, Mapping) or not isinstance(flat.get("identifier"), str):
        raise RegistryError(
            "A flat spec needs a string 'identifier' to be unflattened; got "
            f"{sorted(flat)[:5] if isinstance(flat, Mapping) else type(flat).__name__}."
        )
    identifier = flat["identifier"]
    _split_identifier(identifier)
    body = copy.deepcopy(dict(flat))
    if not preserve_inner_identifier:
        for key in _RESERVED:
            body.pop(key, None)
    return {identifier: body}


def _split_identifier(identifier: Any) -> tuple[str, str | None]:
    if not isinstance(identifier, str) or not identifier:
        raise RegistryError(f"A spec identifier must be a non-empty string; got {identifier!r}.")
    parts = identifier.split("==")
    if len(parts) > 2:
        raise RegistryError(
            f"Spec identifier {identifier!r} has more than one '=='; write name==version."
        )
    return parts[0], parts[1] if len(parts) == 2 else None


# -- metric values -------------------------------------------------------------------------------

# NaN and infinities are written as strings: strict JSON (the registry server) has no
# numbers for them
NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def encode_value(value: float) -> float | str:
    """A metric value as a spec holds it (NaN and infinities as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def decode_value(value: float | str) -> float:
    """A metric value of a spec as a float."""
    return NON_FINITE[value] if isinstance(value, str) else float(value)
