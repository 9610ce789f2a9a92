"""Inputs from other runs: dependency runs' artifacts and log_input datasets, named by digest (issue 17, point 6)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from mlflow import MlflowClient

from pcs import Component, LocalRepo, Run

CONSUMER = """\
from pcs import Run


class C:
    def go(self, source):
        return Run.from_existing_run_id(source).load_dict("data.json")["n"]
"""


def component(folder: Path, source: str) -> Component:
    folder.mkdir(parents=True)
    (folder / "comp.py").write_text(source)
    return Component.from_repo(LocalRepo("here", folder), "c", "comp.py", "C", instantiate=True)


def test_a_dependency_runs_replaced_artifact_is_named(tmp_path):
    with Run() as producer:
        producer.log_dict({"n": 1}, "data.json")
    pid = producer.identifier
    consumer = component(tmp_path / "p", CONSUMER)
    run = Run.from_existing_run_id(consumer.run_with_arg_set("go", {"c": {"go": {"source": pid}}},
                                                            seed=1).identifier)
    assert run.dependency_ids == [pid]
    recorded = run._read_yaml("pcs/inputs.yaml")["runs"]
    assert list(recorded) == [pid] and list(recorded[pid]) == ["data.json"]
    assert re.fullmatch(r"[0-9a-f]{64}", recorded[pid]["data.json"])

    assert run.rerun(verify=True).verification.verdict == "reproduced"
    MlflowClient().log_dict(pid, {"n": 2}, "data.json")  # replaced under the same run
    changed = run.rerun(verify=True)
    assert changed.verification.verdict == "diverged"
    assert changed.verification.causes == [f"dependency run {pid[:8]}: data.json changed"]


DATASET = """\
from pathlib import Path

import mlflow
import numpy as np


class C:
    def go(self):
        values = np.load(Path(__file__).parent / "train.npy")
        mlflow.log_input(mlflow.data.from_numpy(values, name="train"), context="training")
        return float(values.sum())
"""


def test_a_log_input_dataset_whose_digest_changed_is_named(tmp_path):
    import numpy as np

    folder = tmp_path / "p"
    comp = component(folder, DATASET)
    np.save(folder / "train.npy", np.arange(4.0))
    time.sleep(0.05)
    run = Run.from_existing_run_id(comp.run_with_arg_set("go", {}, seed=1).identifier)
    np.save(folder / "train.npy", np.arange(5.0))
    new = run.rerun(verify=True, code="current")

    def digest(r: Run) -> str:
        (item,) = r._mlflow_run.inputs.dataset_inputs
        return item.dataset.digest

    old_digest, new_digest = digest(run), digest(new)
    assert old_digest != new_digest
    causes = new.verification.causes
    assert f"dataset train: digest {old_digest} -> {new_digest}" in causes
    assert any(c.startswith("data: train.npy changed") for c in causes)
    assert len(causes) == 2


def test_plain_runs_compared_name_a_dataset_whose_digest_changed():
    import mlflow
    import numpy as np

    from pcs.verification import compare_runs

    runs = []
    for values in (np.arange(3.0), np.arange(4.0)):
        with Run() as run:
            mlflow.log_input(mlflow.data.from_numpy(values, name="train"), context="training")
            run.log_metric("total", float(values.sum()))
        runs.append(run)
    digests = [mlflow.data.from_numpy(v, name="train").digest for v in (np.arange(3.0), np.arange(4.0))]
    report = compare_runs(*runs)
    assert report.verdict == "diverged"
    assert f"dataset train: digest {digests[0]} -> {digests[1]}" in report.causes
