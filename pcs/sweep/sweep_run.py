"""SweepRun: the outer run of a sweep, with one ComponentRun per trial.

A sweep is one record: the sweep run holds what was swept (``pcs/sweep.yaml``),
every trial's run command (``pcs/sweep_commands.yaml``) and the source
snapshot (``pcs/source/``), all recorded before the first trial starts; each
trial is a normal component run nested in it, tagged ``pcs.sweep_id`` and
``pcs.trial``. When the trials have ended, the sweep logs its table
(``pcs/sweep.csv``) and a plot (``pcs/sweep.svg``), and ends FINISHED if any
trial finished, FAILED if none did, KILLED on Ctrl-C or SIGTERM/SIGHUP.

A trial that is run again (``resume_trials``) is a new run with the same
index; the sweep's trials are the latest run of each index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys, _signals
from pcs._redact import redact_text
from pcs.component_run import ComponentRun
from pcs.errors import (
    ArgumentError,
    NotReproducibleError,
    PcsError,
)
from pcs.run import Run, _wrap, keep_verification, search_mlflow_runs
from pcs.specs import dump_yaml
from pcs.sweep import record, results
from pcs.sweep._worker import Shared, Task, signals_not_swallowed
from pcs.sweep.executors import TaskSource
from pcs.sweep.record import COMMANDS_ARTIFACT, SPEC_ARTIFACT
from pcs.sweep.spec import SweepSpec, TrialSpec, check_executor, plan_sweep
from pcs.sweep.verify import SweepVerification, TrialCheck

if TYPE_CHECKING:  # pragma: no cover
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component
    from pcs.progress import ProgressCallback
    from pcs.run_command import RunCommand
    from pcs.sweep.executors import Executor

__all__ = [
    "SweepRun",
    "RUN_TYPE_SWEEP",
    "SUMMARY_TAG",
    "TRIAL_COUNT_TAG",
    "PLOT_METRIC_TAG",
]

log = logging.getLogger(__name__)

# names stored in MLflow (kept here until pcs._keys declares them)
RUN_TYPE_SWEEP = _keys.RUN_TYPE_SWEEP
TRIAL_COUNT_TAG = _keys.SWEEP_TRIALS
SUMMARY_TAG = _keys.SWEEP_SUMMARY
PLOT_METRIC_TAG = _keys.SWEEP_PLOT_METRIC

_UNREAD = object()
_ENDED = ("FINISHED", "FAILED", "KILLED")


class SweepRun(Run):
    """The outer run of a sweep: one ``ComponentRun`` per trial (arguments × seeds).

    Make one with :meth:`from_component` (``Component.sweep`` calls it); load
    one with ``Run.from_existing_run_id(sweep_id)``.

    Example::

        sweep = SweepRun.from_component(
            agent, "run_episodes",
            grid={"agent.run_episodes.num_episodes": [1, 5, 10]}, seeds=[1, 2, 3],
        )
        sweep.table()                       # one dict per trial
        best = sweep.best("mean_reward")    # a ComponentRun
        again = sweep.rerun(verify=True)    # a new SweepRun; again.verification
    """

    _run_type = RUN_TYPE_SWEEP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spec: Any = _UNREAD
        self._trial_runs: dict[int, ComponentRun] | None = None
        self.verification: SweepVerification | None = None

    # -- making a sweep ----------------------------------------------------------------------

    @classmethod
    def from_component(
        cls,
        component: Component,
        entry_point: str | None = None,
        arg_set: ArgumentSet | Mapping[str, Any] | None = None,
        grid: Mapping[str, Sequence[Any]] | None = None,
        samples: int | None = None,
        seeds: Sequence[int | None] = (None,),
        executor: str = "process",
        max_workers: int | None = None,
        run_name: str | None = None,
        *,
        sample_seed: int | None = None,
        plot_metric: str | None = None,
        metric: str | None = None,
        mode: str | None = None,
        space: Mapping[str, Any] | None = None,
        search: Any = "tpe",
        n_trials: int | None = None,
        seed: int | None = None,
        prune: Any = None,
        resources: Mapping[str, float] | None = None,
        max_retries: int = 0,
        retry_exceptions: bool = False,
        ray_address: str | None = None,
        experiment_id: str | None = None,
        progress: ProgressCallback | None = None,
        on_start: Callable[[SweepRun], None] | None = None,
    ) -> SweepRun:
        """Run ``entry_point`` of ``component`` once per combination of the grid and seed,
        or once per trial a search suggests from ``space``.

        Args:
            component: the component to run.
            entry_point: its entry point (default: the component's default).
            arg_set: the arguments every trial starts from.
            grid: argument paths ``COMPONENT.FUNCTION.ARG`` -> lists of values; the
                trials run their cross product.
            samples: run only this many distinct combinations of the grid, drawn at
                random with ``sample_seed`` (drawn and recorded when not given).
            seeds: run every combination once per seed (None: a drawn seed).
            executor: ``serial``, ``process`` (a pool of local worker processes) or
                ``ray`` (Ray tasks; workers on other machines need a tracking server
                they can reach: the tracking URI is passed to them as it is here).
            max_workers: worker processes (default: the CPU count), or Ray tasks at once.
            run_name: the sweep run's name.
            plot_metric: the metric ``pcs/sweep.svg`` plots (default: the first logged).
            metric: the metric that ranks trials (a search optimises it; the sweep run
                logs its best value, and ``pcs.best_trial`` / ``pcs.best_run_id``).
            mode: ``min`` or ``max``: which value of ``metric`` is best (needed by a search).
            space: run an adaptive search instead of a grid: argument paths -> a range
                (``pcs.loguniform``, ``pcs.uniform``, ``pcs.intrange``) or a list of choices.
            search: ``tpe``, ``random``, ``grid`` or an Optuna sampler (needs ``pcs[optuna]``).
            n_trials: how many trials the search runs (``grid``: default its size).
            seed: the search's seed (drawn and recorded when not given); each trial's
                seed derives from it.
            prune: stop unpromising trials early: ``median``, ``asha``, ``hyperband`` or an
                Optuna pruner; a trial reports by logging ``metric`` with a step, and a
                pruned trial ends KILLED with ``pcs.pruned=<step>``. Works with every
                executor; Ray trials report to a TCP port (any free one) that the sweep
                opens on its node's Ray address, which their nodes must be able to reach.
            resources: what one trial needs, e.g. ``{"cpus": 2, "gpus": 1}`` (Ray schedules
                by it; the process executor gives each worker its own GPUs when there are any).
            max_retries: run a trial again, up to this many times, when its worker,
                process or node died (each attempt keeps its run, tagged ``pcs.attempt``).
            retry_exceptions: also retry trials whose code raised.
            ray_address: the Ray cluster for ``ray.init`` when Ray is not initialised.
            experiment_id: the experiment of the sweep and its trials.
            progress: told ``(description, trials done, trials)`` as trials end.
            on_start: called with the sweep run as soon as it is recorded.

        Returns:
            The ended sweep run.

        Raises:
            ArgumentError: a bad grid, space, seed, path or argument (before anything is recorded).
        """
        from pcs.sweep.executors import check_resources

        resources = check_resources(resources)
        _check_retries(max_retries, retry_exceptions)
        metric = metric if metric is not None else plot_metric
        if space is not None:
            return cls._search(
                component, entry_point, arg_set, space, search, n_trials, metric, mode, seed,
                prune, grid, samples, seeds, executor, max_workers, run_name, resources,
                max_retries, retry_exceptions, ray_address, experiment_id, progress, on_start,
            )
        spec, commands = plan_sweep(
            component, entry_point, arg_set, grid, samples, seeds, executor, max_workers,
            sample_seed=sample_seed, plot_metric=metric, mode=mode,
        )
        live = record.check_runnable_in(executor, component, commands)
        with _start(executor, len(spec.trials), max_workers, ray_address, resources) as pool:
            registry = record.commands_registry(commands)
            text = dump_yaml(registry)
            sources = record.sources_of(commands)
            sweep = cls._record(spec, text, sources, run_name, experiment_id, None)
            if on_start is not None:
                on_start(sweep)
            tasks = [Task(t.index, t.run_command, _trial_name(t.index)) for t in spec.trials]
            shared = sweep._shared(registry, text, sources, record.requirements_of(commands),
                                   pin=False)
            sweep._run_trials(pool, TaskSource(tasks), shared, progress, live,
                              max_retries, retry_exceptions)
        return sweep

    @classmethod
    def _search(
        cls, component: Component, entry_point: str | None, arg_set: Any, space: Any,
        search: Any, n_trials: Any, metric: Any, mode: Any, seed: Any, prune: Any, grid: Any,
        samples: Any, seeds: Any, executor: str, max_workers: int | None, run_name: str | None,
        resources: dict[str, float], max_retries: int, retry_exceptions: bool,
        ray_address: str | None, experiment_id: str | None,
        progress: ProgressCallback | None, on_start: Callable[[SweepRun], None] | None,
        rerun_of: SweepRun | None = None, rerun_ids: Mapping[int, str] | None = None,
        first: RunCommand | None = None,
    ) -> SweepRun:
        """A sweep whose trials a search suggests one at a time (see :mod:`pcs.sweep.search`)."""
        from pcs.sweep.executors import default_workers
        from pcs.sweep.search import SearchPlan, Study, plan_search

        if grid is not None or samples is not None or tuple(seeds) != (None,):
            raise ArgumentError(
                "space= runs a search, which suggests every trial's arguments; give no grid, "
                "samples or seeds with it (seed= seeds the search and, through it, every trial)."
            )
        if mode is None and isinstance(metric, str):
            raise ArgumentError(
                f"A search needs mode='min' or mode='max': whether a smaller or a larger "
                f"{metric} is better."
            )
        check_executor(executor, max_workers)
        parallel = executor != "serial" and (max_workers or default_workers()) > 1
        plan, sampler, pruner = SearchPlan.make(space, search, n_trials, metric, mode, seed,
                                                prune, parallel)
        spec, maker = plan_search(component, entry_point, arg_set, plan, executor, max_workers,
                                  first)
        study = Study(plan, sampler, pruner)
        if record.check_runnable_in(executor, component, [maker.first]) is not None:
            raise ArgumentError(
                f"Component {component.identifier!r} is a class defined in __main__; a search "
                "rebuilds each trial from its record, which such a class cannot be. Define the "
                "class in a module file."
            )
        with _start(executor, plan.n_trials, max_workers, ray_address, resources) as pool:
            base = record.commands_registry([maker.first])
            base["run_commands"], base["argument_sets"] = {}, {}
            text = dump_yaml(base)
            sources = record.sources_of([maker.first])
            sweep = cls._record(spec, text, sources, run_name, experiment_id, rerun_of)
            if on_start is not None:
                on_start(sweep)
            shared = sweep._shared(base, text, sources, record.requirements_of([maker.first]),
                                   pin=rerun_of is not None)
            source = SearchSource(study, maker, plan, rerun_ids or {})
            sweep._spec = spec
            sweep._run_trials(pool, source, shared, progress, None, max_retries,
                              retry_exceptions)
        return sweep

    def _record_trials(self, source: SearchSource) -> None:
        """Write the trials a search ran into the sweep's record (spec and commands)."""
        spec = self._spec.replace(trials=list(source.trials))
        self._spec = spec
        try:
            with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sweep-") as tmp:
                root = Path(tmp)
                (root / _keys.PCS_ARTIFACT_DIR).mkdir()
                (root / SPEC_ARTIFACT).write_text(dump_yaml(spec.to_dict()), encoding="utf-8")
                if source.commands:
                    (root / COMMANDS_ARTIFACT).write_text(
                        dump_yaml(record.commands_registry(source.commands)), encoding="utf-8")
                self.log_artifacts(root)
        except Exception as exc:  # noqa: BLE001 - the trials' runs hold it all too
            log.warning("pcs: could not record the trials of search %s: %s", self.identifier, exc)

    @classmethod
    def _record(
        cls,
        spec: SweepSpec,
        commands_text: str,
        sources: Mapping[str, str],
        run_name: str | None,
        experiment_id: str | None,
        rerun_of: Run | None,
    ) -> SweepRun:
        """Create the sweep run with its whole record (spec, commands, sources)."""
        tags = {
            _keys.COMPONENT: spec.component,
            _keys.ENTRY_POINT: spec.entry_point,
            TRIAL_COUNT_TAG: str(spec.search["n_trials"] if spec.search else len(spec.trials)),
        }
        if rerun_of is not None:
            tags[_keys.RERUN_OF] = rerun_of.identifier
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sweep-") as tmp:
            root = Path(tmp)
            record.stage(root, spec, commands_text, sources)
            sweep = cls(
                experiment_id=experiment_id,
                run_name=run_name or f"sweep {spec.component}.{spec.entry_point}",
                tags=tags,
            )
            try:
                sweep.set_tag(_keys.SWEEP_ID, sweep.identifier)
                sweep.log_params(record.spec_params(spec))
                sweep.log_artifacts(root)
            except BaseException as exc:
                reason = _stop_reason(exc)
                if reason:
                    sweep._record_end_reason(reason)
                sweep.end("KILLED" if reason else "FAILED")
                raise
        sweep._spec = spec
        return sweep

    def _shared(
        self, registry: dict[str, Any], commands_text: str, sources: Mapping[str, str],
        requirements: Mapping[str, str], pin: bool,
    ) -> Shared:
        from pcs.specs import sha256_bytes

        return Shared(
            sweep_id=self.identifier,
            experiment_id=self.experiment_id,
            tracking_uri=record.absolute_tracking_uri(),
            registry=registry,
            registry_id=sha256_bytes(commands_text.encode("utf-8")),
            sources=dict(sources),
            requirements=dict(requirements),
            pin_sources=pin,
            env={k: v for k, v in os.environ.items() if k.startswith(("MLFLOW_", "PCS_"))},
            cwd=os.getcwd(),
        )

    def _run_trials(
        self,
        pool: Executor,
        source: TaskSource,
        shared: Shared,
        progress: ProgressCallback | None,
        live: dict[str, Any] | None = None,
        max_retries: int = 0,
        retry_exceptions: bool = False,
    ) -> None:
        """Run the trials inside the sweep run; end it as their results say.

        A trial whose worker, process or node died (or, with ``retry_exceptions``,
        whose code raised) runs again while it has retries left; a trial that
        could not start at all gets a FAILED run saying why, so every planned
        trial ends with a run.
        """
        from pcs.progress import reporter

        counts: Counter[str] = Counter()
        total = len(source) if not isinstance(source, SearchSource) else source.plan.n_trials
        finished_bar = reporter(progress, "trials finished", total, unit="trials")
        failed_bar = reporter(progress, "trials failed", total, unit="trials")

        def on_result(result: Any) -> None:
            task = source.given.get(result.index)
            if result.run_id is None and task is not None:
                result = self._record_unstarted(task, result)  # every attempt has its run
            if (
                task is not None and result.status == "FAILED" and result.attempt <= max_retries
                and (result.cause in ("worker", "start")
                     or (retry_exceptions and result.cause == "code"))
            ):
                log.warning("pcs: trial %s of sweep %s failed (%s); attempt %s of %s",
                            result.index, self.identifier, result.error, result.attempt + 1,
                            max_retries + 1)
                source.again(dataclasses.replace(task, attempt=task.attempt + 1))
                return
            source.done(result)
            counts[result.status] += 1
            if result.status == "FINISHED":
                finished_bar.advance(1)
            else:
                failed_bar.advance(1)
                log.info("pcs: trial %s of sweep %s ended %s: %s", result.index,
                         self.identifier, result.status, result.error)

        if not pool.in_process:  # never import alongside trials of this process
            _preload_plotting()
        with self, signals_not_swallowed():
            try:
                try:
                    with finished_bar:
                        pool.run(source, shared, on_result, live)
                    if counts.total() > counts["FINISHED"]:
                        failed_bar.finish()
                finally:
                    if isinstance(source, SearchSource):
                        self._record_trials(source)
            except BaseException as exc:
                reason = _stop_reason(exc)
                self._end_running_trials("KILLED", reason or "sweep failed")
                _note_sweep(exc, self.identifier)
                raise
            self._trial_runs = None
            summary = self.log_results()
            if summary.get("FINISHED", 0) == 0:
                self.end("FAILED")

    def _record_unstarted(self, task: Task, result: Any) -> Any:
        """A FAILED run for a trial that could not start, with the executor's reason."""
        from pcs.sweep._worker import Result

        error = result.error or "it could not be started"
        run = Run(
            experiment_id=self.experiment_id, run_name=task.run_name, outer_run=self,
            tags={_keys.SWEEP_ID: self.identifier, _keys.TRIAL: str(task.index),
                  _keys.ATTEMPT: str(task.attempt), _keys.RUN_COMMAND_ID: task.command_id,
                  _keys.ERROR: redact_text(error)},
        )
        run.end("FAILED")
        return Result(task.index, run.identifier, "FAILED", error, cause=result.cause,
                      attempt=task.attempt)

    def _end_running_trials(self, status: str, reason: str) -> list[str]:
        """End the sweep's trials that are still RUNNING (nothing is left RUNNING).

        Trials a Ray cancellation ended (Ray interrupts a task as Ctrl-C does) are
        tagged with the signal that really stopped the sweep.
        """
        ended = []
        if reason.startswith("SIG") and reason != "SIGINT":
            for run in self._search_trials(f"tags.`{_keys.ENDED_BY}` = 'SIGINT'"):
                with contextlib.suppress(Exception):
                    run._record_end_reason(reason)
        for run in self._search_trials("attributes.status = 'RUNNING'"):
            try:
                run._record_end_reason(reason)
                run.set_terminated(status)
                ended.append(run.identifier)
            except Exception as exc:  # noqa: BLE001 - end as many as the store lets us
                log.warning("pcs: could not end trial run %s: %s", run.identifier, exc)
        self._trial_runs = None
        return ended

    # -- what the sweep holds -----------------------------------------------------------------

    @property
    def spec(self) -> SweepSpec:
        """The recorded spec (``pcs/sweep.yaml``).

        Raises:
            NotReproducibleError: the sweep has no readable spec (e.g. imported without artifacts).
        """
        spec = self._read_spec()
        if spec is None:
            raise NotReproducibleError(
                f"Sweep {self.identifier} has no {SPEC_ARTIFACT} (it was exported without "
                "artifacts, or not recorded by pcs), so its grid and trials are unknown. Export "
                "it again with its artifacts."
            )
        return spec

    def _read_spec(self) -> SweepSpec | None:
        if self._spec is _UNREAD:
            text = self._artifact_text(SPEC_ARTIFACT)
            if text is None:
                self._spec = None
            else:
                from pcs._yaml import load_yaml

                data = load_yaml(text, f"{SPEC_ARTIFACT} of sweep {self.identifier}",
                                 NotReproducibleError)
                self._spec = SweepSpec.from_dict(data, f"{SPEC_ARTIFACT} of sweep {self.identifier}")
        return self._spec  # type: ignore[no-any-return]

    def _artifact_text(self, artifact: str) -> str | None:
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sweep-") as tmp:
            try:
                path = self._download_quietly(artifact, Path(tmp))
                return path.read_text(encoding="utf-8")
            except Exception:  # noqa: BLE001 - any store error means "not there"
                return None

    def _search_trials(self, extra: str = "") -> list[ComponentRun]:
        clauses = [f"tags.`{_keys.PARENT_RUN_ID}` = '{self.identifier}'",
                   f"tags.`{_keys.TRIAL}` IS NOT NULL"]
        if extra:
            clauses.append(extra)
        found = search_mlflow_runs(
            self._client, " and ".join(clauses), order_by=["attributes.start_time ASC"]
        )
        return [_wrap(r, self._client) for r in found]  # type: ignore[misc]

    def trial_runs(self, refresh: bool = False) -> dict[int, ComponentRun]:
        """The latest run of each trial index, by index (one paged search)."""
        if self._trial_runs is None or refresh:
            latest: dict[int, ComponentRun] = {}
            for run in self._search_trials():
                raw = run.tags.get(_keys.TRIAL, "")
                if raw.isdigit():
                    latest[int(raw)] = run  # oldest first, so a later run of an index wins
            self._trial_runs = latest
        return dict(self._trial_runs)

    @property
    def trials(self) -> list[ComponentRun]:
        """The trials' ComponentRuns in trial order (the latest run of each index)."""
        runs = self.trial_runs()
        return [runs[i] for i in sorted(runs)]

    def table(self) -> list[dict[str, Any]]:
        """One dict per trial: ``trial``, ``run_id``, ``status``, ``seed``, each varied
        argument path, and each metric's final value (None where a trial logged none)."""
        return results.build_table(self._read_spec(), self.trial_runs(refresh=True))

    def summary(self) -> dict[str, int]:
        """How many trials ended how: ``trials``, and counts by status (``MISSING``: no run)."""
        counts: Counter[str] = Counter(row["status"] for row in self.table())
        return {"trials": sum(counts.values()), **dict(sorted(counts.items()))}

    def best(self, metric: str, mode: str = "max") -> ComponentRun:
        """The finished trial with the best final value of ``metric``.

        Args:
            metric: a metric the trials log.
            mode: ``max`` or ``min``.

        Raises:
            ArgumentError: bad ``mode``, or no finished trial logged ``metric``.
        """
        runs = self.trial_runs(refresh=True)
        return results.best_trial(runs, metric, mode, self.identifier)  # type: ignore[return-value]

    def log_results(self, metric: str | None = None) -> dict[str, int]:
        """Log the table (``pcs/sweep.csv``), the plot (``pcs/sweep.svg``) and the summary tags.

        Args:
            metric: the metric to plot (default: the recorded choice, else the first logged).

        Returns:
            The summary: ``trials`` and counts by status.
        """
        spec = self._read_spec()
        runs = self.trial_runs(refresh=True)
        rows = results.build_table(spec, runs)
        varied = spec.varied_paths if spec is not None else results.varied_paths_of(runs)
        wanted = metric or (spec.plot_metric if spec is not None else None)
        chosen = results.choose_metric(rows, varied, wanted)
        if wanted and chosen != wanted and chosen != f"metric:{wanted}":
            log.warning("pcs: no trial of sweep %s logged %r; %s", self.identifier, wanted,
                        f"plotting {chosen!r} instead" if chosen else "nothing to plot")
        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sweep-results-") as tmp:
            root = Path(tmp)
            (root / _keys.PCS_ARTIFACT_DIR).mkdir()
            results.write_csv(rows, root / _keys.SWEEP_TABLE_ARTIFACT)
            name = self.info.run_name or "sweep"
            mode = spec.best_mode if spec is not None else None
            if chosen is not None:
                for artifact, draw, title in (
                    (_keys.SWEEP_PLOT_ARTIFACT, results.write_plot, f"{name}: {chosen} per trial"),
                    (_keys.SWEEP_PARALLEL_ARTIFACT,
                     functools.partial(results.write_parallel, mode=mode),
                     f"{name}: arguments and {chosen}"),
                ):
                    try:
                        draw(rows, varied, chosen, root / artifact, title)
                    except Exception as exc:  # noqa: BLE001 - a plot must never cost the results
                        log.warning("pcs: could not draw %s of sweep %s: %s", artifact,
                                    self.identifier, exc)
                        (root / artifact).unlink(missing_ok=True)
            self.log_artifacts(root)
        counts: Counter[str] = Counter(row["status"] for row in rows)
        summary = {"trials": len(rows), **dict(sorted(counts.items()))}
        tags = {SUMMARY_TAG: json.dumps(summary, sort_keys=True)}
        if chosen is not None:
            tags[PLOT_METRIC_TAG] = chosen
        ranked = spec.metric if spec is not None else None
        if ranked:
            try:
                best = results.best_trial(runs, ranked, spec.best_mode, self.identifier)  # type: ignore[union-attr]
            except ArgumentError:
                best = None  # no finished trial logged it
            if best is not None:
                # the sweep's own row in the MLflow UI shows the best value under the metric's name
                self.log_metric(ranked, best.data.metrics[ranked])
                tags[_keys.BEST_TRIAL] = best.tags.get(_keys.TRIAL, "")
                tags[_keys.BEST_RUN] = best.identifier
        self.set_tags(tags)
        return summary

    def plot(self, path: str | Path, metric: str | None = None) -> Path:
        """Draw the sweep's plot (see ``pcs/sweep.svg``) into ``path``, for any logged metric.

        Raises:
            ArgumentError: no trial logged ``metric`` (or any metric, when none is given).
        """
        spec = self._read_spec()
        runs = self.trial_runs(refresh=True)
        rows = results.build_table(spec, runs)
        varied = spec.varied_paths if spec is not None else results.varied_paths_of(runs)
        chosen = results.choose_metric(rows, varied, metric)
        if chosen is None or (metric is not None and chosen not in (metric, f"metric:{metric}")):
            logged = results.metric_names(runs.values())
            raise ArgumentError(
                f"No trial of sweep {self.identifier} logged "
                f"{repr(metric) if metric else 'a metric'} to plot. Its trials log: "
                f"{', '.join(logged) or 'no metrics'}."
            )
        target = Path(path)
        results.write_plot(rows, varied, chosen, target, f"{self.info.run_name or 'sweep'}: {chosen}")
        return target

    # -- running trials again -----------------------------------------------------------------------

    def resume_trials(
        self,
        executor: str | None = None,
        max_workers: int | None = None,
        ray_address: str | None = None,
        progress: ProgressCallback | None = None,
        *,
        max_retries: int = 0,
        retry_exceptions: bool = False,
        on_start: Callable[[SweepRun], None] | None = None,
    ) -> SweepRun:
        """Run, inside this sweep, the trials that are missing, FAILED or KILLED.

        A trial left RUNNING by a process that is gone counts as KILLED. The new
        runs join this sweep with the same trial index, so :attr:`trials` then
        holds them; the table and plot are logged again.

        Args:
            executor: where to run them (default: the sweep's own executor).
            max_workers, ray_address, progress, max_retries, retry_exceptions, on_start: as
                for :meth:`from_component`.

        Returns:
            This sweep, ended again.

        Raises:
            PcsError: the sweep is still running in a live process.
            NotReproducibleError: the sweep's record cannot be read.
        """
        spec = self.spec
        executor = executor or spec.executor
        check_executor(executor, max_workers)
        _check_retries(max_retries, retry_exceptions)
        self.refresh()
        if self.status == "RUNNING" and self.stale_reason is None:
            raise PcsError(
                f"Sweep {self.identifier} is still running (process {self.tags.get(_keys.PID)} on "
                f"{self.tags.get(_keys.HOST)}). Wait for it to end, or stop it, before resuming it."
            )
        runs = self.trial_runs(refresh=True)
        todo = []
        for trial in spec.trials:
            run = runs.get(trial.index)
            if run is not None and run.status == "RUNNING":
                if run.stale_reason is None:
                    log.warning("pcs: trial %s of sweep %s is still running in a live process; "
                                "leaving it", trial.index, self.identifier)
                    continue
                run._record_end_reason("stale: " + str(run.stale_reason))
                run.set_terminated("KILLED")
            if run is None or (run.status != "FINISHED" and not run.tags.get(_keys.PRUNED)):
                todo.append(trial)  # a pruned trial ended as its search decided
        if not todo:
            return self
        text = self._artifact_text(COMMANDS_ARTIFACT)
        if text is None:
            raise NotReproducibleError(
                f"Sweep {self.identifier} has no {COMMANDS_ARTIFACT}, so its trials' run "
                "commands are unknown. Export it again with its artifacts."
            )
        from pcs._yaml import load_yaml

        registry = load_yaml(text, f"{COMMANDS_ARTIFACT} of sweep {self.identifier}",
                             NotReproducibleError)
        if not isinstance(registry, dict):
            raise NotReproducibleError(
                f"{COMMANDS_ARTIFACT} of sweep {self.identifier} is not a registry; the record "
                "is damaged."
            )
        sources = self._recorded_sources()
        shared = self._shared(registry, text, sources, {}, pin=False)
        tasks = [Task(t.index, t.run_command, _trial_name(t.index)) for t in todo]
        with _start(executor, len(tasks), max_workers, ray_address) as pool:
            if on_start is not None:
                on_start(self)
            self._run_trials(pool, TaskSource(tasks), shared, progress, None, max_retries,
                             retry_exceptions)
        return self

    def _recorded_sources(self) -> dict[str, str]:
        from pcs.record.code import read_sources_dir

        with tempfile.TemporaryDirectory(prefix=f"pcs-{os.getpid()}-sweep-") as tmp:
            try:
                folder = self._download_quietly(_keys.SOURCE_ARTIFACT_DIR, Path(tmp))
            except Exception:  # noqa: BLE001 - no snapshot recorded
                return {}
            return read_sources_dir(folder)

    def rerun(  # type: ignore[override]
        self,
        verify: bool = False,
        strict: bool = False,
        code: str = "recorded",
        env: str = "current",
        run_name: str | None = None,
        rtol: float = 0.0,
        atol: float = 0.0,
        ignore: tuple[str, ...] | list[str] = (),
        *,
        research: bool = False,
        executor: str | None = None,
        max_workers: int | None = None,
        ray_address: str | None = None,
        progress: ProgressCallback | None = None,
        on_start: Callable[[SweepRun], None] | None = None,
    ) -> SweepRun:
        """Rerun every trial as a new sweep (tagged ``pcs.rerun_of``), verifying trial by trial.

        Args:
            verify: compare each new trial with the one it reruns; the report is
                ``new_sweep.verification`` (its verdict is tagged on the new sweep and trials).
            strict: raise when the verified rerun did not reproduce.
            code: ``recorded`` runs each trial's recorded snapshot; ``current`` the
                component files as they are now.
            env: only ``current``: a sweep reruns in this environment (rerun one
                trial with ``env="recorded"`` to rebuild its environment).
            run_name: the new sweep's name (default: the original's, with ``(rerun)``).
            rtol, atol, ignore: as for ``ComponentRun.rerun``.
            research: for a search: run the search again from its recorded seed, one trial
                at a time, and check that it suggests the same arguments (and, with
                ``verify``, reaches the same results). Without it the recorded trials are
                replayed. A search that ran trials in parallel suggested them in the order
                trials ended, so it is replayed instead, and the report says so.
            executor: where to run (default: the executor the sweep was run with).
            max_workers, ray_address, progress, on_start: as for :meth:`from_component`.

        Raises:
            NotReproducibleError: a trial cannot be rerun, or the sweep has none.
            ReproducibilityError, UnverifiableError: with ``strict``.
        """
        if code not in ("recorded", "current"):
            raise ArgumentError(
                f"A sweep reruns with code='recorded' or code='current'; got {code!r}. Rerun "
                "one trial (Run.from_existing_run_id(TRIAL_ID).rerun(...)) for other choices."
            )
        if env != "current":
            raise ArgumentError(
                f"A sweep reruns in the current environment (env='current'); got env={env!r}. "
                "Rerun one trial with env='recorded' to rebuild its recorded environment."
            )
        old_spec = self._read_spec()
        old_runs = self.trial_runs(refresh=True)
        if not old_runs:
            raise NotReproducibleError(f"Sweep {self.identifier} has no trial runs to rerun.")
        run_name = run_name or f"{self.info.run_name or 'sweep'} (rerun)"
        note = None
        if research:
            if old_spec is None or not old_spec.search:
                raise ArgumentError(
                    f"Sweep {self.identifier} is not a search (it has no space), so there is no "
                    "search to run again; rerun it without research=True to replay its trials."
                )
            if old_spec.search.get("parallel"):
                note = ("the search ran trials in parallel, so what it suggested depended on the "
                        "order in which trials ended; its trials were replayed instead of "
                        "searched again")
            else:
                return self._research(old_spec, old_runs, verify, strict, code, run_name, rtol,
                                      atol, ignore, executor, ray_address, progress, on_start)
        blocked = [f"trial {i} ({r.identifier}): " + "; ".join(r.grade_reasons)
                   for i, r in sorted(old_runs.items())
                   if isinstance(r, ComponentRun) and r.grade == "not-rerunnable"]
        if blocked:
            raise NotReproducibleError(
                f"Sweep {self.identifier} has trials graded not-rerunnable when recorded: "
                + " | ".join(blocked[:5])
            )
        chosen = executor or (old_spec.executor if old_spec is not None else "process")
        check_executor(chosen, max_workers)
        commands: dict[int, RunCommand] = {}
        recorded: Any = None
        for index, run in sorted(old_runs.items()):
            if isinstance(run, ComponentRun):
                commands[index] = run.command_for_rerun(code)
            else:  # a trial that never started: its command is in the sweep's record
                recorded = recorded or self._recorded_registry()
                commands[index] = _command_from(recorded, run, self.identifier)
        ordered = [commands[i] for i in sorted(commands)]
        registry = record.commands_registry(ordered)
        text = dump_yaml(registry)
        sources = record.sources_of(ordered)
        spec = record.rerun_spec(old_spec, old_runs, commands, chosen, max_workers)
        metric = old_spec.metric if old_spec is not None else None
        with _start(chosen, len(commands), max_workers, ray_address) as pool:
            new = type(self)._record(spec, text, sources, run_name, self.experiment_id, self)
            if on_start is not None:
                on_start(new)
            tasks = [
                Task(i, commands[i].identifier, _trial_name(i), rerun_of=old_runs[i].identifier,
                     return_value_format=_format_of(old_runs[i]),
                     watch=metric if _pruned_at(old_runs[i]) is not None else None,
                     prune_at=_pruned_at(old_runs[i]))
                for i in sorted(commands)
            ]
            shared = new._shared(registry, text, sources, record.requirements_of(ordered),
                                 pin=code == "recorded")
            new._run_trials(pool, TaskSource(tasks), shared, progress)
        if verify or strict:
            report = new._verify_against(self, old_spec, old_runs, rtol, atol, ignore)
            if note:
                report.notes.append(note)
            keep_verification(new, report, strict)
        return new

    def _research(
        self, old_spec: SweepSpec, old_runs: Mapping[int, ComponentRun], verify: bool,
        strict: bool, code: str, run_name: str, rtol: float, atol: float,
        ignore: Sequence[str], executor: str | None, ray_address: str | None,
        progress: ProgressCallback | None, on_start: Callable[[SweepRun], None] | None,
    ) -> SweepRun:
        """Run a sequential search again from its seed, then check its suggestions and results."""
        if code != "recorded":
            raise ArgumentError(
                "research=True runs the search's recorded code again; code='current' is for "
                "replaying the trials (rerun without research=True)."
            )
        plan = old_spec.search or {}
        for what in ("sampler", "prune"):
            if str(plan.get(what) or "").startswith("custom:"):
                raise NotReproducibleError(
                    f"Sweep {self.identifier} searched with its own {what} "
                    f"({plan[what][7:]}), which pcs cannot build again; replay its trials "
                    "(rerun without research=True), or search with search='tpe', 'random' or "
                    "'grid' and a seed."
                )
        chosen = executor or old_spec.executor
        first_run = old_runs[min(old_runs)]
        if isinstance(first_run, ComponentRun):
            command = first_run.command_for_rerun("recorded")
        else:
            command = _command_from(self._recorded_registry(), first_run, self.identifier)
        component = command.component
        space = {e["path"]: _space_entry(e) for e in plan["space"]}
        new = type(self)._search(
            component, old_spec.entry_point, old_spec.arg_set, space, plan["sampler"],
            int(plan["n_trials"]), plan["metric"], "min" if plan["direction"] == "minimize"
            else "max", int(plan["seed"]), plan.get("prune"), None, None, (None,), chosen, 1,
            run_name, {}, 0, False, ray_address, self.experiment_id, progress, on_start,
            rerun_of=self, rerun_ids={i: r.identifier for i, r in old_runs.items()},
            first=command,
        )
        if verify or strict:
            report = new._verify_against(self, old_spec, old_runs, rtol, atol, ignore)
            report.relation = "research"
            keep_verification(new, report, strict)
        return new

    def _recorded_registry(self) -> Any:
        from pcs._yaml import load_yaml
        from pcs.registry import InMemoryRegistry

        text = self._artifact_text(COMMANDS_ARTIFACT)
        if text is None:
            raise NotReproducibleError(
                f"Sweep {self.identifier} has no {COMMANDS_ARTIFACT}, so its trials' run "
                "commands are unknown. Export it again with its artifacts."
            )
        return InMemoryRegistry(load_yaml(text, f"{COMMANDS_ARTIFACT} of sweep {self.identifier}",
                                          NotReproducibleError))

    def _verify_against(
        self,
        original: SweepRun,
        old_spec: SweepSpec | None,
        old_runs: Mapping[int, ComponentRun],
        rtol: float,
        atol: float,
        ignore: Sequence[str],
    ) -> SweepVerification:
        from pcs.verification import compare_runs

        new_runs = self.trial_runs(refresh=True)
        new_spec = self._read_spec()
        planned = sorted({t.index for t in old_spec.trials} if old_spec is not None else set())
        report = SweepVerification(original.identifier, self.identifier)
        for index in sorted(set(planned) | set(old_runs)):
            old = old_runs.get(index)
            new = new_runs.get(index)
            check = TrialCheck(index, old.identifier if old else None, new.identifier if new else None)
            if old is None:
                check.note = "the original sweep has no run of this trial, so it was not rerun"
            elif new is None:
                check.note = "the rerun has no run of this trial (it failed before its run was recorded)"
            else:
                check.verification = compare_runs(old, new, rtol=rtol, atol=atol, ignore=ignore)
                _compare_search(check.verification, index, old, new, old_spec, new_spec)
                new.verification = check.verification
                new.set_tag(_keys.VERIFICATION, check.verification.verdict)
            report.trials.append(check)
        return report


# -- helpers ---------------------------------------------------------------------------------


def _start(executor: str, trials: int, max_workers: int | None,
           ray_address: str | None, resources: Mapping[str, float] | None = None) -> Executor:
    """The executor, started before the sweep is recorded so its workers warm up meanwhile."""
    from pcs.sweep.executors import start_executor

    uri = record.absolute_tracking_uri()
    pool = start_executor(executor, trials, max_workers, ray_address, tracking_uri=uri,
                          cwd=os.getcwd(), resources=resources)
    if executor == "ray":
        record.warn_local_store_on_ray(uri, ray_address)
    return pool


def _check_retries(max_retries: Any, retry_exceptions: Any) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ArgumentError(f"max_retries is a whole number >= 0; got {max_retries!r}.")
    if not isinstance(retry_exceptions, bool):
        raise ArgumentError(f"retry_exceptions is True or False; got {retry_exceptions!r}.")


def _note_sweep(exc: BaseException, sweep_id: str) -> None:
    """Tell whoever catches ``exc`` which sweep it stopped (the CLI prints how to resume it)."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.pcs_sweep_id = sweep_id  # type: ignore[attr-defined]


class SearchSource(TaskSource):
    """The trials of a search: asked one at a time, as workers are free, up to its budget."""

    def __init__(self, study: Any, maker: Any, plan: Any, rerun_ids: Mapping[int, str]) -> None:
        super().__init__()
        self.study, self.maker, self.plan = study, maker, plan
        self.rerun_ids = rerun_ids
        self.trials: list[TrialSpec] = []
        self.commands: list[RunCommand] = []
        self.asked = 0

    def __len__(self) -> int:
        return len(self.queue) + self.plan.n_trials - self.asked

    def _next(self) -> Task | None:
        if self.asked >= self.plan.n_trials or self.study.exhausted:
            return None
        from pcs.registry import InMemoryRegistry

        number, args = self.study.ask()
        self.asked += 1
        command = self.maker.make(number, args)
        self.trials.append(TrialSpec(number, dict(args), command.seed, command.identifier))
        self.commands.append(command)
        part = command.to_registry(InMemoryRegistry()).to_dict()
        return Task(number, command.identifier, _trial_name(number),
                    rerun_of=self.rerun_ids.get(number), registry=part, watch=self.plan.metric,
                    report=self.plan.prune is not None)

    def report(self, index: int, step: int, value: float) -> bool:
        return self.study.report(index, step, value)

    @property
    def reports(self) -> bool:
        return self.plan.prune is not None

    def done(self, result: Any) -> None:
        self.study.tell(result.index, "PRUNED" if result.pruned is not None else result.status,
                        result.value)


def _preload_plotting() -> None:
    """Import matplotlib in the background while trials run elsewhere; the plot needs it at the end.

    Not while trials run in this process: what a thread imports meanwhile would
    count among the modules the running trial loaded.
    """
    import sys
    import threading

    if "matplotlib.figure" in sys.modules:
        return

    def load() -> None:
        try:
            import matplotlib.backends.backend_svg  # noqa: F401
            import matplotlib.figure  # noqa: F401
        except Exception:  # noqa: BLE001 - the plot says what is wrong when it is drawn
            pass

    threading.Thread(target=load, name="pcs-preload-matplotlib", daemon=True).start()


def _compare_search(report: Any, index: int, old: Run, new: Run, old_spec: SweepSpec | None,
                    new_spec: SweepSpec | None) -> None:
    """What only a search's trials can differ in: the arguments suggested, and the prune step."""
    from pcs.verification import Difference

    found: list[Any] = []
    if old_spec is not None and new_spec is not None and old_spec.search and new_spec.search:
        before = {t.index: t.args for t in old_spec.trials}.get(index, {})
        after = {t.index: t.args for t in new_spec.trials}.get(index, {})
        for path in sorted(set(before) | set(after)):
            if before.get(path) != after.get(path):
                found.append(Difference(
                    "arguments", path,
                    f"the search suggested {path}={after.get(path)!r} where the original "
                    f"suggested {before.get(path)!r}",
                ))
    if old.tags.get(_keys.PRUNED) != new.tags.get(_keys.PRUNED):
        def said(run: Run) -> str:
            step = run.tags.get(_keys.PRUNED)
            return f"pruned at step {step}" if step else f"not pruned ({run.status})"

        found.append(Difference(
            "pruned", _keys.PRUNED,
            f"the original trial was {said(old)}, the rerun {said(new)}",
        ))
    if old.tags.get(_keys.PRUNED) and old.tags.get(_keys.PRUNED) == new.tags.get(_keys.PRUNED):
        report.compared.append(f"pruned at step {old.tags[_keys.PRUNED]}")
    report.differences[:0] = found


def _format_of(run: Run) -> str:
    return run._recorded_format() if isinstance(run, ComponentRun) else "auto"


def _pruned_at(run: Run) -> int | None:
    raw = run.tags.get(_keys.PRUNED, "")
    return int(raw) if raw.isdigit() else None


def _command_from(registry: Any, run: Run, sweep_id: str) -> RunCommand:
    """The recorded command of a trial whose run holds none (it never started)."""
    from pcs.run_command import RunCommand

    command_id = run.tags.get(_keys.RUN_COMMAND_ID)
    if not command_id:
        raise NotReproducibleError(
            f"Trial run {run.identifier} of sweep {sweep_id} names no run command, so it cannot "
            "be rerun."
        )
    return RunCommand.from_registry(registry, command_id)


def _space_entry(entry: Mapping[str, Any]) -> Any:
    """A recorded space entry as what ``space=`` takes."""
    from pcs.sweep.search import Distribution

    if entry["kind"] == "choice":
        return list(entry["values"])
    return Distribution(entry["kind"], entry["low"], entry["high"], entry.get("step"))


def _trial_name(index: int) -> str:
    return f"trial {index}"


def _stop_reason(exc: BaseException) -> str | None:
    if isinstance(exc, _signals.ProcessTerminated):
        return exc.signal_name
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    return None
