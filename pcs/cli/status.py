"""``pcs status``: every pcs run, or one run in detail."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["status"]


@click.command()
@click.argument("run_id", required=False)
@click.option("--experiment-id", "experiment_ids", multiple=True, help="Only these experiments (repeatable).")
@click.option("--all", "include_all", is_flag=True, help="Also list plain MLflow runs, not only pcs runs.")
@json_option
def status(run_id: str | None, experiment_ids: tuple[str, ...], include_all: bool, as_json: bool) -> None:
    """All pcs runs, newest first (a RUNNING run whose process died shows as 'RUNNING (stale)');
    with RUN_ID (or a unique prefix of 8+ characters), one run in detail."""
    from pcs import _render
    from pcs.run import Run

    if run_id:
        with working(as_json):
            found = Run.from_existing_run_id(run_id)
        if as_json:
            emit_json(_render.run_details(found))
        else:
            _render.print_run_status(found, detailed=True)
        return
    with working(as_json):
        runs = Run.get_all_runs(experiment_ids or None, pcs_only=not include_all)
    if as_json:
        emit_json([_render.run_summary(r) for r in runs])
    else:
        _render.print_runs_table(runs)
