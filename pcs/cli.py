"""The ``pcs`` command line: it resolves what is implicit, calls the library, prints.

Errors from pcs reach ``main()``, which prints their message (no traceback)
and exits with the error's ``exit_code``. MLflow is imported only by the
commands that need it, so ``pcs --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["main", "cli", "parse_assignment"]


def parse_assignment(text: str) -> tuple[str, str, str, Any]:
    """Parse ``component.function.arg=value``.

    The value is read as JSON (``5`` an int, ``1e-3`` a float, ``true`` a bool,
    ``[1, 2]`` a list); quoted text and YAML flow collections are read as YAML;
    anything else stays a string (``no`` is the string "no", not False).
    """
    from pcs.errors import ArgumentError

    key, sep, raw = text.partition("=")
    parts = key.split(".")
    if not sep or len(parts) != 3 or not all(parts):
        raise ArgumentError(
            f"Cannot read argument {text!r}: write it as COMPONENT.FUNCTION.ARG=VALUE, "
            "e.g. agent.run_episodes.num_episodes=5 (FUNCTION is __init__ for constructor "
            "arguments)."
        )
    return parts[0], parts[1], parts[2], _parse_value(raw)


def _parse_value(raw: str) -> Any:
    import yaml

    text = raw.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    if quoted or (text and text[0] in "[{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return raw
    return raw


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking store (default: MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db).",
)
@click.version_option(package_name="pcs", prog_name="pcs")
def cli(tracking_uri: str | None) -> None:
    """pcs: reproducible runs of Python code, recorded in MLflow."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri


