"""``pcs status``: every pcs run, or one run in detail (a sweep with its table of trials)."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, working
from pcs.cli.runs import listing_options, show_listing

__all__ = ["status"]


@click.command()
@click.argument("run_id", required=False)
@listing_options
def status(run_id: str | None, experiment: str | None, experiment_ids: tuple[str, ...],
           columns: str | None, filter_string: str, sort: str | None, limit: int | None,
           include_all: bool, as_json: bool) -> None:
    """All pcs runs, newest first, as 'pcs runs' lists them (a RUNNING run whose process died
    shows as 'RUNNING (stale)'; a sweep is one row with its trial count); with RUN_ID (or a
    unique prefix of 8+ characters), one run in detail, or a sweep's table of trials."""
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
    show_listing(experiment, experiment_ids, columns, filter_string, sort, limit, include_all,
                 as_json)
