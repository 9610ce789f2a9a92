"""The report says what it compared and, separately, what was produced and not compared, and why."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric

from pcs import Run
from pcs.verification import compare_runs


def plain_run(metrics=(), tags=None, params=None) -> Run:
    with mlflow.start_run() as run:
        client = MlflowClient()
        if metrics:
            client.log_batch(run.info.run_id, metrics=list(metrics))
        for key, value in (tags or {}).items():
            mlflow.set_tag(key, value)
        if params:
            mlflow.log_params(params)
    return Run.from_existing_run_id(run.info.run_id)


def test_values_logged_in_one_millisecond_are_named_as_compared_without_order():
    first = plain_run([Metric("loss", 2.0, 1000, 0), Metric("loss", 1.0, 1000, 0)])
    second = plain_run([Metric("loss", 1.0, 1000, 0), Metric("loss", 2.0, 1000, 0)])
    report = compare_runs(first, second)
    assert any(
        n.startswith("metric loss: the order of 2 values logged at one step in one millisecond")
        for n in report.not_compared
    ), report.not_compared
    assert "not compared:" in str(report)


def test_tags_the_code_sets_are_compared_and_system_tags_are_not():
    first = plain_run(tags={"stage": "train", "mlflow.note.content": "a", "pcs.extra": "1"})
    second = plain_run(tags={"stage": "train", "mlflow.note.content": "b", "pcs.extra": "2"})
    report = compare_runs(first, second)
    assert report.verdict == "reproduced", str(report)
    assert report.compared == ["1 tag(s)"]

    third = plain_run(tags={"stage": "eval"})
    report = compare_runs(first, third)
    assert report.verdict == "diverged"
    assert report.first_difference.kind == "tag"
    assert report.first_difference.detail == "tag stage differs: 'train' vs 'eval'"


def test_object_addresses_in_params_are_removed_and_named():
    first = plain_run(params={"func": "<function scale at 0x7f3a2c1d0e50>"})
    second = plain_run(params={"func": "<function scale at 0x7f0000aa1122>"})
    report = compare_runs(first, second)
    assert report.verdict == "reproduced", str(report)
    assert report.normalised == ["object addresses"]
    assert "compared after removing: object addresses" in str(report)
    raw = compare_runs(first, second, raw=True)
    assert raw.verdict == "diverged" and raw.normalised == []


def test_ignored_and_system_outputs_are_listed_with_the_reason():
    first = plain_run([Metric("loss", 1.0, 1, 0), Metric("time/epoch", 3.0, 1, 0),
                       Metric("system/cpu_utilization_percentage", 50.0, 1, 0)])
    second = plain_run([Metric("loss", 1.0, 1, 0), Metric("time/epoch", 4.0, 1, 0),
                        Metric("system/cpu_utilization_percentage", 70.0, 1, 0)])
    report = compare_runs(first, second, ignore=["time/*"])
    assert report.verdict == "reproduced", str(report)
    assert "1 metric(s), step by step" in report.compared
    assert "outputs matching time/*: ignored as asked" in report.not_compared
    assert any(n.startswith("1 system metric(s): ") for n in report.not_compared)
    assert report.to_dict()["not_compared"] == report.not_compared


def test_logged_models_and_child_runs_on_each_store(store):
    import numpy as np
    from sklearn.linear_model import LinearRegression

    x = np.arange(6.0).reshape(-1, 1)
    runs = []
    for intercept in (0.0, 0.0, 1.0):
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(LinearRegression().fit(x, 2 * x.ravel() + intercept), name="model")
            with mlflow.start_run(nested=True, run_name="evaluate"):
                mlflow.log_metric("r2", 1.0)
        runs.append(Run.from_existing_run_id(run.info.run_id))

    same = compare_runs(runs[0], runs[1])
    assert same.verdict == "reproduced", str(same)
    assert "1 logged model(s), file by file" in same.compared
    assert "1 child run(s)" in same.compared
    assert "model ids" in same.normalised
    # MLflow's guess at the model's requirements varies (a shorter list when its probe fails)
    assert any("conda.yaml" in n and "requirements.txt" in n for n in same.not_compared), same.not_compared

    other = compare_runs(runs[0], runs[2])
    assert other.verdict == "diverged"
    assert other.first_difference.kind == "model"
    assert other.first_difference.detail.startswith("logged model 'model': model.")  # .skops or .pkl
