"""What a run records about where it ran: environment, requirements, seed, grade."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import platform
import random
import sys
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from pcs import (
    Component,
    ComponentFileNotFoundError,
    LocalRepo,
    NotReproducibleError,
    Run,
)
from pcs.environment import environment_fingerprint

RANDOM_SOURCE = """\
import random


class Draw:
    def run(self, n=3):
        return [random.random() for _ in range(n)]
"""

NUMPY_SOURCE = """\
import numpy


class Draw:
    def run(self, n=3):
        return [float(v) for v in numpy.random.rand(n)]
"""

SEED_SOURCE = """\
import random

from pcs import active_component_run


class Seeded:
    def run(self):
        me = active_component_run(self)
        own = random.Random(me.seed)
        return {"seed": me.seed, "own": own.random(), "run_id": me.identifier}
"""


def component_in(folder: Path, name: str, source: str, class_name: str, **kw) -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return Component.from_repo(
        LocalRepo(f"{name}_dir", folder), name, f"{name}.py", class_name, instantiate=True, **kw
    )


def read_artifact(run: Run, path: str, tmp_path: Path) -> str:
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run.identifier, artifact_path=path, dst_path=str(tmp_path))
    return Path(local).read_text(encoding="utf-8")


# -- environment ------------------------------------------------------------------------


def test_environment_yaml_and_fingerprint_tag(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    env = yaml.safe_load(read_artifact(run, "pcs/environment.yaml", tmp_path / "dl"))

    assert env["python"]["version"] == platform.python_version()
    assert env["python"]["implementation"] == platform.python_implementation()
    assert env["platform"]["system"] == platform.system()
    assert env["platform"]["machine"] == platform.machine()
    distributions = env["distributions"]
    assert distributions["mlflow"] == importlib.metadata.version("mlflow")
    assert distributions["pyyaml"] == importlib.metadata.version("PyYAML")
    assert distributions["gitpython"] == importlib.metadata.version("GitPython")
    assert len(distributions) > 10

    fingerprint = run.tags["pcs.environment_fingerprint"]
    assert fingerprint == env["fingerprint"] == environment_fingerprint(env)
    assert run.environment == env  # the property reads the same artifact
    # the same process makes the same fingerprint
    again = component_in(tmp_path / "src2", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=2
    )
    assert again.tags["pcs.environment_fingerprint"] == fingerprint


def test_fingerprint_changes_with_a_distribution_version(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    env = run.environment
    changed = dict(env, distributions=dict(env["distributions"], mlflow="0.0.1"))
    assert environment_fingerprint(changed) != environment_fingerprint(env)


def test_pythonhashseed_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    assert run.environment["pythonhashseed"] == "123"


def test_requirements_file_content_is_recorded(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    pinned = "# what this needs\nnumpy==2.0.0\nPyYAML==6.0.1\n"
    (folder / "requirements.txt").write_text(pinned, encoding="utf-8")
    component = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    )
    run = component.run_with_arg_set("run", {}, seed=1)

    assert read_artifact(run, "pcs/requirements/draw.txt", tmp_path / "dl") == pinned
    assert run.code_record["requirements"]["draw"]["path"] == "requirements.txt"
    assert run.grade == "portable", run.grade_reasons


def test_requirements_that_pin_nothing_make_the_run_local(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "requirements.txt").write_text("numpy\nrequests>=2\n", encoding="utf-8")
    component = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    )
    run = component.run_with_arg_set("run", {}, seed=1)

    assert run.grade == "local"
    (reason,) = [r for r in run.grade_reasons if "requirements.txt" in r]
    assert "numpy" in reason and "requests>=2" in reason
    # the tag holds the same reasons, as JSON
    assert json.loads(run.tags["pcs.reproducibility_reasons"]) == run.grade_reasons


def test_missing_requirements_file_fails_before_the_run(tmp_path):
    component = component_in(
        tmp_path / "src", "draw", RANDOM_SOURCE, "Draw", requirements_path="nope.txt"
    )
    with pytest.raises(ComponentFileNotFoundError, match="nope.txt"):
        component.run_with_arg_set("run", {}, seed=1)
    assert Run.get_all_runs() == []


# -- seeds ------------------------------------------------------------------------------


def test_given_seed_is_recorded_and_seeds_random(tmp_path):
    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    random.seed(999)  # whatever state the process is in must not matter
    run = component.run_with_arg_set("run", {}, seed=1234)

    expected = random.Random(1234)
    assert run.return_value == [expected.random() for _ in range(3)]
    assert run.seed == 1234
    assert run.tags["pcs.seed"] == "1234"
    loaded = Run.from_existing_run_id(run.identifier)
    assert loaded.seed == 1234
    assert loaded.run_command.seed == 1234

    assert component.run_with_arg_set("run", {}, seed=1234).return_value == run.return_value
    assert component.run_with_arg_set("run", {}, seed=1235).return_value != run.return_value


def test_drawn_seed_is_recorded_and_reused_by_a_rerun(tmp_path):
    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    first = component.run_with_arg_set("run", {})
    second = component.run_with_arg_set("run", {})

    assert isinstance(first.seed, int) and first.tags["pcs.seed"] == str(first.seed)
    assert first.seed != second.seed
    drawn = random.Random(first.seed)
    assert first.return_value == [drawn.random() for _ in range(3)]
    rerun = Run.from_existing_run_id(first.identifier).rerun()
    assert rerun.seed == first.seed
    assert rerun.return_value == first.return_value


@pytest.mark.skipif(importlib.util.find_spec("numpy") is None, reason="numpy is not installed")
def test_numpy_is_seeded_too(tmp_path):
    import numpy

    component = component_in(tmp_path / "src", "draw", NUMPY_SOURCE, "Draw")
    numpy.random.seed(5)
    run = component.run_with_arg_set("run", {}, seed=42)
    assert run.return_value == [float(v) for v in numpy.random.RandomState(42).rand(3)]
    assert component.run_with_arg_set("run", {}, seed=42).return_value == run.return_value


def test_seed_is_available_inside_the_entry_point(tmp_path):
    component = component_in(tmp_path / "src", "seeded", SEED_SOURCE, "Seeded")
    run = component.run_with_arg_set("run", {}, seed=77)
    value = run.return_value
    assert value["seed"] == 77
    assert value["own"] == random.Random(77).random()
    assert value["run_id"] == run.identifier


def test_negative_seed_is_refused(tmp_path):
    from pcs import ArgumentError

    component = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw")
    with pytest.raises(ArgumentError, match="seed"):
        component.run_with_arg_set("run", {}, seed=-1)


# -- grades -----------------------------------------------------------------------------


def test_self_contained_snapshot_is_portable(tmp_path):
    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {"draw": {"run": {"n": 2}}}, seed=1
    )
    assert run.grade == "portable"
    assert run.tags["pcs.reproducibility"] == "portable"
    assert run.grade_reasons


def test_component_importing_a_sibling_file_is_local(tmp_path, monkeypatch):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "sibling_helper_mod.py").write_text("FACTOR = 3\n", encoding="utf-8")
    source = (
        "import sibling_helper_mod\n\n\n"
        "class Uses:\n"
        "    def run(self, x=1):\n"
        "        return x * sibling_helper_mod.FACTOR\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "sibling_helper_mod", raising=False)
    run = component_in(folder, "uses", source, "Uses").run_with_arg_set(
        "run", {"uses": {"run": {"x": 2}}}, seed=1
    )
    assert run.return_value == 6
    assert run.grade == "local"
    assert any("sibling_helper_mod" in r for r in run.grade_reasons), run.grade_reasons


class Unreadable:
    def run(self):
        return 1


def test_inline_component_without_source_is_not_rerunnable():
    component = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source=None, inline_problems=["the source of class Unreadable could not be read"],
    )
    run = component.run_with_arg_set("run", {}, seed=1)
    assert run.return_value == 1
    assert run.grade == "not-rerunnable"
    assert any("could not be read" in r for r in run.grade_reasons)


def test_inline_component_with_unrecordable_globals_is_not_rerunnable(tmp_path):
    source = "class Unreadable:\n    def run(self):\n        return 1\n"
    component = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source=source,
        inline_problems=["the global lock (lock) used by Unreadable cannot be recorded"],
    )
    run = component.run_with_arg_set("run", {}, seed=1)
    assert run.return_value == 1
    assert run.grade == "not-rerunnable"
    assert run.grade_reasons[0] == "the global lock (lock) used by Unreadable cannot be recorded"

    with pytest.raises(NotReproducibleError, match="not-rerunnable"):
        Run.from_existing_run_id(run.identifier).rerun()

    # pcs status RUN_ID shows the grade and its reasons (rendered in-process: fast)
    from io import StringIO

    from rich.console import Console

    from pcs import _render

    out = StringIO()
    _render.print_run_status(run, detailed=True, out=Console(file=out, width=200))
    assert "not-rerunnable" in out.getvalue()
    assert "cannot be recorded" in out.getvalue()


def test_status_shows_each_runs_grade(tmp_path):
    portable = component_in(tmp_path / "a", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "requirements.txt").write_text("numpy\n", encoding="utf-8")
    local = component_in(
        folder, "draw", RANDOM_SOURCE, "Draw", requirements_path="requirements.txt"
    ).run_with_arg_set("run", {}, seed=1)
    blocked = Component(
        "Unreadable", class_name="Unreadable", instantiate=True, managed_obj=Unreadable,
        inline_source="class Unreadable:\n    def run(self):\n        return 1\n",
        inline_problems=["the global lock (lock) used by Unreadable cannot be recorded"],
    ).run_with_arg_set("run", {}, seed=1)

    table = run_cli("status").stdout
    lines = {
        run.identifier: next(ln for ln in table.splitlines() if run.identifier in ln)
        for run in (portable, local, blocked)
    }
    assert "portable" in lines[portable.identifier]
    assert "local" in lines[local.identifier] and "portable" not in lines[local.identifier]
    assert "not-rerunnable" in lines[blocked.identifier]


def test_run_status_line_shows_the_grade(tmp_path):
    from io import StringIO

    from rich.console import Console

    from pcs import _render

    run = component_in(tmp_path / "src", "draw", RANDOM_SOURCE, "Draw").run_with_arg_set(
        "run", {}, seed=1
    )
    out = StringIO()
    _render.print_run_status(run, out=Console(file=out, width=200))
    assert "portable" in out.getvalue()
