#!/usr/bin/env python
"""Export and import of a long metric history: pcs bundles against plain MLflow, time and peak memory.

Usage::

    PYTHONPATH=. python benchmarks/bench_histories.py [--points 10000 1000000] [--json-out PATH] [--keep]

For each point count, one run with that many points of one metric is made in
a SQLite store (its points inserted straight into the store's table: logging
a million points through MLflow would take most of the benchmark). Then, each
in a fresh child process whose own time (without interpreter start-up) and
peak RSS (``ru_maxrss``) are reported:

- ``pcs export``: ``pcs.transfer.export_bundle`` of the run (no artifacts);
- ``pcs import``: ``pcs.transfer.import_bundle`` of that bundle into an empty store;
- ``mlflow export``: what a plain MLflow user does: ``get_metric_history``
  and the points written as one JSON file;
- ``mlflow import``: that file read back and logged with ``log_batch`` in
  batches of 1000 into an empty store.

A ratio near 1 says pcs costs what MLflow's own calls cost; a peak that does
not grow from 10k to 1M points says the history was never in memory at once.
Nothing asserts a time. Everything is written in a temporary folder, removed at
the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

MAKE = r"""
import sqlite3, sys
from mlflow import MlflowClient
from mlflow.entities import Metric
db, points = sys.argv[1], int(sys.argv[2])
client = MlflowClient(tracking_uri=f"sqlite:///{db}")
run_id = client.create_run("0", tags={"pcs.run_type": "run"}).info.run_id
client.log_batch(run_id, metrics=[Metric("loss", 0.0, 1_000, 0)])
with sqlite3.connect(db) as con:
    con.executemany(
        "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, 0)",
        (("loss", i * 0.25, 1_000 + i, run_id, i) for i in range(1, points)),
    )
client.set_terminated(run_id)
print(run_id)
"""

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
kind, uri, run_id, path = sys.argv[1:5]
os.environ["MLFLOW_TRACKING_URI"] = uri
import mlflow  # imports are not what is measured
import pcs.transfer
start = time.perf_counter()
if kind == "pcs_export":
    pcs.transfer.export_bundle([run_id], Path(path), include_artifacts=False)
elif kind == "pcs_import":
    pcs.transfer.import_bundle(Path(path))
elif kind == "mlflow_export":
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    with open(path, "w") as fh:
        json.dump([[m.value, m.step, m.timestamp] for m in history], fh)
elif kind == "mlflow_import":
    from mlflow.entities import Metric
    client = mlflow.MlflowClient()
    new_id = client.create_run("0").info.run_id
    with open(path) as fh:
        points = json.load(fh)
    for i in range(0, len(points), 1000):
        client.log_batch(new_id, metrics=[Metric("loss", v, t, s) for v, s, t in points[i:i + 1000]])
    client.set_terminated(new_id)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _child(code: str, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return result.stdout.strip().splitlines()[-1]


def _empty_store(template: Path, target: Path) -> str:
    shutil.copy(template, target)
    return f"sqlite:///{target}"


def measure(points: int, work: Path, template: Path, env: dict[str, str]) -> dict[str, dict]:
    source = work / f"source-{points}.db"
    shutil.copy(template, source)
    run_id = _child(MAKE, str(source), str(points), env=env)
    uri = f"sqlite:///{source}"
    out: dict[str, dict] = {}
    bundle, dump = work / f"bundle-{points}", work / f"history-{points}.json"
    out["pcs export"] = json.loads(_child(CHILD, "pcs_export", uri, run_id, str(bundle), env=env))
    out["mlflow export"] = json.loads(_child(CHILD, "mlflow_export", uri, run_id, str(dump), env=env))
    target = _empty_store(template, work / f"pcs-import-{points}.db")
    out["pcs import"] = json.loads(_child(CHILD, "pcs_import", target, run_id, str(bundle), env=env))
    target = _empty_store(template, work / f"mlflow-import-{points}.db")
    out["mlflow import"] = json.loads(_child(CHILD, "mlflow_import", target, run_id, str(dump), env=env))
    with sqlite3.connect(work / f"pcs-import-{points}.db") as con:
        copied = con.execute("SELECT COUNT(*) FROM metrics WHERE key = 'loss'").fetchone()[0]
    if copied != points:
        raise SystemExit(f"pcs imported {copied} of {points} points")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pcs-bench-histories-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env.update({"PCS_HOME": str(work / "home"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])})
    try:
        template = work / "template.db"
        _child("import sys; from mlflow import MlflowClient; "
               "MlflowClient(tracking_uri=f'sqlite:///{sys.argv[1]}').search_experiments(); print('ok')",
               str(template), env=env)
        results = {points: measure(points, work, template, env) for points in args.points}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'points':>10} {'step':<8} {'pcs s':>8} {'mlflow s':>9} {'ratio':>6} "
          f"{'pcs MiB':>8} {'mlflow MiB':>11}")
    for points, parts in results.items():
        for step in ("export", "import"):
            p, m = parts[f"pcs {step}"], parts[f"mlflow {step}"]
            print(f"{points:>10} {step:<8} {p['seconds']:>8.2f} {m['seconds']:>9.2f} "
                  f"{p['seconds'] / m['seconds']:>6.2f} {p['peak_mib']:>8.0f} {m['peak_mib']:>11.0f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
