"""Freeze: local components pinned to git commits, in a registry that runs anywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from pcs import (
    Component,
    ComponentError,
    DirtyRepoError,
    GitRepo,
    InMemoryRegistry,
    LocalRepo,
    RepoError,
)
from pcs.freeze import freeze_components, frozen_registry

AGENT = """\
class Agent:
    def __init__(self, bonus=0):
        self.bonus = bonus

    def act(self, x=1):
        return self.helper.double(x) + self.bonus + {offset}
"""

HELPER = """\
class Helper:
    def double(self, x):
        return 2 * x
"""

REGISTRY = """\
repos:
  here:
    type: local
    path: .
components:
  helper:
    repo: here
    file_path: lib/helper.py
    class_name: Helper
    instantiate: true
  agent:
    repo: here
    file_path: agent.py
    class_name: Agent
    instantiate: true
    dependencies:
      helper: helper
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "pcs tests")
    git(path, "config", "user.email", "tests@example.invalid")
    git(path, "config", "commit.gpgsign", "false")
    return path


@pytest.fixture
def project(tmp_path):
    """A git working tree with agent.py, lib/helper.py and components.yaml, all committed."""
    root = init_repo(tmp_path / "project")
    (root / "lib").mkdir()
    (root / "agent.py").write_text(AGENT.format(offset=0), encoding="utf-8")
    (root / "lib" / "helper.py").write_text(HELPER, encoding="utf-8")
    (root / "components.yaml").write_text(REGISTRY, encoding="utf-8")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def agent_of(root: Path) -> Component:
    return Component.from_registry_file(root / "components.yaml", "agent")


def test_versioned_component_pins_the_current_commit(project):
    sha = head(project)
    agent = agent_of(project)
    assert agent.run("act", x=3) == 6

    pinned = agent.to_versioned_component()

    assert pinned.identifier == f"agent=={sha}"
    assert isinstance(pinned.repo, GitRepo)
    assert pinned.repo.url == str(project.resolve())
    assert pinned.file_path == "agent.py"
    assert pinned.class_name == "Agent" and pinned.instantiate
    helper = pinned.dependencies["helper"]
    assert helper.identifier == f"helper=={sha}"
    assert helper.file_path == "lib/helper.py"
    assert helper.repo is pinned.repo  # one repo per url
    assert pinned.run("act", x=3) == 6
    # the original component is left as it was
    assert isinstance(agent.repo, LocalRepo)
    assert agent.identifier == "agent"


def test_pinned_component_keeps_the_commit_after_new_commits(project):
    pinned = agent_of(project).to_versioned_component()
    (project / "agent.py").write_text(AGENT.format(offset=100), encoding="utf-8")
    git(project, "commit", "-q", "-am", "offset")

    assert pinned.run("act", x=1) == 2
    assert agent_of(project).run("act", x=1) == 102
    assert agent_of(project).to_versioned_component().run("act", x=1) == 102


def test_frozen_registry_runs_from_another_directory(project, tmp_path, monkeypatch):
    sha = head(project)
    frozen = agent_of(project).to_frozen_registry()
    assert isinstance(frozen, InMemoryRegistry)
    out = tmp_path / "elsewhere" / "frozen.yaml"
    out.parent.mkdir()
    frozen.to_yaml(out)

    data = yaml.safe_load(out.read_text())
    assert set(data["components"]) == {f"agent=={sha}", f"helper=={sha}"}
    (repo_spec,) = data["repos"].values()
    assert repo_spec["type"] == "git"
    assert repo_spec["url"] == str(project.resolve())

    # the working copy moves on and the user works from somewhere else
    (project / "agent.py").write_text(AGENT.format(offset=50), encoding="utf-8")
    other = tmp_path / "other_cwd"
    other.mkdir()
    monkeypatch.chdir(other)

    agent = Component.from_registry_file(out, "agent")
    run = agent.run_with_arg_set(
        "act", {"agent": {"__init__": {"bonus": 1}, "act": {"x": 4}}}, seed=0
    )
    assert run.return_value == 9
    assert run.tags["mlflow.source.git.commit"] == sha


