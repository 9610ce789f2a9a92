"""``pcs logs``, ``pcs tag``, ``pcs note``, ``pcs delete``, ``pcs restore``: read and mark runs."""

from __future__ import annotations

import sys

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["logs", "tag", "note", "delete", "restore"]


@click.command()
@click.argument("run_id")
@click.option("--stderr", "stream", flag_value="stderr", help="Print what it wrote on stderr.")
@click.option("--stdout", "stream", flag_value="stdout", default=True,
              help="Print what it wrote on stdout (the default).")
def logs(run_id: str, stream: str) -> None:
    """Print what run RUN_ID's code printed (as recorded in the run), on stdout."""
    from pcs.browse import run_output

    text = run_output(run_id, stream)
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")


@click.command()
@click.argument("run_id")
@click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
@json_option
def tag(run_id: str, assignments: tuple[str, ...], as_json: bool) -> None:
    """Set tags on run RUN_ID (MLflow tags, searchable with --filter "tags.KEY = 'VALUE'")."""
    from pcs.browse import tag_run
    from pcs.errors import ArgumentError

    tags: dict[str, str] = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ArgumentError(f"Cannot read tag {text[:200]!r}: write it as KEY=VALUE.")
        tags[key.strip()] = value
    with working(as_json):
        run = tag_run(run_id, tags)
    if as_json:
        emit_json({"run_id": run.identifier, "tags": tags})
    else:
        click.echo(run.identifier)


@click.command()
@click.argument("run_id")
@click.argument("text")
@json_option
def note(run_id: str, text: str, as_json: bool) -> None:
    """Set run RUN_ID's description (the note MLflow's UI shows); '-' reads it from stdin."""
    from pcs.browse import set_note

    if text == "-":
        text = sys.stdin.read()
    with working(as_json):
        run = set_note(run_id, text)
    if as_json:
        emit_json({"run_id": run.identifier, "note": text})
    else:
        click.echo(run.identifier)


@click.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@json_option
def delete(run_ids: tuple[str, ...], as_json: bool) -> None:
    """Mark runs deleted (MLflow's soft delete: hidden from listings; 'pcs restore' undoes it)."""
    from pcs.browse import delete_runs

    with working(as_json):
        done = delete_runs(run_ids)
    _print_ids([r.identifier for r in done], as_json)


@click.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@json_option
def restore(run_ids: tuple[str, ...], as_json: bool) -> None:
    """Restore runs 'pcs delete' deleted."""
    from pcs.browse import restore_runs

    with working(as_json):
        done = restore_runs(run_ids)
    _print_ids([r.identifier for r in done], as_json)


def _print_ids(ids: list[str], as_json: bool) -> None:
    if as_json:
        emit_json(ids)
    else:
        for run_id in ids:
            click.echo(run_id)
