"""Adaptive search (Optuna): a space of ranges, a sampler, pruning, and reruns two ways.

Trials are real component runs on the test's SQLite store; the sampler and
pruners are Optuna's own. Serial searches run in this process; one search runs
on real worker processes, its pruner asked over their sockets.
"""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import optuna
import pytest
from conftest import run_cli

import pcs
from pcs import Component, LocalRepo, Run, _keys
from pcs.errors import ArgumentError, NotReproducibleError

MODEL = '''
import math


class Model:
    def fit(self, lr=0.1, depth=2, opt="sgd", steps=4):
        from pcs import active_component_run

        run = active_component_run(self)
        loss = 0.0
        for step in range(steps):
            loss = abs(math.log10(lr) + 2) + depth * 0.1 + (0.5 if opt == "sgd" else 0.0)
            loss += 1.0 / (step + 1)
            run.log_metric("loss", loss, step=step)
        return round(loss, 9)
'''

COMPONENTS_YAML = """
repos:
  src:
    type: local
    path: .
components:
  model:
    repo: src
    file_path: model.py
    class_name: Model
    instantiate: true
"""

SPACE = {
    "model.fit.lr": pcs.loguniform(1e-4, 1e-1),
    "model.fit.depth": pcs.intrange(2, 8),
    "model.fit.opt": ["sgd", "adam"],
}


@pytest.fixture()
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(MODEL))
    (folder / "components.yaml").write_text(COMPONENTS_YAML)
    return folder


@pytest.fixture()
def model(project) -> Component:
    return Component.from_repo(LocalRepo("src", project), "model", "model.py", "Model",
                               instantiate=True)


def test_a_tpe_search_records_its_plan_and_suggestions_and_runs_again_from_its_seed(model):
    sweep = model.sweep("fit", space=SPACE, n_trials=5, metric="loss", mode="min", seed=3,
                        executor="serial", run_name="tpe")

    assert sweep.status == "FINISHED"
    rows = sweep.table()
    assert [r["trial"] for r in rows] == [0, 1, 2, 3, 4]
    assert all(r["status"] == "FINISHED" for r in rows)
    for row, trial in zip(rows, sweep.trials, strict=True):
        assert 1e-4 <= row["model.fit.lr"] <= 1e-1 and 2 <= row["model.fit.depth"] <= 8
        assert row["model.fit.opt"] in ("sgd", "adam")
        # every trial is a normal component run with the suggested arguments
        assert trial.params["model.fit.depth"] == str(row["model.fit.depth"])
        assert trial.return_value == round(row["loss"], 9)
    search = Run.from_existing_run_id(sweep.identifier).spec.search
    assert search["sampler"] == "tpe" and search["seed"] == 3
    assert search["direction"] == "minimize" and search["metric"] == "loss"
    assert [e["kind"] for e in search["space"]] == ["loguniform", "intrange", "choice"]
    # the sweep's own row shows the best value, and which trial reached it
    best = min(rows, key=lambda r: r["loss"])
    assert sweep.refresh().metrics["loss"] == best["loss"]
    assert sweep.tags[_keys.BEST_TRIAL] == str(best["trial"])
    assert sweep.tags[_keys.BEST_RUN] == best["run_id"]
    assert "pcs-parallel-trial-0" in sweep.load_text(_keys.SWEEP_PARALLEL_ARTIFACT)

    again = sweep.rerun(verify=True, research=True)

    assert again.info.run_name == "tpe (rerun)"
    assert again.verification.verdict == "reproduced"
    assert again.verification.relation == "research"
    assert [r["model.fit.lr"] for r in again.table()] == [r["model.fit.lr"] for r in rows]
    assert [t.tags[_keys.RERUN_OF] for t in again.trials] == [r["run_id"] for r in rows]
    replay = sweep.rerun(verify=True)
    assert replay.verification.verdict == "reproduced"


