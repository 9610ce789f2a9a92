"""``pcs-registry``: the registry server's command line.

::

    PCS_REGISTRY_TOKEN="$SECRET" pcs-registry serve --db sqlite:///registry.db \\
        --artifacts registry_artifacts --host 127.0.0.1 --port 8765
    pcs-registry serve --token-file /etc/pcs/registry-token

Reads are open to anyone who can reach the port; writes need the token, taken
from ``--token-file``, else ``--token``, else ``PCS_REGISTRY_TOKEN`` (surrounding
whitespace stripped). Without a token the server is read-only. ``--token``
works but is shown to every user of the machine by ``ps``.

SIGTERM (or Ctrl-C) stops the server gracefully: requests in progress get
``--shutdown-timeout`` seconds to finish, then are cancelled, and every
temporary file they made is removed. A server killed outright (SIGKILL)
leaves its temporary files; the next start sweeps them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

import click

from pcs.errors import PcsError

__all__ = ["main", "serve", "TOKEN_ENV"]

TOKEN_ENV = "PCS_REGISTRY_TOKEN"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# seconds between telling uploads to give up and cancelling whatever still runs
_CANCEL_DELAY = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="File holding the bearer token that writes must carry (whitespace around "
                   f"it is ignored). Takes precedence over --token and {TOKEN_ENV}.")
@click.option("--token", default=None,
              help="Bearer token that writes must carry. Every user of this machine can read "
                   f"it in `ps`: prefer {TOKEN_ENV} or --token-file. Without any token, "
                   "writes are refused.")
@click.option("--max-upload-mb", default=2048, show_default=True, type=click.IntRange(1),
              help="Largest artifact upload accepted, in MiB.")
@click.option("--shutdown-timeout", default=10, show_default=True, type=click.IntRange(0),
              help="Seconds that requests in progress get to finish on SIGTERM or Ctrl-C "
                   "before they are cancelled.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(db_url: str, artifacts_dir: str, host: str, port: int, token_file: str | None,
          token: str | None, max_upload_mb: int, shutdown_timeout: int,
          log_level: str) -> None:
    """Serve the registry API under /api/v1 until interrupted."""
    import uvicorn

    from pcs.web_registry import resolve_token
    from registry.app import create_app

    try:
        secret = resolve_token(token, token_file)
        app = create_app(db_url, artifacts_dir, secret, max_upload_bytes=max_upload_mb * 1024**2)
    except PcsError as exc:
        click.echo(f"pcs-registry: {exc}", err=True)
        sys.exit(exc.exit_code)
    store = app.state.store
    click.echo(f"pcs-registry: serving http://{host}:{port}/api/v1", err=True)
    click.echo(f"pcs-registry: specs in {store.display_url}", err=True)
    click.echo(f"pcs-registry: artifacts in {app.state.artifacts_dir}", err=True)
    if app.state.swept:
        click.echo(f"pcs-registry: removed {len(app.state.swept)} temporary file(s) left by "
                   "a server that was killed", err=True)
    if secret:
        click.echo("pcs-registry: writes need 'Authorization: Bearer <token>'", err=True)
        if token and not token_file:
            click.echo(f"pcs-registry: warning: --token is visible to every user in `ps`; "
                       f"use {TOKEN_ENV} or --token-file instead.", err=True)
        if host not in _LOOPBACK:
            click.echo(
                "pcs-registry: warning: the token travels in clear text over plain HTTP; "
                "put a TLS reverse proxy in front of this server.", err=True,
            )
    else:
        click.echo(
            f"pcs-registry: no token given ({TOKEN_ENV}, --token-file or --token), so this "
            "server is READ-ONLY: every write is refused.", err=True,
        )
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, http=_json_errors_protocol(),
        # uvicorn cancels what still runs a moment after uploads were told to give up
        timeout_graceful_shutdown=shutdown_timeout + _CANCEL_DELAY,
    )
    _graceful_server(config, app.state.stopping, shutdown_timeout).run()


def _graceful_server(config: Any, stopping: threading.Event, grace: int) -> Any:
    """A uvicorn server that sets ``stopping`` once ``grace`` seconds of shutdown passed.

    Uploads still running then answer 503 and remove their temporary files,
    instead of being cancelled without an answer.
    """
    import uvicorn

    class GracefulServer(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            timer = asyncio.get_running_loop().call_later(grace, stopping.set)
            try:
                await super().shutdown(sockets)
            finally:
                timer.cancel()
                stopping.set()

    return GracefulServer(config)


def _json_errors_protocol() -> Any:
    """uvicorn's h11 protocol, answering malformed HTTP with the registry's JSON errors.

    The HTTP parser refuses some requests before the app sees them (a NUL or
    a raw invalid byte in the request line or a header, a bad Content-Length);
    uvicorn would answer those in plain text.
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not hasattr(H11Protocol, "send_400_response"):  # pragma: no cover - other uvicorn
        return "h11"

    class JsonErrorsH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            import h11

            body = json.dumps({
                "error": "ArgumentError",
                "message": "The request is not valid HTTP/1.1 (its request line or headers "
                           "hold a NUL, a control or non-ASCII byte, or a malformed value), "
                           "so the registry could not read it. Percent-encode identifiers "
                           "in URLs and send well-formed headers.",
            }).encode("ascii")
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                output = self.conn.send(event)
                if output:
                    self.transport.write(output)
            self.transport.close()

    return JsonErrorsH11Protocol


if __name__ == "__main__":
    main()
