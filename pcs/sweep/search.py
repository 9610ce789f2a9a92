"""Adaptive search: Optuna suggests each trial's arguments from a space of ranges and choices.

A search space maps argument paths (``COMPONENT.FUNCTION.ARG``) to a range
(:func:`loguniform`, :func:`uniform`, :func:`intrange`) or a list of choices.
A sampler (``tpe``, ``random``, ``grid``, or any Optuna sampler) suggests one
trial's arguments at a time; the trial runs as a normal component run, and
the final value of its ``metric`` is told back to the sampler. A pruner
(``median``, ``asha``, ``hyperband``, or any Optuna pruner) hears every value
of ``metric`` a trial logs with a step, and may stop the trial early: it then
ends KILLED with ``pcs.pruned=<step>``.

What a search is (:class:`SearchPlan`: the space, the sampler and its seed, the
direction, the metric, the budget, the pruner) is recorded with the sweep, and
so is every trial's suggested arguments, so a search can be replayed trial by
trial, or run again from its seed (exactly, when trials ran one at a time).

Optuna is an optional dependency (``pip install 'pcs[optuna]'``); it is
imported only when a search runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pcs.errors import ArgumentError, NotReproducibleError
from pcs.record.environment import draw_seed

__all__ = [
    "Distribution",
    "loguniform",
    "uniform",
    "intrange",
    "SEARCHES",
    "PRUNERS",
    "SearchPlan",
    "Study",
    "check_space",
    "import_optuna",
    "trial_seed",
    "example_value",
]

SEARCHES = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "hyperband")
_DIRECTIONS = {"min": "minimize", "max": "maximize"}


@dataclass(frozen=True)
class Distribution:
    """A range of values for one argument: ``loguniform``, ``uniform`` or ``intrange``."""

    kind: str
    low: float
    high: float
    step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "low": self.low, "high": self.high}
        if self.step is not None:
            data["step"] = self.step
        return data


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArgumentError(f"{what} must be a finite number; got {value!r}.")
    return value


def loguniform(low: float, high: float) -> Distribution:
    """Floats between ``low`` and ``high``, drawn evenly on a log scale (learning rates).

    Raises:
        ArgumentError: unless ``0 < low < high``.
    """
    low, high = _number(low, "loguniform's low"), _number(high, "loguniform's high")
    if not 0 < low < high:
        raise ArgumentError(
            f"loguniform(low, high) needs 0 < low < high; got low={low!r}, high={high!r}."
        )
    return Distribution("loguniform", float(low), float(high))


def uniform(low: float, high: float) -> Distribution:
    """Floats between ``low`` and ``high``, drawn evenly.

    Raises:
        ArgumentError: unless ``low < high``.
    """
    low, high = _number(low, "uniform's low"), _number(high, "uniform's high")
    if not low < high:
        raise ArgumentError(f"uniform(low, high) needs low < high; got {low!r}, {high!r}.")
    return Distribution("uniform", float(low), float(high))


def intrange(low: int, high: int, step: int = 1) -> Distribution:
    """Whole numbers from ``low`` to ``high`` (both included), ``step`` apart.

    Raises:
        ArgumentError: unless they are whole numbers with ``low <= high`` and ``step >= 1``.
    """
    for name, value in (("low", low), ("high", high), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArgumentError(f"intrange's {name} must be a whole number; got {value!r}.")
    if low > high or step < 1:
        raise ArgumentError(
            f"intrange(low, high, step) needs low <= high and step >= 1; got {low}, {high}, {step}."
        )
    return Distribution("intrange", low, high, step)


def import_optuna() -> Any:
    """The ``optuna`` module (quiet), or an ArgumentError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise ArgumentError(
            "A search (space=..., search='tpe'|'random'|'grid') needs Optuna, which is not "
            "installed. Install it with pip install 'pcs[optuna]' (or pip install optuna), or "
            "sweep a grid instead."
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def check_space(space: Any) -> list[dict[str, Any]]:
    """The space as recorded: ``[{"path", "kind", ...}]`` in the order given.

    Raises:
        ArgumentError: a bad path, range or list of choices.
    """
    from pcs.specs import to_recordable
    from pcs.sweep.spec import parse_path

    if not isinstance(space, Mapping) or not space:
        raise ArgumentError(
            "space maps argument paths to ranges or lists of choices, e.g. "
            "{'model.fit.lr': pcs.loguniform(1e-4, 1e-1), 'model.fit.depth': pcs.intrange(2, 8), "
            f"'model.fit.opt': ['sgd', 'adam']}}; got {space!r:.80}."
        )
    out: list[dict[str, Any]] = []
    for path, entry in space.items():
        parse_path(path)
        if isinstance(entry, Distribution):
            out.append({"path": path, **entry.to_dict()})
            continue
        if isinstance(entry, (str, bytes, Mapping)) or not isinstance(entry, (list, tuple)):
            raise ArgumentError(
                f"The space gives {path} {entry!r:.60}: give a range (pcs.loguniform(a, b), "
                "pcs.uniform(a, b), pcs.intrange(a, b)) or a list of choices."
            )
        if not entry:
            raise ArgumentError(f"The space gives no choices for {path}; give at least one.")
        values = [to_recordable(v, f"choice {i} of {path}") for i, v in enumerate(entry)]
        if len({repr(v) for v in values}) != len(values):
            raise ArgumentError(f"The space gives {path} the same choice twice; remove it.")
        out.append({"path": path, "kind": "choice", "values": values})
    return out


def example_value(entry: Mapping[str, Any]) -> Any:
    """A value of ``entry`` (to check the arguments before anything runs)."""
    if entry["kind"] == "choice":
        return entry["values"][0]
    if entry["kind"] == "intrange":
        return int(entry["low"])
    return float(entry["low"])


def trial_seed(search_seed: int, number: int) -> int:
    """The seed of trial ``number`` of a search seeded with ``search_seed`` (the same every time)."""
    return random.Random(search_seed * 1_000_003 + number).randrange(2**32)


@dataclass(frozen=True)
class SearchPlan:
    """What a search is, as recorded with its sweep."""

    space: list[dict[str, Any]]
    sampler: str  # tpe, random, grid, or "custom:<module.Class>" for a sampler object
    seed: int
    direction: str  # minimize or maximize
    metric: str
    n_trials: int
    prune: str | None = None  # median, asha, hyperband, "custom:<module.Class>", or None
    parallel: bool = False  # more than one trial in flight: suggestions follow completion order

    @property
    def paths(self) -> list[str]:
        return [e["path"] for e in self.space]

    @property
    def mode(self) -> str:
        return "min" if self.direction == "minimize" else "max"

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": [dict(e) for e in self.space],
            "sampler": self.sampler,
            "seed": self.seed,
            "direction": self.direction,
            "metric": self.metric,
            "n_trials": self.n_trials,
            "prune": self.prune,
            "parallel": self.parallel,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SearchPlan:
        try:
            return cls(
                space=[dict(e) for e in data["space"]],
                sampler=str(data["sampler"]),
                seed=int(data["seed"]),
                direction=str(data["direction"]),
                metric=str(data["metric"]),
                n_trials=int(data["n_trials"]),
                prune=data.get("prune"),
                parallel=bool(data.get("parallel", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise NotReproducibleError(
                f"The search recorded in {where} is incomplete ({type(exc).__name__}: {exc})."
            ) from None

    @classmethod
    def make(
        cls,
        space: Any,
        search: Any,
        n_trials: Any,
        metric: Any,
        mode: Any,
        seed: Any,
        prune: Any,
        parallel: bool,
    ) -> tuple[SearchPlan, Any, Any]:
        """Check a search's options; the plan, and the sampler and pruner objects given (or None).

        Raises:
            ArgumentError: any option that does not fit.
        """
        checked = check_space(space)
        if not isinstance(metric, str) or not metric:
            raise ArgumentError(
                "A search needs metric= (the metric each trial logs that the search optimises, "
                "e.g. metric='val_loss', mode='min')."
            )
        if mode not in _DIRECTIONS:
            raise ArgumentError(f"mode is 'min' or 'max'; got {mode!r}.")
        if seed is None:
            seed = draw_seed()
        elif isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ArgumentError(f"A search's seed is a whole number >= 0; got {seed!r}.")
        sampler_obj = None
        if isinstance(search, str):
            if search not in SEARCHES:
                raise ArgumentError(
                    f"Unknown search {search!r}. Use one of: {', '.join(SEARCHES)}, or pass an "
                    "Optuna sampler."
                )
            name = search
        else:
            optuna = import_optuna()
            if not isinstance(search, optuna.samplers.BaseSampler):
                raise ArgumentError(
                    f"search is 'tpe', 'random', 'grid' or an Optuna sampler; got {search!r:.60}."
                )
            sampler_obj = search
            name = f"custom:{type(search).__module__}.{type(search).__qualname__}"
        grid_size = None
        if name == "grid":
            grid_size = 1
            for entry in checked:
                if entry["kind"] in ("loguniform", "uniform"):
                    raise ArgumentError(
                        f"search='grid' runs every combination, but {entry['path']} is a "
                        f"continuous range ({entry['kind']}); give it a list of values or "
                        "pcs.intrange(...), or use search='tpe' or 'random'."
                    )
                grid_size *= len(_grid_values(entry))
        if n_trials is None:
            if grid_size is None:
                raise ArgumentError(
                    "A search needs n_trials= (how many trials to run); only search='grid' "
                    "can default to its size."
                )
            n_trials = grid_size
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ArgumentError(f"n_trials is a whole number >= 1; got {n_trials!r}.")
        if grid_size is not None and n_trials > grid_size:
            raise ArgumentError(
                f"n_trials={n_trials} is more than the grid's {grid_size} combinations; a grid "
                "search runs each combination once."
            )
        pruner_obj = None
        prune_name: str | None = None
        if prune is not None:
            if isinstance(prune, str):
                if prune not in PRUNERS:
                    raise ArgumentError(
                        f"Unknown pruner {prune!r}. Use one of: {', '.join(PRUNERS)}, or pass an "
                        "Optuna pruner."
                    )
                prune_name = prune
            else:
                optuna = import_optuna()
                if not isinstance(prune, optuna.pruners.BasePruner):
                    raise ArgumentError(
                        f"prune is 'median', 'asha', 'hyperband' or an Optuna pruner; got "
                        f"{prune!r:.60}."
                    )
                pruner_obj = prune
                prune_name = f"custom:{type(prune).__module__}.{type(prune).__qualname__}"
        plan = cls(checked, name, seed, _DIRECTIONS[mode], metric, n_trials, prune_name, parallel)
        return plan, sampler_obj, pruner_obj


def _grid_values(entry: Mapping[str, Any]) -> list[Any]:
    if entry["kind"] == "choice":
        return list(range(len(entry["values"])))  # Optuna sees indices; pcs records the values
    return list(range(int(entry["low"]), int(entry["high"]) + 1, int(entry.get("step") or 1)))


class Study:
    """A live search: an in-memory Optuna study that asks for trials and is told their results."""

    def __init__(self, plan: SearchPlan, sampler: Any = None, pruner: Any = None) -> None:
        optuna = self.optuna = import_optuna()
        self.plan = plan
        if sampler is None:
            if plan.sampler.startswith("custom:"):
                raise NotReproducibleError(
                    f"The search used its own sampler ({plan.sampler[7:]}), which pcs cannot "
                    "build again; replay its trials (rerun without research=True), or search "
                    "again with search='tpe', 'random' or 'grid' and a seed."
                )
            sampler = self._sampler(plan)
        if pruner is None and plan.prune is not None:
            if plan.prune.startswith("custom:"):
                raise NotReproducibleError(
                    f"The search used its own pruner ({plan.prune[7:]}), which pcs cannot build "
                    "again; replay its trials instead (rerun without research=True)."
                )
            pruner = {
                "median": optuna.pruners.MedianPruner,
                "asha": optuna.pruners.SuccessiveHalvingPruner,
                "hyperband": optuna.pruners.HyperbandPruner,
            }[plan.prune]()
        self.study = optuna.create_study(
            study_name=f"pcs-search-{plan.seed}",  # Hyperband's brackets hash the study's name
            direction=plan.direction,
            sampler=sampler,
            pruner=pruner if pruner is not None else optuna.pruners.NopPruner(),
        )
        self.distributions = {e["path"]: self._distribution(e) for e in plan.space}
        self.live: dict[int, Any] = {}
        self.reported: dict[int, set[int]] = {}

    def _sampler(self, plan: SearchPlan) -> Any:
        samplers = self.optuna.samplers
        if plan.sampler == "tpe":
            return samplers.TPESampler(seed=plan.seed)
        if plan.sampler == "random":
            return samplers.RandomSampler(seed=plan.seed)
        return samplers.GridSampler({e["path"]: _grid_values(e) for e in plan.space},
                                    seed=plan.seed)

    def _distribution(self, entry: Mapping[str, Any]) -> Any:
        d = self.optuna.distributions
        kind = entry["kind"]
        if kind == "choice":
            return d.CategoricalDistribution(list(range(len(entry["values"]))))
        if kind == "intrange":
            return d.IntDistribution(int(entry["low"]), int(entry["high"]),
                                     step=int(entry.get("step") or 1))
        return d.FloatDistribution(float(entry["low"]), float(entry["high"]),
                                   log=kind == "loguniform")

    def ask(self) -> tuple[int, dict[str, Any]]:
        """The next trial: its number and the argument values suggested for it."""
        trial = self.study.ask(self.distributions)
        self.live[trial.number] = trial
        args: dict[str, Any] = {}
        for entry in self.plan.space:
            raw = trial.params[entry["path"]]
            args[entry["path"]] = entry["values"][raw] if entry["kind"] == "choice" else raw
        return trial.number, args

    def report(self, number: int, step: int, value: float) -> bool:
        """Tell the pruner trial ``number``'s ``value`` at ``step``; whether to stop the trial."""
        trial = self.live.get(number)
        if trial is None or not math.isfinite(value):
            return False
        steps = self.reported.setdefault(number, set())
        if step in steps:
            return False  # Optuna keeps the first value of a step
        steps.add(step)
        trial.report(value, step)
        return bool(trial.should_prune())

    def tell(self, number: int, status: str, value: float | None) -> None:
        """Tell the sampler how trial ``number`` ended (``FINISHED`` with its value, pruned, failed)."""
        trial = self.live.pop(number, None)
        self.reported.pop(number, None)
        if trial is None:
            return
        state = self.optuna.trial.TrialState
        try:
            if status == "PRUNED":
                self.study.tell(trial, state=state.PRUNED)
            elif status == "FINISHED" and value is not None and math.isfinite(value):
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=state.FAIL)
        except RuntimeError as exc:
            # GridSampler stops the study when its grid is used up, which Optuna allows only
            # inside study.optimize; the trial is told all the same (Optuna stores it first)
            if "Study.stop" not in str(exc):
                raise

    @property
    def exhausted(self) -> bool:
        """Whether a grid search has run out of combinations."""
        sampler = self.study.sampler
        return bool(getattr(sampler, "is_exhausted", lambda study: False)(self.study))


def plan_search(
    component: Any,
    entry_point: str | None,
    arg_set: Any,
    plan: SearchPlan,
    executor: str,
    max_workers: int | None,
    first: Any = None,
) -> tuple[Any, TrialMaker]:
    """Check a search before anything is recorded; its spec (no trials yet) and trial maker.

    The space's paths are bound to the functions they are for now, with a
    value of each range, so a typo fails here, not at the first suggestion.
    """
    from pcs.argument_set import ArgumentSet
    from pcs.run_command import RunCommand
    from pcs.sweep.spec import SweepSpec, check_executor, parse_path

    check_executor(executor, max_workers)
    base = ArgumentSet.coerce(arg_set)
    entry = component.resolve_entry_point(entry_point)
    targets: Any = None
    if first is None:  # a search run again passes its recorded command, checked when it ran
        targets = component._load_targets()
        component.check_entry_point(entry, targets[component.identifier])
    example = base
    for e in plan.space:
        comp, function, name = parse_path(e["path"])
        example = example.with_args(comp, function, **{name: example_value(e)})
    if first is None:
        component.check_arguments(example, entry, targets)
        first = RunCommand.create(component, entry, example, trial_seed(plan.seed, 0))
    spec = SweepSpec(
        component=component.identifier, entry_point=entry, arg_set=base.to_dict(), grid=[],
        samples=None, sample_seed=None, seeds=[None], executor=executor,
        max_workers=max_workers, plot_metric=plan.metric, trials=[], search=plan.to_dict(),
        mode=plan.mode,
    )
    return spec, TrialMaker(component, entry, base, first, plan.seed)


class TrialMaker:
    """Builds the run command of a suggested trial (one source snapshot for every trial)."""

    def __init__(self, component: Any, entry: str, base: Any, first: Any, seed: int) -> None:
        self.component, self.entry, self.base, self.first, self.seed = (
            component, entry, base, first, seed
        )

    def make(self, number: int, args: Mapping[str, Any]) -> Any:
        from pcs.run_command import RunCommand
        from pcs.sweep.spec import parse_path

        arg_set = self.base
        for path, value in args.items():
            comp, function, name = parse_path(path)
            arg_set = arg_set.with_args(comp, function, **{name: value})
        return RunCommand(self.component, self.entry, arg_set, trial_seed(self.seed, number),
                          self.first.code, self.first.sources)
