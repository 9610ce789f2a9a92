"""The closure follows imports outside the component's folder: helpers a run puts on sys.path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

from pcs import Component, ComponentRun, LocalRepo, Run

AGENT = """\
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "shared"))

from featurize import feat  # noqa: E402


class Agent:
    def run(self, x=1):
        return feat(x)
"""


def write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def recorded(tmp_path) -> tuple[Path, ComponentRun]:
    """A run of app/agent.py, whose helper ../shared/featurize.py is found through sys.path."""
    project = tmp_path / "project"
    write(project, {"app/agent.py": AGENT, "shared/featurize.py": "def feat(x):\n    return x * 2\n"})
    component = Component.from_repo(LocalRepo("app", project / "app"), "agent", "agent.py", "Agent",
                                    instantiate=True)
    run = component.run_with_arg_set("run", {"agent": {"run": {"x": 3}}})
    return project, run


def test_a_helper_on_a_path_the_run_added_is_in_the_closure(recorded):
    _, run = recorded

    assert run.return_value == 6
    entry = run.run_command.code["agent:featurize"]
    assert entry["path"] == "../shared/featurize.py"
    assert run.grade == "portable"


def test_the_recorded_rerun_runs_the_recorded_helper_after_it_changed(recorded):
    project, run = recorded
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 5\n")

    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == 6
    assert rerun.verification.verdict == "reproduced"


def test_a_changed_helper_is_named_as_the_cause(recorded):
    project, run = recorded
    (project / "shared" / "featurize.py").write_text("def feat(x):\n    return x * 5\n")

    current = Run.from_existing_run_id(run.identifier).rerun(verify=True, code="current")

    assert current.return_value == 15
    assert current.verification.verdict == "diverged"
    assert "code: ../shared/featurize.py changed" in current.verification.causes


def test_a_fresh_process_reruns_from_the_record_after_the_helper_was_deleted(recorded):
    project, run = recorded
    (project / "shared" / "featurize.py").unlink()

    result = run_cli("rerun", run.identifier, "--verify")

    assert "reproduced" in result.stdout


PACKAGED_AGENT = """\
import multiprocessing

from .helpers import step


def work(x):
    return step(x) * 10


class Agent:
    def run(self, x=1):
        from .more import extra  # a relative import inside a function

        return step(x) + extra

    def pool(self, n=3):
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            return pool.map(work, range(n))
"""


@pytest.fixture
def packaged(tmp_path) -> tuple[Path, Component]:
    """pkg/agent.py in a repo folder, importing its package's modules relatively."""
    root = tmp_path / "repo"
    write(root, {
        "pkg/__init__.py": "",
        "pkg/agent.py": PACKAGED_AGENT,
        "pkg/helpers.py": "def step(x):\n    return x + 1\n",
        "pkg/more.py": "extra = 100\n",
    })
    return root, Component.from_repo(LocalRepo("repo", root), "agent", "pkg/agent.py", "Agent",
                                     instantiate=True)


def test_a_file_inside_a_package_loads_its_relative_imports_under_their_real_names(packaged):
    _, component = packaged

    run = component.run_with_arg_set("run", {"agent": {"run": {"x": 1}}})

    assert run.return_value == 102
    code = run.run_command.code
    assert {code[k]["path"] for k in ("agent:pkg", "agent:pkg.helpers", "agent:pkg.more")} == {
        "pkg/__init__.py", "pkg/helpers.py", "pkg/more.py"}
    assert run.grade == "portable", run.grade_reasons


def test_a_packaged_component_reruns_its_recorded_modules_and_names_a_changed_one(packaged):
    root, component = packaged
    run = component.run_with_arg_set("run", {"agent": {"run": {"x": 1}}})
    (root / "pkg" / "helpers.py").write_text("def step(x):\n    return x + 5\n")

    recorded = Run.from_existing_run_id(run.identifier).rerun(verify=True)
    current = Run.from_existing_run_id(run.identifier).rerun(verify=True, code="current")

    assert recorded.return_value == 102 and recorded.verification.verdict == "reproduced"
    assert current.return_value == 106
    assert "code: pkg/helpers.py changed" in current.verification.causes


def test_spawn_workers_of_a_packaged_component_resolve_its_relative_imports(packaged):
    root, component = packaged
    run = component.run_with_arg_set("pool", {})
    assert run.return_value == [10, 20, 30]
    (root / "pkg" / "helpers.py").write_text("def step(x):\n    return x + 5\n")

    rerun = Run.from_existing_run_id(run.identifier).rerun(verify=True)

    assert rerun.return_value == [10, 20, 30]
    assert rerun.verification.verdict == "reproduced"
