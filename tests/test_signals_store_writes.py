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
# process of its own that gets a real signal, without paying 2 s of imports twelve times. The
# zygote prints each writer's pid, then reaps none of them until its stdin closes (so no pid
# the test signals can have been reused), then prints "exit <pid> <code>" as each ends (the
# code as subprocess gives it: -N for signal N). A writer runs WRITER as the last statement of
# this `python -c` program, so the interpreter itself ends it: excepthook, threads joined,
# atexit, death by SIGINT on an uncaught KeyboardInterrupt. It dies with the zygote.
ZYGOTE = """
import os
import signal
import sys
import threading

import mlflow  # noqa: F401
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401

import pcs  # noqa: F401
from pcs._signals import _set_parent_death_signal

if threading.active_count() != 1:
    sys.exit(f"threads before fork: {threading.enumerate()}")
writer, folders = sys.argv[1], sys.argv[2:]
for folder in folders:
    if os.fork() == 0:
        break
else:
    sys.stdin.read()  # the test has sent every signal
    for _ in folders:
        pid, status = os.wait()
        print("exit", pid, os.waitstatus_to_exitcode(status), flush=True)
    sys.exit(0)
_set_parent_death_signal(signal.SIGKILL)
os.setsid()
os.chdir(folder)
os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + os.path.join(folder, "mlflow.db")
os.environ["PCS_HOME"] = os.path.join(folder, "pcs_home")
os.dup2(os.open(os.path.join(folder, "stderr.txt"), os.O_WRONLY | os.O_CREAT, 0o644), 2)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
with open(os.path.join(folder, "pid"), "w") as f:
    f.write(f"{os.getpid()}\\n")
sys.argv = ["-c", os.path.join(folder, "writing")]
exec(compile(writer, "<writer>", "exec"))
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
    failures = []
    with subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, WRITER, *map(str, folders)], env=env, cwd=tmp_path,
        start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as zygote:
        try:
            pids = []
            for attempt, folder in enumerate(folders):
                pid = _wait_for_writer(zygote, folder)
                pids.append(pid)
                if pid is None:
                    continue
                # the attempts land at different points of the loop's writes
                time.sleep(0.013 * attempt)
                os.kill(pid, signum)  # not reaped yet: the pid is still this writer's
            zygote.stdin.close()
            codes = _exit_codes(zygote, timeout=WAIT_S)
        finally:
            zygote.kill()  # the writers die with it (parent-death signal)
    for pid, folder, uri in zip(pids, folders, uris, strict=True):
        stderr = (folder / "stderr.txt").read_text() if (folder / "stderr.txt").exists() else ""
        if pid is None:
            failures.append(f"{folder.name}: the writer never started writing: {stderr}")
            continue
        if pid not in codes:
            failures.append(f"{folder.name}: still running {WAIT_S:g}s after the signal: {stderr}")
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
            failures.append(f"{folder.name}: runs not ended by {name}: {left or writer}: {stderr}")
    assert not failures, f"{len(failures)} of {ATTEMPTS}:\n" + "\n".join(failures)


def _wait_for_writer(zygote: subprocess.Popen, folder: Path) -> int | None:
    """The pid of ``folder``'s writer once it is writing; None when it ended (or the zygote did)."""
    deadline = time.monotonic() + 120
    pid = None
    while time.monotonic() < deadline and zygote.poll() is None:
        if pid is None and (folder / "pid").exists():
            text = (folder / "pid").read_text()
            pid = int(text) if text.endswith("\n") else None
        if pid is not None:
            if (folder / "writing").exists():
                return pid
            if _state(pid) in ("Z", None):  # ended early (a zombie until the zygote reaps it)
                return None
        time.sleep(0.01)
    return None


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


def _exit_codes(zygote: subprocess.Popen, timeout: float) -> dict[int, int]:
    """The writers' exit codes the zygote reports within ``timeout`` seconds: {pid: code}."""
    codes: dict[int, int] = {}

    def read() -> None:
        for line in zygote.stdout:
            _, pid, code = line.split()
            codes[int(pid)] = int(code)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return dict(codes)
