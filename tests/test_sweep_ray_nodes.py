"""Sweeps on a real two-node Ray cluster whose second node dies under a trial (issue 19.4, 19.5).

The cluster is real processes on this machine: a head node (1 CPU), started once
for the module, and a second node (1 CPU) per test, each a ``ray start --block``
in a session of its own, with the module's own temp dir, ports and auth token
(nothing of another Ray on the machine is used or touched). Cleanup kills those
sessions and nothing else (never ``ray stop``: it stops every Ray on the
machine, other test runs' too). The test kills the second node's whole session
(raylet, agents, the worker running the trial) with SIGKILL, as a machine that
goes away. The sweep's driver is the ``pcs sweep`` CLI in a child process
connecting with ``--ray-address``: this pytest worker may already hold the
session's in-process Ray (``local_ray``).

Trials are placed by the cluster itself: a trial on the head node holds its
only CPU until a trial has started on the second node, so one of the two
trials must run there; that one writes a marker and sleeps until the test
kills its node.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from conftest import WORK_REGISTRY, free_port, pcs_in_process

from pcs import Run, _keys

REPO_ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))

SOURCE = '''
import os
import time
from pathlib import Path


class Work:
    def fit(self, lr=0.1, folder=""):
        marks = Path(folder)
        if os.environ.get("DOOMED_RAY_NODE"):
            (marks / f"doomed-{lr}").write_text(str(os.getpid()))
            time.sleep(600)  # the test kills this node meanwhile
        # hold this node's only CPU until a trial runs on the doomed node: Ray must place
        # one there (a retry finds the marker and ends at once)
        deadline = time.time() + 300
        while not list(marks.glob("doomed-*")) and time.time() < deadline:
            time.sleep(0.1)
        return lr
'''

STARTED = "Ray runtime started."
WAIT_S = 300.0  # how long a step may take on a loaded machine before the test gives up


class Cluster:
    """A head node; second nodes join it; every process is in a session this test started."""

    def __init__(self) -> None:
        # short: Ray's unix sockets live under it (at most 107 characters a path)
        self.temp = Path(tempfile.mkdtemp(prefix="pcs-ray-", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[subprocess.Popen] = []
        # Ray's workers import this checkout's pcs; the sweep tells them its store and settings
        self.env = _with_this_pcs(
            {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PCS_"))})
        # a token of its own: otherwise `ray start --head` turns token auth on whenever
        # ~/.ray/auth_token exists (any local ray.init() writes one) and the second node,
        # not reading it, is refused
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env.update(self.auth)
        # the head's GCS declares a node dead after 3 missed checks 0.5 s apart (default: 5 x 3 s)
        self.env.update(RAY_health_check_period_ms="500", RAY_health_check_failure_threshold="3",
                        RAY_health_check_initial_delay_ms="0")

    def start_head(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                             f"--dashboard-port={free_port()}"], self.env)

    def add_node(self, name: str, **env: str) -> subprocess.Popen:
        return self._start(name, [f"--address={self.address}"], {**self.env, **env})

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        # every port chosen here: Ray's defaults (8265, 52365, ...) may be another cluster's
        ports = [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
                 f"--dashboard-agent-listen-port={free_port()}",
                 f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]
        log = self.temp / f"{name}.out"
        with open(log, "w") as out:
            process = subprocess.Popen(
                [RAY, "start", *args, *ports, "--num-cpus=1", "--object-store-memory=80000000",
                 "--disable-usage-stats", "--include-log-monitor=false", "--block",
                 f"--temp-dir={self.temp}"],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session: killed as one, and only it
                preexec_fn=_die_with_parent,
            )
        self.sessions.append(process)
        _wait_for(lambda: STARTED in log.read_text() or process.poll() is not None,
                  f"ray start of the {name} node")
        if process.poll() is not None:
            raise RuntimeError(f"ray start of the {name} node failed:\n{log.read_text()[-3000:]}")
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL a node's whole session, as a machine that goes away."""
        _kill_session(process.pid)
        process.wait()

    def stop(self) -> None:
        for process in self.sessions:
            _kill_session(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
        shutil.rmtree(self.temp, ignore_errors=True)


def _with_this_pcs(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))}


def _die_with_parent() -> None:
    """In a child before it runs: SIGKILL it when pytest dies, even by SIGKILL (Linux).

    Best effort for a test run that is killed before its finalizers run: a ``ray
    start --block`` that dies has Ray's reaper stop its node's process group (its
    agents were seen to outlive that once; the finalizers kill whole sessions).
    """
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (a process of ours that started it)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGKILL)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # state ppid pgrp session ...
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {WAIT_S:.0f} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster():
    made = Cluster()
    try:
        made.start_head()
        yield made
    finally:
        made.stop()


@pytest.fixture()
def project(tmp_path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "work.py").write_text(textwrap.dedent(SOURCE))
    (folder / "components.yaml").write_text(WORK_REGISTRY)
    (tmp_path / "marks").mkdir()
    return folder


