"""The ``pcs`` command line: it resolves what is implicit, calls the library, prints.

Each command lives in its own module of this package and only presents what
a library function returns. Errors reach :func:`main`, which prints their
message (no traceback) and exits with the error's exit code; the table of
exit codes is in :mod:`pcs.errors`. MLflow is imported only by the commands
that need it, so ``pcs --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from pcs.cli._common import note_new_store, parse_assignment, stopped_notice
from pcs.cli.annotate import delete, logs, note, restore, tag
from pcs.cli.cache import cache
from pcs.cli.cleanup import cleanup
from pcs.cli.code import code
from pcs.cli.completion import completion
from pcs.cli.freeze import freeze
from pcs.cli.graph import graph
from pcs.cli.run import diff, rerun, run
from pcs.cli.runs import runs
from pcs.cli.status import status
from pcs.cli.transfer import export_cmd, import_cmd, publish, pull

__all__ = ["main", "cli", "parse_assignment"]

# commands that open the tracking store (the others never touch it); import and pull say
# so themselves, once the bundle or registry is there (a wrong one creates no store)
_STORE_COMMANDS = {
    "run", "status", "rerun", "diff", "export", "publish", "graph",
    "cleanup", "sweep", "runs", "logs", "code", "tag", "note", "delete", "restore",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking store (default: MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db).",
)
@click.option("-v", "--verbose", is_flag=True,
              help="Show MLflow's own INFO logs and artifact download progress.")
@click.version_option(package_name="pcs", prog_name="pcs")
@click.pass_context
def cli(ctx: click.Context, tracking_uri: str | None, verbose: bool) -> None:
    """pcs: reproducible runs of Python code, recorded in MLflow.

    \b
    Exit codes: 0 ok, 1 diverged, 2 usage, 3 not found, 4 not rerunnable,
    5 unverifiable, 6 the component failed, 7 registry/bundle, 8 environment
    build, 9 git repo, 10 tracking store unreachable, 11 disk full,
    130 interrupted (SIGTERM/SIGHUP end pcs as the signal does).
    """
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if not verbose:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # one tqdm bar per downloaded artifact (hundreds in a verified sweep rerun on a server)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints "View run ... at" lines on stdout for tracking servers; pcs prints its own
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # a subcommand's -h/--help has been read by the time this runs; main() hands its argv
    argv = (ctx.obj or {}).get("argv", []) if isinstance(ctx.obj, dict) else []
    asks_help = any(arg in ("-h", "--help") for arg in argv)
    if ctx.invoked_subcommand in _STORE_COMMANDS and not asks_help:
        note_new_store()


for _command in (run, status, rerun, diff, freeze, export_cmd, import_cmd, publish, pull, graph,
                 cache, cleanup, runs, logs, code, tag, note, delete, restore, completion):
    cli.add_command(_command)


def _add_optional_commands() -> None:
    try:
        from pcs.cli.sweep import sweep
    except ImportError:  # pragma: no cover - the sweep command ships with pcs
        return
    cli.add_command(sweep)


_add_optional_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pcs`` console script."""
    from pcs._disk import quiet_disk_full_logs
    from pcs._redact import redact_text
    from pcs.errors import EXIT_CODES, PcsError

    quiet_disk_full_logs()
    try:
        result: Any = cli.main(args=argv, prog_name="pcs", standalone_mode=False,
                               obj={"argv": list(argv if argv is not None else sys.argv[1:])})
    except PcsError as exc:
        _exit_if_disk_full(exc)
        click.echo(f"Error: {redact_text(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns Ctrl-C into Abort; the KeyboardInterrupt it wraps names the run
        run_id = getattr(exc, "pcs_run_id", None) or getattr(exc.__context__, "pcs_run_id", None)
        if run_id:
            # the run ended KILLED; its id goes last on stdout, as for any finished run
            stopped_notice(run_id, "interrupted")
            if not _wants_json(argv):
                click.echo(run_id)
        else:
            click.echo("Aborted.", err=True)
        sys.exit(EXIT_CODES["interrupted"])
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:
        _exit_if_disk_full(exc)
        run_id = getattr(exc, "pcs_run_id", None)
        if run_id:
            message = redact_text(" ".join(str(exc).split())[:500])
            _echo_traceback_tail(exc)
            click.echo(
                f"Error: run {run_id} FAILED: {type(exc).__name__}: {_sentence(message)} The traceback is "
                f"recorded in the run (pcs status {run_id}).",
                err=True,
            )
            # like a finished run, a failed one prints its id as the last line of stdout,
            # so run=$(pcs run ... | tail -n 1) holds the id, not the script's last output
            if not _wants_json(argv):  # with --json, stdout holds the JSON summary only
                click.echo(run_id)
            sys.exit(EXIT_CODES["component_failed"])
        if type(exc).__module__.startswith(("mlflow", "sqlalchemy", "requests", "urllib3")):
            # the store refused or could not be reached: not a pcs bug, say what it said
            message = redact_text(" ".join(str(exc).split())[:500])
            click.echo(
                f"Error: the MLflow tracking store refused the request: {_sentence(message)} Check "
                "MLFLOW_TRACKING_URI (or --tracking-uri) and that the store is reachable.",
                err=True,
            )
            sys.exit(EXIT_CODES["tracking_store"])
        raise
    sys.exit(result if isinstance(result, int) else 0)


def _exit_if_disk_full(exc: BaseException) -> None:
    """A full disk, however it surfaced (OSError, the store's error, a PcsError about it): one line, exit 11."""
    from pcs._disk import disk_full_error
    from pcs._redact import redact_text

    full = disk_full_error(exc)
    if full is not None:
        message = str(full)
        run_id = getattr(exc, "pcs_run_id", None)
        if run_id:  # the run exists and ended FAILED: it is not "nothing written"
            message = message.replace(
                "Nothing was left half-written.",
                f"Run {run_id} ended FAILED and keeps what it logged before (pcs status {run_id}).",
            )
        click.echo(f"Error: {redact_text(message)}", err=True)
        if run_id:
            click.echo(run_id)  # like any failed run: its id is the last line of stdout
        sys.exit(full.exit_code)


def _sentence(text: str) -> str:
    """``text`` ending with one full stop (messages often end with their own)."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


_TRACEBACK_LINES = 6


def _wants_json(argv: list[str] | None) -> bool:
    args = argv if argv is not None else sys.argv[1:]
    return "--json" in args


def _echo_traceback_tail(exc: BaseException) -> None:
    """The last lines of a failed run's traceback, on stderr (the whole one is in the run).

    A script's traceback was already printed whole, as Python prints it: not again.
    """
    import traceback

    if getattr(exc, "pcs_traceback_shown", False):
        return

    from pcs._redact import redact_text

    lines = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    tail = [line for line in lines if line.strip()][-_TRACEBACK_LINES:]
    if tail:
        click.echo(redact_text("\n".join(["Traceback (last lines):", *tail])), err=True)
