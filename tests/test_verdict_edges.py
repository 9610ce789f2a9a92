"""Verdicts at the edges: failed runs, values YAML cannot hold, pickles, module-level randomness.

Each case once gave a wrong verdict: two runs that failed differently were
"reproduced", a NumPy result was silently left out of the comparison, two
equal dill results "diverged", and randomness drawn at import diverged on
every rerun.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import git, git_init, run_cli

from pcs import Component, LocalRepo, Run
from pcs.verification import compare_runs


def component_in(folder: Path, source: str, name: str = "comp", class_name: str = "C") -> Component:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    return Component.from_repo(
        LocalRepo(f"{name}_dir", folder), name, f"{name}.py", class_name, instantiate=True
    )


def load(run_or_id: Run | str) -> Run:
    return Run.from_existing_run_id(run_or_id if isinstance(run_or_id, str) else run_or_id.identifier)


def failed_run(component: Component, **kwargs) -> str:
    """Run ``component`` expecting its entry point to raise; the id of the FAILED run."""
    with pytest.raises(Exception) as caught:
        component.run_with_arg_set("go", {}, seed=1, **kwargs)
    run_id = getattr(caught.value, "pcs_run_id", None)
    assert run_id, f"the failure carries no run id: {caught.value!r}"
    return run_id


FAILING = """\
from pcs import active_component_run


class C:
    def go(self):
        active_component_run(self).log_metric("x", 1.0)
        raise {error}("bad input")
"""


def test_runs_that_failed_differently_diverge(tmp_path):
    first = failed_run(component_in(tmp_path / "a", FAILING.format(error="ValueError")))
    second = failed_run(component_in(tmp_path / "b", FAILING.format(error="KeyError")))

    report = compare_runs(load(first), load(second))
    assert report.verdict == "diverged"
    assert report.first_difference.kind == "error"
    assert "ValueError" in str(report.first_difference) and "KeyError" in str(report.first_difference)
    assert "never finished" in str(report)  # said first, as for any unfinished run


def test_runs_that_failed_the_same_way_reproduce_that_failure(tmp_path):
    component = component_in(tmp_path / "a", FAILING.format(error="ValueError"))
    first, second = failed_run(component), failed_run(component)

    report = compare_runs(load(first), load(second))
    assert report.verdict == "reproduced"
    assert "how the run ended" in report.compared
    assert "never finished" in str(report)


def test_a_failed_run_against_a_finished_one_diverges_on_how_it_ended(tmp_path):
    fine = component_in(tmp_path / "a", FAILING.format(error="ValueError").replace(
        '        raise ValueError("bad input")\n', ""))
    finished = fine.run_with_arg_set("go", {}, seed=1)
    failed = failed_run(component_in(tmp_path / "b", FAILING.format(error="ValueError")))

    report = compare_runs(load(finished), load(failed))
    assert report.verdict == "diverged"
    assert any(d.kind == "status" and "FINISHED vs FAILED" in d.detail for d in report.differences)


NUMPY_RESULT = """\
import numpy as np


class C:
    def go(self, bump=0):
        return {"sum": np.arange(5).sum() + bump, "mean": np.float32(0.5), "row": np.arange(3)}
"""


def test_numpy_results_are_recorded_and_compared(tmp_path):
    component = component_in(tmp_path / "src", NUMPY_RESULT)
    run = component.run_with_arg_set("go", {}, seed=1)
    assert load(run).tags["pcs.return_value_format"] == "yaml"
    assert load(run).return_value == {"sum": 10, "mean": 0.5, "row": [0, 1, 2]}

    assert load(run).rerun(verify=True).verification.verdict == "reproduced"
    (tmp_path / "src" / "comp.py").write_text(NUMPY_RESULT.replace("bump=0", "bump=1"))
    report = load(run).rerun(verify=True, code="current").verification
    assert report.verdict == "diverged"
    assert report.first_difference.kind == "return_value"


NAN_RESULT = """\
class C:
    def go(self):
        print("done")
        return {"loss": float("nan")}
"""


def test_a_result_that_cannot_be_recorded_is_named_in_the_report(tmp_path):
    run = component_in(tmp_path / "src", NAN_RESULT).run_with_arg_set("go", {}, seed=1)
    report = load(run).rerun(verify=True).verification
    assert "return value could not be recorded" in str(report)
    assert "return value" not in report.compared


DILL_RESULT = """\
from dataclasses import dataclass


@dataclass
class Result:
    values: list
    tags: set


class C:
    def go(self, scale=1):
        return Result([1 * scale, 2, 3], {"alpha", "beta", "gamma", "delta"})
