#!/usr/bin/env python
"""``pcs status`` over 10,000 runs next to a paged ``mlflow.search_runs`` of the same runs.

Usage::

    python benchmarks/bench_status.py [--runs 10000] [--repeats 5] [--backend sqlite|server|both]
                                      [--fill orm|client] [--cache DIR] [--json-out PATH]

It fills one SQLite store with ``--runs`` pcs runs (a few real ones made by pcs,
the rest copies of them, see ``--fill``), then lists them, on that SQLite
store and on an ``mlflow server`` serving a copy of it, in two ways:

- in this process: ``Run.get_all_runs()`` and the whole ``pcs status`` table
  (and ``--json``) rendered to memory, against a paged
  ``MlflowClient().search_runs`` loop (with and without pcs's filter) and
  ``mlflow.search_runs(search_all_experiments=True, output_format="list")``;
- as a user runs it, in fresh processes: ``pcs status`` (and ``--json``) with
  its output piped, against a Python script that lists the same runs with
  ``mlflow.search_runs`` and prints a line per run; and the start-up of
  ``pcs --help``, ``import pcs`` and ``import mlflow``.

benchmarks/README.md explains each number. Nothing leaves this machine, and
everything is written in a temporary folder removed at the end (``--keep``
keeps it; ``--cache DIR`` keeps the filled store for the next invocation).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import json
import logging
import os
import platform
import pstats
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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
    pcs_command,
    progress,
    stamp,
    summarize,
    table,
    time_interleaved,
    time_startup,
    workspace,
    yes,
)

TARGET_RATIO = 1.3  # the budget: pcs status costs at most 1.3x a paged mlflow.search_runs
CACHE_FORMAT = 1


class Trivial:
    """A component for the few real component runs in the store."""

    def __init__(self, x=1):
        self.x = x

    def fn(self, y=2):
        return self.x + y


# What a user who lists runs with plain MLflow writes (the same runs, a line each).
PLAIN_SCRIPT = """\
import mlflow

runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
for run in runs:
    info = run.info
    print(info.run_id, info.run_name, info.status, info.start_time, sep="  ")
"""

# in this process
CLIENT = "MlflowClient.search_runs, paged by 1000"
CLIENT_FILTERED = "MlflowClient.search_runs, paged by 1000, pcs's filter"
FLUENT = "mlflow.search_runs(output_format='list')"
PCS_ALL = "pcs Run.get_all_runs()"
PCS_TABLE = "pcs status, in process (table to memory)"
PCS_JSON = "pcs status --json, in process (to memory)"
# in fresh processes
CLI_TABLE = "pcs status"
CLI_JSON = "pcs status --json"
CLI_PLAIN = "python plain_status.py (mlflow.search_runs + print)"


# -- filling the store ---------------------------------------------------------------------------


def fill_store(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Put ``args.runs`` pcs runs in the store of ``MLFLOW_TRACKING_URI``; how long it took."""
    from mlflow import MlflowClient

    from pcs import Component, Run

    client = MlflowClient()
    experiments = [
        client.create_experiment(f"pcs-bench-status-{i}-{stamp()}") for i in range(args.experiments)
    ]
    real_runs = min(args.pcs_runs, args.runs)
    real_components = min(args.component_runs, args.runs - real_runs)
    made: dict[str, list[float]] = {"pcs Run()+end()": [], "pcs component run": []}
    for i in range(real_runs):
        start = time.perf_counter()
        Run(experiments[i % len(experiments)]).end()
        made["pcs Run()+end()"].append(time.perf_counter() - start)
    trivial_args = {"Trivial": {"__init__": {"x": 1}, "fn": {"y": 2}}}
    for i in range(real_components):
        start = time.perf_counter()
        Component.from_class(Trivial, instantiate=True).run_with_arg_set(
            "fn", trivial_args, seed=i, experiment_id=experiments[i % len(experiments)]
        )
        made["pcs component run"].append(time.perf_counter() - start)

    templates = _templates(client, experiments)
    copies = args.runs - real_runs - real_components
    stale = min(args.stale_runs, copies)
    dead_pid = _dead_pid()
    start = time.perf_counter()
    if args.fill == "orm":
        _fill_orm(client, experiments, templates, copies, stale, dead_pid)
    else:
        _fill_client(client, experiments, templates, copies, stale, dead_pid)
    fill_seconds = time.perf_counter() - start
    return {
        "experiments": experiments,
        "real_pcs_runs": real_runs,
        "real_component_runs": real_components,
        "copies": copies,
        "stale_running_copies": stale,
        "fill": args.fill,
        "fill_seconds": round(fill_seconds, 2),
        "made": {name: summarize(s) for name, s in made.items() if s},
    }


