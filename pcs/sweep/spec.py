"""What a sweep is: its grid, samples, seeds and trials, planned and recorded as one spec.

A sweep varies arguments given by path (``COMPONENT.FUNCTION.ARG``). The grid
is the cross product of the value lists, the first path outermost; with
``samples=N`` only N distinct combinations, drawn with a recorded seed, are
kept (in grid order); every combination then runs once per seed. Each trial
is one ``RunCommand`` with its own seed (drawn now when the seed is ``None``),
so the spec alone says exactly what every trial computes.

The spec is stored with the sweep run (``pcs/sweep.yaml``), next to a registry
of every trial's run command (``pcs/sweep_commands.yaml``) and the source
snapshot the trials run (``pcs/source/``), so a sweep can be rerun and resumed
from the tracking store alone.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pcs._keys import FORMAT_VERSION
from pcs.argument_set import ArgumentSet
from pcs.errors import ArgumentError, NotReproducibleError
from pcs.record.environment import draw_seed
from pcs.specs import check_format_version, to_recordable

if TYPE_CHECKING:  # pragma: no cover
    from pcs.component import Component
    from pcs.run_command import RunCommand

__all__ = [
    "EXECUTORS",
    "SweepSpec",
    "TrialSpec",
    "plan_sweep",
    "parse_path",
]

EXECUTORS = ("serial", "process", "ray")
_MAX_TRIALS = 100_000  # a sweep larger than this is almost certainly a typo in the grid


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its index, the values of the varied arguments, its seed and run command."""

    index: int
    args: dict[str, Any]
    seed: int
    run_command: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "args": dict(self.args),
            "seed": self.seed,
            "run_command": self.run_command,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        return cls(
            int(data["index"]),
            dict(data.get("args") or {}),
            int(data["seed"]),
            str(data["run_command"]),
        )


