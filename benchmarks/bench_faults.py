#!/usr/bin/env python
"""How long pcs takes to fail against a tracking server that is not there, next to plain MLflow.

Usage::

    python benchmarks/bench_faults.py [--repeats 2] [--plain-cap 30] [--skip-plain] [--json-out PATH]

Two dead servers on 127.0.0.1, each given as ``MLFLOW_TRACKING_URI``:

- ``refused``: a free port where nothing listens (connections are refused);
- ``silent``: a socket that accepts connections and never reads or answers
  (a hung server, or a firewall that swallows packets after the handshake).

Against each, in fresh processes, it times:

- ``pcs status`` (the CLI): wall time of the process, its exit code, and
  whether it printed exactly one line on stderr naming the URI;
- ``Run()`` (the library): the time from the call to the exception, measured
  inside the child (imports left out), the exception's class, and whether its
  message is one line naming the URI;
- plain MLflow with its defaults, for comparison: ``mlflow.start_run()`` and
  ``mlflow.search_runs(search_all_experiments=True)``, stopped at
  ``--plain-cap`` seconds (MLflow retries for minutes by default).

pcs promises to fail in under 15 s with one line that names the URI. Nothing
leaves this machine; the temporary folder is removed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import (  # noqa: E402
    cpu_count,
    free_port,
    load_average,
    pcs_command,
    progress,
    table,
    workspace,
    yes,
)

PROMISE_S = 15.0

# Runs in the child: one call against the dead server, timed from the call
# (imports done first), reported as one JSON line on stdout.
CHILD = r"""
import json, sys, time
what = sys.argv[1]
if what == "pcs Run()":
    import pcs
    call = lambda: pcs.Run()
elif what == "mlflow.start_run()":
    import mlflow
    call = mlflow.start_run
else:
    import mlflow
    call = lambda: mlflow.search_runs(search_all_experiments=True, output_format="list")
print(json.dumps({"started": True}), flush=True)
start = time.perf_counter()
try:
    call()
    outcome = {"error": None}
except BaseException as exc:
    message = str(exc)
    outcome = {"error": type(exc).__name__, "module": type(exc).__module__, "message": message}
outcome["seconds"] = time.perf_counter() - start
print(json.dumps(outcome), flush=True)
"""


class SilentServer:
    """A socket on 127.0.0.1 that accepts connections, then never reads nor answers."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._socket.settimeout(0.2)
        self.port = int(self._socket.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)  # held open, never read

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self._held:
            conn.close()
        self._socket.close()

    @property
    def connections(self) -> int:
        return len(self._held)


