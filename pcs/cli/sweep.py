"""``pcs sweep``: run a component over a grid of arguments and seeds, or resume a sweep."""

from __future__ import annotations

import re
from typing import Any

import click

from pcs.cli._common import (
    emit_json,
    interrupted_notice,
    json_option,
    parse_assignment,
    parse_value,
    progress_callback,
    progress_option,
    working,
)

__all__ = [
    "sweep",
    "parse_grid_option",
    "parse_seeds_option",
    "parse_space_option",
    "split_values",
]


def split_values(text: str) -> list[str]:
    """Split ``V1,V2,...`` on the commas that are outside brackets and quotes."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def parse_grid_option(text: str) -> tuple[str, list[Any]]:
    """``COMPONENT.FUNCTION.ARG=V1,V2,...`` -> (path, values); each value is read as YAML."""
    from pcs.errors import ArgumentError

    path, sep, raw = text.partition("=")
    parts = path.split(".")
    if not sep or len(parts) != 3 or not all(parts):
        raise ArgumentError(
            f"Cannot read --grid {text[:200]!r}: write it as COMPONENT.FUNCTION.ARG=V1,V2,..., "
            "e.g. --grid agent.run_episodes.num_episodes=1,5,10 (values are read as YAML; "
            "a list value is written in brackets: [1,2],[3,4])."
        )
    pieces = split_values(raw)
    if any(not p.strip() for p in pieces):
        raise ArgumentError(
            f"--grid {text[:200]!r} has an empty value; separate values with single commas."
        )
    return path, [parse_value(p, f"--grid {path}") for p in pieces]


def parse_space_option(text: str) -> tuple[str, Any]:
    """``PATH=loguniform:LOW:HIGH``, ``uniform:LOW:HIGH``, ``int:LOW:HIGH[:STEP]`` or ``V1,V2,...``."""
    from pcs.errors import ArgumentError
    from pcs.sweep.search import intrange, loguniform, uniform

    path, sep, raw = text.partition("=")
    parts = path.split(".")
    usage = (
        f"Cannot read --space {text[:200]!r}: write it as COMPONENT.FUNCTION.ARG=RANGE, with RANGE "
        "loguniform:1e-4:1e-1, uniform:0:1, int:2:8 (int:2:8:2 for a step), or choices "
        "sgd,adam."
    )
    if not sep or len(parts) != 3 or not all(parts) or not raw.strip():
        raise ArgumentError(usage)
    kind, _, rest = raw.partition(":")
    if kind in ("loguniform", "uniform", "int") and rest:
        bounds = rest.split(":")
        try:
            if kind == "int":
                if len(bounds) not in (2, 3):
                    raise ValueError
                return path, intrange(*(int(b) for b in bounds))
            if len(bounds) != 2:
                raise ValueError
            low, high = float(bounds[0]), float(bounds[1])
        except ValueError:
            raise ArgumentError(usage) from None
        return path, (loguniform if kind == "loguniform" else uniform)(low, high)
    if re.fullmatch(r"[A-Za-z]+(:[^,:]+){2,3}", raw.strip()):
        raise ArgumentError(usage)  # a range of a kind pcs does not know, e.g. log:1:2
    return path, parse_grid_option(f"{path}={raw}")[1]


def parse_seeds_option(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3]."""
    from pcs.errors import ArgumentError

    seeds = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit():
            raise ArgumentError(
                f"Cannot read --seeds {text[:200]!r}: give whole numbers >= 0 separated by "
                "commas, e.g. --seeds 1,2,3."
            )
        seeds.append(int(piece))
    return seeds


