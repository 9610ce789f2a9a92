"""A class defined in a script's __main__: the helpers it imports from the script's folder are its closure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import run_cli

from pcs import Run

SCRIPT = """\
from helpers import scale
from pcs import Component


class Agent:
    def run(self, v=3):
        return scale(v)


if __name__ == "__main__":
    run = Component.from_class(Agent, instantiate=True).run_with_arg_set("run", {})
    print(run.identifier)
"""


def recorded_run(tmp_path: Path) -> tuple[Path, str]:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    (project / "helpers.py").write_text("def scale(v):\n    return v * 2\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "train.py"], cwd=project, env=dict(os.environ),
                            capture_output=True, text=True, timeout=600, check=True)
    return project, result.stdout.strip().splitlines()[-1]


def test_the_helpers_of_a_main_class_are_recorded_and_rerun_from_the_record(tmp_path):
    project, run_id = recorded_run(tmp_path)
    run = Run.from_existing_run_id(run_id)
    assert run.return_value == 6
    assert run.run_command.code["Agent:helpers"]["path"] == "helpers.py"
    assert run.grade == "portable"

    (project / "helpers.py").write_text("def scale(v):\n    return v * 100\n", encoding="utf-8")
    rerun = run.rerun(verify=True)

    assert rerun.return_value == 6
    assert rerun.verification.verdict == "reproduced"


def test_a_fresh_process_elsewhere_reruns_a_main_class_after_its_helper_was_deleted(tmp_path):
    project, run_id = recorded_run(tmp_path)
    (project / "helpers.py").unlink()

    result = run_cli("rerun", run_id, "--verify", cwd=tmp_path)

    assert "reproduced" in result.stdout
