"""``pcs code``: the code a run ran, as recorded (its files, or one file's text)."""

from __future__ import annotations

import sys

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["code"]


@click.command()
@click.argument("run_id")
@click.argument("path", required=False)
@json_option
def code(run_id: str, path: str | None, as_json: bool) -> None:
    """List the files of RUN_ID's recorded code; with PATH, print that file as it ran.

    \b
    pcs code RUN                 its files: path, component (or component:module), sha256
    pcs code RUN agent.py        the text of agent.py as the run ran it
    The same files are the run's pcs/code/ artifacts in MLflow's UI.
    """
    from pcs.browse import code_text, run_code

    with working(as_json):
        if path is None:
            files = run_code(run_id)
        else:
            text = code_text(run_id, path)
    if path is not None:
        if as_json:
            emit_json({"run_id": run_id, "path": path, "text": text})
            return
        sys.stdout.write(text)
        if text and not text.endswith("\n"):
            sys.stdout.write("\n")
        return
    if as_json:
        emit_json([f.to_dict() for f in files])
        return
    width = max((len(f.path) for f in files), default=0)
    part_width = max((len(f.part) for f in files), default=0)
    for f in files:
        click.echo(f"{f.path:<{width}}  {f.part:<{part_width}}  {f.sha256[:12]}")
