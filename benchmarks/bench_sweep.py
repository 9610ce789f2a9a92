#!/usr/bin/env python
"""What a pcs sweep costs next to the same trials as plain MLflow runs, side by side in one run.

Usage::

    python benchmarks/bench_sweep.py [--trials 200] [--repeat 1] [--skip ray] [--json-out PATH]

Three measurements (benchmarks/README.md explains each), all wall time, end
to end (pool start-up included), on one fresh SQLite store in a temporary
folder (also the working directory and ``PCS_HOME``):

1. ``process``: ``SweepRun.from_component(..., executor="process", max_workers=2)``
   against a ``concurrent.futures.ProcessPoolExecutor(max_workers=2)`` whose
   tasks each record one plain MLflow run (``MlflowClient``: create the run
   nested in a parent run, log the argument and seed as params, the result as
   a metric, end it). Target: pcs <= 1.5x the faster of the plain pool at 1 and
   2 workers, and pcs with 2 workers faster than with 1.
2. ``ray``: ``executor="ray"`` against Ray tasks that each record the same
   plain MLflow run, on one local Ray with 2 CPUs started before either is
   timed. Target: pcs <= 1.3x.
3. ``scaling``: the pcs process executor at 1 and 2 workers (and the plain
   pool at 1 and 2, for reference), for the trivial trials; then for trials
   that compute (``--work-trials`` trials of ``--work-ms`` of CPU each).
   Target: 2 workers >= 1.7x faster than 1 for 100 trials of 200 ms.
4. ``startup``: from the call to the first trial's start, for a sweep in a
   process whose worker server (the zygote) is already up, at 1, 2 and 4
   workers; and once cold (the first process sweep of a process, which starts
   the zygote). Target: <= 0.5 s whatever the worker count.

Every trial runs the same trivial entry point (``x + 1``, logged as a
metric). Nothing leaves this machine: MLflow's telemetry is off.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

PROCESS_TARGET = 1.5
RAY_TARGET = 1.3
WORK_SCALING_TARGET = 1.7
STARTUP_TARGET = 0.5

TRIVIAL_FILE = "trivial_trial.py"
TRIVIAL_SOURCE = '''\
"""A trial that does nothing worth measuring: the benchmark times the sweep, not it."""


class Trivial:
    def fn(self, x=0, work_ms=0):
        import time

        from pcs import active_component_run

        end = time.process_time() + work_ms / 1000
        while time.process_time() < end:  # CPU work, for the scaling of trials that compute
            pass
        active_component_run(self).log_metric("result", x + 1)
        return x + 1
'''


# -- the plain MLflow side ------------------------------------------------------------------------


def plain_trial(uri: str, experiment_id: str, parent_id: str, index: int, x: int, seed: int) -> str:
    """One trial as a user records it by hand: a nested run with params and a metric."""
    import random

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(
        experiment_id,
        tags={"mlflow.parentRunId": parent_id, "trial": str(index)},
        run_name=f"trial {index}",
    )
    run_id = run.info.run_id
    random.seed(seed)
    result = x + 1
    client.log_batch(
        run_id,
        params=[Param("Trivial.fn.x", str(x)), Param("seed", str(seed))],
        metrics=[Metric("result", result, int(time.time() * 1000), 0)],
    )
    client.set_terminated(run_id)
    return run_id


def plain_sweep_pool(uri: str, experiment_id: str, trials: int, workers: int) -> int:
    """The trials as plain MLflow runs, by a concurrent.futures process pool."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.create_run(experiment_id, run_name="plain sweep").info.run_id
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(plain_trial, uri, experiment_id, parent, i, i, i) for i in range(trials)
        ]
        done = [f.result() for f in futures]
    client.set_terminated(parent)
    return len(done)


def plain_sweep_ray(uri: str, experiment_id: str, trials: int) -> int:
    """The trials as plain MLflow runs, one Ray task each."""
    import ray
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parent = client.create_run(experiment_id, run_name="plain ray sweep").info.run_id
    remote = ray.remote(num_cpus=1, max_retries=0)(plain_trial)
    done = ray.get([remote.remote(uri, experiment_id, parent, i, i, i) for i in range(trials)])
    client.set_terminated(parent)
    return len(done)


# -- the pcs side -----------------------------------------------------------------------------------


def pcs_sweep(folder: Path, experiment_id: str, trials: int, executor: str,
              workers: int | None, work_ms: int = 0) -> Any:
    from pcs import Component, LocalRepo
    from pcs.sweep import SweepRun

    component = Component.from_repo(LocalRepo("bench", folder), "Trivial", TRIVIAL_FILE,
                                    class_name="Trivial", instantiate=True)
    return SweepRun.from_component(
        component, "fn", grid={"Trivial.fn.x": list(range(trials))}, seeds=[1],
        arg_set={"Trivial": {"fn": {"work_ms": work_ms}}} if work_ms else None,
        executor=executor, max_workers=workers, experiment_id=experiment_id,
        run_name=f"pcs {executor} x{workers}",
    )


