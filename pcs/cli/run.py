"""``pcs run``, ``pcs rerun`` and ``pcs diff``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import click

from pcs.cli._common import (
    emit_json,
    interrupted_notice,
    json_option,
    parse_assignment,
    progress_callback,
    progress_option,
    stop_notice,
    working,
)

__all__ = ["run", "rerun", "diff"]

_RETURN_VALUE_SHOWN = 300  # characters of the return value printed by 'pcs run'


class _RunCLI(click.Command):
    """``pcs run``: pcs's options, then a script (or ``-m module``) and the script's own arguments.

    As with ``python``, everything after the script (or after ``-m MODULE``) is the
    script's: pcs reads no option there.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            opt for p in self.params if isinstance(p, click.Option) and not p.is_flag
            for opt in (*p.opts, *p.secondary_opts)
        }
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--" or not arg.startswith("-"):
                break
            if arg in ("-m", "--module") or (arg.startswith("-m") and len(arg) > 2):
                split = i + (1 if len(arg) > 2 and arg != "--module" else 2)
                ctx.meta["pcs.module_argv"] = list(args[split:])
                args = list(args[:split])
                break
            i += 2 if arg in takes_value else 1
        return super().parse_args(ctx, args)


def _component_options(fn: Any) -> Any:
    """The options of a component run (they may also follow the COMPONENT argument)."""
    for option in reversed([
        click.option("-r", "--registry-file", default="components.yaml", show_default=True,
                     type=click.Path(dir_okay=False), help="Component: registry YAML that defines it."),
        click.option("-e", "--entry-point", default=None,
                     help="Component: entry point to call (default: its DEFAULT_ENTRY_POINT, else 'run')."),
        click.option("-a", "--arg", "args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
                     help="Component: one argument; VALUE is read as YAML (5 is an int, yes is true, "
                          "'5' a string, [1, 2] a list). Repeatable."),
        click.option("--arg-set", "arg_set_file", type=click.Path(dir_okay=False),
                     help="Component: YAML file with an ArgumentSet; -a values override it."),
        click.option("-s", "--secret-arg", "secret_args", multiple=True,
                     metavar="COMPONENT.FUNCTION.ARG=VALUE",
                     help="Component: a secret argument (a token, a password): VALUE is taken as "
                          "a string and recorded only as a hash. Repeatable."),
        click.option("--return-value-format", type=click.Choice(["auto", "yaml", "json", "dill"]),
                     default="auto", show_default=True,
                     help="Component: how the return value is recorded: auto is YAML when it can hold "
                          "the value; dill records any Python object (loading it runs code: trusted "
                          "runs only)."),
    ]):
        fn = option(fn)
    return fn


@click.command(cls=_RunCLI, context_settings={"allow_interspersed_args": False,
                                              "ignore_unknown_options": True})
@click.argument("target", required=False, metavar="SCRIPT.py|COMPONENT")
@click.argument("target_args", nargs=-1, type=click.UNPROCESSED, metavar="[ARGS]...")
@click.option("-m", "--module", default=None, metavar="MODULE",
              help="Run a module as a script, as 'python -m MODULE' does; what follows is its arguments.")
@_component_options
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Seed for random/NumPy/PyTorch/TensorFlow (default: drawn and recorded).")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--experiment", "experiment_name", default=None,
              help="MLflow experiment (by name; created when missing). Default: MLflow's current one.")
