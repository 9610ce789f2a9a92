"""Issue 21: a signal that lands in the middle of a SQLite store write still ends the run KILLED, at once.

A SIGTERM (or Ctrl-C) raised inside MLflow's SQLAlchemy store left a
connection holding SQLite's write lock; the run's own KILLED end writes then
waited for it for the whole store retry window (``PCS_STORE_RETRY_S``). Each
child process here writes to its own SQLite store in a tight loop from its main
thread (MLflow's ``log_metric``, tags, a small inner run) and gets the signal
at a different moment; every one must die by the signal within seconds, its
runs KILLED with the signal named.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_store
from mlflow import MlflowClient

from pcs import _keys

REPO_ROOT = Path(__file__).resolve().parent.parent
ATTEMPTS = 12
WAIT_S = 60.0  # far below PCS_STORE_RETRY_S below: a child stuck on the lock outlives it

WRITER = '''
import os
import sys

import mlflow

from pcs import Run

marker = sys.argv[1]
with Run(run_name="writer") as run:
    step = 0
    while True:
        for point in range(40):  # MLflow's own writes, in this thread
            mlflow.log_metric("m", point, step=step)
        run.set_tag("step", str(step))
        with Run(run_name=f"inner-{step}") as inner:
            inner.set_tag("x", "y")
        step += 1
        if step == 3:
            with open(marker, "w"):
                pass
'''


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_in_the_middle_of_store_writes_ends_the_runs_killed_at_once(
    tmp_path, template_store, signum
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PCS_STORE_RETRY_S"] = "300"
    children = []
    for attempt in range(ATTEMPTS):
        folder = tmp_path / f"attempt-{attempt}"
        uri = make_store(folder, template_store)
        child_env = dict(env, MLFLOW_TRACKING_URI=uri, PCS_HOME=str(folder / "pcs_home"))
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder / "writing")], env=child_env, cwd=folder,
            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        children.append((child, folder, uri))
    failures = []
    try:
        for attempt, (child, folder, _) in enumerate(children):
            deadline = time.monotonic() + 120
            while not (folder / "writing").exists() and child.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            # the attempts land at different points of the loop's writes
            time.sleep(0.013 * attempt)
            os.kill(child.pid, signum)
        for child, folder, uri in children:
            try:
                _, stderr = child.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                _, stderr = child.communicate()
                failures.append(f"{folder.name}: still running {WAIT_S:g}s after the signal: "
                                f"{stderr}")
                continue
            if child.returncode != -signum:
                failures.append(f"{folder.name}: exit {child.returncode}: {stderr}")
                continue
            runs = MlflowClient(tracking_uri=uri).search_runs(["0"], max_results=1000)
            left = [(r.info.run_name, r.info.status, r.data.tags.get(_keys.ENDED_BY)) for r in runs
                    if r.info.status != "KILLED" and r.info.status != "FINISHED"]
            writer = [r for r in runs if r.info.run_name == "writer"]
            name = signal.Signals(signum).name
            if left or not writer or writer[0].info.status != "KILLED" or (
                writer[0].data.tags.get(_keys.ENDED_BY) != name
            ):
                failures.append(f"{folder.name}: runs not ended by {name}: {left or writer}: "
                                f"{stderr}")
    finally:
        for child, _, _ in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    assert not failures, f"{len(failures)} of {ATTEMPTS}:\n" + "\n".join(failures)
