"""Files a run wrote and did not record are named in the verdict (issue 16, point 4).

Real scripts and components in temp folders, run in this process against the test's SQLite
store; the report lists each such file as "written, not recorded" and says what to do.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import pcs
from pcs import Component, LocalRepo
from pcs.verification import compare_runs

PREDICT = """
import argparse
import os
import subprocess
import sys
from pathlib import Path

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--log", action="store_true")
parser.add_argument("--drift", default="")
args = parser.parse_args()
os.makedirs("outputs", exist_ok=True)
with open("outputs/predictions.csv", "w") as f:
    f.write("id,label\\n1,0\\n2,1" + args.drift + "\\n")
Path("scratch.tmp").write_text("gone at the end")
os.remove("scratch.tmp")
# a child process writes next to the script: inotify sees it
subprocess.run([sys.executable, "-c", "open('child_made.txt', 'w').write('c')"],
               cwd=os.path.dirname(os.path.abspath(__file__)), check=True)
print(open("data.txt").read().strip())  # read, not written: an input
mlflow.log_metric("rows", 2)
if args.log:
    mlflow.log_artifact("outputs/predictions.csv")
    mlflow.log_artifact(os.path.join(os.path.dirname(os.path.abspath(__file__)), "child_made.txt"))
"""


@pytest.fixture
def script(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "predict.py").write_text(textwrap.dedent(PREDICT))
    Path("data.txt").write_text("input data\n")  # in the working folder
    return folder / "predict.py"


def test_a_file_written_and_not_logged_is_named_in_the_verdict(script):
    run = pcs.run_script(script, [], seed=1)
    again = run.rerun(verify=True)
    report = again.verification
    assert report.verdict == "reproduced", str(report)
    child = str(script.parent.resolve() / "child_made.txt")
    assert report.written_not_recorded == sorted(["outputs/predictions.csv", child])
    text = str(report)
    assert "written, not recorded: " in text and "outputs/predictions.csv" in text
    assert "mlflow.log_artifact" in text
    # what it read, deleted again, and the store itself are not outputs
    for name in ("data.txt", "scratch.tmp", "mlflow.db"):
        assert not any(name in n for n in report.written_not_recorded)
    assert report.to_dict()["written_not_recorded"] == report.written_not_recorded


def test_a_written_file_that_differs_is_named_not_called_reproduced_silently(script):
    first = pcs.run_script(script, [], seed=1)
    second = pcs.run_script(script, ["--drift", ",extra"], seed=1)
    report = compare_runs(first, second)
    assert "outputs/predictions.csv" in report.written_not_recorded
    assert any(line.startswith("written, not recorded") for line in report.not_compared)


def test_files_the_run_logged_are_compared_not_listed(script):
    run = pcs.run_script(script, ["--log"], seed=1)
    report = compare_runs(run, pcs.run_script(script, ["--log"], seed=1))
    assert report.written_not_recorded == []
    assert not any("written, not recorded" in line for line in report.not_compared)
    assert "2 artifact(s)" in report.compared, report.compared


def test_an_ignored_pattern_leaves_a_written_file_out(script):
    run = pcs.run_script(script, [], seed=1)
    report = compare_runs(run, run, ignore=["outputs/*", "*child_made.txt"])
    assert report.written_not_recorded == []


RETURNS_PATH = """\
from pathlib import Path


class Writer:
    def run(self):
        Path("result.json").write_text('{"acc": 1.0}')
        Path("log.txt").write_text("not returned")
        return "result.json"
"""


def test_a_returned_file_is_compared_and_only_the_others_are_listed(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "writer.py").write_text(RETURNS_PATH)
    component = Component.from_repo(LocalRepo("src", folder), "writer", "writer.py", "Writer",
                                    instantiate=True)
    run = component.run_with_arg_set("run", {}, seed=1)
    report = run.rerun(verify=True).verification
    assert report.verdict == "reproduced", str(report)
    assert "the returned file result.json" in report.compared
    assert report.written_not_recorded == ["log.txt"]
