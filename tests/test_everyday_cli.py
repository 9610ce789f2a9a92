"""Browsing and marking runs from the CLI: ``pcs runs`` / ``pcs status``, ``pcs logs``,
``pcs tag``, ``pcs note``, ``pcs delete`` and ``pcs restore``.

Runs are made through the Python API (quick); the CLI is driven as a user
would: ``pcs.cli.main`` with an argv (its output and exit code, as the console
script gives them), and in a subprocess where the one-line error and the exit
code of a separate process are the point.
"""

from __future__ import annotations

import json
import sys

import mlflow
import pytest
from conftest import pcs_in_process, run_cli
from mlflow import MlflowClient

from pcs import Component, Run, _keys

LR = "Trainer.fit.lr"


class Trainer:
    def fit(self, lr=0.1, epochs=2):
        for epoch in range(epochs):
            mlflow.log_metric("val_loss", lr / (epoch + 1), step=epoch)
        print(f"trained with lr={lr}")
        print("a warning", file=sys.stderr)
        return lr


pcs = pcs_in_process


@pytest.fixture
def trained():
    """Three runs in experiment 'mnist' (lr differs, seed and epochs do not), one in Default."""
    component = Component.from_class(Trainer, instantiate=True)
    experiment_id = MlflowClient().create_experiment("mnist")
    runs = {}
    for lr in (0.1, 0.01, 0.001):
        runs[lr] = component.run_with_arg_set(
            "fit", {"Trainer": {"fit": {"lr": lr}}}, seed=1, experiment_id=experiment_id
        )
    elsewhere = component.run_with_arg_set("fit", {"Trainer": {"fit": {"lr": 0.5}}}, seed=1)
    return runs, elsewhere


