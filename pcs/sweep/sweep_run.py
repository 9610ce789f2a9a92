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

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pcs import _keys, _signals
from pcs.errors import (
    ArgumentError,
    NotReproducibleError,
    PcsError,
)
from pcs.run import Run, _wrap, keep_verification, search_mlflow_runs
from pcs.specs import dump_yaml
from pcs.sweep import record, results
from pcs.sweep._worker import Shared, Task, signals_not_swallowed
from pcs.sweep.record import COMMANDS_ARTIFACT, SPEC_ARTIFACT
from pcs.sweep.spec import SweepSpec, check_executor, plan_sweep
from pcs.sweep.verify import SweepVerification, TrialCheck

if TYPE_CHECKING:  # pragma: no cover
    from pcs.argument_set import ArgumentSet
    from pcs.component import Component
    from pcs.component_run import ComponentRun
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
        ray_address: str | None = None,
        experiment_id: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> SweepRun:
        """Run ``entry_point`` of ``component`` once per combination of the grid and seed.

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
            ray_address: the Ray cluster for ``ray.init`` when Ray is not initialised.
            experiment_id: the experiment of the sweep and its trials.
            progress: told ``(description, trials done, trials)`` as trials end.

        Returns:
            The ended sweep run.

        Raises:
            ArgumentError: a bad grid, seed, path or argument (before anything is recorded).
        """
        spec, commands = plan_sweep(
            component, entry_point, arg_set, grid, samples, seeds, executor, max_workers,
            sample_seed=sample_seed, plot_metric=plot_metric,
        )
        live = record.check_runnable_in(executor, component, commands)
        with _start(executor, len(spec.trials), max_workers, ray_address) as pool:
            registry = record.commands_registry(commands)
            text = dump_yaml(registry)
            sources = record.sources_of(commands)
            sweep = cls._record(spec, text, sources, run_name, experiment_id, None)
            tasks = [Task(t.index, t.run_command, _trial_name(t.index)) for t in spec.trials]
            shared = sweep._shared(registry, text, sources, record.requirements_of(commands),
                                   pin=False)
            sweep._run_trials(pool, tasks, shared, progress, live)
        return sweep

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
            TRIAL_COUNT_TAG: str(len(spec.trials)),
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
        tasks: list[Task],
        shared: Shared,
        progress: ProgressCallback | None,
        live: dict[str, Any] | None = None,
    ) -> None:
        """Run the trials inside the sweep run; end it as their results say."""
        from pcs.progress import reporter

        counts: Counter[str] = Counter()
        finished_bar = reporter(progress, "trials finished", len(tasks), unit="trials")
        failed_bar = reporter(progress, "trials failed", len(tasks), unit="trials")

        def on_result(result: Any) -> None:
            counts[result.status] += 1
            if result.status == "FINISHED":
                finished_bar.advance(1)
            else:
                failed_bar.advance(1)
                log.info("pcs: trial %s of sweep %s ended %s: %s", result.index,
                         self.identifier, result.status, result.error)

        _preload_plotting()
        with self, signals_not_swallowed():
            try:
                with finished_bar:
                    pool.run(tasks, shared, on_result, live)
                if counts.total() > counts["FINISHED"]:
                    failed_bar.finish()
            except BaseException as exc:
                reason = _stop_reason(exc)
                self._end_running_trials("KILLED", reason or "sweep failed")
                raise
            self._trial_runs = None
            summary = self.log_results()
            if summary.get("FINISHED", 0) == 0:
                self.end("FAILED")

    def _end_running_trials(self, status: str, reason: str) -> list[str]:
        """End the sweep's trials that are still RUNNING (nothing is left RUNNING)."""
        ended = []
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
            if chosen is not None:
                try:
                    results.write_plot(rows, varied, chosen, root / _keys.SWEEP_PLOT_ARTIFACT,
                                       f"{self.info.run_name or 'sweep'}: {chosen} per trial")
                except Exception as exc:  # noqa: BLE001 - a plot must never cost the results
                    log.warning("pcs: could not draw the plot of sweep %s: %s", self.identifier, exc)
                    (root / _keys.SWEEP_PLOT_ARTIFACT).unlink(missing_ok=True)
            self.log_artifacts(root)
        counts: Counter[str] = Counter(row["status"] for row in rows)
        summary = {"trials": len(rows), **dict(sorted(counts.items()))}
        tags = {SUMMARY_TAG: json.dumps(summary, sort_keys=True)}
        if chosen is not None:
            tags[PLOT_METRIC_TAG] = chosen
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
    ) -> SweepRun:
        """Run, inside this sweep, the trials that are missing, FAILED or KILLED.

        A trial left RUNNING by a process that is gone counts as KILLED. The new
        runs join this sweep with the same trial index, so :attr:`trials` then
        holds them; the table and plot are logged again.

        Args:
            executor: where to run them (default: the sweep's own executor).
            max_workers, ray_address, progress: as for :meth:`from_component`.

        Returns:
            This sweep, ended again.

        Raises:
            PcsError: the sweep is still running in a live process.
            NotReproducibleError: the sweep's record cannot be read.
        """
        spec = self.spec
        executor = executor or spec.executor
        check_executor(executor, max_workers)
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
            if run is None or run.status != "FINISHED":
                todo.append(trial)
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
            self._run_trials(pool, tasks, shared, progress)
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
        executor: str | None = None,
        max_workers: int | None = None,
        ray_address: str | None = None,
        progress: ProgressCallback | None = None,
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
            run_name: the new sweep's name.
            rtol, atol, ignore: as for ``ComponentRun.rerun``.
            executor: where to run (default: the executor the sweep was run with).
            max_workers, ray_address, progress: as for :meth:`from_component`.

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
        blocked = [f"trial {i} ({r.identifier}): " + "; ".join(r.grade_reasons)
                   for i, r in sorted(old_runs.items()) if r.grade == "not-rerunnable"]
        if blocked:
            raise NotReproducibleError(
                f"Sweep {self.identifier} has trials graded not-rerunnable when recorded: "
                + " | ".join(blocked[:5])
            )
        chosen = executor or (old_spec.executor if old_spec is not None else "process")
        check_executor(chosen, max_workers)
        commands: dict[int, RunCommand] = {}
        for index, run in sorted(old_runs.items()):
            commands[index] = run.command_for_rerun(code)
        ordered = [commands[i] for i in sorted(commands)]
        registry = record.commands_registry(ordered)
        text = dump_yaml(registry)
        sources = record.sources_of(ordered)
        spec = record.rerun_spec(old_spec, old_runs, commands, chosen, max_workers)
        with _start(chosen, len(commands), max_workers, ray_address) as pool:
            new = type(self)._record(spec, text, sources, run_name, self.experiment_id, self)
            tasks = [
                Task(i, commands[i].identifier, _trial_name(i), rerun_of=old_runs[i].identifier,
                     return_value_format=old_runs[i]._recorded_format())
                for i in sorted(commands)
            ]
            shared = new._shared(registry, text, sources, record.requirements_of(ordered),
                                 pin=code == "recorded")
            new._run_trials(pool, tasks, shared, progress)
        if verify or strict:
            report = new._verify_against(self, old_spec, old_runs, rtol, atol, ignore)
            keep_verification(new, report, strict)
        return new

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
                new.verification = check.verification
                new.set_tag(_keys.VERIFICATION, check.verification.verdict)
            report.trials.append(check)
        return report


# -- helpers ---------------------------------------------------------------------------------


def _start(executor: str, trials: int, max_workers: int | None,
           ray_address: str | None) -> Executor:
    """The executor, started before the sweep is recorded so its workers warm up meanwhile."""
    from pcs.sweep.executors import start_executor

    return start_executor(executor, trials, max_workers, ray_address,
                          tracking_uri=record.absolute_tracking_uri(), cwd=os.getcwd())


def _preload_plotting() -> None:
    """Import matplotlib in the background while trials run; the plot needs it at the end."""
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


def _trial_name(index: int) -> str:
    return f"trial {index}"


def _stop_reason(exc: BaseException) -> str | None:
    if isinstance(exc, _signals.ProcessTerminated):
        return exc.signal_name
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT"
    return None
