"""Reruns in a virtual environment rebuilt from the recorded distributions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from pcs import Component, EnvironmentBuildError, LocalRepo, Run
from pcs.isolated import build_recorded_env

SOURCE = """
import random
import sys

class Draw:
    def go(self, n=3):
        from pcs import active_component_run
        active_component_run(self).set_tag("python", sys.executable)
        return [random.random() for _ in range(n)]
"""


def make_run(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "draw.py").write_text(textwrap.dedent(SOURCE))
    component = Component.from_repo(LocalRepo("src", folder), "draw", "draw.py", "Draw", instantiate=True)
    return component.run_with_arg_set("go", {}, seed=5)


def recorded_environment_file(run) -> Path:
    root = Path(run.info.artifact_uri.removeprefix("file://"))
    return root / "pcs" / "environment.yaml"


def test_python_version_mismatch_is_refused():
    with pytest.raises(EnvironmentBuildError, match="Python 2.7.18"):
        build_recorded_env({"python": {"version": "2.7.18"}, "distributions": {"x": "1"}, "fingerprint": "f"})


def test_uninstallable_distribution_is_reported_and_nothing_is_left(tmp_path):
    run = make_run(tmp_path / "src")
    path = recorded_environment_file(run)
    env = yaml.safe_load(path.read_text())
    # a name that sorts first, so pip stops at it before fetching anything else
    env["distributions"] = {"0pcs-no-such-distribution": "1.0", **env["distributions"]}
    env["fingerprint"] = "tampered"
    path.write_text(yaml.safe_dump(env))
    loaded = Run.from_existing_run_id(run.identifier)
    with pytest.raises(EnvironmentBuildError, match="0pcs-no-such-distribution==1.0.*env='current'"):
        loaded.rerun(env="recorded")
    venvs = Path(tmp_path / "pcs_home" / "venvs")
    assert list(venvs.iterdir()) == []  # the half-built environment was removed
    assert [r.identifier for r in Run.get_all_runs()] == [run.identifier]  # no rerun recorded


@pytest.mark.slow
def test_rerun_in_the_recorded_environment_reproduces(tmp_path, monkeypatch, tmp_path_factory):
    # installs every recorded distribution once (a few minutes with a cold pip cache)
    monkeypatch.setenv("PCS_HOME", str(tmp_path_factory.getbasetemp() / "shared_pcs_home"))
    run = make_run(tmp_path / "src")
    again = run.rerun(env="recorded", verify=True)
    assert again.verification.reproduced, str(again.verification)
    assert again.tags["python"] != run.tags["python"]  # it really ran in another interpreter
    assert "venvs" in again.tags["python"]
    assert again.rerun_of == run
