"""No run left RUNNING: signals end runs KILLED, dead runs are told from live ones and cleaned up.

Every test here drives a real child process and sends it real signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run_cli
from mlflow import MlflowClient

import pcs
from pcs import Run, _keys

LIBRARY_SLEEPER = """
import sys, time
from pcs import Run
with Run(run_name="sleeper") as run:
    print(run.identifier, flush=True)
    time.sleep(120)
"""

COMPONENT_SLEEPER = """
import sys, time
from pcs import Component

class Sleeper:
    def sleep(self, seconds=120):
        from pcs import active_component_run
        print(active_component_run(self).identifier, flush=True)
        time.sleep(seconds)

Component.from_class(Sleeper, instantiate=True).run("sleep")
"""

CHAINED_HANDLER = """
import signal, sys, time
from pathlib import Path
from pcs import Run

def mine(signum, frame):
    Path(sys.argv[1]).write_text("handled")
    sys.exit(3)

signal.signal(signal.SIGTERM, mine)
with Run(run_name="chained") as run:
    print(run.identifier, flush=True)
    time.sleep(120)
"""


def start(script: str, *args: str, **popen) -> tuple[subprocess.Popen, str]:
    """Run ``script`` in a child process; return it and the run id it prints first."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )
    line = process.stdout.readline().strip()
    if not line:
        process.kill()
        raise AssertionError(f"the child printed no run id: {process.stderr.read()}")
    return process, line


