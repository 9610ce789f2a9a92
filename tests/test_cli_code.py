"""A run's recorded code, browsable under the files' own paths: ``pcs/code/<path>`` in the
run's artifacts (what MLflow's UI shows), and ``pcs code RUN [PATH]`` on the command line.

Each file is stored once per run; reruns of recorded code read it back, and so
do runs recorded before, whose snapshot is ``pcs/source/<sha256>.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import pcs_in_process
from mlflow import MlflowClient

from pcs import Component, LocalRepo, Run
from pcs.record.code import code_file_paths
from pcs.specs import sha256_bytes

AGENT = "from pkg.helpers import double\n\n\nclass Agent:\n    def run(self, x=2):\n        return double(x)\n"
HELPERS = "def double(x):\n    return 2 * x\n"


pcs = pcs_in_process


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    (folder / "pkg").mkdir(parents=True)
    (folder / "agent.py").write_text(AGENT)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "helpers.py").write_text(HELPERS)
    return folder


def _run(folder: Path) -> Run:
    agent = Component.from_repo(LocalRepo("here", folder), "agent", "agent.py", "Agent",
                                instantiate=True)
    return agent.run_with_arg_set("run", {"agent": {"run": {"x": 3}}}, seed=1)


def _files(run_id: str, folder: str) -> list[str]:
    client, out, todo = MlflowClient(), [], [folder]
    while todo:
        for item in client.list_artifacts(run_id, todo.pop()):
            (todo.append(item.path) if item.is_dir else out.append(item.path))
    return sorted(out)


def test_the_code_is_stored_once_under_its_own_paths_and_reruns_from_there(project):
    run = _run(project)
    assert _files(run.identifier, "pcs/code") == [
        "pcs/code/agent.py", "pcs/code/pkg/__init__.py", "pcs/code/pkg/helpers.py",
    ]
    assert _files(run.identifier, "pcs/source") == []  # no second copy by sha256
    assert run.load_text("pcs/code/pkg/helpers.py") == HELPERS

    (project / "pkg" / "helpers.py").write_text("def double(x):\n    return 3 * x\n")
    again = run.rerun(verify=True)  # the recorded snapshot runs, not the edited file
    assert again.verification.reproduced and again.return_value == 6


def test_runs_of_the_same_code_keep_their_own_snapshot_when_a_file_is_uploaded_again(project, tmp_path):
    # on a local store the snapshot is hard-linked, so runs of the same text share a file:
    # a later upload to the same path replaces it and never writes into it
    first, second = _run(project), _run(project)
    staged = tmp_path / "staged" / "code"
    staged.mkdir(parents=True)
    (staged / "agent.py").write_text("changed\n")

    second._log_staged(staged.parent, "pcs")

    assert second.load_text("pcs/code/agent.py") == "changed\n"
    assert first.load_text("pcs/code/agent.py") == AGENT
    assert _run(project).load_text("pcs/code/agent.py") == AGENT


def test_pcs_code_lists_the_files_and_prints_one(project, capsys):
    run = _run(project)
    code, out, _ = pcs(capsys, "code", run.identifier)
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert [row[:2] for row in rows] == [
        ["agent.py", "agent"], ["pkg/__init__.py", "agent:pkg"], ["pkg/helpers.py", "agent:pkg.helpers"],
    ]
    assert rows[2][2] == sha256_bytes(HELPERS.encode())[:12]

    code, out, _ = pcs(capsys, "code", run.identifier, "pkg/helpers.py")
    assert code == 0 and out == HELPERS
    code, out, _ = pcs(capsys, "code", run.identifier, "./agent.py", "--json")
    assert code == 0 and json.loads(out)["text"] == AGENT
    code, out, _ = pcs(capsys, "code", run.identifier, "--json")
    assert [f["path"] for f in json.loads(out)] == ["agent.py", "pkg/__init__.py", "pkg/helpers.py"]


def test_pcs_code_errors_are_one_line(project, capsys):
    run = _run(project)
    code, _, err = pcs(capsys, "code", run.identifier, "nope.py")
    assert code == 2
    assert err.strip() == (
        f"Error: Run {run.identifier} recorded no file 'nope.py'. Its files: agent.py, "
        f"pkg/__init__.py, pkg/helpers.py. List them with: pcs code {run.identifier}"
    )
    with Run(run_name="plain") as plain:
        pass
    code, _, err = pcs(capsys, "code", plain.identifier)
    assert code == 2 and "not a script or component run, so pcs recorded no code" in err
    code, _, err = pcs(capsys, "code", "f" * 32)
    assert code == 3


def test_a_run_recorded_before_pcs_code_still_reruns_and_shows_its_code(project, capsys):
    run = _run(project)
    # lay the artifacts out as pcs did before: pcs/source/<sha256>.py, no pcs/code
    artifacts = Path(urlparse(run.info.artifact_uri).path)
    old = artifacts / "pcs" / "source"
    old.mkdir()
    for path in (artifacts / "pcs" / "code").rglob("*.py"):
        text = path.read_text()
        (old / f"{sha256_bytes(text.encode())}.py").write_text(text)
    shutil.rmtree(artifacts / "pcs" / "code")

    (project / "agent.py").write_text(AGENT.replace("double(x)", "double(x) + 1"))
    again = Run.from_existing_run_id(run.identifier).rerun(verify=True)
    assert again.verification.reproduced and again.return_value == 6
    code, out, _ = pcs(capsys, "code", run.identifier, "agent.py")
    assert code == 0 and out == AGENT


def test_paths_stay_apart_across_repos_and_inside_the_snapshot():
    one, two, three = (sha256_bytes(t) for t in (b"1", b"2", b"3"))
    several = code_file_paths({
        "a": {"file": "left:agent.py", "sha256": one},
        "b": {"file": "right:agent.py", "sha256": two},
        "b:util": {"component": "b", "module": "util", "path": "../../etc/util.py",
                   "file": "right:../../etc/util.py", "sha256": three},
    })
    assert several == {"a": "left/agent.py", "b": "right/agent.py", "b:util": "right/etc/util.py"}

    inline = code_file_paths({
        "Scorer": {"file": "<__main__>/Scorer.py", "sha256": one},
        "Scorer:h": {"component": "Scorer", "module": "h", "path": "h.py",
                     "file": "<inline>:h.py", "sha256": two},
        "Other": {"file": "<__main__>/Scorer.py", "sha256": three},  # same path, other text
        "none": {"file": "x.py"},  # no snapshot: nothing to store
    })
    assert inline == {"Other": "__main__/Scorer.py", "Scorer": f"__main__/Scorer.{one[:12]}.py",
                      "Scorer:h": "h.py"}