def startup_of(sweep: Any, called_at_ms: float) -> float:
    """Seconds from the call to the start of the sweep's first trial."""
    return (min(r.info.start_time for r in sweep.trials) - called_at_ms) / 1000


def check_pcs(sweep: Any, trials: int) -> float:
    """Check that every trial finished; return the trials' phase (first start to last end), s."""
    summary = sweep.summary()
    if summary.get("FINISHED") != trials or sweep.status != "FINISHED":
        raise SystemExit(f"the pcs sweep did not finish every trial: {summary}")
    runs = sweep.trials
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


# -- the measurements ---------------------------------------------------------------------------------


def measure(folder: Path, uri: str, trials: int, repeat: int, skip: set[str],
            work_trials: int, work_ms: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)

    def experiment(name: str) -> str:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found else client.create_experiment(name)

    out: dict[str, Any] = {"trials": trials, "repeat": repeat, "cases": {}}
    cases = out["cases"]

    def record(name: str, seconds: float, phase: float | None = None) -> None:
        cases.setdefault(name, []).append(round(seconds, 3))
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        out.setdefault("load", {}).setdefault(name, []).append(round(load, 2))
        extra = ""
        if phase is not None:
            out.setdefault("trial_phase", {}).setdefault(name, []).append(round(phase, 3))
            extra = f"  trials {phase:6.2f} s, start-up and results {seconds - phase:5.2f} s"
        print(f"  {name:<32} {seconds:8.2f} s{extra}   (load average {load:.1f})", flush=True)

    if "process" not in skip or "scaling" not in skip:
        # the first process sweep of this process starts the zygote: its start-up, cold
        called = time.time() * 1000
        sweep = pcs_sweep(folder, experiment("pcs-cold"), 2, "process", 2)
        out["startup_cold"] = round(startup_of(sweep, called), 3)
        print(f"  {'start-up, cold (starts the zygote)':<32} {out['startup_cold']:8.2f} s",
              flush=True)
        for r in range(repeat):
            order = ["pcs", "plain"] if r % 2 == 0 else ["plain", "pcs"]
            for side in order:
                for workers in ([2] if "scaling" in skip else [2, 1]):
                    if side == "pcs":
                        seconds, sweep = timed(pcs_sweep, folder, experiment("pcs-process"),
                                               trials, "process", workers)
                        record(f"pcs process x{workers}", seconds, check_pcs(sweep, trials))
                    else:
                        seconds, n = timed(plain_sweep_pool, uri, experiment("plain-pool"),
                                           trials, workers)
                        record(f"plain pool x{workers}", seconds)
    if "startup" not in skip:
        out["startup"] = {}
        for workers in (1, 2, 4):
            for _ in range(max(1, repeat)):
                called = time.time() * 1000
                sweep = pcs_sweep(folder, experiment("pcs-startup"), 4, "process", workers)
                seconds = startup_of(sweep, called)
                out["startup"].setdefault(f"x{workers}", []).append(round(seconds, 3))
                print(f"  {'start-up, zygote up, x' + str(workers):<32} {seconds:8.2f} s", flush=True)
    if "scaling" not in skip and work_trials:
        for r in range(repeat):
            for workers in ([2, 1] if r % 2 == 0 else [1, 2]):
                seconds, sweep = timed(pcs_sweep, folder, experiment("pcs-work"), work_trials,
                                       "process", workers, work_ms)
                record(f"pcs process x{workers}, {work_ms} ms work", seconds,
                       check_pcs(sweep, work_trials))
    if "ray" not in skip:
        import ray

        start = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"  (ray.init: {time.perf_counter() - start:.1f} s, not counted)", flush=True)
        try:
            # one warm-up task each way: Ray starts its worker processes on first use
            pcs_sweep(folder, experiment("warmup"), 2, "ray", None)
            plain_sweep_ray(uri, experiment("warmup"), 2)
            for r in range(repeat):
                order = ["pcs", "plain"] if r % 2 == 0 else ["plain", "pcs"]
                for side in order:
                    if side == "pcs":
                        seconds, sweep = timed(pcs_sweep, folder, experiment("pcs-ray"), trials,
                                               "ray", None)
                        record("pcs ray", seconds, check_pcs(sweep, trials))
                    else:
                        seconds, _ = timed(plain_sweep_ray, uri, experiment("plain-ray"), trials)
                        record("plain ray tasks", seconds)
        finally:
            ray.shutdown()
    return out


def best(values: list[float]) -> float:
    return min(values)


