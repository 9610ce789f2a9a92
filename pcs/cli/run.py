"""``pcs run``, ``pcs rerun`` and ``pcs diff``."""

from __future__ import annotations

from typing import Any

import click

from pcs.cli._common import (
    emit_json,
    json_option,
    parse_assignment,
    progress_callback,
    progress_option,
    working,
)

__all__ = ["run", "rerun", "diff"]

_RETURN_VALUE_SHOWN = 300  # characters of the return value printed by 'pcs run'


@click.command()
@click.argument("component")
@click.option("-r", "--registry-file", default="components.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Registry YAML that defines the component.")
@click.option("-e", "--entry-point", default=None, help="Entry point to call (default: the component's DEFAULT_ENTRY_POINT, else 'run').")
@click.option("-a", "--arg", "args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="One argument; VALUE is read as YAML (5 is an int, yes is true, '5' a string, "
                   "[1, 2] a list). Repeatable.")
@click.option("--arg-set", "arg_set_file", type=click.Path(dir_okay=False),
              help="YAML file with an ArgumentSet; -a values override it.")
@click.option("-s", "--secret-arg", "secret_args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="A secret argument (a token, a password): VALUE is taken as a string and "
                   "recorded only as a hash. Repeatable.")
@click.option("--seed", type=click.IntRange(0), default=None, help="Seed for random/NumPy/PyTorch (default: drawn and recorded).")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--experiment", "experiment_name", default=None,
              help="MLflow experiment (by name; created when missing). Default: MLflow's current one.")
@click.option("--return-value-format", type=click.Choice(["auto", "yaml", "json", "dill"]),
              default="auto", show_default=True,
              help="How the return value is recorded: auto is YAML when it can hold the value; "
                   "dill records any Python object (loading it runs code: trusted runs only).")
@json_option
def run(component: str, registry_file: str, entry_point: str | None, args: tuple[str, ...],
        arg_set_file: str | None, secret_args: tuple[str, ...], seed: int | None, run_name: str | None,
        experiment_name: str | None, return_value_format: str, as_json: bool) -> None:
    """Run COMPONENT's entry point and record it; prints the return value, then the run id."""
    from pcs import _config, _keys, _render
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component

    with working(as_json):
        arg_set = ArgumentSet.from_yaml(arg_set_file) if arg_set_file else ArgumentSet()
        for text in args:
            comp, fn, name, value = parse_assignment(text)
            arg_set = arg_set.with_args(comp, fn, **{name: value})
        for comp, fn, name, secret_value in _secret_assignments(secret_args):
            arg_set = arg_set.with_args(comp, fn, **{name: secret_value})
        comp_obj = Component.from_registry_file(registry_file, component)
        experiment_id = (
            _config.experiment_by_name(_config.tracking_client(), experiment_name)
            if experiment_name else None
        )
        failure: Exception | None = None
        try:
            new_run = comp_obj.run_with_arg_set(
                entry_point, arg_set, seed=seed, run_name=run_name, experiment_id=experiment_id,
                return_value_format=return_value_format,
            )
        except Exception as exc:
            if not (as_json and getattr(exc, "pcs_run_id", None)):
                raise
            failure = exc
    if failure is not None:  # with --json a script still learns which run failed, and why
        from pcs.run import Run

        emit_json(_render.run_summary(Run.from_existing_run_id(failure.pcs_run_id)))  # type: ignore[attr-defined]
        raise failure
    value = new_run.return_value_of() if new_run.tags.get(_keys.RETURN_VALUE_FORMAT) not in (None, "none") else None
    if as_json:
        emit_json(
            _render.run_summary(new_run)
            | {
                "return_value_sha256": new_run.tags.get(_keys.RETURN_VALUE_SHA256),
                "return_value": _json_safe(value),
            }
        )
        return
    _render.print_run_status(new_run)
    if value is not None:
        click.echo(f"return value: {_short(repr(value))}")
    click.echo(new_run.identifier)


def _secret_assignments(texts: tuple[str, ...]) -> list[tuple[str, str, str, Any]]:
    """``-s``/``--secret-arg`` values: ``(component, function, arg, pcs.Secret)``; the value is a string."""
    from pcs.cli._common import parse_assignment
    from pcs.secrets import Secret

    out = []
    for text in texts:
        key, _, raw = text.partition("=")
        comp, fn, name, _ = parse_assignment(f"{key}=x" if "=" in text else text)
        out.append((comp, fn, name, Secret(raw)))
    return out


def _short(text: str) -> str:
    if len(text) <= _RETURN_VALUE_SHOWN:
        return text
    return f"{text[:_RETURN_VALUE_SHOWN - 3]}... ({len(text)} characters; the full value is the run's return value)"


def _json_safe(value: Any) -> Any:
    import json

    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return _short(repr(value))
    return value if len(text) <= 100_000 else _short(text)


