"""``pcs cache``: see and empty pcs's caches."""

from __future__ import annotations

import click

from pcs.cli._common import emit_json, json_option

__all__ = ["cache"]


@click.group()
def cache() -> None:
    """See and empty pcs's caches under $PCS_HOME (git clones, environments, pulled artifacts, sources)."""


@cache.command(name="list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Each cache with its size."""
    from pcs import _render
    from pcs.cache import list_caches

    summaries = list_caches()
    if as_json:
        emit_json([s.to_dict() for s in summaries])
    else:
        _render.print_caches(summaries)


@cache.command()
@click.option("--older-than", default=None, metavar="DURATION",
              help="Only entries not used for this long: 30m, 2h, 1d, 1w.")
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
def clean(older_than: str | None, dry_run: bool, as_json: bool) -> None:
    """Empty the caches; entries a running pcs process uses are skipped."""
    from pcs import _render
    from pcs.cache import clean as clean_caches
    from pcs.cache import parse_duration

    result = clean_caches(
        older_than=parse_duration(older_than) if older_than else None, dry_run=dry_run
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        _render.print_clean_result(result)
