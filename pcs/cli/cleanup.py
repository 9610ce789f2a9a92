"""``pcs cleanup``: end runs whose process died."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, json_option, working

__all__ = ["cleanup"]


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list the runs that would be ended.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Also end RUNNING runs of other hosts (and runs without a heartbeat) "
                   "whose last heartbeat is older than this: 30m, 2h, 1d.")
@json_option
def cleanup(dry_run: bool, older_than: str | None, as_json: bool) -> None:
    """End stale RUNNING runs as KILLED: their process is gone (same host) or their heartbeat
    stopped (older than 3 intervals). Live runs are never touched."""
    from pcs import _render
    from pcs.cache import parse_duration
    from pcs.cleanup import end_stale_runs

    with working(as_json):
        ended = end_stale_runs(
            dry_run=dry_run, older_than=parse_duration(older_than) if older_than else None
        )
    if as_json:
        emit_json({"dry_run": dry_run, "runs": [s.to_dict() for s in ended]})
    else:
        _render.print_cleanup(ended, dry_run)
