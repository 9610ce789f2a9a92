"""Sweeps of scripts: every trial is a script run (issue 18, point 4)."""

from __future__ import annotations

import textwrap

import pytest
from conftest import run_cli

import pcs
from pcs import ArgumentError, Run
from pcs.script import script_grid

TRAIN = """
import argparse
import random
import mlflow
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
mlflow.log_metric("score", args.lr * args.epochs + random.random())
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(TRAIN))
    return path


def test_script_grid_is_the_cross_product_after_the_fixed_arguments():
    assert script_grid({"lr": [0.01, 0.1], "-n": [1, 2]}, ["--epochs", "2"]) == [
        ["--epochs", "2", "--lr", "0.01", "-n", "1"],
        ["--epochs", "2", "--lr", "0.01", "-n", "2"],
        ["--epochs", "2", "--lr", "0.1", "-n", "1"],
        ["--epochs", "2", "--lr", "0.1", "-n", "2"],
    ]
    with pytest.raises(ArgumentError, match="non-empty list"):
        script_grid({"lr": []})
    with pytest.raises(ArgumentError, match="option names"):
        script_grid({"": [1]})


def test_a_serial_script_sweep_and_a_verified_rerun_of_its_best_trial(script):
    sweep = pcs.sweep_script(script, {"lr": [0.5, 2]}, argv=["--epochs", "3"], seeds=(1, 2),
                             executor="serial")
    rows = sweep.table()
    assert [r["status"] for r in rows] == ["FINISHED"] * 4
    trials = [Run.from_existing_run_id(r["run_id"]) for r in rows]
    assert sorted((t.params["lr"], t.params["epochs"], t.seed) for t in trials) == [
        ("0.5", "3", 1), ("0.5", "3", 2), ("2.0", "3", 1), ("2.0", "3", 2),
    ]
    best = sweep.best("score")
    assert best.params["lr"] == "2.0"
    assert best.rerun(verify=True).verification.verdict == "reproduced"


def test_cli_script_sweep_on_the_process_executor(script):
    result = run_cli("sweep", str(script), "--grid", "lr=0.5,2", "--seeds", "3",
                     "--executor", "process", "--workers", "2", "--json", "--", "--epochs", "2")
    import json

    data = json.loads(result.stdout)
    assert data["status"] == "FINISHED"
    assert [t["status"] for t in data["trials"]] == ["FINISHED", "FINISHED"]
    runs = [Run.from_existing_run_id(t["run_id"]) for t in data["trials"]]
    assert sorted(r.params["lr"] for r in runs) == ["0.5", "2.0"]
    assert {r.params["epochs"] for r in runs} == {"2"} and {r.seed for r in runs} == {3}


def test_cli_script_sweep_refuses_component_options(script):
    result = run_cli("sweep", str(script), "--grid", "lr=1", "-a", "x.y.z=1", check=False)
    assert result.returncode == 2
    assert "are for components" in result.stderr
