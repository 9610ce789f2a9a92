#!/usr/bin/env python
"""What pcs costs next to plain MLflow, measured side by side in one process.

Usage::

    python benchmarks/bench_runs.py [--runs N] [--list-runs 1000] [--json-out PATH]
                                    [--tracking-uri URI | --start-server]
                                    [--profile [--profile-out PREFIX]]

Four measurements (benchmarks/README.md explains each):

1. one trivial component run (class in a module file, via ``Component.from_repo``;
   class in this script, via ``Component.from_class``) against two plain-MLflow
   baselines: a bare ``MlflowClient().create_run`` + ``set_terminated``, and what an
   MLflow user writes for the same work (``mlflow.start_run()``,
   ``mlflow.log_params(<the same arguments>)``, the work, ``mlflow.end_run()``);
   the MLflow calls one run makes, by layer and method (with SQL statements on
   SQLite, HTTP requests on a server); and how much of a run's time is spent
   inside MLflow calls and how much in pcs itself;
2. the heartbeat: what one beat costs, and a run doing ~0.5 s of work with the
   heartbeat thread beating against the same run with the thread idle;
3. ``Run.get_all_runs()`` over more than 1,000 runs against a bare paged
   ``MlflowClient().search_runs`` loop with the same filter;
4. ``import pcs`` and ``pcs --help`` against ``import mlflow`` (subprocess wall time).

By default everything goes to a fresh SQLite store in a temporary folder, which
is also the working directory (so artifacts land there) and ``PCS_HOME``.
``--start-server`` starts an ``mlflow server`` (SQLite backend, proxied
artifacts, one worker) in that folder and measures against it over HTTP.

This is a measurement tool, not a test: to count calls it patches MLflow
classes at run time and restores them afterwards. Nothing leaves this machine:
MLflow's usage telemetry is switched off before MLflow is imported.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import logging
import os
import platform
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# switches MLflow's telemetry off before MLflow is imported
from _benchlib import (  # noqa: E402
    MlflowServer,
    count_one,
    cpu_count,
    load_average,
    mlflow_layers,
    progress,
    stamp,
    summarize,
    table,
    time_interleaved,
    time_startup,
    workspace,
    yes,
)
from _benchlib import ms as _ms  # noqa: E402

TARGET_RATIO = 2.5  # the issues' budget: a component run costs at most 2.5x plain MLflow

TRIVIAL_FILE = "trivial_component.py"
TRIVIAL_SOURCE = '''\
"""A component that does nothing worth measuring: the benchmark times pcs, not it."""


class Trivial:
    def __init__(self, x=1):
        self.x = x

    def fn(self, y=2):
        return self.x + y
'''


class Trivial:
    """The same trivial class, defined in this script for ``Component.from_class``."""

    def __init__(self, x=1):
        self.x = x

    def fn(self, y=2):
        return self.x + y


ARGS = {"Trivial": {"__init__": {"x": 1}, "fn": {"y": 2}}}
# What an MLflow user logs for the same run: the same arguments (pcs names them
# COMPONENT.FUNCTION.ARG) and the seed, three params in one log_params call.
FLUENT_PARAMS = {"seed": 1, "Trivial.__init__.x": 1, "Trivial.fn.y": 2}

BARE = "bare create_run+set_terminated"
FLUENT = "mlflow start_run+log_params+end_run"
PCS_REPO = "pcs from_repo (module file)"
PCS_CLASS = "pcs from_class (__main__)"
BASELINES = {"bare": BARE, "fluent": FLUENT}
PCS_CASES = (PCS_REPO, PCS_CLASS)


class Worker:
    """A component whose entry point keeps the CPU busy for a while (the heartbeat part)."""

    def __init__(self, unit=1):
        self.unit = unit

    def work(self, n=1000):
        return spin(n * self.unit)


def spin(n: int) -> int:
    """Pure-Python work that holds the GIL, so a busy background thread shows in its time."""
    total = 0
    for i in range(n):
        total += i % 7
    return total


# -- 1. a component run against plain MLflow ---------------------------------------------------------


def component_cases(workdir: Path, experiment_id: str) -> dict[str, Callable[[], object]]:
    """The four things measured per run, each creating and finishing one run."""
    import mlflow
    from mlflow import MlflowClient

    from pcs import Component, LocalRepo

    component_dir = workdir / "components"
    component_dir.mkdir(exist_ok=True)
    (component_dir / TRIVIAL_FILE).write_text(TRIVIAL_SOURCE, encoding="utf-8")
    repo = LocalRepo("bench_components", component_dir)

    def bare() -> None:
        client = MlflowClient()
        run = client.create_run(experiment_id)
        client.set_terminated(run.info.run_id)

    def fluent() -> None:
        mlflow.start_run(experiment_id=experiment_id)
        mlflow.log_params(FLUENT_PARAMS)
        Trivial(x=1).fn(y=2)
        mlflow.end_run()

    def pcs_from_repo() -> None:
        component = Component.from_repo(
            repo, "Trivial", TRIVIAL_FILE, class_name="Trivial", instantiate=True
        )
        component.run_with_arg_set("fn", ARGS, seed=1, experiment_id=experiment_id)

    def pcs_from_class() -> None:
        component = Component.from_class(Trivial, instantiate=True)
        component.run_with_arg_set("fn", ARGS, seed=1, experiment_id=experiment_id)

    return {BARE: bare, FLUENT: fluent, PCS_REPO: pcs_from_repo, PCS_CLASS: pcs_from_class}


def add_ratios(timing: dict[str, dict[str, Any]], names: tuple[str, ...]) -> None:
    """Each named case's median/p90/min over each baseline's (``ratio_*`` vs bare, ``*_fluent``)."""
    for name in names:
        for suffix, baseline in (("", BARE), ("_fluent", FLUENT)):
            base = timing[baseline]
            for stat in ("median", "p90", "min"):
                timing[name][f"ratio_{stat}{suffix}"] = round(
                    timing[name][f"{stat}_ms"] / base[f"{stat}_ms"], 2
                )


def bench_component_runs(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pcs-bench-runs-{stamp()}")
    cases = component_cases(workdir, experiment_id)
    _check_runs_work(cases, experiment_id)

    samples = time_interleaved(cases, args.runs, args.warmup)
    timing = {name: summarize(s) for name, s in samples.items()}
    add_ratios(timing, (FLUENT,) + PCS_CASES)

    # A separate pass with counting wrappers in place: what one run calls, and
    # how its time splits between MLflow and pcs (the wrappers cost a little).
    sample = client.search_runs([experiment_id], max_results=1)[0].info.run_id
    layers, engine, http = mlflow_layers(sample)
    calls: dict[str, Any] = {}
    split: dict[str, Any] = {}
    for name, fn in cases.items():
        counted = [count_one(fn, layers, engine, http) for _ in range(args.split_runs)]
        first = counted[0]["snapshot"]
        calls[name] = dict(first, same_every_run=all(c["snapshot"] == first for c in counted))
        totals = [c["total"] for c in counted]
        inside = [c["inside"] for c in counted]
        split[name] = {
            "n": len(counted),
            "total_median_ms": _ms(statistics.median(totals)),
            "inside_mlflow_median_ms": _ms(statistics.median(inside)),
            "outside_mlflow_median_ms": _ms(
                statistics.median(t - i for t, i in zip(totals, inside, strict=True))
            ),
            "http_median_ms": _ms(statistics.median(c["http_seconds"] for c in counted)),
            "mlflow_client_method_median_ms": {
                method: _ms(statistics.median(c["by_method"].get(method, 0.0) for c in counted))
                for method in first["entries"]["MlflowClient"]
            },
            # the layers under it: pcs calls the store and the artifact repository directly too
            "lower_layer_method_median_ms": {
                layer: {
                    method: _ms(
                        statistics.median(c["by_layer"][layer].get(method, 0.0) for c in counted)
                    )
                    for method in first["entries"][layer]
                    if method != "__init__"
                }
                for layer in first["entries"]
                if layer.startswith(("store", "artifacts")) and first["entries"][layer]
            },
        }

    result: dict[str, Any] = {
        "experiment_id": experiment_id,
        "runs": args.runs,
        "warmup": args.warmup,
        "timing": timing,
        "calls_per_run": calls,
        "time_split": split,
        "over_http": http,
        "target_ratio": TARGET_RATIO,
    }
    if args.profile:
        result["profile"] = profile_component_runs(cases, args)
    return result


def _check_runs_work(cases: Mapping[str, Callable[[], object]], experiment_id: str) -> None:
    """Run each case once; stop unless it recorded what it should (a finished run, 3, params)."""
    from mlflow import MlflowClient

    from pcs import ComponentRun, Run

    for name in PCS_CASES:
        cases[name]()
        newest = Run.get_all_runs([experiment_id])[0]
        if not isinstance(newest, ComponentRun) or newest.status != "FINISHED":
            raise SystemExit(
                f"{name}: the run {newest.identifier} is not a finished component run."
            )
        if newest.return_value != 3:
            raise SystemExit(f"{name}: the run returned {newest.return_value!r}, not 3.")
        if len(newest.params) != len(FLUENT_PARAMS):
            raise SystemExit(
                f"{name}: the run logged params {sorted(newest.params)}, not "
                f"{len(FLUENT_PARAMS)} as the fluent baseline does; make the baseline match."
            )
    cases[FLUENT]()
    plain = MlflowClient().search_runs([experiment_id], max_results=1)[0]
    if plain.info.status != "FINISHED" or len(plain.data.params) != len(FLUENT_PARAMS):
        raise SystemExit(f"{FLUENT}: the run {plain.info.run_id} is not finished with 3 params.")


# -- 2. the heartbeat ------------------------------------------------------------------------------


class BeatLog:
    """Counts pcs's heartbeats while installed: wall and CPU time of each, and failures.

    Wraps ``pcs._liveness._beat`` (the heartbeat thread looks it up on every
    beat) and listens to the debug line pcs logs when a beat fails.
    """

    def __init__(self) -> None:
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.failed = 0
        self._lock = threading.Lock()

    def __enter__(self) -> BeatLog:
        from pcs import _liveness

        self._module = _liveness
        self._original = _liveness._beat
        log = self

        def beat(live: Any) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            log._original(live)
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with log._lock:
                log.walls.append(wall)
                log.cpus.append(cpu)

        class FailureCounter(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "heartbeat" in record.getMessage():
                    log.failed += 1

        self._handler = FailureCounter(logging.DEBUG)
        self._logger = logging.getLogger(_liveness.__name__)
        self._level = self._logger.level
        self._logger.setLevel(logging.DEBUG)
        self._logger.addHandler(self._handler)
        _liveness._beat = beat
        return self

    def __exit__(self, *exc: object) -> None:
        self._module._beat = self._original
        self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._level)

    def count(self) -> int:
        with self._lock:
            return len(self.walls)


def calibrate_spin(target_ms: float) -> int:
    """How many ``spin`` steps take about ``target_ms`` on this machine now (median of 5)."""
    probe = 200_000
    times = []
    for _ in range(5):
        start = time.perf_counter()
        spin(probe)
        times.append(time.perf_counter() - start)
    return max(1000, int(probe * target_ms / 1000 / statistics.median(times)))


def bench_heartbeat(args: argparse.Namespace) -> dict[str, Any]:
    """One beat's cost, and a ~0.5 s run with the heartbeat thread beating against it idle."""
    import mlflow
    from mlflow import MlflowClient

    from pcs import Component, Run, _liveness

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pcs-bench-heartbeat-{stamp()}")
    previous = os.environ.get(_liveness.HEARTBEAT_ENV)
    os.environ[_liveness.HEARTBEAT_ENV] = "60"
    try:
        # what one beat asks of the store, timed in this thread (as the heartbeat thread does it)
        target = Run(experiment_id)
        live = _liveness.LiveRun(target.identifier, client, 60.0)
        one_beat_walls: list[float] = []
        one_beat_cpus: list[float] = []
        for _ in range(3):
            _liveness._beat(live)  # warm-up
        for _ in range(args.hb_beats):
            wall_start, cpu_start = time.perf_counter(), time.thread_time()
            _liveness._beat(live)
            one_beat_cpus.append(time.thread_time() - cpu_start)
            one_beat_walls.append(time.perf_counter() - wall_start)
        layers, engine, http = mlflow_layers(target.identifier)
        beat_calls = count_one(lambda: _liveness._beat(live), layers, engine, http)["snapshot"]
        target.end()

        steps = calibrate_spin(args.hb_work_ms)
        work_args = {"Worker": {"__init__": {"unit": 1}, "work": {"n": steps}}}

        def pcs_run() -> None:
            Component.from_class(Worker, instantiate=True).run_with_arg_set(
                "work", work_args, seed=1, experiment_id=experiment_id
            )

        def fluent_run() -> None:
            mlflow.start_run(experiment_id=experiment_id)
            mlflow.log_params({"seed": 1, "Worker.__init__.unit": 1, "Worker.work.n": steps})
            Worker(unit=1).work(n=steps)
            mlflow.end_run()

        def work_alone() -> None:
            Worker(unit=1).work(n=steps)

        idle_name = f"pcs, heartbeat idle ({_liveness.HEARTBEAT_ENV}=60)"
        fast_name = f"pcs, heartbeat every {args.hb_fast_s:g} s"
        names = [idle_name, fast_name, FLUENT, "the work alone"]
        samples: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}

        def timed(name: str, fn: Callable[[], object]) -> None:
            # process CPU time counts the heartbeat thread too, and moves less than
            # wall time when other jobs compete for the CPUs
            wall, used = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - used)
            samples[name].append(time.perf_counter() - wall)

        beats_per_run: list[int] = []
        idle_beats = 0
        with BeatLog() as beats:
            pcs_run()  # warm-up: imports, the heartbeat thread started
            fluent_run()
            rounds = max(1, args.hb_runs // args.hb_block)
            idle_block = [
                (idle_name, pcs_run),
                (FLUENT, fluent_run),
                ("the work alone", work_alone),
            ]
            for r in range(rounds):
                # the thread idle: each run's first beat is due only after 60 s
                os.environ[_liveness.HEARTBEAT_ENV] = "60"
                before = beats.count()
                for i in range(args.hb_block):
                    k = (r * args.hb_block + i) % len(idle_block)
                    for name, fn in idle_block[k:] + idle_block[:k]:
                        timed(name, fn)
                idle_beats += beats.count() - before
                # the thread beating: a keeper run at the fast interval holds it in
                # that cadence between runs, so every measured run is beaten from start
                os.environ[_liveness.HEARTBEAT_ENV] = repr(args.hb_fast_s)
                keeper = Run(experiment_id)
                seen = beats.count()
                deadline = time.monotonic() + 10
                while beats.count() == seen and time.monotonic() < deadline:
                    time.sleep(0.01)
                for _ in range(args.hb_block):
                    before = beats.count()
                    timed(fast_name, pcs_run)
                    beats_per_run.append(beats.count() - before)
                keeper.end()
                time.sleep(max(0.2, 4 * args.hb_fast_s))  # let a beat in flight finish
            thread_walls, thread_cpus, failed = list(beats.walls), list(beats.cpus), beats.failed
    finally:
        if previous is None:
            os.environ.pop(_liveness.HEARTBEAT_ENV, None)
        else:
            os.environ[_liveness.HEARTBEAT_ENV] = previous

    timing = {name: summarize(values) for name, values in samples.items()}
    for name, values in cpu.items():
        timing[name]["cpu_median_ms"] = _ms(statistics.median(values))
    extra_ms = timing[fast_name]["median_ms"] - timing[idle_name]["median_ms"]
    extra_cpu_ms = timing[fast_name]["cpu_median_ms"] - timing[idle_name]["cpu_median_ms"]
    median_beats = statistics.median(beats_per_run)
    one_beat_ms = _ms(statistics.median(one_beat_walls))
    return {
        "experiment_id": experiment_id,
        "work_ms_target": args.hb_work_ms,
        "spin_steps": steps,
        "fast_interval_s": args.hb_fast_s,
        "runs_per_case": len(samples[idle_name]),
        "one_beat": {
            "n": args.hb_beats,
            "wall_median_ms": one_beat_ms,
            "cpu_median_ms": _ms(statistics.median(one_beat_cpus)),
            "calls": beat_calls,
        },
        "timing": timing,
        "beats_per_fast_run_median": median_beats,
        "beats_per_fast_run_range": [min(beats_per_run), max(beats_per_run)],
        "beats_during_idle_runs": idle_beats,
        "failed_beats": failed,
        "thread_beat_wall_median_ms": _ms(statistics.median(thread_walls))
        if thread_walls
        else None,
        "thread_beat_cpu_median_ms": _ms(statistics.median(thread_cpus)) if thread_cpus else None,
        "extra_ms_per_fast_run": round(extra_ms, 3),
        "extra_ms_per_beat": round(extra_ms / median_beats, 3) if median_beats else None,
        "extra_cpu_ms_per_fast_run": round(extra_cpu_ms, 3),
        "extra_cpu_ms_per_beat": round(extra_cpu_ms / median_beats, 3) if median_beats else None,
        # at the default interval a run beats once a minute: what that costs per hour of
        # run, taking the larger of one beat alone and a beat's toll on a busy run
        "default_interval_ms_per_run_hour": round(60 * max(one_beat_ms, extra_ms / median_beats), 1)
        if median_beats
        else round(60 * one_beat_ms, 1),
    }


# -- profiling the pcs side --------------------------------------------------------------------------


MLFLOW_PACKAGES = ("mlflow", "sqlalchemy", "alembic", "sqlite3", "sqlparse")


def profile_component_runs(
    cases: Mapping[str, Callable[[], object]], args: argparse.Namespace
) -> dict[str, Any]:
    """cProfile of ``args.profile_runs`` runs of each pcs case; pcs-side functions ranked."""
    import pcs

    pcs_dir = str(Path(pcs.__file__).resolve().parent) + os.sep
    out: dict[str, Any] = {}
    for name in (PCS_REPO, PCS_CLASS):
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(args.profile_runs):
            cases[name]()
        profiler.disable()
        stats = pstats.Stats(profiler)
        if args.profile_out:
            stem = "repo" if name == PCS_REPO else "class"
            stats.dump_stats(f"{args.profile_out}.{stem}.pstats")
        out[name] = _rank_profile(stats, pcs_dir, args.profile_runs)
    return out


def _rank_profile(stats: pstats.Stats, pcs_dir: str, runs: int) -> dict[str, Any]:
    """pcs functions by cumulative time, and non-MLflow functions by own time, per run.

    A pcs function is marked ``calls_mlflow`` when an MLflow function is reached
    from it through pcs functions only, so its cumulative time includes MLflow's.
    """
    raw = stats.stats  # type: ignore[attr-defined]

    def is_mlflow(func: tuple) -> bool:
        path = func[0]
        return any(f"{os.sep}{pkg}{os.sep}" in path for pkg in MLFLOW_PACKAGES)

    def is_pcs(func: tuple) -> bool:
        return func[0].startswith(pcs_dir)

    # which pcs functions reach MLflow directly or through other pcs functions
    reaches: set[tuple] = set()
    frontier = [f for f in raw if is_mlflow(f)]
    while frontier:
        func = frontier.pop()
        for caller in raw[func][4]:
            if is_pcs(caller) and caller not in reaches:
                reaches.add(caller)
                frontier.append(caller)

    def label(func: tuple) -> str:
        path, line, fname = func
        short = path[len(pcs_dir) - len("pcs/") :] if is_pcs(func) else _short_path(path)
        return f"{short}:{line}({fname})"

    pcs_rows = sorted((f for f in raw if is_pcs(f)), key=lambda f: raw[f][3], reverse=True)[:25]
    # Own time not spent on MLflow's behalf: a function counts as MLflow's when it
    # lives in MLflow (or SQLAlchemy, sqlite3...) or when only MLflow's functions
    # call it; the rest of a function's own time is split by caller, one level up.
    mlflow_side = {f for f in raw if is_mlflow(f)}
    changed = True
    while changed:
        changed = False
        for func, entry in raw.items():
            callers = entry[4]
            if func in mlflow_side or is_pcs(func) or not callers:
                continue
            if all(c in mlflow_side for c in callers):
                mlflow_side.add(func)
                changed = True

    def own_outside_mlflow(func: tuple) -> float:
        callers = raw[func][4]
        if not callers:
            return raw[func][2]
        return sum(v[2] for c, v in callers.items() if c not in mlflow_side)

    own_rows = sorted(
        (f for f in raw if f not in mlflow_side and not f[0].endswith("bench_runs.py")),
        key=own_outside_mlflow,
        reverse=True,
    )[:20]
    pcs_side_total = sum(
        own_outside_mlflow(f)
        for f in raw
        if f not in mlflow_side and not f[0].endswith("bench_runs.py")
    )
    return {
        "runs": runs,
        "pcs_by_cumulative": [
            {
                "function": label(f),
                "cumulative_ms_per_run": _ms(raw[f][3] / runs),
                "calls_per_run": round(raw[f][1] / runs, 2),
                "calls_mlflow": f in reaches,
            }
            for f in pcs_rows
        ],
        "non_mlflow_by_own_time": [
            {
                "function": label(f),
                "own_ms_per_run": _ms(own_outside_mlflow(f) / runs),
                "calls_per_run": round(raw[f][1] / runs, 2),
            }
            for f in own_rows
        ],
        "total_ms_per_run": _ms(stats.total_tt / runs),  # type: ignore[attr-defined]
        "outside_mlflow_ms_per_run": _ms(pcs_side_total / runs),
    }


def _short_path(path: str) -> str:
    for marker in ("site-packages" + os.sep, "lib" + os.sep + "python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# -- 3. listing runs -------------------------------------------------------------------------------


def bench_listing(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from pcs import Run, _keys
    from pcs.run import PAGE_SIZE

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pcs-bench-list-{stamp()}")

    # Most runs are made bare with pcs's run-type tag, to save time; every
    # ``step``-th is a real pcs ``Run(...).end()``, timed on its own.
    n_pcs = max(1, min(args.list_pcs_runs, args.list_runs))
    step = max(1, args.list_runs // n_pcs)
    created: dict[str, list[float]] = {
        "pcs Run()+end()": [],
        "bare create_run+set_terminated (tagged)": [],
    }
    made_pcs = 0
    for i in range(args.list_runs):
        start = time.perf_counter()
        if i % step == 0 and made_pcs < n_pcs:
            Run(experiment_id).end()
            made_pcs += 1
            created["pcs Run()+end()"].append(time.perf_counter() - start)
        else:
            run = client.create_run(experiment_id, tags={_keys.RUN_TYPE: _keys.RUN_TYPE_RUN})
            client.set_terminated(run.info.run_id)
            created["bare create_run+set_terminated (tagged)"].append(time.perf_counter() - start)

    from pcs.run import all_experiment_ids

    experiment_ids = all_experiment_ids(client)
    filter_string = f"tags.`{_keys.RUN_TYPE}` LIKE '%run'"  # the filter pcs uses for pcs_only
    pages: list[int] = []

    def bare_list() -> list:
        bare_client = MlflowClient()
        found: list = []
        token = None
        n_pages = 0
        while True:
            page = bare_client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                run_view_type=ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            found.extend(page)
            n_pages += 1
            token = page.token
            if not token:
                pages.append(n_pages)
                return found

    pcs_all = "pcs Run.get_all_runs()"
    pcs_ids = "pcs Run.get_all_runs(experiment_ids)"
    bare_name = "bare paged search_runs"
    cases: dict[str, Callable[[], Any]] = {
        bare_name: bare_list,
        pcs_all: Run.get_all_runs,
        pcs_ids: lambda: Run.get_all_runs(experiment_ids),
    }
    counts = {name: len(fn()) for name, fn in cases.items()}
    same_runs = {r.info.run_id for r in bare_list()} == {r.identifier for r in Run.get_all_runs()}
    samples = time_interleaved(cases, args.list_repeats, warmup=1)
    timing = {name: summarize(s) for name, s in samples.items()}
    for name in (pcs_all, pcs_ids):
        timing[name]["ratio_median"] = round(
            timing[name]["median_ms"] / timing[bare_name]["median_ms"], 2
        )

    layers, engine, http = mlflow_layers(
        client.search_runs([experiment_id], max_results=1)[0].info.run_id
    )
    calls = {name: count_one(fn, layers, engine, http)["snapshot"] for name, fn in cases.items()}
    return {
        "experiment_id": experiment_id,
        "created": {name: summarize(s) for name, s in created.items() if s},
        "experiment_ids_searched": len(experiment_ids),
        "counts": counts,
        "same_count": len(set(counts.values())) == 1,
        "same_run_ids": same_runs,
        "pages": pages[-1],
        "page_size": PAGE_SIZE,
        "paged_past_page_size": min(counts.values()) > PAGE_SIZE,
        "repeats": args.list_repeats,
        "timing": timing,
        "calls": calls,
    }


# -- 4. start-up time ---------------------------------------------------------------------------------


def bench_startup(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    return time_startup(workdir, args.startup_repeats)


# -- report ------------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    print()
    print(
        f"pcs benchmark, {meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"MLflow {meta['mlflow']}, store {meta['tracking_uri']}"
    )
    print(
        f"load average at start {meta['load_average_at_start']}, at end {meta['load_average_at_end']} "
        "(other work on the machine shows up in p90 more than in min)"
    )
    if results.get("component_run"):
        _print_component_runs(results["component_run"])
    if results.get("heartbeat"):
        _print_heartbeat(results["heartbeat"])
    if results.get("listing"):
        _print_listing(results["listing"])
    if results.get("startup"):
        _print_startup(results["startup"])


def _print_component_runs(comp: Mapping[str, Any]) -> None:
    print(
        f"\n1. Component run vs plain MLflow ({comp['runs']} runs each after {comp['warmup']} "
        "warm-up, interleaved)"
    )
    timing = comp["timing"]
    rows = []
    for name, t in timing.items():
        rows.append(
            [
                name,
                f"{t['median_ms']:.2f}",
                f"{t['p90_ms']:.2f}",
                f"{t['min_ms']:.2f}",
                f"{t['median_ms'] / timing[BARE]['median_ms']:.2f}",
                f"{t['min_ms'] / timing[BARE]['min_ms']:.2f}",
                f"{t['median_ms'] / timing[FLUENT]['median_ms']:.2f}",
                f"{t['min_ms'] / timing[FLUENT]['min_ms']:.2f}",
            ]
        )
    table(
        [
            "case",
            "median ms",
            "p90 ms",
            "min ms",
            "x bare (median)",
            "x bare (min)",
            "x fluent (median)",
            "x fluent (min)",
        ],
        rows,
    )
    for name in PCS_CASES:
        for label, suffix in (("bare", ""), ("fluent", "_fluent")):
            ratio = timing[name][f"ratio_median{suffix}"]
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"   target <= {TARGET_RATIO}x {label}: {verdict} for {name} ({ratio:.2f}x)")
    print("\n   Where a run's time goes (separate pass with counting wrappers, medians):")
    over_http = comp.get("over_http")
    table(
        ["case", "total ms", "inside MLflow ms", "outside MLflow (pcs) ms"]
        + (["in HTTP requests ms"] if over_http else []),
        [
            [
                name,
                f"{s['total_median_ms']:.2f}",
                f"{s['inside_mlflow_median_ms']:.2f}",
                f"{s['outside_mlflow_median_ms']:.2f}",
            ]
            + ([f"{s['http_median_ms']:.2f}"] if over_http else [])
            for name, s in comp["time_split"].items()
        ],
    )
    print("   MLflow calls, median ms each (MlflowClient; then the store and artifact")
    print("   repository, which pcs also calls directly):")
    for name, s in comp["time_split"].items():
        print(
            f"     {name}: "
            + ", ".join(f"{m} {v:.2f}" for m, v in s["mlflow_client_method_median_ms"].items())
        )
        for layer, methods in s.get("lower_layer_method_median_ms", {}).items():
            print(f"       {layer}: " + ", ".join(f"{m} {v:.2f}" for m, v in methods.items()))
    print("\n   MLflow calls in one run, per layer: the calls the layer above made, then the")
    print("   layer's calls to itself (internal):")
    _print_calls(comp["calls_per_run"])
    if "profile" in comp:
        _print_profile(comp["profile"])


def _print_heartbeat(hb: Mapping[str, Any]) -> None:
    one = hb["one_beat"]
    print(
        f"\n2. Heartbeat ({hb['runs_per_case']} runs per case of ~{hb['work_ms_target']:.0f} ms of "
        "CPU-bound work)"
    )
    print(
        f"   one beat (set_tag of pcs.heartbeat, {one['n']} in this thread): median "
        f"{one['wall_median_ms']:.2f} ms wall, {one['cpu_median_ms']:.2f} ms CPU; "
        + _calls_line(one["calls"])
    )
    timing = hb["timing"]
    base = timing["the work alone"]
    table(
        [
            "case",
            "median ms",
            "p90 ms",
            "min ms",
            "CPU median ms",
            "x work alone (median)",
            "x work alone (CPU)",
        ],
        [
            [
                name,
                f"{t['median_ms']:.1f}",
                f"{t['p90_ms']:.1f}",
                f"{t['min_ms']:.1f}",
                f"{t['cpu_median_ms']:.1f}",
                f"{t['median_ms'] / base['median_ms']:.3f}",
                f"{t['cpu_median_ms'] / base['cpu_median_ms']:.3f}",
            ]
            for name, t in timing.items()
        ],
    )
    print("   (CPU: this process's CPU time during the run, the heartbeat thread's included)")
    low, high = hb["beats_per_fast_run_range"]
    per_beat = hb["extra_ms_per_beat"]
    print(
        f"   beats per beating run: median {hb['beats_per_fast_run_median']:g} (range {low}-{high}; "
        "the measured run and a keeper run that holds the thread in its cadence); "
        f"beats during the idle runs: {hb['beats_during_idle_runs']}; failed beats: "
        f"{hb['failed_beats']}"
    )
    print(
        f"   in the heartbeat thread, one beat: median {hb['thread_beat_wall_median_ms']} ms wall, "
        f"{hb['thread_beat_cpu_median_ms']} ms CPU"
    )
    per_cpu = hb["extra_cpu_ms_per_beat"]
    print(
        f"   a beating run took {hb['extra_ms_per_fast_run']:+.1f} ms wall and "
        f"{hb['extra_cpu_ms_per_fast_run']:+.1f} ms CPU more than an idle one (medians)"
        + (
            f", {per_beat:+.2f} ms wall and {per_cpu:+.2f} ms CPU per beat"
            if per_beat is not None and per_cpu is not None
            else ", no beats counted"
        )
    )
    per_hour = hb["default_interval_ms_per_run_hour"]
    print(
        f"   at the default interval (one beat a minute): {per_hour:.1f} ms per hour of run time "
        f"({100 * per_hour / 3_600_000:.4f}%), the larger of one beat alone and the wall time a "
        "beat adds to a busy run; a run shorter than 60 s makes no beat at all"
    )


def _print_listing(listing: Mapping[str, Any]) -> None:
    print(
        f"\n3. Listing runs ({listing['repeats']} repeats after 1 warm-up, interleaved; "
        f"{listing['experiment_ids_searched']} experiments)"
    )
    for name, t in listing["created"].items():
        print(f"   made with {name}: {t['n']} runs, median {t['median_ms']:.2f} ms")
    bare_min = listing["timing"]["bare paged search_runs"]["min_ms"]
    table(
        ["case", "runs found", "median ms", "p90 ms", "min ms", "x bare (median)", "x bare (min)"],
        [
            [
                name,
                str(listing["counts"][name]),
                f"{t['median_ms']:.1f}",
                f"{t['p90_ms']:.1f}",
                f"{t['min_ms']:.1f}",
                f"{t.get('ratio_median', 1.0):.2f}",
                f"{t['min_ms'] / bare_min:.2f}",
            ]
            for name, t in listing["timing"].items()
        ],
    )
    print(
        f"   same count: {yes(listing['same_count'])}; same run ids: "
        f"{yes(listing['same_run_ids'])}; bare loop read {listing['pages']} pages of "
        f"<= 1000; more than {listing['page_size']} runs listed: "
        f"{yes(listing['paged_past_page_size'])}"
    )
    print("   MLflow calls per listing:")
    for name, snap in listing["calls"].items():
        print(f"     {name}: " + _calls_line(snap))


def _print_startup(startup: Mapping[str, Any]) -> None:
    print(f"\n4. Start-up wall time (subprocess, median of {startup['repeats']} after 1 warm-up)")
    base = startup["timing"]["python -c 'import mlflow'"]["median_ms"]
    table(
        ["command", "median ms", "p90 ms", "x import mlflow"],
        [
            [name, f"{t['median_ms']:.0f}", f"{t['p90_ms']:.0f}", f"{t['median_ms'] / base:.2f}"]
            for name, t in startup["timing"].items()
        ],
    )
    heavy = startup["heavy_modules_after_import_pcs"] or "none"
    print(f"   heavy modules loaded by 'import pcs': {heavy}")
    print(f"   pcs --help ran: {startup['commands']['pcs --help']}")


def _calls_line(snap: Mapping[str, Any]) -> str:
    """The MlflowClient calls of a snapshot, then its SQL or HTTP summary, on one line."""
    top = snap["entries"].get("MlflowClient", {})
    text = ", ".join(f"{k} x{v}" for k, v in top.items()) or "no MlflowClient call"
    if snap.get("http"):
        return text + f"; HTTP {_http_summary(snap['http'])}"
    return text + f"; SQL {_sql_summary(snap['sql'])}"


def _print_calls(calls: Mapping[str, Any]) -> None:
    for case, snap in calls.items():
        stable = (
            "same in every counted run"
            if snap["same_every_run"]
            else "counts DIFFERED between runs"
        )
        print(f"   {case} ({stable})")
        width = max(len(layer) for layer in snap["calls"])
        for layer, counts in snap["calls"].items():
            if not counts:
                continue
            entries = snap["entries"][layer]
            asked = ", ".join(f"{k} {v}" for k, v in entries.items())
            internal = ", ".join(
                f"{k} {v - entries.get(k, 0)}" for k, v in counts.items() if v > entries.get(k, 0)
            )
            print(
                f"     {layer.ljust(width)}  {asked}"
                + (f"  | internal: {internal}" if internal else "")
            )
        if snap.get("http"):
            print(f"     {'HTTP'.ljust(width)}  {_http_summary(snap['http'])}")
        else:
            print(f"     {'SQL'.ljust(width)}  {_sql_summary(snap['sql'])}")


def _sql_summary(sql: Mapping[str, int]) -> str:
    if not sql:
        return "not counted (the store has no SQLAlchemy engine in this process)"
    statements = sum(v for k, v in sql.items() if k != "COMMIT")
    return f"{statements} statements: " + ", ".join(f"{k} {v}" for k, v in sql.items())


def _http_summary(http: Mapping[str, int]) -> str:
    prefix = "/api/2.0/"
    return f"{sum(http.values())} requests: " + ", ".join(
        f"{k.replace(prefix, '')} {v}" for k, v in http.items()
    )


def _print_profile(profile: Mapping[str, Any]) -> None:
    for case, prof in profile.items():
        print(
            f"\n   cProfile, {case}, {prof['runs']} runs: {prof['total_ms_per_run']:.1f} ms/run "
            f"under the profiler, {prof['outside_mlflow_ms_per_run']:.1f} ms of it outside MLflow"
        )
        print("   pcs functions by cumulative time (* = includes MLflow calls):")
        for row in prof["pcs_by_cumulative"][:18]:
            mark = "*" if row["calls_mlflow"] else " "
            print(
                f"     {row['cumulative_ms_per_run']:7.2f} ms {mark} x{row['calls_per_run']:<5g} {row['function']}"
            )
        print("   functions by own time spent outside MLflow (pcs, yaml, tempfile, ...):")
        for row in prof["non_mlflow_by_own_time"][:14]:
            print(
                f"     {row['own_ms_per_run']:7.2f} ms   x{row['calls_per_run']:<6g} {row['function']}"
            )


# -- main ------------------------------------------------------------------------------------------

PARTS = ("runs", "heartbeat", "list", "startup")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure what pcs costs next to plain MLflow (see benchmarks/README.md)."
    )
    parser.add_argument("--runs", type=int, default=100, help="timed runs per case (default 100)")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed runs per case first (default 5)"
    )
    parser.add_argument(
        "--split-runs", type=int, default=20, help="runs per case in the counting pass (default 20)"
    )
    parser.add_argument(
        "--hb-runs", type=int, default=12, help="timed runs per heartbeat case (default 12)"
    )
    parser.add_argument(
        "--hb-block",
        type=int,
        default=3,
        help="heartbeat runs in a row before switching idle/beating (default 3)",
    )
    parser.add_argument(
        "--hb-work-ms",
        type=float,
        default=500.0,
        help="CPU-bound work per heartbeat run, in ms (default 500)",
    )
    parser.add_argument(
        "--hb-fast-s",
        type=float,
        default=0.05,
        help="heartbeat interval of the beating runs, in s (default 0.05, the thread's floor)",
    )
    parser.add_argument(
        "--hb-beats", type=int, default=50, help="single beats timed one by one (default 50)"
    )
    parser.add_argument(
        "--list-runs",
        type=int,
        default=1000,
        help="runs to create for the listing benchmark (default 1000)",
    )
    parser.add_argument(
        "--list-pcs-runs",
        type=int,
        default=100,
        help="how many of those are real pcs Run()s (default 100)",
    )
    parser.add_argument(
        "--list-repeats", type=int, default=7, help="timed listings per case (default 7)"
    )
    parser.add_argument(
        "--startup-repeats",
        type=int,
        default=5,
        help="timed subprocess starts per command (default 5)",
    )
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--tracking-uri", help="MLflow store to use (default: a fresh sqlite:///<tmp>/mlflow.db)"
    )
    store.add_argument(
        "--start-server",
        action="store_true",
        help="start an 'mlflow server' (SQLite backend, proxied artifacts, 1 worker) and use it",
    )
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the component runs and rank pcs-side costs",
    )
    parser.add_argument(
        "--profile-runs", type=int, default=30, help="runs per profiled case (default 30)"
    )
    parser.add_argument(
        "--profile-out", help="dump raw stats to PREFIX.repo.pstats / PREFIX.class.pstats"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=PARTS,
        help="skip a part (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    for name in (
        "runs",
        "split_runs",
        "hb_runs",
        "hb_block",
        "hb_beats",
        "list_repeats",
        "startup_repeats",
        "profile_runs",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.list_runs < 1:
        parser.error("--warmup must be >= 0 and --list-runs >= 1")
    if not args.hb_work_ms > 0 or not args.hb_fast_s > 0:
        parser.error("--hb-work-ms and --hb-fast-s must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json_out is not None:
        args.json_out = args.json_out.resolve()
    if args.profile_out:
        args.profile_out = str(Path(args.profile_out).resolve())
    with workspace("pcs-bench-", keep=args.keep) as workdir:
        server = MlflowServer(workdir / "server") if args.start_server else None
        try:
            if server is not None:
                progress("starting mlflow server")
                uri = server.start()
                label = f"mlflow server {uri} (SQLite backend, proxied artifacts, 1 worker)"
            else:
                uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
                label = uri if args.tracking_uri else "fresh sqlite:///<tmp>/mlflow.db"
            os.environ["MLFLOW_TRACKING_URI"] = uri
            results = run_all(args, workdir, uri, label)
        finally:
            if server is not None:
                server.stop()
    print_report(results)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(
            json.dumps(results, indent=2, sort_keys=False) + "\n", encoding="utf-8"
        )
        print(f"\nresults written to {args.json_out}")
    listing = results.get("listing")
    if listing and not (listing["same_count"] and listing["same_run_ids"]):
        print("\nERROR: pcs and the bare search listed different runs.", file=sys.stderr)
        return 1
    return 0


def run_all(args: argparse.Namespace, workdir: Path, uri: str, label: str) -> dict[str, Any]:
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no migration chatter in the report
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().search_experiments(max_results=1)  # creates / migrates the store, untimed

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": cpu_count(),
            "load_average_at_start": load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "mlflow": mlflow.__version__,
            "pcs": _pcs_version(),
            "tracking_uri": label,
            "argv": sys.argv[1:],
        }
    }
    steps = [p for p in PARTS if p not in args.skip]
    for number, part in enumerate(steps, 1):
        if part == "runs":
            progress(f"{number}/{len(steps)} component runs")
            results["component_run"] = bench_component_runs(args, workdir)
        elif part == "heartbeat":
            progress(f"{number}/{len(steps)} heartbeat")
            results["heartbeat"] = bench_heartbeat(args)
        elif part == "list":
            progress(f"{number}/{len(steps)} listing ({args.list_runs} runs to create)")
            results["listing"] = bench_listing(args)
        else:
            progress(f"{number}/{len(steps)} start-up time")
            results["startup"] = bench_startup(args, workdir)
    results["meta"]["load_average_at_end"] = load_average()
    return results


def _pcs_version() -> str:
    import pcs

    return getattr(pcs, "__version__", "unknown")


if __name__ == "__main__":
    sys.exit(main())
