"""The example agent experiments in ``examples/`` run, record and reproduce."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, ComponentRun, Run

RANDOM_AGENT = Path(__file__).resolve().parent.parent / "examples" / "random_agent"
REGISTRY_FILE = RANDOM_AGENT / "components.yaml"
COMPONENT_FILES = ["corridor.py", "random_policy.py", "dataset.py", "agent.py"]
METRICS = ["episode_length", "episode_reward"]


def episodes_args(num_episodes: int) -> dict:
    return {"agent": {"run_episodes": {"num_episodes": num_episodes}}}


def run_agent(seed: int, num_episodes: int = 5) -> ComponentRun:
    agent = Component.from_registry_file(REGISTRY_FILE, "agent")
    return agent.run_with_arg_set("run_episodes", episodes_args(num_episodes), seed=seed)


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def load_file(name: str):
    """Import an example file as a plain module, as a user without pcs would."""
    path = RANDOM_AGENT / name
    spec = importlib.util.spec_from_file_location(f"random_agent_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agent_runs_from_registry_file_and_returns_stats():
    run = run_agent(seed=7)

    stats = run.return_value
    assert run.status == "FINISHED"
    assert run.seed == 7
    assert stats["episodes"] == 5
    assert len(stats["lengths"]) == 5
    # a corridor of 5 cells takes at least 4 steps and at most the 200-step cap
    assert all(isinstance(n, int) and 4 <= n <= 200 for n in stats["lengths"])
    assert stats["rewards"] == [-float(n) for n in stats["lengths"]]
    assert stats["mean_length"] == pytest.approx(sum(stats["lengths"]) / 5)
    assert stats["mean_reward"] == pytest.approx(-stats["mean_length"])
    assert [v for _, v in metric_history(run.identifier, "episode_length")] == stats["lengths"]
    assert [s for s, _ in metric_history(run.identifier, "episode_reward")] == [0, 1, 2, 3, 4]
    # the stored return value is the same plain data
    assert Run.from_existing_run_id(run.identifier).return_value == stats


def test_agent_run_is_graded_portable():
    run = run_agent(seed=1, num_episodes=1)

    assert run.grade == "portable", run.grade_reasons


def test_init_arguments_of_dependencies_reach_them():
    agent = Component.from_registry_file(REGISTRY_FILE, "agent")
    args = {
        "environment": {"__init__": {"length": 3, "max_steps": 6}},
        "agent": {"run_episodes": {"num_episodes": 20}},
    }

    stats = agent.run_with_arg_set("run_episodes", args, seed=11).return_value

    assert all(2 <= n <= 6 for n in stats["lengths"])


def test_seeded_rerun_reproduces_return_value_and_metric_histories():
    original = run_agent(seed=7, num_episodes=8)

    rerun = Run.from_existing_run_id(original.identifier).rerun()

    assert rerun.identifier != original.identifier
    assert rerun.seed == 7
    assert rerun.return_value == original.return_value
    reloaded = Run.from_existing_run_id(rerun.identifier)
    assert reloaded.return_value == original.return_value
    for key in METRICS:
        history = metric_history(original.identifier, key)
        assert len(history) == 8
        assert metric_history(rerun.identifier, key) == history


def test_runs_with_different_seeds_differ():
    first = run_agent(seed=7, num_episodes=10)
    second = run_agent(seed=8, num_episodes=10)

    assert first.return_value["lengths"] != second.return_value["lengths"]
    assert metric_history(first.identifier, "episode_length") != metric_history(
        second.identifier, "episode_length"
    )


@pytest.mark.parametrize("name", COMPONENT_FILES)
def test_example_files_are_self_contained(name):
    tree = ast.parse((RANDOM_AGENT / name).read_text(encoding="utf-8"))
    siblings = {p.stem for p in RANDOM_AGENT.glob("*.py")}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name} has a relative import"
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)

    assert not imported & siblings, f"{name} imports files next to it"
    assert imported <= set(sys.stdlib_module_names) | {"pcs"}, f"{name} needs more than stdlib"


def test_pcs_sees_no_snapshot_problems():
    agent = Component.from_registry_file(REGISTRY_FILE, "agent")

    components = agent.dependency_list()

    assert sorted(c.file_path for c in components) == sorted(COMPONENT_FILES)
    assert {c.identifier: c.snapshot_problems() for c in components} == {
        c.identifier: [] for c in components
    }


def test_agent_works_without_pcs():
    corridor, policy, dataset, agent = (load_file(n) for n in COMPONENT_FILES)
    import random

    random.seed(0)
    bot = agent.BasicAgent(
        environment=corridor.Corridor(length=4),
        policy=policy.RandomPolicy(),
        dataset=dataset.BasicDataset(),
    )

    first = bot.run_episodes(num_episodes=3)
    second = bot.run_episodes(num_episodes=2)

    assert first["episodes"] == 3 and second["episodes"] == 2
    assert bot.dataset.episode_lengths() == first["lengths"] + second["lengths"]
    with pytest.raises(TypeError, match="has no environment"):
        agent.BasicAgent()


def test_cli_run_and_rerun_end_to_end(tmp_path):
    result = run_cli(
        "run", "agent",
        "-r", str(REGISTRY_FILE),
        "-e", "run_episodes",
        "-a", "agent.run_episodes.num_episodes=5",
        "--seed", "3",
        cwd=Path.cwd(),
    )
    run_id = result.stdout.strip().splitlines()[-1].strip()
    original = Run.from_existing_run_id(run_id)
    assert original.status == "FINISHED"
    assert original.seed == 3
    assert original.return_value["episodes"] == 5

    result = run_cli("rerun", run_id, cwd=Path.cwd())
    new_id = result.stdout.strip().splitlines()[-1].strip()

    assert new_id != run_id
    rerun = Run.from_existing_run_id(new_id)
    assert rerun.status == "FINISHED"
    assert rerun.return_value == original.return_value
    assert metric_history(new_id, "episode_length") == metric_history(run_id, "episode_length")