@click.command()
@click.argument("component", required=False, metavar="COMPONENT|SCRIPT.py")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT ARGS...]")
@click.option("-r", "--registry-file", default="components.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="Registry YAML that defines the component.")
@click.option("-e", "--entry-point", default=None,
              help="Entry point to call (default: the component's DEFAULT_ENTRY_POINT, else 'run').")
@click.option("-a", "--arg", "args", multiple=True, metavar="COMPONENT.FUNCTION.ARG=VALUE",
              help="An argument every trial gets; VALUE is read as YAML. Repeatable.")
@click.option("--arg-set", "arg_set_file", type=click.Path(dir_okay=False),
              help="YAML file with the ArgumentSet every trial starts from; -a values override it.")
@click.option("--grid", "grid", multiple=True, metavar="COMPONENT.FUNCTION.ARG=V1,V2,...",
              help="An argument to vary and its values (read as YAML; lists in brackets). "
                   "Repeatable: the trials run the cross product.")
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Run only N distinct combinations of the grid, drawn at random (the draw's "
                   "seed is recorded).")
@click.option("--sample-seed", type=click.IntRange(0), default=None,
              help="Seed for drawing --samples (default: drawn and recorded).")
@click.option("--seeds", default=None, metavar="1,2,3",
              help="Run every combination once per seed (default: once, with a drawn seed).")
@click.option("--executor", type=click.Choice(["serial", "process", "ray"]), default=None,
              help="Where trials run [default: process; with --resume, the sweep's own].")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Worker processes (or Ray tasks at once) [default: the CPU count].")
@click.option("--ray-address", default=None,
              help="Ray cluster to connect to (ray.init(address=...)); workers on other machines "
                   "need a tracking server they can reach: pcs --tracking-uri http://... sweep ...")
@click.option("--space", "space", multiple=True, metavar="COMPONENT.FUNCTION.ARG=RANGE",
              help="Search instead of a grid: an argument and its range, loguniform:1e-4:1e-1, "
                   "uniform:0:1, int:2:8[:STEP], or choices V1,V2,... Repeatable; needs "
                   "--trials (but --search grid), --metric and --mode (pip install 'pcs[optuna]').")
@click.option("--search", type=click.Choice(["tpe", "random", "grid"]), default="tpe",
              show_default=True, help="How --space is searched (Optuna's samplers).")
@click.option("--trials", "n_trials", type=click.IntRange(1), default=None,
              help="How many trials the search runs (--search grid: default its size).")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Seed of the search (default: drawn and recorded); trials' seeds derive from it.")
@click.option("--prune", type=click.Choice(["median", "asha", "hyperband"]), default=None,
              help="Stop unpromising search trials early, from the --metric they log with a step.")
@click.option("--metric", default=None,
              help="Metric to rank trials by (the search optimises it; the sweep run logs its best "
                   "value) and to plot in pcs/sweep.svg.")
@click.option("--mode", type=click.Choice(["max", "min"]), default=None,
              help="Whether the best trial has the largest or the smallest --metric "
                   "[default: max; a search needs it].")
@click.option("--cpus", type=click.FloatRange(0), default=None,
              help="CPUs one trial needs (Ray schedules by it).")
@click.option("--gpus", type=click.FloatRange(0), default=None,
              help="GPUs one trial needs (Ray schedules by it; process workers get their own).")
@click.option("--max-retries", type=click.IntRange(0), default=0, show_default=True,
              help="Run a trial again when its worker, process or node died (each attempt is "
                   "kept).")
@click.option("--retry-exceptions", is_flag=True,
              help="With --max-retries, also retry trials whose code raised.")
@click.option("--run-name", default=None, help="MLflow run name of the sweep.")
@click.option("--experiment", "experiment_name", default=None,
              help="MLflow experiment (by name; created when missing).")
@click.option("--resume", "resume_id", default=None, metavar="SWEEP_ID",
              help="Run the missing, FAILED and KILLED trials of SWEEP_ID inside it.")
@progress_option
@json_option
def sweep(component: str | None, script_args: tuple[str, ...], registry_file: str, entry_point: str | None,
          args: tuple[str, ...], arg_set_file: str | None, grid: tuple[str, ...],
          samples: int | None, sample_seed: int | None, seeds: str | None,
          executor: str | None, workers: int | None, ray_address: str | None,
          space: tuple[str, ...], search: str, n_trials: int | None, seed: int | None,
          prune: str | None, metric: str | None, mode: str | None, cpus: float | None,
          gpus: float | None, max_retries: int, retry_exceptions: bool, run_name: str | None,
          experiment_name: str | None, resume_id: str | None, show_progress: bool | None,
          as_json: bool) -> int:
    """Run COMPONENT's entry point once per combination of --grid values and --seeds.

    A script sweeps its own options: pcs sweep train.py --grid lr=0.01,0.1
    --seeds 1,2 -- --epochs 3 runs train.py with --epochs 3 --lr V for each V
    and seed (values are passed as written; arguments after -- go to every trial).

    Shows a progress bar of finished and failed trials on stderr, then the
    table of trials; prints the sweep id last. Exits 0 when any trial
    finished, 6 when none did. Ctrl-C or SIGTERM stops it, printing the sweep id
    and the --resume command on stderr.
    """
    from pcs import _config, _render
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component
    from pcs.errors import EXIT_CODES, ArgumentError
    from pcs.run import Run
    from pcs.sweep import SweepRun

    resources = {k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None}
    with working(as_json), progress_callback(show_progress) as progress, \
            interrupted_notice() as on_start:
        if resume_id:
            if component or grid or args or arg_set_file or seeds is not None or samples or space:
                raise ArgumentError(
                    "--resume SWEEP_ID runs the sweep's own recorded trials; give no COMPONENT, "
                    "--grid, --space, -a, --arg-set, --seeds or --samples with it."
                )
            found = Run.from_existing_run_id(resume_id)
            if not isinstance(found, SweepRun):
                raise ArgumentError(
                    f"Run {found.identifier} is not a sweep, so it has no trials to resume. "
                    "'pcs rerun RUN_ID' runs a single run again."
                )
            result = found.resume_trials(
                executor=executor, max_workers=workers, ray_address=ray_address,
                progress=progress, max_retries=max_retries, retry_exceptions=retry_exceptions,
                on_start=on_start,
            )
        else:
            if not component:
                raise ArgumentError(
                    "Name the COMPONENT to sweep (e.g. pcs sweep agent -r components.yaml -e "
                    "run_episodes --grid agent.run_episodes.num_episodes=1,5,10), or resume a "
                    "sweep with --resume SWEEP_ID."
                )
            from pcs.cli.run import _is_script

            is_script = _is_script(component)
            if script_args and not is_script:
                raise ArgumentError(
                    f"Arguments after the component ({' '.join(script_args)[:200]}) are for a "
                    "script sweep (pcs sweep train.py ... -- ARGS); give a component's "
                    "arguments with -a COMPONENT.FUNCTION.ARG=VALUE."
                )
            if is_script:
                if args or arg_set_file or space or entry_point:
                    raise ArgumentError(
                        "A script sweep takes --grid NAME=V1,V2 and the script's fixed arguments "
                        "after --; -a, --arg-set, -e and --space are for components."
                    )
                from pcs.script import script_grid

                script_grid_map: dict[str, list[str]] = {}
                for text in grid:
                    name, sep, raw = text.partition("=")
                    if not sep or not name.strip("-") or not raw:
                        raise ArgumentError(
                            f"Cannot read --grid {text[:200]!r}: for a script write it as "
                            "OPTION=V1,V2,..., e.g. --grid lr=0.01,0.1 (the script gets --lr V)."
                        )
                    script_grid_map[name] = split_values(raw)
                comp_obj = Component.from_script(component)
                axis = f"{comp_obj.name}.run.argv"
                grid_map: dict[str, list[Any]] = {axis: list(script_grid(script_grid_map, list(script_args)))}
                arg_set = ArgumentSet()
            else:
                grid_map = {}
                arg_set = ArgumentSet.from_yaml(arg_set_file) if arg_set_file else ArgumentSet()
            for text in args:
                comp, fn, name, value = parse_assignment(text)
                arg_set = arg_set.with_args(comp, fn, **{name: value})
            for text in (grid if not is_script else ()):
                path, values = parse_grid_option(text)
                if path in grid_map:
                    raise ArgumentError(f"--grid {path} is given twice; give its values once.")
                grid_map[path] = values
            space_map: dict[str, Any] = {}
            for text in space:
                path, entry = parse_space_option(text)
                if path in space_map:
                    raise ArgumentError(f"--space {path} is given twice; give its range once.")
                space_map[path] = entry
            search_options: dict[str, Any] = {}
            if space_map:
                search_options = {"space": space_map, "search": search, "n_trials": n_trials,
                                  "seed": seed, "prune": prune}
            elif n_trials is not None or seed is not None or prune is not None:
                raise ArgumentError(
                    "--trials, --seed and --prune are for a search; give the arguments to search "
                    "with --space COMPONENT.FUNCTION.ARG=RANGE (or sweep a --grid without them)."
                )
            if not is_script:
                comp_obj = Component.from_registry_file(registry_file, component)
            experiment_id = (
                _config.experiment_by_name(_config.tracking_client(), experiment_name)
                if experiment_name else None
            )
            result = SweepRun.from_component(
                comp_obj, entry_point, arg_set, grid_map or None, samples,
                parse_seeds_option(seeds) if seeds is not None else (None,),
                executor or "process", workers, run_name,
                sample_seed=sample_seed, metric=metric, mode=mode, ray_address=ray_address,
                experiment_id=experiment_id, progress=progress, resources=resources or None,
                max_retries=max_retries, retry_exceptions=retry_exceptions, on_start=on_start,
                **search_options,
            )
        rows = result.table()
        best = None
        if metric and any(r["status"] == "FINISHED" for r in rows):
            try:
                spec = result._read_spec()
                best = result.best(metric, mode or (spec.best_mode if spec else "max"))
            except ArgumentError:
                best = None  # no trial logged it; the table says so
    summary = _render.sweep_summary(rows)
    status = result.refresh().status
    if as_json:
        emit_json({
            "sweep_id": result.identifier,
            "status": status,
            "summary": summary,
            "trials": rows,
            "best": None if best is None else {"trial": int(best.tags.get("pcs.trial", -1)),
                                               "run_id": best.identifier,
                                               "metric": metric,
                                               "value": best.metrics.get(metric or "")},
        })
    else:
        _render.print_sweep(result, rows, best=best, metric=metric)
        click.echo(result.identifier)
    return EXIT_CODES["ok"] if status == "FINISHED" else EXIT_CODES["component_failed"]


