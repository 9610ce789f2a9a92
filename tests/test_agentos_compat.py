"""AgentOS-format ``components.yaml`` files load and run unchanged.

The registry file below is written the way AgentOS wrote them: ``repos`` of
``type: local`` (a path relative to the file) and ``type: github`` (a ``url``;
here a local bare git repository, as a path or a ``file://`` URL, since tests
reach no network), and ``components`` with ``file_path`` (``./`` prefixed),
``class_name``, ``instantiate: True``, ``dependencies`` (by ``name==commit``
and by plain name) and ``requirements_path``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, ComponentRun, GitRepo, LocalRepo, Run

AGENT_PY = """\
from pcs import active_component_run


class BasicAgent:
    def __init__(self, discount=1.0):
        self.discount = discount

    def run_episodes(self, num_episodes=1):
        run = active_component_run(self)
        rewards = []
        for episode in range(num_episodes):
            observation = self.environment.reset()
            done, total, factor = False, 0.0, 1.0
            while not done:
                observation, reward, done = self.environment.step(self.policy.decide(observation))
                total += factor * reward
                factor *= self.discount
            rewards.append(total)
            run.log_metric("episode_reward", total, step=episode)
        return {"rewards": rewards, "environment_version": self.environment.VERSION}
"""

CORRIDOR_PY = """\
class Corridor:
    VERSION = {version}

    def __init__(self, length=5, max_steps=40):
        self.length = length
        self.max_steps = max_steps

    def reset(self):
        self.position, self.steps = 0, 0
        return self.position

    def step(self, action):
        self.position = max(0, self.position + (1 if action == 1 else -1))
        self.steps += 1
        done = self.position >= self.length - 1 or self.steps >= self.max_steps
        return self.position, -1.0, done
"""

POLICY_PY = """\
import random


class RandomPolicy:
    @staticmethod
    def decide(observation):
        return random.randint(0, 1)
"""

# AgentOS style: four-space indents, './' paths, 'True', components before repos
COMPONENTS_YAML = """\
components:
    agent:
        repo: local_dir
        file_path: ./agent.py
        class_name: BasicAgent
        instantiate: True
        requirements_path: ./requirements.txt
        dependencies:
            environment: environment=={commit}
            policy: policy

    environment=={commit}:
        repo: aos_github
        file_path: example_agents/corridor/environment.py
        class_name: Corridor
        instantiate: True

    policy:
        repo: aos_github
        file_path: ./example_agents/corridor/policy.py
        class_name: RandomPolicy

repos:
    local_dir:
        type: local
        path: .

    aos_github:
        type: github
        url: {url}
"""

REQUIREMENTS = "# the agent needs only the standard library\n"


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=pcs tests", "-c", "user.email=tests@pcs.invalid", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip()


def make_github_stand_in(tmp_path: Path) -> tuple[Path, str]:
    """A bare git repo holding the environment at two commits; returns (origin, first commit)."""
    work = tmp_path / "agentos_work"
    folder = work / "example_agents" / "corridor"
    folder.mkdir(parents=True)
    git("init", "-q", "-b", "master", cwd=work)
    (folder / "policy.py").write_text(POLICY_PY, encoding="utf-8")
    (folder / "environment.py").write_text(CORRIDOR_PY.format(version=1), encoding="utf-8")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "corridor v1", cwd=work)
    first = git("rev-parse", "HEAD", cwd=work)
    # master moves on; the registry pins the environment to the first commit
    (folder / "environment.py").write_text(CORRIDOR_PY.format(version=2), encoding="utf-8")
    git("commit", "-q", "-am", "corridor v2", cwd=work)
    origin = tmp_path / "agentos.git"
    git("clone", "-q", "--bare", str(work), str(origin), cwd=tmp_path)
    return origin, first


@pytest.fixture(params=["path", "file_url"])
def agentos_project(request, tmp_path) -> tuple[Path, str]:
    """An AgentOS project folder (agent.py, requirements.txt, components.yaml)."""
    origin, commit = make_github_stand_in(tmp_path)
    url = str(origin) if request.param == "path" else origin.as_uri()
    project = tmp_path / "project"
    project.mkdir()
    (project / "agent.py").write_text(AGENT_PY, encoding="utf-8")
    (project / "requirements.txt").write_text(REQUIREMENTS, encoding="utf-8")
    (project / "components.yaml").write_text(
        COMPONENTS_YAML.format(commit=commit, url=url), encoding="utf-8"
    )
    return project / "components.yaml", commit


def test_agentos_registry_file_loads(agentos_project):
    registry_file, commit = agentos_project

    agent = Component.from_registry_file(registry_file, "agent")

    environment = agent.dependencies["environment"]
    policy = agent.dependencies["policy"]
    assert [c.identifier for c in agent.dependency_list()] == ["agent", f"environment=={commit}", "policy"]
    assert isinstance(agent.repo, LocalRepo)
    assert agent.repo.local_dir == registry_file.parent
    assert agent.instantiate is True and policy.instantiate is False
    assert agent.requirements_path == "./requirements.txt"
    assert agent.requirements_text() == REQUIREMENTS
    assert isinstance(environment.repo, GitRepo) and environment.repo is policy.repo
    assert environment.version == commit
    assert "VERSION = 1" in environment.source()  # the pinned commit, not master
    assert "VERSION = 2" in policy.repo.read_source("example_agents/corridor/environment.py")


def test_agentos_component_runs_and_reruns(agentos_project):
    registry_file, commit = agentos_project
    agent = Component.from_registry_file(registry_file, "agent")

    run = agent.run_with_arg_set(
        "run_episodes", {"agent": {"run_episodes": {"num_episodes": 3}}}, seed=4
    )

    assert run.status == "FINISHED"
    value = run.return_value
    assert value["environment_version"] == 1
    assert len(value["rewards"]) == 3 and all(r <= -4 for r in value["rewards"])
    code = run.code_record["components"]
    assert code[f"environment=={commit}"]["git"]["commit"] == commit
    assert run.list_artifacts("pcs/requirements")[0].path == "pcs/requirements/agent.txt"
    rerun = run.rerun(verify=True)
    assert rerun.verification.reproduced, str(rerun.verification)


def test_agentos_component_runs_with_pcs_run(agentos_project, tmp_path):
    registry_file, _ = agentos_project
    elsewhere = tmp_path / "elsewhere"  # relative repo paths resolve against the file
    elsewhere.mkdir()

    result = run_cli(
        "run", "agent", "-r", str(registry_file), "-e", "run_episodes",
        "-a", "agent.run_episodes.num_episodes=2", "-a", "agent.__init__.discount=0.5",
        "--seed", "11", cwd=elsewhere,
    )

    run = Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])
    assert isinstance(run, ComponentRun)
    assert run.status == "FINISHED"
    assert run.seed == 11
    assert run.return_value["environment_version"] == 1
    assert len(run.return_value["rewards"]) == 2
    api_run = Component.from_registry_file(registry_file, "agent").run_with_arg_set(
        "run_episodes",
        {"agent": {"__init__": {"discount": 0.5}, "run_episodes": {"num_episodes": 2}}},
        seed=11,
    )
    assert api_run.return_value == run.return_value
    rerun = run_cli("rerun", run.identifier, "--verify", cwd=elsewhere)
    assert "reproduced" in rerun.stdout
