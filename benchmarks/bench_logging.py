#!/usr/bin/env python
"""The cost of logging metric points, 10 to 1,000,000 in one run, against plain MLflow.

Usage::

    PYTHONPATH=. python benchmarks/bench_logging.py [--points 10 100 1000 10000 100000 1000000]
        [--repeats 3] [--large-repeats 1] [--sync-max 10000] [--async-max 10000]
        [--json-out PATH] [--keep]

For each point count, four cases each log that many points of one metric,
one point per call, into one run on a SQLite store:

- pcs: ``run = pcs.Run()``, ``run.log_metric("loss", v, step=i)``, ``run.end()``
  (pcs buffers the points and writes them with ``log_batch`` from a
  background thread; ``end`` writes what is left);
- mlflow sync: ``mlflow.start_run()``, ``mlflow.log_metric("loss", v, step=i)``,
  ``mlflow.end_run()``;
- mlflow async: the same with ``synchronous=False`` (MLflow's queue, which by
  default writes each call as its own batch; ``end_run`` waits for it);
- mlflow async buffered: the same with ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1``,
  MLflow's setting that merges what was queued in a second into batches of up
  to 1,000 (what pcs does by default, ``PCS_METRIC_FLUSH_S=1``).

Each case runs in a fresh child process on a fresh copy of an empty store
(imports and opening the store are not timed). The child reports the time to
a durable end (from creating the run until it has ended with every point in
the store), the time spent in the logging loop alone (what the caller waits
for), and its peak RSS (``ru_maxrss``) at the end of the run, beside its RSS
before the run. It then reads the history back (``get_metric_history``) and
the benchmark stops with an error unless it holds exactly the points logged,
in step order, and the run is FINISHED.

Synchronous MLflow logging, and unbuffered async logging (a commit per point
either way), cost milliseconds per point on SQLite, so they are not run above
``--sync-max`` and ``--async-max`` points; the report says so. Cases take
turns, the order rotating. Nothing asserts a time. Everything is written in a
temporary folder, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# switches MLflow's telemetry off before MLflow is imported
from _benchlib import load_average, machine_meta, progress, table, workspace  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent

PCS = "pcs Run.log_metric"
SYNC = "mlflow.log_metric"
ASYNC = "mlflow async (synchronous=False)"
BUFFERED = "mlflow async, buffered 1 s"
CASES = {PCS: "pcs", SYNC: "sync", ASYNC: "async", BUFFERED: "buffered"}

CHILD = r"""
import json, resource, sys, time
case, points = sys.argv[1], int(sys.argv[2])
import mlflow  # imports and opening the store are not what is measured
from mlflow import MlflowClient
import pcs
client = MlflowClient()
client.search_experiments(max_results=1)

def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

before = rss_mib()
start = time.perf_counter()
if case == "pcs":
    run = pcs.Run()
    run_id = run.identifier
    loop = time.perf_counter()
    for i in range(points):
        run.log_metric("loss", i * 0.5, step=i)
    loop = time.perf_counter() - loop
    run.end()
else:
    run_id = mlflow.start_run().info.run_id
    synchronous = case == "sync"
    loop = time.perf_counter()
    for i in range(points):
        mlflow.log_metric("loss", i * 0.5, step=i, synchronous=synchronous)
    loop = time.perf_counter() - loop
    mlflow.end_run()