@json_option
@click.pass_context
def run(ctx: click.Context, target: str | None, target_args: tuple[str, ...], module: str | None,
        registry_file: str, entry_point: str | None, args: tuple[str, ...],
        arg_set_file: str | None, return_value_format: str, seed: int | None,
        run_name: str | None, experiment_name: str | None, as_json: bool,
        secret_args: tuple[str, ...] = ()) -> int:
    """Run a Python script (or a component's entry point) and record it as a rerunnable run.

    \b
    pcs run train.py --lr 0.1          a script, with its own arguments
    pcs run -m package.module ARGS     a module, as python -m runs it
    pcs run COMPONENT -r components.yaml -e ENTRY -a COMPONENT.FUNCTION.ARG=VALUE

    pcs's options come before the script; everything after the script is the
    script's (as with python). What the script parses with argparse or click
    becomes params of the run. Prints the run's status line, then its id; exits
    with the script's exit code (6 when it raised). A run stopped by Ctrl-C,
    SIGTERM or SIGHUP ends KILLED and still prints its id last.
    """
    from pcs import _config
    from pcs.errors import ArgumentError

    if module is not None or (target is not None and _is_script(target)):
        misplaced = [flag for name, flag in (
            ("registry_file", "--registry-file"), ("entry_point", "--entry-point"), ("args", "--arg"),
            ("arg_set_file", "--arg-set"), ("return_value_format", "--return-value-format"),
            ("secret_args", "--secret-arg"),
        ) if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if misplaced:
            raise ArgumentError(
                f"{', '.join(misplaced)} {'is' if len(misplaced) == 1 else 'are'} for components; a script "
                "takes its own arguments after its name (pcs run train.py --lr 0.1)."
            )
    if module is not None:
        if target is not None:
            target_args = (target, *target_args)
        target_args = tuple(ctx.meta.get("pcs.module_argv", ())) + target_args
        return _run_script(None, module, target_args, seed, run_name, experiment_name, as_json)
    if target is None:
        raise ArgumentError(
            "pcs run needs a script (pcs run train.py ARGS), a module (pcs run -m package.module "
            "ARGS) or a component (pcs run COMPONENT -r components.yaml). See pcs run --help."
        )
    if target.startswith("-"):
        raise ArgumentError(f"pcs run has no option {target!r}. See pcs run --help.")
    if _is_script(target):
        if target_args[:1] == ("--",):
            target_args = target_args[1:]
        return _run_script(target, None, target_args, seed, run_name, experiment_name, as_json)
    # a component: its options may also follow its name
    more = _COMPONENT_OPTIONS.make_context("pcs run COMPONENT", list(target_args), parent=ctx)
    if more.params["seed"] is not None:
        seed = more.params["seed"]
    given = {k: v for k, v in more.params.items()
             if more.get_parameter_source(k) is not click.core.ParameterSource.DEFAULT}
    registry_file = given.get("registry_file", registry_file)
    entry_point = given.get("entry_point", entry_point)
    args = args + tuple(given.get("args", ()))
    secret_args = secret_args + tuple(given.get("secret_args", ()))
    arg_set_file = given.get("arg_set_file", arg_set_file)
    return_value_format = given.get("return_value_format", return_value_format)
    run_name = given.get("run_name", run_name)
    experiment_name = given.get("experiment_name", experiment_name)
    as_json = as_json or bool(given.get("as_json"))
    experiment_id = _config.experiment_by_name(_config.tracking_client(), experiment_name) if experiment_name else None
    _run_component(target, registry_file, entry_point, args, arg_set_file, seed, run_name,
                   experiment_id, return_value_format, as_json, secret_args)
    return 0


def _is_script(target: str) -> bool:
    """Whether ``pcs run TARGET`` names a script (a .py file or any path) rather than a component.

    A folder whose name could be a component's (``work``, next to a ``work``
    component's registry) is the component: projects often have both.
    """
    import os

    if target.endswith(".py") or os.sep in target or "/" in target or os.path.isfile(target):
        return True
    return os.path.isdir(target) and not target.isidentifier()


@click.command(context_settings={"ignore_unknown_options": False})
@_component_options
@click.option("--seed", type=click.IntRange(0), default=None)
@click.option("--run-name", default=None)
@click.option("--experiment", "experiment_name", default=None)
@json_option
def _COMPONENT_OPTIONS(**_: Any) -> None:  # noqa: N802 - a parser, never invoked
    """The options that may follow COMPONENT in ``pcs run COMPONENT ...``."""


def _run_script(script: str | None, module: str | None, argv: tuple[str, ...], seed: int | None,
                run_name: str | None, experiment_name: str | None, as_json: bool) -> int:
    from pcs import _config, _render
    from pcs.errors import ScriptExitError
    from pcs.script import run_script

    failure: Exception | None = None
    with working(as_json):
        experiment_id = (
            _config.experiment_by_name(_config.tracking_client(), experiment_name)
            if experiment_name else None
        )
        try:
            with stop_notice(as_json):
                new_run = run_script(script, list(argv), module=module, seed=seed,
                                     run_name=run_name, experiment_id=experiment_id)
        except Exception as exc:
            run_id = getattr(exc, "pcs_run_id", None)
            if not run_id:
                raise
            failure = exc
    if failure is not None:
        from pcs.run import Run

        run_id = failure.pcs_run_id  # type: ignore[attr-defined]
        if as_json:
            emit_json(_render.run_summary(Run.from_existing_run_id(run_id)))
        if isinstance(failure, ScriptExitError):
            raise ScriptExitError(f"Run {run_id} FAILED: {failure}", failure.exit_code) from None
        raise failure
    if as_json:
        emit_json(_render.run_summary(new_run))
    else:
        _render.print_run_status(new_run)
        click.echo(new_run.identifier)
    return 0


def _run_component(component: str, registry_file: str, entry_point: str | None, args: tuple[str, ...],
                   arg_set_file: str | None, seed: int | None, run_name: str | None,
                   experiment_id: str | None, return_value_format: str, as_json: bool,
                   secret_args: tuple[str, ...] = ()) -> None:
    """Run COMPONENT's entry point and record it; prints the return value, then the run id."""
    from pcs import _keys, _render
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
        failure: Exception | None = None
        try:
            with stop_notice(as_json):
                new_run = comp_obj.run_with_arg_set(
                    entry_point, arg_set, seed=seed, run_name=run_name,
                    experiment_id=experiment_id, return_value_format=return_value_format,
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
                      help="A metric, param, tag, artifact or output (stdout) not to compare; glob patterns work. Repeatable.")(fn)
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
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS...]")
@click.option("-a", "--arg", "changed_args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="Run the recorded code with this argument changed: a new run tagged "
                   "pcs.derived_from, not a rerun (no verdict). Repeatable.")
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
@click.option("--env-vars", "env_vars", type=click.Choice(["recorded", "current"]), default="recorded",
              show_default=True,
              help="The environment variables the run read: set to the recorded values while the "
                   "rerun runs, or left as they are now.")