def _tolerance_options(fn: Any) -> Any:
    fn = click.option("--ignore", "ignore", multiple=True, metavar="NAME",
                      help="A metric, param or output (stdout) not to compare; glob patterns work. Repeatable.")(fn)
    fn = click.option("--atol", type=click.FloatRange(0), default=0.0, show_default=True,
                      help="Absolute tolerance for metric values.")(fn)
    fn = click.option("--rtol", type=click.FloatRange(0), default=0.0, show_default=True,
                      help="Relative tolerance for metric values.")(fn)
    return fn


def _verdict_exit(report: Any) -> int:
    from pcs.errors import EXIT_CODES

    if report is None or report.reproduced:
        return EXIT_CODES["ok"]
    if report.verdict == "unverifiable":
        return EXIT_CODES["unverifiable"]
    return EXIT_CODES["diverged"]


@click.command()
@click.argument("run_id")
@click.option("--verify", is_flag=True, help="Compare the new run with the original and print the verdict.")
@click.option("--strict", is_flag=True,
              help="The same as --verify here (exit 1 diverged, 5 unverifiable); in Python, "
                   "rerun(strict=True) raises instead of returning.")
@click.option("--code", type=click.Choice(["recorded", "current", "git"]), default="recorded", show_default=True,
              help="Run the recorded source snapshot, the files as they are now, or the recorded git commit.")
@click.option("--env", type=click.Choice(["current", "recorded"]), default="current", show_default=True,
              help="Run here, or in a virtual environment with the recorded distributions.")
@_tolerance_options
@click.option("--executor", type=click.Choice(["serial", "process", "ray"]), default=None,
              help="A sweep: where its trials rerun [default: where they ran].")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="A sweep: worker processes (or Ray tasks at once).")
@click.option("--ray-address", default=None, help="A sweep: the Ray cluster to rerun on.")
@click.option("--secret-arg", "secret_args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="The value of a secret argument the run recorded only as a hash (else "
                   "PCS_SECRET_<ARG> is read). Repeatable.")
@click.option("--research", is_flag=True,
              help="A search: run the search again from its seed (one trial at a time) and check "
                   "it suggests the same arguments, instead of replaying its trials.")
@progress_option
@json_option
def rerun(run_id: str, verify: bool, strict: bool, code: str, env: str, rtol: float, atol: float,
          ignore: tuple[str, ...], executor: str | None, workers: int | None,
          ray_address: str | None, secret_args: tuple[str, ...], research: bool,
          show_progress: bool | None, as_json: bool) -> int:
    """Execute RUN_ID's recorded command again; prints the verdict (with --verify), then the new id.

    Exits 0 when reproduced, 1 when diverged, 5 when nothing could be compared.
    """
    from pcs.run import Run

    with working(as_json), progress_callback(show_progress) as progress:
        _secret_assignments(secret_args)  # this process now holds them (pcs.secret)
        original = Run.from_existing_run_id(run_id)
        options: dict[str, Any] = {"progress": progress} if env == "recorded" else {}
        sweep_options = {k: v for k, v in (("executor", executor), ("max_workers", workers),
                                           ("ray_address", ray_address)) if v is not None}
        if research:
            sweep_options["research"] = True
        if sweep_options:
            from pcs.errors import ArgumentError
            from pcs.sweep import SweepRun

            if not isinstance(original, SweepRun):
                raise ArgumentError(
                    f"--executor, --workers, --ray-address and --research are for sweeps; run "
                    f"{original.identifier} is not one. Rerun it without them."
                )
            options.update(sweep_options, progress=progress)
        new_run = original.rerun(
            verify=verify or strict, code=code, env=env, rtol=rtol, atol=atol, ignore=ignore,
            **options,
        )
    report = new_run.verification
    if as_json:
        data: dict[str, Any] = {"run_id": new_run.identifier, "rerun_of": original.identifier}
        if report is not None:
            data["verification"] = report.to_dict()
        emit_json(data)
    else:
        if report is not None:
            click.echo(str(report))
        click.echo(new_run.identifier)
    return _verdict_exit(report)


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@_tolerance_options
@json_option
def diff(run_a: str, run_b: str, rtol: float, atol: float, ignore: tuple[str, ...], as_json: bool) -> int:
    """Compare two runs: outputs (return value, metrics step by step, params, artifacts, stdout), then the record.

    Exits 0 when they agree, 1 when they differ, 5 when nothing could be compared.
    """
    from pcs.run import Run
    from pcs.verification import compare_runs

    with working(as_json):
        report = compare_runs(
            Run.from_existing_run_id(run_a), Run.from_existing_run_id(run_b),
            rtol=rtol, atol=atol, ignore=ignore, relation="vs",
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(str(report))
    return _verdict_exit(report)
