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

import contextlib
import os
import signal
import subprocess
import sys
import threading
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


# One process imports MLflow and pcs once and forks a writer per attempt: each writer is a real
# process of its own that gets a real signal, without paying 2 s of imports twelve times. It
# reads one store folder per line on stdin, answers "<pid>" once that writer runs, and
# "exit <pid> <code>" when it ends (the code as subprocess gives it: -N for signal N).
ZYGOTE = """
import atexit
import os
import signal
import sys
import threading
import traceback

import mlflow  # noqa: F401
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401

import pcs  # noqa: F401

if threading.active_count() != 1:
    sys.exit(f"threads before fork: {threading.enumerate()}")
writer = sys.argv[1]
folders = sys.stdin.read().split()
pids = []
for folder in folders:
    pid = os.fork()
    if pid == 0:
        os.setsid()
        os.chdir(folder)
        os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(folder, "mlflow.db")
        os.environ["PCS_HOME"] = os.path.join(folder, "pcs_home")
        err = os.open(os.path.join(folder, "stderr.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.dup2(err, 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.argv = ["-c", os.path.join(folder, "writing")]
        # the end of an interpreter, as `python -c` has it: atexit handlers, a traceback, and
        # an uncaught KeyboardInterrupt ends the process by SIGINT
        code, interrupted = 1, False
        try:
            exec(compile(writer, "<writer>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            traceback.print_exc()
            interrupted = True
        except BaseException:
            traceback.print_exc()
        finally:
            atexit._run_exitfuncs()
            sys.stderr.flush()
            if interrupted:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
            os._exit(code)
    pids.append(pid)
    print(pid, flush=True)
for _ in pids:
    pid, status = os.wait()
    print("exit", pid, os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_in_the_middle_of_store_writes_ends_the_runs_killed_at_once(
    tmp_path, template_store, signum
):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PCS_STORE_RETRY_S"] = "300"
    folders = [tmp_path / f"attempt-{attempt}" for attempt in range(ATTEMPTS)]
    uris = [make_store(folder, template_store) for folder in folders]
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, WRITER], env=env, cwd=tmp_path, start_new_session=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    zygote.stdin.write("\n".join(str(folder) for folder in folders))
    zygote.stdin.close()
    pids = [int(zygote.stdout.readline()) for _ in folders]
    failures = []
    try:
        for attempt, (pid, folder) in enumerate(zip(pids, folders, strict=True)):
            deadline = time.monotonic() + 120
            while not (folder / "writing").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            # the attempts land at different points of the loop's writes
            time.sleep(0.013 * attempt)
            os.kill(pid, signum)
        codes = _exit_codes(zygote, len(pids), timeout=WAIT_S)
        for pid, folder, uri in zip(pids, folders, uris, strict=True):
            stderr = (folder / "stderr.txt").read_text()
            if pid not in codes:
                failures.append(f"{folder.name}: still running {WAIT_S:g}s after the signal: "
                                f"{stderr}")
                continue
            if codes[pid] != -signum:
                failures.append(f"{folder.name}: exit {codes[pid]}: {stderr}")
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
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(zygote.pid, signal.SIGKILL)
        zygote.wait()
    assert not failures, f"{len(failures)} of {ATTEMPTS}:\n" + "\n".join(failures)


def _exit_codes(zygote: subprocess.Popen, count: int, timeout: float) -> dict[int, int]:
    """The writers' exit codes the zygote reports within ``timeout`` seconds: {pid: code}."""
    codes: dict[int, int] = {}
    reader = threading.Thread(target=lambda: codes.update(
        (int(pid), int(code)) for _, pid, code in (line.split() for line in zygote.stdout)
    ), daemon=True)
    reader.start()
    reader.join(timeout)
    return dict(codes)
