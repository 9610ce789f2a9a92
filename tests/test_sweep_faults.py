"""Sweeps under faults: SIGTERM and Ctrl-C, crashing workers, several SQLite writers.

Real processes and real signals on the test's SQLite store: a child process
runs the sweep, the test signals it while its trials run, then reads what the
store holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import WORK_REGISTRY

from pcs import Component, LocalRepo, Run, SweepRun, _keys
from pcs._liveness import pid_alive
from pcs.sweep._worker import is_lock_error, retrying

REPO_ROOT = Path(__file__).resolve().parent.parent

WORKLOAD = '''
import os
import time


class Work:
    def nap(self, seconds=0.0, steps=1, exit_code=None):
        from pcs import active_component_run

        run = active_component_run(self)
        if exit_code is not None:
            os._exit(exit_code)
        for step in range(steps):
            run.log_metric("step", step, step=step)
        if seconds >= 60:  # a long nap says when it sleeps: signals in the tests land there
            with open(f"napping-{os.getpid()}-{time.time_ns()}", "w"):
                pass
        deadline = time.time() + seconds
        while time.time() < deadline:
            time.sleep(0.05)
        return steps
'''

CHILD = '''
import sys
from pcs import Component, LocalRepo
from pcs.sweep import SweepRun

folder, executor = sys.argv[1], sys.argv[2]
work = Component.from_repo(LocalRepo("src", folder), "work", "work.py", "Work", instantiate=True)
SweepRun.from_component(work, "nap", grid={"work.nap.seconds": [120, 121, 122]}, seeds=[1],
                        executor=executor, max_workers=2, run_name="signalled")
'''


@pytest.fixture()
def work(tmp_path) -> Component:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "work.py").write_text(textwrap.dedent(WORKLOAD))
    return Component.from_repo(LocalRepo("src", folder), "work", "work.py", "Work", instantiate=True)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _sweep_and_trials() -> tuple[Run | None, list[Run]]:
    runs = Run.get_all_runs()
    sweeps = [r for r in runs if r.tags.get(_keys.RUN_TYPE) == "sweep"]
    trials = [r for r in runs if _keys.TRIAL in r.tags]
    return (sweeps[0] if sweeps else None), trials


@pytest.mark.parametrize(
    ("executor", "signum", "to_group", "running"),
    [
        ("process", signal.SIGTERM, False, 2),
        ("process", signal.SIGINT, True, 2),  # Ctrl-C in a terminal reaches the whole group
        ("serial", signal.SIGTERM, False, 1),
    ],
    ids=["process-SIGTERM", "process-Ctrl-C", "serial-SIGTERM"],
)
def test_a_signal_ends_the_sweep_and_its_trials_killed_and_stops_the_workers(
    work, tmp_path, executor, signum, to_group, running
):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "src"), executor],
        env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        def trials_running():
            # napping: the trials' code runs (a signal in the middle of a store write is
            # another test's matter)
            if len(list(tmp_path.glob("napping-*"))) < running:
                return False
            _, trials = _sweep_and_trials()
            return len([t for t in trials if t.status == "RUNNING"]) >= running

        _wait_for(trials_running, 90, f"{running} running trial(s)")
        if to_group:
            os.killpg(child.pid, signum)
        else:
            os.kill(child.pid, signum)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    stderr = child.stderr.read()

    assert child.returncode == -signum, stderr
    sweep, trials = _sweep_and_trials()
    assert sweep is not None and sweep.status == "KILLED"
    assert sweep.tags[_keys.ENDED_BY] == signal.Signals(signum).name
    assert len(trials) == running
    assert all(t.status == "KILLED" for t in trials), [(t.status, t.tags) for t in trials]
    assert all(t.tags.get(_keys.ENDED_BY) for t in trials)
    pids = {int(t.tags[_keys.PID]) for t in trials}
    if executor == "process":
        assert child.pid not in pids
    _wait_for(lambda: not any(pid_alive(p) for p in pids - {child.pid}), 10, "workers to exit")
    # nothing of the sweep is left RUNNING
    assert not [r for r in Run.get_all_runs() if r.status == "RUNNING"]


def test_a_crashing_worker_fails_only_its_trial(work):
    sweep = SweepRun.from_component(
        work, "nap", grid={"work.nap.steps": [1, 2], "work.nap.exit_code": [None, 3]},
        seeds=[1], executor="process", max_workers=2,
    )

    statuses = [t.status for t in sweep.trials]
    assert statuses == ["FINISHED", "FAILED"] * 2
    for trial in sweep.trials[1::2]:
        assert "died (exit code 3)" in trial.tags[_keys.ERROR]
    assert sweep.status == "FINISHED"
    assert not [r for r in Run.get_all_runs() if r.status == "RUNNING"]


def test_four_sqlite_writers_lose_and_duplicate_no_run(work):
    steps, trials = 15, 16
    sweep = SweepRun.from_component(
        work, "nap", grid={"work.nap.steps": [steps], "work.nap.seconds": [0.0]},
        seeds=list(range(trials)), executor="process", max_workers=4,
    )

    assert sweep.status == "FINISHED"
    everything = sweep.inner_runs
    assert len(everything) == trials  # one run per trial: nothing lost, nothing twice
    assert sorted(int(r.tags[_keys.TRIAL]) for r in everything) == list(range(trials))
    assert all(r.status == "FINISHED" for r in everything)
    assert len({r.tags[_keys.PID] for r in everything}) == 4
    for run in everything:
        assert [m.value for m in run.metric_history("step")] == list(range(steps))
    assert [r["status"] for r in sweep.table()] == ["FINISHED"] * trials
    # the workers' writes took turns on one lock file for this database
    assert len(list((Path(os.environ["PCS_HOME"]) / "locks").glob("sqlite-*.lock"))) == 1


def test_a_write_refused_by_a_locked_sqlite_database_is_retried_until_it_goes_through(tmp_path):
    import sqlite3
    import threading

    db = tmp_path / "locked.db"
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(db, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(db, timeout=0, check_same_thread=False)

    def write() -> int:
        with writer:
            writer.execute("INSERT INTO t VALUES (1)")
        return 1

    with pytest.raises(sqlite3.OperationalError) as refused:
        write()
    assert is_lock_error(refused.value)
    release = threading.Timer(0.5, holder.commit)
    release.start()
    started = time.monotonic()
    assert retrying(write, limit_s=10)() == 1
    assert time.monotonic() - started >= 0.4
    release.join()
    assert writer.execute("SELECT COUNT(*) FROM t").fetchone() == (1,)
    assert not is_lock_error(ValueError("database is fine"))
    with pytest.raises(ZeroDivisionError):
        retrying(lambda: 1 / 0)()


SWALLOWED = '''
import os, signal, sys, time, weakref
from pcs import _signals
from pcs.sweep._worker import signals_not_swallowed

class Thing:
    pass

def callback(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the handler raises here, inside a weakref callback: Python drops it

with _signals.guarded(), signals_not_swallowed():
    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing
    print("still running", flush=True)
    time.sleep(10)
print("slept through it", flush=True)
'''


def test_a_signal_whose_exception_python_swallowed_is_delivered_again():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", SWALLOWED], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == -signal.SIGTERM, result.stderr
    assert "still running" in result.stdout and "slept through it" not in result.stdout
    assert time.monotonic() - started < 9


def test_a_new_sqlite_store_is_created_before_the_workers_open_it(tmp_path):
    """Workers that create a new store together race in its migrations (seen: a half-made
    schema, '_alembic_tmp_experiments already exists'); the sweep makes it first."""
    import sqlite3

    from pcs.sweep.executors import start_executor

    db = tmp_path / "fresh.db"
    uri = f"sqlite:///{db}"
    pool = start_executor("process", trials=2, max_workers=2, tracking_uri=uri, cwd=str(tmp_path))
    try:
        # the workers are still importing MLflow: what is in the file now is the sweep's doing
        tables = {row[0] for row in sqlite3.connect(db).execute(
            "select name from sqlite_master where type = 'table'")}
    finally:
        pool.abort()
    assert {"experiments", "runs", "alembic_version"} <= tables
    assert not any(t.startswith("_alembic_tmp") for t in tables)


FLAKY = '''
import os
from pathlib import Path

# loads of this module by sweep workers (not the sweep's own): the 3rd and 4th die at once,
# before their trial's run exists
if os.getpid() != int(os.environ["PCS_TEST_SWEEP_PID"]):
    _loads = Path(os.environ["PCS_TEST_LOADS"])
    _loads.mkdir(exist_ok=True)
    _mine = len(list(_loads.iterdir())) + 1
    (_loads / str(_mine)).touch()
    if _mine in (3, 4):
        os._exit(7)


class Flaky:
    def fit(self, x=0, crash_once=None):
        marker = Path(crash_once) if crash_once else None
        if marker is not None and not marker.exists():
            marker.touch()
            os._exit(9)  # the worker dies in the middle of the trial, once
        return {"x": x, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
'''


def test_retries_keep_every_attempt_a_trial_that_never_started_has_a_run_and_gpus_are_dealt(
    tmp_path, monkeypatch
):
    from pcs.sweep.executors import gpu_slots

    folder = tmp_path / "flaky"
    folder.mkdir()
    (folder / "flaky.py").write_text(textwrap.dedent(FLAKY))
    monkeypatch.setenv("PCS_TEST_SWEEP_PID", str(os.getpid()))
    monkeypatch.setenv("PCS_TEST_LOADS", str(tmp_path / "loads"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")  # the GPUs the sweep may hand out
    flaky = Component.from_repo(LocalRepo("src", folder), "flaky", "flaky.py", "Flaky",
                                instantiate=True)

    sweep = SweepRun.from_component(
        flaky, "fit", grid={"flaky.fit.x": [0, 1, 2]}, seeds=[1], executor="process",
        max_workers=1, resources={"gpus": 1},
        arg_set={"flaky": {"fit": {"crash_once": str(tmp_path / "crashed")}}}, max_retries=1,
    )

    runs = {r.identifier: r for r in sweep.inner_runs}
    table = sweep.table()
    assert [r["status"] for r in table] == ["FINISHED"] * 3  # one FINISHED run per trial

    def attempts(index: int) -> list[Run]:
        mine = [r for r in runs.values() if r.tags[_keys.TRIAL] == str(index)]
        return sorted(mine, key=lambda r: r.tags[_keys.ATTEMPT])

    # trial 0: its worker died mid-trial; the retry finished, and both attempts are kept
    first, second = attempts(0)
    assert [(r.tags[_keys.ATTEMPT], r.status) for r in (first, second)] == [
        ("1", "FAILED"), ("2", "FINISHED")]
    assert "died (exit code 9)" in first.tags[_keys.ERROR]
    assert sweep.trials[0].identifier == second.identifier
    # trial 1: its first attempt's workers died before its run existed, twice: a run says so
    never, then = attempts(1)
    assert never.status == "FAILED" and "before its run was recorded" in never.tags[_keys.ERROR]
    assert "exit code 7" in never.tags[_keys.ERROR]
    assert never.tags[_keys.RUN_COMMAND_ID] == sweep.spec.trials[1].run_command
    assert then.status == "FINISHED" and sweep.trials[1].identifier == then.identifier
    # one worker at a time, each with a GPU of its own
    assert {t.return_value["gpus"] for t in sweep.trials} <= {"0", "1", "2"}
    assert gpu_slots(2, 1) == ["0", "1"] and gpu_slots(4, 2) == ["0,1"] and gpu_slots(1, 0) == []
    assert json.loads(sweep.tags[_keys.SWEEP_SUMMARY]) == {"FINISHED": 3, "trials": 3}
    assert not [r for r in runs.values() if r.status == "RUNNING"]


def test_code_that_raises_is_retried_only_when_asked(tmp_path):
    listed = tmp_path / "once"
    once = textwrap.dedent('''
        from pathlib import Path

        class Once:
            def go(self, marker=""):
                path = Path(marker)
                if not path.exists():
                    path.touch()
                    raise RuntimeError("first time fails")
                return 1
    ''')
    folder = tmp_path / "once_src"
    folder.mkdir()
    (folder / "once.py").write_text(once)
    comp = Component.from_repo(LocalRepo("src", folder), "once", "once.py", "Once",
                               instantiate=True)

    plain = SweepRun.from_component(comp, "go", arg_set={"once": {"go": {"marker": str(listed)}}},
                                    executor="serial", max_retries=2)
    listed.unlink()
    retried = SweepRun.from_component(comp, "go", arg_set={"once": {"go": {"marker": str(listed)}}},
                                      executor="serial", max_retries=2, retry_exceptions=True)

    assert [t.status for t in plain.trials] == ["FAILED"]  # its code raised: not retried
    assert [t.status for t in retried.trials] == ["FINISHED"]
    assert retried.trials[0].tags[_keys.ATTEMPT] == "2"
    assert len(retried.inner_runs) == 2



@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stopped_pcs_sweep_prints_its_id_and_how_to_resume_it(work, tmp_path, signum):
    (tmp_path / "src" / "components.yaml").write_text(WORK_REGISTRY)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    child = subprocess.Popen(
        [sys.executable, "-m", "pcs", "sweep", "work", "-r", str(tmp_path / "src" / "components.yaml"),
         "-e", "nap", "--grid", "work.nap.seconds=120,121", "--executor", "serial"],
        env=env, cwd=tmp_path, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for(lambda: list(tmp_path.glob("napping-*"))
                  and [t for t in _sweep_and_trials()[1] if t.status == "RUNNING"], 90,
                  "a running trial")
        os.killpg(child.pid, signum)  # Ctrl-C reaches the terminal's whole group
        # read both pipes while waiting: a child blocked on a full pipe never ends
        _, stderr = child.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        pytest.fail(f"pcs sweep did not end after {signum.name}: {child.communicate()}")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()

    sweep, trials = _sweep_and_trials()
    assert sweep is not None and sweep.status == "KILLED"
    assert sweep.tags[_keys.ENDED_BY] == signal.Signals(signum).name
    assert f"pcs sweep --resume {sweep.identifier}" in stderr, stderr
    # SIGTERM ends the command as the signal does; Ctrl-C is exit 130
    assert child.returncode == (-signum if signum == signal.SIGTERM else 130), stderr