@click.option("--trust", is_flag=True,
              help="Unpickle the imported run's pickled return value to compare it (unpickling "
                   "runs code: only for bundles you trust). Without it, it is not compared.")
@progress_option
@json_option
def rerun(run_id: str, script_args: tuple[str, ...], changed_args: tuple[str, ...],
          verify: bool, strict: bool, code: str, env: str, rtol: float, atol: float,
          ignore: tuple[str, ...], executor: str | None, workers: int | None,
          ray_address: str | None, secret_args: tuple[str, ...], research: bool, trust: bool,
          show_progress: bool | None, as_json: bool, env_vars: str) -> int:
    """Execute RUN_ID's recorded command again; prints the verdict (with --verify), then the new id.

    Exits 0 when reproduced, 1 when diverged, 5 when nothing could be compared.
    RUN_ID may also be MLflow's run URI, runs:/<id>.

    \b
    pcs rerun ID -- --lr 0.2         a script run's code with these arguments added
    pcs rerun ID -a agent.run.n=10   a component run's code with this argument changed
    Either makes a new run tagged pcs.derived_from (not a rerun: no verdict);
    pcs diff ID NEW_ID shows what the change did.
    """
    from pcs.run import Run

    if script_args or changed_args:
        return _derive(run_id, script_args, changed_args, verify or strict, code, env, as_json)
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
        if env_vars != "recorded":
            from pcs.component_run import ComponentRun
            from pcs.errors import ArgumentError

            if not isinstance(original, ComponentRun):
                raise ArgumentError(
                    f"--env-vars is for component runs; run {original.identifier} is not one. "
                    "Rerun it without --env-vars."
                )
            options["env_vars"] = env_vars
        if trust:
            from pcs.component_run import ComponentRun
            from pcs.errors import ArgumentError
            from pcs.sweep import SweepRun

            if isinstance(original, SweepRun) or not isinstance(original, ComponentRun):
                raise ArgumentError(
                    f"--trust is for a component run's return value; run {original.identifier} "
                    "is not one (a sweep's trials are compared with their own runs' trust). "
                    "Rerun it without --trust."
                )
            options["trust"] = True
        with _rerun_stop_notice(original, as_json) as on_start:
            if on_start is not None:
                options["on_start"] = on_start
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


