"""``pcs graph``: a picture of a run's lineage."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["graph"]


@click.command()
@click.argument("run_id")
@click.option("-o", "--output", default=None, type=click.Path(dir_okay=False),
              help="lineage.html (self-contained, opens offline) or lineage.svg "
                   "[default: lineage-<id>.html].")
@click.option("--depth", type=click.IntRange(0), default=2, show_default=True,
              help="How many links away from RUN_ID to follow.")
@json_option
def graph(run_id: str, output: str | None, depth: int, as_json: bool) -> None:
    """Draw RUN_ID's lineage: outer/inner, dependency/depender, rerun-of and imported-from
    links, with status, grade and verification verdict on each run."""
    from pcs import graph as lineage_graph
    from pcs.run import Run

    with working(as_json):
        run = Run.from_existing_run_id(run_id)
        lineage = lineage_graph.lineage(run, depth)
        path = lineage_graph.write(lineage, output or f"lineage-{run.identifier[:8]}.html")
    if as_json:
        emit_json({"path": str(path)} | lineage.to_dict())
        return
    click.echo(
        f"wrote the lineage of {run.identifier} ({_count(len(lineage.nodes), 'run')}, "
        f"{_count(len(lineage.edges), 'link')}) to {path}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
