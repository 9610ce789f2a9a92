"""Code written for AgentOS v0.2.1's ``pcs`` runs on ours.

The scenarios are those of AgentOS's own offline PCS tests (argument sets,
registries from dicts and files, repos in registries, runs and their specs,
nested and flat specs, the component REPL demo), told again against pcs, plus
the ``add_dependency`` clash AgentOS refused and pcs used to let through.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _registry_server import TOKEN, shared_registry_server

import pcs
from pcs import ArgumentSet, Component, ComponentRun, InMemoryRegistry, Run, RunCommand
from pcs.registry import Registry
from pcs.repo import LocalRepo, Repo
from pcs.specs import flatten_spec, unflatten_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RANDOM_AGENT = EXAMPLES / "random_agent" / "components.yaml"


class Walker:
    def __init__(self):
        self.started = type(self.env).__name__

    def reset_env(self):
        return self.env.reset()


class Floor:
    def reset(self):
        return "reset"


class Shared:
    class_member = "on the class"

    def __init__(self):
        self.x = "on the instance"


class Pair:
    def __init__(self, x):
        self._x = x

    def fn(self, input):
        return [self._x, input]


# -- argument sets ----------------------------------------------------------------------


def test_argument_set_update_and_getters():
    args = ArgumentSet({"1": {"2": {"3": 4}}})
    assert args == ArgumentSet({"1": {"2": {"3": 4}}})
    before = args.identifier
    args.update("1", "2", {"3": 5, "10": 11})
    assert args.get_component_args("1") == {"2": {"3": 5, "10": 11}}
    assert args.get_function_args("1", "2") == {"3": 5, "10": 11}
    assert args.get_arg("1", "2", "3") == 5
    assert args.get_arg("1", "2", "missing") == {}  # AgentOS's answer for an unset argument
    assert args.get_component_args("nobody") == {}
    assert args.identifier != before  # content-addressed: the id follows the content
    assert args == ArgumentSet({"1": {"2": {"3": 5, "10": 11}}})
    args.update("new", "__init__", {"a": 0})
    assert args.get_arg("new", "__init__", "a") == 0


def test_argument_set_update_refuses_what_it_cannot_record():
    args = ArgumentSet()
    with pytest.raises(pcs.ArgumentError, match="as a mapping"):
        args.update("agent", "run", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(pcs.UnserializableArgumentError, match="cannot record"):
        args.update("agent", "run", {"f": print})
    assert args.to_dict() == {}  # a refused update leaves the set as it was


def test_argument_set_specs_in_agentos_forms():
    args = ArgumentSet({"agent": {"run": {"n": 3}}})
    assert args.to_spec() == {args.identifier: {"agent": {"run": {"n": 3}}}}
    assert args.to_spec(flatten=True) == {"agent": {"run": {"n": 3}}, "identifier": args.identifier}
    for spec in (args.to_spec(), args.to_spec(flatten=True), args.registry_spec()):
        assert ArgumentSet.from_spec(spec) == args
    with pytest.raises(pcs.ArgumentError, match="hashes to"):
        ArgumentSet.from_spec({"0" * 64: {"agent": {"run": {"n": 3}}}})
    registry = args.to_registry()
    assert ArgumentSet.from_registry(registry, args.identifier) == args


# -- registries ---------------------------------------------------------------------------


def _dummy_registry_dict(version: str) -> dict:
    return {
        "repos": {"dev_repo": {"type": "local", "path": "."}},
        "components": {
            f"cartpole=={version}": {"repo": "dev_repo", "file_path": "env.py",
                                     "class_name": "CartPole", "dependencies": {}},
            f"r2d2_agent=={version}": {"repo": "dev_repo", "file_path": "agent.py",
                                       "class_name": "R2D2Agent",
                                       "dependencies": {"environment": f"cartpole=={version}"}},
        },
    }


def test_registry_from_dict_filters_and_flattens():
    data = _dummy_registry_dict("test_key")
    data["components"]["cartpole==master"] = {"class_name": "CartPole", "repo": "dev_repo",
                                              "dependencies": {}}
    registry = Registry.from_dict(data)
    assert isinstance(registry, InMemoryRegistry)
    assert set(registry.get_component_specs()) == {
        "cartpole==test_key", "cartpole==master", "r2d2_agent==test_key"
    }
    assert set(registry.get_component_specs(filter_by_name="cartpole")) == {
        "cartpole==test_key", "cartpole==master"
    }
    assert set(registry.get_component_specs(filter_by_version="master")) == {"cartpole==master"}
    assert registry.get_component_specs(filter_by_name="nothing") == {}

    flat = registry.get_component_spec("r2d2_agent", flatten=True)
    assert flat["identifier"] == "r2d2_agent==test_key"
    assert (flat["name"], flat["version"], flat["class_name"]) == (
        "r2d2_agent", "test_key", "R2D2Agent"
    )
    nested = registry.get_component_spec("cartpole", "master", flatten=False)
    assert nested == {"cartpole==master": data["components"]["cartpole==master"]}
    # pcs's own form stays the default: flat, with the identifier only
    assert registry.get_component_spec("cartpole==master") == {
        "identifier": "cartpole==master", **data["components"]["cartpole==master"]
    }
    with pytest.raises(pcs.SpecNotFoundError, match="no component 'cartpole'"):
        registry.get_component_spec("cartpole")  # two versions: the name alone is ambiguous
    assert registry.get_component_spec("ghost", error_if_not_found=False) == {}
    assert registry.get_repo_spec("ghost", error_if_not_found=False) == {}
    assert registry.get_repo_spec("dev_repo", flatten=False) == {
        "dev_repo": {"type": "local", "path": "."}
    }


def test_registry_from_yaml_runs_and_accepts_components():
    from pcs.exceptions import RegistryException

    registry = Registry.from_yaml(RANDOM_AGENT)
    agent = Component.from_registry(registry, "agent")
    assert (agent.name, agent.version, agent.identifier) == ("agent", None, "agent")
    assert agent.dependencies["environment"].identifier == "environment"
    run = agent.run_with_arg_set(
        "run_episodes", ArgumentSet({"agent": {"run_episodes": {"num_episodes": 2}}}), seed=3
    )
    assert run.status == "FINISHED"

    walker = Component.from_class(Walker, instantiate=True)
    walker.add_dependency(Component.from_class(Floor, instantiate=True), "env")
    registry.add_component(walker)
    assert registry.get_component_spec("Walker", walker.version)
    assert registry.get_component_spec("Floor")  # the dependency came along
    walker.class_name = "Renamed"
    with pytest.raises(RegistryException, match="already holds a different component"):
        registry.add_component(walker)
    registry.add_component(walker, force=True)
    assert registry.get_component_spec("Walker", flatten=True)["class_name"] == "Renamed"
    alone = InMemoryRegistry()
    alone.add_component(walker, recurse=False)
    assert alone.identifiers("components") == ["Walker"]


def test_registry_exception_is_the_registry_error():
    from pcs.exceptions import RegistryException

    assert RegistryException is pcs.RegistryError
    with pytest.raises(RegistryException, match="does not exist"):
        Registry.from_yaml("no-such-file.yaml")


# -- repos ----------------------------------------------------------------------------------


def test_local_repo_to_and_from_registry(tmp_path):
    repo = LocalRepo("test_id")
    registry = repo.to_registry()
    again = Repo.from_registry(registry, "test_id")
    assert again.identifier == repo.identifier
    assert isinstance(again, LocalRepo) and again.local_repo_path == repo.local_repo_path
    assert repo.local_repo_path == Path.cwd()

    other = LocalRepo("test_id", local_dir=tmp_path)
    with pytest.raises(pcs.RegistryConflictError):
        other.to_registry(registry)
    other.to_registry(registry, force=True)
    assert Repo.from_registry(registry, "test_id").local_repo_path == tmp_path.resolve()


# -- runs --------------------------------------------------------------------------------------


def test_run_tracking_through_the_mlflow_run_property():
    run = Run()
    assert run.identifier == run._mlflow_run.info.run_id
    run.log_metric("test_metric", 1)
    assert run.data.metrics["test_metric"] == 1
    run.set_tag("test_tag", "tag_val")
    assert run.data.tags["test_tag"] == "tag_val"
    run.end()


def test_component_run_and_run_command_specs_round_trip_through_a_registry():
    component = Component.from_class(Pair, instantiate=True)
    run = component.run_with_arg_set(
        "fn", ArgumentSet({"Pair": {"__init__": {"x": 1}, "fn": {"input": "hi"}}})
    )
    assert run.run_command.component == component and run.run_command.entry_point == "fn"
    assert run.run_command.run().run_command.component == component

    registry = InMemoryRegistry()
    run.run_command.to_registry(registry)
    assert registry.get_run_command_spec(run.run_command.identifier) == run.run_command.to_spec()
    registry.add_run_spec(run.to_spec())
    assert registry.get_run_spec(run.identifier) == run.to_spec()
    assert run.to_spec()["run_command"] == run.run_command.identifier
    nested = registry.get_run_spec(run.identifier, flatten=False)
    assert list(nested) == [run.identifier] and "identifier" not in nested[run.identifier]


def test_flat_run_spec_holds_no_dicts():
    with Run(run_name="no metrics") as run:
        pass
    flat = run.to_spec(flatten=True)
    assert not any(isinstance(value, dict) for value in flat.values())
    assert "data.metrics" not in flat and flat["info.status"] == "FINISHED"


def test_component_repl_demo():
    agent = Component.from_class(Walker, instantiate=True)
    env = Component.from_class(Floor, instantiate=True)
    instance = Component.from_class(Shared, instantiate=True)
    same_name_class = Component.from_class(Shared, instantiate=False)
    renamed_class = Component.from_class(Shared, identifier="ClassDependency", instantiate=False)

    agent.add_dependency(env, attribute_name="env")
    agent.add_dependency(instance)
    with pytest.raises(pcs.PcsError):
        agent.add_dependency(same_name_class)  # same identifier, different component
    agent.add_dependency(renamed_class)

    assert agent.dependencies["Shared"].get_object().x == "on the instance"
    klass = agent.dependencies["ClassDependency"].get_object()
    assert isinstance(klass, type) and not hasattr(klass, "x") and klass().x == "on the instance"

    run = agent.run_with_arg_set("reset_env")
    assert type(run) is ComponentRun and type(run.run_command) is RunCommand
    assert run.run_command.component == agent and run.run_command.entry_point == "reset_env"
    for args in run.run_command.argument_set.to_spec().values():
        assert args == {}
    copy = ComponentRun(existing_run_id=run.identifier)
    assert copy.run_command == run.run_command
    assert copy._mlflow_run.to_dictionary() == run._mlflow_run.to_dictionary()


def test_add_dependency_refuses_to_replace_a_wired_one():
    agent = Component.from_class(Walker, instantiate=True)
    floor = Component.from_class(Floor, instantiate=True)
    agent.add_dependency(floor, "env")
    agent.add_dependency(floor, "env")  # the very same wiring again changes nothing
    with pytest.raises(pcs.DependencyError, match="already has the dependency 'Floor' as 'env'"):
        agent.add_dependency(Component.from_class(Shared, instantiate=True), "env")
    assert agent.dependencies["env"] is floor
    assert agent.run("reset_env") == "reset"


# -- specs ---------------------------------------------------------------------------------------


def test_flatten_and_unflatten_a_repo_spec():
    nested = Registry.from_yaml(RANDOM_AGENT).get_repo_spec("local_dir", flatten=False)
    assert nested == {"local_dir": {"type": "local", "path": "."}}  # as the file says
    flat = flatten_spec(nested)
    assert flat == {"identifier": "local_dir", "name": "local_dir", "version": None,
                    "type": "local", "path": "."}
    back = unflatten_spec(flat)
    assert back == nested
    kept = unflatten_spec(flat, preserve_inner_identifier=True)
    assert kept["local_dir"]["identifier"] == "local_dir" and kept["local_dir"]["version"] is None
    assert flatten_spec(back)["type"] == "local"
    back["local_dir"]["path"] = "elsewhere"  # copies, never shared
    flat["path"] = "yet elsewhere"
    assert nested["local_dir"]["path"] == "."


def test_flatten_a_versioned_spec_and_refuse_bad_ones():
    nested = {"sb3_agent==test_staging": {"repo": "sb3_agent_gh"}}
    flat = flatten_spec(nested)
    assert (flat["identifier"], flat["name"], flat["version"]) == (
        "sb3_agent==test_staging", "sb3_agent", "test_staging"
    )
    assert unflatten_spec(flat) == nested
    with pytest.raises(pcs.RegistryError, match="exactly one key"):
        flatten_spec({"a": {}, "b": {}})
    with pytest.raises(pcs.RegistryError, match="disagrees with its identifier"):
        flatten_spec({"a==1": {"version": "2"}})
    with pytest.raises(pcs.RegistryError, match="needs a string 'identifier'"):
        unflatten_spec({"type": "local"})


# -- the web registry at AgentOS's API root -----------------------------------------------------


def test_web_registry_takes_the_api_root(tmp_path_factory):
    from pcs.registry import WebRegistry

    url, _ = shared_registry_server(tmp_path_factory)
    registry = WebRegistry(f"{url}/api/v1/", token=TOKEN)
    assert registry.url == url
    LocalRepo("root_form", local_dir=".").to_registry(registry)
    assert WebRegistry(url).get_repo_spec("root_form")["type"] == "local"
    with pytest.raises(pcs.RegistryAuthError, match="--token-file PATH"):  # no token: say how
        LocalRepo("no_token", local_dir=".").to_registry(WebRegistry(url))