@cli.command()
@click.argument("component")
@click.option("-r", "--registry-file", default="components.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Registry YAML that defines the component.")
@click.option("-e", "--entry-point", default=None, help="Entry point to call (default: the component's DEFAULT_ENTRY_POINT, else 'run').")
@click.option("-a", "--arg", "args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="One argument; VALUE is read as YAML (5 is an int, 'x' a string). Repeatable.")
@click.option("--arg-set", "arg_set_file", type=click.Path(dir_okay=False),
              help="YAML file with an ArgumentSet; -a values override it.")
@click.option("--seed", type=int, default=None, help="Seed for random/NumPy/PyTorch (default: drawn and recorded).")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def run(component: str, registry_file: str, entry_point: str | None, args: tuple[str, ...],
        arg_set_file: str | None, seed: int | None, run_name: str | None, as_json: bool) -> None:
    """Run COMPONENT's entry point and record it; prints the new run id last."""
    from pcs import _keys, _render
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component

    arg_set = ArgumentSet.from_yaml(arg_set_file) if arg_set_file else ArgumentSet()
    for text in args:
        comp, fn, name, value = parse_assignment(text)
        arg_set = arg_set.with_args(comp, fn, **{name: value})
    comp_obj = Component.from_registry_file(registry_file, component)
    new_run = comp_obj.run_with_arg_set(entry_point, arg_set, seed=seed, run_name=run_name)
    if as_json:
        _echo_json(
            _render.run_summary(new_run)
            | {"return_value_sha256": new_run.tags.get(_keys.RETURN_VALUE_SHA256)}
        )
        return
    _render.print_run_status(new_run)
    click.echo(new_run.identifier)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--experiment-id", "experiment_ids", multiple=True, help="Only these experiments (repeatable).")
@click.option("--all", "include_all", is_flag=True, help="Also list plain MLflow runs, not only pcs runs.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(run_id: str | None, experiment_ids: tuple[str, ...], include_all: bool, as_json: bool) -> None:
    """All pcs runs, newest first; with RUN_ID, one run in detail."""
    from pcs import _render
    from pcs.run import Run

    if run_id:
        found = Run.from_existing_run_id(run_id)
        if as_json:
            data = _render.run_summary(found)
            data.update(params=found.params, metrics=found.metrics, tags=found.tags)
            _echo_json(data)
        else:
            _render.print_run_status(found, detailed=True)
        return
    runs = Run.get_all_runs(experiment_ids or None, pcs_only=not include_all)
    if as_json:
        _echo_json([_render.run_summary(r) for r in runs])
    else:
        _render.print_runs_table(runs)


@cli.command()
@click.argument("run_id")
@click.option("--verify", is_flag=True, help="Compare the new run with the original and print the report.")
@click.option("--strict", is_flag=True, help="Like --verify; a divergence is an error.")
@click.option("--code", type=click.Choice(["recorded", "current"]), default="recorded", show_default=True,
              help="Run the recorded source snapshot, or the component files as they are now.")
@click.option("--env", type=click.Choice(["current", "recorded"]), default="current", show_default=True,
              help="Run here, or in a virtual environment with the recorded distributions.")
@click.option("--json", "as_json", is_flag=True, help="Print the result (and report) as JSON.")
def rerun(run_id: str, verify: bool, strict: bool, code: str, env: str, as_json: bool) -> None:
    """Execute RUN_ID's recorded command again; prints the new run id (and the report)."""
    from pcs.run import Run

    new_run = Run.from_existing_run_id(run_id).rerun(verify=verify or strict, code=code, env=env)
    report = new_run.verification
    if as_json:
        data: dict[str, Any] = {"run_id": new_run.identifier, "rerun_of": run_id}
        if report is not None:
            data["verification"] = report.to_dict()
        _echo_json(data)
    else:
        if report is not None:
            click.echo(str(report))
        click.echo(new_run.identifier)
    if report is not None and not report.reproduced:
        from pcs.errors import ReproducibilityError

        sys.exit(ReproducibilityError.exit_code)


@cli.command()
@click.argument("run_a")
@click.argument("run_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two runs: return value, metrics step by step, params, artifacts, and the record."""
    from pcs.run import Run
    from pcs.verification import compare_runs

    report = compare_runs(Run.from_existing_run_id(run_a), Run.from_existing_run_id(run_b))
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(str(report))
    if not report.reproduced:
        sys.exit(1)


@cli.command()
@click.argument("component")
@click.option("-r", "--registry-file", default="components.yaml", show_default=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Where to write the frozen registry.")
@click.option("--force", is_flag=True, help="Freeze files with uncommitted changes at their last commit.")
def freeze(component: str, registry_file: str, output: str, force: bool) -> None:
    """Pin COMPONENT and its dependencies to git commits; write a registry that runs anywhere."""
    from pcs.component import Component

    frozen = Component.from_registry_file(registry_file, component).to_frozen_registry(force=force)
    frozen.to_yaml(output)
    click.echo(f"wrote {output}")


@cli.command(name="export")
@click.argument("run_ids", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle folder, or a file ending in .tar.gz.")
@click.option("--no-artifacts", is_flag=True, help="Leave the runs' artifacts out (registry YAML only).")
@click.option("--no-recurse", is_flag=True, help="Leave linked runs (dependencies, outer runs) out.")
def export_cmd(run_ids: tuple[str, ...], output: str, no_artifacts: bool, no_recurse: bool) -> None:
    """Write RUN_IDs, with everything needed to rerun them elsewhere, into a bundle."""
    from pcs import transfer

    result = transfer.export_bundle(
        list(run_ids), Path(output), include_artifacts=not no_artifacts, recurse=not no_recurse,
        progress=True,
    )
    click.echo(f"exported {len(result.run_ids)} run(s) to {result.path}")


@cli.command(name="import")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--trust", is_flag=True, help="Allow unpickling pickled return values from this bundle.")
def import_cmd(bundle: str, trust: bool) -> None:
    """Import every run of BUNDLE into the current tracking store (prints old -> new ids)."""
    from pcs import transfer

    for original, imported in transfer.import_bundle(Path(bundle), trust=trust, progress=True).items():
        click.echo(f"{original} -> {imported}")


@cli.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--to", "url", required=True, help="Registry server URL, e.g. http://127.0.0.1:8765")
@click.option("--token", envvar="PCS_REGISTRY_TOKEN", help="Bearer token for writes (default: PCS_REGISTRY_TOKEN).")
@click.option("--force", is_flag=True, help="Replace runs the server already holds in another form (e.g. before they had ended).")
def publish(run_ids: tuple[str, ...], url: str, token: str | None, force: bool) -> None:
    """Publish RUN_IDs (with artifacts and linked runs) to a registry server."""
    from pcs import transfer
    from pcs.web_registry import WebRegistry

    registry = WebRegistry(url, token=token)
    result = transfer.export_runs_by_id(
        list(run_ids), registry, include_artifacts=True, progress=True, force=force
    )
    click.echo(f"published {len(result)} run(s) to {url}")


@cli.command()
@click.argument("run_id")
@click.option("--from", "url", required=True, help="Registry server URL.")
@click.option("--trust", is_flag=True, help="Allow unpickling pickled return values.")
def pull(run_id: str, url: str, trust: bool) -> None:
    """Pull RUN_ID from a registry server into the current tracking store; prints its local id."""
    from pcs.run import Run
    from pcs.web_registry import WebRegistry

    pulled = Run.from_registry(WebRegistry(url), run_id, trust=trust)
    click.echo(pulled.identifier)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pcs`` console script."""
    from pcs.errors import PcsError

    try:
        cli.main(args=argv, prog_name="pcs", standalone_mode=False)
    except PcsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:
        # MLflow's own errors (an unreachable server, a store it cannot open) are not
        # pcs bugs: say what MLflow said, without a traceback.
        if type(exc).__module__.startswith("mlflow"):
            click.echo(
                f"Error: the MLflow tracking store refused the request: {exc}. Check "
                "MLFLOW_TRACKING_URI (or --tracking-uri) and that the store is reachable.",
                err=True,
            )
            sys.exit(1)
        raise
    sys.exit(0)
