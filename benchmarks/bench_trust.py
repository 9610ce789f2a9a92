#!/usr/bin/env python
"""Metrics through a tracking-server outage, and ``pcs cleanup`` over 1,000 stale runs.

Usage::

    python benchmarks/bench_trust.py [--skip outage cleanup] [--seconds 20] [--stale 1000]
                                     [--repeats 3] [--keep] [--json-out PATH]

``outage``: a real ``mlflow server`` on 127.0.0.1 (SQLite backend in the temp
folder). A ``pcs.Run`` logs a metric every ``--interval`` seconds (default
10 ms) for ``--seconds``; after ``--outage-at`` seconds the server's whole
process group is stopped, and ``--outage`` seconds later it is started again
on the same port. Reported: points per second the caller logged before,
during and after the outage; whether every point arrived in order (the history
read back); how long after the server answered again the points logged before
then were all on the server (polled over plain HTTP, outside MLflow and pcs).
The same with a plain ``mlflow.log_metric`` loop (MLflow's default HTTP
retries), through its own outage.

``cleanup``: a SQLite store with ``--stale`` RUNNING runs of a dead process
(one real ``pcs.Run`` in a child that is SIGKILLed; the rest created with its
exact tags: host, pid, process start, heartbeat) and a few live runs (a child
that keeps its ``pcs.Run`` open). Timed on a fresh copy each time:
``pcs cleanup --dry-run`` and ``pcs cleanup`` (fresh processes),
``pcs.cleanup_stale_runs()`` in-process, and the plain-MLflow reference: a
paged ``search_runs`` of RUNNING runs and ``set_terminated`` for each (in-process
and as a fresh ``python -c``). Afterwards every stale run must be KILLED and the
live ones RUNNING.

A measurement tool, not a test: it asserts nothing. The temporary folder is
removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import (  # noqa: E402
    MlflowServer,
    cpu_count,
    load_average,
    pcs_command,
    progress,
    table,
    workspace,
    yes,
)

PARTS = ("outage", "cleanup")


# -- outage --------------------------------------------------------------------------------------


def _latest_step(url: str, run_id: str, key: str) -> int | None:
    """The newest step of ``key`` on the server (plain HTTP, 1 s timeout), or None if it is down."""
    query = urllib.parse.urlencode({"run_id": run_id})
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/runs/get?{query}", timeout=1) as r:
            run = json.load(r)["run"]
    except OSError:
        return None
    for metric in run.get("data", {}).get("metrics", []):
        if metric["key"] == key:
            return int(metric.get("step", 0))
    return -1


def outage_case(
    kind: str, folder: Path, seconds: float, interval: float, outage_at: float, outage: float
) -> dict[str, Any]:
    """Log a metric through one server outage with pcs (``kind='pcs'``) or plain MLflow."""
    import mlflow
    from mlflow import MlflowClient

    server = MlflowServer(folder / f"server-{kind}")
    progress(f"{kind}: starting mlflow server")
    url = server.start()
    os.environ["MLFLOW_TRACKING_URI"] = url
    mlflow.set_tracking_uri(url)
    key = "x"
    logged: list[float] = []  # perf_counter when each step's call returned
    events: dict[str, float] = {}
    drained: dict[str, Any] = {}
    done = threading.Event()
    run_id_box: list[str] = []

    def controller() -> None:
        time.sleep(outage_at)
        events["stop"] = time.perf_counter()
        server.stop()
        events["stopped"] = time.perf_counter()
        time.sleep(max(0.0, outage - (events["stopped"] - events["stop"])))
        events["restart"] = time.perf_counter()
        server.start()
        events["up"] = time.perf_counter()
        backlog = len(logged)  # points logged before the server answered again
        events["backlog_points"] = backlog
        while not done.is_set():
            step = _latest_step(url, run_id_box[0], key)
            if step is not None and step >= backlog - 1:
                drained["seconds_after_up"] = round(time.perf_counter() - events["up"], 3)
                return
            time.sleep(0.05)

    def loop(log: Any) -> None:
        start = time.perf_counter()
        end_at = start + seconds
        step = 0
        thread = threading.Thread(target=controller, daemon=True)
        events["start"] = start
        thread.start()
        while True:
            now = time.perf_counter()
            # keep logging for at least 5 s after the first call that returned once the server
            # was back (a call that blocks in retries across the restart does not count)
            if now >= end_at and "resumed" in events and now >= events["resumed"] + 5:
                break
            log(step)
            returned = time.perf_counter()
            logged.append(returned)
            if "up" in events and "resumed" not in events and returned > events["up"]:
                events["resumed"] = returned
            step += 1
            time.sleep(interval)
        events["end"] = time.perf_counter()
        thread.join(timeout=120)

    error = None
    try:
        if kind == "pcs":
            from pcs import Run

            with Run(run_name="outage") as run:
                run_id_box.append(run.identifier)
                loop(lambda step: run.log_metric(key, float(step), step=step))
            events["run_ended"] = time.perf_counter()
        else:
            with mlflow.start_run(run_name="outage-plain") as active:
                run_id_box.append(active.info.run_id)
                loop(lambda step: mlflow.log_metric(key, float(step), step=step))
            events["run_ended"] = time.perf_counter()
    except Exception as exc:  # a measurement: say what happened, do not stop the report
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        done.set()
    result: dict[str, Any] = {"kind": kind, "error": error, "points_logged": len(logged)}
    if "up" in events and "stop" in events:
        phases = {
            "before": (events["start"], events["stop"]),
            "during": (events["stop"], events["up"]),
            "after": (events["up"], events.get("end", events["up"])),
        }
        rates = {}
        for name, (a, b) in phases.items():
            n = sum(1 for t in logged if a <= t < b)
            rates[name] = {"points": n, "seconds": round(b - a, 3),
                           "points_per_s": round(n / (b - a), 1) if b > a else None}  # fmt: skip
        result["phases"] = rates
        result["outage_s"] = round(events["up"] - events["stop"], 3)
        result["server_restart_s"] = round(events["up"] - events["restart"], 3)
        result["backlog_points"] = events.get("backlog_points")
        if "resumed" in events:
            result["resumed_s_after_up"] = round(events["resumed"] - events["up"], 3)
        # the longest a single call blocked the caller
        gaps = [b - a for a, b in zip(logged, logged[1:], strict=False)]
        result["longest_call_gap_s"] = round(max(gaps), 3) if gaps else None
        result["median_call_gap_ms"] = round(statistics.median(gaps) * 1000, 3) if gaps else None
    result["drained_s_after_up"] = drained.get("seconds_after_up")
    if "run_ended" in events and "end" in events:
        result["run_end_s"] = round(events["run_ended"] - events["end"], 3)
    if run_id_box and server._process is not None:
        history = MlflowClient(url).get_metric_history(run_id_box[0], key)
        steps = [m.step for m in history]
        by_time = [m.step for m in sorted(history, key=lambda m: (m.timestamp, m.step))]
        result["points_on_server"] = len(history)
        result["all_arrived"] = sorted(steps) == list(range(len(logged)))
        result["in_order"] = by_time == sorted(by_time) and all(
            m.value == float(m.step) for m in history
        )
    server.stop()
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return result


# -- cleanup -------------------------------------------------------------------------------------

VICTIM = r"""
import os, signal, sys
from pcs import Run
run = Run(run_name="stale-0")
run.__enter__()
print(run.identifier, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

LIVE = r"""
import sys, time
from pcs import Run
runs = [Run(run_name=f"live-{i}") for i in range(int(sys.argv[1]))]
for run in runs:
    run.__enter__()
print(" ".join(run.identifier for run in runs), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
for run in reversed(runs):
    run.__exit__(None, None, None)
"""

PLAIN_CLEANUP = r"""
from mlflow import MlflowClient
from mlflow.entities import ViewType
import sys
client = MlflowClient()
keep_pid = globals().get("KEEP_PID") or sys.argv[1]  # in-process: given, else argv
experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
runs, token = [], None
while True:
    page = client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=1000,
                              page_token=token)
    runs.extend(page)
    token = page.token
    if not token:
        break
for run in runs:
    if run.data.tags.get("pcs.pid") != keep_pid:
        client.set_terminated(run.info.run_id, "KILLED")
"""


def _child_env(uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_TRACKING_URI=uri,
               PCS_HOME=os.environ.get("PCS_HOME", ""), PCS_HEARTBEAT_S="3600")  # fmt: skip
    return env


def build_store(
    folder: Path, stale: int, live: int
) -> tuple[Path, list[str], list[str], subprocess.Popen]:
    """The template store: ``stale`` runs of a SIGKILLed process and ``live`` runs of a live one."""
    from mlflow import MlflowClient

    db = folder / "template.db"
    uri = f"sqlite:///{db}"
    env = _child_env(uri)
    progress("cleanup: a pcs run in a child that is SIGKILLed")
    victim = subprocess.run([sys.executable, "-c", VICTIM], env=env, capture_output=True, text=True)
    first = victim.stdout.split()[0]
    client = MlflowClient(uri)
    model = client.get_run(first)
    tags = dict(model.data.tags)
    progress(f"cleanup: {stale - 1} more runs with its tags")
    stale_ids = [first]
    for i in range(1, stale):
        tags["mlflow.runName"] = f"stale-{i}"
        run = client.create_run(model.info.experiment_id, start_time=model.info.start_time, tags=tags,
                                run_name=f"stale-{i}")  # fmt: skip
        stale_ids.append(run.info.run_id)
    progress(f"cleanup: {live} live runs in a child that stays")
    holder = subprocess.Popen([sys.executable, "-c", LIVE, str(live)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None
    live_ids = holder.stdout.readline().split()
    return db, stale_ids, live_ids, holder


def _statuses(uri: str, ids: list[str]) -> dict[str, int]:
    import sqlite3

    path = uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        rows = con.execute("select run_uuid, status from runs").fetchall()
    wanted = set(ids)
    out: dict[str, int] = {}
    for run_id, status in rows:
        if run_id in wanted:
            out[status] = out.get(status, 0) + 1
    return out


def cleanup_cases(folder: Path, stale: int, live: int, repeats: int) -> dict[str, Any]:
    from mlflow import MlflowClient

    db, stale_ids, live_ids, holder = build_store(folder, stale, live)
    holder_pid = str(holder.pid)
    results: dict[str, Any] = {"stale": stale, "live": len(live_ids), "cases": {}}
    try:

        def fresh(tag: str, i: int) -> str:
            copy = folder / f"{tag}-{i}.db"
            shutil.copy(db, copy)
            return f"sqlite:///{copy}"

        def cli(args: list[str]) -> Any:
            def run(uri: str) -> tuple[float, str]:
                start = time.perf_counter()
                proc = subprocess.run(pcs_command() + args, env=_child_env(uri), capture_output=True,
                                      text=True)  # fmt: skip
                took = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-1000:])
                return took, proc.stdout

            return run

        def in_process_pcs(uri: str) -> tuple[float, str]:
            import pcs

            os.environ["MLFLOW_TRACKING_URI"] = uri
            MlflowClient().search_experiments()  # the store's engine made before the clock starts
            start = time.perf_counter()
            ended = pcs.cleanup_stale_runs()
            return time.perf_counter() - start, f"{len(ended)} ended"

        def in_process_plain(uri: str) -> tuple[float, str]:
            os.environ["MLFLOW_TRACKING_URI"] = uri
            MlflowClient().search_experiments()
            start = time.perf_counter()
            exec(compile(PLAIN_CLEANUP, "plain_cleanup", "exec"), {"KEEP_PID": holder_pid})
            return time.perf_counter() - start, ""

        def fresh_plain(uri: str) -> tuple[float, str]:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", PLAIN_CLEANUP, holder_pid], env=_child_env(uri),
                           check=True, capture_output=True)  # fmt: skip
            return time.perf_counter() - start, ""

        cases = {
            "pcs cleanup --dry-run (CLI)": (cli(["cleanup", "--dry-run"]), False),
            "pcs cleanup (CLI)": (cli(["cleanup"]), True),
            "pcs.cleanup_stale_runs() in-process": (in_process_pcs, True),
            "plain MLflow loop, in-process": (in_process_plain, True),
            "plain MLflow loop, python -c": (fresh_plain, True),
        }
        for i in range(repeats):
            for j, (name, (fn, ends)) in enumerate(cases.items()):
                progress(f"cleanup: {name} ({i + 1}/{repeats})")
                uri = fresh(f"c{j}", i)
                took, _ = fn(uri)
                case = results["cases"].setdefault(name, {"seconds": [], "checks": []})
                case["seconds"].append(round(took, 3))
                stale_status = _statuses(uri, stale_ids)
                live_status = _statuses(uri, live_ids)
                case["checks"].append({
                    "stale": stale_status, "live": live_status,
                    "ok": (stale_status == ({"KILLED": stale} if ends else {"RUNNING": stale})
                           and live_status == {"RUNNING": len(live_ids)}),
                })  # fmt: skip
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                Path(uri.removeprefix("sqlite:///")).unlink()
        for case in results["cases"].values():
            case["median_s"] = round(statistics.median(case["seconds"]), 3)
            case["all_ok"] = all(c["ok"] for c in case["checks"])
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.send_signal(signal.SIGKILL)
            holder.wait()
    return results


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Metrics through a tracking-server outage; pcs cleanup over 1,000 stale runs.",
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS, help="parts to leave out")
    parser.add_argument("--seconds", type=float, default=20.0, help="logging time (default 20)")
    parser.add_argument(
        "--interval", type=float, default=0.01, help="pause between points (default 0.01 s)"
    )
    parser.add_argument(
        "--outage-at", type=float, default=5.0, help="stop the server after (default 5 s)"
    )
    parser.add_argument(
        "--outage", type=float, default=5.0, help="start it again after (default 5 s)"
    )
    parser.add_argument("--skip-plain", action="store_true", help="no plain-MLflow outage run")
    parser.add_argument("--stale", type=int, default=1000, help="stale runs (default 1000)")
    parser.add_argument("--live", type=int, default=3, help="live runs (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="tries per cleanup case (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    os.environ.setdefault("PCS_METRIC_FLUSH_S", "1")

    results: dict[str, Any] = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": cpu_count(),
        "load_average_before": load_average(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    with workspace("pcs-bench-trust-", keep=args.keep) as folder:
        if "outage" not in args.skip:
            kinds = ["pcs"] + ([] if args.skip_plain else ["plain"])
            results["outage"] = [
                outage_case(k, folder, args.seconds, args.interval, args.outage_at, args.outage)
                for k in kinds
            ]
        if "cleanup" not in args.skip:
            results["cleanup"] = cleanup_cases(folder, args.stale, args.live, args.repeats)
    results["load_average_after"] = load_average()
    print_report(results)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {args.json_out}")
    return 0


def print_report(results: dict[str, Any]) -> None:
    print(f"\nload average before {results['load_average_before']}, after "
          f"{results['load_average_after']}; {results['cpus']} cpus")  # fmt: skip
    for case in results.get("outage", []):
        print(f"\n{case['kind']}: a metric through a server outage")
        if case.get("error"):
            print(f"   error: {case['error']}")
        phases = case.get("phases", {})
        table(["phase", "points", "seconds", "points/s"], [
            [name, str(p["points"]), f"{p['seconds']:.1f}", str(p["points_per_s"])]
            for name, p in phases.items()
        ])  # fmt: skip
        print(f"   outage {case.get('outage_s')} s (server restart {case.get('server_restart_s')} s); "
              f"longest gap between two calls {case.get('longest_call_gap_s')} s")  # fmt: skip
        print(f"   the first call to return after the restart did so {case.get('resumed_s_after_up')} s "
              "after the server answered")  # fmt: skip
        print(f"   {case.get('backlog_points')} points logged before the server was back were all on it "
              f"{case.get('drained_s_after_up')} s after; end of run took {case.get('run_end_s')} s")  # fmt: skip
        print(f"   logged {case['points_logged']}, on the server {case.get('points_on_server')}: "
              f"all arrived {yes(bool(case.get('all_arrived')))}, in order {yes(bool(case.get('in_order')))}")  # fmt: skip
    cleanup = results.get("cleanup")
    if cleanup:
        print(f"\ncleanup: {cleanup['stale']} stale RUNNING runs, {cleanup['live']} live ones")
        plain = cleanup["cases"].get("plain MLflow loop, in-process", {}).get("median_s")
        plain_fresh = cleanup["cases"].get("plain MLflow loop, python -c", {}).get("median_s")
        rows = []
        for name, case in cleanup["cases"].items():
            ref = plain_fresh if "CLI" in name or "python -c" in name else plain
            ratio = f"{case['median_s'] / ref:.2f}" if ref else "-"
            rows.append([name, f"{case['median_s']:.2f}", " ".join(f"{s:.2f}" for s in case["seconds"]),
                         ratio, yes(case["all_ok"])])  # fmt: skip
        table(["case", "median s", "each", "x plain", "stale KILLED, live RUNNING"], rows)


if __name__ == "__main__":
    raise SystemExit(main())
