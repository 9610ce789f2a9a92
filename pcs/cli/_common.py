"""What every ``pcs`` command shares: --json output, quiet stdout, progress, argument parsing."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

__all__ = [
    "json_option",
    "progress_option",
    "emit_json",
    "working",
    "parse_assignment",
    "progress_callback",
]

F = TypeVar("F", bound=Callable[..., Any])


def json_option(fn: F) -> F:
    """``--json``: print the result as JSON, and nothing else, on stdout."""
    return click.option(
        "--json", "as_json", is_flag=True,
        help="Print the result as JSON (nothing else goes to stdout).",
    )(fn)


def progress_option(fn: F) -> F:
    """``--progress``: draw progress bars on stderr even when it is not a terminal."""
    return click.option(
        "--progress", "show_progress", is_flag=True, default=None,
        help="Show progress bars on stderr even when it is not a terminal.",
    )(fn)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@contextlib.contextmanager
def working(as_json: bool) -> Iterator[None]:
    """Run library work; with --json, anything it prints goes to stderr, keeping stdout JSON."""
    if not as_json:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


@contextlib.contextmanager
def progress_callback(show: bool | None) -> Iterator[Any]:
    """A progress callback drawing rich bars on stderr (on a terminal, or when forced)."""
    from pcs.progress import rich_progress

    with rich_progress(True if show else None) as callback:
        yield callback


def parse_assignment(text: str) -> tuple[str, str, str, Any]:
    """Parse ``component.function.arg=value``; VALUE is read as YAML (see :func:`parse_value`)."""
    from pcs.errors import ArgumentError

    key, sep, raw = text.partition("=")
    parts = key.split(".")
    if not sep or len(parts) != 3 or not all(parts):
        raise ArgumentError(
            f"Cannot read argument {text[:200]!r}: write it as COMPONENT.FUNCTION.ARG=VALUE, "
            "e.g. agent.run_episodes.num_episodes=5 (FUNCTION is __init__ for constructor "
            "arguments)."
        )
    return parts[0], parts[1], parts[2], parse_value(raw, f"argument {key}")


def parse_value(raw: str, where: str) -> Any:
    """A ``-a`` value: YAML (``yes`` is true, ``'5'`` a string, ``[1, 2]`` a list).

    What JSON reads as a number is that number (``1e-3`` is a float; YAML 1.1
    would read it as a string).
    """
    from pcs import _yaml

    return _yaml.parse_value(raw, where)