def test_a_changed_objective_is_named_when_the_search_runs_again(model, project, monkeypatch):
    sweep = model.sweep("fit", space=SPACE, n_trials=3, metric="loss", mode="min", seed=5,
                        executor="serial", search="random")
    (project / "model.py").write_text(textwrap.dedent(MODEL).replace("depth * 0.1", "depth * 0.2"))

    # the search runs its recorded code: an edit of the file changes nothing
    assert sweep.rerun(verify=True, research=True).verification.verdict == "reproduced"
    monkeypatch.chdir(project)  # the trials' repo is recorded as "." (the project's folder)
    replay = sweep.rerun(verify=True, code="current")
    assert replay.verification.verdict == "diverged"
    assert "loss differs" in str(replay.verification) or "return value" in str(replay.verification)


def test_pruned_trials_end_killed_at_their_step_and_a_verified_rerun_expects_the_same(model):
    # a grid search in a seeded order; the median rule stops trials worse than the median
    space = {"model.fit.depth": pcs.intrange(2, 8), "model.fit.opt": ["adam"]}
    sweep = model.sweep("fit", space=space, search="grid", metric="loss", mode="min", seed=1,
                        prune="median", executor="serial")

    rows = sweep.table()
    assert len(rows) == 7  # the grid's size
    pruned = [r for r in rows if r["status"] == "PRUNED"]
    assert pruned, rows
    for row in pruned:
        trial = sweep.trial_runs()[row["trial"]]
        assert trial.status == "KILLED" and trial.tags[_keys.ENDED_BY] == "pruned"
        assert trial.tags[_keys.PRUNED] == "0"  # MedianPruner decides at the first report
        assert len(trial.metric_history("loss")) == 1
    assert json.loads(sweep.tags[_keys.SWEEP_SUMMARY])["PRUNED"] == len(pruned)
    assert sweep.status == "FINISHED"

    replay = sweep.rerun(verify=True)
    researched = sweep.rerun(verify=True, research=True)

    for again in (replay, researched):
        assert again.verification.verdict == "reproduced", str(again.verification)
        assert [r["status"] for r in again.table()] == [r["status"] for r in rows]
    # nothing to resume: a pruned trial ended as its search decided
    assert sweep.resume_trials().trial_runs()[pruned[0]["trial"]].identifier == pruned[0]["run_id"]


def test_a_search_on_worker_processes_asks_its_pruner_over_their_sockets(model):
    sweep = model.sweep(
        "fit", space={"model.fit.opt": ["sgd", "adam"], "model.fit.depth": [2]}, search="grid",
        metric="loss", mode="min", seed=2, executor="process", max_workers=2,
        prune=optuna.pruners.ThresholdPruner(upper=2.3),  # sgd's first loss is 2.7: pruned
    )

    by_opt = {r["model.fit.opt"]: r for r in sweep.table()}
    assert by_opt["sgd"]["status"] == "PRUNED" and by_opt["adam"]["status"] == "FINISHED"
    assert sweep.spec.search["parallel"] is True
    assert sweep.spec.search["prune"] == "custom:optuna.pruners._threshold.ThresholdPruner"

    again = sweep.rerun(verify=True, research=True, executor="serial")

    assert again.verification.verdict == "reproduced"
    assert "replayed instead" in str(again.verification)
    assert [r["status"] for r in again.table()] == [r["status"] for r in sweep.table()]


