"""``pcs-registry``: the registry server's command line.

::

    pcs-registry serve --db sqlite:///registry.db --artifacts registry_artifacts \\
        --host 127.0.0.1 --port 8765 --token "$SECRET"

Reads are open to anyone who can reach the port; writes need the token
(``--token`` or ``PCS_REGISTRY_TOKEN``). Without a token the server is
read-only.
"""

from __future__ import annotations

import sys

import click

from pcs.errors import PcsError

__all__ = ["main", "serve", "TOKEN_ENV"]

TOKEN_ENV = "PCS_REGISTRY_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@click.group()
def main() -> None:
    """The pcs registry server: share specs and run artifacts over HTTP."""


@main.command()
@click.option("--db", "db_url", default="sqlite:///registry.db", show_default=True,
              help="SQLAlchemy URL of the spec database, e.g. "
                   "postgresql://user@host:5432/dbname. Tables are created on start.")
@click.option("--artifacts", "artifacts_dir", default="registry_artifacts", show_default=True,
              type=click.Path(file_okay=False), help="Folder for run artifacts.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", envvar=TOKEN_ENV, default=None, show_envvar=True,
              help="Bearer token that writes must carry. Without one, writes are refused.")
@click.option("--max-upload-mb", default=2048, show_default=True, type=click.IntRange(1),
              help="Largest artifact upload accepted, in MiB.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db_url: str, artifacts_dir: str, host: str, port: int, token: str | None,
          max_upload_mb: int, log_level: str) -> None:
    """Serve the registry API under /api/v1 until interrupted."""
    import uvicorn

    from registry.app import create_app

    try:
        app = create_app(db_url, artifacts_dir, token, max_upload_bytes=max_upload_mb * 1024**2)
    except PcsError as exc:
        click.echo(f"pcs-registry: {exc}", err=True)
        sys.exit(exc.exit_code)
    store = app.state.store
    click.echo(f"pcs-registry: serving http://{host}:{port}/api/v1", err=True)
    click.echo(f"pcs-registry: specs in {store.display_url}", err=True)
    click.echo(f"pcs-registry: artifacts in {app.state.artifacts_dir}", err=True)
    if token:
        click.echo("pcs-registry: writes need 'Authorization: Bearer <token>'", err=True)
        if host not in _LOOPBACK:
            click.echo(
                "pcs-registry: warning: the token travels in clear text over plain HTTP; "
                "put a TLS reverse proxy in front of this server.", err=True,
            )
    else:
        click.echo(
            f"pcs-registry: no token given (--token or {TOKEN_ENV}), so this server is "
            "READ-ONLY: every write is refused.", err=True,
        )
    uvicorn.run(app, host=host, port=port, log_level=log_level)


if __name__ == "__main__":
    main()
