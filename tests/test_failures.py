"""Failures that explain themselves: arguments bound before a run exists, errors recorded in the run."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import run_cli

from pcs import ArgumentError, Component, InputLimitError, LocalRepo, Run, _keys

COMPONENTS = """
repos:
  here: {type: local, path: .}
components:
  env:
    repo: here
    file_path: env.py
    class_name: Env
    instantiate: true
  agent:
    repo: here
    file_path: agent.py
    class_name: Agent
    instantiate: true
    dependencies: {env: env}
  tool:
    repo: here
    file_path: agent.py
    class_name: Tool
    instantiate: false
"""

AGENT = """
class Agent:
    def __init__(self, greedy=False):
        self.greedy = greedy

    def run_episodes(self, num_episodes=1, verbose=False):
        if num_episodes < 0:
            raise ValueError(f"num_episodes must be >= 0, got {num_episodes}")
        return [self.env.size] * num_episodes

    def crash(self):
        def deep():
            raise RuntimeError("the policy diverged\\nsecond line")
        deep()


class Tool:
    def act(self):
        return 1

    @staticmethod
    def help(topic="x"):
        return topic
"""

ENV = """
class Env:
    def __init__(self, size):
        self.size = size
"""


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "components.yaml").write_text(textwrap.dedent(COMPONENTS))
    (folder / "agent.py").write_text(textwrap.dedent(AGENT))
    (folder / "env.py").write_text(textwrap.dedent(ENV))
    return folder


def agent(project):
    return Component.from_registry_file(project / "components.yaml", "agent")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"agent": {"run_episodes": {"num_episode": 2}}},
         "agent.run_episodes has no argument 'num_episode'. Did you mean agent.run_episodes.num_episodes?"),
        ({"agent": {"__init__": {"greddy": True}}},
         "agent.__init__ has no argument 'greddy'. Did you mean agent.__init__.greedy?"),
        ({"agent": {"run_episode": {"num_episodes": 2}}},
         "has no function 'run_episode'. Did you mean agent.run_episodes?"),
        ({}, "env.__init__ needs the argument 'size'"),
        ({"agnet": {"run_episodes": {"num_episodes": 2}}}, "agnet"),
    ],
)
def test_bad_arguments_are_refused_before_any_run_exists(project, arguments, message):
    full = {"env": {"__init__": {"size": 3}}} if "size" not in message else {}
    for comp, fns in arguments.items():
        full.setdefault(comp, {}).update(fns)

    with pytest.raises(ArgumentError) as info:
        agent(project).run_with_arg_set("run_episodes", full, seed=1)

    assert message in str(info.value)
    assert Run.get_all_runs() == []  # nothing was recorded


def test_an_instance_method_of_a_component_that_is_not_instantiated(project):
    tool = Component.from_registry_file(project / "components.yaml", "tool")

    with pytest.raises(ArgumentError, match="instantiate: true"):
        tool.run_with_arg_set("act", {}, seed=1)
    assert tool.run_with_arg_set("help", {"tool": {"help": {"topic": "y"}}}, seed=1).return_value == "y"
    assert len(Run.get_all_runs()) == 1


def test_a_component_that_raises_ends_failed_with_its_error_recorded(project):
    with pytest.raises(RuntimeError, match="the policy diverged") as info:
        agent(project).run_with_arg_set("crash", {"env": {"__init__": {"size": 3}}}, seed=1)

    (run,) = Run.get_all_runs()
    assert info.value.pcs_run_id == run.identifier
    assert run.status == "FAILED"
    assert run.tags[_keys.ERROR] == "RuntimeError: the policy diverged second line"
    traceback_text = run.load_text(_keys.TRACEBACK_ARTIFACT)
    assert "in deep" in traceback_text and "RuntimeError: the policy diverged" in traceback_text


def test_a_type_error_inside_init_is_the_users_error_not_a_bad_argument(tmp_path):
    (tmp_path / "picky.py").write_text(textwrap.dedent("""
        class Picky:
            def __init__(self, x=1):
                raise TypeError("user init type error")

            def go(self):
                return 1
    """))
    component = Component.from_repo(LocalRepo("here", tmp_path), "picky", "picky.py", "Picky",
                                    instantiate=True)

    with pytest.raises(TypeError, match="user init type error"):
        component.run_with_arg_set("go", {}, seed=1)
    (run,) = Run.get_all_runs()
    assert run.status == "FAILED"
    assert run.tags[_keys.ERROR] == "TypeError: user init type error"


def test_cli_prints_one_line_with_the_run_id_and_exits_6(project, cli):
    result = run_cli("run", "agent", "-e", "run_episodes", "-a", "env.__init__.size=3",
                     "-a", "agent.run_episodes.num_episodes=-1", cwd=project, check=False)

    assert result.returncode == 6
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    (run,) = Run.get_all_runs()
    # the end of the traceback, then one line naming the run and the error (issue 20.4)
    assert lines[-1].startswith(f"Error: run {run.identifier} FAILED")
    assert "ValueError: num_episodes must be >= 0" in lines[-1]
    assert lines[0] == "Traceback (last lines):" and len(lines) <= 8
    assert lines[-2].startswith("ValueError: num_episodes must be >= 0")
    assert result.stdout.splitlines()[-1] == run.identifier  # the id is stdout's last line
    status = cli("status", run.identifier, cwd=project).stdout
    assert "ValueError: num_episodes must be >= 0" in status and "traceback" in status


def test_cli_run_json_names_the_failed_run_on_stdout(project):
    result = run_cli("run", "agent", "-e", "run_episodes", "-a", "env.__init__.size=3",
                     "-a", "agent.run_episodes.num_episodes=-1", "--json", cwd=project, check=False)

    assert result.returncode == 6
    (run,) = Run.get_all_runs()
    data = json.loads(result.stdout)  # nothing but JSON on stdout
    assert data["run_id"] == run.identifier and data["status"] == "FAILED"
    assert data["error"].startswith("ValueError: num_episodes must be >= 0")
    assert run.identifier in result.stderr  # the one-line error still goes to stderr


def test_cli_refuses_a_misspelled_argument_without_a_run(project, cli):
    result = cli("run", "agent", "-e", "run_episodes", "-a", "env.__init__.size=3",
                 "-a", "agent.run_episodes.num_episode=2", cwd=project, check=False)

    assert result.returncode == 2
    assert "Did you mean agent.run_episodes.num_episodes?" in result.stderr
    assert "Traceback" not in result.stderr
    assert Run.get_all_runs() == []


@pytest.mark.parametrize(
    "value, field",
    [
        (10**400, "Metric 'loss'"),
        (float("nan"), None),  # NaN and infinities stay allowed, as in MLflow
        (float("inf"), None),
    ],
    ids=["10**400", "nan", "inf"],
)
def test_metric_values_mlflow_cannot_hold_are_refused_naming_the_field(value, field):
    with Run() as run:
        if field is None:
            run.log_metric("loss", value)
        else:
            with pytest.raises(InputLimitError, match=field):
                run.log_metric("loss", value)


def test_a_step_outside_int64_is_refused_with_the_range():
    with Run() as run, pytest.raises(InputLimitError, match="Metric 'loss' has step .* signed 64-bit range"):
        run.log_metric("loss", 1.0, step=2**70)


def test_tag_and_param_values_over_mlflow_limits_are_refused_not_truncated():
    with Run() as run:
        with pytest.raises(InputLimitError, match="(?i)tag 'notes'"):
            run.set_tag("notes", "x" * (10 * 1024 * 1024))
        with pytest.raises(InputLimitError, match="(?i)param 'blob'"):
            run.log_param("blob", "x" * 7000)
    assert "notes" not in run.refresh().tags


@pytest.mark.parametrize(
    "value, match",
    [("huge", "bits"), ("bad \udc80 text", "surrogate"), ("deep", "deep")],
    ids=["5000-digit int", "lone surrogate", "nested 3000 deep"],
)
def test_argument_values_that_cannot_be_recorded_are_refused(project, value, match):
    if value == "huge":
        value = 10**5000 - 1
    elif value == "deep":
        value = []
        for _ in range(3000):
            value = [value]
    with pytest.raises(ArgumentError, match=match):
        agent(project).run_with_arg_set(
            "run_episodes",
            {"env": {"__init__": {"size": 3}}, "agent": {"run_episodes": {"verbose": value}}},
            seed=1,
        )
    assert Run.get_all_runs() == []


def test_a_run_cannot_be_its_own_outer_run_dependency_or_rerun_of():
    with Run() as run:
        with pytest.raises(ArgumentError, match="itself"):
            run.add_dependency(run)
        with pytest.raises(ArgumentError, match="itself"):
            run.add_dependency(run.identifier)
        for key in (_keys.PARENT_RUN_ID, _keys.RERUN_OF):
            with pytest.raises(ArgumentError, match="itself"):
                run.set_tag(key, run.identifier)
        with pytest.raises(ArgumentError, match="itself"):
            run.set_tag(_keys.DEPENDS_ON, json.dumps([run.identifier]))
    tags = run.refresh().tags
    assert _keys.PARENT_RUN_ID not in tags and _keys.DEPENDS_ON not in tags


def test_id_prefixes_are_accepted_and_ambiguity_is_explained(project, cli):
    runs = [Run() for _ in range(40)]
    for r in runs:
        r.end()
    target = runs[0].identifier

    assert Run.from_existing_run_id(target[:10]).identifier == target
    # among 40 random ids, some share their first hex digit: a 1-char prefix is refused
    with pytest.raises(Exception, match="too short"):
        Run.from_existing_run_id(target[:1])
    result = cli("status", target[:8], "--json", cwd=project)
    assert json.loads(result.stdout)["run_id"] == target


def test_an_ambiguous_prefix_lists_the_candidates(monkeypatch):
    from pcs import run as run_module

    # two real runs whose ids share a prefix: find them among many
    runs = [Run() for _ in range(300)]
    by_prefix: dict[str, list[str]] = {}
    for r in runs:
        r.end()
        by_prefix.setdefault(r.identifier[:2], []).append(r.identifier)
    prefix, ids = max(by_prefix.items(), key=lambda kv: len(kv[1]))
    assert len(ids) >= 2
    monkeypatch.setattr(run_module, "MIN_ID_PREFIX", 2)
    with pytest.raises(Exception) as info:
        Run.from_existing_run_id(prefix)
    assert type(info.value).__name__ == "AmbiguousRunIdError"
    assert all(i in str(info.value) for i in sorted(ids)[:10])
