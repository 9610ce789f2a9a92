"""Script sweeps on Ray (issue 18, point 4): every trial is a script run made in a Ray task.

Uses the session's one local Ray (``local_ray`` in conftest.py) and the test's SQLite store.
"""

from __future__ import annotations

import textwrap

import pytest

import pcs
from pcs import Run

TRAIN = """
import argparse
import os
import random

import mlflow

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
mlflow.log_metric("score", args.lr * args.epochs + random.random())
if os.getpid() == int(os.environ.get("PCS_TEST_DRIVER_PID", "0")):
    mlflow.set_tag("ran_in", "the driver")  # a Ray trial runs in a worker, never here
"""


@pytest.fixture
def script(tmp_path, local_ray, monkeypatch):
    import os

    monkeypatch.setenv("PCS_TEST_DRIVER_PID", str(os.getpid()))
    path = tmp_path / "project" / "train.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(TRAIN))
    return path


def test_a_script_sweep_on_ray_matches_the_serial_one_and_its_trials_rerun(script, monkeypatch):
    grid = {"lr": [0.5, 2]}
    on_ray = pcs.sweep_script(script, grid, argv=["--epochs", "3"], seeds=(1, 2), executor="ray")
    serial = pcs.sweep_script(script, grid, argv=["--epochs", "3"], seeds=(1, 2), executor="serial")
    assert on_ray.status == "FINISHED"

    def scores(sweep):
        trials = [Run.from_existing_run_id(r["run_id"]) for r in sweep.table()]
        assert [t.status for t in trials] == ["FINISHED"] * 4
        return sorted((t.params["lr"], t.params["epochs"], t.seed, t.metrics["score"]) for t in trials)

    # the same trials, the same seeded scores, whichever executor ran them
    assert scores(on_ray) == scores(serial)
    ray_trials = [Run.from_existing_run_id(r["run_id"]) for r in on_ray.table()]
    assert not any("ran_in" in t.tags for t in ray_trials)  # in Ray's workers
    assert all(t.tags.get("ran_in") == "the driver" for t in
               (Run.from_existing_run_id(r["run_id"]) for r in serial.table()))
    monkeypatch.delenv("PCS_TEST_DRIVER_PID")  # the rerun runs here, as the trial did not
    again = ray_trials[0].rerun(verify=True, env_vars="current")
    assert again.verification.verdict == "reproduced", str(again.verification)