def finish(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_a_library_run_killed_then_the_process_dies_by_it(signum):
    process, run_id = start(LIBRARY_SLEEPER)
    before = int(time.time() * 1000)

    process.send_signal(signum)

    assert finish(process) == -signum  # the process died by the signal, as without pcs
    run = Run.from_existing_run_id(run_id)
    assert run.status == "KILLED"
    assert run.info.end_time >= before
    assert run.tags[_keys.ENDED_BY] == signal.Signals(signum).name


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_a_component_run_killed_and_leaves_no_temp_files(signum, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    process, run_id = start(COMPONENT_SLEEPER, env={**os.environ, "TMPDIR": str(temp)})

    process.send_signal(signum)

    assert finish(process) == -signum
    run = Run.from_existing_run_id(run_id)
    assert run.status == "KILLED" and run.info.end_time
    assert run.tags[_keys.ENDED_BY] == signal.Signals(signum).name
    assert sorted(p.name for p in temp.iterdir()) == []  # the run's record folder is gone too


def test_sigterm_to_the_cli_ends_its_run_killed(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleeper.py").write_text(textwrap.dedent("""
        import time

        class Sleeper:
            def sleep(self, seconds=120):
                print("started", flush=True)
                time.sleep(seconds)
    """))
    (project / "components.yaml").write_text(textwrap.dedent("""
        repos: {here: {type: local, path: .}}
        components:
          sleeper: {repo: here, file_path: sleeper.py, class_name: Sleeper, instantiate: true}
    """))
    process = subprocess.Popen(
        [sys.executable, "-m", "pcs", "run", "sleeper", "-e", "sleep"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline().strip() == "started"

    process.send_signal(signal.SIGTERM)

    assert finish(process) == -signal.SIGTERM
    (run,) = Run.get_all_runs()
    assert run.status == "KILLED" and run.tags[_keys.ENDED_BY] == "SIGTERM"


def test_the_users_own_handler_still_runs(tmp_path):
    marker = tmp_path / "handled"
    process, run_id = start(CHAINED_HANDLER, str(marker))

    process.send_signal(signal.SIGTERM)

    assert finish(process) == 3  # the user's handler decided how the process ends
    assert marker.read_text() == "handled"
    assert Run.from_existing_run_id(run_id).status == "KILLED"


def test_an_ignored_sighup_stays_ignored():
    # nohup ignores SIGHUP; pcs must not turn it back into a killer
    process, run_id = start(
        LIBRARY_SLEEPER, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    )
    process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert process.poll() is None
    assert Run.from_existing_run_id(run_id).status == "RUNNING"

    process.send_signal(signal.SIGTERM)
    assert finish(process) == -signal.SIGTERM
    assert Run.from_existing_run_id(run_id).status == "KILLED"


def test_every_run_records_where_it_runs_and_a_heartbeat(monkeypatch):
    monkeypatch.setenv("PCS_HEARTBEAT_S", "0.2")
    with Run() as run:
        tags = run.tags
        assert tags[_keys.HOST] and tags[_keys.PID] == str(os.getpid())
        assert tags[_keys.HEARTBEAT_INTERVAL] == "0.2"
        first = int(tags[_keys.HEARTBEAT])
        deadline = time.time() + 10
        while time.time() < deadline:
            if int(run.refresh().tags[_keys.HEARTBEAT]) > first:
                break
            time.sleep(0.1)
        assert int(run.tags[_keys.HEARTBEAT]) > first  # refreshed while it runs
        assert run.stale_reason is None
    beat = int(run.refresh().tags[_keys.HEARTBEAT])
    time.sleep(0.6)
    assert int(run.refresh().tags[_keys.HEARTBEAT]) == beat  # no beats once it ended


def test_logging_does_not_write_heartbeats():
    # the heartbeat is one write per interval (default 60 s), never one per metric
    with Run() as run:
        first = run.tags[_keys.HEARTBEAT]
        for i in range(200):
            run.log_metric("x", i, step=i)
        assert run.refresh().tags[_keys.HEARTBEAT] == first
    assert len(run.metric_history("x")) == 200


def test_a_sigkilled_run_is_stale_and_cleanup_ends_it_killed(tmp_path, cli):
    dead, dead_id = start(LIBRARY_SLEEPER)
    alive, alive_id = start(LIBRARY_SLEEPER)
    dead.send_signal(signal.SIGKILL)
    assert finish(dead) == -signal.SIGKILL

    try:
        assert "gone" in Run.from_existing_run_id(dead_id).stale_reason
        assert Run.from_existing_run_id(alive_id).stale_reason is None
        listing = cli("status", cwd=tmp_path).stdout
        assert "RUNNING (stale)" in listing
        assert pcs.cleanup_stale_runs(dry_run=True) == [dead_id]
        assert Run.from_existing_run_id(dead_id).status == "RUNNING"  # a dry run changes nothing

        out = cli("cleanup", cwd=tmp_path).stdout
        assert dead_id in out and alive_id not in out

        dead_run = Run.from_existing_run_id(dead_id)
        assert dead_run.status == "KILLED"
        assert dead_run.info.end_time == int(dead_run.tags[_keys.HEARTBEAT])  # when it died
        assert "pcs cleanup" in dead_run.tags[_keys.ENDED_BY]
        assert Run.from_existing_run_id(alive_id).status == "RUNNING"  # live runs untouched
        assert pcs.cleanup_stale_runs() == []
    finally:
        alive.send_signal(signal.SIGTERM)
        finish(alive)
    assert Run.from_existing_run_id(alive_id).status == "KILLED"


def _foreign_run(client: MlflowClient, host: str, heartbeat_age_s: float | None,
                 start_age_s: float = 0) -> str:
    now = int(time.time() * 1000)
    tags = {_keys.RUN_TYPE: "run"}
    if heartbeat_age_s is not None:
        tags.update({
            _keys.HOST: host, _keys.PID: "1", _keys.HEARTBEAT_INTERVAL: "60",
            _keys.HEARTBEAT: str(now - int(heartbeat_age_s * 1000)),
        })
    return client.create_run("0", start_time=now - int(start_age_s * 1000), tags=tags).info.run_id


def test_runs_of_other_hosts_are_judged_by_their_heartbeat():
    client = MlflowClient()
    silent = _foreign_run(client, "elsewhere", heartbeat_age_s=200)  # > 3 x 60 s
    beating = _foreign_run(client, "elsewhere", heartbeat_age_s=30)
    no_beat = _foreign_run(client, "elsewhere", heartbeat_age_s=None, start_age_s=7200)

    assert sorted(pcs.cleanup_stale_runs(dry_run=True)) == [silent]
    from datetime import timedelta

    wide = pcs.cleanup_stale_runs(dry_run=True, older_than=timedelta(minutes=10))
    assert sorted(wide) == sorted([silent, no_beat])
    assert sorted(pcs.cleanup_stale_runs(dry_run=True, older_than="10m")) == sorted(wide)
    with pytest.raises(pcs.ArgumentError, match="duration"):
        pcs.cleanup_stale_runs(dry_run=True, older_than="10 minutes")
    # a heartbeat younger than its own interval is never counted, however short the limit
    narrow = pcs.cleanup_stale_runs(dry_run=True, older_than=timedelta(seconds=1))
    assert beating not in narrow

    ended = pcs.cleanup_stale_runs(older_than=timedelta(minutes=10))
    assert sorted(ended) == sorted([silent, no_beat])
    assert client.get_run(beating).info.status == "RUNNING"
    assert client.get_run(silent).info.status == "KILLED"


def test_cleanup_cli_json_and_older_than(tmp_path, cli):
    client = MlflowClient()
    silent = _foreign_run(client, "elsewhere", heartbeat_age_s=500)

    result = cli("cleanup", "--dry-run", "--json", cwd=tmp_path)
    import json

    data = json.loads(result.stdout)
    assert data["dry_run"] is True and [r["run_id"] for r in data["runs"]] == [silent]
    bad = cli("cleanup", "--older-than", "soon", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_bad_heartbeat_interval_is_refused(monkeypatch):
    monkeypatch.setenv("PCS_HEARTBEAT_S", "-1")
    with pytest.raises(pcs.ArgumentError, match="PCS_HEARTBEAT_S"):
        Run()


def test_verify_against_a_killed_original_says_it_never_finished(tmp_path):
    process, run_id = start(COMPONENT_SLEEPER)
    process.send_signal(signal.SIGTERM)
    finish(process)
    original = Run.from_existing_run_id(run_id)
    assert original.status == "KILLED"

    from pcs.verification import compare_runs

    with Run() as other:
        pass
    report = compare_runs(original, other)
    text = str(report)
    assert text.splitlines()[1].startswith("  note: the original run")
    assert "was killed" in text and "never finished" in text
    assert "randomness" not in text


def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path):
    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run_cli("--tracking-uri", url, "status", cwd=tmp_path, check=False)
    elapsed = time.monotonic() - started

    assert result.returncode == 10
    assert elapsed < 15
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and url in lines[0] and "Nothing answered" in lines[0]


def test_unreachable_tracking_server_in_python_is_a_tracking_store_error(monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(pcs.TrackingStoreError, match="Nothing answered"):
        Run()


def test_credentials_in_the_tracking_uri_do_not_reach_the_message(monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:hunter2@127.0.0.1:{free_port()}")
    with pytest.raises(pcs.TrackingStoreError) as info:
        Run()
    assert "hunter2" not in str(info.value)
