"""Registries and argument sets: specs, YAML, conflicts, AgentOS shape."""

from __future__ import annotations

import textwrap

import pytest

import pcs
from pcs import ArgumentSet, Component, InMemoryRegistry, LocalRepo, Run


def test_argument_set_is_content_addressed():
    a = ArgumentSet({"agent": {"run": {"n": 5, "lr": 0.1}}})
    b = ArgumentSet({"agent": {"run": {"lr": 0.1, "n": 5}}})
    c = ArgumentSet({"agent": {"run": {"n": 6, "lr": 0.1}}})
    assert a == b and hash(a) == hash(b) and a.identifier == b.identifier
    assert a != c  # compares content, not an object with itself
    assert ArgumentSet.from_spec(a.to_spec()) == a
    assert a.get_function_args("agent", "run") == {"n": 5, "lr": 0.1}
    assert a.get_function_args("other", "run") == {}
    assert a.with_args("agent", "run", n=6) == c
    assert a.merged({"agent": {"run": {"n": 6}}}) == c


def test_argument_set_yaml_and_registry(tmp_path):
    a = ArgumentSet({"agent": {"__init__": {"x": [1, 2]}, "run": {"name": "a"}}})
    a.to_yaml(tmp_path / "args.yaml")
    assert ArgumentSet.from_yaml(tmp_path / "args.yaml") == a
    registry = a.to_registry()
    assert ArgumentSet.from_registry(registry, a.identifier) == a


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"agent": 5}, "must map a component name"),
        ({"agent": {"run": [1]}}, "must map a function name"),
        ({"agent": {"run": {"f": print}}}, "cannot record"),
        ({"agent": {"run": {"d": {1: 2}}}}, "string keys"),
        ([1, 2], "is a mapping"),
    ],
)
def test_argument_set_refuses_bad_shapes(bad, match):
    with pytest.raises(pcs.ArgumentError, match=match):
        ArgumentSet(bad)


def test_argument_set_from_bad_files(tmp_path):
    with pytest.raises(pcs.ArgumentError, match="does not exist"):
        ArgumentSet.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [")
    with pytest.raises(pcs.ArgumentError, match="not valid YAML"):
        ArgumentSet.from_yaml(tmp_path / "bad.yaml")
    tampered = ArgumentSet({"a": {"f": {"x": 1}}}).registry_spec() | {"identifier": "0" * 64}
    with pytest.raises(pcs.ArgumentError, match="hashes to"):
        ArgumentSet.from_spec(tampered)


AGENTOS_YAML = """
repos:
  local_dir:
    type: local
    path: .
components:
  env==1.0:
    repo: local_dir
    file_path: ./env.py
    class_name: Env
    instantiate: true
  agent:
    repo: local_dir
    file_path: agent.py
    class_name: Agent
    instantiate: true
    dependencies:
      env: env==1.0
"""


@pytest.fixture
def agentos_registry(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "env.py").write_text("class Env:\n    def obs(self):\n        return 41\n")
    (folder / "agent.py").write_text(
        "class Agent:\n    def act(self, plus=1):\n        return self.env.obs() + plus\n"
    )
    (folder / "components.yaml").write_text(AGENTOS_YAML)
    return folder / "components.yaml"


def test_yaml_registry_round_trip_and_transitive_lookup(agentos_registry, tmp_path):
    registry = InMemoryRegistry.from_yaml(agentos_registry)
    components, repos = registry.get_component_dag_specs("agent")
    assert set(components) == {"agent", "env==1.0"}
    assert set(repos) == {"local_dir"}
    assert registry.get_component_spec("env")["identifier"] == "env==1.0"  # unique name match
    out = tmp_path / "copy.yaml"
    registry.to_yaml(out)
    again = InMemoryRegistry.from_yaml(out)
    assert again.to_dict() == registry.to_dict()
    assert InMemoryRegistry.from_dict(registry.to_dict()).to_dict() == registry.to_dict()


def test_components_run_from_a_registry_file_with_relative_paths(store, agentos_registry, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the registry's folder: paths resolve against the file
    agent = Component.from_registry_file(agentos_registry, "agent")
    assert agent.dependencies["env"].identifier == "env==1.0"
    run = agent.run_with_arg_set("act", {"agent": {"act": {"plus": 2}}})
    assert run.return_value == 43


def test_registry_conflicts_are_refused_unless_forced():
    registry = InMemoryRegistry()
    registry.add_repo_spec({"identifier": "r", "type": "local", "path": "/a"})
    registry.add_repo_spec({"identifier": "r", "type": "local", "path": "/a"})  # equal: fine
    with pytest.raises(pcs.RegistryConflictError, match="force=True"):
        registry.add_repo_spec({"identifier": "r", "type": "local", "path": "/b"})
    registry.add_repo_spec({"identifier": "r", "type": "local", "path": "/b"}, force=True)
    assert registry.get_repo_spec("r")["path"] == "/b"


def test_missing_specs_and_bad_registries(tmp_path):
    registry = InMemoryRegistry()
    with pytest.raises(pcs.SpecNotFoundError, match="no component 'x'"):
        registry.get_component_spec("x")
    with pytest.raises(pcs.RegistryError, match="does not exist"):
        InMemoryRegistry.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("components: [1, 2]")
    with pytest.raises(pcs.RegistryError, match="must map identifiers"):
        InMemoryRegistry.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "new.yaml").write_text("pcs_format: 99\n")
    with pytest.raises(pcs.FormatVersionError, match="Upgrade pcs"):
        InMemoryRegistry.from_yaml(tmp_path / "new.yaml")
    (tmp_path / "type.yaml").write_text(
        "repos: {r: {type: svn, path: .}}\ncomponents: {c: {repo: r, file_path: c.py}}\n"
    )
    with pytest.raises(pcs.RegistryError, match="type 'svn'"):
        Component.from_registry_file(tmp_path / "type.yaml", "c")
    (tmp_path / "missing_dep.yaml").write_text(
        "repos: {r: {type: local, path: .}}\n"
        "components: {c: {repo: r, file_path: c.py, dependencies: {d: nothere}}}\n"
    )
    with pytest.raises(pcs.SpecNotFoundError, match="nothere"):
        Component.from_registry_file(tmp_path / "missing_dep.yaml", "c")


def test_run_to_registry_adds_run_command_components_and_repos(store, agentos_registry):
    agent = Component.from_registry_file(agentos_registry, "agent")
    run = agent.run_with_arg_set("act", {}, seed=4)
    registry = Run.from_existing_run_id(run.identifier).to_registry()
    assert registry.has_run(run.identifier)
    spec = registry.get_run_record(run.identifier)
    assert spec["run_command"] == run.run_command.identifier
    assert spec["status"] == "FINISHED"
    assert registry.get_run_spec(run.identifier) == run.to_spec()
    assert registry.get_run_command_spec(run.run_command.identifier) == run.run_command.to_spec()
    assert set(registry.identifiers("components")) == {"agent", "env==1.0"}
    assert registry.identifiers("repos") == ["local_dir"]
    # a conflicting spec is refused unless forced
    other = InMemoryRegistry()
    other.add_repo_spec({"identifier": "local_dir", "type": "local", "path": "/elsewhere"})
    with pytest.raises(pcs.RegistryConflictError):
        run.to_registry(other)
    run.to_registry(other, force=True)
    assert other.get_repo_spec("local_dir")["path"] != "/elsewhere"


def test_local_repo_reads_files(tmp_path):
    (tmp_path / "m.py").write_text("X = 1\n")
    repo = LocalRepo("r", tmp_path)
    assert repo.read_source("m.py") == "X = 1\n"
    with pytest.raises(pcs.ComponentFileNotFoundError, match="does not exist"):
        repo.read_source("n.py")
    assert repo.to_spec() == {"identifier": "r", "type": "local", "path": str(tmp_path.resolve())}


# later AgentOS versions put every spec under "specs:", each with a "type:"
SPECS_FORMAT = """\
specs:
  here:
    type: LocalRepo
    path: .
  agent:
    type: Instance
    instance_of:
      type: Class
      name: Agent
      module: {type: Module, repo: "spec:here", file_path: ./agent.py}
"""


def test_registry_files_pcs_cannot_interpret_are_refused_by_name(tmp_path):
    (tmp_path / "specs.yaml").write_text(SPECS_FORMAT)
    with pytest.raises(pcs.RegistryError, match="'specs:' format of later AgentOS") as caught:
        InMemoryRegistry.from_yaml(tmp_path / "specs.yaml")
    assert "'specs'" in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "typo.yaml").write_text(
        "repos: {r: {type: local, path: .}}\ncomponets: {c: {repo: r, file_path: c.py}}\nextra: 1\n"
    )
    with pytest.raises(pcs.RegistryError, match="top-level key\\(s\\) 'componets', 'extra'"):
        InMemoryRegistry.from_yaml(tmp_path / "typo.yaml")
    with pytest.raises(pcs.RegistryError, match="'specs:' format"):
        InMemoryRegistry({"specs": {}})
    (tmp_path / "list.yaml").write_text("- repos\n- components\n")
    with pytest.raises(pcs.RegistryError, match="is not a registry"):
        InMemoryRegistry.from_yaml(tmp_path / "list.yaml")


