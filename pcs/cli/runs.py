"""``pcs runs``: a table of runs with their params and metrics (``pcs status`` lists the same)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["runs", "listing_options", "show_listing"]

F = TypeVar("F", bound=Callable[..., Any])


def listing_options(fn: F) -> F:
    """The options a listing takes (shared by ``pcs runs`` and ``pcs status``)."""
    options = [
        click.option("--experiment", "experiment", default=None, metavar="NAME",
                     help="Only this experiment (by name). Default: MLFLOW_EXPERIMENT_NAME / "
                          "MLFLOW_EXPERIMENT_ID when set, else every experiment."),
        click.option("--experiment-id", "experiment_ids", multiple=True, hidden=True),
        click.option("--columns", default=None, metavar="LIST",
                     help="Columns to show, e.g. params.lr,metrics.val_loss (also tags.NAME). "
                          "Default: the params that differ among the runs, and their metrics."),
        click.option("--filter", "filter_string", default="", metavar="EXPR",
                     help="MLflow search filter, e.g. \"metrics.val_loss < 0.1 and params.lr = '0.01'\"."),
        click.option("--sort", default=None, metavar="FIELD",
                     help="Sort by FIELD (metrics.val_loss, 'metrics.acc DESC', -metrics.acc). "
                          "Default: newest first."),
        click.option("--limit", type=int, default=None, help="Show at most N rows."),
        click.option("--all", "include_all", is_flag=True,
                     help="Also list plain MLflow runs, not only pcs runs."),
        json_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def show_listing(experiment: str | None, experiment_ids: tuple[str, ...], columns: str | None,
                 filter_string: str, sort: str | None, limit: int | None, include_all: bool,
                 as_json: bool) -> None:
    """Search, then print the table (or JSON) of a listing."""
    from pcs import _render
    from pcs.browse import list_runs, parse_columns

    with working(as_json):
        listing = list_runs(
            experiment=experiment, filter_string=filter_string, sort=sort, limit=limit,
            columns=parse_columns(columns), include_all=include_all, experiment_ids=experiment_ids,
        )
    if as_json:
        out = []
        for run, trials in listing.rows:
            summary = _render.run_summary(run)
            summary["experiment"] = listing.experiments.get(run.info.experiment_id)
            summary["params"] = dict(run.data.params)
            summary["metrics"] = dict(run.data.metrics)
            summary["columns"] = list(listing.columns)  # in order (JSON keys are sorted)
            summary["values"] = {c: listing.value(run, c) for c in listing.columns}
            if trials is not None:
                summary["trials"] = trials
            out.append(summary)
        emit_json(out)
        return
    _render.print_runs_table([], listing=listing)


@click.command()
@listing_options
def runs(experiment: str | None, experiment_ids: tuple[str, ...], columns: str | None,
         filter_string: str, sort: str | None, limit: int | None, include_all: bool,
         as_json: bool) -> None:
    """A table of runs, newest first, with the params that differ among them and their metrics.

    \b
    pcs runs --experiment mnist --columns params.lr,metrics.val_loss
    pcs runs --filter "metrics.val_loss < 0.1" --sort metrics.val_loss --limit 5
    """
    show_listing(experiment, experiment_ids, columns, filter_string, sort, limit, include_all,
                 as_json)
