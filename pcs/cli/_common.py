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
    "stopped_notice",
    "stop_notice",
    "interrupted_notice",
    "note_new_store",
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


def note_new_store() -> None:
    """Say so (on stderr) when the command is about to create a new local store."""
    import os

    from mlflow.tracking._tracking_service.utils import get_tracking_uri

    uri = get_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.exists(path):
            click.echo(
                f"pcs: no MLflow store at {path} yet; creating one (set MLFLOW_TRACKING_URI "
                "or --tracking-uri to use another store).",
                err=True,
            )


def stopped_notice(run_id: str, why: str) -> None:
    """Say on stderr that run ``run_id`` was stopped, and how to see it and run it again."""
    click.echo(
        f"pcs: {why}; run {run_id} ended KILLED. See it with: pcs status {run_id}; "
        f"run it again with: pcs rerun {run_id}",
        err=True,
    )


@contextlib.contextmanager
def stop_notice(as_json: bool) -> Iterator[None]:
    """Name the run that SIGTERM or SIGHUP stops while the block runs, as Ctrl-C does.

    The block is guarded work (:func:`pcs._signals.guarded`): the signal unwinds
    it, the run ends KILLED, and the exception that carries the run's id reaches
    this block before the process ends as the signal says. The notice goes to
    stderr and the id last on stdout (not with --json), then the signal is
    delivered again; exit status -15 (143 in a shell) for SIGTERM.
    """
    from pcs import _signals

    with _signals.guarded():
        try:
            yield
        except _signals.ProcessTerminated as exc:
            run_id = getattr(exc, "pcs_run_id", None)
            if run_id:
                stopped_notice(run_id, f"stopped by {exc.signal_name}")
                if not as_json:
                    click.echo(run_id)
                # the signal ends the process without flushing Python's buffers
                sys.stdout.flush()
                sys.stderr.flush()
            raise


@contextlib.contextmanager
def interrupted_notice() -> Iterator[Callable[[Any], None]]:
    """Yield an ``on_start`` callback; on Ctrl-C or SIGTERM/SIGHUP, print the sweep id and how
    to resume it (on stderr) before the command ends as the signal says."""
    from pcs import _signals

    started: list[str] = []

    def notice() -> None:
        if started:
            click.echo(
                f"pcs: sweep {started[-1]} was stopped; run its remaining trials with: "
                f"pcs sweep --resume {started[-1]}",
                err=True,
            )

    remove = _signals.on_termination(notice)
    try:
        yield lambda sweep: started.append(sweep.identifier)
    except KeyboardInterrupt:
        notice()
        raise
    finally:
        remove()


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