@contextlib.contextmanager
def _rerun_stop_notice(original: Any, as_json: bool) -> Iterator[Callable[[Any], None] | None]:
    """What a stopped ``pcs rerun`` says: the new sweep and its ``--resume``, or the new run.

    Yields the sweep's ``on_start`` callback for a sweep, None for a single run.
    """
    from pcs.sweep import SweepRun

    if isinstance(original, SweepRun):
        with interrupted_notice() as on_start:
            yield on_start
    else:
        with stop_notice(as_json):
            yield None


def _derive(run_id: str, script_args: tuple[str, ...], changed_args: tuple[str, ...], verify: bool,
            code: str, env: str, as_json: bool) -> int:
    """``pcs rerun ID -- ARGS`` / ``-a``: the recorded code with changed arguments, as a new run."""
    from pcs import _render
    from pcs.argument_set import ArgumentSet
    from pcs.component_run import ComponentRun
    from pcs.errors import ArgumentError, NotReproducibleError
    from pcs.run import Run

    with working(as_json):
        original = Run.from_existing_run_id(run_id)
        if not isinstance(original, ComponentRun) or type(original) is not ComponentRun:
            raise NotReproducibleError(
                f"Run {original.identifier} is not a script or component run, so it has no recorded "
                "arguments to change."
            )
        is_script = original.run_command.component.is_script
        if script_args and not is_script:
            raise ArgumentError(
                f"Run {original.identifier} is a component run: change its arguments with "
                "-a COMPONENT.FUNCTION.ARG=VALUE, not with arguments after --."
            )
        if changed_args and is_script:
            raise ArgumentError(
                f"Run {original.identifier} is a script run: give its changed arguments after "
                "--, as on its command line (pcs rerun ID -- --lr 0.2)."
            )
        if is_script:
            args: Any = list(script_args)
        else:
            arg_set = ArgumentSet()
            for text in changed_args:
                comp, fn, name, value = parse_assignment(text)
                arg_set = arg_set.with_args(comp, fn, **{name: value})
            args = arg_set
        with stop_notice(as_json):
            new_run = original.rerun(args=args, verify=verify, code=code, env=env)
    if as_json:
        emit_json(_render.run_summary(new_run) | {"derived_from": original.identifier})
    else:
        _render.print_run_status(new_run)
        click.echo(new_run.identifier)
    return 0


@click.command()
@click.argument("run_a")
@click.argument("run_b")
@_tolerance_options
@click.option("--raw", is_flag=True,
              help="Compare bytes as they are: no removing of dates and random ids first.")
@click.option("--trust", is_flag=True,
              help="Unpickle pickled return values of imported runs to compare them.")
@json_option
def diff(run_a: str, run_b: str, rtol: float, atol: float, ignore: tuple[str, ...], raw: bool,
         trust: bool, as_json: bool) -> int:
    """Compare two runs: outputs (return value, metrics step by step, params, artifacts, stdout), then the record.

    Exits 0 when they agree, 1 when they differ, 5 when nothing could be compared.
    """
    from pcs.run import Run
    from pcs.verification import compare_runs

    with working(as_json):
        report = compare_runs(
            Run.from_existing_run_id(run_a), Run.from_existing_run_id(run_b),
            rtol=rtol, atol=atol, ignore=ignore, relation="vs", raw=raw, trust=trust,
        )
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(str(report))
    return _verdict_exit(report)
