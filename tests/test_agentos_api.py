"""The names of the AgentOS PCS API (pcs.run.Run reference, v0.2.1 agents) work in pcs."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from _registry_server import TOKEN, shared_registry_server
from mlflow import MlflowClient

from pcs import ArgumentSet, Component, ComponentRun, InMemoryRegistry, Run, RunCommand, _keys
from pcs import errors as pcs_errors


class Greeter:
    def __init__(self, greeting="hello"):
        self.greeting = greeting

    def greet(self, name="world"):
        return {
            "text": f"{self.greeting} {name}",
            "component": self.__component__.identifier,
        }


def test_class_attributes_of_the_reference():
    assert Run.PCS_RUN_TAG == "pcs.is_run"
    assert Run.DEFAULT_EXPERIMENT_ID == "0"
    assert Run.PASS_THROUGH_FN_PREFIXES == (
        "log", "set_tag", "list_artifacts", "search_runs", "set_terminated", "download_artifacts",
    )


def test_every_pcs_run_carries_the_pcs_run_tag():
    with Run() as plain:
        pass
    comp = Component.from_class(Greeter, instantiate=True).run_with_arg_set("greet", {}, seed=1)
    found = MlflowClient().search_runs(["0"], filter_string=f"tags.`{Run.PCS_RUN_TAG}` = 'True'")
    assert {r.info.run_id for r in found} == {plain.identifier, comp.identifier}


def test_pass_through_methods_fill_in_the_run_id():
    from matplotlib.figure import Figure

    figure = Figure()
    figure.add_subplot().plot([1, 2, 3])
    with Run() as run:
        run.log_figure(figure, "plots/line.png")
        run.log_image(np.zeros((4, 4, 3), dtype=np.uint8), "images/black.png")
        run.log_table({"a": [1, 2], "b": [3, 4]}, "tables/t.json")
        run.set_tag("stage", "train")
        found = run.search_runs(["0"])  # passed through as is: its first argument is not a run id
    assert {r.info.run_id for r in found} == {run.identifier}
    assert set(run.artifact_paths()) >= {"plots/line.png", "images/black.png", "tables/t.json"}
    assert run.tags["stage"] == "train"
    with pytest.raises(AttributeError, match="log_nothing"):
        run.log_nothing()
    with pytest.raises(AttributeError):
        run.not_a_client_method  # noqa: B018


def test_to_spec_nested_and_flattened():
    with Run(run_name="spec me") as run:
        run.log_params({"lr": 0.1})
        run.log_metric("loss", 0.5)
    spec = run.to_spec()
    assert spec["identifier"] == run.identifier
    assert spec["info"]["run_name"] == "spec me" and spec["info"]["status"] == "FINISHED"
    assert spec["data"]["params"] == {"lr": "0.1"} and spec["data"]["metrics"] == {"loss": 0.5}

    flat = run.to_spec(flatten=True)
    assert flat["identifier"] == run.identifier
    assert flat["info.status"] == "FINISHED"
    assert flat["data.params.lr"] == "0.1" and flat["data.metrics.loss"] == 0.5
    assert all(not isinstance(v, dict) or not v for v in flat.values())


def test_component_run_spec_holds_its_run_command():
    run = Component.from_class(Greeter, instantiate=True).run_with_arg_set(
        "greet", {"Greeter": {"greet": {"name": "pcs"}}}, seed=5
    )
    spec = Run.from_existing_run_id(run.identifier).to_spec()
    assert spec["run_command"] == run.run_command.identifier  # AgentOS: the id, not the spec
    command = run.run_command.to_spec()
    assert command["argument_set"] == {"Greeter": {"greet": {"name": "pcs"}}}
    assert command["seed"] == 5
    flat = run.to_spec(flatten=True)
    assert flat["run_command"] == run.run_command.identifier


def test_from_run_command_executes_it():
    component = Component.from_class(Greeter, instantiate=True)
    command = RunCommand.create(
        component, "greet", ArgumentSet({"Greeter": {"__init__": {"greeting": "hi"}}}), seed=2
    )
    run = Run.from_run_command(command)
    assert isinstance(run, ComponentRun) and run.status == "FINISHED"
    assert run.return_value["text"] == "hi world"
    assert run.run_command.identifier == command.identifier


def test_managed_objects_carry_their_component(tmp_path):
    (tmp_path / "tools.py").write_text(textwrap.dedent("""
        def who(): return __component__.identifier


        class Counter:
            @classmethod
            def who(cls): return cls.__component__.identifier
    """))
    (tmp_path / "components.yaml").write_text(textwrap.dedent("""
        repos: {here: {type: local, path: .}}
        components:
          tools_module: {repo: here, file_path: tools.py}
          counter_class: {repo: here, file_path: tools.py, class_name: Counter}
    """))
    instance_run = Component.from_class(Greeter, instantiate=True).run_with_arg_set("greet", {}, seed=1)
    assert instance_run.return_value["component"] == "Greeter"
    module = Component.from_registry_file(tmp_path / "components.yaml", "tools_module")
    assert module.run("who") == "tools_module"
    klass = Component.from_registry_file(tmp_path / "components.yaml", "counter_class")
    assert klass.run("who") == "counter_class"


class Scorer:
    def score(self, rounds=3):
        import mlflow

        for step in range(rounds):
            mlflow.log_metric("score", 10.0 - step, step=step)
        mlflow.log_metric("steps", rounds)
        return rounds


def test_get_run_spec_on_every_registry(tmp_path_factory):
    """After run.to_registry(reg), reg.get_run_spec(id) == run.to_spec(): in memory,
    through a YAML file and on the registry server; imports still read the record."""
    from pcs.registry import WebRegistry  # the AgentOS import path

    run = Component.from_class(Scorer, instantiate=True).run_with_arg_set("score", {}, seed=1)
    spec = run.to_spec()
    assert spec["run_command"] == run.run_command.identifier
    assert spec["data"]["metrics"] == {"score": 8.0, "steps": 3.0}
    memory = run.to_registry()
    assert isinstance(memory, InMemoryRegistry)
    assert memory.get_run_spec(run.identifier) == spec
    assert memory.get_run_spec(run.identifier, flatten=False) == {
        run.identifier: {k: v for k, v in spec.items() if k != "identifier"}
    }
    # the record an import reads keeps the whole history
    assert [p[0] for p in memory.get_run_record(run.identifier)["metrics"]["score"]] == [10.0, 9.0, 8.0]

    path = tmp_path_factory.mktemp("yaml_registry") / "registry.yaml"
    memory.to_yaml(path)
    assert InMemoryRegistry.from_yaml(path).get_run_spec(run.identifier) == spec

    url, _ = shared_registry_server(tmp_path_factory)
    web = WebRegistry(url, token=TOKEN)
    run.to_registry(web, include_artifacts=True)
    assert web.get_run_spec(run.identifier) == spec
    assert web.get_run_record(run.identifier)["tags"][_keys.RUN_COMMAND_ID] == run.run_command.identifier

    with Run(run_name="plain") as plain:
        plain.log_metric("m", 1.5)
    assert "run_command" not in plain.to_spec()
    assert plain.to_registry().get_run_spec(plain.identifier) == plain.to_spec()


def test_get_run_spec_of_a_record_written_before_latest_metrics():
    record = {
        "identifier": "0" * 32, "pcs_format": 1, "status": "FINISHED", "run_name": "old",
        "params": {}, "tags": {}, "inner_runs": [], "run_command": None,
        "metrics": {"loss": [[3.0, 0, 10], ["NaN", 1, 11], [1.0, 2, 9]]},
    }
    registry = InMemoryRegistry()
    registry.add_run_spec(record)
    spec = registry.get_run_spec("0" * 32)
    assert spec["data"]["metrics"] == {"loss": 1.0} and spec["info"]["run_name"] == "old"
    assert "run_command" not in spec
    assert registry.get_run_spec("1" * 32, error_if_not_found=False) == {}


def test_a_record_written_before_the_spec_fields_is_upgraded_without_force(tmp_path_factory):
    """Re-exporting a run into a registry that holds its older record (no experiment_id,
    latest_metrics...) is the same run, not a conflict: no --force needed."""
    from pcs.web_registry import WebRegistry

    run = Component.from_class(Scorer, instantiate=True).run_with_arg_set("score", {}, seed=2)
    record = run.to_registry().get_run_record(run.identifier)
    old = {k: v for k, v in record.items()
           if k not in ("experiment_id", "user_id", "artifact_uri", "latest_metrics")}
    url, _ = shared_registry_server(tmp_path_factory)
    for registry in (InMemoryRegistry(), WebRegistry(url, token=TOKEN)):
        registry.add_run_spec(old)
        run.to_registry(registry)
        assert registry.get_run_record(run.identifier) == record
        assert registry.get_run_spec(run.identifier) == run.to_spec()
    changed = dict(old, run_name="renamed")
    registry = InMemoryRegistry()
    registry.add_run_spec(changed)
    with pytest.raises(pcs_errors.RegistryConflictError):
        run.to_registry(registry)
