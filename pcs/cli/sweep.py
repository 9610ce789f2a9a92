"""``pcs sweep``: run a component over a grid of arguments and seeds, or resume a sweep."""

from __future__ import annotations

from typing import Any

import click

from pcs.cli._common import (
    emit_json,
    json_option,
    parse_assignment,
    parse_value,
    progress_callback,
    progress_option,
    working,
)

__all__ = ["sweep", "parse_grid_option", "parse_seeds_option", "split_values"]


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
@click.argument("component", required=False)
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
@click.option("--metric", default=None,
              help="Metric to plot in pcs/sweep.svg and to pick the best trial by.")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True,
              help="Whether the best trial has the largest or the smallest --metric.")
@click.option("--run-name", default=None, help="MLflow run name of the sweep.")
@click.option("--experiment", "experiment_name", default=None,
              help="MLflow experiment (by name; created when missing).")
@click.option("--resume", "resume_id", default=None, metavar="SWEEP_ID",
              help="Run the missing, FAILED and KILLED trials of SWEEP_ID inside it.")
@progress_option
@json_option
def sweep(component: str | None, registry_file: str, entry_point: str | None,
          args: tuple[str, ...], arg_set_file: str | None, grid: tuple[str, ...],
          samples: int | None, sample_seed: int | None, seeds: str | None,
          executor: str | None, workers: int | None, ray_address: str | None,
          metric: str | None, mode: str, run_name: str | None, experiment_name: str | None,
          resume_id: str | None, show_progress: bool | None, as_json: bool) -> int:
    """Run COMPONENT's entry point once per combination of --grid values and --seeds.

    Shows a progress bar of finished and failed trials on stderr, then the
    table of trials; prints the sweep id last. Exits 0 when any trial
    finished, 6 when none did.
    """
    from pcs import _config, _render
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component
    from pcs.errors import EXIT_CODES, ArgumentError
    from pcs.run import Run
    from pcs.sweep import SweepRun

    with working(as_json), progress_callback(show_progress) as progress:
        if resume_id:
            if component or grid or args or arg_set_file or seeds is not None or samples:
                raise ArgumentError(
                    "--resume SWEEP_ID runs the sweep's own recorded trials; give no COMPONENT, "
                    "--grid, -a, --arg-set, --seeds or --samples with it."
                )
            found = Run.from_existing_run_id(resume_id)
            if not isinstance(found, SweepRun):
                raise ArgumentError(
                    f"Run {found.identifier} is not a sweep, so it has no trials to resume. "
                    "'pcs rerun RUN_ID' runs a single run again."
                )
            result = found.resume_trials(
                executor=executor, max_workers=workers, ray_address=ray_address,
                progress=progress,
            )
        else:
            if not component:
                raise ArgumentError(
                    "Name the COMPONENT to sweep (e.g. pcs sweep agent -r components.yaml -e "
                    "run_episodes --grid agent.run_episodes.num_episodes=1,5,10), or resume a "
                    "sweep with --resume SWEEP_ID."
                )
            arg_set = ArgumentSet.from_yaml(arg_set_file) if arg_set_file else ArgumentSet()
            for text in args:
                comp, fn, name, value = parse_assignment(text)
                arg_set = arg_set.with_args(comp, fn, **{name: value})
            grid_map: dict[str, list[Any]] = {}
            for text in grid:
                path, values = parse_grid_option(text)
                if path in grid_map:
                    raise ArgumentError(f"--grid {path} is given twice; give its values once.")
                grid_map[path] = values
            comp_obj = Component.from_registry_file(registry_file, component)
            experiment_id = (
                _config.experiment_by_name(_config.tracking_client(), experiment_name)
                if experiment_name else None
            )
            result = SweepRun.from_component(
                comp_obj, entry_point, arg_set, grid_map or None, samples,
                parse_seeds_option(seeds) if seeds is not None else (None,),
                executor or "process", workers, run_name,
                sample_seed=sample_seed, plot_metric=metric, ray_address=ray_address,
                experiment_id=experiment_id, progress=progress,
            )
        rows = result.table()
        best = None
        if metric and any(r["status"] == "FINISHED" for r in rows):
            try:
                best = result.best(metric, mode)
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