def test_dirty_file_is_refused_unless_forced(project):
    sha = head(project)
    (project / "agent.py").write_text(AGENT.format(offset=7), encoding="utf-8")
    agent = agent_of(project)

    with pytest.raises(DirtyRepoError) as info:
        agent.to_versioned_component()
    message = str(info.value)
    assert "agent.py" in message and "uncommitted changes" in message
    assert "force=True" in message
    with pytest.raises(DirtyRepoError):
        agent.to_frozen_registry()

    pinned = agent.to_versioned_component(force=True)
    assert pinned.identifier == f"agent=={sha}"
    # forced: the last commit's code, not the edit
    assert pinned.run("act", x=1) == 2
    assert agent.run("act", x=1) == 9
    frozen = agent.to_frozen_registry(force=True)
    assert frozen.has_spec("components", f"agent=={sha}")


def test_dirty_dependency_is_refused(project):
    (project / "lib" / "helper.py").write_text(HELPER.replace("2 * x", "3 * x"), encoding="utf-8")
    with pytest.raises(DirtyRepoError, match="helper"):
        agent_of(project).to_versioned_component()


def test_staged_but_uncommitted_change_is_dirty(project):
    (project / "agent.py").write_text(AGENT.format(offset=7), encoding="utf-8")
    git(project, "add", "agent.py")
    with pytest.raises(DirtyRepoError):
        agent_of(project).to_versioned_component()


def test_untracked_file_is_refused_even_with_force(project):
    (project / "extra.py").write_text(HELPER, encoding="utf-8")
    extra = Component.from_repo(LocalRepo("here", project), "extra", "extra.py", "Helper")
    with pytest.raises(DirtyRepoError) as info:
        extra.to_versioned_component(force=True)
    assert "not committed" in str(info.value) and "extra.py" in str(info.value)


def test_file_outside_git_cannot_be_frozen(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "helper.py").write_text(HELPER, encoding="utf-8")
    component = Component.from_repo(LocalRepo("plain", folder), "helper", "helper.py", "Helper")
    with pytest.raises(RepoError) as info:
        component.to_versioned_component()
    assert "not in a git repository" in str(info.value)


def test_inline_component_cannot_be_frozen():
    class Inline:
        def run(self):
            return 1

    component = Component(
        "Inline", class_name="Inline", managed_obj=Inline, inline_source=None,
        inline_problems=["the source of class Inline could not be read"],
    )
    with pytest.raises(ComponentError, match="cannot be pinned to a commit"):
        component.to_versioned_component()


def clone_with_origin(tmp_path, origin_url: str | None = None) -> tuple[Path, Path]:
    """A bare ``origin`` and a working tree whose remote it is, with helper.py committed."""
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = init_repo(tmp_path / "clone")
    git(work, "remote", "add", "origin", origin_url or str(origin))
    (work / "helper.py").write_text(HELPER, encoding="utf-8")
    git(work, "add", ".")
    git(work, "commit", "-q", "-m", "first")
    return origin, work


def test_the_remote_is_pinned_and_an_unpushed_commit_is_named(tmp_path):
    origin, work = clone_with_origin(tmp_path)
    sha = head(work)
    component = Component.from_repo(LocalRepo("w", work), "helper", "helper.py", "Helper", True)

    # not pushed yet: the registry pins the remote all the same, and says to push
    result = freeze_components(component)
    (repo_spec,) = result.registry.to_dict()["repos"].values()
    assert repo_spec == {"type": "git", "url": str(origin)}
    (note,) = result.notes
    assert f"Commit {sha[:12]} of {work.resolve()} is not on its remote {origin}" in note
    assert "git push" in note
    # the pinned component still runs here: commits the remote lacks come from the clone
    pinned = component.to_versioned_component()
    assert pinned.repo.url == str(origin)
    assert pinned.run("double", x=4) == 8
    assert not pinned.repo.is_pushed(sha)

    git(work, "push", "-q", "origin", "main")
    result = freeze_components(component)
    assert result.notes == []
    pinned = component.to_versioned_component()
    assert pinned.repo.url == str(origin)
    assert pinned.repo.identifier == "origin_git"
    assert pinned.repo.is_pushed(sha)
    assert pinned.run("double", x=5) == 10