@dataclass(frozen=True)
class SweepSpec:
    """Everything that defines a sweep: what varies, how it was drawn, and every trial.

    ``grid`` keeps its order (a list of ``(path, values)``), since the first
    path is the outermost loop of the cross product.
    """

    component: str
    entry_point: str
    arg_set: dict[str, Any]
    grid: list[tuple[str, list[Any]]]
    samples: int | None
    sample_seed: int | None
    seeds: list[int | None]
    executor: str
    max_workers: int | None
    plot_metric: str | None
    trials: list[TrialSpec] = field(default_factory=list)
    search: dict[str, Any] | None = None  # a SearchPlan's data, for an adaptive search
    mode: str | None = None  # "min" or "max": which value of the metric is best

    @property
    def varied_paths(self) -> list[str]:
        """The argument paths the sweep varies, in grid order (a search: its space's order)."""
        paths = [path for path, _ in self.grid]
        if self.search:
            paths += [e["path"] for e in self.search.get("space") or [] if e["path"] not in paths]
        return paths

    @property
    def metric(self) -> str | None:
        """The metric that ranks the trials (a search's, else the one plotted)."""
        if self.search:
            return str(self.search["metric"])
        return self.plot_metric

    @property
    def best_mode(self) -> str:
        """Whether the largest (``max``) or smallest (``min``) value of :attr:`metric` is best."""
        if self.search:
            return "min" if self.search.get("direction") == "minimize" else "max"
        return self.mode or "max"

    def replace(self, **changes: Any) -> SweepSpec:
        """A copy with some fields changed."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data.update(changes)
        return SweepSpec(**data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pcs_format": FORMAT_VERSION,
            "component": self.component,
            "entry_point": self.entry_point,
            "arg_set": self.arg_set,
            "grid": [{"path": path, "values": list(values)} for path, values in self.grid],
            "samples": self.samples,
            "sample_seed": self.sample_seed,
            "seeds": list(self.seeds),
            "executor": self.executor,
            "max_workers": self.max_workers,
            "plot_metric": self.plot_metric,
            "mode": self.mode,
            "search": self.search,
            "trials": [t.to_dict() for t in self.trials],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SweepSpec:
        """Read a stored spec; a damaged one is a NotReproducibleError saying where."""
        if not isinstance(data, Mapping):
            raise NotReproducibleError(f"{where} is not a sweep spec (expected a mapping).")
        check_format_version(dict(data), where)
        try:
            grid = [(str(g["path"]), list(g["values"])) for g in data.get("grid") or []]
            return cls(
                component=str(data["component"]),
                entry_point=str(data["entry_point"]),
                arg_set=dict(data.get("arg_set") or {}),
                grid=grid,
                samples=_opt_int(data.get("samples")),
                sample_seed=_opt_int(data.get("sample_seed")),
                seeds=[_opt_int(s) for s in data.get("seeds") or [None]],
                executor=str(data.get("executor") or "process"),
                max_workers=_opt_int(data.get("max_workers")),
                plot_metric=data.get("plot_metric"),
                trials=[TrialSpec.from_dict(t) for t in data.get("trials") or []],
                search=dict(data["search"]) if data.get("search") else None,
                mode=data.get("mode"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NotReproducibleError(
                f"{where} is incomplete or damaged ({type(exc).__name__}: {exc}); the sweep "
                "cannot be rerun or resumed from it."
            ) from None


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_path(path: Any) -> tuple[str, str, str]:
    """Split ``COMPONENT.FUNCTION.ARG`` into its three names.

    Raises:
        ArgumentError: when the path does not have exactly three non-empty parts.
    """
    parts = path.split(".") if isinstance(path, str) else []
    if len(parts) != 3 or not all(parts):
        raise ArgumentError(
            f"Cannot sweep {path!r}: a grid key is an argument path COMPONENT.FUNCTION.ARG, "
            "e.g. agent.run_episodes.num_episodes (FUNCTION is __init__ for constructor "
            "arguments)."
        )
    return parts[0], parts[1], parts[2]


def check_executor(executor: Any, max_workers: Any) -> None:
    """Refuse an unknown executor or a worker count below one."""
    if executor not in EXECUTORS:
        raise ArgumentError(
            f"Unknown sweep executor {executor!r}. Use one of: {', '.join(EXECUTORS)}."
        )
    if max_workers is not None and (
        not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1
    ):
        raise ArgumentError(f"max_workers must be a whole number >= 1; got {max_workers!r}.")


def _check_grid(grid: Mapping[str, Any] | None) -> list[tuple[str, list[Any]]]:
    if grid is None:
        return []
    if not isinstance(grid, Mapping):
        raise ArgumentError(
            "grid maps argument paths to lists of values, e.g. "
            "{'agent.run_episodes.num_episodes': [1, 5, 10]}; got "
            f"{type(grid).__name__}."
        )
    out: list[tuple[str, list[Any]]] = []
    for path, values in grid.items():
        parse_path(path)
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise ArgumentError(
                f"The grid values of {path} must be a list (e.g. [1, 5, 10]); got "
                f"{type(values).__name__} {values!r:.60}."
            )
        if not values:
            raise ArgumentError(f"The grid gives no values for {path}; give at least one.")
        recorded = [to_recordable(v, f"grid value {i} of {path}") for i, v in enumerate(values)]
        seen: list[Any] = []
        for value in recorded:
            if value in seen:
                raise ArgumentError(
                    f"The grid gives {path} the value {value!r} twice; each combination "
                    "would run twice. Remove the duplicate (use seeds to repeat trials)."
                )
            seen.append(value)
        out.append((path, recorded))
    return out


def _check_seeds(seeds: Any) -> list[int | None]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise ArgumentError(
            f"seeds is a non-empty list of seeds (whole numbers >= 0, or None to draw one); "
            f"got {seeds!r:.60}."
        )
    out: list[int | None] = []
    for seed in seeds:
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ArgumentError(
                f"A seed is a whole number >= 0, or None to draw one; got {seed!r}."
            )
        if seed is not None and seed in out:
            raise ArgumentError(
                f"The seed {seed} is given twice; each combination would run twice with it."
            )
        out.append(seed)
    return out


def _combinations(
    grid: list[tuple[str, list[Any]]], samples: Any, sample_seed: Any
) -> tuple[list[dict[str, Any]], int | None]:
    """The combinations to run, and the seed the sample was drawn with."""
    sizes = [len(values) for _, values in grid]
    total = math.prod(sizes)
    if samples is None:
        if total > _MAX_TRIALS:
            raise ArgumentError(
                f"The grid has {total} combinations, more than pcs runs in one sweep "
                f"({_MAX_TRIALS}). Draw some with samples=N."
            )
        return [
            {path: values[i] for (path, values), i in zip(grid, choice, strict=True)}
            for choice in itertools.product(*(range(n) for n in sizes))
        ], None
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ArgumentError(f"samples is a whole number >= 1; got {samples!r}.")
    if not grid:
        raise ArgumentError(
            "samples=N draws N combinations from a grid, but no grid was given. Pass grid="
            "{'COMPONENT.FUNCTION.ARG': [values...]}."
        )
    if samples > total:
        raise ArgumentError(
            f"samples={samples} asks for more combinations than the grid has ({total}). "
            f"Ask for at most {total}, or drop samples to run the whole grid."
        )
    if sample_seed is None:
        sample_seed = draw_seed()
    elif not isinstance(sample_seed, int) or isinstance(sample_seed, bool) or sample_seed < 0:
        raise ArgumentError(f"sample_seed is a whole number >= 0; got {sample_seed!r}.")
    chosen = sorted(random.Random(sample_seed).sample(range(total), samples))
    out = []
    for number in chosen:
        combo: dict[str, Any] = {}
        # decode the mixed-radix number, last path fastest (as itertools.product does)
        for (path, values), size in zip(reversed(grid), reversed(sizes), strict=True):
            number, i = divmod(number, size)
            combo[path] = values[i]
        out.append({path: combo[path] for path, _ in grid})
    return out, sample_seed


def plan_sweep(
    component: Component,
    entry_point: str | None,
    arg_set: ArgumentSet | Mapping[str, Any] | None,
    grid: Mapping[str, Any] | None,
    samples: int | None,
    seeds: Sequence[int | None],
    executor: str,
    max_workers: int | None,
    sample_seed: int | None = None,
    plot_metric: str | None = None,
    mode: str | None = None,
) -> tuple[SweepSpec, list[RunCommand]]:
    """Check a sweep and build the run command of every trial, before anything is recorded.

    Every combination's arguments are bound to the functions they are for
    now, so a typo in a path fails here, not in the middle of the sweep.

    Returns:
        The spec, and the trials' run commands in trial order.
    """
    from pcs.run_command import RunCommand

    check_executor(executor, max_workers)
    check_metric(plot_metric, mode)
    checked_grid = _check_grid(grid)
    checked_seeds = _check_seeds(seeds)
    combos, drawn_sample_seed = _combinations(checked_grid, samples, sample_seed)
    if len(combos) * len(checked_seeds) > _MAX_TRIALS:
        raise ArgumentError(
            f"The sweep would run {len(combos) * len(checked_seeds)} trials, more than pcs "
            f"runs in one sweep ({_MAX_TRIALS}). Draw fewer combinations with samples=N."
        )
    base = ArgumentSet.coerce(arg_set)
    entry = component.resolve_entry_point(entry_point)
    targets = component._load_targets()
    component.check_entry_point(entry, targets[component.identifier])
    commands: list[RunCommand] = []
    trials: list[TrialSpec] = []
    first: RunCommand | None = None
    for combo in combos:
        args = base
        for path, value in combo.items():
            comp, function, name = parse_path(path)
            args = args.with_args(comp, function, **{name: value})
        component.check_arguments(args, entry, targets)
        for seed in checked_seeds:
            if first is None:
                # one snapshot of the sources for every trial, read once
                first = command = RunCommand.create(component, entry, args, seed)
            else:
                command = RunCommand(
                    component, entry, args, seed if seed is not None else draw_seed(),
                    first.code, first.sources,
                )
            trials.append(TrialSpec(len(trials), dict(combo), command.seed, command.identifier))
            commands.append(command)
    spec = SweepSpec(
        component=component.identifier,
        entry_point=entry,
        arg_set=base.to_dict(),
        grid=checked_grid,
        samples=samples,
        sample_seed=drawn_sample_seed,
        seeds=checked_seeds,
        executor=executor,
        max_workers=max_workers,
        plot_metric=plot_metric,
        trials=trials,
        mode=mode,
    )
    return spec, commands


def check_metric(metric: Any, mode: Any) -> None:
    """Refuse a metric that is not a name, or a mode other than min and max."""
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ArgumentError(f"A metric is named by a non-empty string; got {metric!r}.")
    if mode is not None and mode not in ("min", "max"):
        raise ArgumentError(f"mode is 'min' or 'max'; got {mode!r}.")
