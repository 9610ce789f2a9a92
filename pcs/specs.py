"""Canonical forms, content hashes and safe file writes for specs.

A spec is a plain dict of JSON-compatible values. Its identifier is the
sha256 of its canonical JSON form (sorted keys, compact separators), so equal
content always gives the same identifier.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from pcs._keys import FORMAT_VERSION
from pcs.errors import FormatVersionError, UnserializableArgumentError

__all__ = [
    "canonical_json",
    "content_hash",
    "sha256_bytes",
    "check_recordable",
    "to_recordable",
    "check_format_version",
    "atomic_write_text",
    "dump_yaml",
]


def dump_yaml(data: Any, sort_keys: bool = False) -> str:
    """Safe YAML text of plain data, with libyaml's C emitter when installed (same output)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(data, Dumper=dumper, sort_keys=sort_keys, allow_unicode=False)


def canonical_json(value: Any) -> str:
    """The one JSON text of a recordable value (sorted keys, no spaces)."""
    return json.dumps(
        to_recordable(value, "value"),
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


def to_recordable(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON data (tuples become lists).

    Raises:
        UnserializableArgumentError: when ``value`` holds something that
            YAML/JSON cannot record faithfully (objects, functions, NaN,
            non-string keys).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise UnserializableArgumentError(
                f"{where} is {value!r}, which JSON cannot record exactly. "
                "Pass a finite number, or a string such as 'inf'."
            )
        return float(value)
    if isinstance(value, (list, tuple)):
        return [to_recordable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnserializableArgumentError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "recorded mappings need string keys. Convert the key to a string."
                )
            out[key] = to_recordable(item, f"{where}[{key!r}]")
        return out
    raise UnserializableArgumentError(
        f"{where} is a {type(value).__name__} ({_short_repr(value)}), which pcs cannot "
        "record in YAML/JSON, so a rerun could not pass it again. Pass plain data "
        "(numbers, strings, lists, dicts) and build the object inside the component, "
        "or make the object a dependency component."
    )


def check_recordable(value: Any, where: str) -> None:
    to_recordable(value, where)


def _short_repr(value: Any) -> str:
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
