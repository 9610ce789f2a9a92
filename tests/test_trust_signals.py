"""Issue 21.4: signals reach the ``pcs rerun --env recorded`` child, and the child dies with pcs.

A component waits for a file; its rerun runs in a rebuilt virtual environment
(a real ``uv``/``pip`` build, offline) in a child process. The test sends the
parent ``pcs rerun`` process real signals and checks the child is gone and its
run ended KILLED, not FINISHED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_isolated import offline, record_used_distributions, wheelhouse  # noqa: F401 - fixtures

from pcs import Component, LocalRepo, _keys, _liveness
from pcs._signals import DIE_WITH_PARENT_ENV

WAITER = """
import os, time
from pathlib import Path


class Waiter:
    def wait(self, folder=""):
        from pcs import active_component_run
        here = Path(folder)
        (here / f"started-{os.getpid()}").write_text(active_component_run(self).identifier)
        while not (here / "go").exists():
            time.sleep(0.05)
        return "done"
"""


@pytest.fixture
def waiting_run(tmp_path, offline):  # noqa: F811 - the fixture imported above
    src = tmp_path / "src"
    src.mkdir()
    (src / "waiter.py").write_text(textwrap.dedent(WAITER))
    box = tmp_path / "box"
    box.mkdir()
    (box / "go").write_text("go")  # the original run does not wait
    component = Component.from_repo(LocalRepo("src", src), "waiter", "waiter.py", "Waiter",
                                    instantiate=True)
    run = component.run_with_arg_set("wait", {"waiter": {"wait": {"folder": str(box)}}}, seed=1)
    record_used_distributions(run, ["os", "time", "pathlib", "pcs"], tmp_path)
    (box / "go").unlink()
    for started in box.glob("started-*"):  # the original's
        started.unlink()
    return run, box


def _start_rerun(run_id: str, box: Path) -> tuple[subprocess.Popen, int, str]:
    """``pcs rerun RUN --env recorded``; returns it, the child's pid and the new run's id."""
    parent = subprocess.Popen([sys.executable, "-m", "pcs", "rerun", run_id, "--env", "recorded"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        started = list(box.glob("started-*"))
        if started and started[0].read_text():
            pid = int(started[0].name.split("-")[1])
            return parent, pid, started[0].read_text()
        if parent.poll() is not None:
            raise AssertionError(f"pcs rerun ended first: {parent.communicate()}")
        time.sleep(0.1)
    parent.kill()
    raise AssertionError("the rerun's child never started its entry point")


def _wait_gone(pid: int) -> None:
    for _ in range(1200):
        if not _liveness.pid_alive(pid) or _zombie(pid):
            return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} is still running")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "exit_code"), [
    (signal.SIGTERM, -signal.SIGTERM), (signal.SIGHUP, -signal.SIGHUP), (signal.SIGINT, 130),
])
def test_a_signal_to_pcs_rerun_reaches_the_child_and_the_rerun_ends_killed(
    waiting_run, signum, exit_code
):
    run, box = waiting_run
    parent, child_pid, new_id = _start_rerun(run.identifier, box)
    parent.send_signal(signum)
    out, err = parent.communicate(timeout=300)
    assert parent.returncode == exit_code, err
    # the child's stop notice reaches the user: the new run's id, last on stdout
    assert out.strip().splitlines()[-1] == new_id, (out, err)
    _wait_gone(child_pid)
    new = MlflowClient().get_run(new_id)
    assert new.info.status == "KILLED"
    assert new.data.tags[_keys.ENDED_BY] == signal.Signals(signum).name
    assert new.data.tags[_keys.RERUN_OF] == run.identifier


@pytest.mark.slow
def test_a_sigkilled_pcs_rerun_leaves_no_child_writing(waiting_run):
    run, box = waiting_run
    parent, child_pid, new_id = _start_rerun(run.identifier, box)
    parent.kill()
    parent.wait()
    _wait_gone(child_pid)
    (box / "go").write_text("go")  # an orphan would now finish its run
    new = MlflowClient().get_run(new_id)
    assert new.info.status == "KILLED"
    assert new.data.tags[_keys.ENDED_BY] == "SIGTERM"


def test_a_child_whose_parent_is_already_gone_ends_at_once(tmp_path):
    """The race: the parent dies before the child asked the kernel to be told."""
    code = "import time; from pcs._signals import die_with_parent; die_with_parent(); time.sleep(60)"
    env = dict(os.environ, **{DIE_WITH_PARENT_ENV: "999999999"})
    child = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert child.returncode == -signal.SIGTERM