def test_agentos_empty_registries_list_is_accepted_and_a_full_one_refused(tmp_path):
    (tmp_path / "old.yaml").write_text(AGENTOS_YAML + "registries: []\nruns: {}\nrun_commands: {}\n")
    registry = InMemoryRegistry.from_yaml(tmp_path / "old.yaml")
    assert set(registry.identifiers("components")) == {"agent", "env==1.0"}
    (tmp_path / "nested.yaml").write_text(AGENTOS_YAML + "registries: [other.yaml]\n")
    with pytest.raises(pcs.RegistryError, match="'registries:'"):
        InMemoryRegistry.from_yaml(tmp_path / "nested.yaml")


def test_registry_files_are_read_with_the_safe_loader(tmp_path):
    bomb = "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 9 if i else ["lol"] * 9) + "]\n"
        for i in range(12)
    )
    (tmp_path / "bomb.yaml").write_text(
        "repos:\n  r:\n    type: local\n    path: .\n    extra:\n" + textwrap.indent(bomb, " " * 6)
    )
    with pytest.raises(pcs.InputLimitError, match="alias bomb") as caught:
        InMemoryRegistry.from_yaml(tmp_path / "bomb.yaml")
    assert "\n" not in str(caught.value) and "lol" not in str(caught.value)
    (tmp_path / "bad.yaml").write_text("repos: {r: [1, 2}\n")
    with pytest.raises(pcs.RegistryError, match="bad.yaml is not valid YAML: .*line 1") as caught:
        InMemoryRegistry.from_yaml(tmp_path / "bad.yaml")
    assert "\n" not in str(caught.value)
    (tmp_path / "code.yaml").write_text("repos: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(pcs.RegistryError, match="could not determine a constructor"):
        InMemoryRegistry.from_yaml(tmp_path / "code.yaml")


def test_web_registry_is_importable_from_the_registry_module_as_in_agentos():
    import subprocess
    import sys

    from pcs.registry import WebRegistry
    from pcs.web_registry import WebRegistry as Real

    assert WebRegistry is Real
    code = "import sys, pcs.registry; print('pcs.web_registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the alias loads the HTTP client only when used
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        pcs.registry.Nope  # noqa: B018