"""


def test_equal_dill_results_reproduce_across_processes(tmp_path):
    source = tmp_path / "src"
    run = component_in(source, DILL_RESULT).run_with_arg_set(
        "go", {}, seed=1, return_value_format="dill"
    )
    # a fresh process: another hash seed orders the set differently inside the pickle
    script = (
        "from pcs import Run\n"
        f"new = Run.from_existing_run_id({run.identifier!r}).rerun(verify=True)\n"
        "print(new.verification.verdict)\n"
    )
    done = subprocess.run(["python", "-c", script], capture_output=True, text=True, check=True,
                          env=_env_with_hash_seed("123"))
    assert done.stdout.strip().splitlines()[-1] == "reproduced", done.stdout + done.stderr

    (source / "comp.py").write_text(DILL_RESULT.replace("scale=1", "scale=2"))
    report = load(run).rerun(verify=True, code="current").verification
    assert report.verdict == "diverged"


def _env_with_hash_seed(seed: str) -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONHASHSEED": seed}


def test_state_compared_only_for_plain_python_objects():
    import random

    from pcs.verification.outputs import _same_value

    class Plain:
        pass

    a, b, c = Plain(), Plain(), Plain()
    a.x, b.x, c.x = 1, 1, 2
    assert _same_value(a, b) and not _same_value(a, c)
    # state outside __dict__ (C level) is never taken as equal
    assert not _same_value(random.Random(1), random.Random(2))
    assert not _same_value(float("nan"), float("nan"))


MODULE_RANDOM = """\
import random

HOLDOUT = random.sample(range(1000), 3)


class C:
    def go(self):
        return HOLDOUT
"""


def test_randomness_drawn_when_the_module_loads_is_seeded(tmp_path):
    run = component_in(tmp_path / "src", MODULE_RANDOM).run_with_arg_set("go", {}, seed=4)
    script = (
        "from pcs import Run\n"
        f"new = Run.from_existing_run_id({run.identifier!r}).rerun(verify=True)\n"
        "print(new.verification.verdict)\n"
    )
    done = subprocess.run(["python", "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "reproduced", done.stdout + done.stderr


def test_a_relative_git_remote_is_recorded_as_the_path_git_reads(tmp_path, monkeypatch):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    project = git_init(tmp_path / "project")
    (project / "agent").mkdir()
    component = component_in(project / "agent", "class C:\n    def go(self):\n        return 1\n")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "first")
    git(project, "remote", "add", "origin", "../remote.git")
    git(project, "push", "-q", "origin", "main")

    monkeypatch.chdir(project / "agent")  # not the repo root: a relative remote would miss
    run = component.run_with_arg_set("go", {}, seed=1)
    assert load(run).tags["mlflow.source.git.repoURL"] == str(remote)
    new = load(run).rerun(code="git", verify=True)
    assert new.verification.verdict == "reproduced"


DATA_READER = """\
from pathlib import Path


class C:
    def go(self, name="layout.txt"):
        here = Path(__file__).parent
        (here / "result.txt").write_text("written by the run")
        written = (here / "result.txt").read_text()  # its own output: not an input
        return len((here / name).read_text()) + len(written)
"""


def test_a_run_that_reads_a_file_next_to_its_code_is_graded_local_naming_it(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("PCS_DATA_SNAPSHOT_MAX_BYTES", "4")  # too small to keep layout.txt

    folder = tmp_path / "src"
    component = component_in(folder, DATA_READER)
    (folder / "layout.txt").write_text("S........G")
    run = load(component.run_with_arg_set("go", {}, seed=1))

    assert run.tags["pcs.reproducibility"] == "local"
    (reason,) = json.loads(run.tags["pcs.reproducibility_reasons"])
    assert "(layout.txt)" in reason and "too large to keep" in reason
    # the same component reading nothing next to it stays portable
    plain = component_in(tmp_path / "other", "class C:\n    def go(self):\n        return 1\n")
    assert load(plain.run_with_arg_set("go", {}, seed=1)).tags["pcs.reproducibility"] == "portable"


def cli_project(tmp_path: Path, source: str) -> Path:
    """A folder with ``comp.py`` (class ``C``) and a components.yaml naming it ``c``."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "comp.py").write_text(source)
    (folder / "components.yaml").write_text(
        "repos: {here: {type: local, path: .}}\n"
        "components: {c: {repo: here, file_path: comp.py, class_name: C, instantiate: true}}\n"
    )
    return folder


def test_cli_records_a_return_value_yaml_cannot_hold_with_dill_when_asked(tmp_path, cli):
    # the warning reaches stderr through the logging of a fresh process: that one is a subprocess
    folder = cli_project(tmp_path, "class C:\n    def go(self):\n        return {1.5, 2.5}\n")
    auto = run_cli("run", "c", "-e", "go", cwd=folder)
    assert "--return-value-format dill" in auto.stderr  # the warning says how
    dill = cli("run", "c", "-e", "go", "--return-value-format", "dill", cwd=folder)
    run = load(dill.stdout.strip().splitlines()[-1])
    assert run.tags["pcs.return_value_format"] == "dill"
    assert run.return_value == {1.5, 2.5}


def test_cli_sweep_refuses_an_empty_seed_list(tmp_path, cli):
    folder = cli_project(tmp_path, "class C:\n    def go(self, x=0):\n        return x\n")
    result = cli("sweep", "c", "-e", "go", "--grid", "c.go.x=1,2", "--seeds", "",
                 "--executor", "serial", cwd=folder, check=False)
    assert result.returncode == 2 and "--seeds" in result.stderr
    assert Run.get_all_runs() == []
