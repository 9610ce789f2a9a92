"""The pcs CLI, driven as a user would: run, status, rerun, and its errors."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_cli

from pcs.cli import parse_assignment
from pcs.errors import ArgumentError

COMPONENTS = """
repos:
  here:
    type: local
    path: .
components:
  counter:
    repo: here
    file_path: counter.py
    class_name: Counter
    instantiate: true
"""

COUNTER = """
import random

class Counter:
    def __init__(self, start=0):
        self.start = start

    def count(self, n=3, label="x"):
        from pcs import active_component_run
        run = active_component_run(self)
        run.log_param("label", label)
        values = [self.start + i + random.randint(0, 1000) for i in range(n)]
        for i, v in enumerate(values):
            run.log_metric("value", v, step=i)
        return {"n": n, "type": type(n).__name__, "values": values}
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "components.yaml").write_text(COMPONENTS)
    (folder / "counter.py").write_text(textwrap.dedent(COUNTER))
    return folder


def test_parse_assignment_reads_yaml_values():
    assert parse_assignment("agent.run.n=5") == ("agent", "run", "n", 5)
    assert parse_assignment("agent.run.lr=0.5") == ("agent", "run", "lr", 0.5)
    assert parse_assignment("agent.run.name=abc") == ("agent", "run", "name", "abc")
    assert parse_assignment("agent.run.name='5'") == ("agent", "run", "name", "5")
    assert parse_assignment("agent.run.xs=[1, 2]") == ("agent", "run", "xs", [1, 2])
    assert parse_assignment("agent.run.lr=1e-3") == ("agent", "run", "lr", 0.001)
    # YAML, as documented and as --arg-set files read it: yes/no are booleans
    assert parse_assignment("agent.run.flag=yes") == ("agent", "run", "flag", True)
    assert parse_assignment("agent.run.country=no") == ("agent", "run", "country", False)
    assert parse_assignment("agent.run.country='no'") == ("agent", "run", "country", "no")
    assert parse_assignment("agent.run.flag=true") == ("agent", "run", "flag", True)
    assert parse_assignment("agent.run.d={a: 1}") == ("agent", "run", "d", {"a": 1})
    assert parse_assignment("agent.run.path=/tmp/x=y") == ("agent", "run", "path", "/tmp/x=y")
    for bad in ("agent.n=5", "agent.run.n", "a..n=1"):
        with pytest.raises(ArgumentError, match="COMPONENT.FUNCTION.ARG=VALUE"):
            parse_assignment(bad)


def test_run_status_rerun(project, cli):
    out = run_cli("run", "counter", "-r", "components.yaml", "-e", "count",
                  "-a", "counter.count.n=5", "-a", "counter.__init__.start=10", "--seed", "4", cwd=project)
    run_id = out.stdout.strip().splitlines()[-1]
    assert len(run_id) == 32

    status = cli("status", "--json", cwd=project)
    listed = json.loads(status.stdout)
    assert [r["run_id"] for r in listed] == [run_id]
    assert listed[0]["entry_point"] == "count" and listed[0]["reproducibility"] == "portable"

    detail = cli("status", run_id, cwd=project).stdout
    for expected in ("run command", "count", "value", "pcs.seed", "links"):
        assert expected in detail
    data = json.loads(cli("status", run_id, "--json", cwd=project).stdout)
    # the code's own param, and the arguments and seed pcs logs as params
    assert data["params"] == {
        "label": "x", "counter.count.n": "5", "counter.__init__.start": "10", "pcs.seed": "4",
    }

    rerun = cli("rerun", run_id, cwd=project)
    new_id = rerun.stdout.strip().splitlines()[-1]
    assert new_id != run_id
    from pcs import Run

    original, again = Run.from_existing_run_id(run_id), Run.from_existing_run_id(new_id)
    assert original.return_value == again.return_value
    assert original.return_value["n"] == 5 and original.return_value["type"] == "int"  # not '5'
    table = cli("status", cwd=project).stdout
    assert run_id in table and new_id in table and "rerun of" in table


def test_status_works_without_a_components_file(tmp_path, cli):
    out = cli("status", cwd=tmp_path)
    assert "No pcs runs" in out.stdout


def test_errors_are_messages_not_tracebacks(project, cli):
    cases = [
        (("status", "0" * 32), "No run with id"),
        (("rerun", "0" * 32), "No run with id"),
        (("run", "counter", "-r", "components.yaml", "-e", "nope"), "no entry point 'nope'"),
        (("run", "missing", "-r", "components.yaml"), "no component 'missing'"),
        (("run", "counter", "-r", "nothere.yaml"), "does not exist"),
        (("run", "counter", "-r", "components.yaml", "-e", "count", "-a", "counter.count"), "COMPONENT.FUNCTION.ARG=VALUE"),
        (("run", "counter", "-r", "components.yaml", "-e", "count", "-a", "countr.count.n=1"), "countr"),
    ]
    for args, message in cases:
        result = cli(*args, cwd=project, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
    from pcs import Run

    assert Run.get_all_runs() == []  # none of the refused commands wrote a run


def test_plain_run_rerun_is_refused_with_advice(project, cli):
    from pcs import Run

    with Run() as plain:
        pass
    result = cli("rerun", plain.identifier, cwd=project, check=False)
    assert result.returncode == 4
    assert "has no RunCommand" in result.stderr and "Traceback" not in result.stderr


def test_help_is_fast_to_reach(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    for command in ("run", "status", "rerun", "diff", "freeze", "export", "import", "publish", "pull"):
        assert command in out.stdout


def test_unreachable_tracking_server_is_a_message(tmp_path, cli):
    from conftest import free_port

    result = cli(
        "--tracking-uri", f"http://127.0.0.1:{free_port()}", "status", cwd=tmp_path, check=False,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert result.returncode == 10
    assert "MLFLOW_TRACKING_URI" in result.stderr and "Traceback" not in result.stderr
