"""A failed or interrupted ``pcs run`` names its run the way a finished one does.

The run id is the last line of stdout, so ``run=$(pcs run ... | tail -n 1)``
captures the id whatever the code printed; stderr ends with the last lines of
the traceback and one line naming the run. Ctrl-C ends the run KILLED and
prints its id too (exit 130).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

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
    def crash(self):
        print("some output of the job")
        raise RuntimeError("the job broke")

    def wait(self, marker):
        print("waiting")
        pathlib.Path(marker).write_text("started")
        time.sleep(120)
"""


def _project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "components.yaml").write_text(COMPONENTS)
    (folder / "job.py").write_text(JOB)
    return folder


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_a_failed_run_prints_its_id_last_on_stdout(tmp_path):
    project = _project(tmp_path)
    script = f"run=$('{sys.executable}' -m pcs run job -e crash | tail -n 1); echo \"id=$run\""
    result = subprocess.run(["bash", "-c", script], cwd=project, env=_env(),
                            capture_output=True, text=True, timeout=600)
    (run,) = Run.get_all_runs()
    assert run.status == "FAILED"
    assert result.stdout.strip() == f"id={run.identifier}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"Error: run {run.identifier} FAILED: RuntimeError: the job broke")
    assert "Traceback (last lines):" in lines and lines[-2] == "RuntimeError: the job broke"
    assert any("job.py" in line and "crash" in line for line in lines)


def test_a_failed_script_prints_its_traceback_once(tmp_path):
    project = _project(tmp_path)
    (project / "bad.py").write_text('print("last output line")\nraise ValueError("boom")\n')
    result = subprocess.run([sys.executable, "-m", "pcs", "run", "bad.py"], cwd=project,
                            env=_env(), capture_output=True, text=True, timeout=600)
    (run,) = Run.get_all_runs()
    assert result.stdout.splitlines()[-1] == run.identifier
    # as python prints it, from the script's frame on, and not again as "last lines"
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "script.py" not in result.stderr and 'bad.py", line 2' in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"Error: run {run.identifier} FAILED")


def test_ctrl_c_prints_the_id_of_the_killed_run(tmp_path):
    project = _project(tmp_path)
    marker = tmp_path / "started"
    child = subprocess.Popen(
        [sys.executable, "-m", "pcs", "run", "job", "-e", "wait", "-a", f"job.wait.marker={marker}"],
        cwd=project, env=_env(), start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        os.killpg(child.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole group
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    (run,) = Run.get_all_runs()
    assert child.returncode == 130
    assert run.status == "KILLED"
    assert stdout.splitlines()[-1] == run.identifier
    assert f"run {run.identifier} ended KILLED" in stderr and "Aborted." not in stderr
