"""The helper_agent example: a component whose policy lives in a helper module, driven as a user would.

Every step runs ``python -m pcs`` in a fresh process, on a copy of the example
committed to a real git repository with a bare "remote" next to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, run_cli

from pcs import ComponentRun, InMemoryRegistry, Run

EXAMPLE = REPO_ROOT / "examples" / "helper_agent"
FILES = ["components.yaml", "agent.py", "helpers.py", "reporting.py", "layout.txt"]
ARGS = ["-a", "agent.run_episodes.num_episodes=3"]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=pcs tests", "-c", "user.email=tests@pcs.invalid",
         "-c", "commit.gpgsign=false", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout.strip()


def make_project(tmp_path: Path) -> tuple[Path, Path]:
    """The example committed in a git work tree that tracks a bare remote: (work tree, remote)."""
    work = tmp_path / "project"
    work.mkdir()
    for name in FILES:
        shutil.copy(EXAMPLE / name, work / name)
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "helper agent", cwd=work)
    remote = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(work), str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=work)
    git("fetch", "-q", "origin", cwd=work)
    git("branch", "-q", "-u", "origin/main", cwd=work)
    return work, remote


def pcs_run(registry_file: Path, *args: str, **kwargs) -> ComponentRun:
    result = run_cli("run", "agent", "-r", str(registry_file), *ARGS, *args, **kwargs)
    run = Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])
    assert isinstance(run, ComponentRun) and run.status == "FINISHED"
    return run


def new_run_of(result: subprocess.CompletedProcess) -> ComponentRun:
    return Run.from_existing_run_id(result.stdout.strip().splitlines()[-1])  # type: ignore[return-value]


def edit_policy(work: Path) -> None:
    helpers = work / "helpers.py"
    text = helpers.read_text(encoding="utf-8")
    assert "random.random() < self.right_bias" in text
    helpers.write_text(text.replace("random.random() < self.right_bias",
                                    "random.random() < self.right_bias / 2"), encoding="utf-8")


def test_run_is_portable_and_an_edited_helper_is_named(tmp_path):
    work, _ = make_project(tmp_path)
    run = pcs_run(work / "components.yaml", "--seed", "3")

    assert run.grade == "portable", run.grade_reasons
    assert set(run.run_command.code) == {"agent", "agent:helpers", "agent:reporting"}
    assert run.return_value["episodes"] == 3
    assert "mean length over 3 episodes" in run.load_text("pcs/stdout.txt")
    assert run.imported_modules == ["pcs"]

    edit_policy(work)
    recorded = run_cli("rerun", run.identifier, "--verify")
    assert "reproduced" in recorded.stdout and "diverged" not in recorded.stdout
    assert new_run_of(recorded).return_value == run.return_value

    current = run_cli("rerun", run.identifier, "--verify", "--code", "current", check=False)
    assert current.returncode == 1, current.stdout + current.stderr
    assert "diverged" in current.stdout
    assert "code: helpers.py changed (uncommitted edits)" in current.stdout
    assert "no recorded difference explains it" not in current.stdout


def test_code_git_runs_the_recorded_commit_and_fails_in_one_line_without_the_remote(tmp_path):
    work, remote = make_project(tmp_path)
    run = pcs_run(work / "components.yaml", "--seed", "5")
    edit_policy(work)  # not committed: the commit still holds the policy that ran

    from_git = run_cli("rerun", run.identifier, "--verify", "--code", "git")
    assert "reproduced" in from_git.stdout
    assert new_run_of(from_git).run_command.component.version == git("rev-parse", "HEAD", cwd=work)

    shutil.rmtree(remote)
    gone = run_cli("rerun", run.identifier, "--code", "git", check=False,
                   env={"PCS_HOME": str(tmp_path / "no_cache_home")})
    assert gone.returncode == 9
    lines = gone.stderr.strip().splitlines()
    assert len(lines) == 1, gone.stderr
    assert "remote.git" in lines[0] and "Traceback" not in gone.stderr


def test_a_git_pinned_run_reruns_with_the_remote_gone(tmp_path):
    work, remote = make_project(tmp_path)
    frozen = tmp_path / "frozen.yaml"
    run_cli("freeze", "agent", "-r", str(work / "components.yaml"), "-o", str(frozen))
    run = pcs_run(frozen, "--seed", "8")
    sha = git("rev-parse", "HEAD", cwd=work)
    assert run.run_command.component.identifier == f"agent=={sha}"
    assert f"agent=={sha}:helpers" in run.run_command.code

    shutil.rmtree(remote)
    shutil.rmtree(work)
    again = run_cli("rerun", run.identifier, "--verify",
                    env={"PCS_HOME": str(tmp_path / "no_cache_home")})  # no clone to fall back on
    assert "reproduced" in again.stdout
    assert new_run_of(again).return_value == run.return_value


def test_two_clones_at_different_paths_make_the_same_command(tmp_path):
    _, remote = make_project(tmp_path)
    first, second = tmp_path / "clone_a", tmp_path / "somewhere" / "else" / "clone_b"
    git("clone", "-q", str(remote), str(first), cwd=tmp_path)
    second.parent.mkdir(parents=True)
    git("clone", "-q", str(remote), str(second), cwd=tmp_path)

    run_a = pcs_run(first / "components.yaml", "--seed", "1")
    run_b = pcs_run(second / "components.yaml", "--seed", "1", cwd=second)

    assert run_a.tags["pcs.run_command_id"] == run_b.tags["pcs.run_command_id"]
    assert run_a.return_value == run_b.return_value
    registry = InMemoryRegistry()
    run_a.to_registry(registry)
    run_b.to_registry(registry)  # the same run command, published twice: no conflict
    assert registry.identifiers("run_commands") == [run_a.tags["pcs.run_command_id"]]


def test_data_files_next_to_the_component_are_found_in_a_run(tmp_path):
    work, _ = make_project(tmp_path)
    run = pcs_run(work / "components.yaml", "--seed", "2", "-a", "agent.run_episodes.layout=layout.txt")
    # layout.txt has 7 free cells between start and goal: a corridor of 9 cells
    assert all(n >= 8 for n in run.return_value["lengths"])


def test_the_example_works_without_pcs():
    code = (
        "import random; random.seed(0); from agent import HelperAgent; "
        "print(HelperAgent(length=4).run_episodes(num_episodes=2)['episodes'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLE, capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "2"
