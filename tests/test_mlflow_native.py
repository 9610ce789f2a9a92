"""pcs is invisible to code that already uses MLflow: one active run, arguments as params."""

from __future__ import annotations

import threading

import mlflow
from mlflow import MlflowClient

import pcs
from pcs import Component, Run, active_component_run


class Trainer:
    """Code written for plain MLflow: it logs through the fluent API."""

    def train(self, lr=0.1, epochs=3):
        import mlflow

        mlflow.log_param("optimizer", "sgd")
        for epoch in range(epochs):
            mlflow.log_metric("loss", 1.0 / (epoch + 1) * lr, step=epoch)
        return mlflow.active_run().info.run_id


class Fitter:
    """Autologging: sklearn's autolog logs into whatever run is active."""

    def fit(self, n=20):
        import mlflow
        import numpy as np
        from sklearn.linear_model import LinearRegression

        mlflow.sklearn.autolog(log_models=False, log_datasets=False, silent=True)
        try:
            x = np.arange(n, dtype=float).reshape(-1, 1)
            LinearRegression().fit(x, 2 * x.ravel() + 1)
        finally:
            mlflow.sklearn.autolog(disable=True)
        return n


class Nester:
    def nest(self):
        import mlflow

        outer = mlflow.active_run().info.run_id
        with mlflow.start_run(nested=True, run_name="plain inner") as inner:
            mlflow.log_metric("inside", 1.0)
            with Run(run_name="pcs inside plain") as deepest:
                deepest.log_metric("deepest", 2.0)
            ids = [outer, inner.info.run_id, deepest.identifier]
        return ids


def test_fluent_logging_inside_an_entry_point_lands_in_the_component_run(store):
    run = Component.from_class(Trainer, instantiate=True).run_with_arg_set(
        "train", {"Trainer": {"train": {"lr": 0.5, "epochs": 3}}}, seed=1
    )

    assert run.return_value == run.identifier  # mlflow.active_run() was the component run
    assert run.params["optimizer"] == "sgd"
    assert [m.value for m in run.metric_history("loss")] == [0.5, 0.25, 0.5 / 3]
    assert mlflow.active_run() is None
    # no stray run was made by the fluent calls
    client = MlflowClient()
    assert [r.info.run_id for r in client.search_runs([run.experiment_id])] == [run.identifier]


def test_autologging_inside_an_entry_point_lands_in_the_component_run(store):
    run = Component.from_class(Fitter, instantiate=True).run_with_arg_set("fit", {}, seed=1)

    assert run.params.get("fit_intercept") == "True"  # logged by sklearn's autolog
    assert any(key.startswith("training_") for key in run.metrics)
    assert len(MlflowClient().search_runs([run.experiment_id])) == 1


def test_pcs_run_inside_mlflow_start_run_is_its_inner_run(store):
    with mlflow.start_run(run_name="plain outer") as outer:
        with Run(run_name="pcs inner") as inner:
            assert mlflow.active_run().info.run_id == inner.identifier
            assert pcs.active_run() is inner
        assert mlflow.active_run().info.run_id == outer.info.run_id
        comp = Component.from_class(Trainer, instantiate=True).run_with_arg_set("train", {}, seed=2)

    assert inner.tags["mlflow.parentRunId"] == outer.info.run_id
    assert comp.tags["mlflow.parentRunId"] == outer.info.run_id
    assert pcs.active_run() is None and mlflow.active_run() is None


def test_pcs_and_mlflow_runs_nest_in_any_order(store):
    with Run(run_name="pcs outer") as outer:
        assert mlflow.active_run().info.run_id == outer.identifier
        assert mlflow.active_run().pcs_run is outer
        comp = Component.from_class(Nester, instantiate=True).run_with_arg_set("nest", {}, seed=1)

    comp_id, plain_id, deepest_id = comp.return_value
    assert comp_id == comp.identifier
    client = MlflowClient()
    assert comp.tags["mlflow.parentRunId"] == outer.identifier
    assert client.get_run(plain_id).data.tags["mlflow.parentRunId"] == comp.identifier
    assert client.get_run(deepest_id).data.tags["mlflow.parentRunId"] == plain_id
    assert client.get_run(plain_id).data.metrics == {"inside": 1.0}
    assert {r.identifier for r in outer.inner_runs} == {comp.identifier}
    assert all(client.get_run(i).info.status == "FINISHED" for i in (comp_id, plain_id, deepest_id))


