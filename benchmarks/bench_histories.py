#!/usr/bin/env python
"""Export, import, publish and pull of a long metric history against plain MLflow, time and peak memory.

Usage::

    PYTHONPATH=. python benchmarks/bench_histories.py [--points 10000 1000000] [--skip import publish pull]
        [--json-out PATH] [--keep]

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
  batches of 1000 into an empty store;
- ``pcs publish``: what ``pcs publish`` does (``export_runs_by_id`` into a
  ``WebRegistry``) to a ``pcs-registry`` server this script starts on
  127.0.0.1 (SQLite spec store and artifacts in the temporary folder, one
  server per point count);
- ``pcs pull``: what ``pcs pull`` does (``import_run`` from that server) into
  an empty store.

Publish and pull are compared with the plain MLflow pair too (publish with
``mlflow export``, pull with ``mlflow import``): moving a run through a server
should cost about what writing it to a file and reading it back costs. For them
the server's peak RSS is reported beside the client's: its ``VmHWM`` from
``/proc``, reset (``clear_refs``) before each step, so each peak is that
step's; its idle RSS after start-up is reported too.

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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
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
elif kind == "pcs_publish":
    from pcs.web_registry import WebRegistry
    registry = WebRegistry(path, token=os.environ["BENCH_REGISTRY_TOKEN"])
    pcs.transfer.export_runs_by_id([run_id], registry, include_artifacts=True)
elif kind == "pcs_pull":
    from pcs.web_registry import WebRegistry
    registry = WebRegistry(path)
    registry.health()
    pcs.transfer.import_run(registry, run_id)
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


TOKEN = "bench-token"


class RegistryServer:
    """A ``pcs-registry serve`` on 127.0.0.1 in ``folder``, whose peak RSS can be read and reset."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = folder / "server.log"
        command = [sys.executable, "-m", "registry.cli", "serve",
                   "--db", f"sqlite:///{folder / 'registry.db'}",
                   "--artifacts", str(folder / "artifacts"),
                   "--host", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1],
                   "--log-level", "warning"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=folder, env={**env, "PCS_REGISTRY_TOKEN": TOKEN},
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the registry server exited:\n{self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            self.stop()
            raise SystemExit(f"the registry server at {self.url} did not answer within 120 s")
        self.idle_mib = self._status_mib("VmRSS")

    def _status_mib(self, field: str) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise SystemExit(f"/proc/{self.process.pid}/status has no {field}")

    def reset_peak(self) -> None:
        """Make ``VmHWM`` start again from the current RSS (Linux >= 4.0)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        return self._status_mib("VmHWM")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT COUNT(*) FROM metrics WHERE key = 'loss'").fetchone()[0])


def _empty_store(template: Path, target: Path) -> str:
    shutil.copy(template, target)
    return f"sqlite:///{target}"


def measure(points: int, work: Path, template: Path, env: dict[str, str],
            skip: set[str]) -> dict[str, dict]:
    source = work / f"source-{points}.db"
    shutil.copy(template, source)
    run_id = _child(MAKE, str(source), str(points), env=env)
    uri = f"sqlite:///{source}"
    out: dict[str, dict] = {}
    bundle, dump = work / f"bundle-{points}", work / f"history-{points}.json"
    out["pcs export"] = json.loads(_child(CHILD, "pcs_export", uri, run_id, str(bundle), env=env))
    out["mlflow export"] = json.loads(_child(CHILD, "mlflow_export", uri, run_id, str(dump), env=env))
    if "import" not in skip:
        target = _empty_store(template, work / f"pcs-import-{points}.db")
        out["pcs import"] = json.loads(_child(CHILD, "pcs_import", target, run_id, str(bundle), env=env))
        target = _empty_store(template, work / f"mlflow-import-{points}.db")
        out["mlflow import"] = json.loads(_child(CHILD, "mlflow_import", target, run_id, str(dump), env=env))
        if _count(work / f"pcs-import-{points}.db") != points:
            raise SystemExit(f"pcs imported {_count(work / f'pcs-import-{points}.db')} of {points} points")
    if "publish" in skip:
        return out
    server = RegistryServer(work / f"registry-{points}", env)
    try:
        child_env = {**env, "BENCH_REGISTRY_TOKEN": TOKEN}
        server.reset_peak()
        out["pcs publish"] = json.loads(_child(CHILD, "pcs_publish", uri, run_id, server.url, env=child_env))
        out["pcs publish"]["server_peak_mib"] = server.peak_mib()
        if "pull" not in skip:
            target = _empty_store(template, work / f"pcs-pull-{points}.db")
            server.reset_peak()
            out["pcs pull"] = json.loads(_child(CHILD, "pcs_pull", target, run_id, server.url, env=env))
            out["pcs pull"]["server_peak_mib"] = server.peak_mib()
        out["server idle"] = {"rss_mib": server.idle_mib}
    finally:
        server.stop()
    if "pull" not in skip and _count(work / f"pcs-pull-{points}.db") != points:
        raise SystemExit(f"pcs pulled {_count(work / f'pcs-pull-{points}.db')} of {points} points")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--skip", nargs="*", default=[], choices=["import", "publish", "pull"],
                        help="leave out steps: import (both sides), publish (and pull: no "
                             "registry server), pull")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pcs-bench-histories-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env.update({"PCS_HOME": str(work / "home"), "MLFLOW_DISABLE_TELEMETRY": "true",
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])})
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        template = work / "template.db"
        _child("import sys; from mlflow import MlflowClient; "
               "MlflowClient(tracking_uri=f'sqlite:///{sys.argv[1]}').search_experiments(); print('ok')",
               str(template), env=env)
        results = {points: measure(points, work, template, env, set(args.skip)) for points in args.points}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load_after = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_after}")
    print("ratio: pcs step's seconds / plain MLflow's (publish against mlflow export: "
          "get_metric_history + JSON file; pull against mlflow import: JSON file + log_batch)")
    print(f"{'points':>10} {'step':<8} {'pcs s':>8} {'mlflow s':>9} {'ratio':>6} "
          f"{'pcs MiB':>8} {'mlflow MiB':>11} {'server MiB':>11}")
    for points, parts in results.items():
        for step, plain in (("export", "export"), ("import", "import"),
                            ("publish", "export"), ("pull", "import")):
            if f"pcs {step}" not in parts:
                continue
            p, m = parts[f"pcs {step}"], parts.get(f"mlflow {plain}")
            server = f"{p['server_peak_mib']:>11.0f}" if "server_peak_mib" in p else f"{'':>11}"
            plain_cells = (f"{m['seconds']:>9.2f} {p['seconds'] / m['seconds']:>6.2f}" if m
                           else f"{'-':>9} {'-':>6}")
            plain_peak = f"{m['peak_mib']:>11.0f}" if m else f"{'-':>11}"
            print(f"{points:>10} {step:<8} {p['seconds']:>8.2f} {plain_cells} {p['peak_mib']:>8.0f} "
                  f"{plain_peak} {server}")
        if "server idle" in parts:
            print(f"{points:>10} (registry server idle after start-up: "
                  f"{parts['server idle']['rss_mib']:.0f} MiB)")
    if args.json_out:
        args.json_out.write_text(json.dumps(
            {"load_before": load_before, "load_after": load_after, "results": results}, indent=1))


if __name__ == "__main__":
    main()