def test_a_search_on_ray_asks_its_pruner_over_the_network_and_reruns_on_ray(model, local_ray):
    # one trial at a time, so the search (and the median rule) runs again exactly
    space = {"model.fit.depth": pcs.intrange(2, 7), "model.fit.opt": ["adam"]}
    sweep = model.sweep("fit", space=space, search="grid", metric="loss", mode="min", seed=1,
                        prune="median", executor="ray", max_workers=1)

    rows = sweep.table()
    pruned = [r for r in rows if r["status"] == "PRUNED"]
    assert pruned and len(pruned) < len(rows), rows
    for row in pruned:
        trial = sweep.trial_runs()[row["trial"]]
        assert trial.status == "KILLED" and trial.tags[_keys.PRUNED] == "0"
        assert trial.tags[_keys.RAY_NODE]  # it ran as a Ray task, and the sweep stopped it
        assert len(trial.metric_history("loss")) == 1

    # the sweep stopped listening for reports when its trials ended
    assert not [t for t in threading.enumerate() if t.name == "pcs-sweep-reports"]

    researched = sweep.rerun(verify=True, research=True)
    replay = sweep.rerun(verify=True)

    for again in (researched, replay):
        assert again.spec.executor == "ray"
        assert again.verification.verdict == "reproduced", str(again.verification)
        assert [r["status"] for r in again.table()] == [r["status"] for r in rows]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"space": {}}, "space maps"),
        ({"space": {"model.fit": [1]}}, "COMPONENT.FUNCTION.ARG"),
        ({"space": {"model.fit.lrr": [1]}}, "Did you mean model.fit.lr"),
        ({"space": {"model.fit.lr": "0.1"}}, "give a range"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "mode": None}, "mode='min'"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "metric": None}, "metric="),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "n_trials": None}, "n_trials"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "search": "grid"}, "continuous"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "search": "bayes"}, "Unknown search"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "prune": "early"}, "Unknown pruner"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "grid": {"model.fit.depth": [2]}},
         "no grid"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "max_retries": -1}, "max_retries"),
        ({"space": {"model.fit.lr": SPACE["model.fit.lr"]}, "resources": {"gpus": -1}},
         "resources"),
    ],
)
def test_bad_searches_are_refused_before_anything_is_recorded(model, kwargs, message):
    options = {"metric": "loss", "mode": "min", "n_trials": 2, "executor": "serial", **kwargs}
    with pytest.raises(ArgumentError, match=message):
        model.sweep("fit", **options)
    assert Run.get_all_runs() == []


def test_ranges_refuse_what_they_cannot_draw_from():
    for make, args in ((pcs.loguniform, (0, 1)), (pcs.loguniform, (1, 1)), (pcs.uniform, (2, 1)),
                       (pcs.intrange, (1.5, 3)), (pcs.intrange, (3, 1)), (pcs.intrange, (1, 3, 0))):
        with pytest.raises(ArgumentError):
            make(*args)
    assert pcs.intrange(2, 8, 2).to_dict() == {"kind": "intrange", "low": 2, "high": 8, "step": 2}


def test_a_search_with_its_own_sampler_replays_but_cannot_search_again(model):
    sweep = model.sweep("fit", space={"model.fit.depth": pcs.intrange(2, 8)}, n_trials=2,
                        metric="loss", mode="max", executor="serial",
                        search=optuna.samplers.QMCSampler(seed=4))

    assert sweep.spec.search["sampler"].endswith("QMCSampler")
    with pytest.raises(NotReproducibleError, match="its own sampler"):
        sweep.rerun(research=True)
    assert sweep.rerun(verify=True).verification.verdict == "reproduced"
    with pytest.raises(ArgumentError, match="not a search"):
        model.sweep("fit", grid={"model.fit.depth": [2]}, executor="serial").rerun(research=True)


def test_cli_search_status_and_rerun(project, cli):
    registry = str(project / "components.yaml")

    out = run_cli("sweep", "model", "-r", registry, "-e", "fit",
                  "--space", "model.fit.lr=loguniform:1e-4:1e-1", "--space", "model.fit.depth=int:2:8",
                  "--space", "model.fit.opt=sgd,adam", "--search", "tpe", "--trials", "3",
                  "--metric", "loss", "--mode", "min", "--seed", "7", "--executor", "serial",
                  "--json")
    data = json.loads(out.stdout)
    sweep_id = data["sweep_id"]
    assert data["summary"] == {"FINISHED": 3, "trials": 3}
    assert data["best"]["value"] == min(r["loss"] for r in data["trials"])

    listing = cli("status").stdout
    assert "sweep of 3 trials" in listing
    rerun = run_cli("rerun", sweep_id, "--verify", "--research", "--executor", "serial")
    assert "search run again from the seed of" in rerun.stdout and ": reproduced" in rerun.stdout

    bad = cli("sweep", "model", "-r", registry, "-e", "fit", "--space", "model.fit.lr=log:1:2",
              check=False)
    assert bad.returncode == 2 and "loguniform:1e-4:1e-1" in bad.stderr
    not_sweep = cli("rerun", data["trials"][0]["run_id"], "--workers", "2", check=False)
    assert not_sweep.returncode == 2 and "are for sweeps" in not_sweep.stderr
