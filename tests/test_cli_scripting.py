"""The CLI for scripts: JSON only on stdout, one exit-code table, -h everywhere, clear notes."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from conftest import run_cli

from pcs import Component, Run

COMPONENTS = """
repos: {here: {type: local, path: .}}
components:
  noisy: {repo: here, file_path: noisy.py, class_name: Noisy, instantiate: true}
"""

NOISY = """
import random


class Noisy:
    def go(self, n=3, scale=1.0):
        print("working on", n, "items")
        from pcs import active_component_run
        run = active_component_run(self)
        for i in range(n):
            run.log_metric("value", random.random() * scale, step=i)
        return {"n": n, "total": sum(range(n)) * scale}

    def quiet(self):
        return None
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "components.yaml").write_text(textwrap.dedent(COMPONENTS))
    (folder / "noisy.py").write_text(textwrap.dedent(NOISY))
    return folder


def test_json_stdout_is_only_json_even_on_a_tracking_server(project, store):
    # on a tracking server MLflow prints "View run ... at http://..." lines by default
    env = {"MLFLOW_TRACKING_URI": store}
    made = run_cli("run", "noisy", "-e", "go", "--seed", "2", "--json", cwd=project, env=env)
    run_id = json.loads(made.stdout)["run_id"]  # nothing but JSON
    rerun = run_cli("rerun", run_id, "--verify", "--json", cwd=project, env=env)
    assert json.loads(rerun.stdout)["verification"]["verdict"] == "reproduced"
    assert "View run" not in made.stdout + rerun.stdout


def test_the_component_output_goes_to_stderr_with_json(project):
    result = run_cli("run", "noisy", "-e", "go", "--json", cwd=project)
    data = json.loads(result.stdout)
    assert data["return_value"] == {"n": 3, "total": 3.0}
    assert "working on 3 items" in result.stderr


def test_run_prints_the_return_value_then_the_id(project):
    result = run_cli("run", "noisy", "-e", "go", "-a", "noisy.go.n=4", cwd=project)
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "return value: {'n': 4, 'total': 6.0}"
    assert Run.from_existing_run_id(lines[-1]).return_value == {"n": 4, "total": 6.0}


def test_run_into_a_named_experiment(project, cli):
    run_id = cli("run", "noisy", "-e", "go", "--experiment", "sweeps/first", cwd=project,
                 ).stdout.strip().splitlines()[-1]
    from mlflow import MlflowClient

    run = Run.from_existing_run_id(run_id)
    assert MlflowClient().get_experiment(run.experiment_id).name == "sweeps/first"


def test_a_new_store_is_announced_on_stderr(tmp_path):
    folder = tmp_path / "fresh"
    folder.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "pcs", "status"], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert f"no MLflow store at {folder / 'mlflow.db'} yet; creating one" in result.stderr
    assert "INFO" not in result.stderr  # MLflow's own logs are silenced without -v
    assert (folder / "mlflow.db").exists()
    again = subprocess.run([sys.executable, "-m", "pcs", "status"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=120)
    assert "creating one" not in again.stderr


@pytest.mark.parametrize("command", [
    (), ("run",), ("status",), ("rerun",), ("diff",), ("freeze",), ("export",), ("import",),
    ("publish",), ("pull",), ("graph",), ("cache",), ("cache", "list"), ("cache", "clean"),
    ("cleanup",),
])
def test_every_command_has_dash_h(tmp_path, command, cli):
    result = cli(*command, "-h", cwd=tmp_path)
    assert result.stdout.startswith("Usage:")


def test_pcs_registry_has_dash_h(tmp_path):
    import subprocess
    import sys

    for args in ((), ("serve",)):
        result = subprocess.run([sys.executable, "-m", "registry.cli", *args, "-h"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith("Usage:")


def test_exit_codes_of_diff_follow_the_table(project, cli):
    agent = Component.from_registry_file(project / "components.yaml", "noisy")
    one = agent.run_with_arg_set("go", {}, seed=1)
    other = agent.run_with_arg_set("go", {}, seed=2)
    same = agent.run_with_arg_set("go", {}, seed=1)
    quiet_a = agent.run_with_arg_set("quiet", {}, seed=1)
    quiet_b = agent.run_with_arg_set("quiet", {}, seed=2)

    assert cli("diff", one.identifier, same.identifier, cwd=project).returncode == 0
    diverged = cli("diff", one.identifier, other.identifier, cwd=project, check=False)
    assert diverged.returncode == 1
    assert diverged.stdout.startswith(f"{one.identifier} vs {other.identifier}: diverged")
    unverifiable = cli("diff", quiet_a.identifier, quiet_b.identifier, cwd=project, check=False)
    assert unverifiable.returncode == 5
    assert "unverifiable" in unverifiable.stdout
    assert "seed: 1 vs 2" in unverifiable.stdout  # the record difference is listed anyway
    missing = cli("diff", one.identifier, "f" * 32, cwd=project, check=False)
    assert missing.returncode == 3


def test_tolerance_and_ignore_from_the_cli(project, cli):
    agent = Component.from_registry_file(project / "components.yaml", "noisy")
    a = agent.run_with_arg_set("go", {"noisy": {"go": {"scale": 1.0}}}, seed=1)
    b = agent.run_with_arg_set("go", {"noisy": {"go": {"scale": 1.0 + 1e-12}}}, seed=1)

    strict = cli("diff", a.identifier, b.identifier, cwd=project, check=False)
    assert strict.returncode == 1
    loose = cli("diff", a.identifier, b.identifier, "--rtol", "1e-9", cwd=project, check=False)
    # the return value differs too (total is scaled): tolerance reaches floats in it as well
    assert loose.returncode == 0 and "within tolerance" in loose.stdout.splitlines()[0], loose.stdout
    assert "return value (floats within rtol/atol)" in loose.stdout
    ignored = cli("diff", a.identifier, b.identifier, "--rtol", "1e-9", "--ignore", "value",
                  "--json", cwd=project, check=False)
    data = json.loads(ignored.stdout)
    assert all(d["kind"] != "metric" for d in data["differences"])
    assert data["rtol"] == 1e-9


def test_cache_commands(project, tmp_path, cli):
    listing = json.loads(cli("cache", "list", "--json", cwd=project).stdout)
    assert {c["kind"] for c in listing} >= {"git", "venvs", "web_registry", "sources"}
    cleaned = json.loads(cli("cache", "clean", "--dry-run", "--json", cwd=project).stdout)
    assert cleaned["dry_run"] is True
    bad = cli("cache", "clean", "--older-than", "yesterday", cwd=project, check=False)
    assert bad.returncode == 2 and "30m" in bad.stderr


def test_graph_command_writes_a_self_contained_file(project, cli):
    agent = Component.from_registry_file(project / "components.yaml", "noisy")
    run = agent.run_with_arg_set("go", {}, seed=1)
    again = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    out = cli("graph", again.identifier, "-o", "lineage.html", cwd=project).stdout
    assert "2 runs, 1 link)" in out
    html = (project / "lineage.html").read_text()
    assert run.identifier in html and again.identifier in html and "reproduced" in html
    assert "<script src" not in html
    status = cli("status", again.identifier, cwd=project).stdout
    assert f"pcs graph {again.identifier}" in status
