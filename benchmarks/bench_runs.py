#!/usr/bin/env python
"""What pcs costs next to bare MLflow, measured side by side in one process.

Usage::

    python benchmarks/bench_runs.py [--runs N] [--list-runs 1000] [--tracking-uri URI]
                                    [--json-out PATH] [--profile [--profile-out PREFIX]]

Three measurements (benchmarks/README.md explains each):

1. one trivial component run (class in a module file, via ``Component.from_repo``;
   class in this script, via ``Component.from_class``) against a bare
   ``MlflowClient().create_run`` + ``set_terminated``; the MLflow calls one run
   makes, by layer and method; and how much of a run's time is spent inside
   MLflow calls and how much in pcs itself;
2. ``Run.get_all_runs()`` over more than 1,000 runs against a bare paged
   ``MlflowClient().search_runs`` loop with the same filter;
3. ``import pcs`` and ``pcs --help`` against ``import mlflow`` (subprocess wall time).

By default everything goes to a fresh SQLite store in a temporary folder, which
is also the working directory (so artifacts land there) and ``PCS_HOME``.

This is a measurement tool, not a test: to count calls it patches MLflow
classes at run time and restores them afterwards. Nothing leaves this machine:
MLflow's usage telemetry is switched off before MLflow is imported.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Before MLflow is imported anywhere: a benchmark must not phone home, and the
# bare baseline and pcs pay the same (zero) telemetry cost.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
# Against an MLflow server, set_terminated would print two links per run (and
# fetch the run to build them); the report should stay readable.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

TARGET_RATIO = 2.5  # the budget: a component run costs at most 2.5x a bare run

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

BARE = "bare create_run+set_terminated"
PCS_REPO = "pcs from_repo (module file)"
PCS_CLASS = "pcs from_class (__main__)"


# -- statistics ---------------------------------------------------------------------------------


def summarize(seconds: list[float]) -> dict[str, float]:
    """Median, p90 (nearest rank), min and mean of samples, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "min_ms": round(ms[0], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def percentile(sorted_values: list[float], pct: float) -> float:
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


def time_interleaved(
    cases: Mapping[str, Callable[[], object]], runs: int, warmup: int
) -> dict[str, list[float]]:
    """Wall time of each case, ``runs`` times, the cases taking turns.

    Taking turns (and rotating who goes first) spreads drift, such as the store
    growing, evenly over the cases instead of charging it to the last one.
    """
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(runs):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            cases[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


# -- counting MLflow calls -----------------------------------------------------------------------


class CallCounter:
    """Counts calls into MLflow classes (by layer and method) and SQL statements.

    While active, every plain method defined by a layer's class (or an MLflow
    base class of it) is wrapped. ``calls`` counts every call, ``entries`` only
    calls made from outside that layer (what the layer above asked for), and
    ``mlflow_seconds`` adds up wall time spent inside any wrapped call, counted
    once at the outermost one. Only the thread that made the counter counts.
    """

    def __init__(self, layers: Mapping[str, type], engine: Any = None) -> None:
        self.layers = dict(layers)
        self.engine = engine
        self.calls: dict[str, Counter] = {name: Counter() for name in layers}
        self.entries: dict[str, Counter] = {name: Counter() for name in layers}
        self.entry_seconds: dict[str, defaultdict[str, float]] = {
            name: defaultdict(float) for name in layers
        }
        self.sql: Counter = Counter()
        self.mlflow_seconds = 0.0
        self._depth: Counter = Counter()
        self._outer_depth = 0
        self._thread = threading.get_ident()
        self._patched: list[tuple[type, str, Any]] = []

    def __enter__(self) -> CallCounter:
        for layer, cls in self.layers.items():
            seen: set[str] = set()
            for klass in cls.__mro__:
                if not klass.__module__.startswith("mlflow"):
                    continue
                for name, attr in list(vars(klass).items()):
                    if name in seen or not isinstance(attr, types.FunctionType):
                        continue
                    if name.startswith("__") and name != "__init__":
                        continue
                    seen.add(name)
                    self._patched.append((klass, name, attr))
                    setattr(klass, name, self._wrap(layer, name, attr))
        if self.engine is not None:
            from sqlalchemy import event

            event.listen(self.engine, "before_cursor_execute", self._on_sql)
            event.listen(self.engine, "commit", self._on_commit)
        return self

    def __exit__(self, *exc: object) -> None:
        for klass, name, attr in reversed(self._patched):
            setattr(klass, name, attr)
        self._patched.clear()
        if self.engine is not None:
            from sqlalchemy import event

            event.remove(self.engine, "before_cursor_execute", self._on_sql)
            event.remove(self.engine, "commit", self._on_commit)

    def _wrap(self, layer: str, name: str, fn: Callable) -> Callable:
        counter = self

        @functools.wraps(fn)
        def counted(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != counter._thread:
                return fn(*args, **kwargs)
            counter.calls[layer][name] += 1
            entry = counter._depth[layer] == 0
            if entry:
                counter.entries[layer][name] += 1
            counter._depth[layer] += 1
            outermost = counter._outer_depth == 0
            counter._outer_depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                counter._outer_depth -= 1
                counter._depth[layer] -= 1
                if entry:
                    counter.entry_seconds[layer][name] += elapsed
                if outermost:
                    counter.mlflow_seconds += elapsed

        return counted

    def _on_sql(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() == self._thread:
            self.sql[statement.lstrip().split(None, 1)[0].upper()] += 1

    def _on_commit(self, conn) -> None:
        if threading.get_ident() == self._thread:
            self.sql["COMMIT"] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": {layer: dict(sorted(c.items())) for layer, c in self.calls.items()},
            "entries": {layer: dict(sorted(c.items())) for layer, c in self.entries.items()},
            "sql": dict(sorted(self.sql.items())),
        }

    def seconds(self) -> dict[str, dict[str, float]]:
        """Wall time of the calls each layer got from the layer above, by method."""
        return {layer: dict(c) for layer, c in self.entry_seconds.items()}


def mlflow_layers(sample_run_id: str) -> tuple[dict[str, type], Any]:
    """The MLflow classes a run goes through, top to bottom, and the store's SQL engine."""
    from mlflow import MlflowClient
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking._tracking_service.client import TrackingServiceClient

    client = MlflowClient()
    store = client._tracking_client.store
    artifact_repo = type(get_artifact_repository(client.get_run(sample_run_id).info.artifact_uri))
    layers = {
        "MlflowClient": MlflowClient,
        "TrackingServiceClient": TrackingServiceClient,
        f"store ({type(store).__name__})": type(store),
        f"artifacts ({artifact_repo.__name__})": artifact_repo,
    }
    return layers, getattr(store, "engine", None)


def count_one(fn: Callable[[], object], layers: Mapping[str, type], engine: Any) -> dict[str, Any]:
    """What one call of ``fn`` asks of MLflow, its wall time and the part spent in MLflow."""
    with CallCounter(layers, engine) as counter:
        start = time.perf_counter()
        fn()
        total = time.perf_counter() - start
    return {
        "snapshot": counter.snapshot(),
        "total": total,
        "inside": counter.mlflow_seconds,
        "by_method": counter.seconds()["MlflowClient"],
    }


# -- 1. a component run against a bare run -----------------------------------------------------------


def component_cases(workdir: Path, experiment_id: str) -> dict[str, Callable[[], object]]:
    """The three things measured per run, each creating and finishing one run."""
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

    def pcs_from_repo() -> None:
        component = Component.from_repo(
            repo, "Trivial", TRIVIAL_FILE, class_name="Trivial", instantiate=True
        )
        component.run_with_arg_set("fn", ARGS, seed=1, experiment_id=experiment_id)

    def pcs_from_class() -> None:
        component = Component.from_class(Trivial, instantiate=True)
        component.run_with_arg_set("fn", ARGS, seed=1, experiment_id=experiment_id)

    return {BARE: bare, PCS_REPO: pcs_from_repo, PCS_CLASS: pcs_from_class}


def bench_component_runs(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pcs-bench-runs-{_stamp()}")
    cases = component_cases(workdir, experiment_id)
    _check_component_run_works(cases, experiment_id)

    samples = time_interleaved(cases, args.runs, args.warmup)
    timing = {name: summarize(s) for name, s in samples.items()}
    bare = timing[BARE]
    for name in (PCS_REPO, PCS_CLASS):
        timing[name]["ratio_median"] = round(timing[name]["median_ms"] / bare["median_ms"], 2)
        timing[name]["ratio_p90"] = round(timing[name]["p90_ms"] / bare["p90_ms"], 2)
        timing[name]["ratio_min"] = round(timing[name]["min_ms"] / bare["min_ms"], 2)

    # A separate pass with counting wrappers in place: what one run calls, and
    # how its time splits between MLflow and pcs (the wrappers cost a little).
    sample = client.search_runs([experiment_id], max_results=1)[0].info.run_id
    layers, engine = mlflow_layers(sample)
    calls: dict[str, Any] = {}
    split: dict[str, Any] = {}
    for name, fn in cases.items():
        counted = [count_one(fn, layers, engine) for _ in range(args.split_runs)]
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
            "mlflow_client_method_median_ms": {
                method: _ms(statistics.median(c["by_method"].get(method, 0.0) for c in counted))
                for method in first["entries"]["MlflowClient"]
            },
        }

    result: dict[str, Any] = {
        "experiment_id": experiment_id,
        "runs": args.runs,
        "warmup": args.warmup,
        "timing": timing,
        "calls_per_run": calls,
        "time_split": split,
        "target_ratio": TARGET_RATIO,
    }
    if args.profile:
        result["profile"] = profile_component_runs(cases, args)
    return result


def _check_component_run_works(
    cases: Mapping[str, Callable[[], object]], experiment_id: str
) -> None:
    """Run each pcs case once; stop unless it recorded a finished component run returning 3."""
    from pcs import ComponentRun, Run

    for name in (PCS_REPO, PCS_CLASS):
        cases[name]()
        newest = Run.get_all_runs([experiment_id])[0]
        if not isinstance(newest, ComponentRun) or newest.status != "FINISHED":
            raise SystemExit(
                f"{name}: the run {newest.identifier} is not a finished component run."
            )
        if newest.return_value != 3:
            raise SystemExit(f"{name}: the run returned {newest.return_value!r}, not 3.")


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


# -- 2. listing runs -------------------------------------------------------------------------------


def bench_listing(args: argparse.Namespace) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    from pcs import Run, _keys
    from pcs.run import PAGE_SIZE

    client = MlflowClient()
    experiment_id = client.create_experiment(f"pcs-bench-list-{_stamp()}")

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

    layers, engine = mlflow_layers(
        client.search_runs([experiment_id], max_results=1)[0].info.run_id
    )
    calls = {name: count_one(fn, layers, engine)["snapshot"] for name, fn in cases.items()}
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


# -- 3. start-up time ---------------------------------------------------------------------------------


def pcs_command() -> list[str]:
    """The ``pcs`` console script of this interpreter (not a shell shim in front of it)."""
    beside = Path(sys.executable).parent / "pcs"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("pcs")
    return [found] if found else [sys.executable, "-m", "pcs"]


def bench_startup(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    py = sys.executable
    commands = {
        "python -c pass": [py, "-c", "pass"],
        "python -c 'import pcs'": [py, "-c", "import pcs"],
        "pcs --help": pcs_command() + ["--help"],
        "python -c 'import mlflow'": [py, "-c", "import mlflow"],
    }

    def runner(cmd: list[str]) -> Callable[[], None]:
        def run() -> None:
            subprocess.run(cmd, cwd=workdir, env=env, check=True, capture_output=True)

        return run

    samples = time_interleaved(
        {name: runner(cmd) for name, cmd in commands.items()}, args.startup_repeats, warmup=1
    )
    timing = {name: summarize(s) for name, s in samples.items()}
    probe = subprocess.run(
        [
            py,
            "-c",
            "import sys, pcs; print(sorted(m for m in ('mlflow', 'sqlalchemy', 'git', 'dill', 'yaml', 'click') if m in sys.modules))",
        ],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return {
        "repeats": args.startup_repeats,
        "commands": {name: " ".join(cmd) for name, cmd in commands.items()},
        "timing": timing,
        "heavy_modules_after_import_pcs": json.loads(probe.stdout.replace("'", '"')),
    }


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

    comp = results.get("component_run")
    if comp:
        print(
            f"\n1. Component run vs bare run ({comp['runs']} runs each after {comp['warmup']} "
            "warm-up, interleaved)"
        )
        bare_min = comp["timing"][BARE]["min_ms"]
        _table(
            [
                "case",
                "median ms",
                "p90 ms",
                "min ms",
                "x bare (median)",
                "x bare (p90)",
                "x bare (min)",
            ],
            [
                [
                    name,
                    f"{t['median_ms']:.2f}",
                    f"{t['p90_ms']:.2f}",
                    f"{t['min_ms']:.2f}",
                    f"{t.get('ratio_median', 1.0):.2f}",
                    f"{t.get('ratio_p90', 1.0):.2f}",
                    f"{t['min_ms'] / bare_min:.2f}",
                ]
                for name, t in comp["timing"].items()
            ],
        )
        for name in (PCS_REPO, PCS_CLASS):
            ratio = comp["timing"][name]["ratio_median"]
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"   target <= {TARGET_RATIO}x bare: {verdict} for {name} ({ratio:.2f}x)")
        print("\n   Where a run's time goes (separate pass with counting wrappers, medians):")
        _table(
            ["case", "total ms", "inside MLflow ms", "outside MLflow (pcs) ms"],
            [
                [
                    name,
                    f"{s['total_median_ms']:.2f}",
                    f"{s['inside_mlflow_median_ms']:.2f}",
                    f"{s['outside_mlflow_median_ms']:.2f}",
                ]
                for name, s in comp["time_split"].items()
            ],
        )
        print("   MlflowClient calls, median ms each:")
        for name, s in comp["time_split"].items():
            print(
                f"     {name}: "
                + ", ".join(f"{m} {v:.2f}" for m, v in s["mlflow_client_method_median_ms"].items())
            )
        print("\n   MLflow calls in one run, per layer: the calls the layer above made, then the")
        print("   layer's calls to itself (internal):")
        _print_calls(comp["calls_per_run"])
        if "profile" in comp:
            _print_profile(comp["profile"])

    listing = results.get("listing")
    if listing:
        print(
            f"\n2. Listing runs ({listing['repeats']} repeats after 1 warm-up, interleaved; "
            f"{listing['experiment_ids_searched']} experiments)"
        )
        for name, t in listing["created"].items():
            print(f"   made with {name}: {t['n']} runs, median {t['median_ms']:.2f} ms")
        bare_min = listing["timing"]["bare paged search_runs"]["min_ms"]
        _table(
            [
                "case",
                "runs found",
                "median ms",
                "p90 ms",
                "min ms",
                "x bare (median)",
                "x bare (min)",
            ],
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
            f"   same count: {_yes(listing['same_count'])}; same run ids: "
            f"{_yes(listing['same_run_ids'])}; bare loop read {listing['pages']} pages of "
            f"<= 1000; more than {listing['page_size']} runs listed: "
            f"{_yes(listing['paged_past_page_size'])}"
        )
        print("   MLflow calls per listing:")
        for name, snap in listing["calls"].items():
            top = snap["entries"].get("MlflowClient", {})
            print(
                f"     {name}: "
                + ", ".join(f"{k} x{v}" for k, v in top.items())
                + f"; SQL {_sql_summary(snap['sql'])}"
            )

    startup = results.get("startup")
    if startup:
        print(
            f"\n3. Start-up wall time (subprocess, median of {startup['repeats']} after 1 warm-up)"
        )
        base = startup["timing"]["python -c 'import mlflow'"]["median_ms"]
        _table(
            ["command", "median ms", "p90 ms", "x import mlflow"],
            [
                [
                    name,
                    f"{t['median_ms']:.0f}",
                    f"{t['p90_ms']:.0f}",
                    f"{t['median_ms'] / base:.2f}",
                ]
                for name, t in startup["timing"].items()
            ],
        )
        print(
            f"   heavy modules loaded by 'import pcs': {startup['heavy_modules_after_import_pcs'] or 'none'}"
        )
        print(f"   pcs --help ran: {startup['commands']['pcs --help']}")


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
        print(f"     {'SQL'.ljust(width)}  {_sql_summary(snap['sql'])}")


def _sql_summary(sql: Mapping[str, int]) -> str:
    if not sql:
        return "not counted (the store has no SQLAlchemy engine in this process)"
    statements = sum(v for k, v in sql.items() if k != "COMMIT")
    return f"{statements} statements: " + ", ".join(f"{k} {v}" for k, v in sql.items())


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


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = "   " + "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(line)
    print("   " + "  ".join("-" * w for w in widths))
    for row in rows:
        print(
            "   "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure what pcs costs next to bare MLflow (see benchmarks/README.md)."
    )
    parser.add_argument("--runs", type=int, default=100, help="timed runs per case (default 100)")
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed runs per case first (default 5)"
    )
    parser.add_argument(
        "--split-runs", type=int, default=20, help="runs per case in the counting pass (default 20)"
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
    parser.add_argument(
        "--tracking-uri", help="MLflow store to use (default: a fresh sqlite:///<tmp>/mlflow.db)"
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
        choices=["runs", "list", "startup"],
        help="skip a part (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    for name in ("runs", "split_runs", "list_repeats", "startup_repeats", "profile_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.list_runs < 1:
        parser.error("--warmup must be >= 0 and --list-runs >= 1")
    return args


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pcs-bench-")).resolve()
    if args.json_out is not None:
        args.json_out = args.json_out.resolve()
    if args.profile_out:
        args.profile_out = str(Path(args.profile_out).resolve())
    previous_cwd = os.getcwd()
    previous_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "PCS_HOME")}
    uri = args.tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    try:
        os.chdir(workdir)  # MLflow puts a SQLite store's artifacts under the working directory
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["PCS_HOME"] = str(workdir / "pcs_home")
        results = run_all(args, workdir, uri)
    finally:
        os.chdir(previous_cwd)
        for key, value in previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if args.keep:
            print(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
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


def run_all(args: argparse.Namespace, workdir: Path, uri: str) -> dict[str, Any]:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no migration chatter in the report
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    mlflow.MlflowClient().search_experiments(max_results=1)  # creates / migrates the store, untimed

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": _cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
            "mlflow": mlflow.__version__,
            "pcs": _pcs_version(),
            "tracking_uri": uri if args.tracking_uri else "fresh sqlite:///<tmp>/mlflow.db",
            "argv": sys.argv[1:],
        }
    }
    if "runs" not in args.skip:
        _progress("1/3 component runs")
        results["component_run"] = bench_component_runs(args, workdir)
    if "list" not in args.skip:
        _progress(f"2/3 listing ({args.list_runs} runs to create)")
        results["listing"] = bench_listing(args)
    if "startup" not in args.skip:
        _progress("3/3 start-up time")
        results["startup"] = bench_startup(args, workdir)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def _pcs_version() -> str:
    import pcs

    return getattr(pcs, "__version__", "unknown")


def _progress(text: str) -> None:
    print(f"[bench] {text} ...", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