def _templates(client: Any, experiments: list[str]) -> list[dict[str, Any]]:
    """The tags and params of one real pcs run and one real component run, to copy."""
    from pcs import _keys

    found = []
    for run_type in (_keys.RUN_TYPE_RUN, _keys.RUN_TYPE_COMPONENT):
        runs = client.search_runs(
            experiments, filter_string=f"tags.`{_keys.RUN_TYPE}` = '{run_type}'", max_results=1
        )
        if runs:
            tags = dict(runs[0].data.tags)
            tags.pop("mlflow.runName", None)
            found.append({"tags": tags, "params": dict(runs[0].data.params)})
    if not found:
        raise SystemExit("no real pcs run to copy: give --pcs-runs or --component-runs >= 1")
    return found


def _dead_pid() -> int:
    """The pid of a process that has just ended (for runs left RUNNING by a dead process)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(child.stdout)


def _copy(template: dict[str, Any], i: int, start_ms: int, stale: bool, dead_pid: int) -> dict:
    from pcs import _keys

    tags = dict(template["tags"])
    tags[_keys.HEARTBEAT] = str(start_ms)
    if stale:
        tags[_keys.PID] = str(dead_pid)
    return {
        "name": f"copy-{i}",
        "tags": tags,
        "params": template["params"],
        "start": start_ms,
        "end": None if stale else start_ms + 40,
        "status": "RUNNING" if stale else "FINISHED",
    }


def _fill_orm(client: Any, experiments: list[str], templates: list[dict], copies: int,
              stale: int, dead_pid: int) -> None:  # fmt: skip
    """Insert the copies with MLflow's own ORM classes, as ``create_run`` builds its rows.

    One transaction per 1,000 runs instead of two commits per run: the store
    ends up with the rows ``create_run`` + ``set_terminated`` (+ ``log_batch``)
    would write, in seconds instead of minutes.
    """
    from mlflow.entities import LifecycleStage, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path

    store = client._tracking_client.store
    if not hasattr(store, "ManagedSessionMaker"):
        raise SystemExit("--fill orm needs a SQL store; use --fill client")
    locations = {e: client.get_experiment(e).artifact_location for e in experiments}
    now = int(time.time() * 1000)
    for first in range(0, copies, 1000):
        with store.ManagedSessionMaker() as session:
            for i in range(first, min(first + 1000, copies)):
                run_id = os.urandom(16).hex()
                experiment = experiments[i % len(experiments)]
                copy = _copy(templates[i % len(templates)], i, now - 60_000 - i * 1000,
                             i < stale, dead_pid)  # fmt: skip
                row = SqlRun(
                    name=copy["name"],
                    artifact_uri=append_to_uri_path(locations[experiment], run_id, "artifacts"),
                    run_uuid=run_id,
                    experiment_id=int(experiment),
                    source_type=SourceType.to_string(SourceType.UNKNOWN),
                    source_name="",
                    entry_point_name="",
                    user_id=copy["tags"].get("mlflow.user", "unknown"),
                    status=copy["status"],
                    start_time=copy["start"],
                    end_time=copy["end"],
                    deleted_time=None,
                    source_version="",
                    lifecycle_stage=LifecycleStage.ACTIVE,
                )
                tags = dict(copy["tags"], **{"mlflow.runName": copy["name"]})
                row.tags = [SqlTag(key=k, value=v) for k, v in tags.items()]
                row.params = [SqlParam(key=k, value=v) for k, v in copy["params"].items()]
                session.add(row)


def _fill_client(client: Any, experiments: list[str], templates: list[dict], copies: int,
                 stale: int, dead_pid: int) -> None:  # fmt: skip
    """The copies through MlflowClient: create_run (+ log_batch) + set_terminated each."""
    from mlflow.entities import Param

    now = int(time.time() * 1000)
    for i in range(copies):
        copy = _copy(templates[i % len(templates)], i, now - 60_000 - i * 1000, i < stale, dead_pid)
        run = client.create_run(
            experiments[i % len(experiments)],
            start_time=copy["start"],
            tags=copy["tags"],
            run_name=copy["name"],
        )
        if copy["params"]:
            client.log_batch(
                run.info.run_id, params=[Param(k, v) for k, v in copy["params"].items()]
            )
        if copy["end"] is not None:
            client.set_terminated(run.info.run_id, end_time=copy["end"])


def prepare_store(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """A filled SQLite store in ``workdir`` (from ``--cache`` when it holds one that fits)."""
    import mlflow

    db = workdir / "status.db"
    cached_db = args.cache / "status.db" if args.cache else None
    meta_path = args.cache / "status.json" if args.cache else None
    wanted = {
        "format": CACHE_FORMAT,
        "runs": args.runs,
        "experiments": args.experiments,
        "pcs_runs": args.pcs_runs,
        "component_runs": args.component_runs,
        "stale_runs": args.stale_runs,
        "mlflow": mlflow.__version__,
    }
    if cached_db and meta_path and cached_db.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("wanted") == wanted:
            shutil.copy(cached_db, db)
            return db, dict(meta["fill"], from_cache=str(args.cache))
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    mlflow.MlflowClient().search_experiments(max_results=1)  # creates the store, untimed
    fill = fill_store(args, workdir)
    _dispose(mlflow.MlflowClient())
    if cached_db and meta_path:
        args.cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, cached_db)
        meta_path.write_text(json.dumps({"wanted": wanted, "fill": fill}, indent=2) + "\n",
                             encoding="utf-8")  # fmt: skip
    return db, fill


def _dispose(client: Any) -> None:
    """Close the SQL store's connections, so the file can be copied and served elsewhere."""
    engine = getattr(client._tracking_client.store, "engine", None)
    if engine is not None:
        engine.dispose()


