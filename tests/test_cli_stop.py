"""A single ``pcs run`` or ``pcs rerun`` stopped by SIGTERM or SIGHUP names its run, as Ctrl-C does.

The run ends KILLED; stderr says which run and how to see it and run it again;
its id is the last line of stdout; then the process ends as the signal says.
A stopped sweep rerun names the new sweep and its ``pcs sweep --resume``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, pcs_in_process

from pcs import Run, SweepRun, _keys

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
    def wait(self, marker, hold=None, n=0):
        if hold and not pathlib.Path(hold).exists():
            return n  # the original of a rerun test: only its rerun waits
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
parser.add_argument("--hold")
args = parser.parse_args()
if args.hold and not pathlib.Path(args.hold).exists():
    raise SystemExit(0)  # the original of a rerun test: only its rerun waits
print("waiting")
pathlib.Path(args.marker).write_text("started")
time.sleep(120)
"""


def _project(tmp_path):
    project = tmp_path / "project"
    if not project.exists():
        project.mkdir()
        (project / "components.yaml").write_text(COMPONENTS)
        (project / "job.py").write_text(JOB)
        (project / "wait.py").write_text(SCRIPT)
    return project


def _stop(tmp_path, argv: list[str], signum: int) -> tuple[subprocess.Popen, str, str]:
    """Start ``pcs ARGV`` in a project folder, send ``signum`` once the code runs; its output."""
    project = _project(tmp_path)
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


def _original(tmp_path, monkeypatch, capsys, argv: list[str]) -> str:
    """Run ``pcs ARGV`` (which does not wait: no hold file yet) in the project; the run's id."""
    monkeypatch.chdir(_project(tmp_path))
    code, out, err = pcs_in_process(capsys, *argv)
    assert code == 0, err
    (tmp_path / "hold").write_text("")  # from now on, the code waits
    return out.splitlines()[-1]


@pytest.mark.parametrize("signum, kind", [
    (signal.SIGTERM, "component"),
    (signal.SIGHUP, "script"),
    (signal.SIGINT, "derived"),  # Ctrl-C, to pcs alone
])
def test_a_stopped_rerun_prints_its_new_id_and_how_to_rerun_it(tmp_path, monkeypatch, capsys,
                                                                signum, kind):
    marker, hold = tmp_path / "started", tmp_path / "hold"
    if kind == "script":
        argv = ["run", "wait.py", "--marker", str(marker), "--hold", str(hold)]
    else:
        argv = ["run", "job", "-e", "wait", "-a", f"job.wait.marker={marker}",
                "-a", f"job.wait.hold={hold}"]
    original = _original(tmp_path, monkeypatch, capsys, argv)
    rerun = ["rerun", original] + (["-a", "job.wait.n=1"] if kind == "derived" else [])
    child, stdout, stderr = _stop(tmp_path, rerun, signum)

    (new,) = [r for r in Run.get_all_runs() if r.identifier != original]
    assert new.status == "KILLED"
    assert new.tags.get(_keys.DERIVED_FROM if kind == "derived" else _keys.RERUN_OF) == original
    assert stdout.splitlines()[-1] == new.identifier
    why = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
    assert (f"pcs: {why}; run {new.identifier} ended KILLED. See it with: "
            f"pcs status {new.identifier}; run it again with: pcs rerun {new.identifier}") in stderr
    assert "Traceback" not in stderr
    # Ctrl-C is exit 130; SIGTERM and SIGHUP end the command as the signal does
    assert child.returncode == (130 if signum == signal.SIGINT else -signum), stderr


def test_a_stopped_sweep_rerun_prints_how_to_resume_it(tmp_path, monkeypatch, capsys):
    marker, hold = tmp_path / "started", tmp_path / "hold"
    original = _original(tmp_path, monkeypatch, capsys, [
        "sweep", "job", "-e", "wait", "-a", f"job.wait.marker={marker}",
        "-a", f"job.wait.hold={hold}", "--grid", "job.wait.n=1", "--executor", "serial",
    ])
    child, _, stderr = _stop(tmp_path, ["rerun", original], signal.SIGTERM)

    (new,) = [r for r in Run.get_all_runs()
              if isinstance(r, SweepRun) and r.tags.get(_keys.RERUN_OF) == original]
    assert new.status == "KILLED"
    assert f"pcs sweep --resume {new.identifier}" in stderr, stderr
    assert child.returncode == -signal.SIGTERM, stderr
