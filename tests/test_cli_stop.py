"""A single ``pcs run`` stopped by SIGTERM or SIGHUP names its run, as Ctrl-C does.

The run ends KILLED; stderr says which run and how to see it and run it again;
its id is the last line of stdout; then the process ends as the signal says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT

from pcs import Run

COMPONENTS = """\
repos:
  here: {type: local, path: .}
components:
  job: {repo: here, file_path: job.py, class_name: Job, instantiate: true}
"""

JOB = """\
import pathlib
import time


class Job:
    def wait(self, marker):
        print("waiting")
        pathlib.Path(marker).write_text("started")
        time.sleep(120)
"""

SCRIPT = """\
import argparse
import pathlib
import time

parser = argparse.ArgumentParser()
parser.add_argument("--marker")
args = parser.parse_args()
print("waiting")
pathlib.Path(args.marker).write_text("started")
time.sleep(120)
"""


def _stop(tmp_path, argv: list[str], signum: int) -> tuple[subprocess.Popen, str, str]:
    """Start ``pcs ARGV`` in a project folder, send ``signum`` once the code runs; its output."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "components.yaml").write_text(COMPONENTS)
    (project / "job.py").write_text(JOB)
    (project / "wait.py").write_text(SCRIPT)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    child = subprocess.Popen([sys.executable, "-m", "pcs", *argv], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = tmp_path / "started"
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                out, err = child.communicate()
                pytest.fail(f"the run never started:\n{out}\n{err}")
            time.sleep(0.2)
        child.send_signal(signum)  # to pcs alone, as a scheduler or `kill PID` sends it
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child, stdout, stderr


@pytest.mark.parametrize("signum, kind", [
    (signal.SIGTERM, "component"),
    (signal.SIGHUP, "script"),
])
def test_a_stopped_run_prints_its_id_and_how_to_rerun_it(tmp_path, signum, kind):
    marker = tmp_path / "started"
    argv = (["run", "job", "-e", "wait", "-a", f"job.wait.marker={marker}"] if kind == "component"
            else ["run", "wait.py", "--marker", str(marker)])
    child, stdout, stderr = _stop(tmp_path, argv, signum)

    (run,) = Run.get_all_runs()
    assert run.status == "KILLED"
    assert child.returncode == -signum  # ended as the signal ends a process
    assert stdout.splitlines()[-1] == run.identifier
    name = signal.Signals(signum).name
    assert (f"pcs: stopped by {name}; run {run.identifier} ended KILLED. See it with: "
            f"pcs status {run.identifier}; run it again with: pcs rerun {run.identifier}") in stderr
    assert "Traceback" not in stderr


def test_a_stopped_run_with_json_keeps_stdout_for_json(tmp_path):
    marker = tmp_path / "started"
    child, stdout, stderr = _stop(
        tmp_path, ["run", "job", "-e", "wait", "-a", f"job.wait.marker={marker}", "--json"],
        signal.SIGTERM,
    )
    (run,) = Run.get_all_runs()
    assert child.returncode == -signal.SIGTERM and run.status == "KILLED"
    assert run.identifier not in stdout  # no JSON was finished, and no bare id either
    assert f"run {run.identifier} ended KILLED" in stderr