# -- listing -------------------------------------------------------------------------------------


def in_process_cases(experiment_ids: list[str]) -> dict[str, Callable[[], Any]]:
    """Each case lists every run of the store once and returns what it listed."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import ViewType
    from rich.console import Console

    from pcs import Run, _keys, _render

    pcs_filter = f"tags.`{_keys.RUN_TYPE}` IS NOT NULL"

    def paged(filter_string: str) -> Callable[[], list]:
        def run() -> list:
            client = MlflowClient()
            found: list = []
            token = None
            while True:
                page = client.search_runs(
                    experiment_ids,
                    filter_string=filter_string,
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=1000,
                    order_by=["attributes.start_time DESC"],
                    page_token=token,
                )
                found.extend(page)
                token = page.token
                if not token:
                    return found

        return run

    def fluent() -> list:
        return mlflow.search_runs(search_all_experiments=True, output_format="list")

    def pcs_table() -> list:
        runs = Run.get_all_runs()
        # what the CLI prints into a pipe: no terminal, 160 columns
        out = Console(file=io.StringIO(), soft_wrap=False, width=160)
        _render.print_runs_table(runs, out=out)
        return runs

    def pcs_json() -> list:
        runs = Run.get_all_runs()
        json.dumps([_render.run_summary(r) for r in runs], indent=2)
        return runs

    return {
        CLIENT: paged(""),
        CLIENT_FILTERED: paged(pcs_filter),
        FLUENT: fluent,
        PCS_ALL: Run.get_all_runs,
        PCS_TABLE: pcs_table,
        PCS_JSON: pcs_json,
    }


def _run_ids(found: list) -> set[str]:
    return {getattr(r, "identifier", None) or r.info.run_id for r in found}


def bench_in_process(args: argparse.Namespace, uri: str) -> dict[str, Any]:
    import mlflow
    from mlflow import MlflowClient

    from pcs.run import all_experiment_ids

    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    client = MlflowClient()
    experiment_ids = all_experiment_ids(client)
    cases = in_process_cases(experiment_ids)
    # this first listing of each case is the warm-up too (a listing of 50,000 runs takes
    # tens of seconds); only ids and counts are kept, six whole listings held through the
    # timed loop would weigh on memory and on every later case's garbage collection
    counts: dict[str, int] = {}
    ids: dict[str, set[str]] = {}
    for name, fn in cases.items():
        found = fn()
        counts[name], ids[name] = len(found), _run_ids(found)
        del found
    reference = ids[CLIENT]
    samples = time_interleaved(cases, args.repeats, warmup=0)
    timing = {name: summarize(s) for name, s in samples.items()}
    for name in timing:
        timing[name]["x_client"] = round(timing[name]["median_ms"] / timing[CLIENT]["median_ms"], 2)
        timing[name]["x_fluent"] = round(timing[name]["median_ms"] / timing[FLUENT]["median_ms"], 2)
    sample = next(iter(reference))
    layers, engine, http = mlflow_layers(sample)
    calls = {}
    for name, fn in cases.items():
        counted = count_one(fn, layers, engine, http)
        calls[name] = dict(
            counted["snapshot"],
            inside_mlflow_ms=round(counted["inside"] * 1000, 1),
            total_ms=round(counted["total"] * 1000, 1),
        )
    result: dict[str, Any] = {
        "experiments_searched": len(experiment_ids),
        "counts": counts,
        "same_run_ids": all(v == reference for v in ids.values()),
        "timing": timing,
        "calls": calls,
    }
    if args.profile:
        result["profile"] = profile_status(cases[PCS_TABLE], args.profile_top)
    return result


def profile_status(fn: Callable[[], Any], top: int) -> dict[str, Any]:
    """cProfile of one in-process ``pcs status``: functions by cumulative and by own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    raw = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def label(func: tuple) -> str:
        path, line, name = func
        for marker in ("site-packages" + os.sep, "lib" + os.sep + "python"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        if os.sep + "pcs" + os.sep in path:
            path = "pcs" + os.sep + path.split(os.sep + "pcs" + os.sep, 1)[1]
        return f"{path}:{line}({name})"

    def rows(key: int) -> list[dict[str, Any]]:
        ranked = sorted(raw.items(), key=lambda item: item[1][key], reverse=True)[:top]
        return [
            {"function": label(f), "ms": round(v[key] * 1000, 1), "calls": v[1]} for f, v in ranked
        ]

    return {"by_cumulative": rows(3), "by_own": rows(2)}


def bench_cli(args: argparse.Namespace, workdir: Path, uri: str) -> dict[str, Any]:
    """Fresh processes listing the runs, as a user runs them; output piped and checked."""
    script = workdir / "plain_status.py"
    script.write_text(PLAIN_SCRIPT, encoding="utf-8")
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    commands = {
        CLI_TABLE: pcs_command() + ["status"],
        CLI_JSON: pcs_command() + ["status", "--json"],
        CLI_PLAIN: [sys.executable, str(script)],
    }
    lines: dict[str, int] = {}

    def runner(name: str, command: list[str]) -> Callable[[], None]:
        def run() -> None:
            done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
            if name == CLI_JSON:
                lines[name] = len(json.loads(done.stdout))
            else:
                lines[name] = done.stdout.count("\n")

        return run

    samples = time_interleaved(
        {name: runner(name, cmd) for name, cmd in commands.items()}, args.repeats, warmup=1
    )
    timing = {name: summarize(s) for name, s in samples.items()}
    for name in timing:
        timing[name]["x_plain"] = round(
            timing[name]["median_ms"] / timing[CLI_PLAIN]["median_ms"], 2
        )
    return {
        "commands": {name: " ".join(cmd) for name, cmd in commands.items()},
        "output_lines": lines,
        "timing": timing,
    }


def bench_startup(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Start-up of the CLI and of the imports, in fresh processes."""
    return time_startup(workdir, args.repeats)


# -- report --------------------------------------------------------------------------------------


def print_report(results: dict[str, Any]) -> None:
    meta = results["meta"]
    fill = results["fill"]
    print()
    print(
        f"pcs status benchmark, {meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"MLflow {meta['mlflow']}"
    )
    print(
        f"load average at start {meta['load_average_at_start']}, "
        f"at end {meta['load_average_at_end']}"
    )
    source = f"from the cache {fill['from_cache']}" if fill.get("from_cache") else "made now"
    print(
        f"store ({source}): {meta['runs']} runs in {len(fill['experiments'])} experiments: "
        f"{fill['real_pcs_runs']} pcs Run()+end(), {fill['real_component_runs']} component runs, "
        f"{fill['copies']} copies of them ({fill['stale_running_copies']} left RUNNING by a dead "
        f"process), filled by {fill['fill']} in {fill['fill_seconds']:.1f} s"
    )
    for name, t in fill.get("made", {}).items():
        print(f"   {name}: median {t['median_ms']:.1f} ms per run")

    for backend, res in results["backends"].items():
        inproc = res["in_process"]
        print(
            f"\n{backend}: in this process ({meta['repeats']} repeats after 1 warm-up, interleaved)"
        )
        table(
            ["case", "runs", "median ms", "p90 ms", "min ms", "x client", "x fluent"],
            [
                [
                    name,
                    str(inproc["counts"][name]),
                    f"{t['median_ms']:.0f}",
                    f"{t['p90_ms']:.0f}",
                    f"{t['min_ms']:.0f}",
                    f"{t['x_client']:.2f}",
                    f"{t['x_fluent']:.2f}",
                ]
                for name, t in inproc["timing"].items()
            ],
        )
        print(f"   every case listed the same run ids: {yes(inproc['same_run_ids'])}")
        print("   MLflow calls per listing:")
        for name, snap in inproc["calls"].items():
            print(f"     {name}: {_calls_line(snap)}")
        if "profile" in inproc:
            _print_profile(inproc["profile"])
        verdicts = [
            (f"{PCS_ALL} vs {FLUENT}", inproc["timing"][PCS_ALL]["x_fluent"]),
            (f"{PCS_TABLE} vs {FLUENT}", inproc["timing"][PCS_TABLE]["x_fluent"]),
        ]
        cli = res.get("cli")
        if cli:
            _print_cli(backend, cli, meta["repeats"])
            verdicts.append((f"{CLI_TABLE} vs {CLI_PLAIN}", cli["timing"][CLI_TABLE]["x_plain"]))
        for label, ratio in verdicts:
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"   target <= {TARGET_RATIO}x: {verdict} for {label} ({ratio:.2f}x)")

    startup = results.get("startup")
    if startup:
        print(f"\nstart-up (fresh processes, {meta['repeats']} repeats after 1 warm-up)")
        base = startup["timing"]["python -c 'import mlflow'"]["median_ms"]
        table(
            ["command", "median ms", "p90 ms", "min ms", "x import mlflow"],
            [
                [
                    name,
                    f"{t['median_ms']:.0f}",
                    f"{t['p90_ms']:.0f}",
                    f"{t['min_ms']:.0f}",
                    f"{t['median_ms'] / base:.2f}",
                ]
                for name, t in startup["timing"].items()
            ],
        )


def _print_cli(backend: str, cli: dict[str, Any], repeats: int) -> None:
    print(f"\n{backend}: fresh processes, output piped ({repeats} repeats after 1 warm-up)")
    table(
        ["command", "output lines", "median ms", "p90 ms", "min ms", "x plain script"],
        [
            [
                name,
                str(cli["output_lines"].get(name, "-")),
                f"{t['median_ms']:.0f}",
                f"{t['p90_ms']:.0f}",
                f"{t['min_ms']:.0f}",
                f"{t['x_plain']:.2f}",
            ]
            for name, t in cli["timing"].items()
        ],
    )


def _print_profile(prof: dict[str, Any]) -> None:
    print("   cProfile of one in-process 'pcs status', by cumulative time:")
    for row in prof["by_cumulative"]:
        print(f"     {row['ms']:8.1f} ms  x{row['calls']:<7} {row['function']}")
    print("   by own time:")
    for row in prof["by_own"]:
        print(f"     {row['ms']:8.1f} ms  x{row['calls']:<7} {row['function']}")


def _calls_line(snap: dict[str, Any]) -> str:
    top = snap["entries"].get("MlflowClient", {})
    text = ", ".join(f"{k} x{v}" for k, v in top.items())
    if snap.get("http"):
        http = snap["http"]
        text += f"; HTTP {sum(http.values())} requests: " + ", ".join(
            f"{k.replace('/api/2.0/', '')} {v}" for k, v in http.items()
        )
    elif snap.get("sql"):
        sql = snap["sql"]
        statements = sum(v for k, v in sql.items() if k != "COMMIT")
        text += (
            f"; SQL {statements} statements (" + ", ".join(f"{k} {v}" for k, v in sql.items()) + ")"
        )
    return text + f"; {snap['inside_mlflow_ms']:.0f} of {snap['total_ms']:.0f} ms inside MLflow"


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="pcs status over many runs next to a paged mlflow.search_runs "
        "(see benchmarks/README.md)."
    )
    parser.add_argument(
        "--runs", type=int, default=10_000, help="runs in the store (default 10000)"
    )
    parser.add_argument(
        "--experiments", type=int, default=4, help="experiments they are spread over (default 4)"
    )
    parser.add_argument(
        "--pcs-runs", type=int, default=100, help="real pcs Run()+end() among them (default 100)"
    )
    parser.add_argument(
        "--component-runs", type=int, default=20, help="real component runs among them (default 20)"
    )
    parser.add_argument(
        "--stale-runs",
        type=int,
        default=10,
        help="copies left RUNNING by a dead process (default 10)",
    )
    parser.add_argument(
        "--fill",
        choices=["orm", "client"],
        default="orm",
        help="how the copies are made: MLflow's ORM rows, 1000 per transaction (default), "
        "or create_run+log_batch+set_terminated each (minutes)",
    )
    parser.add_argument(
        "--cache", type=Path, help="keep the filled store here and reuse it next time"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case (default 5)")
    parser.add_argument("--backend", choices=["sqlite", "server", "both"], default="both",
                        help="list from the SQLite store, from an mlflow server serving a copy of it, "
                        "or both (default)")  # fmt: skip
    parser.add_argument(
        "--skip-cli", action="store_true", help="leave out the fresh-process listings"
    )
    parser.add_argument(
        "--skip-startup", action="store_true", help="leave out the start-up timings"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile one in-process pcs status"
    )
    parser.add_argument(
        "--profile-top", type=int, default=15, help="functions shown per ranking (default 15)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.experiments < 1 or args.repeats < 1:
        parser.error("--runs, --experiments and --repeats must be at least 1")
    if args.pcs_runs + args.component_runs < 1:
        parser.error("give at least one real pcs run (--pcs-runs or --component-runs) to copy")
    if args.cache is not None:
        args.cache = args.cache.resolve()
    if args.json_out is not None:
        args.json_out = args.json_out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": cpu_count(),
            "load_average_at_start": load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "mlflow": mlflow.__version__,
            "runs": args.runs,
            "repeats": args.repeats,
            "argv": sys.argv[1:],
        },
        "backends": {},
    }
    with workspace("pcs-bench-status-", keep=args.keep) as workdir:
        progress(f"filling a store with {args.runs} runs")
        db, results["fill"] = prepare_store(args, workdir)
        backends = ["sqlite", "server"] if args.backend == "both" else [args.backend]
        for backend in backends:
            server = None
            if backend == "sqlite":
                uri = f"sqlite:///{db}"
                label = "SQLite"
            else:
                served = workdir / "server" / "served.db"
                served.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(db, served)
                progress("starting mlflow server")
                server = MlflowServer(workdir / "server", backend_db=served)
                uri = server.start()
                label = "mlflow server (HTTP, 1 worker)"
            try:
                progress(f"{label}: listing in this process")
                res: dict[str, Any] = {"uri": uri, "in_process": bench_in_process(args, uri)}
                if not args.skip_cli:
                    progress(f"{label}: listing in fresh processes")
                    res["cli"] = bench_cli(args, workdir, uri)
                results["backends"][label] = res
            finally:
                if server is not None:
                    server.stop()
        if not args.skip_startup:
            progress("start-up")
            results["startup"] = bench_startup(args, workdir)
    results["meta"]["load_average_at_end"] = load_average()
    print_report(results)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {args.json_out}")
    listed_same = all(r["in_process"]["same_run_ids"] for r in results["backends"].values())
    if not listed_same:
        print("\nERROR: pcs and plain MLflow listed different runs.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
