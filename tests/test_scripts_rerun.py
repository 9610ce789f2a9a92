"""Reruns of script runs: from the record alone, in a fresh process and a fresh store, and
derived runs with changed arguments (issue 18, point 3)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import mlflow
import pytest
from conftest import make_store, run_cli

import pcs
from pcs import ArgumentError, Component, LocalRepo, Run

TRAIN = """
import argparse
import random

import mlflow
from helpers import scale

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()
print("lr", args.lr)
for epoch in range(args.epochs):
    mlflow.log_metric("loss", scale(args.lr) / (epoch + 1) + random.random(), step=epoch)
"""


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "train.py").write_text(textwrap.dedent(TRAIN))
    (folder / "helpers.py").write_text("def scale(x):\n    return x * 2\n")
    return folder


def test_rerun_runs_the_recorded_snapshot_even_after_the_files_changed(project):
    run = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=7)
    (project / "helpers.py").write_text("def scale(x):\n    return x * 1000\n")
    (project / "train.py").write_text("raise SystemExit('edited')\n")
    again = run.rerun(verify=True)
    assert again.verification.verdict == "reproduced", str(again.verification)
    assert again.tags["pcs.rerun_of"] == run.identifier
    assert again.params["lr"] == "0.5"


def test_rerun_in_a_fresh_process_by_run_uri(project):
    run = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=7)
    result = run_cli("rerun", f"runs:/{run.identifier}", "--verify")
    lines = result.stdout.strip().splitlines()
    assert f"(rerun of {run.identifier}): reproduced" in result.stdout
    new = Run.from_existing_run_id(lines[-1])
    assert new.tags["pcs.rerun_of"] == run.identifier


def test_run_uris_are_taken_where_run_ids_are(project):
    run = pcs.run_script(project / "train.py", [], seed=1)
    assert Run.from_existing_run_id(f"runs:/{run.identifier}") == run
    assert Run.from_existing_run_id(f"runs:/{run.identifier}/pcs/stdout.txt") == run
    with pytest.raises(pcs.RunNotFoundError, match="runs:/<run id>"):
        Run.from_existing_run_id("runs:/")


def test_rerun_in_a_fresh_store_after_export_and_import(project, tmp_path, template_store, monkeypatch):
    run = pcs.run_script(project / "train.py", ["--epochs", "2"], seed=3)
    registry = run.to_registry(include_artifacts=True)
    shutil.rmtree(project)  # machine B never had the files
    monkeypatch.setenv("MLFLOW_TRACKING_URI", make_store(tmp_path / "machine_b", template_store))
    monkeypatch.setenv("PCS_HOME", str(tmp_path / "machine_b" / "pcs_home"))
    imported = Run.from_registry(registry, run.identifier)
    assert imported.params["epochs"] == "2"
    new = imported.rerun(verify=True)
    assert new.verification.verdict == "reproduced", str(new.verification)
    assert len(new.metric_history("loss")) == 2


def test_a_derived_run_has_the_changed_arguments_and_no_verdict(project):
    run = pcs.run_script(project / "train.py", ["--lr", "0.5", "--epochs", "2"], seed=7)
    derived = run.rerun(args=["--lr", "0.2"])
    assert derived.tags["pcs.derived_from"] == run.identifier
    assert "pcs.rerun_of" not in derived.tags and "pcs.verification" not in derived.tags
    assert derived.verification is None
    assert derived.params["lr"] == "0.2" and derived.params["epochs"] == "2"
    assert derived.seed == run.seed
    assert derived.run_command.argument_set.to_dict() == {
        "train": {"run": {"argv": ["--lr", "0.5", "--epochs", "2", "--lr", "0.2"]}}
    }
    assert run.reruns == []  # a derived run is not a rerun
    # and a rerun of the derived run reproduces it
    assert derived.rerun(verify=True).verification.verdict == "reproduced"


def test_a_derived_run_refuses_a_verdict_and_bad_args(project):
    run = pcs.run_script(project / "train.py", [], seed=7)
    before = len(mlflow.search_runs(output_format="list", search_all_experiments=True))
    with pytest.raises(ArgumentError, match="not a rerun"):
        run.rerun(args=["--lr", "0.2"], verify=True)
    with pytest.raises(ArgumentError, match="strings to add to its recorded argv"):
        run.rerun(args="--lr 0.2")
    with pytest.raises(ArgumentError, match="not a list"):
        pcs.Component.from_class(_Doubler, instantiate=True).run_with_arg_set(
            "double", {"_Doubler": {"double": {"x": 1}}}
        ).rerun(args=["--x", "2"])
    assert len(mlflow.search_runs(output_format="list", search_all_experiments=True)) == before + 1


class _Doubler:
    def double(self, x=1):
        return 2 * x


def test_a_component_run_derived_with_changed_arguments(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "doubler.py").write_text(
        "class Doubler:\n    def double(self, x=1, y=0):\n        return 2 * x + y\n"
    )
    component = Component.from_repo(LocalRepo("lib", tmp_path / "lib"), "doubler", "doubler.py",
                                    class_name="Doubler", instantiate=True)
    run = component.run_with_arg_set("double", {"doubler": {"double": {"x": 3, "y": 1}}}, seed=1)
    derived = run.rerun(args={"doubler": {"double": {"x": 10}}})
    assert derived.return_value == 21
    assert derived.tags["pcs.derived_from"] == run.identifier
    assert derived.params["doubler.double.x"] == "10"


def test_cli_derived_run_and_diff(project, cli):
    run = pcs.run_script(project / "train.py", ["--lr", "0.5"], seed=7)
    result = cli("rerun", run.identifier, "--", "--lr", "0.2")
    assert "lr 0.2" in result.stdout
    new_id = result.stdout.strip().splitlines()[-1]
    derived = Run.from_existing_run_id(new_id)
    assert derived.tags["pcs.derived_from"] == run.identifier
    assert derived.params["lr"] == "0.2"
    diff = cli("diff", run.identifier, new_id, check=False)
    assert diff.returncode == 1
    assert "param lr differs: '0.5' vs '0.2'" in diff.stdout
    refused = cli("rerun", run.identifier, "-a", "train.run.lr=0.2", check=False)
    assert refused.returncode == 2
    assert "is a script run" in refused.stderr
