"""Freeze checks the whole closure: every helper module a component imports, not only its file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import git, git_init, run_cli

from pcs import Component, DirtyRepoError, LocalRepo
from pcs.freeze import freeze_components

AGENT = """\
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "shared"))

from helpers import step  # noqa: E402


class Agent:
    def run(self, x=1):
        from featurize import feat  # an import inside a function counts too

        return feat(step(x))
"""


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def project(tmp_path) -> Path:
    """A git working tree: app/agent.py, app/helpers.py and shared/featurize.py, committed."""
    root = git_init(tmp_path / "project")
    write(root, {
        "app/agent.py": AGENT,
        "app/helpers.py": "def step(x):\n    return x + 1\n",
        "shared/featurize.py": "def feat(x):\n    return x * 2\n",
        "components.yaml": (
            "repos:\n  app:\n    type: local\n    path: app\n"
            "components:\n  agent:\n    repo: app\n    file_path: agent.py\n"
            "    class_name: Agent\n    instantiate: true\n"
        ),
    })
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def agent(root: Path) -> Component:
    return Component.from_repo(LocalRepo("app", root / "app"), "agent", "agent.py", "Agent",
                               instantiate=True)


def test_a_clean_closure_freezes(project):
    result = freeze_components(agent(project))

    spec = result.registry.get_component_spec("agent==" + git(project, "rev-parse", "HEAD"))
    assert spec["file_path"] == "app/agent.py"


def test_an_edited_helper_in_the_components_folder_is_refused_naming_it(project):
    (project / "app" / "helpers.py").write_text("def step(x):\n    return x + 100\n")

    with pytest.raises(DirtyRepoError, match=r"app/helpers\.py .*uncommitted changes"):
        freeze_components(agent(project))


def test_an_edited_helper_found_through_sys_path_is_refused_naming_it(project):
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 3\n")

    with pytest.raises(DirtyRepoError) as caught:
        freeze_components(agent(project))
    assert "shared/featurize.py" in str(caught.value)
    assert "app/helpers.py" not in str(caught.value)


def test_force_freezes_the_commit_and_names_every_edited_file(project):
    (project / "app" / "helpers.py").write_text("def step(x):\n    return x + 100\n")
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 3\n")

    result = freeze_components(agent(project), force=True)

    [note] = [n for n in result.notes if "uncommitted" in n]
    assert "app/helpers.py" in note and "shared/featurize.py" in note


def test_an_uncommitted_new_helper_is_refused_even_with_force(project):
    write(project, {"app/extra.py": "BONUS = 1\n"})
    (project / "app" / "helpers.py").write_text("from extra import BONUS\n\n\ndef step(x):\n    return x + BONUS\n")
    git(project, "add", "app/helpers.py")
    git(project, "commit", "-q", "-m", "helpers use extra, which is not committed")

    with pytest.raises(DirtyRepoError, match=r"app/extra\.py .*not committed"):
        freeze_components(agent(project), force=True)


def test_a_helper_outside_the_git_repository_is_refused(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, {"outside.py": "def more(x):\n    return x\n"})
    (project / "app" / "helpers.py").write_text(
        f"import sys\nsys.path.insert(0, {str(elsewhere)!r})\nfrom outside import more\n\n\n"
        "def step(x):\n    return more(x) + 1\n"
    )
    git(project, "commit", "-q", "-am", "helpers use a module outside the repo")

    with pytest.raises(DirtyRepoError, match=r"outside\.py.*outside its git repository"):
        freeze_components(agent(project))


def test_an_unpushed_commit_of_a_helper_is_named(project, tmp_path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "-q", "-u", "origin", "main")
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 3\n")
    git(project, "commit", "-q", "-am", "featurize triples")

    result = freeze_components(agent(project))

    assert any("is not on its remote" in n and "push it" in n for n in result.notes)


def test_cli_freeze_names_the_edited_helper(project):
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 3\n")

    result = run_cli("freeze", "agent", "-r", "components.yaml", "-o", "frozen.yaml", check=False,
                     cwd=project)

    assert result.returncode != 0
    assert "shared/featurize.py" in result.stderr
    assert "Traceback" not in result.stderr
