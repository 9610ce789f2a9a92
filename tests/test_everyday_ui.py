"""What MLflow's UI shows of pcs runs, read back through MLflow's API.

Experiments pcs creates are model-training experiments (``mlflow.experimentKind``),
so MLflow 3's UI opens them on the runs table; a kind the user chose is kept.
Every component run has a description (``mlflow.note.content``) saying what ran
and how to rerun it; a description the user gives is kept.
"""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from pcs import Component, _config, _keys


class Scorer:
    def score(self, x=1):
        return x * 2


def test_experiments_pcs_creates_are_model_training_ones():
    client = MlflowClient()
    made = _config.experiment_by_name(client, "training")
    assert client.get_experiment(made).tags[_keys.EXPERIMENT_KIND] == "custom_model_development"

    chosen = client.create_experiment("chat", tags={_keys.EXPERIMENT_KIND: "genai_development"})
    assert _config.experiment_by_name(client, "chat") == chosen
    assert client.get_experiment(chosen).tags[_keys.EXPERIMENT_KIND] == "genai_development"


def test_every_component_run_describes_itself_and_keeps_a_users_note():
    component = Component.from_class(Scorer, instantiate=True)
    run = component.run_with_arg_set("score", {"Scorer": {"score": {"x": 3}}}, seed=4)
    note = MlflowClient().get_run(run.identifier).data.tags[_keys.NOTE]
    assert "`Scorer.score` with 1 argument" in note and "seed 4" in note
    assert "`pcs rerun <this run's ID> --verify`" in note  # written before MLflow gives the id

    class Annotated:
        def go(self):
            mlflow.set_tag(_keys.NOTE, "my own words")  # written while the run runs
            return 1

    mine = Component.from_class(Annotated, instantiate=True).run_with_arg_set("go", {}, seed=1)
    assert MlflowClient().get_run(mine.identifier).data.tags[_keys.NOTE] == "my own words"
