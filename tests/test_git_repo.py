"""GitRepo: components read from real git repositories at a commit, branch or tag.

Every repository here is made with the ``git`` command in the test's tmp dir;
the clone cache is the test's own ``PCS_HOME``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pcs import (
    Component,
    ComponentFileNotFoundError,
    GitRepo,
    InMemoryRegistry,
    RepoError,
    Run,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "pcs tests")
    git(path, "config", "user.email", "tests@example.invalid")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text, encoding="utf-8")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def model_source(label: str) -> str:
    return f"class Model:\n    def run(self):\n        return {label!r}\n"


@pytest.fixture
def two_commits(tmp_path):
    """A repo with m.py at commit A (returns 'A', tagged v1) then commit B (returns 'B')."""
    repo = make_repo(tmp_path / "models")
    sha_a = commit_file(repo, "m.py", model_source("A"), "A")
    git(repo, "tag", "v1")
    sha_b = commit_file(repo, "m.py", model_source("B"), "B")
    return repo, sha_a, sha_b


def model(repo: GitRepo, version: str) -> Component:
    return Component.from_repo(repo, f"m=={version}", "m.py", class_name="Model", instantiate=True)


def working_copy_state(repo: Path) -> tuple[str, str, str]:
    return git(repo, "status", "--porcelain"), git(repo, "rev-parse", "HEAD"), git(
        repo, "symbolic-ref", "HEAD"
    )


def test_commit_a_keeps_running_after_the_repo_moves_to_commit_b(tmp_path):
    src = make_repo(tmp_path / "models")
    sha_a = commit_file(src, "m.py", model_source("A"), "A")
    repo = GitRepo("r", url=str(src))
    pinned = model(repo, sha_a)
    assert pinned.run("run") == "A"

    sha_b = commit_file(src, "m.py", model_source("B"), "B")

    assert sha_b != sha_a
    assert pinned.run("run") == "A"
    assert model(GitRepo("r", url=str(src)), sha_a).run("run") == "A"
    assert model(GitRepo("r", url=str(src)), sha_b).run("run") == "B"
    # a short sha names the commit too
    assert model(GitRepo("r", url=str(src)), sha_a[:10]).run("run") == "A"


def test_file_url_and_plain_path_read_the_same_commits(two_commits):
    src, sha_a, sha_b = two_commits
    by_url = GitRepo("r", url=f"file://{src}")
    assert by_url.url == f"file://{src}"
    assert model(by_url, sha_a).run("run") == "A"
    assert model(by_url, sha_b).run("run") == "B"
    assert by_url.resolve(sha_a[:8]) == sha_a


def test_relative_path_url_resolves_against_the_cwd(two_commits, monkeypatch):
    src, sha_a, _ = two_commits
    monkeypatch.chdir(src.parent)
    repo = GitRepo("r", url="models")
    assert repo.url == str(src)
    assert model(repo, sha_a).run("run") == "A"


def test_branch_and_tag_names_select_commits(two_commits):
    src, sha_a, sha_b = two_commits
    repo = GitRepo("r", url=str(src))
    assert repo.resolve("v1") == sha_a
    assert repo.resolve("main") == sha_b
    assert repo.resolve() == sha_b  # no version: HEAD of the default branch
    assert model(repo, "v1").run("run") == "A"
    assert model(repo, "main").run("run") == "B"


def test_a_moved_branch_is_picked_up_and_a_tag_stays(two_commits):
    src, sha_a, sha_b = two_commits
    assert model(GitRepo("r", url=str(src)), "main").run("run") == "B"
    sha_c = commit_file(src, "m.py", model_source("C"), "C")

    # a repo loaded afresh (as from a registry) fetches the branch again
    fresh = GitRepo("r", url=str(src))
    assert fresh.resolve("main") == sha_c
    assert model(fresh, "main").run("run") == "C"
    assert model(fresh, "v1").run("run") == "A"

    # the same repo object picks it up once its branch memo is stale
    sha_d = commit_file(src, "m.py", model_source("D"), "D")
    assert fresh.resolve("main") == sha_c  # one run resolves a branch to one commit
    fresh.refresh()
    assert fresh.resolve("main") == sha_d
    assert model(fresh, "main").run("run") == "D"
    assert model(fresh, sha_b).run("run") == "B"


def test_a_branch_moved_after_the_memo_expires(two_commits, monkeypatch):
    src, _, _ = two_commits
    repo = GitRepo("r", url=str(src))
    monkeypatch.setattr(repo, "branch_refresh_seconds", 0.0)
    assert repo.resolve("main") == git(src, "rev-parse", "main")
    sha_c = commit_file(src, "m.py", model_source("C"), "C")
    assert repo.resolve("main") == sha_c
    assert model(repo, "main").run("run") == "C"


def test_reading_never_touches_the_working_copy(two_commits):
    src, sha_a, _ = two_commits
    # a feature branch checked out with an uncommitted edit: the user's state
    git(src, "checkout", "-q", "-b", "feature")
    (src / "m.py").write_text(model_source("work in progress"), encoding="utf-8")
    before = working_copy_state(src)
    files_before = sorted(p.name for p in src.iterdir())

    repo = GitRepo("r", url=str(src))
    assert model(repo, sha_a).run("run") == "A"
    assert model(repo, "main").run("run") == "B"
    assert model(repo, "v1").source() == model_source("A")

    assert working_copy_state(src) == before
    assert before[0].endswith("M m.py")
    assert before[2] == "refs/heads/feature"
    assert (src / "m.py").read_text() == model_source("work in progress")
    assert sorted(p.name for p in src.iterdir()) == files_before


def test_clean_working_copy_stays_clean(two_commits):
    src, sha_a, sha_b = two_commits
    before = working_copy_state(src)
    assert before[0] == ""
    run = model(GitRepo("r", url=str(src)), sha_a).run_with_arg_set("run", {}, seed=1)
    assert run.return_value == "A"
    assert working_copy_state(src) == before
    assert git(src, "rev-parse", "HEAD") == sha_b


def test_unknown_version_is_a_repo_error_that_names_it(two_commits):
    src, _, _ = two_commits
    repo = GitRepo("models", url=str(src))
    for version in ("no-such-branch", "0123456789abcdef0123456789abcdef01234567"):
        with pytest.raises(RepoError) as info:
            model(repo, version).source()
        message = str(info.value)
        assert version in message
        assert "'models'" in message and str(src) in message
        assert "no commit, branch or tag" in message


def test_unknown_version_fails_before_a_run_is_recorded(two_commits):
    src, _, _ = two_commits
    with pytest.raises(RepoError):
        model(GitRepo("r", url=str(src)), "nope").run_with_arg_set("run", {}, seed=1)
    assert Run.get_all_runs() == []


def test_missing_file_at_that_commit(two_commits):
    src, sha_a, _ = two_commits
    sha_c = commit_file(src, "later.py", model_source("later"), "C")
    repo = GitRepo("r", url=str(src))
    later = Component.from_repo(repo, f"later=={sha_a}", "later.py", class_name="Model")
    with pytest.raises(ComponentFileNotFoundError) as info:
        later.source()
    assert "'later.py'" in str(info.value) and sha_a[:12] in str(info.value)
    # the same file exists at the later commit
    assert Component.from_repo(repo, f"later=={sha_c}", "later.py").source() == model_source("later")


def test_unreachable_url_is_a_repo_error(tmp_path):
    repo = GitRepo("gone", url=str(tmp_path / "does-not-exist"))
    with pytest.raises(RepoError) as info:
        repo.resolve("main")
    assert "Could not clone git repo 'gone'" in str(info.value)
    assert not any((Path(os.environ["PCS_HOME"]) / "git").iterdir())  # no half clone left


def test_empty_url_is_refused():
    with pytest.raises(RepoError, match="needs a URL"):
        GitRepo("r", url="")


def test_one_clone_in_pcs_home_serves_every_read(two_commits):
    src, sha_a, sha_b = two_commits
    cache_root = Path(os.environ["PCS_HOME"]) / "git"

    first = GitRepo("r", url=str(src))
    assert model(first, sha_a).source() == model_source("A")
    clones = list(cache_root.iterdir())
    assert len(clones) == 1
    assert first.cache_path == clones[0]
    assert (clones[0] / "HEAD").is_file()  # a bare clone: no working tree in the cache
    marker = clones[0] / "pcs-test-marker"
    marker.write_text("still the same clone")

    second = GitRepo("other-name", url=str(src))
    assert model(second, sha_b).source() == model_source("B")
    assert model(second, "v1").run("run") == "A"

    assert list(cache_root.iterdir()) == clones
    assert marker.read_text() == "still the same clone"


def test_new_commit_sha_is_fetched_into_an_existing_clone(two_commits):
    src, sha_a, _ = two_commits
    repo = GitRepo("r", url=str(src))
    assert model(repo, sha_a).run("run") == "A"
    sha_c = commit_file(src, "m.py", model_source("C"), "C")
    # a sha the clone has never seen is fetched, not reported missing
    assert model(GitRepo("r", url=str(src)), sha_c).run("run") == "C"


def test_registry_accepts_git_and_github_repos(two_commits):
    src, sha_a, sha_b = two_commits
    registry = InMemoryRegistry.from_dict(
        {
            "repos": {
                "models_git": {"type": "git", "url": str(src)},
                "models_github": {"type": "github", "url": f"file://{src}"},
            },
            "components": {
                f"old=={sha_a}": {
                    "repo": "models_git",
                    "file_path": "m.py",
                    "class_name": "Model",
                    "instantiate": True,
                },
                "new==main": {
                    "repo": "models_github",
                    "file_path": "m.py",
                    "class_name": "Model",
                    "instantiate": True,
                },
            },
        }
    )
    old = Component.from_registry(registry, f"old=={sha_a}")
    new = Component.from_registry(registry, "new")  # a name finds its only version
    assert isinstance(old.repo, GitRepo) and isinstance(new.repo, GitRepo)
    assert old.repo.url == str(src)
    assert new.repo.url == f"file://{src}"
    assert old.run("run") == "A"
    assert new.run("run") == "B"
    assert new.repo.resolve(new.version) == sha_b


def test_registry_yaml_with_relative_git_path(two_commits, tmp_path):
    src, sha_a, _ = two_commits
    registry_file = tmp_path / "components.yaml"
    registry_file.write_text(
        "repos:\n"
        "  models:\n"
        "    type: git\n"
        "    url: models\n"  # relative to the registry file's folder
        "components:\n"
        f"  m=={sha_a}:\n"
        "    repo: models\n"
        "    file_path: m.py\n"
        "    class_name: Model\n"
        "    instantiate: true\n",
        encoding="utf-8",
    )
    component = Component.from_registry_file(registry_file, f"m=={sha_a}")
    assert component.repo.url == str(src.resolve())
    assert component.run("run") == "A"


def test_git_repo_without_url_in_registry_is_refused():
    from pcs import RegistryError

    registry = InMemoryRegistry.from_dict(
        {
            "repos": {"r": {"type": "git"}},
            "components": {"m": {"repo": "r", "file_path": "m.py"}},
        }
    )
    with pytest.raises(RegistryError, match="needs a 'url'"):
        Component.from_registry(registry, "m")


def test_run_of_a_git_component_records_its_commit(two_commits):
    src, sha_a, _ = two_commits
    run = model(GitRepo("r", url=str(src)), "v1").run_with_arg_set("run", {}, seed=3)
    assert run.return_value == "A"
    assert run.tags["mlflow.source.git.commit"] == sha_a
    entry = run.code_record["components"]["m==v1"]
    assert entry["git"]["commit"] == sha_a
    assert entry["git"]["url"] == str(src)
    # pinned to a repo that only this machine can read
    assert run.grade == "local"
    assert any("local path" in reason for reason in run.grade_reasons)


def test_rerun_of_a_git_component_runs_the_recorded_commit(two_commits):
    src, _, _ = two_commits
    run = model(GitRepo("r", url=str(src)), "main").run_with_arg_set("run", {}, seed=3)
    assert run.return_value == "B"
    commit_file(src, "m.py", model_source("C"), "C")

    loaded = Run.from_existing_run_id(run.identifier)
    rerun = loaded.rerun(verify=True)
    assert rerun.return_value == "B"
    assert rerun.verification.reproduced
