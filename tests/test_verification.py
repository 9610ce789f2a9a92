"""Verified reruns and ``pcs diff``: same computation, or exactly why not."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import git, git_init, run_cli

from pcs import Component, LocalRepo, ReproducibilityError, Run
from pcs.verification import Verification, compare_runs

SEEDED = """\
import random


class Agent:
    def run(self, n=3):
        return [random.random() for _ in range(n)]
"""

UNSEEDED = """\
import os


class Noise:
    def run(self):
        return os.urandom(8).hex()
"""

REWARDS = """\
from pcs import active_component_run


class Rewards:
    def run(self, steps=5):
        run = active_component_run(self)
        for step in range(steps):
            run.log_metric("reward", {formula}, step=step)
        run.log_param("steps", steps)
        return "done"
"""

ARTIFACT = """\
from pcs import active_component_run


class Writer:
    def run(self):
        active_component_run(self).log_text({text!r}, "out/result.txt")
        return None
"""


def component_in(folder: Path, name: str, source: str, class_name: str) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return Component.from_repo(
        LocalRepo(f"{name}_dir", folder), name, f"{name}.py", class_name, instantiate=True
    )


def git_component(tmp_path: Path, name: str, source: str, class_name: str) -> Component:
    folder = git_init(tmp_path / "project")
    component = component_in(folder, name, source, class_name)
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "first")
    return component


def load(run: Run) -> Run:
    """The run as a later session sees it: read back from the tracking store."""
    return Run.from_existing_run_id(run.identifier)


# -- git capture at run start -------------------------------------------------------------


def test_clean_git_file_records_commit_branch_and_clean_state(tmp_path):
    component = git_component(tmp_path, "agent", SEEDED, "Agent")
    folder = tmp_path / "project"
    sha = git(folder, "rev-parse", "HEAD")

    run = component.run_with_arg_set("run", {}, seed=1)

    entry = run.code_record["components"]["agent"]
    assert entry["git"]["commit"] == sha
    assert entry["git"]["branch"] == "main"
    assert entry["git"]["dirty"] is False
    assert entry["git"]["files"] == ["agent.py"]
    assert run.tags["mlflow.source.git.commit"] == sha
    assert run.tags["mlflow.source.git.branch"] == "main"
    assert run.tags["pcs.git.dirty"] == "false"
    assert not [a for a in _artifacts(run) if a.startswith("pcs/git_diff/")]


def test_dirty_git_file_records_the_diff(tmp_path):
    component = git_component(tmp_path, "agent", SEEDED, "Agent")
    folder = tmp_path / "project"
    sha = git(folder, "rev-parse", "HEAD")
    (folder / "agent.py").write_text(SEEDED.replace("n=3", "n=4"), encoding="utf-8")

    run = component.run_with_arg_set("run", {}, seed=1)

    assert len(run.return_value) == 4
    entry = run.code_record["components"]["agent"]["git"]
    assert entry["dirty"] is True
    assert entry["commit"] == sha
    assert entry["diff_artifact"] == "pcs/git_diff/agent.diff"
    assert run.tags["pcs.git.dirty"] == "true"
    assert run.tags["mlflow.source.git.commit"] == sha
    diff = run.load_text("pcs/git_diff/agent.diff")
    assert "-    def run(self, n=3):" in diff
    assert "+    def run(self, n=4):" in diff
    assert "agent.py" in diff


def _artifacts(run: Run) -> list[str]:
    from pcs.transfer import list_artifact_paths

    return list_artifact_paths(run)


# -- verified reruns ----------------------------------------------------------------------


def test_seeded_component_reruns_as_reproduced(tmp_path):
    run = component_in(tmp_path / "src", "agent", SEEDED, "Agent").run_with_arg_set(
        "run", {"agent": {"run": {"n": 5}}}, seed=11
    )
    new = load(run).rerun(verify=True)

    report = new.verification
    assert isinstance(report, Verification)
    assert report.reproduced is True
    assert report.differences == [] and report.first_difference is None
    assert report.causes == []
    assert (report.original_id, report.candidate_id) == (run.identifier, new.identifier)
    assert new.return_value == run.return_value
    assert new.tags["pcs.rerun_of"] == run.identifier
    assert "reproduced" in str(report) and "diverged" not in str(report)
    assert report.to_dict()["reproduced"] is True


def test_rerun_without_verify_has_no_report(tmp_path):
    run = component_in(tmp_path / "src", "agent", SEEDED, "Agent").run_with_arg_set(
        "run", {}, seed=1
    )
    assert load(run).rerun().verification is None


def test_rerun_of_a_dirty_run_reproduces_with_no_spurious_cause(tmp_path):
    component = git_component(tmp_path, "agent", SEEDED, "Agent")
    (tmp_path / "project" / "agent.py").write_text(SEEDED.replace("n=3", "n=2"), encoding="utf-8")
    run = component.run_with_arg_set("run", {}, seed=5)

    new = load(run).rerun(verify=True)
    assert new.verification.reproduced
    # the rerun ran the recorded snapshot: same code, so git state explains nothing
    assert new.verification.causes == []


def test_edited_code_that_changes_the_result_diverges_and_names_the_file(tmp_path):
    component = git_component(tmp_path, "agent", SEEDED, "Agent")
    run = component.run_with_arg_set("run", {}, seed=3)
    (tmp_path / "project" / "agent.py").write_text(
        SEEDED.replace("random.random()", "random.random() * 2"), encoding="utf-8"
    )

    recorded = load(run).rerun(verify=True)
    assert recorded.verification.reproduced  # the snapshot still runs the old code

    current = load(run).rerun(code="current", verify=True)
    report = current.verification
    assert report.reproduced is False
    assert report.first_difference.kind == "return_value"
    assert [r * 2 for r in run.return_value] == current.return_value
    code_causes = [c for c in report.causes if c.startswith("code:")]
    assert code_causes == ["code: agent.py changed (uncommitted edits)"]
    text = str(report)
    assert "diverged" in text
    assert "agent.py" in text
    assert "no recorded difference explains it" not in text


def test_edit_that_keeps_the_result_still_reproduces(tmp_path):
    component = component_in(tmp_path / "src", "agent", SEEDED, "Agent")
    run = component.run_with_arg_set("run", {}, seed=3)
    (tmp_path / "src" / "agent.py").write_text(SEEDED + "\n# a comment\n", encoding="utf-8")
    new = load(run).rerun(code="current", verify=True)
    assert new.verification.reproduced


def test_unseeded_randomness_diverges_with_no_recorded_cause(tmp_path):
    run = component_in(tmp_path / "src", "noise", UNSEEDED, "Noise").run_with_arg_set(
        "run", {}, seed=1
    )
    new = load(run).rerun(verify=True)
    report = new.verification
    assert not report.reproduced
    assert report.causes == []
    assert report.first_difference.kind == "return_value"
    text = str(report)
    assert "diverged" in text
    assert "no recorded difference explains it" in text
    assert "os.urandom" in text  # the advice names what pcs does not seed


def test_metric_divergence_names_the_metric_and_the_step(tmp_path):
    folder = tmp_path / "src"
    component = component_in(folder, "rewards", REWARDS.format(formula="float(step)"), "Rewards")
    run = component.run_with_arg_set("run", {}, seed=1)
    (folder / "rewards.py").write_text(
        REWARDS.format(formula="float(step) if step != 3 else 11.5"), encoding="utf-8"
    )

    report = load(run).rerun(code="current", verify=True).verification

    assert not report.reproduced
    assert [str(d) for d in report.differences] == ["metric reward differs at step 3: 3.0 vs 11.5"]
    assert report.first_difference.key == "reward"
    assert "first difference: metric reward differs at step 3: 3.0 vs 11.5" in str(report)
    assert "rewards.py" in str(report)


def test_metric_history_length_and_params_are_compared(tmp_path):
    folder = tmp_path / "src"
    component = component_in(folder, "rewards", REWARDS.format(formula="float(step)"), "Rewards")
    short = component.run_with_arg_set("run", {"rewards": {"run": {"steps": 3}}}, seed=1)
    long = component.run_with_arg_set("run", {"rewards": {"run": {"steps": 5}}}, seed=1)

    report = compare_runs(load(short), load(long))
    details = [str(d) for d in report.differences]
    assert "metric reward has 3 values in the original and 5 in the candidate" in details
    assert "param steps differs: '3' vs '5'" in details
    assert "argument rewards.run.steps: 3 vs 5" in report.causes


def test_logged_artifacts_are_compared_by_sha256(tmp_path):
    folder = tmp_path / "src"
    component = component_in(folder, "writer", ARTIFACT.format(text="one"), "Writer")
    run = component.run_with_arg_set("run", {}, seed=1)
    assert load(run).rerun(verify=True).verification.reproduced

    (folder / "writer.py").write_text(ARTIFACT.format(text="two"), encoding="utf-8")
    report = load(run).rerun(code="current", verify=True).verification
    assert not report.reproduced
    (difference,) = report.differences
    assert difference.kind == "artifact"
    assert difference.key == "out/result.txt"
    assert "artifact out/result.txt differs: sha256" in str(difference)


def test_strict_divergence_raises(tmp_path):
    run = component_in(tmp_path / "src", "noise", UNSEEDED, "Noise").run_with_arg_set(
        "run", {}, seed=1
    )
    with pytest.raises(ReproducibilityError) as info:
        load(run).rerun(strict=True)
    assert info.value.exit_code == 1
    assert isinstance(info.value.verification, Verification)
    assert not info.value.verification.reproduced
    assert "diverged" in str(info.value)


def test_strict_reproduction_returns_the_run(tmp_path):
    run = component_in(tmp_path / "src", "agent", SEEDED, "Agent").run_with_arg_set(
        "run", {}, seed=2
    )
    new = load(run).rerun(strict=True)
    assert new.verification.reproduced


def test_diff_between_runs_names_seed_and_argument_causes(tmp_path):
    component = component_in(tmp_path / "src", "agent", SEEDED, "Agent")
    a = component.run_with_arg_set("run", {"agent": {"run": {"n": 2}}}, seed=1)
    b = component.run_with_arg_set("run", {"agent": {"run": {"n": 2}}}, seed=2)
    c = component.run_with_arg_set("run", {"agent": {"run": {"n": 3}}}, seed=1)

    seeds = compare_runs(load(a), load(b))
    assert not seeds.reproduced
    assert seeds.causes == ["seed: 1 vs 2"]

    args = compare_runs(load(a), load(c))
    assert args.causes == ["argument agent.run.n: 2 vs 3"]
    assert compare_runs(load(a), load(a)).reproduced


def test_cli_rerun_verify_and_diff(tmp_path):
    seeded = component_in(tmp_path / "a", "agent", SEEDED, "Agent")
    original = seeded.run_with_arg_set("run", {"agent": {"run": {"n": 2}}}, seed=1)
    other = seeded.run_with_arg_set("run", {"agent": {"run": {"n": 3}}}, seed=2)
    noise = component_in(tmp_path / "b", "noise", UNSEEDED, "Noise").run_with_arg_set(
        "run", {}, seed=1
    )

    ok = run_cli("rerun", original.identifier, "--verify")
    assert ok.returncode == 0
    assert "reproduced" in ok.stdout and "diverged" not in ok.stdout
    new_id = ok.stdout.strip().splitlines()[-1]
    assert Run.from_existing_run_id(new_id).tags["pcs.rerun_of"] == original.identifier

    bad = run_cli("rerun", noise.identifier, "--verify", check=False)
    assert bad.returncode != 0
    assert "diverged" in bad.stdout
    assert "return value differs" in bad.stdout
    assert "no recorded difference explains it" in bad.stdout
    assert "Traceback" not in bad.stderr

    diff = run_cli("diff", original.identifier, other.identifier, check=False)
    assert diff.returncode != 0
    assert "diverged" in diff.stdout
    assert "seed: 1 vs 2" in diff.stdout
    assert "argument agent.run.n: 2 vs 3" in diff.stdout


def test_rerun_leaves_the_users_component_running_current_code(tmp_path):
    component = component_in(tmp_path / "src", "agent", SEEDED, "Agent")
    run = component.run_with_arg_set("run", {}, seed=3)
    run.rerun(verify=True)  # the in-memory run, not one loaded from the store
    (tmp_path / "src" / "agent.py").write_text(SEEDED.replace("n=3", "n=1"), encoding="utf-8")
    assert len(component.run_with_arg_set("run", {}, seed=3).return_value) == 1


HASHING = """
class Hasher:
    def order(self):
        return sorted({"alpha", "beta", "gamma", "delta"}, key=hash)
"""


def test_an_unexplained_divergence_names_the_suspects_in_order(tmp_path):
    from conftest import run_cli

    project = tmp_path / "hashing"
    project.mkdir()
    (project / "hasher.py").write_text(HASHING)
    (project / "components.yaml").write_text(
        "repos: {here: {type: local, path: .}}\n"
        "components: {hasher: {repo: here, file_path: hasher.py, class_name: Hasher, instantiate: true}}\n"
    )
    first = run_cli("run", "hasher", "-e", "order", "--seed", "1", cwd=project,
                    env={"PYTHONHASHSEED": "1"}).stdout.splitlines()[-1]
    second = run_cli("run", "hasher", "-e", "order", "--seed", "1", cwd=project,
                     env={"PYTHONHASHSEED": "2"}).stdout.splitlines()[-1]
    result = run_cli("diff", first, second, cwd=project, check=False)

    assert result.returncode == 1
    text = result.stdout
    assert "diverged" in text and "return value differs" in text
    suspects = text.split("suspects, most likely first:")[1].strip().splitlines()
    assert suspects[0].strip() == "- PYTHONHASHSEED: 1 vs 2"
    assert "randomness pcs does not seed" in suspects[-1]