def test_runs_shows_the_params_that_differ_and_the_metrics(trained, capsys):
    runs, elsewhere = trained
    code, out, _ = pcs(capsys, "runs", "--experiment", "mnist", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [r["run_id"] for r in listed] == [runs[x].identifier for x in (0.001, 0.01, 0.1)]
    # lr differs; the seed and the epochs are the same everywhere, so they are no column
    assert listed[0]["columns"] == [f"params.{LR}", "metrics.val_loss"]
    assert listed[0]["values"] == {f"params.{LR}": "0.001", "metrics.val_loss": 0.0005}
    assert {r["experiment"] for r in listed} == {"mnist"}

    code, out, _ = pcs(capsys, "runs")  # every experiment: an EXPERIMENT column says which
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["RUN", "ID", "NAME", "EXPERIMENT"]
    assert "val_loss" in header and LR in header and len(rows) == 4
    line = next(r for r in rows if elsewhere.identifier in r)
    assert "Default" in line and "0.5" in line and "0.25" in line


def test_runs_leaves_pcs_own_params_out_of_the_default_columns(tmp_path, capsys):
    script = tmp_path / "train.py"
    script.write_text("import argparse\nparser = argparse.ArgumentParser()\n"
                      "parser.add_argument('--lr')\nparser.parse_args()\n")
    for lr in ("0.1", "0.2"):  # each run draws its own seed; the argv repeats --lr
        assert pcs(capsys, "run", str(script), "--lr", lr)[0] == 0
    code, out, _ = pcs(capsys, "runs", "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed[0]["columns"] == ["params.lr"]
    assert {r["params"]["pcs.seed"] for r in listed} != {listed[0]["params"]["pcs.seed"]}
    code, out, _ = pcs(capsys, "runs", "--columns", "params.pcs.seed")
    assert code == 0 and listed[0]["params"]["pcs.seed"] in out


def test_runs_columns_filter_sort_and_limit(trained, capsys):
    runs, _ = trained
    code, out, _ = pcs(capsys, "runs", "--experiment", "mnist", "--columns",
                       f"metrics.val_loss,params.{LR}", "--sort", "-metrics.val_loss",
                       "--limit", "2")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.index("val_loss") < header.index(LR) and "EXPERIMENT" not in header
    assert [r.split()[0] for r in rows] == [runs[0.1].identifier, runs[0.01].identifier]

    code, out, _ = pcs(capsys, "runs", "--filter", "metrics.val_loss < 0.004", "--sort",
                       "metrics.val_loss ASC", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[0.001].identifier]

    code, out, _ = pcs(capsys, "runs", "--experiment", "mnist", "--filter",
                       "metrics.val_loss > 1")
    assert code == 0 and out.strip() == "No runs match the experiment and filter given."


def test_status_lists_as_runs_does_and_honours_the_experiment_variables(
    trained, capsys, monkeypatch
):
    runs, elsewhere = trained
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mnist")
    code, out, _ = pcs(capsys, "status", "--json")
    assert code == 0 and {r["run_id"] for r in json.loads(out)} == {
        r.identifier for r in runs.values()
    }
    code, out, _ = pcs(capsys, "runs", "--experiment", "Default", "--json")  # the option wins
    assert [r["run_id"] for r in json.loads(out)] == [elsewhere.identifier]
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", runs[0.1].experiment_id)
    code, out, _ = pcs(capsys, "status", "--columns", f"params.{LR}")
    assert code == 0 and len(out.splitlines()) == 4 and "val_loss" not in out


def test_unknown_experiment_and_bad_options_are_one_line_errors(tmp_path):
    Run(run_name="something").end()
    result = run_cli("runs", "--experiment", "nope", check=False)
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Experiment 'nope' (from --experiment) does not exist" in result.stderr
    assert "Known experiments: Default (id 0)" in result.stderr

    result = run_cli("status", check=False, env={"MLFLOW_EXPERIMENT_ID": "4242"})
    assert result.returncode == 3 and "Experiment id '4242' (from MLFLOW_EXPERIMENT_ID)" in result.stderr


@pytest.mark.parametrize("args, message", [
    (("--filter", "metrics.x <<< 1"), "MLflow cannot search with --filter"),
    (("--sort", "loss"), "Cannot sort by 'loss'"),
    (("--columns", "lr"), "Cannot show column 'lr'"),
    (("--limit", "0"), "--limit must be at least 1"),
])
def test_bad_listing_options_are_usage_errors(capsys, args, message):
    Run(run_name="something").end()
    code, out, err = pcs(capsys, "runs", *args)
    assert code == 2 and out == "" and message in err and "Traceback" not in err


def test_logs_tag_note_delete_restore(trained, capsys):
    runs, _ = trained
    run = runs[0.1]
    code, out, _ = pcs(capsys, "logs", run.identifier)
    assert code == 0 and out == "trained with lr=0.1\n"
    code, out, _ = pcs(capsys, "logs", run.identifier[:8], "--stderr")
    assert code == 0 and out == "a warning\n"

    code, out, _ = pcs(capsys, "tag", run.identifier, "stage=dev", "owner=ana=b")
    assert code == 0 and out.strip() == run.identifier
    code, out, _ = pcs(capsys, "note", run.identifier, "the **baseline**")
    tags = MlflowClient().get_run(run.identifier).data.tags
    assert tags["stage"] == "dev" and tags["owner"] == "ana=b"
    assert tags[_keys.NOTE] == "the **baseline**"
    code, out, _ = pcs(capsys, "runs", "--filter", "tags.stage = 'dev'", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [run.identifier]

    code, _, err = pcs(capsys, "tag", run.identifier, f"{_keys.RUN_TYPE}=run")
    assert code == 2 and "is pcs's own" in err
    code, _, err = pcs(capsys, "tag", run.identifier, "novalue")
    assert code == 2 and "KEY=VALUE" in err

    other = runs[0.01]
    code, _, err = pcs(capsys, "delete", run.identifier, "0" * 32)
    assert code == 3 and "No run with id" in err
    assert MlflowClient().get_run(run.identifier).info.lifecycle_stage == "active"  # nothing half done

    code, out, _ = pcs(capsys, "delete", run.identifier, other.identifier[:10])
    assert code == 0 and out.split() == [run.identifier, other.identifier]
    assert MlflowClient().get_run(other.identifier).info.lifecycle_stage == "deleted"
    code, out, _ = pcs(capsys, "runs", "--experiment", "mnist", "--json")
    assert [r["run_id"] for r in json.loads(out)] == [runs[0.001].identifier]

    code, out, _ = pcs(capsys, "restore", run.identifier[:8], other.identifier)
    assert code == 0
    code, out, _ = pcs(capsys, "runs", "--experiment", "mnist", "--json")
    assert len(json.loads(out)) == 3


def test_logs_of_a_run_without_output(capsys):
    with Run(run_name="plain") as run:
        run.log_param("x", 1)
    code, out, err = pcs(capsys, "logs", run.identifier)
    assert code == 3 and out == "" and "recorded nothing on stdout" in err