def test_active_runs_are_per_thread_as_mlflow_documents(store):
    seen = {}

    with Run(run_name="main thread") as main_run:

        def other() -> None:
            seen["mlflow"] = mlflow.active_run()
            seen["pcs"] = pcs.active_run()
            with Run(run_name="thread run") as thread_run:
                seen["inner"] = thread_run

        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
        assert pcs.active_run() is main_run

    assert seen["mlflow"] is None and seen["pcs"] is None
    # a run started in another thread is not an inner run of this thread's run
    assert "mlflow.parentRunId" not in seen["inner"].tags


def test_active_component_run_finds_the_run_through_plain_mlflow_nesting(store):
    class Agent:
        def act(self):
            import mlflow

            with mlflow.start_run(nested=True):
                return active_component_run(self).identifier

    run = Component.from_class(Agent, instantiate=True).run_with_arg_set("act", {}, seed=1)
    assert run.return_value == run.identifier


def test_arguments_and_seed_are_mlflow_params_that_search_finds(store):
    agent = Component.from_class(Trainer, instantiate=True)
    five = agent.run_with_arg_set("train", {"Trainer": {"train": {"lr": 0.5, "epochs": 5}}}, seed=7)
    agent.run_with_arg_set("train", {"Trainer": {"train": {"lr": 0.5, "epochs": 2}}}, seed=8)

    assert five.params["Trainer.train.epochs"] == "5"
    assert five.params["Trainer.train.lr"] == "0.5"
    assert five.params["pcs.seed"] == "7"
    found = mlflow.search_runs(
        experiment_ids=[five.experiment_id],
        filter_string="params.`Trainer.train.epochs` = '5'",
        output_format="list",
    )
    assert [r.info.run_id for r in found] == [five.identifier]
    by_tag = mlflow.search_runs(
        experiment_ids=[five.experiment_id],
        filter_string=f"tags.`{Run.PCS_RUN_TAG}` = 'True'",
        output_format="list",
    )
    assert len(by_tag) == 2


class Steady:
    def train(self, lr=0.1, epochs=3):
        import random

        import mlflow

        for epoch in range(epochs):
            mlflow.log_metric("loss", random.random() * lr, step=epoch)


def test_reruns_log_the_same_params(store):
    original = Component.from_class(Steady, instantiate=True).run_with_arg_set(
        "train", {"Steady": {"train": {"epochs": 2}}}, seed=3
    )
    again = Run.from_existing_run_id(original.identifier).rerun(verify=True)

    assert again.params == original.params
    assert again.verification.verdict == "reproduced"


def test_values_render_as_short_yaml_and_long_ones_as_a_pointer(store):
    class Echo:
        def echo(self, text="x", flag=True, items=(), nested=None):
            return [text, flag, list(items), nested]

    long_text = "y" * 7000
    run = Component.from_class(Echo, instantiate=True).run_with_arg_set(
        "echo",
        {"Echo": {"echo": {"text": "5", "flag": False, "items": [1, 2], "nested": {"a": long_text}}}},
        seed=1,
    )

    params = run.params
    assert params["Echo.echo.text"] == "'5'"  # a string, not the int 5
    assert params["Echo.echo.flag"] == "false"
    assert params["Echo.echo.items"] == "[1, 2]"
    assert params["Echo.echo.nested"].startswith("sha256:")
    # the value itself stays in the run command
    assert run.run_command.argument_set.get_function_args("Echo", "echo")["nested"] == {"a": long_text}
