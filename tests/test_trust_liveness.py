"""Issue 21.5: on the same host, the process decides whether a run is live, not the heartbeat.

Real child processes, real SIGSTOP/SIGCONT, a real ``pcs cleanup`` (also one
run as "another host" in its own UTS namespace, where the machine allows it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_cli
from mlflow import MlflowClient

from pcs import _keys, _liveness
from pcs.cleanup import cleanup_stale_runs, find_stale_runs

# a run that beats every 0.2 s, then waits for a file before it ends FINISHED
WAITER = """
import sys, time
from pathlib import Path
from pcs import Run
go = Path(sys.argv[1])
with Run(run_name="waiter") as run:
    print(run.identifier, flush=True)
    while not go.exists():
        time.sleep(0.05)
"""


def _start_waiter(tmp_path: Path) -> tuple[subprocess.Popen, str, Path]:
    script = tmp_path / "waiter.py"
    script.write_text(textwrap.dedent(WAITER))
    go = tmp_path / "go"
    env = dict(os.environ, PCS_HEARTBEAT_S="0.2")
    child = subprocess.Popen([sys.executable, str(script), str(go)], stdout=subprocess.PIPE,
                             text=True, env=env)
    run_id = child.stdout.readline().strip()
    assert len(run_id) == 32, run_id
    return child, run_id, go


def _wait_heartbeat_stale(client: MlflowClient, run_id: str) -> None:
    """Until the run's heartbeat is older than three intervals (what cleanup by heartbeat needs)."""
    for _ in range(400):
        tags = client.get_run(run_id).data.tags
        if _liveness.now_ms() - int(tags[_keys.HEARTBEAT]) > 3 * 0.2 * 1000 + 300:
            return
        time.sleep(0.05)
    raise AssertionError("the heartbeat did not go stale")


def _finish(child: subprocess.Popen, go: Path) -> None:
    go.write_text("go")
    assert child.wait(timeout=120) == 0


def test_a_stopped_process_is_live_whatever_its_heartbeat(tmp_path):
    client = MlflowClient()
    child, run_id, go = _start_waiter(tmp_path)
    try:
        tags = client.get_run(run_id).data.tags
        assert tags[_keys.PROCESS_START] == _liveness.process_start(child.pid)
        os.kill(child.pid, signal.SIGSTOP)
        _wait_heartbeat_stale(client, run_id)
        # judged by its heartbeat alone (as from another host) it would look dead...
        other_host = dict(client.get_run(run_id).data.tags, **{_keys.HOST: "elsewhere"})
        assert "no heartbeat" in (_liveness.staleness("RUNNING", other_host) or "")
        # ...but its own process exists, so cleanup leaves it
        assert run_id not in [s.run_id for s in find_stale_runs()]
        assert run_id not in cleanup_stale_runs()
        assert client.get_run(run_id).info.status == "RUNNING"
    finally:
        os.kill(child.pid, signal.SIGCONT)
        _finish(child, go)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _keys.ENDED_BY not in run.data.tags and _keys.REVIVED not in run.data.tags


def _fake_run(client: MlflowClient, pid: int, start: str) -> str:
    """A RUNNING run whose tags say it runs in ``pid`` started at ``start``, beating now."""
    run = client.create_run("0", tags={
        _keys.HOST: _liveness.this_host(), _keys.PID: str(pid), _keys.PROCESS_START: start,
        _keys.HEARTBEAT: str(_liveness.now_ms()), _keys.HEARTBEAT_INTERVAL: "60",
    })
    return run.info.run_id


def test_a_reused_pid_is_another_process(tmp_path):
    client = MlflowClient()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        real = _fake_run(client, sleeper.pid, _liveness.process_start(sleeper.pid))
        reused = _fake_run(client, sleeper.pid, "another-boot/12345")
        # a restarted container: the recorded pid is this very process's pid
        mine = _fake_run(client, os.getpid(), "another-boot/1")
        stale = {s.run_id: s.reason for s in find_stale_runs()}
        assert real not in stale
        assert "is now another process" in stale[reused]
        assert "is now another process" in stale[mine]
        ended = cleanup_stale_runs()
        assert set(ended) == {reused, mine}
        for run_id in (reused, mine):
            run = client.get_run(run_id)
            assert run.info.status == "KILLED"
            assert run.data.tags[_keys.ENDED_BY].startswith("pcs cleanup: its process")
        assert client.get_run(real).info.status == "RUNNING"
    finally:
        sleeper.kill()
        sleeper.wait()
    # once the process is gone, the run is stale too
    assert real in cleanup_stale_runs()


def test_a_run_ended_by_cleanup_that_was_alive_records_it(tmp_path):
    """Cleanup on another host ends a stopped run by its heartbeat; the run notices and goes on."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--uts", "true"],
                                         capture_output=True).returncode != 0:
        pytest.skip("cannot make a UTS namespace here (needs root and unshare) to play another host")
    client = MlflowClient()
    child, run_id, go = _start_waiter(tmp_path)
    try:
        os.kill(child.pid, signal.SIGSTOP)
        _wait_heartbeat_stale(client, run_id)
        other = subprocess.run(
            [unshare, "--uts", "sh", "-c",
             f'hostname other-host && exec "{sys.executable}" -m pcs cleanup --json'],
            capture_output=True, text=True, timeout=300,
        )
        assert other.returncode == 0, other.stderr
        assert run_id in other.stdout
        assert client.get_run(run_id).info.status == "KILLED"
    finally:
        os.kill(child.pid, signal.SIGCONT)
    _finish(child, go)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _keys.ENDED_BY not in run.data.tags
    assert run.data.tags[_keys.REVIVED].startswith("pcs cleanup: no heartbeat")
    status = run_cli("status", run_id)
    assert "FINISHED" in status.stdout


def test_a_run_ends_by_reading_cleanups_verdict_only_once_its_beat_could_have_looked_stale(
    monkeypatch,
):
    """The end of a run reads the run back only when its last heartbeat is half an interval
    old (wall clock): then a verdict another host's cleanup wrote meanwhile is undone; a run
    entered again (``with run:``) keeps what was known of its beat."""
    from mlflow.entities import RunStatus

    from pcs import Run

    client = MlflowClient()
    monkeypatch.setenv(_liveness.HEARTBEAT_ENV, "2")  # no beat of the thread within the test
    run = Run()
    assert not _liveness.cleanup_may_have_ended(run.identifier)
    time.sleep(1.1)  # older than half the interval: cleanup could have judged it by now
    _liveness.register(run.identifier, client)  # as `with run:` does: the creation beat still counts
    assert _liveness.cleanup_may_have_ended(run.identifier)
    # what another host's cleanup writes, done here by hand (its own check would spare us)
    client.set_tag(run.identifier, _keys.ENDED_BY, "pcs cleanup: no heartbeat for 7s (interval 2s)")
    client._tracking_client.store.update_run_info(
        run.identifier, run_status=RunStatus.KILLED, end_time=_liveness.now_ms(), run_name=None
    )
    run.end()
    ended = client.get_run(run.identifier)
    assert ended.info.status == "FINISHED"
    assert _keys.ENDED_BY not in ended.data.tags
    assert ended.data.tags[_keys.REVIVED].startswith("pcs cleanup: no heartbeat")
