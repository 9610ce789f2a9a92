"""Python files a run executes as programs (subprocess, runpy) are in its closure and snapshot."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, ComponentRun, LocalRepo, Run

AGENT = """\
import runpy
import subprocess
import sys
from pathlib import Path


class Agent:
    def run(self, x=2):
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("prepare.py")), str(x)],
            check=True, capture_output=True, text=True,
        )
        return int(out.stdout)

    def report(self):
        return runpy.run_path(str(Path(__file__).parent / "report.py"))["RESULT"]
"""

FILES = {
    "agent.py": AGENT,
    "prepare.py": "import sys\n\nfrom helpers import value\n\nprint(value() * int(sys.argv[1]))\n",
    "report.py": "from helpers import value\n\nRESULT = value() + 1\n",
    "helpers.py": "def value():\n    return 7\n",
}


@pytest.fixture
def folder(tmp_path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in FILES.items():
        (src / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return src


def run_of(folder: Path, entry_point: str) -> ComponentRun:
    component = Component.from_repo(LocalRepo("src", folder), "agent", "agent.py", "Agent",
                                    instantiate=True)
    return component.run_with_arg_set(entry_point, {})


def test_a_script_run_as_a_subprocess_and_its_imports_are_recorded(folder):
    run = run_of(folder, "run")

    assert run.return_value == 14
    code = run.run_command.code
    assert code["agent:@prepare.py"]["path"] == "prepare.py"
    assert "agent:helpers" in code
    assert run.grade == "portable"


def test_the_recorded_rerun_runs_the_recorded_script_and_helper(folder):
    run = run_of(folder, "run")
    (folder / "prepare.py").write_text("print(0)\n")
    (folder / "helpers.py").write_text("def value():\n    return 1\n")

    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == 14
    assert rerun.verification.verdict == "reproduced"


def test_a_changed_script_is_named_as_the_cause(folder):
    run = run_of(folder, "run")
    (folder / "prepare.py").write_text("import sys\n\nprint(int(sys.argv[1]))\n")

    current = Run.from_existing_run_id(run.identifier).rerun(verify=True, code="current")

    assert current.return_value == 2
    assert "code: prepare.py changed" in current.verification.causes


def test_a_fresh_process_reruns_the_script_from_the_record_after_it_was_deleted(folder):
    run = run_of(folder, "run")
    (folder / "prepare.py").unlink()

    result = run_cli("rerun", run.identifier, "--verify")

    assert "reproduced" in result.stdout


def test_a_file_run_with_runpy_is_recorded_and_rerun(folder):
    run = run_of(folder, "report")
    assert run.return_value == 8
    assert "agent:@report.py" in run.run_command.code
    (folder / "report.py").write_text("RESULT = 0\n")

    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == 8