def run_child(command: list[str], env: dict[str, str], cwd: Path, cap: float) -> dict[str, Any]:
    """Run a command until it ends or ``cap`` seconds pass; its wall time, exit code and output."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = process.communicate(timeout=cap)
        capped = False
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        capped = True
    return {
        "wall_s": round(time.perf_counter() - start, 3),
        "exit_code": None if capped else process.returncode,
        "capped": capped,
        "stdout": out,
        "stderr": err,
    }


def measure_cli(uri: str, env: dict[str, str], cwd: Path, cap: float) -> dict[str, Any]:
    done = run_child(pcs_command() + ["status"], dict(env, MLFLOW_TRACKING_URI=uri), cwd, cap)
    lines = [line for line in done["stderr"].splitlines() if line.strip()]
    return {
        "seconds": done["wall_s"],
        "capped": done["capped"],
        "exit_code": done["exit_code"],
        "stderr_lines": len(lines),
        "one_line_naming_uri": len(lines) == 1 and uri in lines[0],
        "message": lines[-1] if lines else "",
    }


def measure_call(what: str, uri: str, env: dict[str, str], cwd: Path, cap: float) -> dict[str, Any]:
    command = [sys.executable, "-c", CHILD, what]
    done = run_child(command, dict(env, MLFLOW_TRACKING_URI=uri), cwd, cap)
    lines = [json.loads(line) for line in done["stdout"].splitlines() if line.startswith("{")]
    outcome = lines[-1] if lines and "seconds" in lines[-1] else None
    if outcome is None:
        return {
            "seconds": None,
            "process_s": done["wall_s"],
            "capped": done["capped"],
            "error": None,
            "one_line_naming_uri": False,
            "message": (done["stderr"].strip().splitlines() or [""])[-1][:300],
        }
    message = outcome.get("message") or ""
    return {
        "seconds": round(outcome["seconds"], 3),
        "process_s": done["wall_s"],
        "capped": False,
        "error": outcome["error"] and f"{outcome['module']}.{outcome['error']}",
        "one_line_naming_uri": "\n" not in message.strip() and uri in message,
        "message": message[:300],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time for pcs (and plain MLflow) to fail on a dead tracking server "
        "(see benchmarks/README.md)."
    )
    parser.add_argument("--repeats", type=int, default=2, help="tries per case (default 2)")
    parser.add_argument(
        "--cap", type=float, default=60.0, help="stop a pcs child after this many s (default 60)"
    )
    parser.add_argument(
        "--plain-cap",
        type=float,
        default=30.0,
        help="stop a plain MLflow child after this many s (default 30)",
    )
    parser.add_argument("--skip-plain", action="store_true", help="leave plain MLflow out")
    parser.add_argument("--json-out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cap <= 0 or args.plain_cap <= 0:
        parser.error("--repeats must be at least 1 and the caps positive")

    results: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "cpus": cpu_count(),
            "load_average_at_start": load_average(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "promise_s": PROMISE_S,
            "argv": sys.argv[1:],
        },
        "scenarios": {},
    }
    with workspace("pcs-bench-faults-") as workdir, SilentServer() as silent:
        # MLflow's own retry and timeout defaults, as a user has them
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
        env.update(MLFLOW_DISABLE_TELEMETRY="true", PCS_HOME=str(workdir / "pcs_home"))
        scenarios = {
            "refused (nothing listens)": f"http://127.0.0.1:{free_port()}",
            "silent (accepts, never answers)": f"http://127.0.0.1:{silent.port}",
        }
        for scenario, uri in scenarios.items():
            cases: dict[str, list[dict[str, Any]]] = {"pcs status (CLI)": [], "pcs Run()": []}
            if not args.skip_plain:
                cases["mlflow.start_run()"] = []
                cases["mlflow.search_runs()"] = []
            for attempt in range(args.repeats):
                for name in cases:
                    if attempt > 0 and not name.startswith("pcs") and cases[name][0]["capped"]:
                        continue  # one capped try of plain MLflow says enough
                    progress(f"{scenario}: {name}, try {attempt + 1}")
                    if name == "pcs status (CLI)":
                        cases[name].append(measure_cli(uri, env, workdir, args.cap))
                    else:
                        what = "pcs Run()" if name == "pcs Run()" else name
                        cap = args.cap if name.startswith("pcs") else args.plain_cap
                        cases[name].append(measure_call(what, uri, env, workdir, cap))
            results["scenarios"][scenario] = {"uri": uri, "cases": cases}
        results["silent_connections_held"] = silent.connections
    results["meta"]["load_average_at_end"] = load_average()
    print_report(results, args)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"\nresults written to {args.json_out}")
    kept = all(
        t["seconds"] is not None and t["seconds"] < PROMISE_S and t["one_line_naming_uri"]
        for s in results["scenarios"].values()
        for name, tries in s["cases"].items()
        if name.startswith("pcs")
        for t in tries
    )
    return 0 if kept else 1


def print_report(results: dict[str, Any], args: argparse.Namespace) -> None:
    meta = results["meta"]
    print()
    print(
        f"pcs dead-server benchmark, {meta['date']}, {meta['cpus']} CPUs, Python {meta['python']}"
    )
    print(
        f"load average at start {meta['load_average_at_start']}, "
        f"at end {meta['load_average_at_end']}"
    )
    for scenario, res in results["scenarios"].items():
        print(f"\n{scenario}: {res['uri']}")
        rows = []
        for name, tries in res["cases"].items():
            for t in tries:
                if t["capped"]:
                    cap = args.cap if name.startswith("pcs") else args.plain_cap
                    seconds = f"> {cap:.0f} (stopped)"
                else:
                    seconds = f"{t['seconds']:.2f}" if t["seconds"] is not None else "-"
                extra = (
                    f"exit {t['exit_code']}"
                    if "exit_code" in t
                    else f"process {t['process_s']:.2f} s"
                )
                within = (
                    "-"
                    if not name.startswith("pcs")
                    else yes(t["seconds"] is not None and t["seconds"] < PROMISE_S)
                )
                said = "-" if t["capped"] else yes(t["one_line_naming_uri"])
                rows.append([name, seconds, extra, within, said, t.get("error") or ""])
        table(
            [
                "case",
                "s to fail",
                "",
                f"< {PROMISE_S:.0f} s",
                "one line naming the URI",
                "error",
            ],
            rows,
        )
        messages = {
            t["message"] for name, tries in res["cases"].items() if name.startswith("pcs")
            for t in tries
        }  # fmt: skip
        for message in sorted(messages):
            print(f"   pcs said: {message}")


if __name__ == "__main__":
    sys.exit(main())