def report(result: dict[str, Any]) -> None:
    cases = result["cases"]
    print()
    print(f"{result['trials']} trials, best of {result['repeat']} (wall time, seconds)")
    rows = [
        ("process, 2 workers", "pcs process x2", "plain pool x2", None),
        ("process, 1 worker", "pcs process x1", "plain pool x1", None),
        ("ray, 2 CPUs", "pcs ray", "plain ray tasks", RAY_TARGET),
    ]
    if "pcs process x2" in cases and "plain pool x1" in cases and "plain pool x2" in cases:
        faster = min(best(cases["plain pool x1"]), best(cases["plain pool x2"]))
        ratio = best(cases["pcs process x2"]) / faster
        print(f"  pcs process x2 / the faster plain pool: {ratio:.2f}x  <= {PROCESS_TARGET}x: "
              f"{'met' if ratio <= PROCESS_TARGET else 'MISSED'}")
        result.setdefault("ratios", {})["process x2 / faster plain pool"] = round(ratio, 3)
    print(f"  {'case':<20} {'pcs':>8} {'plain':>8} {'ratio':>7}  target")
    for label, pcs_key, plain_key, target in rows:
        if pcs_key not in cases or plain_key not in cases:
            continue
        pcs_s, plain_s = best(cases[pcs_key]), best(cases[plain_key])
        ratio = pcs_s / plain_s
        verdict = "" if target is None else f"<= {target}x: {'met' if ratio <= target else 'MISSED'}"
        print(f"  {label:<20} {pcs_s:8.2f} {plain_s:8.2f} {ratio:6.2f}x  {verdict}")
        result.setdefault("ratios", {})[label] = round(ratio, 3)
    phases = result.get("trial_phase", {})
    if "pcs process x1" in cases and "pcs process x2" in cases:
        one, two = best(cases["pcs process x1"]), best(cases["pcs process x2"])
        print(f"  scaling: pcs process 1 -> 2 workers: {one:.2f} s -> {two:.2f} s "
              f"(speed-up {one / two:.2f}x); trials alone: "
              f"{best(phases['pcs process x1']):.2f} s -> {best(phases['pcs process x2']):.2f} s")
        result["scaling_speedup"] = round(one / two, 3)
    if "plain pool x1" in cases and "plain pool x2" in cases:
        one, two = best(cases["plain pool x1"]), best(cases["plain pool x2"])
        print(f"  scaling: plain pool 1 -> 2 workers: {one:.2f} s -> {two:.2f} s "
              f"(speed-up {one / two:.2f}x)")
    work = [k for k in cases if k.endswith("ms work")]
    if len(work) == 2:
        one = best(cases[next(k for k in work if "x1" in k)])
        two = best(cases[next(k for k in work if "x2" in k)])
        k1 = next(k for k in work if "x1" in k)
        k2 = next(k for k in work if "x2" in k)
        p1, p2 = best(phases[k1]), best(phases[k2])
        print(f"  scaling, trials that compute: pcs process 1 -> 2 workers: {one:.2f} s -> "
              f"{two:.2f} s (speed-up {one / two:.2f}x); trials alone: {p1:.2f} s -> "
              f"{p2:.2f} s (speed-up {p1 / p2:.2f}x)")
        result["work_scaling_speedup"] = round(one / two, 3)
        print(f"    >= {WORK_SCALING_TARGET}x: {'met' if one / two >= WORK_SCALING_TARGET else 'MISSED'}")
    if "startup" in result:
        worst = max(best(v) for v in result["startup"].values())
        print(f"  start-up (zygote up), worst of 1/2/4 workers: {worst:.2f} s  <= "
              f"{STARTUP_TARGET} s: {'met' if worst <= STARTUP_TARGET else 'MISSED'}; cold: "
              f"{result.get('startup_cold', float('nan')):.2f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="measure each case this many times")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["process", "ray", "scaling", "startup"])
    parser.add_argument("--work-trials", type=int, default=100,
                        help="trials of the compute-bound scaling case (0 leaves it out)")
    parser.add_argument("--work-ms", type=int, default=200, help="CPU milliseconds per such trial")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix=f"pcs-{os.getpid()}-bench-sweep-"))
    old_cwd = os.getcwd()
    try:
        os.chdir(folder)
        os.environ["PCS_HOME"] = str(folder / "pcs_home")
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        (folder / TRIVIAL_FILE).write_text(TRIVIAL_SOURCE)
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments()  # migrate the schema, untimed
        print(f"pcs sweep benchmark: {args.trials} trials, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}, store {uri}", flush=True)
        result = measure(folder, uri, args.trials, args.repeat, set(args.skip), args.work_trials,
                         args.work_ms)
        report(result)
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform()}
        if args.json_out:
            Path(old_cwd, args.json_out).write_text(json.dumps(result, indent=2))
    finally:
        os.chdir(old_cwd)
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