def test_without_a_remote_the_local_path_is_pinned_and_named(project):
    result = freeze_components(agent_of(project))
    (repo_spec,) = result.registry.to_dict()["repos"].values()
    assert repo_spec["url"] == str(project.resolve())
    (note,) = result.notes  # one note for the two components of the same tree
    assert f"{project.resolve()} has no git remote" in note
    assert "local path" in note and "git remote add" in note
    assert frozen_registry(agent_of(project)).to_dict() == result.registry.to_dict()


def test_a_remote_with_credentials_is_frozen_without_them(tmp_path):
    secret_url = "https://bot:ghp_s3cret@example.invalid/team/models.git?private_token=glpat-s3cret"
    _, work = clone_with_origin(tmp_path, origin_url=secret_url)
    component = Component.from_repo(LocalRepo("w", work), "helper", "helper.py", "Helper", True)

    result = freeze_components(component)
    out = tmp_path / "frozen.yaml"
    result.registry.to_yaml(out)
    text = out.read_text()
    assert "s3cret" not in text and "bot" not in text
    data = yaml.safe_load(text)
    assert data["repos"] == {
        "models_git": {"type": "git", "url": "https://example.invalid/team/models.git"}
    }
    assert all("s3cret" not in note for note in result.notes)
    assert "is not on its remote https://example.invalid/team/models.git" in result.notes[0]


def test_a_forced_freeze_says_what_it_left_out(project):
    sha = head(project)
    (project / "agent.py").write_text(AGENT.format(offset=7), encoding="utf-8")
    result = freeze_components(agent_of(project), force=True)
    assert result.registry.has_spec("components", f"agent=={sha}")
    assert any(
        "agent.py has uncommitted changes" in note and sha[:12] in note for note in result.notes
    )


def test_a_git_repo_at_a_local_path_is_named(project):
    repo = GitRepo("p", url=str(project))
    component = Component.from_repo(repo, "helper==main", "lib/helper.py", "Helper", True)
    (note,) = freeze_components(component).notes
    assert "'p' is a local path" in note and str(project) in note


def test_already_versioned_git_component_is_pinned_to_its_commit(project):
    repo = GitRepo("p", url=str(project))
    by_branch = Component.from_repo(repo, "helper==main", "lib/helper.py", "Helper", True)
    pinned = by_branch.to_versioned_component()
    assert pinned.identifier == f"helper=={head(project)}"
    assert pinned.repo is repo


def test_cli_freeze_writes_a_registry_that_runs_elsewhere(project, tmp_path):
    sha = head(project)
    result = run_cli("freeze", "agent", "-r", "components.yaml", "-o", "frozen.yaml", cwd=project)
    assert "frozen.yaml" in result.stdout
    frozen_file = project / "frozen.yaml"
    data = yaml.safe_load(frozen_file.read_text())
    assert f"agent=={sha}" in data["components"]
    assert data["components"][f"agent=={sha}"]["dependencies"] == {"helper": f"helper=={sha}"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    moved = elsewhere / "frozen.yaml"
    frozen_file.replace(moved)
    (project / "agent.py").write_text(AGENT.format(offset=1000), encoding="utf-8")
    run = Component.from_registry_file(moved, "agent").run_with_arg_set(
        "act", {"agent": {"act": {"x": 2}}}, seed=0
    )
    assert run.return_value == 4


def test_cli_freeze_of_a_dirty_file_fails_with_a_message(project):
    (project / "agent.py").write_text(AGENT.format(offset=3), encoding="utf-8")
    result = run_cli(
        "freeze", "agent", "-r", "components.yaml", "-o", "frozen.yaml", cwd=project, check=False
    )
    assert result.returncode != 0
    assert "uncommitted changes" in result.stderr
    assert "agent.py" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (project / "frozen.yaml").exists()

    forced = run_cli(
        "freeze", "agent", "-r", "components.yaml", "-o", "frozen.yaml", "--force", cwd=project
    )
    assert forced.returncode == 0
    assert (project / "frozen.yaml").exists()
