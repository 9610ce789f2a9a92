"""``pcs status``: every pcs run, or one run in detail (a sweep with its table of trials)."""

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
    """All pcs runs, newest first (a RUNNING run whose process died shows as 'RUNNING (stale)';
    a sweep is one row with its trial count); with RUN_ID (or a unique prefix of 8+
    characters), one run in detail, or a sweep's table of trials."""
    from pcs import _render
    from pcs.run import Run
    from pcs.sweep import SweepRun

    if run_id:
        with working(as_json):
            found = Run.from_existing_run_id(run_id)
            rows = found.table() if isinstance(found, SweepRun) else None
        if as_json:
            details = _render.run_details(found)
            if rows is not None:
                details.update(trials=rows, summary=_render.sweep_summary(rows))
            emit_json(details)
        elif rows is not None:
            _render.print_sweep(found, rows)
        else:
            _render.print_run_status(found, detailed=True)
        return
    with working(as_json):
        runs = Run.get_all_runs(experiment_ids or None, pcs_only=not include_all)
    if as_json:
        listing = []
        for run, trials in _render.fold_sweeps(runs):
            summary = _render.run_summary(run)
            if trials is not None:
                summary["trials"] = trials
            listing.append(summary)
        emit_json(listing)
    else:
        _render.print_runs_table(runs)