total = time.perf_counter() - start
peak = rss_mib()
history = client.get_metric_history(run_id, "loss")
wrong = [(i, m.step, m.value) for i, m in enumerate(history) if (m.step, m.value) != (i, i * 0.5)]
print(json.dumps({
    "total_s": total, "loop_s": loop, "rss_before_mib": before, "peak_rss_mib": peak,
    "read_back": len(history), "out_of_order": len(wrong), "first_wrong": wrong[:3],
    "status": client.get_run(run_id).info.status,
}))
"""


def _env(workdir: Path, db: Path, buffered: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    path = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if buffered:
        env["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
    return dict(env, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=f"sqlite:///{db}",
                PCS_HOME=str(workdir / "pcs_home"), PYTHONPATH=path)  # fmt: skip


def _child(code: str, args: list[str], workdir: Path, db: Path) -> str:
    env = _env(workdir, db, buffered=args[:1] == ["buffered"])
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=workdir, env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return (done.stdout.strip().splitlines() or [""])[-1]


def run_case(case: str, points: int, workdir: Path, empty: Path, label: str) -> dict[str, Any]:
    """One case in a fresh process on a fresh copy of the empty store; fails unless all points read back."""
    db = workdir / f"{label}.db"
    shutil.copy(empty, db)
    sample = json.loads(_child(CHILD, [CASES[case], str(points)], workdir, db))
    if sample["read_back"] != points or sample["out_of_order"] or sample["status"] != "FINISHED":
        raise SystemExit(
            f"ERROR: {case} at {points} points: read back {sample['read_back']} points, "
            f"{sample['out_of_order']} not in step order (first {sample['first_wrong']}), "
            f"run {sample['status']}"
        )
    db.unlink()
    return sample


def bench(args: argparse.Namespace, workdir: Path, results: dict[str, Any]) -> None:
    """Every case at every size, into ``results["sizes"]`` (and ``--json-out`` after each size)."""
    empty = workdir / "empty.db"
    _child(
        "from mlflow import MlflowClient; MlflowClient().search_experiments()", [], workdir, empty
    )
    results["sizes"] = sizes = {}
    cap = {SYNC: args.sync_max, ASYNC: args.async_max}
    for n, points in enumerate(args.points):
        cases = [c for c in CASES if points <= cap.get(c, points)]
        repeats = args.repeats if points <= 10_000 else args.large_repeats
        samples: dict[str, list[dict[str, Any]]] = {c: [] for c in cases}
        for r in range(repeats):
            k = (n + r) % len(cases)
            for case in cases[k:] + cases[:k]:
                progress(f"{points} points, {case}, repeat {r + 1}/{repeats}")
                samples[case].append(
                    run_case(case, points, workdir, empty, f"{CASES[case]}-{points}-{r}")
                )
        summaries = {c: _summary(s, points) for c, s in samples.items()}
        for summary in summaries.values():
            summary["pcs_x"] = round(summaries[PCS]["total_s"] / summary["total_s"], 2)
        sizes[str(points)] = {
            "repeats": repeats,
            "not_run": [c for c in CASES if c not in cases],
            "cases": summaries,
            "samples": samples,
        }
        _write(args, results)  # what is measured so far survives a stopped run


def _summary(samples: list[dict[str, Any]], points: int) -> dict[str, Any]:
    total = statistics.median(s["total_s"] for s in samples)
    loop = statistics.median(s["loop_s"] for s in samples)
    return {
        "total_s": round(total, 4),
        "total_min_s": round(min(s["total_s"] for s in samples), 4),
        "total_max_s": round(max(s["total_s"] for s in samples), 4),
        "us_per_point": round(total / points * 1e6, 1),
        "loop_s": round(loop, 4),
        "loop_us_per_point": round(loop / points * 1e6, 1),
        "rss_before_mib": round(statistics.median(s["rss_before_mib"] for s in samples), 1),
        "peak_rss_mib": round(statistics.median(s["peak_rss_mib"] for s in samples), 1),
    }


def print_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    meta = results["meta"]
    print(
        f"\nmetric logging benchmark, {meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"MLflow {meta['mlflow']}, SQLite store; load average at start "
        f"{meta['load_average_at_start']}, at end {meta['load_average_at_end']}"
    )
    print("medians over repeats; total = run created to run ended with every point stored; "
          "loop = the logging calls alone; pcs x = pcs's total / this case's total\n")  # fmt: skip
    rows = []
    for points, res in results["sizes"].items():
        for case, s in res["cases"].items():
            rows.append([
                f"{int(points):,}", case, str(res["repeats"]), f"{s['total_s']:.3f}",
                f"{s['us_per_point']:.1f}", f"{s['loop_s']:.3f}", f"{s['loop_us_per_point']:.1f}",
                f"{s['rss_before_mib']:.0f} -> {s['peak_rss_mib']:.0f}",
                "-" if case == PCS else f"{s['pcs_x']:.2f}",
            ])  # fmt: skip
    table(["points", "case", "n", "total s", "us/point", "loop s", "loop us/pt",
           "RSS MiB before -> peak", "pcs x"], rows)  # fmt: skip
    for case, option in ((SYNC, "--sync-max"), (ASYNC, "--async-max")):
        skipped = [f"{int(p):,}" for p, res in results["sizes"].items() if case in res["not_run"]]
        if skipped:
            print(f"\n   {case} was not run at {', '.join(skipped)} points ({option} "
                  f"{getattr(args, option[2:].replace('-', '_'))}): no numbers for it there.")  # fmt: skip
    print("   every case read back exactly the points logged, in step order, run FINISHED: yes")


def _write(args: argparse.Namespace, results: dict[str, Any]) -> None:
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Logging 10 to 1,000,000 metric points in one run: pcs against plain MLflow "
        "(synchronous, asynchronous, asynchronous buffered), on SQLite (see benchmarks/README.md)."
    )
    parser.add_argument("--points", type=int, nargs="+",
                        default=[10, 100, 1_000, 10_000, 100_000, 1_000_000],
                        help="points per run (default 10 100 1000 10000 100000 1000000)")  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per case up to 10,000 points (default 3)"
    )
    parser.add_argument(
        "--large-repeats", type=int, default=1, help="runs per case above 10,000 (default 1)"
    )
    parser.add_argument("--sync-max", type=int, default=10_000,
                        help="most points for synchronous mlflow.log_metric (default 10000)")  # fmt: skip
    parser.add_argument("--async-max", type=int, default=10_000,
                        help="most points for unbuffered async logging (default 10000)")  # fmt: skip
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if min(args.points) < 1 or args.repeats < 1 or args.large_repeats < 1:
        parser.error("--points, --repeats and --large-repeats must be at least 1")
    args.points = sorted(set(args.points))
    if args.json_out is not None:
        args.json_out = args.json_out.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "meta": machine_meta(mlflow=importlib.metadata.version("mlflow"),
                             sync_max=args.sync_max, async_max=args.async_max),
    }
    with workspace("pcs-bench-logging-", keep=args.keep) as workdir:
        bench(args, workdir, results)
    results["meta"]["load_average_at_end"] = load_average()
    print_report(results, args)
    _write(args, results)
    if args.json_out is not None:
        print(f"\nresults written to {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
