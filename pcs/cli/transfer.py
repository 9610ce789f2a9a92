"""``pcs export``, ``pcs import``, ``pcs publish`` and ``pcs pull``: moving runs between stores."""

from __future__ import annotations

from pathlib import Path

import click

from pcs.cli._common import emit_json, json_option, progress_callback, progress_option, working

__all__ = ["export_cmd", "import_cmd", "publish", "pull"]


@click.command(name="export")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder, or a file ending in .tar.gz.")
@click.option("--no-artifacts", is_flag=True, help="Leave the runs' artifacts out (registry YAML only).")
@click.option("--no-recurse", is_flag=True, help="Leave linked runs (dependencies, outer runs) out.")
@progress_option
@json_option
def export_cmd(run_ids: tuple[str, ...], output: str, no_artifacts: bool, no_recurse: bool,
               show_progress: bool | None, as_json: bool) -> None:
    """Write RUN_IDs, with everything needed to rerun them elsewhere, into a bundle."""
    from pcs import transfer

    with working(as_json), progress_callback(show_progress) as progress:
        result = transfer.export_bundle(
            list(run_ids), Path(output), include_artifacts=not no_artifacts,
            recurse=not no_recurse, progress=progress,
        )
    if as_json:
        emit_json({"path": str(result.path), "run_ids": result.run_ids})
    else:
        click.echo(f"exported {len(result.run_ids)} run(s) to {result.path}")


@click.command(name="import")
@click.argument("bundle", type=click.Path())
@click.option("--trust", is_flag=True, help="Allow unpickling pickled return values from this bundle.")
@progress_option
@json_option
def import_cmd(bundle: str, trust: bool, show_progress: bool | None, as_json: bool) -> None:
    """Import every run of BUNDLE into the current tracking store (prints original -> new ids).

    A BUNDLE that does not exist is a bundle error (exit 7), as a missing
    registry file is for pcs run -r.
    """
    from pcs import transfer
    from pcs.cli._common import note_new_store
    from pcs.errors import BundleError

    if not Path(bundle).exists():
        raise BundleError(
            f"Bundle {bundle} does not exist. Pass the folder or .tar.gz file that "
            "'pcs export RUN_ID -o PATH' wrote."
        )
    note_new_store()
    with working(as_json), progress_callback(show_progress) as progress:
        mapping = transfer.import_bundle(Path(bundle), trust=trust, progress=progress)
    if as_json:
        emit_json({"imported": mapping})
        return
    for original, imported in mapping.items():
        click.echo(f"{original} -> {imported}")


def _token_options(fn):  # type: ignore[no-untyped-def]
    fn = click.option("--token-file", type=click.Path(dir_okay=False),
                      help="File holding the bearer token for writes (surrounding whitespace is ignored).")(fn)
    fn = click.option("--token", default=None,
                      help="Bearer token for writes. Prefer PCS_REGISTRY_TOKEN or --token-file: a "
                           "token on the command line shows in 'ps' to every user of the machine.")(fn)
    return fn


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--to", "url", required=True, help="Registry server URL, e.g. http://127.0.0.1:8765")
@_token_options
@click.option("--force", is_flag=True, help="Replace runs the server already holds in another form (e.g. before they had ended).")
@progress_option
@json_option
def publish(run_ids: tuple[str, ...], url: str, token: str | None, token_file: str | None,
            force: bool, show_progress: bool | None, as_json: bool) -> None:
    """Publish RUN_IDs (with artifacts and linked runs) to a registry server."""
    from pcs import transfer
    from pcs.web_registry import WebRegistry, resolve_token

    with working(as_json), progress_callback(show_progress) as progress:
        registry = WebRegistry(url, token=resolve_token(token, token_file))
        published = transfer.export_runs_by_id(
            list(run_ids), registry, include_artifacts=True, progress=progress, force=force
        )
    if as_json:
        emit_json({"url": registry.url, "run_ids": published})
    else:
        click.echo(f"published {len(published)} run(s) to {registry.url}")


@click.command()
@click.argument("run_id")
@click.option("--from", "url", required=True, help="Registry server URL.")
@click.option("--trust", is_flag=True, help="Allow unpickling pickled return values.")
@progress_option
@json_option
def pull(run_id: str, url: str, trust: bool, show_progress: bool | None, as_json: bool) -> None:
    """Pull RUN_ID from a registry server into the current tracking store; prints its local id.

    The server is asked first, also when the store already holds the run: a URL
    nothing answers at is an error (exit 7), and no store is created for it.
    """
    from pcs import transfer
    from pcs.cli._common import note_new_store
    from pcs.web_registry import WebRegistry

    with working(as_json), progress_callback(show_progress) as progress:
        registry = WebRegistry(url)
        registry.health()
        note_new_store()
        pulled = transfer.import_run(registry, run_id, trust=trust, progress=progress)
    if as_json:
        emit_json({"run_id": pulled.identifier, "original": run_id})
    else:
        click.echo(pulled.identifier)