def _sweep_killing_a_node(cluster: Cluster, project: Path, *options: str):
    """``pcs sweep`` of two trials on the cluster; the second node is killed under its trial.

    Returns the CLI's stdout and stderr, and the ``lr`` of the trial that was on that node.
    """
    doomed = cluster.add_node(f"doomed-{time.monotonic_ns()}", DOOMED_RAY_NODE="1")
    marks = project.parent / "marks"
    child = subprocess.Popen(
        [sys.executable, "-m", "pcs", "sweep", "work", "-r", str(project / "components.yaml"),
         "-e", "fit", "--grid", "work.fit.lr=0.1,0.2", "-a", f"work.fit.folder={marks}",
         "--executor", "ray", "--ray-address", cluster.address, *options],
        env=_with_this_pcs({**os.environ, **cluster.auth}), cwd=project.parent,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    out = err = ""
    try:
        _wait_for(lambda: list(marks.glob("doomed-*")) or child.poll() is not None,
                  "a trial on the doomed node")
        cluster.kill(doomed)
        out, err = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            _kill_session(child.pid)
            out, err = child.communicate()
            print(f"pcs sweep stdout:\n{out}\nstderr:\n{err[-5000:]}")  # shown when it fails
    assert child.returncode == 0, f"stdout:\n{out}\nstderr:\n{err[-5000:]}"
    lost = [p.name.split("-", 1)[1] for p in marks.glob("doomed-*")]
    assert len(lost) == 1, lost
    return out, err, lost[0]


def _sweep_and_trials() -> tuple[Run, dict[str, list[Run]]]:
    runs = Run.get_all_runs()
    sweep = [r for r in runs if r.tags.get(_keys.RUN_TYPE) == "sweep"]
    assert len(sweep) == 1
    by_lr: dict[str, list[Run]] = {}
    for run in sorted((r for r in runs if _keys.TRIAL in r.tags),
                      key=lambda r: int(r.tags.get(_keys.ATTEMPT, "1"))):
        by_lr.setdefault(run.params["work.fit.lr"], []).append(run)
    assert not [r for r in runs if r.status == "RUNNING"]
    return sweep[0], by_lr


def _node_of(run: Run) -> str:
    return run.tags[_keys.RAY_NODE].split()[1]


@pytest.mark.slow
def test_a_trial_whose_node_dies_runs_again_on_the_node_that_lives(cluster, project, capsys):
    out, _, lost = _sweep_killing_a_node(cluster, project, "--max-retries", "1")

    sweep, trials = _sweep_and_trials()
    assert sweep.status == "FINISHED"
    (kept,) = set(trials) - {lost}
    # the trial on the head node ran once; the lost one twice, each attempt with its run
    assert [(r.status, r.tags[_keys.ATTEMPT]) for r in trials[kept]] == [("FINISHED", "1")]
    first, second = trials[lost]
    assert (first.status, first.tags[_keys.ATTEMPT]) == ("FAILED", "1")
    assert (second.status, second.tags[_keys.ATTEMPT]) == ("FINISHED", "2")
    # the lost attempt says which node died; the retry ran on the node that lives
    doomed_node, head_node = _node_of(first), _node_of(trials[kept][0])
    assert doomed_node != head_node
    assert _node_of(second) == head_node
    error = first.tags[_keys.ERROR]
    assert error.startswith("its Ray node ") and f"died (node id {doomed_node}, NodeDiedError)" in error
    # every planned trial finished: the table and the listing say so
    assert "2 trial(s): 2 finished" in out, out
    code, listing, _ = pcs_in_process(capsys, "status")
    assert code == 0 and "sweep of 2 trials" in listing and "failed" not in listing, listing


@pytest.mark.slow
def test_without_retries_the_lost_trial_is_failed_with_the_nodes_death(cluster, project, capsys):
    out, _, lost = _sweep_killing_a_node(cluster, project, "--json")

    sweep, trials = _sweep_and_trials()
    assert sweep.status == "FINISHED"  # one trial finished
    (kept,) = set(trials) - {lost}
    assert [r.status for r in trials[kept]] == ["FINISHED"]
    (failed,) = trials[lost]
    assert failed.status == "FAILED"
    assert f"died (node id {_node_of(failed)}, NodeDiedError)" in failed.tags[_keys.ERROR]
    shown = json.loads(out)  # what Ray says of the dead node went elsewhere
    assert sorted(t["status"] for t in shown["trials"]) == ["FAILED", "FINISHED"], shown
    code, listing, _ = pcs_in_process(capsys, "status")
    assert code == 0 and "sweep of 2 trials (1 finished, 1 failed)" in listing, listing


def test_a_dead_node_is_named_by_its_address_and_id():
    from ray.exceptions import NodeDiedError, WorkerCrashedError

    from pcs.sweep.executors import _ray_reason

    node_id = "444e056051f4afb7a5674d9dfce10b9559a018b4dfb8f32d76eb825a"
    died = NodeDiedError(  # what Ray 2.x says when the node under a task dies
        "Task failed because the node it was running on is dead or unavailable. Node IP: "
        f"10.0.0.5, node ID: {node_id}. This can happen if the node was preempted, had a "
        f"hardware failure, or its raylet crashed unexpectedly. To see node death information, "
        f"use `ray list nodes --filter node_id={node_id}`."
    )
    assert _ray_reason(died) == f"its Ray node 10.0.0.5 died (node id {node_id}, NodeDiedError)"
    assert _ray_reason(WorkerCrashedError()) == (
        "its Ray task failed: WorkerCrashedError: The worker died unexpectedly while executing "
        "this task. Check python-core-worker-*.log files for more information."
    )
