"""The one safe YAML loader (interim: the bounded loader lands with the safe-input work)."""

from __future__ import annotations

from typing import Any

from pcs.errors import ArgumentError, PcsError

__all__ = ["load_yaml"]


def load_yaml(text: str | bytes, where: str, error: type[PcsError] = ArgumentError) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{where} is not valid YAML: {' '.join(str(exc).split())[:300]}") from None


def parse_value(raw: str, where: str) -> Any:
    """A value written on the command line, read as YAML (JSON numbers stay numbers)."""
    import json

    text = raw.strip()
    try:
        value = json.loads(text)
    except ValueError:
        pass
    else:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return load_yaml(text, where) if text else ""
